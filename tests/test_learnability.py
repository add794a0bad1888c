"""Models that learn, with their DEFAULT settings: each beats or matches its baselines on data made in the test.

Each test writes a small table / set of clips / field in the source's real format whose label follows a known
rule, runs ingest -> features -> train -> evaluate through the same functions as the step commands, and reads
the skill rows `evaluate` registers. Only the split is chosen (random, so the sizes are known); every training
setting is the task's default, sized to the data by the documented rules (`TaskSettings.batch_for`, `lr_for`,
`epochs_for`, `patience_for`). A model or a default that cannot learn fails here. TabNet and the ConvLSTM
train on one torch thread: their steps are small, and two threads ran them slower (TabNet 2.8 s an epoch against
2.7 s; the ConvLSTM test's training 71 s against 48 s); the CNN's convolutions use both cores. The ConvLSTM's
validation period is four years (not the default fifteen): its validation windows cost as much as training ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from shoal.catalog import Catalog
from shoal.contract import get_task

SAMPLE_RATE = 16_000


@contextmanager
def _threads(count: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _skill(catalog: Catalog, task: str, settings: dict, *, threads: int = 1, lead: int | None = None
           ) -> dict[str, dict]:
    """Features, then training with the task's defaults (plus `settings`); the registered test skill by method
    (of one `lead` for ENSO)."""
    from shoal.models.runs import train_model

    chosen = get_task(task).parse({"device": "cpu", **settings})
    get_task(task).build_features(catalog, chosen, reporter=None)
    with _threads(threads):
        entry = train_model(catalog, get_task(task), chosen).entry
    return {row["method"]: row for row in entry.metrics["skill"] if row.get("lead") == lead}


def _rule_table(path: Path, rows: int, seed: int = 0) -> Path:
    """A HIGGS-format CSV (label, 28 features) whose label is a noisy nonlinear rule of four of the features."""
    from shoal.datasets.higgs import FEATURES, NON_NEGATIVE

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 28))
    z = x[:, 0] + 0.8 * x[:, 1] - 0.6 * x[:, 2] + 0.5 * (x[:, 3] ** 2 - 1) + 0.3 * rng.normal(size=rows)
    # Momenta and masses are >= 0 (higgs.RULES): shifted by 8 standard deviations, which the models standardize away.
    x[:, [FEATURES.index(name) for name in NON_NEGATIVE]] += 8.0
    np.savetxt(path, np.column_stack([z > np.median(z), x]), delimiter=",", fmt="%.6e")
    return path


def test_tabnet_with_its_defaults_comes_within_0_01_auc_of_gradient_boosting_on_a_nonlinear_rule(
        tmp_path: Path) -> None:
    from shoal.datasets.higgs import ingest

    catalog = Catalog(tmp_path / "home")
    assert ingest(catalog, [_rule_table(tmp_path / "rule.csv", 16_000)]).exit_code == 0
    skill = _skill(catalog, "higgs", {"split": "random"})
    assert skill["model"]["rows"] > 1_400  # a tenth of 16,000 rows
    assert skill["hist_gradient_boosting"]["roc_auc"] > 0.97  # the rule is learnable
    assert skill["model"]["roc_auc"] >= skill["hist_gradient_boosting"]["roc_auc"] - 0.01, skill


WORD_SHAPES = {"up": (1.0, 2.0, "glide"), "down": (2.0, 1.0, "glide"), "go": (1.0, 2.0, "step"),
               "no": (2.0, 1.0, "step")}  # start and end pitch (x the speaker's) and how it moves
PITCH, TEMPO = (250.0, 500.0), (0.85, 1.2)  # a speaker's pitch (Hz) and tempo (x 0.6 s) are drawn from these


def _word(word: str, rng: np.random.Generator, base: float, tempo: float) -> np.ndarray:
    """One synthesized utterance: a voiced tone with three harmonics whose pitch glides or steps between two
    levels. `up` and `down` (and `go` and `no`) hold the same pitches for the same time: their mean spectra
    are alike and only the ORDER tells them apart, which a mean-spectrum baseline cannot see."""
    start, end, how = WORD_SHAPES[word]
    length = int(SAMPLE_RATE * 0.6 * tempo)
    t = np.linspace(0.0, 1.0, length, endpoint=False)
    ratio = start + (end - start) * (t if how == "glide" else (t >= 0.5))
    phase = 2 * np.pi * np.cumsum(base * ratio) / SAMPLE_RATE
    voice = sum(np.sin(k * phase) / k for k in (1, 2, 3)) * np.hanning(length)
    clip = np.zeros(SAMPLE_RATE)
    onset = int(rng.integers(0, SAMPLE_RATE - length))
    clip[onset:onset + length] = voice * rng.uniform(0.2, 0.5)
    return clip + rng.normal(0.0, 0.01, SAMPLE_RATE)


def _words(root: Path, speakers: int, clips: int, seed: int = 0) -> Path:
    """Speech Commands layout (`<word>/<speaker>_nohash_<n>.wav`, 16 kHz 16-bit mono): every speaker says every
    word `clips` times at their own pitch and tempo."""
    import soundfile

    rng = np.random.default_rng(seed)
    for speaker in range(speakers):
        base, tempo = rng.uniform(*PITCH), rng.uniform(*TEMPO)
        for word in WORD_SHAPES:
            (root / word).mkdir(parents=True, exist_ok=True)
            for n in range(clips):
                audio = _word(word, rng, base * rng.uniform(0.95, 1.05), tempo * rng.uniform(0.9, 1.1))
                soundfile.write(root / word / f"{speaker:08x}_nohash_{n}.wav", audio, SAMPLE_RATE, subtype="PCM_16")
    return root


def test_the_speech_cnn_with_its_defaults_beats_the_mean_spectrum_baseline_on_unseen_speakers(tmp_path: Path) -> None:
    from shoal.datasets.speech_commands import ingest

    catalog = Catalog(tmp_path / "home")
    assert ingest(catalog, [_words(tmp_path / "words", speakers=30, clips=1)]).exit_code == 0
    skill = _skill(catalog, "speech", {"split": "random", "test_fraction": 0.2}, threads=2)  # by speaker: unseen voices
    assert skill["model"]["clips"] >= 16
    cnn, linear = skill["model"], skill["mean_spectrum_logistic"]
    assert linear["accuracy"] < 0.75  # order is what tells the words apart; a mean spectrum cannot
    low, _ = cnn["versus"]["mean_spectrum_logistic"]["interval"]  # the paired bootstrap of the difference
    assert cnn["accuracy"] >= 0.8 and low > 0, (cnn, linear)


LAG = 6  # months by which the Niño 3.4 anomaly follows the remote patch's
REMOTE = {"lat": (-10.0, 10.0), "lon": (130.0, 170.0)}  # a west-Pacific patch, far from the Niño 3.4 box
ENSO_MONTHS = ("1982-01", "2003-12")
ENSO_SPLIT = {"valid_start": "1990-01", "test_start": "1994-01"}  # train 1982-1989, valid 1990-1993, test 1994-2003


def _box(box: dict) -> np.ndarray:
    from shoal.datasets.cobe_sst import LAT, LON

    lat = (LAT >= box["lat"][0]) & (LAT <= box["lat"][1])
    return lat[:, None] & ((LON >= box["lon"][0]) & (LON <= box["lon"][1]))[None, :]


def _leading_field(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """COBE-format GRIB months and an ONI-format index table: a weakly persistent signal (AR(1), phi 0.5) in
    the remote patch reappears LAG months later as the Niño 3.4 anomaly. The index's own past says little about
    it 3 months ahead (phi^LAG ~ 0.02); the field's remote patch says nearly everything."""
    from shoal.datasets.cobe_sst import LAT
    from shoal.datasets.cobe_sst_sample import NINO34_BOX, land_mask, months_between, write_grib

    rng = np.random.default_rng(seed)
    months = months_between(*ENSO_MONTHS)
    signal = np.zeros(len(months) + LAG)
    for t in range(1, len(signal)):
        signal[t] = 0.5 * signal[t - 1] + rng.normal(0.0, 1.0)
    remote, nino = signal[LAG:], signal[:-LAG] + rng.normal(0.0, 0.2, len(months))  # nino(t) = remote(t - LAG)
    climate = -1.0 + 29.0 * np.cos(np.radians(LAT))[:, None] ** 2 + np.zeros((1, 360))  # °C, warm tropics
    land, patch, box = land_mask(), _box(REMOTE), _box(NINO34_BOX)
    (root / "sst").mkdir(parents=True)
    for month, here, there in zip(months, remote, nino, strict=True):
        field = np.maximum(climate + rng.normal(0.0, 0.3, climate.shape) + here * patch + there * box, -1.8)
        field[land] = np.nan
        write_grib(root / "sst" / f"sst{str(month).replace('-', '')}.grb", field.astype(np.float32), month)
    header = (Path(__file__).parents[1] / "datasets" / "sample_data" / "ONI_NINO34_1854-2020.txt").read_text(
        encoding="utf-8").splitlines()[:10]
    oni = np.convolve(nino, np.ones(3) / 3, mode="same")
    lines = [f"{str(m)[:4]}       {str(m)[5:]}        {27 + a:5.2f}        27.00        {a:5.2f}        {o:5.2f}      "
             f"{'E' if o >= 0.5 else 'L' if o <= -0.5 else 'N'}" for m, a, o in zip(months, nino, oni, strict=True)]
    table = root / "oni.txt"
    table.write_text("\n".join(header + lines) + "\n", encoding="utf-8")
    return root / "sst", table


def test_the_convlstm_with_its_defaults_beats_the_index_only_linear_baseline_when_a_remote_patch_leads(
        tmp_path: Path) -> None:
    from shoal.datasets import cobe_sst, oni

    sst, table = _leading_field(tmp_path)
    catalog = Catalog(tmp_path / "home")
    assert cobe_sst.ingest(catalog, [sst]).exit_code == 0 and oni.ingest(catalog, [table]).exit_code == 0
    settings = {"coarsen": 8, "leads": "1,3", **ENSO_SPLIT}  # coarsen 8: the smallest grid the ConvLSTM takes
    at_3 = _skill(catalog, "enso", settings, lead=3)
    assert at_3["model"]["months"] >= 100
    assert at_3["linear"]["correlation"] < 0.4  # the index alone cannot see 3 months ahead
    low, _ = at_3["model"]["versus"]["linear"]["interval"]
    assert at_3["model"]["correlation"] > 0.6 and low > 0, at_3

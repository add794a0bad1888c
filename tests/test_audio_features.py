"""Speech features: the spectrogram definition, training-only statistics, splits, content addressing, staging."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from shoal.catalog import Catalog
from shoal.datasets.speech_commands import SCHEMA, WORDS
from shoal.features.audio import (
    AudioFeatureConfig,
    SpectrogramConfig,
    SpeechFeatures,
    build,
    spectrogram,
)
from shoal.lineage import Provenance

FIXTURES = Path(__file__).parent / "data" / "speech_commands" / "v0.01"  # 9 real clips: 3 train, 3 valid, 3 test
SAMPLE = Path(__file__).parents[1] / "datasets" / "sample_data" / "speech_commands"  # 300 real clips, 30 words


def speech_table(root: Path, *, change: dict[str, np.ndarray] | None = None) -> pa.Table:
    """The `speech` rows of the WAVs under `root` (splits from its list files), some waveforms replaced by `change`."""
    import soundfile as sf

    lists = {split: set((root / name).read_text().split()) if (root / name).exists() else set()
             for split, name in (("valid", "validation_list.txt"), ("test", "testing_list.txt"))}
    rows = []
    for path in sorted(root.glob("*/*.wav")):
        clip_id = path.relative_to(root).as_posix()
        samples, rate = sf.read(path, dtype="int16")
        samples = (change or {}).get(clip_id, samples)
        speaker, _, utterance = path.stem.partition("_nohash_")
        rows.append({
            "clip_id": clip_id, "label": path.parent.name, "label_index": WORDS.index(path.parent.name),
            "speaker_id": speaker, "utterance": int(utterance),
            "split": "valid" if clip_id in lists["valid"] else "test" if clip_id in lists["test"] else "train",
            "sample_rate": rate, "source_sample_rate": rate, "source_channels": 1, "n_samples": len(samples),
            "sha256": "0" * 64, "waveform": samples.tolist(),
        })
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def write_speech(catalog: Catalog, table: pa.Table) -> int:
    return catalog.write_table("speech", table, mode="append", provenance=Provenance(message="test clips"))


@pytest.fixture
def speech(tmp_path: Path) -> Catalog:
    """A catalog whose `speech` table holds the 9 fixture clips."""
    catalog = Catalog(tmp_path / "home")
    write_speech(catalog, speech_table(FIXTURES))
    return catalog


def _waveform(clip_id: str, root: Path = FIXTURES) -> np.ndarray:
    import soundfile as sf

    return sf.read(root / clip_id, dtype="int16")[0]


def _numpy_log_spectrogram(samples: np.ndarray, n_fft: int = 512, win: int = 480, hop: int = 160) -> np.ndarray:
    """The same definition in float64 numpy: reflect pad, centred periodic Hann frames, rfft, window norm."""
    x = np.zeros(16000)
    x[: min(len(samples), 16000)] = samples[:16000] / 32768.0
    padded = np.pad(x, n_fft // 2, mode="reflect")
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic
    window = np.zeros(n_fft)
    window[(n_fft - win) // 2 : (n_fft - win) // 2 + win] = hann
    frames = np.stack([padded[t * hop : t * hop + n_fft] for t in range(len(x) // hop + 1)])  # (T, n_fft)
    spectrum = np.fft.rfft(frames * window, axis=1) / np.sqrt((hann**2).sum())  # (T, F)
    return np.log(np.abs(spectrum) ** 2 + 0.01).T  # (F, T)


def test_spectrograms_are_257_by_101_short_clips_padded_with_zeros_and_long_ones_cropped() -> None:
    samples = torch.from_numpy(_waveform("yes/439c84f4_nohash_1.wav"))
    assert spectrogram(samples[None]).shape == (1, 257, 101) and SpectrogramConfig().shape == (257, 101)
    assert spectrogram(samples[None]).dtype == torch.float32
    short = samples[:12320]  # 0.77 s
    padded = torch.cat([short, torch.zeros(16000 - 12320, dtype=torch.int16)])
    assert torch.equal(spectrogram(short[None]), spectrogram(padded[None]))
    long = torch.cat([samples, samples[:4800]])  # 1.3 s
    assert torch.equal(spectrogram(long[None]), spectrogram(samples[None]))
    assert torch.equal(spectrogram(samples[None].float() / 32768), spectrogram(samples[None]))  # floats are taken as is


def test_spectrogram_matches_an_independent_numpy_computation_of_the_definition() -> None:
    for clip_id in ("no/6a27a9bf_nohash_0.wav", "up/f428ca69_nohash_1.wav"):
        samples = _waveform(clip_id)
        ours = spectrogram(torch.from_numpy(samples)[None])[0].double().numpy()
        np.testing.assert_allclose(ours, _numpy_log_spectrogram(samples), atol=1e-4, rtol=1e-5)
    short = _waveform("bed/62581901_nohash_0.wav", SAMPLE)[:12320]
    np.testing.assert_allclose(spectrogram(torch.from_numpy(short)[None])[0].double().numpy(),
                               _numpy_log_spectrogram(short), atol=1e-4, rtol=1e-5)


def test_a_spectrogram_does_not_depend_on_the_batch_it_was_computed_in() -> None:
    batch = torch.from_numpy(np.stack([_waveform(p.relative_to(FIXTURES).as_posix()) for p in sorted(FIXTURES.glob("*/*.wav"))]))
    together = spectrogram(batch)
    assert all(torch.equal(spectrogram(batch[i : i + 1])[0], together[i]) for i in range(len(batch)))
    assert torch.equal(spectrogram(batch[[4, 0, 7]]), together[[4, 0, 7]])


def test_statistics_equal_a_float64_two_pass_numpy_computation_over_training_clips_and_frames(speech: Catalog) -> None:
    build(speech, config=AudioFeatureConfig(), device="cpu")
    features = SpeechFeatures(speech)
    train = np.nonzero(features.split == 0)[0]
    assert len(train) == 3
    values = spectrogram(features.waveforms[train]).double().numpy()  # (3, 257, 101)
    mean = values.mean(axis=(0, 2))
    var = ((values - mean[None, :, None]) ** 2).mean(axis=(0, 2))
    np.testing.assert_allclose(features.stats.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(features.stats.var, var, rtol=1e-12)
    assert (features.stats.count == 3 * 101).all() and features.stats.shape == (257,)
    stored = speech.open_array("speech_features")
    np.testing.assert_array_equal(stored["mean"].values, features.stats.mean)


def test_validation_and_test_clips_never_change_the_statistics(speech: Catalog, tmp_path: Path) -> None:
    build(speech, config=AudioFeatureConfig(), device="cpu")
    reference = speech.lineage("speech_features").parameters["statistics"]
    valid, test, train = "no/6a27a9bf_nohash_0.wav", "no/97f4c236_nohash_2.wav", "no/988e2f9a_nohash_0.wav"
    loud = {clip: np.clip(_waveform(clip).astype(np.int32) * 4, -32768, 32767).astype(np.int16) for clip in (valid, test)}
    changed = Catalog(tmp_path / "changed")
    write_speech(changed, speech_table(FIXTURES, change=loud))
    build(changed, config=AudioFeatureConfig(), device="cpu")
    assert changed.lineage("speech_features").parameters["statistics"] == reference
    trained = Catalog(tmp_path / "trained")
    write_speech(trained, speech_table(FIXTURES, change={train: _waveform(train)[::-1].copy()}))
    build(trained, config=AudioFeatureConfig(), device="cpu")
    assert trained.lineage("speech_features").parameters["statistics"] != reference


def test_the_build_is_content_addressed_and_a_new_speech_version_makes_a_new_feature_version(speech: Catalog) -> None:
    config = AudioFeatureConfig()
    first = build(speech, config=config, device="cpu")
    assert not first.reused and first.version == 0
    again = build(speech, config=config, device="cpu")
    assert again.reused and (again.version, again.snapshot) == (first.version, first.snapshot)
    other = build(speech, config=AudioFeatureConfig(split="random"), device="cpu")
    assert not other.reused and other.version == 1
    extra = speech_table(SAMPLE).filter(pa.compute.equal(pa.compute.field("clip_id"), "bed/62581901_nohash_0.wav"))
    assert write_speech(speech, extra) == 1
    newer = build(speech, config=config, device="cpu")
    assert not newer.reused and newer.version == 2
    assert speech.lineage("speech_features").parameters["speech_version"] == 1
    assert len(SpeechFeatures(speech).clip_id) == 10 and len(SpeechFeatures(speech, version=0).clip_id) == 9


def test_materialized_and_on_the_fly_clips_give_identical_numbers(speech: Catalog) -> None:
    lazy = build(speech, config=AudioFeatureConfig(), device="cpu")
    stored = build(speech, config=AudioFeatureConfig(materialize=True), device="cpu")
    a, b = SpeechFeatures(speech, version=lazy.version), SpeechFeatures(speech, version=stored.snapshot)
    assert a.spectrograms is None and b.spectrograms is not None and b.spectrograms.shape == (9, 257, 101)
    assert a.stats == b.stats
    for split in ("train", "valid", "test"):
        on_the_fly, materialized = a.clips(split), b.clips(split)
        assert len(on_the_fly) == len(materialized) == 3
        for i in range(3):
            assert torch.equal(on_the_fly[i]["x"], materialized[i]["x"])
        items = torch.tensor([2, 0, 1])
        x = on_the_fly.to(torch.device("cpu")).gather(items)["x"]
        assert torch.equal(x, materialized.to(torch.device("cpu")).gather(items)["x"])
    chunks = speech.open_array("speech_features", version=stored.snapshot).spectrogram.encoding["chunks"]
    assert chunks == (9, 257, 101)  # 64 clips a chunk, fewer here


def test_the_staging_gather_equals_the_default_collation_of_items(speech: Catalog) -> None:
    from torch.utils.data import default_collate

    for materialize in (False, True):
        build(speech, config=AudioFeatureConfig(materialize=materialize), device="cpu")
        clips = SpeechFeatures(speech).clips("valid")
        item = clips[1]
        assert item["x"].shape == (1, 257, 101) and item["x"].dtype == torch.float32
        assert item["label"].shape == () and item["label"].dtype == torch.int64
        items = torch.tensor([2, 0, 1, 2])
        expected = default_collate([clips[int(i)] for i in items])
        gathered = clips.to(torch.device("cpu")).gather(items)
        assert gathered.keys() == expected.keys() == {"x", "label"}
        for key in expected:
            assert gathered[key].dtype == expected[key].dtype and torch.equal(gathered[key], expected[key]), key


def test_labels_and_official_splits_come_from_the_table_in_clip_id_order(speech: Catalog) -> None:
    build(speech, config=AudioFeatureConfig(), device="cpu")
    features = SpeechFeatures(speech)
    table = speech_table(FIXTURES).sort_by("clip_id")
    assert features.clip_id.tolist() == table.column("clip_id").to_pylist()
    assert features.label.tolist() == table.column("label_index").to_pylist()
    assert [("train", "valid", "test")[c] for c in features.split] == table.column("split").to_pylist()
    valid = features.clips("valid")
    assert features.clip_id[valid.rows].tolist() == ["no/6a27a9bf_nohash_0.wav", "up/439c84f4_nohash_1.wav",
                                                     "yes/439c84f4_nohash_1.wav"]
    assert int(valid[2]["label"]) == WORDS.index("yes")


def test_the_random_split_keeps_each_speaker_in_one_split_and_is_deterministic_by_seed(tmp_path: Path) -> None:
    from shoal.datasets.speech_commands import speaker

    catalog = Catalog(tmp_path / "sample")
    write_speech(catalog, speech_table(SAMPLE))
    config = AudioFeatureConfig(split="random", seed=3, valid_fraction=0.15, test_fraction=0.15)
    build(catalog, config=config, device="cpu")
    features = SpeechFeatures(catalog)
    by_speaker: dict[str, set[int]] = {}
    for clip, code in zip(features.clip_id, features.split, strict=True):
        by_speaker.setdefault(speaker(clip), set()).add(int(code))
    assert all(len(codes) == 1 for codes in by_speaker.values())  # no voice on both sides
    shares = np.bincount([next(iter(codes)) for codes in by_speaker.values()], minlength=3) / len(by_speaker)
    np.testing.assert_allclose(shares, [0.7, 0.15, 0.15], atol=0.1)  # of ~250 speakers
    assert SpeechFeatures(catalog).split.tolist() == features.split.tolist()
    other = build(catalog, config=AudioFeatureConfig(split="random", seed=4), device="cpu")
    assert not np.array_equal(SpeechFeatures(catalog, version=other.version).split, features.split)
    record = catalog.lineage("speech_features", version=0).parameters["split"]
    assert record["rule"] == "random" and record["parameters"]["by"] == "speaker"
    assert sum(record["counts"].values()) == 300 and record["counts"]["train"] == int((features.split == 0).sum())
    train = features.clips("train")
    assert features.stats.count[0] == len(train) * 101
    x = train.to(torch.device("cpu")).gather(torch.arange(len(train)))["x"].double()  # normalized on these clips
    np.testing.assert_allclose(x.mean(dim=(0, 1, 3)).numpy(), 0.0, atol=1e-4)

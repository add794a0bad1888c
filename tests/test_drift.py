"""`shoal drift`: a new SST month with a +3 °C patch is flagged and located, a month drawn from the training
climatology is not; a HIGGS table with one column rescaled is flagged on that column only. Real small homes: the
sample COBE-format GRIB files and the real HIGGS rows."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from shoal.catalog import Catalog
from shoal.cli import app
from shoal.drift import Thresholds, compare, drift, grid_findings, psi
from tests.test_cli import shoal

HIGGS_ROWS = Path(__file__).parent / "data" / "higgs" / "higgs_real_train.csv.gz"
PATCH_TILE = "30..40,180..190"  # open North Pacific


@pytest.fixture(scope="module")
def enso_home(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    """Four training years of sample SST (1985-1988) and the ENSO features fitted on them."""
    from shoal.datasets import cobe_sst, oni
    from shoal.datasets.cobe_sst_sample import write_sample
    from shoal.features.enso import EnsoFeatureConfig, build

    root = tmp_path_factory.mktemp("drift_enso")
    home = Catalog(root / "home")
    write_sample(root / "sst", start="1985-01", end="1989-06")
    assert cobe_sst.ingest(home, [root / "sst"]).exit_code == 0 and oni.ingest(home, [oni.SAMPLE]).exit_code == 0
    build(home, config=EnsoFeatureConfig(valid_start="1989-01", test_start="1989-04"))
    return home


def _climatology_draw(home: Catalog, month: str, seed: int) -> np.ndarray:
    """(180, 360) lat ascending: the training mean of this calendar month plus noise with each cell's training std."""
    sst = home.open_array("sst")
    months = sst.time.values.astype("datetime64[M]")
    same = (months < np.datetime64("1989-01", "M")) & (months.astype(np.int64) % 12 == np.datetime64(month, "M").astype(
        np.int64) % 12)
    values = sst.sst.values[same].astype(np.float64)
    return values.mean(axis=0) + np.random.default_rng(seed).standard_normal(values.shape[1:]) * values.std(axis=0)


def _month_file(folder: Path, month: str, field: np.ndarray) -> Path:
    from shoal.datasets.cobe_sst_sample import write_grib

    folder.mkdir(exist_ok=True)
    return write_grib(folder / f"sst{month.replace('-', '')}.grb", field.astype(np.float32), np.datetime64(month, "M"))


def _ingest_month(home: Catalog, folder: Path, month: str, field: np.ndarray) -> None:
    from shoal.datasets import cobe_sst

    assert cobe_sst.ingest(home, [_month_file(folder, month, field)]).exit_code == 0


def test_a_month_drawn_from_the_training_climatology_is_not_drift(enso_home: Catalog, tmp_path: Path) -> None:
    _ingest_month(enso_home, tmp_path / "new", "1989-07", _climatology_draw(enso_home, "1989-07", seed=1))
    calm = drift(enso_home, "enso", since="1989-07")
    assert calm.drifted == () and len(calm.findings) > 300, calm.markdown()
    assert calm.new == "1 SST months 1989-07..1989-07"
    shown = CliRunner().invoke(app, ["--home", enso_home.home, "drift", "enso", "--since", "1989-07"])
    assert shown.exit_code == 0 and "no drift in" in shown.stdout, shown.output


def test_a_3_degree_patch_in_one_tile_is_flagged_there_only_and_the_command_exits_1(enso_home: Catalog,
                                                                                   tmp_path: Path) -> None:
    from shoal.datasets.cobe_sst import LAT, LON

    patched = _climatology_draw(enso_home, "1989-08", seed=2)
    tile = ((LAT >= 30) & (LAT < 40))[:, None] & ((LON >= 180) & (LON < 190))[None, :]
    patched[tile] += 3.0
    _ingest_month(enso_home, tmp_path / "new", "1989-08", patched)
    found = drift(enso_home, "enso", since="1989-08")
    assert [(f.variable, f.region) for f in found.drifted] == [("sst", PATCH_TILE)], found.markdown()
    assert found.drifted[0].shift > Thresholds().shift and found.drifted[0].psi is None  # one month: too few for PSI
    result = CliRunner().invoke(app, ["--home", enso_home.home, "drift", "enso", "--since", "1989-08", "--json"])
    assert result.exit_code == 1, result.output
    facts = json.loads(result.stdout)
    assert facts["drift"] is True and [f["region"] for f in facts["drifted"]] == [PATCH_TILE]


def test_a_grid_read_a_slice_of_months_at_a_time_gives_the_cell_by_cell_anomalies_findings() -> None:
    """Region means of values less the climatology's equal the means of the cells' anomalies (the first design)."""
    rng = np.random.default_rng(3)
    months = np.arange(np.datetime64("1980-01"), np.datetime64("1986-01"))  # 5 training years, then 12 new months
    train, new = np.arange(len(months)) < 60, np.arange(len(months)) >= 60
    lat, lon = np.arange(-9.5, 10), np.arange(150.5, 200)
    seasonal = 3 * np.cos(np.arange(len(months)) / 1.9)[:, None, None]
    values = rng.normal(20, 1, (len(months), len(lat), len(lon))) + seasonal
    values[:, :3, :4] = np.nan  # land
    values[61, 5, 5] = np.nan  # a new month with a cell missing: its regions have no value that month
    values[new, :, 20:] += 0.8  # the east warms
    found = {f.region: f for f in grid_findings("sst", lambda: np.array_split(values, 9), months, train, new, lat, lon,
                                                 Thresholds())}
    calendar = months.astype(np.int64) % 12
    ocean = ~np.isnan(values[train]).any(axis=0)
    anomaly = np.empty_like(values)
    for c in range(12):
        same = train & (calendar == c)
        total = values[same].sum(axis=0)
        anomaly[calendar == c] = values[calendar == c] - total / same.sum()
        anomaly[same] = values[same] - (total - values[same]) / (same.sum() - 1)
    means = anomaly[:, ocean].mean(axis=1)  # the region "all"
    season = np.abs((np.arange(12)[:, None] - calendar[None, :] + 6) % 12 - 6) <= 1
    spread = np.array([means[train & season[c]].std() for c in range(12)])
    scaled = means / np.maximum(spread, Thresholds().min_std)[calendar]
    expected = compare("sst", "all", scaled[train], scaled[new][np.isfinite(scaled[new])], Thresholds())
    assert found["all"].shift == pytest.approx(expected.shift, rel=1e-9)
    assert found["all"].psi == expected.psi and found["all"].new == 11


def test_since_inside_the_training_period_is_one_line_naming_the_first_allowed_month(enso_home: Catalog) -> None:
    result = shoal("drift", "enso", "--since", "1988-05", home=Path(enso_home.home))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "inside the training period" in result.stderr and "pass a month from 1989-01" in result.stderr


def _higgs_file(path: Path, rescale: tuple[int, float] | None = None) -> Path:
    with gzip.open(HIGGS_ROWS, "rt") as source:
        rows = np.loadtxt(source, delimiter=",")
    if rescale is not None:
        column, factor = rescale
        rows[:, 1 + column] *= factor  # column 0 is the label
    np.savetxt(path, rows, delimiter=",", fmt="%.18e")
    return path


def test_a_higgs_table_with_one_column_rescaled_is_flagged_on_that_column_only(tmp_path: Path) -> None:
    from shoal.datasets import higgs
    from shoal.features.higgs import build

    home = Catalog(tmp_path / "home")
    assert higgs.ingest(home, [_higgs_file(tmp_path / "higgs.csv")]).exit_code == 0
    build(home)
    with pytest.raises(Exception, match="no `higgs` version after"):
        drift(home, "higgs")
    assert higgs.ingest(home, [_higgs_file(tmp_path / "rescaled.csv", rescale=(5, 1.5))]).exit_code == 0
    found = drift(home, "higgs")
    assert [f.variable for f in found.drifted] == [higgs.FEATURES[5]], found.markdown()
    assert found.drifted[0].psi > Thresholds().psi and len(found.findings) == 28
    # the other 27 columns: the same rows, train vs all, are far below both thresholds
    assert max(f.psi for f in found.findings if not f.drift) < 0.05


def test_the_streamed_higgs_comparison_equals_numpy_on_the_whole_tables(tmp_path: Path) -> None:
    from shoal.datasets import higgs
    from shoal.features.higgs import build

    home = Catalog(tmp_path / "home")
    assert higgs.ingest(home, [_higgs_file(tmp_path / "higgs.csv")]).exit_code == 0
    build(home)
    assert higgs.ingest(home, [_higgs_file(tmp_path / "rescaled.csv", rescale=(0, 0.8))]).exit_code == 0
    streamed = {f.variable: f for f in drift(home, "higgs").findings}
    with gzip.open(HIGGS_ROWS, "rt") as source:
        rows = np.loadtxt(source, delimiter=",")[:, 1:].astype(np.float32).astype(np.float64)
    train, _, _ = higgs.official_split(len(rows))
    new = (rows * np.where(np.arange(28) == 0, np.float32(0.8), 1)).astype(np.float32).astype(np.float64)
    for i, name in enumerate(higgs.FEATURES):
        expected = compare(name, "all", rows[:train, i], new[:, i], Thresholds())
        assert streamed[name].shift == pytest.approx(expected.shift, rel=1e-9, abs=1e-9), name
        assert streamed[name].psi == pytest.approx(expected.psi, rel=1e-9, abs=1e-12), name


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shifted_one() -> None:
    rng = np.random.default_rng(0)
    reference = rng.standard_normal(20_000)
    assert psi(reference, rng.standard_normal(5_000)) < 0.01
    assert psi(reference, rng.standard_normal(5_000) + 1.0) > 0.25
    finding = compare("x", "all", reference, rng.standard_normal(50) * 3, Thresholds())
    assert finding.psi is None  # 50 values: PSI's bias would decide, so it is not computed


def _drift_events(since: str) -> list[dict]:
    """The DRIFT_DETECTED events the Prefect server (the session's test harness) stored, through its API."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    from shoal.flows.deployments import DRIFT_DETECTED

    body = {"filter": {"event": {"name": [DRIFT_DETECTED]}, "occurred": {"since": since}}, "limit": 10}
    response = httpx.post(f"{PREFECT_API_URL.value()}/events/filter", json=body, timeout=30)
    response.raise_for_status()
    return response.json()["events"]


@pytest.mark.usefixtures("prefect_harness")
def test_the_refresh_checks_each_new_month_and_a_drift_is_an_event_and_an_artifact(tmp_path: Path) -> None:
    import time
    from datetime import UTC, datetime

    from prefect.events.worker import EventsWorker

    from shoal.datasets.cobe_sst import LAT, LON
    from shoal.datasets.cobe_sst_sample import write_sample
    from shoal.flows.deployments import refresh_sst
    from tests.test_flows import _artifact

    started = datetime.now(UTC).isoformat()
    source, home = tmp_path / "sst", Catalog(tmp_path / "home")
    write_sample(source, start="1985-01", end="1989-06")
    settings = {"valid_start": "1989-01", "test_start": "1989-04"}
    refresh_sst(source=source, home=home.home, features=settings)
    assert "no drift in" in _artifact("enso-drift")  # the sample's own months 1989-01..06
    patched = _climatology_draw(home, "1989-07", seed=3)
    patched[((LAT >= 30) & (LAT < 40))[:, None] & ((LON >= 180) & (LON < 190))[None, :]] += 3.0
    _month_file(source, "1989-07", patched)
    refresh_sst(source=source, home=home.home, features=settings)
    published = _artifact("enso-drift")
    assert "**drift** in 1 of" in published and f"| sst | {PATCH_TILE} |" in published, published
    EventsWorker.drain_all()
    deadline = time.monotonic() + 30
    while not (events := _drift_events(started)) and time.monotonic() < deadline:
        time.sleep(1)
    (event,) = events
    assert event["resource"]["prefect.resource.id"] == "shoal.drift.enso"
    assert [f["region"] for f in event["payload"]["drifted"]] == [PATCH_TILE]
    assert event["payload"]["new"] == "1 SST months 1989-07..1989-07"


def test_version_picks_the_feature_version_whose_training_rows_are_the_reference(tmp_path: Path) -> None:
    from shoal.datasets import higgs
    from shoal.features.higgs import build

    home = Catalog(tmp_path / "home")
    assert higgs.ingest(home, [_higgs_file(tmp_path / "higgs.csv")]).exit_code == 0
    build(home)
    assert higgs.ingest(home, [_higgs_file(tmp_path / "rescaled.csv", rescale=(5, 1.5))]).exit_code == 0
    build(home)  # version 1, fitted on the rescaled table: nothing newer to compare
    newest = shoal("drift", "higgs", home=Path(home.home))
    assert newest.returncode == 2 and "no `higgs` version after version 1" in newest.stderr, newest.stderr
    first = CliRunner().invoke(app, ["--home", home.home, "drift", "higgs", "--version", "0", "--json"])
    assert first.exit_code == 1, first.output
    facts = json.loads(first.stdout)
    assert facts["features"] == "higgs_features version 0" and [f["variable"] for f in facts["drifted"]] == [
        higgs.FEATURES[5]]


def _new_clips(dest: Path, gain: float) -> Path:
    """Every real sample clip again under a new speaker id (so new clips), its samples times `gain`."""
    import soundfile

    from shoal.datasets.speech_commands_sample import write_sample

    real = write_sample(dest.parent / "real_for_new", copies=0, noise_files=0)
    for path in sorted(real.glob("*/*_nohash_*.wav")):
        audio, rate = soundfile.read(path, dtype="int16")
        scaled = np.clip(audio.astype(np.float64) * gain, -32768, 32767).astype(np.int16)
        target = dest / path.parent.name / f"new{path.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(target, scaled, rate, subtype="PCM_16")
    return dest


@pytest.mark.parametrize(("gain", "drifts"), [(1.0, False), (4.0, True)])
def test_new_speech_clips_drift_in_every_band_when_four_times_louder_and_not_as_recorded(
        tmp_path: Path, gain: float, drifts: bool) -> None:
    from shoal.datasets import speech_commands
    from shoal.datasets.speech_commands_sample import write_sample
    from shoal.features.audio import AudioFeatureConfig, build

    home = Catalog(tmp_path / "home")
    assert speech_commands.ingest(home, [write_sample(tmp_path / "real", copies=0, noise_files=0)]).exit_code == 0
    build(home, config=AudioFeatureConfig())
    assert speech_commands.ingest(home, [_new_clips(tmp_path / "new", gain)]).exit_code == 0
    found = drift(home, "speech")
    assert len(found.findings) == 8 and all(f.psi is not None for f in found.findings), found.markdown()
    assert len(found.drifted) == (8 if drifts else 0), found.markdown()

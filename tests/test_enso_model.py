"""The ENSO task: test-period skill by lead beside three baselines, predictions, reuse of identical runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shoal.catalog import Catalog
from shoal.datasets import cobe_sst, oni
from shoal.datasets.cobe_sst_sample import write_sample
from shoal.features.enso import PERIODS, EnsoFeatures, IndexSeries
from shoal.evaluation import verdict
from shoal.tasks.enso import SCORING, baselines, threshold_phase
from shoal.models.runs import evaluate_model, load_model, predict_model, train_model
from shoal.progress import NULL
from shoal.contract import get_task
from tests.timeouts import scaled

TASK = get_task("enso")
QUICK = {"epochs": 1, "max_batches": 3, "batch_size": 2, "device": "cpu", "coarsen": 8, "leads": "1,3",
         "valid_start": "1996-01", "test_start": "1998-01"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    root = tmp_path_factory.mktemp("enso")
    catalog = Catalog(root / "home")
    cobe_sst.ingest(catalog, [Path(write_sample(root / "sst", start="1990-01", end="1999-12")[0]).parent])
    oni.ingest(catalog, [oni.SAMPLE])
    settings = TASK.parse(QUICK)
    TASK.build_features(catalog, settings, NULL)
    assert not train_model(catalog, TASK, settings).reused
    return catalog


def test_training_registers_test_skill_by_lead_for_the_model_and_three_baselines(trained: Catalog) -> None:
    _, entry = load_model(trained, TASK)
    assert entry.version == 0 and entry.checkpoint.exists() and entry.config["model"]["leads"] == [1, 3]
    assert entry.feature_version == trained.history("enso_features")[0].snapshot
    metrics = entry.metrics
    assert metrics["period"] == "test" and metrics["test_start"] == "1998-01"
    assert [(row["lead"], row["method"]) for row in metrics["skill"]] == [
        (lead, method) for lead in (1, 3) for method in ("model", "persistence", "climatology", "linear")]
    for row in metrics["skill"]:
        assert row["months"] == 24 and set(row) >= {"rmse_c", "correlation", "phase_accuracy"}  # 1998-01 .. 1999-12
        assert set(row["interval"]) == {"rmse_c", "correlation", "phase_accuracy"}


def test_skill_is_also_scored_by_lead_and_target_season_with_intervals(trained: Catalog) -> None:
    by_season = load_model(trained, TASK)[1].metrics["by_season"]
    assert {(row["lead"], row["season"]) for row in by_season} == {(lead, season) for lead in (1, 3)
                                                                   for season in ("DJF", "MAM", "JJA", "SON")}
    assert all(row["months"] == 6 and "interval" in row for row in by_season)  # 24 test months, 6 a season
    assert {row["method"] for row in by_season} == {"model", "persistence", "climatology", "linear"}


def test_a_target_month_falls_in_its_meteorological_season() -> None:
    from shoal.tasks.enso import season_of

    months = np.arange(np.datetime64("1999-12"), np.datetime64("2000-12"), dtype="datetime64[M]")
    assert season_of(months).tolist() == ["DJF"] * 3 + ["MAM"] * 3 + ["JJA"] * 3 + ["SON"] * 3


def test_training_and_model_selection_never_see_a_test_month(trained: Catalog) -> None:
    prepared = TASK.prepare(trained, TASK.parse(QUICK), None)
    months = EnsoFeatures(trained).months
    for data, end in ((prepared.train_data, "1996-01"), (prepared.valid_data, "1998-01")):
        last_targets = months[data.origins - 1 + 3]
        assert len(data) > 0 and (last_targets < np.datetime64(end)).all()


def test_evaluate_recomputes_the_registered_skill(trained: Catalog) -> None:
    entry, metrics = evaluate_model(trained, TASK, device="cpu")
    assert metrics["skill"] == entry.metrics["skill"]


def test_an_identical_rerun_reuses_the_model_and_retrain_gives_a_new_version_with_the_same_cpu_weights(trained: Catalog) -> None:
    import torch

    settings = TASK.parse(QUICK)
    again = train_model(trained, TASK, settings)
    assert again.reused and again.entry.version == 0 and again.result is None
    retrained = train_model(trained, TASK, settings, retrain=True)
    assert not retrained.reused and retrained.entry.version == 1 and retrained.run_id == again.run_id
    first, _ = load_model(trained, TASK, 0)
    second, _ = load_model(trained, TASK, 1)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    other = train_model(trained, TASK, TASK.parse(QUICK | {"seed": 1}))
    assert not other.reused and other.run_id != again.run_id


def test_predictions_cover_validation_and_test_at_every_lead_and_forecast_from_the_newest_window(trained: Catalog) -> None:
    entry, predicted = predict_model(trained, TASK, model_version=0, device="cpu")
    table = trained.read_table("enso_predictions", version=predicted.version).to_pandas()
    hindcast, forecast = table[table.kind == "hindcast"], table[table.kind == "forecast"]
    assert set(hindcast.period) == {"valid", "test"} and set(hindcast.lead) == {1, 3}
    assert len(hindcast[(hindcast.lead == 1) & (hindcast.period == "test")]) == 24
    assert list(forecast.lead) == [1, 3] and list(forecast.target_month.astype(str)) == ["2000-01-01", "2000-03-01"]
    assert (forecast.issued_month.astype(str) == "1999-12-01").all() and forecast.period.isna().all()
    assert forecast.observed_anom_c.isna().all() and hindcast.observed_anom_c.notna().all()
    np.testing.assert_allclose(table[["prob_e", "prob_l", "prob_n"]].sum(axis=1), 1.0, rtol=1e-6)
    assert (table.run_id == entry.run_id).all() and (table.model_version == 0).all()
    assert [plot.name.rsplit("_", 1)[1] for plot in predicted.plots] == ["hindcast.png", "seasons.png", "skill.png"]
    for plot in predicted.plots:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lineage = trained.lineage("enso_predictions")
    assert {i.name for i in lineage.inputs} == {"enso_features", "model_registry"}


def _tiny() -> IndexSeries:
    """30 months from 2000-01: train 2000-01 .. 2001-06, valid 2001-07 .. 2001-12, test 2002."""
    months = np.arange(np.datetime64("2000-01"), np.datetime64("2002-07"))
    anomaly = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 0.8, 0.6, 0.4, 0.2, 0.0, -0.2,
                        -0.4, -0.6, -0.8, -1.0, -0.8, -0.6, -0.4, -0.2, 0.0, 0.2, 0.4, 0.6,
                        0.8, 1.0, 0.8, 0.6, 0.4, 0.2])
    phase = np.array([2, 2, 2, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 2, 2])
    split = np.array([0] * 18 + [1] * 6 + [2] * 6, dtype=np.int8)
    return IndexSeries(months=months, anomaly=anomaly, phase=phase, present=np.ones(30, bool), split=split, window=2)


def test_persistence_and_climatology_give_the_hand_computed_answers() -> None:
    series = _tiny()
    origins = series.rows(2, "test")  # origin t: inputs t-2, t-1; lead-2 target t+1 in 2002-01 .. 2002-06
    assert list(origins) == [23, 24, 25, 26, 27, 28]
    forecasts = baselines(series, origins, 2)
    value, phase = forecasts["persistence"]  # the anomaly and phase of month t-1
    np.testing.assert_allclose(value, [0.4, 0.6, 0.8, 1.0, 0.8, 0.6])
    assert list(phase) == [2, 0, 0, 0, 0, 0]
    value, phase = forecasts["climatology"]  # training mean of the target's calendar month
    # Jan (2000, 2001): (0.0 - 0.4) / 2; Feb: (0.2 - 0.6) / 2; ...; May, Jun: (0.8 - 0.8) / 2, (1.0 - 0.6) / 2
    np.testing.assert_allclose(value, [-0.2, -0.2, -0.2, -0.2, 0.0, 0.2], atol=1e-12)
    assert list(phase) == [2, 1, 1, 0, 0, 0]  # the most frequent training phase; Feb-Jun tie (one each): the lower code


def test_the_linear_baseline_recovers_an_exact_autoregression() -> None:
    months = np.arange(np.datetime64("1980-01"), np.datetime64("1990-01"))
    anomaly = np.zeros(len(months))
    anomaly[:2] = 0.5, -0.3
    for t in range(2, len(months)):  # a noiseless AR(2) plus a seasonal term: least squares is exact
        anomaly[t] = 0.6 * anomaly[t - 1] - 0.2 * anomaly[t - 2] + 0.1 * (months[t - 1].astype(int) % 12)
    series = IndexSeries(months=months, anomaly=anomaly, phase=np.zeros(len(months), int), present=np.ones(len(months), bool),
                         split=np.array([0] * 80 + [1] * 20 + [2] * 20, dtype=np.int8), window=2)
    origins = series.rows(1, "test")
    value, phase = baselines(series, origins, 1)["linear"]
    np.testing.assert_allclose(value, anomaly[origins], atol=1e-9)
    assert list(phase) == list(threshold_phase(anomaly[origins]))


def test_on_the_real_ersstv5_series_the_linear_baseline_beats_persistence_at_every_lead() -> None:
    """The numbers are shoal's own, pinned as a regression guard (no paper publishes them); persistence
    is also recomputed here from the table alone, without shoal's baselines."""
    table = oni.read_oni(oni.SAMPLE)
    months = np.array(table.column("month").to_pylist(), dtype="datetime64[M]")
    anomaly = table.column("nino34_anom").to_numpy(zero_copy_only=False).astype(np.float64)
    split = np.where(months < np.datetime64("1990-01"), 0, np.where(months < np.datetime64("2005-01"), 1, 2))
    split[months < np.datetime64("1950-01")] = 3  # fitted on targets 1950-1989; earlier months are inputs only
    present = np.isfinite(anomaly)
    series = IndexSeries(months=months, anomaly=np.nan_to_num(anomaly), phase=np.zeros(len(months), int),
                         present=present, split=split.astype(np.int8))
    expected = {1: (0.971, 0.956), 3: (0.796, 0.733), 6: (0.431, 0.304), 9: (0.089, -0.013)}
    for lead, (linear, persistence) in expected.items():
        rows = series.rows(lead, "test")
        observed = anomaly[rows - 1 + lead]
        forecasts = baselines(series, rows, lead)
        assert len(rows) == 189  # target months 2005-01 .. 2020-09: the table has no anomaly after 2020-09
        assert np.corrcoef(forecasts["linear"][0], observed)[0, 1] == pytest.approx(linear, abs=1e-3)
        assert np.corrcoef(forecasts["persistence"][0], observed)[0, 1] == pytest.approx(persistence, abs=1e-3)
        targets = np.flatnonzero((months >= np.datetime64("2005-01")) & present)
        targets = targets[present[targets - lead]]
        assert np.corrcoef(anomaly[targets - lead], anomaly[targets])[0, 1] == pytest.approx(persistence, abs=1e-3)
        assert linear > persistence


def test_the_verdict_judges_each_lead_on_moving_blocks_of_months() -> None:
    from shoal.evaluation import score

    rng = np.random.default_rng(0)
    observed = np.convolve(rng.normal(size=200), np.ones(6) / 6, mode="same")  # autocorrelated like an index
    good, poor = observed + rng.normal(0, 0.05, 200), observed + rng.normal(0, 0.5, 200)
    skill = []
    for lead, (model, linear) in {1: (poor, good), 3: (good, poor)}.items():
        phases = {"phase": np.zeros(200, int)}
        skill += score(SCORING, {"anomaly": observed, **phases},
                       {"model": {"anomaly": model, **phases}, "linear": {"anomaly": linear, **phases},
                        "climatology": {"anomaly": np.zeros(200), **phases}}, group=lead)
    said = verdict(SCORING, skill)
    assert said.startswith("At lead 1 the model is worse than linear (correlation 0.")
    assert "; at lead 3 the model is better than linear (correlation 0.9" in said
    assert PERIODS == ("train", "valid", "test")


def test_plots_leave_the_users_matplotlib_backend_and_pyplot_alone(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys, matplotlib; matplotlib.use('svg')\n"
        "from pathlib import Path\n"
        "from shoal.models.reports import plot_skill\n"
        f"plot_skill(Path({str(tmp_path)!r}) / 'skill.png', [{{'lead': 1, 'method': 'model', 'correlation': 0.5}},"
        " {'lead': 3, 'method': 'model', 'correlation': 0.2}], title='t')\n"
        "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=scaled(120), check=True)
    assert result.stdout.split() == ["svg", "False"]
    assert (tmp_path / "skill.png").read_bytes()[:4] == b"\x89PNG"


def test_too_few_training_months_for_the_linear_baseline_is_refused_before_training(tmp_path: Path) -> None:
    from shoal.errors import CatalogError

    catalog = Catalog(tmp_path / "home")
    cobe_sst.ingest(catalog, [Path(write_sample(tmp_path / "sst", start="1990-01", end="1992-12")[0]).parent])
    oni.ingest(catalog, [oni.SAMPLE])
    settings = TASK.parse(QUICK | {"valid_start": "1991-06", "test_start": "1992-06"})  # 17 training months
    TASK.build_features(catalog, settings, NULL)
    with pytest.raises(CatalogError, match=r"training months for the linear baseline at lead 1 \(it needs more than 18\)"):
        train_model(catalog, TASK, settings)
    assert not (tmp_path / "home" / "models").exists()  # nothing was trained

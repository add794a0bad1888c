"""The HIGGS task on 500 real rows: TabNet trained on train, picked on valid, scored on test beside the baselines."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from shoal.catalog import Catalog
from shoal.datasets.higgs import FEATURES, ingest
from shoal.contract import get_task
from tests.test_cli import _one_error_line, shoal

REAL = Path(__file__).parent / "data" / "higgs" / "higgs_real_test.csv"  # 500 real rows in the UCI format


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    from shoal.models.runs import predict_model, train_model

    catalog = Catalog(tmp_path_factory.mktemp("higgs") / "home")
    assert ingest(catalog, [REAL]).exit_code == 0
    task = get_task("higgs")
    settings = task.parse({"epochs": 2, "batch_size": 64, "device": "cpu"})
    task.build_features(catalog, settings, reporter=None)
    result = train_model(catalog, task, settings)
    entry, predicted = predict_model(catalog, task, device="cpu")
    return SimpleNamespace(catalog=catalog, trained=result, entry=entry, predicted=predicted)


def test_the_defaults_are_tabnet_s_as_the_analysis_trained_it() -> None:
    settings = get_task("higgs").parse({})
    assert (settings.batch_size, settings.lr, settings.optimizer) == (16_384, 0.02, "adam")


def test_training_registers_test_accuracy_and_auc_beside_gradient_boosting(trained: SimpleNamespace) -> None:
    skill = {row["method"]: row for row in trained.trained.entry.metrics["skill"]}
    assert set(skill) == {"model", "hist_gradient_boosting", "majority"}
    assert all(row["rows"] == 125 for row in skill.values())  # the last quarter of 500 rows
    assert skill["majority"]["roc_auc"] == 0.5
    assert skill["hist_gradient_boosting"]["roc_auc"] > 0.55  # real rows: the label is learnable
    test = trained.catalog.scan_table("higgs_features").filter(pl.col("split") == "test").sort("row_id").collect()
    predicted = pl.read_delta(trained.catalog.uri("table", "higgs_predictions")).filter(
        pl.col("split") == "test").sort("row_id")
    assert predicted["row_id"].to_list() == test["row_id"].to_list()
    label, probability = test["label"].to_numpy(), predicted["probability"].to_numpy()
    assert skill["model"]["accuracy"] == pytest.approx(np.mean((probability >= 0.5) == label), abs=1e-9)
    assert skill["model"]["roc_auc"] == pytest.approx(roc_auc_score(label, probability), abs=1e-6)
    for row in skill.values():  # every number with its interval around it
        for key in ("accuracy", "roc_auc"):
            low, high = row["interval"][key]
            assert low <= row[key] <= high


def test_predictions_cover_every_row_and_explanations_sum_to_one(trained: SimpleNamespace) -> None:
    predictions = pl.read_delta(trained.catalog.uri("table", "higgs_predictions"))
    assert predictions.height == 500 and sorted(predictions["row_id"]) == list(range(500))
    assert ((predictions["probability"] >= 0.5).cast(pl.Int8) == predictions["predicted_label"]).all()
    explanations = pl.read_delta(trained.catalog.uri("table", "higgs_explanations"))
    overall = explanations.filter(pl.col("kind") == "global")
    assert overall["feature"].to_list() == list(FEATURES)
    assert overall["importance"].sum() == pytest.approx(1.0, abs=1e-4)
    per_row = explanations.filter(pl.col("kind") == "row").group_by("row_id").agg(pl.col("importance").sum())
    assert per_row.height == 125 and np.allclose(per_row["importance"].to_numpy(), 1.0, atol=1e-4)
    (plot,) = trained.predicted.plots
    assert plot.name.endswith("_masks.png") and plot.read_bytes()[:4] == b"\x89PNG"


def test_the_verdict_compares_tabnet_with_the_best_baseline_by_a_paired_bootstrap_of_the_auc() -> None:
    from shoal.evaluation import score, verdict
    from shoal.tasks.higgs import SCORING

    rng = np.random.default_rng(0)
    label = rng.integers(0, 2, 2000)
    signal = label + rng.normal(0, 1.0, 2000)  # AUC ~0.76
    sharp = label + rng.normal(0, 0.5, 2000)  # AUC ~0.92
    forecasts = {"hist_gradient_boosting": sharp, "majority": np.full(2000, 1.0)}
    losing = score(SCORING, {"label": label}, {name: {"probability": p} for name, p in
                                               ({"model": signal} | forecasts).items()})
    assert verdict(SCORING, losing).startswith("The model is worse than hist_gradient_boosting (ROC AUC 0.7")
    assert set(losing[0]["interval"]) == {"accuracy", "roc_auc"} and losing[0]["rows"] == 2000
    winning = score(SCORING, {"label": label}, {name: {"probability": p} for name, p in
                                                ({"model": sharp + rng.normal(0, 0.1, 2000), "hist_gradient_boosting":
                                                  signal, "majority": np.full(2000, 1.0)}).items()})
    assert verdict(SCORING, winning).startswith("The model is better than hist_gradient_boosting (ROC AUC 0.9")


def test_evaluate_through_the_cli_prints_the_table(trained: SimpleNamespace) -> None:
    result = shoal("evaluate", "higgs", "--device", "cpu", home=trained.catalog.home)
    assert result.returncode == 0, result.stderr
    assert "HIGGS signal vs background on the test rows" in result.stdout and "hist_gradient_boosting" in result.stdout


def test_training_without_features_says_to_build_them(tmp_path: Path) -> None:
    result = shoal("train", "higgs", "--epochs", "1", home=tmp_path / "home")
    assert result.returncode == 2 and "run `shoal features higgs` first" in _one_error_line(result)

"""The ENSO task: train, evaluate against persistence and climatology, persist predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shoal.catalog import Catalog
from shoal.datasets import cobe_sst, oni
from shoal.datasets.cobe_sst_sample import write_sample
from shoal.features.enso import EnsoFeatureConfig, EnsoFeatures, build
from shoal.models.convlstm import ConvLSTMConfig
from shoal.models.enso import evaluate, load_enso_model, predict_enso, train_enso
from shoal.models.train import TrainConfig

QUICK = TrainConfig(epochs=1, max_batches_per_epoch=3, device="cpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    root = tmp_path_factory.mktemp("enso")
    catalog = Catalog(root / "home")
    cobe_sst.ingest(catalog, [Path(write_sample(root / "sst", start="1987-01", end="1990-12")[0]).parent])
    oni.ingest(catalog, [oni.SAMPLE])
    build(catalog, config=EnsoFeatureConfig(train_end="1990-01", coarsen=4))
    train_enso(catalog, model_config=ConvLSTMConfig(), train_config=QUICK, run_id="run0")
    return catalog


def test_training_registers_a_model_with_metrics_beside_both_baselines(trained: Catalog) -> None:
    model, entry = load_enso_model(trained)
    assert entry.version == 0 and entry.run_id == "run0" and entry.checkpoint.exists()
    assert entry.feature_version == trained.history("enso_features")[0].snapshot
    assert entry.config["model"]["height"] == 28 and entry.config["model"]["width"] == 90
    for name in ("model", "persistence", "climatology"):
        assert set(entry.metrics[name]) == {"rmse_c", "correlation", "phase_accuracy"}
    assert entry.metrics["windows"] == 12


def test_persistence_and_climatology_are_computed_from_the_real_index(trained: Catalog) -> None:
    model, _ = load_enso_model(trained)
    features = EnsoFeatures(trained)
    metrics = evaluate(model, features, device="cpu")
    targets = features.targets("valid")
    observed = features.nino34_mean[targets].astype(np.float64)
    persistence = features.nino34_mean[targets - 1].astype(np.float64)
    assert metrics["persistence"]["rmse_c"] == pytest.approx(np.sqrt(np.mean((persistence - observed) ** 2)))
    train = features.present & features.train
    calendar = features.months.astype(int) % 12
    climate = {m: np.mean(features.nino34_mean[train & (calendar == m)].astype(np.float64)) for m in range(12)}
    expected = np.sqrt(np.mean([(climate[calendar[t]] - features.nino34_mean[t]) ** 2 for t in targets]))
    assert metrics["climatology"]["rmse_c"] == pytest.approx(expected)
    assert metrics["model"] == load_enso_model(trained)[1].metrics["model"]


def test_predictions_cover_the_validation_period_and_forecast_the_next_month(trained: Catalog) -> None:
    version, plot = predict_enso(trained, device="cpu", run_id="pred0")
    table = trained.read_table("enso_predictions", version=version).to_pandas()
    hindcast, forecast = table[table.kind == "hindcast"], table[table.kind == "forecast"]
    assert len(hindcast) == 12 and list(forecast.target_month.astype(str)) == ["1991-01-01"]
    assert forecast.observed_c.isna().all() and hindcast.observed_c.notna().all()
    np.testing.assert_allclose(table[["prob_e", "prob_l", "prob_n"]].sum(axis=1), 1.0, rtol=1e-6)
    assert set(table.phase) <= {"E", "L", "N"} and (table.run_id == "pred0").all() and (table.model_version == 0).all()
    assert plot.exists() and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lineage = trained.lineage("enso_predictions")
    assert {i.name for i in lineage.inputs} == {"enso_features", "model_registry"}


def test_the_same_seed_and_inputs_give_the_same_cpu_weights(trained: Catalog) -> None:
    import torch

    train_enso(trained, model_config=ConvLSTMConfig(), train_config=QUICK, run_id="run1")
    first, _ = load_enso_model(trained, 0)
    second, _ = load_enso_model(trained, 1)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)

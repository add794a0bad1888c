"""A fourth task, registered by this test alone, runs through the CLI with no edit to the CLI, flows or registry.

`oni_lag`: a linear model of next month's Niño 3.4 anomaly from the three before it, on the
ONI table, beside persistence and a zero-anomaly (climatology) baseline. It is what adding a
task takes: one module's worth of code (here, in the test), nothing else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from shoal import contract
from shoal.catalog import Catalog
from shoal.contract import FeatureBuild, FeatureSet, Predicted, Prepared, Task, TaskSettings, building, replacing
from shoal.evaluation import MODEL, Metric, Scoring, correlation_of, rmse_of, score
from shoal.lineage import InputVersion, Provenance, code_fingerprint
from shoal.splits import SplitRecord

FEATURES, PREDICTIONS, LAGS = "oni_lag_features", "oni_lag_predictions", 3
SPLITS = ("train", "valid", "test")


def _split(month: np.datetime64) -> str:
    year = month.astype("datetime64[Y]").astype(int) + 1970
    return "train" if year < 2005 else "valid" if year < 2010 else "test"


class _Rows:
    """The torch Dataset of one split: items {"x": (3,) float32, "y": float32}."""

    def __init__(self, table: pa.Table, split: str) -> None:
        import torch

        rows = table.filter(pa.compute.equal(table["split"], split))
        self.x = torch.tensor(np.stack([rows[f"x{i}"].to_numpy() for i in range(LAGS)], axis=1), dtype=torch.float32)
        self.y = torch.tensor(rows["y"].to_numpy(), dtype=torch.float32)
        self.month = rows["month"].to_numpy()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, item: int) -> dict[str, Any]:
        return {"x": self.x[item], "y": self.y[item]}


def _mse(output: Any, batch: Mapping[str, Any]) -> Any:
    return ((output.squeeze(-1) - batch["y"]) ** 2).mean()


class OniLag(Task):
    """ONI anomaly at t from t-3..t-1 -> `oni_lag_features` -> a linear model -> `oni_lag_predictions`."""

    model_name = "oni_lag_linear"
    architecture = "linear"
    predictions = PREDICTIONS
    settings = TaskSettings
    scoring = Scoring(title="Niño 3.4 anomaly next month, {months} test months",
                      metrics=(Metric("rmse", "RMSE °C", rmse_of("y", "y"), higher_is_better=False),
                               Metric("correlation", "correlation", correlation_of("y", "y"))),
                      primary="rmse", count="months", block=12)

    def sources(self, paths: Sequence[Path]) -> list[tuple[str, list[Path]]]:
        return [("oni", [Path(p) for p in paths])]

    def build_features(self, catalog: Catalog, settings: TaskSettings, reporter: Any) -> FeatureBuild:
        nino = InputVersion("nino34", "table", catalog.latest_version("nino34"))
        key = hashlib.sha256(f"{nino}{code_fingerprint()}".encode()).hexdigest()
        with building(catalog, FEATURES, key) as found:
            if found is not None:
                return found
            table = catalog.read_table("nino34", version=nino.version)
            anomaly = table["nino34_anom"].to_numpy(zero_copy_only=False)
            months = table["month"].to_numpy().astype("datetime64[M]")
            rows = [t for t in range(LAGS, len(anomaly)) if np.isfinite(anomaly[t - LAGS : t + 1]).all()]
            columns = {f"x{i}": [anomaly[t - LAGS + i] for t in rows] for i in range(LAGS)}
            version = catalog.write_table(FEATURES, pa.table({
                "month": [str(months[t]) for t in rows], **columns, "y": [anomaly[t] for t in rows],
                "split": [_split(months[t]) for t in rows]}), mode="overwrite",
                provenance=Provenance(inputs=(nino,), parameters={"content_key": key}))
            return FeatureBuild(version=version, snapshot=str(version), reused=False)

    def _table(self, catalog: Catalog, version: int | str | None) -> tuple[int, pa.Table]:
        chosen = int(catalog.version_id(FEATURES, version))
        return chosen, catalog.read_table(FEATURES, version=chosen)

    def prepare(self, catalog: Catalog, settings: TaskSettings, feature_version: int | str | None) -> Prepared:
        import torch

        version, table = self._table(catalog, feature_version)
        return Prepared(feature=InputVersion(FEATURES, "table", version), model_config={"inputs": LAGS},
                        build=lambda: torch.nn.Linear(LAGS, 1), loss_fn=_mse,
                        train_data=_Rows(table, "train"), valid_data=_Rows(table, "valid"))

    def model(self, model_config: Mapping[str, Any]) -> Any:
        import torch

        return torch.nn.Linear(int(model_config["inputs"]), 1)

    def evaluate(self, catalog: Catalog, model: Any, *, feature_version: str, model_config: Mapping[str, Any],
                 device: str) -> dict[str, Any]:
        import torch

        test = _Rows(self._table(catalog, feature_version)[1], "test")
        observed = test.y.numpy()
        with torch.no_grad():
            forecasts = {MODEL: model.cpu()(test.x).squeeze(-1).numpy(), "persistence": test.x[:, -1].numpy(),
                         "climatology": np.zeros_like(observed)}
        skill = score(self.scoring, {"y": observed}, {name: {"y": value} for name, value in forecasts.items()})
        return {"months": len(observed), "skill": skill}

    def predict(self, catalog: Catalog, model: Any, entry: Any, *, device: str) -> Predicted:
        import torch

        test = _Rows(self._table(catalog, entry.feature_version)[1], "test")
        with torch.no_grad():
            predicted = model.cpu()(test.x).squeeze(-1).numpy()
        table = pa.table({"month": test.month, "predicted": predicted, "model": [entry.name] * len(predicted),
                          "model_version": pa.array([entry.version] * len(predicted), pa.int64()),
                          "run_id": [entry.run_id] * len(predicted)})
        version = catalog.write_table(PREDICTIONS, table, **replacing(entry), provenance=Provenance(
            inputs=(entry.feature,), parameters={"model": entry.name, "model_version": entry.version,
                                                 "run_id": entry.run_id}))
        return Predicted(table=PREDICTIONS, version=version, rows=len(predicted), plots=())

    def open_features(self, catalog: Catalog, version: int | str | None) -> FeatureSet:
        chosen, table = self._table(catalog, version)
        codes = np.array([SPLITS.index(name) for name in table["split"].to_pylist()])
        split = SplitRecord.of("by_time", {"valid_start": "2005-01", "test_start": "2010-01"}, codes)
        return FeatureSet(task=self.name, dataset=FEATURES, version=chosen, statistics={}, split=split, splits=SPLITS,
                          arrays_of=lambda split: {"x": _Rows(table, split).x.numpy()},
                          dataset_of=lambda split: _Rows(table, split))


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """`oni_lag` in the task registry for this test only."""
    monkeypatch.setattr(contract, "_TASKS", dict(contract.tasks()))
    contract.register_task("oni_lag")(OniLag)


def _shoal(home: Path, *args: str) -> str:
    from shoal.cli import app

    result = CliRunner().invoke(app, ["--home", str(home), *args])
    assert result.exit_code == 0, f"{args}: {result.output} {result.exception!r}"
    return result.output


def test_a_fourth_task_runs_features_train_evaluate_predict_through_the_cli(registered: None, tmp_path: Path) -> None:
    home = tmp_path / "home"
    from shoal.datasets.oni import SAMPLE

    _shoal(home, "ingest", "oni", str(SAMPLE))
    _shoal(home, "features", "oni_lag")
    assert Catalog(home).exists(FEATURES)
    trained = _shoal(home, "train", "oni_lag", "--epochs", "3", "--batch-size", "8", "--device", "cpu")
    assert "registered model oni_lag_linear version 0" in trained and "persistence" in trained
    evaluated = _shoal(home, "evaluate", "oni_lag", "--device", "cpu")
    assert "Niño 3.4 anomaly next month" in evaluated and "climatology" in evaluated
    predicted = _shoal(home, "predict", "oni_lag", "--device", "cpu")
    assert "oni_lag_predictions version 0" in predicted
    assert "unchanged" in _shoal(home, "predict", "oni_lag", "--device", "cpu")
    rows = Catalog(home).read_table(PREDICTIONS)
    assert rows.num_rows > 0 and set(rows["model"].to_pylist()) == {"oni_lag_linear"}
    features = __import__("shoal").open_features("oni_lag", home=str(home))
    assert features.arrays("train")["x"].shape[1] == LAGS

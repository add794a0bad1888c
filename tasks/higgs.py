"""The HIGGS task: TabNet on the standardized HIGGS features, beside gradient boosting.

The best epoch is chosen on valid; the skill shown is on test: accuracy and ROC AUC of
TabNet beside scikit-learn's HistGradientBoostingClassifier (defaults, random_state 0)
fitted on the same training rows and scored on the same test rows, and the majority class.
Predictions go to `higgs_predictions` (every row of every split); TabNet's explanations to
`higgs_explanations`: the global importance of each feature, and the per-row aggregated masks
(M_explain) of the first `EXPLAINED` test rows, drawn as a heatmap like the analysis'.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from shoal.contract import (FeatureBuild, FeatureSet, Predicted, Prepared, Task, TaskSettings, feature_loader,
                            register_task, replacing)
from shoal.datasets.higgs import FEATURES
from shoal.errors import CatalogError
from shoal.evaluation import Metric, Scoring, accuracy_of, roc_auc_of, score
from shoal.features.higgs import DATASET as FEATURE_TABLE
from shoal.features.higgs import HiggsFeatures, HiggsSplit, build
from shoal.lineage import InputVersion, Provenance
from shoal.splits import SPLITS, RandomSplitSettings

if TYPE_CHECKING:
    from shoal.catalog import Catalog
    from shoal.models.registry import ModelVersion
    from shoal.progress import Reporter

PREDICTION_SCHEMA = pa.schema([
    ("row_id", pa.int64()), ("split", pa.string()), ("probability", pa.float32()), ("predicted_label", pa.int8()),
    ("model", pa.string()), ("model_version", pa.int64()), ("feature_version", pa.string()), ("run_id", pa.string()),
])
EXPLANATION_SCHEMA = pa.schema([
    ("kind", pa.string()), ("row_id", pa.int64()), ("feature", pa.string()), ("importance", pa.float32()),
    ("model", pa.string()), ("model_version", pa.int64()), ("run_id", pa.string()),
])
EXPLAINED = 1000  # test rows whose masks are stored and drawn
LARGE = 1_000_000  # training rows from which TabNet's paper settings (virtual batch 512) train well
BATCH = 16_384  # rows per inference batch


class HiggsSettings(TaskSettings, RandomSplitSettings):
    """Options of the HIGGS task; the defaults are TabNet-S as the analysis trained it."""

    feature_fields = ("split", "valid_fraction", "test_fraction", "seed")
    min_updates = 2_000  # TabNet learns a nonlinear rule in ~1,000-2,000 updates (tests/test_learnability.py)
    split: Literal["official", "random"] = Field(
        "official", description="official (the paper's: test = the last 500,000 rows of the file, valid = the "
                                "500,000 before; quarters of a small file) or random (by row, seeded by --seed).")

    epochs: int = Field(10, ge=1, description="Training epochs.")
    batch_size: int = Field(16_384, ge=1, description="Rows per step.")
    lr: float = Field(0.02, gt=0, description="Adam's learning rate.")
    n_d: int = Field(24, ge=1, description="TabNet's decision width.")
    n_a: int = Field(26, ge=1, description="TabNet's attention width.")
    n_steps: int = Field(5, ge=1, description="TabNet's decision steps.")
    virtual_batch_size: int = Field(512, ge=2, description="Rows per ghost batch-norm chunk (not given: 128 below "
                                                           "1,000,000 training rows, where 512 stalls).")

    def virtual_batch_for(self, rows: int) -> int:
        """The ghost batch size for `rows` training rows: the one given, else 512 from a million rows, 128 below."""
        return self.virtual_batch_size if self.given("virtual_batch_size") or rows >= LARGE else 128


# The analysis' tuning ranges: widths 20-40, steps 4-6, learning rate 10^-2.5 .. 10^-1.
SEARCH_SPACE = {"n_d": (20, 40), "n_a": (20, 40), "n_steps": (4, 6), "lr": (10**-2.5, 10**-1)}


_features = feature_loader("higgs", FEATURE_TABLE, HiggsFeatures)


def _probabilities(model: Any, features: HiggsFeatures, split: str, *, device: str) -> np.ndarray:
    """P(signal) of every row of `split`, in row order."""
    import torch

    from shoal.models.tabnet import TabNetLogits
    from shoal.models.inference import predict

    return torch.sigmoid(predict(TabNetLogits(model), features.rows(split), batch_size=BATCH, device=device)).numpy()


SCORING = Scoring(title="HIGGS signal vs background on the test rows ({split} split)",
                  metrics=(Metric("accuracy", "accuracy", accuracy_of("probability", "label", lambda p: p >= 0.5), 4),
                           Metric("roc_auc", "ROC AUC", roc_auc_of("probability", "label"), 4)),
                  primary="roc_auc", count="rows")


def baselines(features: HiggsFeatures) -> dict[str, np.ndarray]:
    """P(signal) on the test rows of each baseline, fitted on the training rows."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    train, test = features.arrays("train"), features.arrays("test")
    # torch and scikit-learn each load an OpenMP runtime; on 2 busy cores, after torch's work, scikit-learn's
    # threads spun against torch's: 32 s for 2,000 rows against 0.4 s on one thread (idle: 0.32 s against 0.17 s).
    with threadpool_limits(limits=1, user_api="openmp"):
        boosted = HistGradientBoostingClassifier(random_state=0).fit(train.x, train.label)
        probability = boosted.predict_proba(test.x)[:, 1]
    return {"hist_gradient_boosting": probability,
            "majority": np.full(len(test.label), float(np.mean(train.label) >= 0.5))}


@register_task("higgs")
class Higgs(Task):
    """HIGGS: the UCI table -> `higgs_features` -> TabNet -> `higgs_predictions`, `higgs_explanations`."""

    model_name = "higgs_tabnet"
    architecture = "tabnet"
    predictions = "higgs_predictions"
    settings = HiggsSettings
    scoring = SCORING
    tunable = True

    def sources(self, paths: Sequence[Path]) -> list[tuple[str, list[Path]]]:
        """One HIGGS file -> `higgs`."""
        return [("higgs", [Path(p) for p in paths])]

    def build_features(self, catalog: Catalog, settings: HiggsSettings, reporter: Reporter) -> FeatureBuild:
        """Build (or reuse) `higgs_features` for the latest `higgs`."""
        split = HiggsSplit(rule=settings.split, seed=settings.seed, valid_fraction=settings.valid_fraction,
                           test_fraction=settings.test_fraction)
        return build(catalog, split=split, reporter=reporter)

    def prepare(self, catalog: Catalog, settings: HiggsSettings, feature_version: int | str | None) -> Prepared:
        """TabNet-S over the 28 features, and the train / valid rows on the device-stageable Dataset."""
        from shoal.models.tabnet import TabNet, TabNetConfig, TabNetLoss

        features = _features(catalog, feature_version)
        train = features.rows("train")
        config = TabNetConfig(n_features=len(FEATURES), n_d=settings.n_d, n_a=settings.n_a, n_steps=settings.n_steps,
                              virtual_batch_size=settings.virtual_batch_for(len(train)))
        return Prepared(feature=InputVersion(FEATURE_TABLE, "table", features.version), model_config=asdict(config),
                        build=lambda: TabNet(config), loss_fn=TabNetLoss(config), train_data=train,
                        valid_data=features.rows("valid"),
                        chosen=() if settings.given("virtual_batch_size") else ("virtual_batch_size",))

    def search_space(self, trial: Any) -> dict[str, Any]:
        """The analysis' ranges (`SEARCH_SPACE`): widths and steps as integers, the learning rate on a log scale."""
        space = {name: trial.suggest_int(name, low, high) for name, (low, high) in SEARCH_SPACE.items() if name != "lr"}
        return space | {"lr": trial.suggest_float("lr", *SEARCH_SPACE["lr"], log=True)}

    def model(self, model_config: Mapping[str, Any]) -> Any:
        """TabNet of a stored configuration."""
        from shoal.models.tabnet import TabNet, TabNetConfig

        return TabNet(TabNetConfig.from_dict(model_config))

    def evaluate(self, catalog: Catalog, model: Any, *, feature_version: str, model_config: Mapping[str, Any],
                 device: str) -> dict[str, Any]:
        """Accuracy and ROC AUC on the test rows: TabNet, gradient boosting and the majority class."""
        features = _features(catalog, feature_version)
        label = features.arrays("test").label
        if len(label) == 0:
            raise CatalogError(f"no test row in {FEATURE_TABLE} version {features.version}; ingest a HIGGS file")
        forecasts = {"model": _probabilities(model, features, "test", device=device)} | baselines(features)
        skill = score(SCORING, {"label": label}, {name: {"probability": p} for name, p in forecasts.items()})
        return {"period": "test", "split": features.split.rule, "skill": skill}

    def predict(self, catalog: Catalog, model: Any, entry: ModelVersion, *, device: str) -> Predicted:
        """P(signal) of every row, TabNet's global and per-row importances, and a heatmap of the masks."""
        import torch

        from shoal.models.reports import plot_masks
        from shoal.models.tabnet import global_importances

        features = _features(catalog, entry.feature_version)
        common = {"model": self.model_name, "model_version": entry.version, "run_id": entry.run_id}
        tables, probabilities = [], {}
        for split in SPLITS:
            arrays = features.arrays(split)
            if len(arrays.row_id) == 0:
                continue
            probability = probabilities[split] = _probabilities(model, features, split, device=device)
            tables.append(pa.table({"row_id": arrays.row_id, "split": [split] * len(probability),
                                    "probability": probability.astype(np.float32),
                                    "predicted_label": (probability >= 0.5).astype(np.int8),
                                    **{k: [v] * len(probability) for k, v in common.items()},
                                    "feature_version": [entry.feature_version] * len(probability)},
                                   schema=PREDICTION_SCHEMA))
        table = pa.concat_tables(tables)
        lineage = (entry.feature, InputVersion("model_registry", "table", entry.registry_version))
        version = catalog.write_table(self.predictions, table, **replacing(entry), provenance=Provenance(
            inputs=lineage, parameters=common, message=f"{self.model_name} v{entry.version}: {table.num_rows} rows"))
        test = features.arrays("test")
        with torch.no_grad():
            m_explain, _ = model.cpu().eval().explain(torch.from_numpy(test.x[:EXPLAINED].copy()))
        importances = global_importances(m_explain).numpy()
        explained = m_explain.numpy()
        rows = [{"kind": "global", "row_id": None, "feature": name, "importance": float(value), **common}
                for name, value in zip(FEATURES, importances, strict=True)]
        rows += [{"kind": "row", "row_id": int(row_id), "feature": name, "importance": float(value), **common}
                 for row_id, values in zip(test.row_id[:EXPLAINED], explained, strict=True)
                 for name, value in zip(FEATURES, values, strict=True)]
        catalog.write_table("higgs_explanations", pa.Table.from_pylist(rows, schema=EXPLANATION_SCHEMA), **replacing(entry),
                            provenance=Provenance(inputs=lineage, parameters=common,
                                                  message=f"{self.model_name} v{entry.version}: importances"))
        path = Path(catalog.local, "reports", f"{self.model_name}_v{entry.version}_{entry.run_id}_masks.png")
        title = f"{self.model_name} v{entry.version}: aggregated masks (M_explain) of {len(explained)} test rows"
        plot = plot_masks(path, explained, FEATURES, probability=probabilities["test"][:EXPLAINED],
                          importances=importances, title=title)
        return Predicted(table=self.predictions, version=version, rows=table.num_rows, plots=(plot,))

    def open_features(self, catalog: Catalog, version: int | str | None) -> FeatureSet:
        """x (N, 28) float32 standardized — a view of the one Arrow buffer — label and row_id; `HiggsRows` datasets."""
        features = _features(catalog, version)

        def arrays(split: str) -> dict[str, np.ndarray]:
            found = features.arrays(split)
            return {"x": found.x, "label": found.label, "row_id": found.row_id}

        return FeatureSet(task=self.name, dataset=FEATURE_TABLE, version=features.version,
                          statistics={"features": features.stats}, split=features.split, splits=SPLITS,
                          arrays_of=arrays, dataset_of=features.rows, stream_of=features.stream)

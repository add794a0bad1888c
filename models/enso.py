"""The ENSO forecaster task: train the ConvLSTM on a feature version, evaluate it against
persistence and monthly climatology, and persist predictions with their lineage.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from shoal.errors import CatalogError
from shoal.features.enso import DATASET as FEATURES
from shoal.features.enso import PHASES, EnsoFeatures
from shoal.lineage import InputVersion, Provenance

if TYPE_CHECKING:
    from shoal.catalog import Catalog
    from shoal.models.convlstm import ConvLSTMConfig
    from shoal.models.registry import ModelVersion
    from shoal.models.train import TrainConfig

MODEL = "enso_convlstm"
PREDICTIONS = "enso_predictions"
PREDICTION_SCHEMA = pa.schema([
    ("target_month", pa.date32()), ("kind", pa.string()), ("index_c", pa.float64()), ("observed_c", pa.float64()),
    ("phase", pa.string()), ("prob_e", pa.float64()), ("prob_l", pa.float64()), ("prob_n", pa.float64()),
    ("model", pa.string()), ("model_version", pa.int64()), ("feature_version", pa.string()), ("run_id", pa.string()),
])


def new_run_id() -> str:
    """A short random id tying a training or prediction run to its outputs."""
    return uuid.uuid4().hex[:12]


def _forecast(model: Any, features: EnsoFeatures, ends: np.ndarray, *, device: str) -> tuple[np.ndarray, np.ndarray]:
    """The index (°C) and phase probabilities (E, L, N) predicted from the 6 months before each end."""
    import torch

    from shoal.models.train import predict

    if len(ends) == 0:
        return np.empty(0), np.empty((0, 3))
    windows = [{"x": features.sst[t - features.window : t]} for t in ends]  # views, (T, C, H, W) each
    out = predict(model, windows, batch_size=16, device=device)
    stats = features.index_stats
    index_c = out.index.numpy().astype(np.float64) * float(stats.std) + float(stats.mean)
    return index_c, torch.softmax(out.phase_logits, dim=1).numpy().astype(np.float64)


def _scores(predicted: np.ndarray, observed: np.ndarray, phase_predicted: np.ndarray, phase_observed: np.ndarray) -> dict[str, float]:
    error = predicted - observed
    corr = float(np.corrcoef(predicted, observed)[0, 1]) if len(observed) > 1 and predicted.std() > 0 else float("nan")
    return {
        "rmse_c": float(np.sqrt(np.mean(error**2))),
        "correlation": corr,
        "phase_accuracy": float(np.mean(phase_predicted == phase_observed)),
    }


def evaluate(model: Any, features: EnsoFeatures, *, device: str = "auto") -> dict[str, Any]:
    """Validation metrics of the model, persistence and monthly climatology, side by side.

    Persistence: next month = this month (index and phase). Climatology: the training
    period's mean index and most frequent phase of the target's calendar month.
    """
    targets = features.targets("valid")
    if len(targets) == 0:
        raise CatalogError("no validation window: ingest SST months after the training period")
    index_c, probabilities = _forecast(model, features, targets, device=device)
    observed = features.nino34_mean[targets].astype(np.float64)
    phase = features.phase.numpy()
    train = features.present & features.train
    calendar = features.months.astype(int) % 12
    climate_index = np.array([np.nanmean(features.nino34_mean[train & (calendar == m)]) for m in range(12)])
    climate_phase = np.array([np.bincount(phase[train & (calendar == m)], minlength=3).argmax() for m in range(12)])
    return {
        "windows": len(targets),
        "model": _scores(index_c, observed, probabilities.argmax(axis=1), phase[targets]),
        "persistence": _scores(features.nino34_mean[targets - 1].astype(np.float64), observed, phase[targets - 1], phase[targets]),
        "climatology": _scores(climate_index[calendar[targets]], observed, climate_phase[calendar[targets]], phase[targets]),
    }


def train_enso(
    catalog: Catalog,
    *,
    model_config: ConvLSTMConfig,
    train_config: TrainConfig,
    feature_version: int | str | None = None,
    run_id: str | None = None,
) -> ModelVersion:
    """Train the ConvLSTM on a feature version, evaluate it and register it."""
    from shoal.models.convlstm import ConvLSTM, enso_loss
    from shoal.models.registry import register_model
    from shoal.models.train import seeded, train

    run_id = run_id or new_run_id()
    features = EnsoFeatures(catalog, version=feature_version)
    height, width = features.sst.shape[-2:]
    model_config = replace(model_config, height=height, width=width)
    model = seeded(train_config.seed, lambda: ConvLSTM(model_config))
    land = features.land
    result = train(
        model,
        loss_fn=lambda output, batch: enso_loss(output, batch, land.to(output.index.device), model_config),
        train_data=features.windows("train"),
        val_data=features.windows("valid"),
        config=train_config,
        checkpoint_dir=Path(catalog.home, "models", MODEL, "runs", run_id),
    )
    model.load_state_dict(_load_state(result.best_checkpoint))
    metrics = evaluate(model, features, device=train_config.device) | {
        "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
        "history": [list(epoch) for epoch in result.history], "device": result.device,
        "windows_per_second": result.windows_per_second,
    }
    return register_model(
        catalog,
        name=MODEL,
        architecture="convlstm",
        config={"model": asdict(model_config), "train": asdict(train_config)},
        feature=InputVersion(FEATURES, "array", features.snapshot),
        metrics=metrics,
        checkpoint=result.best_checkpoint,
        run_id=run_id,
    )


def _load_state(path: Path) -> dict[str, Any]:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("model", state)


def load_enso_model(catalog: Catalog, version: int | None = None) -> tuple[Any, ModelVersion]:
    """The registered ConvLSTM (default: latest version) with its best weights."""
    from shoal.models.convlstm import ConvLSTM, ConvLSTMConfig
    from shoal.models.registry import load_model_entry

    entry = load_model_entry(catalog, MODEL, version)
    model = ConvLSTM(ConvLSTMConfig.from_dict(entry.config["model"]))
    model.load_state_dict(_load_state(entry.checkpoint))
    return model.eval(), entry


def predict_enso(catalog: Catalog, *, model_version: int | None = None, device: str = "auto",
                 run_id: str | None = None) -> tuple[int, Path]:
    """Hindcasts of the validation period plus the forecast of the month after the data.

    Returns:
        The `enso_predictions` version written and the PNG of predicted vs observed index.
    """
    model, entry = load_enso_model(catalog, model_version)
    features = EnsoFeatures(catalog, version=entry.feature_version)
    run_id = run_id or new_run_id()
    targets = features.targets("valid")
    rows = _rows(features.months[targets], *_forecast(model, features, targets, device=device),
                 observed=features.nino34_mean[targets], kind="hindcast")
    end = len(features.months)
    if features.present[end - features.window :].all():  # forecast the month after the data
        rows += _rows(features.months[-1:] + 1, *_forecast(model, features, np.array([end]), device=device),
                      observed=np.array([np.nan]), kind="forecast")
    common = {"model": MODEL, "model_version": entry.version, "feature_version": entry.feature_version, "run_id": run_id}
    table = pa.Table.from_pylist([row | common for row in rows], schema=PREDICTION_SCHEMA)
    version = catalog.write_table(PREDICTIONS, table, provenance=Provenance(
        inputs=(entry.feature, InputVersion("model_registry", "table", entry.registry_version)),
        parameters={"model": MODEL, "model_version": entry.version, "run_id": run_id},
        message=f"{MODEL} v{entry.version}: {len(rows)} predictions",
    ))
    return version, plot_hindcast(catalog, table, name=f"{MODEL}_v{entry.version}_{run_id}")


def _rows(months: np.ndarray, index_c: np.ndarray, probabilities: np.ndarray, *, observed: np.ndarray,
          kind: str) -> list[dict[str, Any]]:
    return [
        {"target_month": month.astype("datetime64[D]").astype(object), "kind": kind, "index_c": float(index),
         "observed_c": None if np.isnan(obs) else float(obs), "phase": PHASES[int(probs.argmax())],
         "prob_e": float(probs[0]), "prob_l": float(probs[1]), "prob_n": float(probs[2])}
        for month, index, obs, probs in zip(months, index_c, observed, probabilities, strict=True)
    ]


def plot_hindcast(catalog: Catalog, table: pa.Table, *, name: str) -> Path:
    """A PNG of predicted vs observed Niño 3.4 index over the validation period."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table.to_pydict()
    path = Path(catalog.home, "reports", f"{name}.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(10, 3.5))
    observed = [np.nan if value is None else value for value in rows["observed_c"]]
    axes.plot(rows["target_month"], observed, label="observed (NINO34_MEAN)", color="black")
    axes.plot(rows["target_month"], rows["index_c"], label="predicted", color="tab:red")
    axes.set_ylabel("Niño 3.4 SST (°C)")
    axes.set_title(f"{name}: next-month Niño 3.4 index, validation period")
    axes.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path

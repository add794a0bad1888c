"""Generic runs over any registered task: train (resumable, reused when identical), evaluate, predict.

A training run's id is derived from its content: the task, the feature snapshot, the model
configuration, the code (`shoal.lineage.code_fingerprint`: a change to the model, the loss,
the features or a baseline never reuses an old model) and every training setting that
changes the weights (not the device, nor the
DataLoader workers, nor staging). So rerunning the same command after a crash finds the
run's `last.pt` and resumes it, and rerunning a finished identical run finds its registered
model version and reuses it instead of training and registering a new one.

Under torchrun (or `shoal train --nproc N`) every rank runs `train_model`: all of them train
(DistributedDataParallel, `shoal.models.distributed`); rank 0 alone removes old checkpoints,
evaluates on test and registers. The number of processes is not part of the run's identity
(like the device), but a run resumes only with the number it was started with.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoal.errors import TrainingError
from shoal.lineage import code_fingerprint

if TYPE_CHECKING:
    from shoal.catalog import Catalog
    from shoal.models.registry import ModelVersion
    from shoal.models.train import TrainConfig, TrainResult
    from shoal.progress import Reporter
    from shoal.contract import Predicted, Prepared, Task, TaskSettings

# Training settings that do not change the weights, so they are not part of a run's identity.
NOT_IDENTITY = ("device", "num_workers", "stage")
RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Trained:
    """The outcome of `train_model`.

    Attributes:
        entry: the registered model version (new, or the reused one).
        reused: True when an identical finished run was found and nothing was trained.
        run_id: the training run.
        result: the training result (None when reused).
    """

    entry: ModelVersion
    reused: bool
    run_id: str
    result: TrainResult | None = None


def train_config(settings: TaskSettings, items: int) -> TrainConfig:
    """The generic loop's configuration from a task's settings, for `items` training samples.

    What the user did not give is sized to the data (`TaskSettings.batch_for`, `lr_for`, `epochs_for`,
    `patience_for`), so that the defaults train at any size; the values chosen are stored with the run.
    """
    from shoal.models.train import TrainConfig

    batch = settings.batch_for(items)
    steps = min(max(items // batch, 1), settings.max_batches or items)
    return TrainConfig(epochs=settings.epochs_for(steps), batch_size=batch, lr=settings.lr_for(batch),
                       optimizer=settings.optimizer, seed=settings.seed,
                       device=settings.device, max_batches_per_epoch=settings.max_batches, compile=settings.compile,
                       amp_dtype=settings.amp_dtype, patience=settings.patience_for())


def chosen(settings: TaskSettings, config: TrainConfig, prepared: Prepared) -> str:
    """One line of the training settings that were chosen for the data, not given."""
    items = len(prepared.train_data)
    batch = f"batch {config.batch_size:,}"
    if config.batch_size != settings.batch_size:
        batch += f" (the default {settings.batch_size:,} capped: {items // config.batch_size:,} steps an epoch)"
    if config.lr != settings.lr:
        batch += f", learning rate {config.lr:.2g} (the default {settings.lr:g} scaled by the square root of the batch)"
    extra = ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in prepared.model_config.items()
                      if key in prepared.chosen)
    stop = f"early stopping after {config.patience} epochs without a better validation loss" if config.patience else \
        "every epoch (no early stopping)"
    line = f"training on {items:,} samples: {batch}{f', {extra}' if extra else ''}; up to {config.epochs} epochs"
    if config.epochs != settings.epochs:
        line += f" (the default {settings.epochs} raised to give {settings.min_updates:,} steps)"
    return f"{line}, {stop}"


def run_id_of(task: Task, prepared: Prepared, config: TrainConfig) -> str:
    """A run id from the run's content: the same inputs, settings and code give the same id."""
    settings = {key: value for key, value in asdict(config).items() if key not in NOT_IDENTITY}
    payload = {"task": task.name, "feature": asdict(prepared.feature), "model": prepared.model_config, "train": settings,
               "code": code_fingerprint()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _run_dir(catalog: Catalog, task: Task, run_id: str) -> Path:
    if not RUN_ID.fullmatch(run_id):
        raise TrainingError(f"run id {run_id!r}: expected 1-64 letters, digits, '_' or '-', e.g. 'baseline_2'")
    return Path(catalog.local, "models", task.model_name, "runs", run_id)


def train_model(
    catalog: Catalog,
    task: Task,
    settings: TaskSettings,
    *,
    feature_version: int | str | None = None,
    run_id: str | None = None,
    restart: bool = False,
    retrain: bool = False,
    reporter: Reporter | None = None,
) -> Trained | None:
    """Train the task's model on a feature version (default latest), evaluate it on test, register it.

    Args:
        catalog: the catalog.
        task: the task.
        settings: the task's validated settings.
        feature_version: a feature version number or snapshot id; default the latest.
        run_id: the run's folder under `models/NAME/runs/`; default derived from the content.
        restart: discard the run's checkpoints and start from epoch 0.
        retrain: train and register a new version even when an identical run was registered.
        reporter: progress of the epochs.

    Returns:
        The registered model version and whether it was reused; None on the ranks other than 0
        of a distributed run (they leave as soon as the training is done).
    """
    from shoal.models.distributed import barrier, session, world
    from shoal.models.registry import find_run, register_model
    from shoal.models.batches import pick_device
    from shoal.models.train import seeded, train
    from shoal.threads import apply_threads

    apply_threads()  # before `session` divides the threads among the ranks
    with session(pick_device(settings.device)):
        rank = world()[0]
        prepared = task.prepare(catalog, settings, feature_version)
        config = train_config(settings, len(prepared.train_data))
        run_id = run_id or run_id_of(task, prepared, config)
        folder = _run_dir(catalog, task, run_id)
        if not (retrain or restart) and (found := find_run(catalog, task.model_name, run_id)) is not None:
            return Trained(entry=found, reused=True, run_id=run_id) if rank == 0 else None
        if (retrain or restart) and folder.exists() and rank == 0:
            shutil.rmtree(folder)
        barrier()  # no rank may resume from the checkpoints being removed
        if reporter is not None and rank == 0:
            reporter.finish(chosen(settings, config, prepared))
        model = seeded(config.seed, prepared.build)
        result = train(model, loss_fn=prepared.loss_fn, train_data=prepared.train_data, val_data=prepared.valid_data,
                       config=config, checkpoint_dir=folder, reporter=reporter)
    if rank != 0:
        return None
    model.load_state_dict(load_weights(result.best_checkpoint))
    metrics = task.evaluate(catalog, model, feature_version=str(prepared.feature.version),
                            model_config=prepared.model_config, device=config.device)
    metrics |= {"best_epoch_number": result.best_epoch + 1, "best_val_loss": result.best_val_loss,
                "history": [list(epoch) for epoch in result.history], "device": result.device,
                "samples_per_second": result.windows_per_second, "world_size": result.world_size}
    entry = register_model(catalog, name=task.model_name, architecture=task.architecture,
                           config={"model": dict(prepared.model_config), "train": asdict(config)},
                           feature=prepared.feature, metrics=metrics, checkpoint=result.best_checkpoint, run_id=run_id)
    return Trained(entry=entry, reused=False, run_id=run_id, result=result)


def load_weights(path: Path) -> dict[str, Any]:
    """The model state dict of a checkpoint (`best.pt`, `last.pt` or a registered one)."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("model", state)


def load_model(catalog: Catalog, task: Task, version: int | None = None) -> tuple[Any, ModelVersion]:
    """A registered model of the task (default: the latest version) with its best weights, in eval mode."""
    from shoal.models.registry import checkpoint_file, load_model_entry

    entry = load_model_entry(catalog, task.model_name, version)
    model = task.model(entry.config["model"])
    model.load_state_dict(load_weights(checkpoint_file(catalog, entry)))
    return model.eval(), entry


def evaluate_model(catalog: Catalog, task: Task, *, model_version: int | None = None,
                   device: str = "auto") -> tuple[ModelVersion, dict[str, Any]]:
    """Test skill of a registered model beside the task's baselines (recomputed, not read back)."""
    model, entry = load_model(catalog, task, model_version)
    metrics = task.evaluate(catalog, model, feature_version=entry.feature_version, model_config=entry.config["model"],
                            device=device)
    return entry, metrics


def predict_model(catalog: Catalog, task: Task, *, model_version: int | None = None, device: str = "auto",
                  force: bool = False) -> tuple[ModelVersion, Predicted]:
    """Write the task's predictions of a registered model (default latest), once per model version.

    A model version whose predictions are in the table is not predicted again: its commit is
    returned (`reused`, nothing written). With `force` a new version REPLACES that model
    version's rows. The rows' `run_id` is the registry's run id of the model, so predictions
    join the registry on (model, model_version) and run_id.
    """
    from shoal.models.registry import load_model_entry

    if not force:
        found = existing_predictions(catalog, task, load_model_entry(catalog, task.model_name, model_version))
        if found is not None:
            return found
    model, entry = load_model(catalog, task, model_version)
    return entry, task.predict(catalog, model, entry, device=device)


def existing_predictions(catalog: Catalog, task: Task, entry: ModelVersion) -> tuple[ModelVersion, Predicted] | None:
    """The newest commit of the task's predictions table made by model version `entry`, with its plots."""
    from shoal.contract import Predicted

    if not catalog.exists(task.predictions):
        return None
    for commit in catalog.history(task.predictions):
        found = commit.lineage.parameters if commit.lineage is not None else {}
        if found.get("model") == entry.name and found.get("model_version") == entry.version:
            name = f"{entry.name}_v{entry.version}_{found.get('run_id')}_"
            plots = tuple(sorted(Path(catalog.local, "reports").glob(f"{name}*.png")))
            return entry, Predicted(table=task.predictions, version=commit.version, rows=commit.lineage.rows or 0,
                                    plots=plots, reused=True)
    return None

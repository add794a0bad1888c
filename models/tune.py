"""Hyperparameter search for any task with a search space, with Optuna (no search loop of our own).

`tune(catalog, task, settings, trials=N, sample_fraction=F)` trains one model per trial on a
seeded sample of the training and validation rows, scores it by its best validation loss
(valid only: test is never seen), and stops poor trials early from the per-epoch validation
loss with Optuna's successive-halving pruner (the analysis' racing). The study lives in the
catalog home (`HOME/tuning/TASK.db`, Optuna's RDB storage on SQLite), so an interrupted search
resumes where it stopped; `shoal train TASK --params best` trains the best trial's settings.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shoal.errors import TrainingError

if TYPE_CHECKING:
    from shoal.catalog import Catalog
    from shoal.contract import Task, TaskSettings


MIN_SAMPLE = 50  # training and validation items a trial must see: a handful scored "validation loss 0.0000"


@dataclass(frozen=True)
class TrialResult:
    """One trial: its number, settings, state (COMPLETE, PRUNED, FAIL) and best validation loss."""

    number: int
    params: dict[str, Any]
    state: str
    value: float | None


def _database(catalog: Catalog, task: Task) -> Path:
    return Path(catalog.local, "tuning", f"{task.name}.db")


def _storage(catalog: Catalog, task: Task) -> str:
    """The study's storage URL; its folder is made here, for a study that is written."""
    database = _database(catalog, task)
    database.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{database}"


def _sample(data: Any, fraction: float, seed: int) -> Any:
    """A seeded subset of a Dataset (at least one item)."""
    from torch.utils.data import Subset

    if fraction >= 1.0:
        return data
    size = max(1, round(len(data) * fraction))
    return Subset(data, np.sort(np.random.default_rng(seed).permutation(len(data))[:size]).tolist())


def _check_scorable(prepared: Any, fraction: float) -> None:
    """Refuse a sample fraction that leaves a split too few items to train on or to score a trial by."""
    for name, data in (("training", prepared.train_data), ("validation", prepared.valid_data)):
        size = max(1, round(len(data) * fraction))
        if size < MIN_SAMPLE:
            least = min(1.0, MIN_SAMPLE / max(len(data), 1))
            raise TrainingError(f"--sample-fraction {fraction:g} leaves {size} of the {len(data):,} {name} items; a "
                                f"trial needs at least {MIN_SAMPLE} to be scored: pass --sample-fraction {least:.2g} "
                                "or more" + ("" if least < 1.0 else " (and ingest more data)"))


def study(catalog: Catalog, task: Task, *, seed: int = 0) -> Any:
    """The task's study in the catalog home, created or resumed."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=task.name, storage=_storage(catalog, task), direction="minimize",
                               load_if_exists=True, sampler=optuna.samplers.TPESampler(seed=seed),
                               pruner=optuna.pruners.SuccessiveHalvingPruner())


def tune(catalog: Catalog, task: Task, settings: TaskSettings, *, trials: int, sample_fraction: float = 1e-3,
         timeout: float | None = None) -> list[TrialResult]:
    """Run `trials` more trials of the task's search space; every trial of the study, in order.

    Raises:
        TrainingError: the task has no search space, or a fraction out of (0, 1] or leaving fewer than MIN_SAMPLE
            training or validation items.
    """
    import optuna

    from shoal.models.runs import train_config
    from shoal.models.train import seeded, train

    if not 0.0 < sample_fraction <= 1.0:
        raise TrainingError(f"--sample-fraction must be in (0, 1], got {sample_fraction}")
    if not task.tunable:
        raise TrainingError(f"task {task.name!r} has no search space to tune")
    _check_scorable(task.prepare(catalog, settings, None), sample_fraction)

    def objective(trial: optuna.Trial) -> float:
        chosen = task.parse({**settings.model_dump(exclude_unset=True), **task.search_space(trial)})
        prepared = task.prepare(catalog, chosen, None)
        train_data = _sample(prepared.train_data, sample_fraction, chosen.seed)
        config = train_config(chosen, len(train_data))  # the defaults sized to the rows a trial sees

        def report(epoch: int, _train_loss: float, val_loss: float) -> None:
            trial.report(val_loss, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: validation loss {val_loss:.4f}")

        with tempfile.TemporaryDirectory() as checkpoints:
            result = train(seeded(chosen.seed, prepared.build), loss_fn=prepared.loss_fn,
                           train_data=train_data,
                           val_data=_sample(prepared.valid_data, sample_fraction, chosen.seed + 1),
                           config=config, checkpoint_dir=Path(checkpoints), resume=False, on_epoch=report)
        return result.best_val_loss

    found = study(catalog, task, seed=settings.seed)
    found.optimize(objective, n_trials=trials, timeout=timeout)
    return [TrialResult(t.number, dict(t.params), t.state.name, t.value) for t in found.trials]


def best_params(catalog: Catalog, task: Task) -> dict[str, Any]:
    """The settings of the study's best trial; a `TrainingError` when there is none."""
    import optuna

    try:
        if not _database(catalog, task).exists():  # reading never creates a folder or a database
            raise KeyError(task.name)
        found = optuna.load_study(study_name=task.name, storage=f"sqlite:///{_database(catalog, task)}")
        return dict(found.best_trial.params)
    except (KeyError, ValueError) as error:
        raise TrainingError(f"no finished trial of {task.name!r} in {catalog.home}; run `shoal tune {task.name}` "
                            "first") from error

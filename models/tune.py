"""Hyperparameter search for any task with a search space, with Optuna (no search loop of our own).

`tune(catalog, task, settings, trials=N, sample_fraction=F)` trains one model per trial on a
seeded sample of the training and validation rows, scores it by its best validation loss
(valid only: test is never seen), and stops poor trials early from the per-epoch validation
loss with Optuna's successive-halving pruner (the analysis' racing).

Scores are comparable only between trials that saw the same rows for the same budget, so a
study holds the trials of one `StudyKey`: the feature version, the sample fraction, the seed
of the sample, and the epochs and batches a trial may train. The studies of a task share one
database in the catalog home (`HOME/tuning/TASK.db`, Optuna's RDB storage on SQLite), so an
interrupted search resumes where it stopped; `shoal train TASK --params best` trains the best
trial of the study that matches the feature version it trains on (`best_params`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shoal.errors import TrainingError

if TYPE_CHECKING:
    from shoal.catalog import Catalog
    from shoal.contract import Task, TaskSettings
    from shoal.lineage import InputVersion


MIN_SAMPLE = 50  # training and validation items a trial must see: a handful scored "validation loss 0.0000"
KEY = "shoal_study_key"  # the study's user attribute that holds its StudyKey
MATCHED = ("epochs", "max_batches", "seed")  # StudyKey fields that, given to `train`, prefer a study


@dataclass(frozen=True)
class TrialResult:
    """One trial: its number, settings, state (COMPLETE, PRUNED, FAIL) and best validation loss.

    `epochs` is how many epochs it trained, and `last_loss` the validation loss of the last one
    (for a pruned trial, whose `value` is None, the loss it was stopped at).
    """

    number: int
    params: dict[str, Any]
    state: str
    value: float | None
    epochs: int = 0
    last_loss: float | None = None


@dataclass(frozen=True)
class StudyKey:
    """What makes two trials' validation losses comparable; one study per key.

    Attributes:
        features: the feature dataset the trials trained on.
        feature_version: its version: a table's version number, an array's snapshot id.
        sample_fraction: the fraction of the training and validation rows a trial sees.
        seed: the seed of that sample (and of the trials' weights).
        epochs: the most epochs a trial trains.
        max_batches: the most batches of an epoch (None: all).
    """

    features: str
    feature_version: str
    sample_fraction: float
    seed: int
    epochs: int
    max_batches: int | None

    @property
    def name(self) -> str:
        """The Optuna study's name: every part of the key, readable."""
        batches = "all" if self.max_batches is None else str(self.max_batches)
        return (f"{self.features} version {self.feature_version}, sample fraction {self.sample_fraction:g}, "
                f"seed {self.seed}, epochs {self.epochs}, max batches {batches}")

    def command(self, task: str) -> str:
        """The `shoal tune` command that adds trials to this study (on the newest feature version)."""
        batches = "" if self.max_batches is None else f" --max-batches {self.max_batches}"
        return (f"shoal tune {task} --sample-fraction {self.sample_fraction:g} --seed {self.seed} "
                f"--epochs {self.epochs}{batches}")


@dataclass(frozen=True)
class BestTrial:
    """The best trial of the study `--params best` chose: its settings and the study's name and key.

    `key` is None for a study written before studies were keyed (named after the task alone).
    """

    params: dict[str, Any]
    number: int
    value: float
    study: str
    key: StudyKey | None


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


def study_key(task: Task, settings: TaskSettings, prepared: Any, sample_fraction: float) -> StudyKey:
    """The key of the trials `tune` runs with these settings on this prepared feature version."""
    from shoal.models.runs import train_config

    config = train_config(settings, len(_sample(prepared.train_data, sample_fraction, settings.seed)))
    return StudyKey(features=prepared.feature.name, feature_version=str(prepared.feature.version),
                    sample_fraction=sample_fraction, seed=settings.seed, epochs=config.epochs,
                    max_batches=config.max_batches_per_epoch)


def study(catalog: Catalog, task: Task, key: StudyKey) -> Any:
    """The study of `key` in the catalog home, created or resumed."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    found = optuna.create_study(study_name=key.name, storage=_storage(catalog, task), direction="minimize",
                                load_if_exists=True, sampler=optuna.samplers.TPESampler(seed=key.seed),
                                pruner=optuna.pruners.SuccessiveHalvingPruner())
    found.set_user_attr(KEY, asdict(key))
    return found


def _result(trial: Any) -> TrialResult:
    steps = trial.intermediate_values
    return TrialResult(trial.number, dict(trial.params), trial.state.name, trial.value, epochs=len(steps),
                       last_loss=steps[max(steps)] if steps else None)


def tune(catalog: Catalog, task: Task, settings: TaskSettings, *, trials: int, sample_fraction: float = 1e-3,
         timeout: float | None = None,
         on_trial: Callable[[TrialResult, TrialResult | None], None] | None = None) -> list[TrialResult]:
    """Run `trials` more trials of the task's search space; every trial of the study, in order.

    The study is the one of these settings' `StudyKey` on the newest feature version.

    Args:
        catalog: the catalog.
        task: a task with a search space.
        settings: the task's settings; the search space's suggestions replace theirs in each trial.
        trials: how many trials to add.
        sample_fraction: the fraction of the training and validation rows a trial sees.
        timeout: start no trial after this many seconds.
        on_trial: called as each trial finishes (completed, pruned or failed) with it and the study's best
            completed trial so far (None before the first).

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
    prepared = task.prepare(catalog, settings, None)
    _check_scorable(prepared, sample_fraction)
    key = study_key(task, settings, prepared, sample_fraction)

    def objective(trial: optuna.Trial) -> float:
        chosen = task.parse({**settings.model_dump(exclude_unset=True), **task.search_space(trial)})
        prepared = task.prepare(catalog, chosen, key.feature_version)
        train_data = _sample(prepared.train_data, sample_fraction, chosen.seed)
        config = train_config(chosen, len(train_data))  # the defaults sized to the rows a trial sees

        def report(epoch: int, _train_loss: float, val_loss: float) -> None:
            trial.report(val_loss, epoch + 1)  # the step is the epoch as people count it: 1, 2, ...
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch + 1}: validation loss {val_loss:.4f}")

        with tempfile.TemporaryDirectory() as checkpoints:
            result = train(seeded(chosen.seed, prepared.build), loss_fn=prepared.loss_fn,
                           train_data=train_data,
                           val_data=_sample(prepared.valid_data, sample_fraction, chosen.seed + 1),
                           config=config, checkpoint_dir=Path(checkpoints), resume=False, on_epoch=report)
        return result.best_val_loss

    def finished(found: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = found.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        best = min(done, key=lambda one: one.value) if done else None
        on_trial(_result(trial), None if best is None else _result(best))

    found = study(catalog, task, key)
    found.optimize(objective, n_trials=trials, timeout=timeout, callbacks=[finished] if on_trial else None)
    return [_result(trial) for trial in found.trials]


def _key(summary: Any) -> StudyKey | None:
    stored = summary.user_attrs.get(KEY)
    return StudyKey(**stored) if isinstance(stored, dict) else None


def finished_studies(catalog: Catalog, task: Task) -> list[Any]:
    """The summaries of the task's studies that have a finished trial.

    Raises:
        TrainingError: none (one line: run `shoal tune TASK` first).
    """
    import optuna

    database = _database(catalog, task)
    summaries = [] if not database.exists() else [  # reading never creates a folder or a database
        one for one in optuna.get_all_study_summaries(f"sqlite:///{database}", include_best_trial=True)
        if one.best_trial is not None]
    if not summaries:
        raise TrainingError(f"no finished trial of {task.name!r} in {catalog.home}; run `shoal tune {task.name}` "
                            "first")
    return summaries


def best_params(catalog: Catalog, task: Task, *, feature: InputVersion,
                given: Mapping[str, Any] | None = None) -> BestTrial:
    """The best trial of the task's study on `feature`: trials scored on other rows never compete with its own.

    Of several studies on `feature`, the one that agrees with the most of the `given` options in `MATCHED`
    (--epochs, --max-batches, --seed), then of the largest sample fraction (the closest to training on all
    rows), then of the most epochs. A study from before studies were keyed (named after the task alone, its
    feature version unknown) is used only when it is the task's only one.

    Raises:
        TrainingError: no study with a finished trial, or none on `feature` (the one line names the studies
            there are and the `shoal tune` command that makes one on the newest feature version).
    """
    given = given or {}
    database = _database(catalog, task)
    summaries = finished_studies(catalog, task)
    keyed = [(summary, key) for summary in summaries if (key := _key(summary)) is not None]
    matching = [(summary, key) for summary, key in keyed
                if (key.features, key.feature_version) == (feature.name, str(feature.version))]
    if matching:
        summary, key = max(matching, key=lambda pair: (
            sum(given[name] == getattr(pair[1], name) for name in MATCHED if name in given),
            pair[1].sample_fraction, pair[1].epochs))
    elif not keyed and len(summaries) == 1:
        summary, key = summaries[0], None
    else:
        there = "; ".join(f"'{summary.study_name}' ({summary.n_trials} trial{'s' * (summary.n_trials != 1)})"
                          for summary in summaries)
        like = max((key for _, key in keyed), key=lambda key: (key.sample_fraction, key.epochs), default=None)
        command = like.command(task.name) if like is not None else f"shoal tune {task.name}"
        raise TrainingError(f"--params best: no `shoal tune {task.name}` study scored its trials on {feature.name} "
                            f"version {feature.version}; {database} has {there}; make one with `{command}` (it "
                            "tunes on the newest feature version)")
    best = summary.best_trial
    return BestTrial(params=dict(best.params), number=best.number, value=best.value, study=summary.study_name, key=key)

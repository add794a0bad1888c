"""The task contract and registry: `@register_task("enso")` makes `shoal features|train|evaluate|predict|run enso` work.

A task is one module in `tasks/` that says how to build its features, which model and
configuration it trains with which loss on which splits, how it is evaluated on its test
split beside its baselines, and which predictions table it writes. The CLI, the generic run
functions (`shoal.models.runs`) and the flows know no task by name.
"""

from __future__ import annotations

import importlib
import math
from abc import ABC, abstractmethod
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shoal.errors import CatalogError, ShoalError
from shoal.evaluation import Scoring, SkillTable, skill_table
from shoal.feature_sets import FeatureSet  # what `Task.open_features` returns: part of the contract

if TYPE_CHECKING:
    from shoal.catalog import Catalog
    from shoal.lineage import InputVersion
    from shoal.models.registry import ModelVersion
    from shoal.progress import Reporter

DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?|mps")
MIN_STEPS = 50  # steps an epoch has at the least when the batch size is the task's default (`batch_for`) ...
MIN_BATCH = 8  # ... unless that takes the batch below this (batch norm needs more than one sample a batch)
MAX_EPOCHS = 100  # the most epochs `epochs_for` gives a task its `min_updates`; early stopping ends a run sooner


class SettingsError(ShoalError):
    """A task option is invalid; the message names the option as the command line spells it."""


class TaskSettings(BaseModel):
    """Options every training task shares; a task subclasses it with its own.

    Field names are the command-line options with `-` as `_` (`--batch-size` -> batch_size).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    feature_fields: ClassVar[tuple[str, ...]] = ()  # the fields `shoal features TASK` takes (the rest: train)
    min_updates: ClassVar[int] = 0  # optimizer steps the model needs to learn at all (`epochs_for`)

    epochs: int = Field(10, ge=1, description="Training epochs.")
    batch_size: int = Field(4, ge=1, description="Samples per step.")
    max_batches: int | None = Field(None, ge=1, description="Stop each epoch after N batches.")
    lr: float = Field(1e-3, gt=0, description="The optimizer's learning rate.")
    optimizer: Literal["adam", "adadelta"] = Field("adam", description="adam, or adadelta (rho 0.95, eps 1e-7).")
    seed: int = Field(0, description="Seed of weights, shuffles and a random split.")
    device: str = Field("auto", description="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps.")
    compile: bool = Field(False, description="Run the model through torch.compile.")
    amp_dtype: Literal["float16", "bfloat16"] = Field("float16", description="Mixed precision on cuda.")
    patience: int = Field(10, ge=1, description="Stop after N epochs without a lower validation loss "
                                               "(--preset paper: train every epoch).")
    preset: Literal["auto", "paper"] = Field(
        "auto", description="auto: what is not given is sized to the training set (the batch capped so an "
                            "epoch has at least 50 steps) and training stops early; paper: the analysis' settings.")

    def given(self, name: str) -> bool:
        """Whether the user chose this field (or the paper preset fixes it), so no rule may change it."""
        return name in self.model_fields_set or self.preset == "paper"

    def batch_for(self, items: int) -> int:
        """The batch size for `items` training samples: the one given, else the default capped at items / MIN_STEPS
        (and at least MIN_BATCH, or the default when that is smaller)."""
        if self.given("batch_size"):
            return self.batch_size
        return max(min(self.batch_size, MIN_BATCH), min(self.batch_size, items // MIN_STEPS))

    def lr_for(self, batch: int) -> float:
        """Adam's learning rate for `batch` samples a step: the one given, else the default scaled by
        sqrt(batch / the batch size setting) when `batch_for` capped it (Adam's square-root rule,
        Malladi et al. 2022: TabNet's 0.02 at 16,384 rows stalls at a batch of 200). Adadelta sizes its own steps."""
        if self.given("lr") or self.optimizer != "adam" or batch >= self.batch_size:
            return self.lr
        return self.lr * math.sqrt(batch / self.batch_size)

    def epochs_for(self, steps: int) -> int:
        """The most epochs for `steps` optimizer steps an epoch: the ones given, else the default, raised to give the
        task's `min_updates` steps in all (at most MAX_EPOCHS): a small training set gets the updates a model needs."""
        if self.given("epochs"):
            return self.epochs
        return max(self.epochs, min(MAX_EPOCHS, math.ceil(self.min_updates / max(steps, 1))))

    def patience_for(self) -> int | None:
        """Early stopping's patience; None (every epoch) under the paper preset unless --patience is given."""
        return None if self.preset == "paper" and "patience" not in self.model_fields_set else self.patience

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not DEVICE.fullmatch(value):
            raise ValueError("expected auto, cpu, cuda, cuda:N or mps")
        return value


def settings_error(error: ValidationError) -> str:
    """One line per a pydantic error: `--valid-start: expected YYYY-MM, got '1990-13'`."""
    parts = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if not item["loc"]:  # a rule over several options names them itself
            parts.append(message)
            continue
        field = str(item["loc"][0]).replace("_", "-")
        if item["type"] == "extra_forbidden":
            parts.append(f"--{field}: not an option of this task")
        else:
            parts.append(f"--{field}: {message[0].lower()}{message[1:]}, got {item['input']!r}")
    return "; ".join(parts)


@dataclass(frozen=True)
class FeatureBuild:
    """A feature build: the version and snapshot of its own commit (or of the reused one)."""

    version: int
    snapshot: str
    reused: bool


def existing_build(catalog: Catalog, dataset: str, key: str) -> FeatureBuild | None:
    """The version of feature set `dataset` whose lineage holds content key `key`, if any.

    For an array the snapshot is Icechunk's id; for a table, the version number as text.
    """
    if not catalog.exists(dataset):
        return None
    for entry in catalog.history(dataset):
        if entry.lineage is not None and entry.lineage.parameters.get("content_key") == key:
            return FeatureBuild(version=entry.version, snapshot=str(getattr(entry, "snapshot", entry.version)), reused=True)
    return None


@contextmanager
def building(catalog: Catalog, dataset: str, key: str) -> Iterator[FeatureBuild | None]:
    """Hold feature set `dataset`'s lock (local homes) and yield its version with content key `key`, if any.

    Build and write inside the block when None is yielded: two identical builds at once then
    give ONE version (the second waits and finds the first), never two.
    """
    with catalog.lock(dataset):
        yield existing_build(catalog, dataset, key)


def replacing(entry: ModelVersion) -> dict[str, Any]:
    """`write_table` arguments that replace model version `entry`'s rows of a predictions table.

    A predictions write never appends a second copy: it replaces the rows of its model
    version (none, the first time), so `predict --force` gives a new version with ONE copy.
    """
    return {"mode": "overwrite", "predicate": f"model = '{entry.name}' AND model_version = {entry.version}"}


F = TypeVar("F")


def feature_loader(task: str, dataset: str, load: Callable[..., F]) -> Callable[[Catalog, int | str | None], F]:
    """A task's `features(catalog, version)`: feature set `dataset` at a version (default the newest) in
    memory, loaded once per process for training, evaluation and prediction (a version never changes).

    `load(catalog, version=...)` reads one version, e.g. `shoal.features.enso.EnsoFeatures`.
    """
    import functools

    @functools.lru_cache(maxsize=1)
    def cached(home: str, version: int | str) -> F:
        from shoal.catalog import Catalog

        return load(Catalog(home), version=version)

    def features(catalog: Catalog, version: int | str | None) -> F:
        if not catalog.exists(dataset):
            raise CatalogError(f"no {dataset!r} in {catalog.home}; run `shoal features {task}` first")
        return cached(catalog.home, catalog.version_id(dataset, version))

    return features


@dataclass(frozen=True)
class Prepared:
    """Everything the generic training run needs from a task.

    Attributes:
        feature: the feature version trained on.
        model_config: the model's configuration, JSON-ready (stored in the registry).
        build: a fresh model (called under the seed).
        loss_fn: `loss_fn(output, batch) -> scalar`.
        train_data, valid_data: the training and validation splits; the test split is not here.
        chosen: the keys of `model_config` sized to the data rather than given (shown to the user).
    """

    feature: InputVersion
    model_config: Mapping[str, Any]
    build: Callable[[], Any]
    loss_fn: Callable[[Any, Mapping[str, Any]], Any]
    train_data: Any
    valid_data: Any
    chosen: tuple[str, ...] = ()


@dataclass(frozen=True)
class Predicted:
    """A predictions commit: the table, its version and the plots written beside it.

    `reused`: the commit was already there for this model version, and nothing was written.
    """

    table: str
    version: int
    rows: int
    plots: tuple[Path, ...]
    reused: bool = False


class Task(ABC):
    """Base class of a task module's task; see the module docstring."""

    name: ClassVar[str]
    model_name: ClassVar[str]
    architecture: ClassVar[str]
    predictions: ClassVar[str]
    settings: ClassVar[type[TaskSettings]] = TaskSettings
    scoring: ClassVar[Scoring]  # how the skill rows of `evaluate` are shown and judged
    spreads: ClassVar[bool] = False  # build_features takes a keyword `client` and reads on a Dask cluster
    tunable: ClassVar[bool] = False  # search_space is defined: `shoal tune TASK` works

    @abstractmethod
    def sources(self, paths: Sequence[Path]) -> list[tuple[str, list[Path]]]:
        """Which registered source ingests which of the paths `shoal run TASK PATHS` was given."""

    @abstractmethod
    def build_features(self, catalog: Catalog, settings: TaskSettings, reporter: Reporter) -> FeatureBuild:
        """Build (or reuse) the feature version for the latest inputs."""

    @abstractmethod
    def prepare(self, catalog: Catalog, settings: TaskSettings, feature_version: int | str | None) -> Prepared:
        """Load a feature version (default latest) and say how to train on it."""

    @abstractmethod
    def model(self, model_config: Mapping[str, Any]) -> Any:
        """A model from its stored configuration (weights are loaded by the caller)."""

    @abstractmethod
    def evaluate(self, catalog: Catalog, model: Any, *, feature_version: str, model_config: Mapping[str, Any],
                 device: str) -> dict[str, Any]:
        """Skill on the TEST split of a feature version beside the baselines, JSON-ready."""

    @abstractmethod
    def predict(self, catalog: Catalog, model: Any, entry: ModelVersion, *, device: str) -> Predicted:
        """Write the predictions table version of a registered model."""

    def skill_table(self, metrics: Mapping[str, Any]) -> SkillTable:
        """The metrics `evaluate` returned, as a table for people, with the verdict (`shoal.evaluation`)."""
        return skill_table(self.scoring, metrics)

    @abstractmethod
    def open_features(self, catalog: Catalog, version: int | str | None) -> FeatureSet:
        """A feature version (default the newest) for consumers: arrays, torch Datasets, statistics."""

    def search_space(self, trial: Any) -> dict[str, Any]:
        """Settings an Optuna trial suggests (`shoal tune TASK`); tasks without one cannot be tuned."""
        raise CatalogError(f"task {self.name!r} has no search space to tune")

    def parse(self, given: Mapping[str, Any]) -> TaskSettings:
        """Validated settings from options; `SettingsError` with one line on bad ones."""
        try:
            return self.settings(**given)
        except ValidationError as error:
            raise SettingsError(settings_error(error)) from None


_TASKS: dict[str, Task] = {}


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Register the decorated `Task` subclass as task `name`."""

    def decorate(cls: type[Task]) -> type[Task]:
        if name in _TASKS:
            raise ValueError(f"task {name!r} is registered twice")
        cls.name = name
        _TASKS[name] = cls()
        return cls

    return decorate


def tasks() -> dict[str, Task]:
    """Every registered task by name (importing `shoal.tasks` fills the registry)."""
    importlib.import_module("shoal.tasks")
    return dict(_TASKS)


def get_task(name: str) -> Task:
    """The task called `name`, or a `CatalogError` listing the known ones."""
    known = tasks()
    if name not in known:
        raise CatalogError(f"unknown task {name!r}; known tasks: {', '.join(sorted(known))}")
    return known[name]

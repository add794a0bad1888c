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

if TYPE_CHECKING:
    from shoal.catalog import Catalog
    from shoal.lineage import InputVersion
    from shoal.models.registry import ModelVersion
    from shoal.progress import Reporter
    from shoal.splits import SplitRecord

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


@dataclass(frozen=True)
class FeatureSet:
    """A feature version opened for training elsewhere (`shoal.open_features`).

    Attributes:
        task, dataset, version: whose features, the feature dataset, and its version.
        statistics: what the features were normalized with (fitted on train only), by name.
        split: how the version was split (`shoal.splits.SplitRecord`: rule, parameters, items per split).
        splits: the split names.
        arrays_of: split -> its arrays, by name (views of the stored data where it can).
        dataset_of: split -> a torch Dataset of its items: {"x": ..., and the targets ("label"; for
            ENSO "grid", "index", "phase")}.
        stream_of: split and the loader's keywords (batch_size, shuffle, seed, drop_last, buffer_rows) ->
            a torch IterableDataset of whole batches read from the stored files, for `loader(stream=True)`;
            None where the task has no streaming loader.
    """

    task: str
    dataset: str
    version: int
    statistics: Mapping[str, Any]
    split: SplitRecord
    splits: tuple[str, ...]
    arrays_of: Callable[[str], Mapping[str, Any]]
    dataset_of: Callable[[str], Any]
    stream_of: Callable[..., Any] | None = None

    def _check(self, split: str) -> str:
        if split not in self.splits:
            raise CatalogError(f"split must be one of {', '.join(self.splits)}, got {split!r}")
        return split

    def arrays(self, split: str) -> Mapping[str, Any]:
        """The split's arrays by name (numpy)."""
        return self.arrays_of(self._check(split))

    def torch_dataset(self, split: str) -> Any:
        """The split as a torch Dataset."""
        return self.dataset_of(self._check(split))

    def loader(self, split: str, *, batch_size: int = 256, shuffle: bool = False, seed: int = 0, num_workers: int = 0,
               pin_memory: bool = False, drop_last: bool = False, stream: bool = False,
               shuffle_buffer: int | None = None) -> Any:
        """A torch DataLoader over the split, built a whole batch at a time.

        The batches are those of `DataLoader(torch_dataset(split), batch_size, shuffle, generator)`
        — the same items in the first epoch's seeded order, collated the same way — but each is
        gathered in one indexing operation (the dataset's `gather`), not item by item in Python.

        Args:
            split: train, valid or test.
            batch_size: items per batch; the last batch is shorter unless `drop_last`.
            shuffle: a new seeded permutation each epoch (the order repeats for the same seed).
            seed: the shuffle's seed.
            num_workers: worker processes; each opens the store itself (the dataset pickles as
                a reference to its feature version, never as its data) and keeps it open
                across epochs.
            pin_memory: batches in page-locked memory, for faster copies to a GPU (ignored
                where torch finds no accelerator).
            drop_last: drop the last, shorter batch.
            stream: read the split from the stored files while iterating, so memory holds a bounded
                number of rows, not the split (HIGGS only): the files' row groups in a seeded order per
                epoch, rows through a shuffle buffer — not a global permutation; with workers, each
                reads its share of the row groups and its last batch may be shorter.
            shuffle_buffer: rows of the streaming loader's shuffle buffer (default: the task's).
        """
        import torch

        # No accelerator: torch would warn on every iteration that pinning does nothing.
        pin = pin_memory and torch.accelerator.is_available()
        if stream:
            if self.stream_of is None:
                raise CatalogError(f"task {self.task!r} has no streaming loader; call loader(...) without stream=True "
                                   "(its splits are read into memory)")
            batches = self.stream_of(self._check(split), batch_size=batch_size, shuffle=shuffle, seed=seed,
                                     drop_last=drop_last, buffer_rows=shuffle_buffer)
            return torch.utils.data.DataLoader(batches, batch_size=None, num_workers=num_workers, pin_memory=pin,
                                               collate_fn=as_is, persistent_workers=num_workers > 0)
        generator = torch.Generator().manual_seed(seed)
        dataset = self.torch_dataset(split)
        return torch.utils.data.DataLoader(
            WholeBatches(dataset), batch_size=None, num_workers=num_workers, pin_memory=pin,
            sampler=BatchOrder(len(dataset), batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                               generator=generator),
            collate_fn=as_is, generator=generator, persistent_workers=num_workers > 0)


def as_is(batch: Any) -> Any:
    """A gathered batch is already tensors: torch's `default_convert` would only walk it again (~30 us a batch)."""
    return batch


def take(values: Any, indices: Any) -> Any:
    """`values[indices]` along the first dimension (torch tensors; `indices` int64 of any shape).

    On the CPU through numpy's `take`, which copies whole rows: 4-7x faster here than torch's
    advanced indexing of the same rows (1,024 HIGGS rows: 38 against 250 us; 32 ENSO windows:
    5 against 21 ms), and the same values.
    """
    if values.device.type != "cpu":
        return values[indices]
    import numpy as np
    import torch

    return torch.from_numpy(np.take(values.numpy(), indices.numpy(), axis=0))


class BatchOrder:
    """The index batches (int64 tensors) of one epoch: `DataLoader(shuffle=...)`'s order, cut into batches.

    With `shuffle`, each epoch is `torch.randperm(items, generator=generator)`, as torch's
    `RandomSampler` draws it: a seeded loader's first epoch is an item-by-item one's. (torch
    then draws an unused permutation at each epoch's end, so later epochs differ from its own,
    while they still repeat for a seed.)
    """

    def __init__(self, items: int, *, batch_size: int, shuffle: bool, drop_last: bool, generator: Any) -> None:
        if batch_size < 1:
            raise CatalogError(f"batch_size must be at least 1, got {batch_size}")
        self.items, self.batch_size, self.shuffle, self.drop_last = items, batch_size, shuffle, drop_last
        self.generator = generator

    def __len__(self) -> int:
        whole, rest = divmod(self.items, self.batch_size)
        return whole + (rest > 0 and not self.drop_last)

    def __iter__(self) -> Iterator[Any]:
        import torch

        order = torch.randperm(self.items, generator=self.generator) if self.shuffle else torch.arange(self.items)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield order[start : start + self.batch_size]


class WholeBatches:
    """A map-style dataset whose items are whole batches: `batches[indices]` is `dataset.gather(indices)`."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: Any) -> Mapping[str, Any]:
        return self.dataset.gather(indices)


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

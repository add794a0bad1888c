"""The source registry: `@register_source("oni")` makes `shoal ingest oni PATH...` work.

A source is one module in `datasets/` with an ingest function taking a catalog and the
paths given on the command line, and returning an `IngestReport`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shoal.errors import CatalogError, exit_code

if TYPE_CHECKING:
    from shoal.catalog import Catalog


@dataclass(frozen=True)
class IngestReport:
    """What one ingest call did.

    Attributes:
        dataset: the dataset written.
        version: its version after the call (None when nothing was ever committed).
        committed: the sources that went into a new commit.
        unchanged: the sources already ingested with the same sha256 (no-op).
        failures: one line per source that failed: file, place, problem, fix.
    """

    dataset: str
    version: int | str | None
    committed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    failures: tuple[str, ...] = ()

    @property
    def exit_code(self) -> int:
        """0: all good; 1: some inputs failed, the rest committed; 2: nothing done."""
        return exit_code(failed=bool(self.failures), done=bool(self.committed or self.unchanged))


IngestFn = Callable[["Catalog", Sequence[Path]], IngestReport]


@dataclass(frozen=True)
class Source:
    """A registered source."""

    name: str
    dataset: str
    description: str
    ingest: IngestFn


_SOURCES: dict[str, Source] = {}


def register_source(name: str, *, dataset: str, description: str) -> Callable[[IngestFn], IngestFn]:
    """Register the decorated function as the ingest of source `name`."""

    def decorate(ingest: IngestFn) -> IngestFn:
        if name in _SOURCES:
            raise ValueError(f"source {name!r} is registered twice")
        _SOURCES[name] = Source(name=name, dataset=dataset, description=description, ingest=ingest)
        return ingest

    return decorate


def sources() -> dict[str, Source]:
    """Every registered source by name (importing `shoal.datasets` fills the registry)."""
    importlib.import_module("shoal.datasets")
    return dict(_SOURCES)


def get_source(name: str) -> Source:
    """The source called `name`, or a `CatalogError` listing the known ones."""
    known = sources()
    if name not in known:
        raise CatalogError(f"unknown source {name!r}; known sources: {', '.join(sorted(known))}")
    return known[name]

"""The source registry: `@register_source("oni")` makes `shoal ingest oni PATH...` work.

A source is one module in `datasets/` with an ingest function taking a catalog and the
paths given on the command line, and returning an `IngestReport`. `Source.expand(paths)`
lists the files that ingest will process (folders opened), and the ingest calls its
`progress` callback once for each of them when it is done with it, so that a caller can
show a progress bar over files.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from shoal.errors import CatalogError, exit_code

if TYPE_CHECKING:
    from shoal.catalog import Catalog


@dataclass(frozen=True)
class IngestReport:
    """What one ingest call did.

    Attributes:
        dataset: the dataset written.
        version: the version this call's commit produced; without a commit, the latest
            version (None when nothing was ever committed).
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


FileDone = Callable[[str], None]
"""Called with a file's path (as `Source.expand` gives it) when the ingest is done with it."""

ExpandFn = Callable[[Sequence[Path]], list[Path]]


class IngestFn(Protocol):
    """An ingest: the catalog, the paths given, and an optional per-file progress callback."""

    def __call__(self, catalog: Catalog, paths: Sequence[Path], *, progress: FileDone | None = None) -> IngestReport:
        """Ingest `paths`; call `progress` once per file of `expand(paths)` when it is decoded or has failed."""
        ...


def no_progress(_path: str) -> None:
    """The `progress` of an ingest nobody watches."""


def as_given(paths: Sequence[Path]) -> list[Path]:
    """The default `expand`: each path is one file."""
    return [Path(path) for path in paths]


@dataclass(frozen=True)
class Source:
    """A registered source.

    Attributes:
        name: what `shoal ingest NAME` calls it.
        dataset: the dataset it writes.
        description: one line for listings.
        ingest: the ingest function.
        expand: the files an ingest of some paths will process, in order (folders opened);
            its length is the total of a progress bar over `ingest`'s `progress` calls.
    """

    name: str
    dataset: str
    description: str
    ingest: IngestFn
    expand: ExpandFn = as_given


_SOURCES: dict[str, Source] = {}


def register_source(
    name: str, *, dataset: str, description: str, expand: ExpandFn = as_given
) -> Callable[[IngestFn], IngestFn]:
    """Register the decorated function as the ingest of source `name`.

    Args:
        name: the source's name.
        dataset: the dataset it writes.
        description: one line for listings.
        expand: the files an ingest of some paths will process; default: the paths as given.
    """

    def decorate(ingest: IngestFn) -> IngestFn:
        if name in _SOURCES:
            raise ValueError(f"source {name!r} is registered twice")
        _SOURCES[name] = Source(name=name, dataset=dataset, description=description, ingest=ingest, expand=expand)
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

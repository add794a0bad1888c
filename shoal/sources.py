"""The source registry: `@register_source("oni")` makes `shoal ingest oni PATH...` work.

A source is one module in `datasets/` with an ingest function taking a catalog and the
paths given on the command line, and returning an `IngestReport`. `Source.expand(paths)`
lists the files that ingest will process (folders opened), and the ingest calls its
`progress` callback once for each of them when it is done with it, so that a caller can
show a progress bar over files.

`check_path` and `folder_files` are the one place where the paths given to a source are
checked and folders opened: a missing path, a folder where a file is expected, a device or
a pipe are one line each; in a folder, symbolic links, devices, pipes and sockets are
refused with one line each naming them, unless the caller follows links
(`shoal ingest --follow-links`), and then only what they point to that is a regular file or
a folder is read.
"""

from __future__ import annotations

import importlib
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from shoal.errors import CatalogError, SourceError, exit_code

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



class ExpandFn(Protocol):
    """The files an ingest of some paths will process, in order (folders opened as the ingest opens them)."""

    def __call__(self, paths: Sequence[Path], *, follow_links: bool = False) -> list[Path]:
        """The files of `paths`; `follow_links` as the ingest's."""
        ...


class IngestFn(Protocol):
    """An ingest: the catalog, the paths given, an optional per-file progress callback, and whether to follow links."""

    def __call__(self, catalog: Catalog, paths: Sequence[Path], *, progress: FileDone | None = None,
                 follow_links: bool = False) -> IngestReport:
        """Ingest `paths`; call `progress` once per file of `expand(paths)` when it is decoded or has failed.

        `follow_links`: read what symbolic links inside source folders point to (a regular
        file or a folder); without it each link is refused with one line. A path given
        itself is always followed: the user named it.
        """
        ...


def no_progress(_path: str) -> None:
    """The `progress` of an ingest nobody watches."""


def as_given(paths: Sequence[Path], *, follow_links: bool = False) -> list[Path]:  # noqa: ARG001 (no folders)
    """The default `expand`: each path is one file."""
    return [Path(path) for path in paths]


_FOLLOW = "copy what it points to into the folder, or pass --follow-links to read it"


def check_path(path: Path, *, folders: bool, expected: str) -> SourceError | None:
    """Why a path given to a source cannot be read, or None when it can.

    Args:
        path: the path as given (a link given by name is followed: the user named it).
        folders: whether a folder is something the source reads.
        expected: what the source reads, for the fix (e.g. "HIGGS.csv, HIGGS.csv.gz or the UCI zip").

    Returns:
        One line: no such path, a folder where a file is expected, or not a regular file
        (a device, pipe or socket); None for a regular file, or a folder when `folders`.
    """
    try:
        mode = Path(path).stat().st_mode
    except FileNotFoundError:
        return SourceError(path, "No such file or folder", fix=f"check the path (expected {expected})")
    except OSError as error:
        return SourceError(path, f"cannot read it ({error.strerror})", fix=f"check the path (expected {expected})")
    if stat.S_ISDIR(mode):
        return None if folders else SourceError(path, "is a folder, not a file",
                                                fix=f"pass the file itself ({expected})")
    if not stat.S_ISREG(mode):
        return SourceError(path, "is not a regular file (a device, pipe or socket)",
                           fix=f"save it as a file first ({expected})")
    return None


def folder_files(folder: Path, *, pattern: str = "*", recursive: bool = True,
                 follow_links: bool = False) -> tuple[list[Path], list[str]]:
    """The regular files of a folder whose names match `pattern`, sorted, and one line per entry refused.

    Refused: a symbolic link (unless `follow_links`), a link to nothing, and a device, pipe
    or socket, when its name matches `pattern` (a link to a folder, when `recursive`). With
    `follow_links`, a link to a file is read under the link's own path and a link to a
    folder is walked (each real folder once: a link to a folder above it ends there).

    Args:
        folder: the folder (given by the user; itself followed when a link).
        pattern: a glob on file names (`sst*.grb`); "*": every file.
        recursive: walk the sub-folders too.
        follow_links: read what links point to instead of refusing them.
    """
    files: list[Path] = []
    refused: list[tuple[Path, str]] = []
    walked = {Path(folder).resolve()}

    def walk(here: Path) -> None:
        try:
            with os.scandir(here) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as error:
            refused.append((here, str(SourceError(here, f"cannot open the folder ({error.strerror})",
                                                  fix="check its permissions"))))
            return
        for entry in entries:
            path, matches = Path(entry.path), fnmatchcase(entry.name, pattern)
            if entry.is_symlink() and not follow_links:
                if matches or (recursive and entry.is_dir()):
                    refused.append((path, str(SourceError(
                        path, f"a symbolic link (to {os.readlink(path)}), not followed", fix=_FOLLOW))))
                continue
            try:
                mode = entry.stat().st_mode  # what a followed link points to
            except OSError:
                if matches:
                    refused.append((path, str(SourceError(path, f"a link to nothing (to {os.readlink(path)})",
                                                          fix="remove the link or restore what it points to"))))
                continue
            if stat.S_ISDIR(mode):
                if recursive and (real := path.resolve()) not in walked:
                    walked.add(real)
                    walk(path)
            elif not matches:
                continue
            elif stat.S_ISREG(mode):
                files.append(path)
            else:
                refused.append((path, str(SourceError(path, "a device, pipe or socket, not a file",
                                                      fix="remove it from the folder"))))

    walk(Path(folder))
    return sorted(files), [line for _, line in sorted(refused)]


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
        spreads: the ingest takes a keyword `client` and decodes on a Dask cluster's workers.
    """

    name: str
    dataset: str
    description: str
    ingest: IngestFn
    expand: ExpandFn = as_given
    spreads: bool = False


_SOURCES: dict[str, Source] = {}


def register_source(
    name: str, *, dataset: str, description: str, expand: ExpandFn = as_given, spreads: bool = False
) -> Callable[[IngestFn], IngestFn]:
    """Register the decorated function as the ingest of source `name`.

    Args:
        name: the source's name.
        dataset: the dataset it writes.
        description: one line for listings.
        expand: the files an ingest of some paths will process; default: the paths as given.
        spreads: the ingest takes a keyword `client` (a Dask client) and decodes on its workers.
    """

    def decorate(ingest: IngestFn) -> IngestFn:
        if name in _SOURCES:
            raise ValueError(f"source {name!r} is registered twice")
        _SOURCES[name] = Source(name=name, dataset=dataset, description=description, ingest=ingest, expand=expand,
                                spreads=spreads)
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

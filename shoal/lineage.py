"""Lineage: what every commit records about where its data came from.

A `Provenance` is what the writer knows (source files, input dataset versions, parameters);
the catalog completes it into a `Lineage` (dataset, kind, rows or shape, shoal version, git
sha, time) and stores it as JSON in the commit itself, so that it travels with the data.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import shoal
from shoal.files import sha256_file
from shoal.staging import shown, shown_in

if TYPE_CHECKING:
    from shoal.catalog import Catalog

LINEAGE_KEY = "shoal"  # the commit-metadata key that holds the lineage JSON


@dataclass(frozen=True)
class SourceFile:
    """A file read by an ingest: where it was, its sha256 and its size in bytes."""

    path: str
    sha256: str
    bytes: int

    @classmethod
    def of(cls, path: str | Path) -> SourceFile:
        """Hash a file in 1 MiB blocks; the size is what was read, so the two always agree."""
        path = Path(path)
        sha256, size = sha256_file(path)
        return cls(path=str(path.resolve()), sha256=sha256, bytes=size)


class HashingReader:
    """A binary file read through this: the sha256 and size of every byte read, for the lineage of a stream.

    Pass it where a file object is read from start to end (tarfile's and gzip's stream modes);
    `source` then completes the hash without a second pass over the file.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.digest, self.size = raw, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        count = self.raw.readinto(buffer)
        self.digest.update(memoryview(buffer)[:count])
        self.size += count
        return count

    def readable(self) -> bool:
        return True

    def source(self, path: Path) -> SourceFile:
        """The whole file's entry (what the stream left unread is read now)."""
        while self.read(1 << 20):
            pass
        return SourceFile(path=str(path.resolve()), sha256=self.digest.hexdigest(), bytes=self.size)


@dataclass(frozen=True)
class InputVersion:
    """A dataset version a commit was computed from (Delta version or Icechunk snapshot id)."""

    name: str
    kind: str
    version: int | str


def version_label(catalog: Catalog, item: InputVersion) -> str:
    """A dataset version as people read it, after the dataset's name: `version 3 (snapshot 1CECHNKREP0F1RSTCMT0)`
    for an array, `version 3` for a table. Lineage names an array's version by its snapshot id, which stays; a
    person types the number.

    A snapshot no longer on the array's branch is shown by its id alone.
    """
    if item.kind != "array":
        return f"version {item.version}"
    from shoal import arrays
    from shoal.errors import CatalogError

    try:
        found = arrays.resolve(catalog.uri("array", item.name), item.name, item.version)
    except CatalogError:
        return f"snapshot {item.version}"
    return f"version {found.version} (snapshot {found.snapshot})"


@dataclass(frozen=True)
class Provenance:
    """What the writer of a commit knows about its inputs."""

    sources: tuple[SourceFile, ...] = ()
    inputs: tuple[InputVersion, ...] = ()
    parameters: Mapping[str, Any] = field(default_factory=dict)
    message: str = ""


@dataclass(frozen=True)
class Lineage:
    """The complete record stored with a commit."""

    dataset: str
    kind: str
    sources: tuple[SourceFile, ...]
    inputs: tuple[InputVersion, ...]
    parameters: Mapping[str, Any]
    message: str
    rows: int | None
    shape: Mapping[str, int] | None
    shoal_version: str
    git_sha: str | None
    created_at: str
    stats: Mapping[str, Any] | None = None  # `shoal.commit_stats.CommitStats.to_dict()`: what this commit wrote

    @classmethod
    def complete(
        cls,
        provenance: Provenance,
        *,
        dataset: str,
        kind: str,
        rows: int | None = None,
        shape: Mapping[str, int] | None = None,
        stats: Mapping[str, Any] | None = None,
    ) -> Lineage:
        """Fill in what the catalog knows at commit time.

        Files downloaded from object storage (`shoal.staging`) are named by their URLs.
        """
        return cls(
            dataset=dataset,
            kind=kind,
            sources=tuple(replace(source, path=shown(source.path)) for source in provenance.sources),
            inputs=provenance.inputs,
            parameters=shown_in(dict(provenance.parameters)),
            message=shown(provenance.message),
            rows=rows,
            shape=dict(shape) if shape is not None else None,
            shoal_version=shoal.__version__,
            git_sha=git_sha(),
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            stats=stats,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        # `stats` is JSON-ready already: asdict's deep copy of its lists cost an SST ingest of 1,560 months ~0.2 s.
        return asdict(replace(self, stats=None)) | {"stats": self.stats}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Lineage:
        """The inverse of `to_dict`."""
        return cls(
            **{
                **data,
                "sources": tuple(SourceFile(**s) for s in data["sources"]),
                "inputs": tuple(InputVersion(**i) for i in data["inputs"]),
            }
        )


CODE_PACKAGES = ("shoal", "shoal.datasets", "shoal.features", "shoal.models", "shoal.tasks")
"""The packages whose code decides what is computed (flows/ only orchestrates them)."""


@functools.cache
def code_fingerprint() -> str:
    """sha256 of every Python file of `CODE_PACKAGES`: names and bytes, in a fixed order.

    Feature keys and run ids include it, so that after any change to the code that computes
    features, models, losses or baselines no stale feature version or trained model is reused,
    while an unchanged tree always reuses them (a git checkout or not; the shoal version
    number, which stays put while the code changes, is no substitute).
    """
    import importlib.util

    folders = [(package, Path(folder)) for package in CODE_PACKAGES
               for folder in importlib.util.find_spec(package).submodule_search_locations or ()]  # type: ignore[union-attr]
    return source_fingerprint(folders)


def source_fingerprint(folders: list[tuple[str, Path]]) -> str:
    """sha256 of the `*.py` files of (package, folder) pairs: each file's package, name and bytes, sorted by name."""
    digest = hashlib.sha256()
    for package, folder in folders:
        for path in sorted(folder.glob("*.py")):
            digest.update(f"{package}/{path.name}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


@functools.cache
def git_sha() -> str | None:
    """The commit of the shoal source tree when it is a git checkout of shoal, else None."""
    return git_sha_of(Path(__file__))


def git_sha_of(source: Path) -> str | None:
    """The commit of the git checkout that tracks the file `source`, `-dirty` when it has changes.

    None when `source` is not tracked by the repository its folder lies in: an installed copy
    of shoal inside somebody else's repository (a virtual environment in their project, say)
    must not record that repository's commit as shoal's.

    Args:
        source: a source file of the package (`shoal/lineage.py` for `git_sha`).

    Returns:
        The 40-hex commit id, plus `-dirty` when `git status --porcelain` shows changes, or
        None (no git, not a checkout, or a checkout that does not track `source`).
    """
    folder = source.resolve().parent

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=5,
                                  check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    top = git("rev-parse", "--show-toplevel")
    if not top or not folder.is_relative_to(Path(top).resolve()):
        return None
    if git("ls-files", "--error-unmatch", "--", source.name) is None:  # exits 1 when untracked
        return None
    sha, status = git("rev-parse", "HEAD"), git("status", "--porcelain")
    if not sha or status is None:
        return None
    return f"{sha}-dirty" if status else sha

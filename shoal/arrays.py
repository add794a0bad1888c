"""Icechunk arrays: xarray over Zarr v3, one transactional commit per write, lineage inside.

Icechunk's local-filesystem storage is not safe for concurrent commits, so on a local home
every commit (and the creation of a repository) happens under a per-repository file lock,
and a session whose base moved meanwhile is rebased before it commits. Uncommitted chunks of
a killed writer are unreferenced files: the last snapshot stays intact.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from shoal.commit_stats import WHOLE, CommitStats
from shoal.errors import CatalogError, ConcurrentCommit, HomeError, home_failure, no_dataset
from shoal.lineage import LINEAGE_KEY, Lineage, Provenance
from shoal.locks import dataset_lock
from shoal.settings import is_url

if TYPE_CHECKING:
    from collections.abc import Sequence

    import icechunk
    import icechunk.session
    import xarray as xr
    import zarr.storage


@dataclass(frozen=True)
class ArrayVersion:
    """One commit of an array, newest first in `history`; `version` counts from 0."""

    version: int
    snapshot: str
    created_at: str
    message: str
    lineage: Lineage | None


def _storage(uri: str) -> icechunk.Storage:
    import icechunk

    if not is_url(uri):
        # Commits are serialized by our lock, so Icechunk's warning about it is noise.
        icechunk.set_logs_filter("icechunk=error")
        return icechunk.local_filesystem_storage(uri)
    scheme, _, rest = uri.partition("://")
    bucket, _, prefix = rest.partition("/")
    if scheme == "s3":
        return icechunk.s3_storage(bucket=bucket, prefix=prefix, from_env=True)
    if scheme in ("gs", "gcs"):
        return icechunk.gcs_storage(bucket=bucket, prefix=prefix, from_env=True)
    if scheme in ("az", "azure", "abfs"):  # az://CONTAINER/prefix, the account from the environment (as deltalake)
        account = os.environ.get("AZURE_STORAGE_ACCOUNT_NAME") or os.environ.get("AZURE_STORAGE_ACCOUNT")
        if not account:
            raise CatalogError(f"array home {uri!r}: no Azure storage account; set AZURE_STORAGE_ACCOUNT_NAME")
        return icechunk.azure_storage(account=account, container=bucket, prefix=prefix, from_env=True)
    raise CatalogError(f"array home {uri!r}: unsupported scheme {scheme!r}; use a local path, s3://, gs:// or az://")


def committed(uri: str) -> bool:
    """Whether the repository at `uri` is a dataset: it exists and main has a commit beyond the empty root.

    Reads only: a local folder that is missing stays missing (Icechunk's local storage is
    not even constructed for it).
    """
    import itertools

    import icechunk

    if not is_url(uri) and not Path(uri).is_dir():
        return False
    storage = _storage(uri)
    try:
        if not icechunk.Repository.exists(storage):
            return False
        return len(list(itertools.islice(icechunk.Repository.open(storage).ancestry(branch="main"), 2))) == 2
    except icechunk.IcechunkError:  # a creation that was cut short: not a repository yet
        return False


def open_repo(uri: str, name: str) -> icechunk.Repository:
    """The repository of array `name`; `CatalogError` when it has no commit (reads never create one)."""
    import icechunk

    if not committed(uri):
        raise no_dataset(name, uri)
    return icechunk.Repository.open(_storage(uri))


class ArraySession:
    """A writable session on branch main: write through `store`, then `commit` once; use it as a context manager.

    On a local home the session holds the repository's lock from its opening to its end:
    Icechunk's local storage is not safe for concurrent commits, and a writer that starts
    from the newest snapshot and commits before anyone else can never conflict, whatever
    it changes (the time axis of `sst` grows with every new month). The files of a first
    write that never committed are removed before this one starts.
    """

    def __init__(self, uri: str, name: str, lock_path: Path | None, *, home: str = "") -> None:

        self.uri, self.name, self.home = uri, name, home or uri
        self._lock = dataset_lock(lock_path)
        self._lock.__enter__()
        try:
            if not committed(uri):
                clear_leftover(uri)
            self._repo = _open_or_create(uri)
            self._session = self._repo.writable_session("main")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> ArraySession:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _: object) -> None:
        """Release the lock; an error of the home's own (full disk, read-only) is raised as a `HomeError`."""
        self.close()
        if isinstance(error, Exception) and not isinstance(error, HomeError):
            failure = home_failure(error, self.home)
            if failure is not None:
                raise failure from error

    def close(self) -> None:
        """Release the repository's lock (what was not committed is dropped); idempotent."""
        self._lock.__exit__(None, None, None)
        self._lock = contextlib.nullcontext()

    @property
    def store(self) -> zarr.storage.StoreLike:
        """The Zarr store to write to (`ds.to_zarr(session.store, consolidated=False, ...)`)."""
        return self._session.store

    def current(self) -> xr.Dataset | None:
        """What this session sees now (its base plus its own writes), or None when empty."""
        return _open_dataset(self._session.store)

    def fork(self) -> icechunk.session.ForkSession:
        """A fork of this untouched session for Dask workers to write into (Icechunk refuses to fork after a write)."""
        return self._session.fork()

    def merge(self, forks: Sequence[icechunk.session.ForkSession]) -> None:
        """Merge forks the workers wrote back into this session, to be committed once."""
        self._session.merge(*forks)

    def commit(self, provenance: Provenance, *, stats: CommitStats | None = None) -> str:
        """Commit, rebasing over commits made meanwhile (on object storage: there is no lock there).

        Args:
            provenance: what the lineage records.
            stats: the statistics of what this session wrote, per part (`shoal.commit_stats`); None: this
                commit has none, and the array's statistics are unknown until a whole write.

        Returns:
            The new snapshot id.
        """
        import icechunk

        current = self.current()
        shape = {str(k): int(v) for k, v in current.sizes.items()} if current is not None else {}
        lineage = Lineage.complete(provenance, dataset=self.name, kind="array", shape=shape,
                                   stats=stats.to_dict() if stats is not None else None)
        message = provenance.message or f"write {self.name}"
        metadata = {LINEAGE_KEY: lineage.to_dict()}
        try:
            return self._session.commit(message, metadata=metadata, rebase_with=icechunk.ConflictDetector())
        except icechunk.RebaseFailedError as error:
            raise ConcurrentCommit(
                f"array {self.name!r}: a concurrent commit wrote the same chunks; "
                "nothing was committed, rerun the write"
            ) from error


def _open_or_create(uri: str) -> icechunk.Repository:
    """Open the repository, or create it. On object storage several writers may create it at
    once: the losers ("can only be created in clean prefixes") open it after a random wait."""
    import icechunk
    from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random

    if not is_url(uri):  # the caller holds the lock: nobody else creates it
        return icechunk.Repository.open_or_create(_storage(uri))
    retrying = Retrying(retry=retry_if_exception_type(icechunk.IcechunkError), stop=stop_after_attempt(6),
                        wait=wait_random(0.1, 1.0), reraise=True)
    return retrying(lambda: icechunk.Repository.open_or_create(_storage(uri)))


def clear_leftover(uri: str) -> None:
    """Remove what a first write that never committed left at `uri` (local homes; object stores: `catalog check`)."""
    import shutil

    if not is_url(uri):
        shutil.rmtree(uri, ignore_errors=True)


def write_whole(uri: str, name: str, lock_path: Path | None, dataset: xr.Dataset, *,
                encoding: dict[str, dict] | None, provenance: Provenance, home: str = "") -> str:
    """Replace the whole content of array `name` with `dataset` in one commit; return its snapshot id.

    The session holds the repository lock (local homes), so it always starts from the newest
    snapshot: two whole writes at once land one after the other as two versions, instead of
    the second failing with a conflict on every chunk.
    """
    with ArraySession(uri, name, lock_path, home=home) as session:
        if _lazy(dataset):
            return session.commit(provenance, stats=_write_lazy(session, dataset, encoding))
        dataset.to_zarr(session.store, mode="w", consolidated=False, encoding=encoding)
        return session.commit(provenance, stats=dataset_stats(dataset))


def _real(dataset: xr.Dataset) -> dict[str, xr.DataArray]:
    """The variables that have statistics: numbers and booleans (not text, not dates)."""
    return {str(name): variable for name, variable in dataset.data_vars.items() if variable.dtype.kind in "biuf"}


def _lazy(dataset: xr.Dataset) -> bool:
    return any(variable.chunks is not None for variable in dataset.data_vars.values())


def dataset_stats(dataset: xr.Dataset) -> CommitStats:
    """The statistics of every real-valued variable of a dataset held in memory, as a whole write's."""
    from shoal.stats import RunningStats

    columns = {name: RunningStats.from_values(variable.values, axis=None) for name, variable in _real(dataset).items()}
    return CommitStats(mode="overwrite", parts={WHOLE: columns})


def _write_lazy(session: ArraySession, dataset: xr.Dataset, encoding: dict[str, dict] | None) -> CommitStats:
    """Write a dataset with lazy (dask) variables in slabs along their first dimension; return its statistics.

    Each slab is computed once (by dask, in parallel), written as a region and summarized
    while in memory: no second pass, and memory bounded by a slab. A slab ends where every
    lazy variable's blocks end, so no block is computed twice. xarray's own lazy write
    could not share its blocks with a summary: `to_zarr(compute=False)` hands back a graph
    already optimized, its keys renamed (every block was computed twice).
    """
    from shoal.commit_stats import merge_columns
    from shoal.stats import RunningStats

    lazy = [str(name) for name, variable in dataset.data_vars.items() if variable.chunks is not None]
    dim = dataset[lazy[0]].dims[0]
    sliced = [name for name in lazy if dim in dataset[name].dims]
    # A lazy variable without that dimension is computed whole, once, before the slabs.
    dataset = dataset.assign({name: dataset[name].compute() for name in lazy if name not in sliced})
    dataset.to_zarr(session.store, mode="w", consolidated=False, encoding=encoding, compute=False)  # the rest
    columns = dataset_stats(dataset.drop_vars(sliced)).parts[WHOLE]
    ends = set.intersection(*[set(np.cumsum(dataset[name].chunksizes[dim]).tolist()) for name in sliced])
    real = [name for name in sliced if name in _real(dataset)]
    start = 0
    for end in sorted(ends):
        region = {dim: slice(start, end)}
        slab = dataset[sliced].isel(region).compute()
        slab.drop_vars([name for name in slab.coords if dim not in slab[name].dims]).to_zarr(
            session.store, region=region, consolidated=False)
        columns = merge_columns(columns, {name: RunningStats.from_values(slab[name].values, axis=None)
                                          for name in real})
        start = end
    return CommitStats(mode="overwrite", parts={WHOLE: {name: columns[name] for name in _real(dataset)}})


def _open_dataset(store: zarr.storage.StoreLike) -> xr.Dataset | None:
    import xarray as xr

    try:
        return xr.open_zarr(store, consolidated=False, chunks=None)
    except FileNotFoundError:  # nothing written yet: no root group
        return None


def history(uri: str, name: str) -> list[ArrayVersion]:
    """Every shoal commit of the array on main, newest first (the empty root is left out)."""
    snapshots = list(open_repo(uri, name).ancestry(branch="main"))[:-1]
    versions = []
    for number, snap in zip(range(len(snapshots) - 1, -1, -1), snapshots, strict=True):
        raw = snap.metadata.get(LINEAGE_KEY)
        versions.append(
            ArrayVersion(
                version=number,
                snapshot=snap.id,
                created_at=snap.written_at.isoformat(timespec="milliseconds"),
                message=snap.message,
                lineage=Lineage.from_dict(raw) if raw else None,
            )
        )
    return versions


def resolve(uri: str, name: str, version: int | str | None) -> ArrayVersion:
    """The commit named by a version number, a snapshot id, or None (latest)."""
    versions = history(uri, name)
    if not versions:
        raise CatalogError(f"array {name!r} has no commits yet")
    if version is None:
        return versions[0]
    for candidate in versions:
        if str(version) in (str(candidate.version), candidate.snapshot):
            return candidate
    raise CatalogError(f"array {name!r} has no version {version!r}; see `shoal catalog history {name}`")


def open_array(uri: str, name: str, version: int | str | None = None) -> xr.Dataset:
    """The array at `version` (number or snapshot id; default latest), lazily loaded."""
    snapshot = resolve(uri, name, version).snapshot
    session = open_repo(uri, name).readonly_session(snapshot_id=snapshot)
    dataset = _open_dataset(session.store)
    if dataset is None:
        raise CatalogError(f"array {name!r} version {version!r} holds no data")
    return dataset


def describe(uri: str, name: str, version: int | str | None = None) -> dict[str, object]:
    """Dims, variables and shape of one version."""
    chosen = resolve(uri, name, version)
    dataset = open_array(uri, name, chosen.snapshot)
    return {
        "version": chosen.version,
        "snapshot": chosen.snapshot,
        "dims": {str(k): int(v) for k, v in dataset.sizes.items()},
        "variables": {str(k): f"{v.dtype} {v.dims}" for k, v in dataset.data_vars.items()},
    }

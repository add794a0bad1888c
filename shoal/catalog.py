"""The catalog: named, versioned tables and arrays under one home, with lineage.

On-disk contract (readable without shoal):
    <home>/tables/<name>   a Delta Lake table
    <home>/arrays/<name>   an Icechunk repository (xarray over Zarr v3), branch main
Every commit carries its `Lineage` as JSON under the commit-metadata key "shoal".
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from shoal import arrays, tables
from shoal.errors import CatalogError, HomeError, home_failure, no_dataset
from shoal.lineage import InputVersion, Lineage, Provenance
from shoal.locks import dataset_lock, lock_if_free
from shoal.settings import is_url, local_folder, resolve_home

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    import polars as pl
    import pyarrow as pa
    import xarray as xr

    from shoal.commit_stats import Columns
    from shoal.tables import TableData, WriteMode

Kind = Literal["table", "array"]
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")
_FOLDERS: dict[Kind, str] = {"table": "tables", "array": "arrays"}


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset in the listing."""

    name: str
    kind: Kind
    version: int
    updated_at: str


@dataclass(frozen=True)
class LineageNode:
    """A dataset version and the versions it was computed from, recursively."""

    name: str
    kind: Kind
    version: int | str
    lineage: Lineage | None
    parents: tuple[LineageNode, ...] = field(default=())


def validate_name(name: str) -> str:
    """Return `name` if it is a valid dataset name, else raise `CatalogError`."""
    if not NAME_PATTERN.fullmatch(name):
        raise CatalogError(
            f"invalid dataset name {name!r}: expected [a-z][a-z0-9_]* (at most 64 characters), "
            "e.g. 'nino34' or 'sst_features'"
        )
    return name


class Catalog:
    """Tables and arrays under one home (a local folder or an object-store URL).

    Args:
        home: the catalog home; default `$SHOAL_HOME`, else `~/.local/share/shoal`.
    """

    def __init__(self, home: str | Path | None = None) -> None:
        self.home = resolve_home(home)
        if not is_url(self.home) and Path(self.home).exists() and not Path(self.home).is_dir():
            raise HomeError(f"the home {self.home} is a file, not a folder; pass --home a folder (it is created "
                            "when missing)")

    def __repr__(self) -> str:
        return f"Catalog({self.home!r})"

    @property
    def local(self) -> Path:
        """The local folder of this home: the home itself, or for an object-store home a work folder on this machine."""
        return local_folder(self.home)

    def uri(self, kind: Kind, name: str) -> str:
        """Where dataset `name` of `kind` lives; never outside the home."""
        validate_name(name)
        if is_url(self.home):
            return f"{self.home}/{_FOLDERS[kind]}/{name}"
        path = Path(self.home, _FOLDERS[kind], name).resolve()
        if not path.is_relative_to(Path(self.home).resolve()):
            raise CatalogError(f"dataset {name!r} resolves to {path}, outside the home {self.home}")
        return str(path)

    def _lock_path(self, name: str) -> Path | None:
        return None if is_url(self.home) else Path(self.home, ".locks", f"{name}.lock")

    def must_exist(self) -> Catalog:
        """This catalog, or `HomeError` when its local home does not exist (a command that only reads says so)."""
        if not is_url(self.home) and not Path(self.home).is_dir():
            raise HomeError(f"the home {self.home} does not exist; pass --home (or set SHOAL_HOME to) the folder you "
                            "ingested into")
        return self

    def lock(self, name: str) -> contextlib.AbstractContextManager[object]:
        """Dataset `name`'s lock on a local home (re-entrant in a thread; writes take it too); none on object storage."""
        return dataset_lock(self._lock_path(name))

    def lock_if_free(self, name: str) -> contextlib.AbstractContextManager[bool]:
        """Dataset `name`'s lock if no writer holds it: yields whether it was taken (always True on object storage)."""
        return lock_if_free(self._lock_path(name))

    # -- writing ---------------------------------------------------------------------------

    def write_table(
        self,
        name: str,
        data: TableData,
        *,
        provenance: Provenance,
        mode: WriteMode = "append",
        predicate: str | None = None,
    ) -> int:
        """Write an Arrow table, a polars frame or a stream of record batches as ONE commit.

        A stream is written as it is read, except the first write of a table, which is held in
        memory: a writer that loses the race to create the table writes its rows again.

        Args:
            name: the table.
            data: the rows.
            provenance: sources, inputs and parameters recorded as lineage.
            mode: "append" or "overwrite".
            predicate: with mode "overwrite", replace only the rows where this SQL holds.

        Returns:
            The new Delta version.
        """
        self._refuse_other_kind(name, "table")
        uri = self.uri("table", name)
        with self._guard(), self._writing(name, uri) as creating:
            try:
                return tables.write_table(uri, name, data, mode=mode, predicate=predicate, provenance=provenance)
            except tables.CommitNotLanded:
                # On object storage (no lock) another writer may have created the table first:
                # nothing of ours landed, so write again, to the table that now exists.
                import pyarrow as pa

                replayable = not isinstance(data, pa.RecordBatchReader | Iterator)
                if not (creating and replayable and is_url(uri) and tables.committed(uri)):
                    raise
        with self._guard():
            return tables.write_table(uri, name, data, mode=mode, predicate=predicate, provenance=provenance)

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """An error of the home's own (full disk, read-only, no permission) becomes one `HomeError` line."""
        try:
            yield
        except HomeError:
            raise
        except Exception as error:
            failure = home_failure(error, self.home)
            if failure is None:
                raise
            raise failure from error

    @contextmanager
    def _writing(self, name: str, uri: str) -> Iterator[bool]:
        """A write of table `name`, from its first file to its commit; yields whether it creates the table.

        On a local home it holds the table's lock throughout: writers of one table take turns,
        so every file in the table's folder that no commit references is an interrupted
        write's (`catalog check --repair` removes them under the same lock), and a first write
        removes what an interrupted first write left. On object storage there is no lock: Delta's
        commit protocol (put-if-absent of the next log entry) serializes the commits.
        """
        with self.lock(name):
            creating = not tables.committed(uri)
            if creating and not is_url(uri):
                tables.clear_leftover(uri)
                Path(uri).mkdir(parents=True, exist_ok=True)
            yield creating

    def write_streamed(self, name: str, batches: Iterable[pa.RecordBatch], *, schema: pa.Schema,
                       provenance: Callable[[], Provenance], mode: WriteMode = "append", workers: int = 2,
                       file_bytes: int = 64 << 20) -> int | None:
        """Write a stream of record batches as ONE commit, Parquet encoded by `workers` threads.

        Faster than `write_table` for large streams: files are encoded in parallel while the
        batches are produced, and the commit adds them all at the end. `provenance` is called
        after the last batch, so the lineage can record what the stream found. With mode
        "overwrite" the commit replaces every row of the table. `file_bytes`: about how many
        bytes of batches go into one Parquet file.

        Returns:
            The new Delta version, or None when the stream held no rows (no commit).
        """
        def fill(writer: tables.StreamedWrite, _: Path) -> None:
            for batch in batches:
                writer.write(batch)

        return self._write_once(name, fill, schema=schema, provenance=provenance, mode=mode, workers=workers,
                                file_bytes=file_bytes)

    def write_files(self, name: str, write: Callable[[Path], Iterable[Path]], *, schema: pa.Schema,
                    provenance: Callable[[], Provenance], mode: WriteMode = "append",
                    stats: Callable[[], Columns | None] | None = None) -> int | None:
        """Commit the Parquet files `write(folder)` writes (e.g. a polars sink) as ONE commit.

        `folder` is a new folder inside the table's; `write` returns the paths of the files to
        add, each of the table's `schema`. Whatever `write` raises, nothing is committed and
        the folder is deleted. `provenance` is called once the files are written, and so is
        `stats`: the column statistics of all the files' rows, computed while `write` wrote
        them (without it, or when it gives None, the commit has no statistics).

        Returns:
            The new Delta version, or None when the files held no rows (no commit).
        """
        def fill(writer: tables.StreamedWrite, folder: Path) -> None:
            if not is_url(writer.uri):
                paths = [str(path.relative_to(writer.uri)) for path in write(folder)]
                writer.adopt(paths, stats=stats() if stats else None)
                return
            import tempfile

            with tempfile.TemporaryDirectory(prefix="shoal-") as local:  # the files go up once written
                written = [(path, f"{folder.name}/{path.relative_to(local)}") for path in write(Path(local))]
                for path, relative in written:
                    writer.upload(path, relative)
                writer.adopt([relative for _, relative in written], stats=stats() if stats else None)

        return self._write_once(name, fill, schema=schema, provenance=provenance, mode=mode)

    def _write_once(self, name: str, fill: Callable[[tables.StreamedWrite, Path], None], *, schema: pa.Schema,
                    provenance: Callable[[], Provenance], mode: WriteMode, workers: int = 2,
                    file_bytes: int = 64 << 20) -> int | None:
        import shutil
        import uuid

        self._refuse_other_kind(name, "table")
        uri = self.uri("table", name)
        with self._guard(), self._writing(name, uri) as creating:
            writer = tables.StreamedWrite(uri, name, schema, workers=workers, file_bytes=file_bytes)
            folder = Path(uri, f"files-{uuid.uuid4().hex}")  # on a URL home only its name is used

            def drop() -> None:  # nothing committed: the files written go, and a folder this write created
                if not is_url(uri):
                    shutil.rmtree(folder, ignore_errors=True)
                writer.abort(remove_folder=creating)

            try:
                fill(writer, folder)
            except BaseException:
                drop()
                raise
            if writer.rows == 0:
                drop()
                return None
            try:
                return writer.commit(provenance(), mode=mode, remove_folder=creating)
            except BaseException:
                if not is_url(uri):
                    shutil.rmtree(folder, ignore_errors=True)
                raise

    def array_session(self, name: str) -> arrays.ArraySession:
        """A writable session on array `name` (created when missing): `with catalog.array_session(name) as s:`, commit once.

        On a local home it holds the array's lock until it ends: other writers of the array wait.
        """
        self._refuse_other_kind(name, "array")
        return arrays.ArraySession(self.uri("array", name), name, self._lock_path(name), home=self.home)

    def write_array(self, name: str, dataset: xr.Dataset, *, provenance: Provenance,
                    encoding: dict[str, dict] | None = None) -> str:
        """Replace the whole content of array `name` (created when missing) with `dataset` as ONE commit.

        Concurrent whole writes of one array are serialized on a local home, so each lands as
        its own version. Returns the snapshot id of this write's commit.
        """
        self._refuse_other_kind(name, "array")
        return arrays.write_whole(self.uri("array", name), name, self._lock_path(name), dataset, encoding=encoding,
                                  provenance=provenance, home=self.home)

    def _refuse_other_kind(self, name: str, kind: Kind) -> None:
        other: Kind = "array" if kind == "table" else "table"
        if self._committed(other, name):
            raise CatalogError(f"{name!r} is already an {other}; choose another name for the {kind}")

    # -- reading ---------------------------------------------------------------------------

    def read_table(self, name: str, *, version: int | None = None) -> pa.Table:
        """Table `name` at `version` (default latest) as Arrow."""
        return tables.read_table(self.uri("table", name), name, version)

    def scan_table(self, name: str, *, version: int | None = None) -> pl.LazyFrame:
        """Table `name` at `version` (default latest) as a polars LazyFrame."""
        return tables.scan_table(self.uri("table", name), name, version)

    def open_array(self, name: str, *, version: int | str | None = None) -> xr.Dataset:
        """Array `name` at `version` (number, snapshot id, or latest) as a lazy xarray Dataset."""
        return arrays.open_array(self.uri("array", name), name, version)

    # -- listing and lineage ---------------------------------------------------------------

    def _folders(self, kind: Kind) -> list[str]:
        """Names of the folders of `kind`: datasets, and what interrupted first writes left."""
        import pyarrow.fs as pafs

        root = f"{self.home}/{_FOLDERS[kind]}"
        filesystem, path = pafs.FileSystem.from_uri(root if is_url(root) else Path(root).as_uri())
        selector = pafs.FileSelector(path, allow_not_found=True)
        return sorted(
            info.base_name
            for info in filesystem.get_file_info(selector)
            if info.type == pafs.FileType.Directory and NAME_PATTERN.fullmatch(info.base_name)
        )

    def _committed(self, kind: Kind, name: str) -> bool:
        uri = self.uri(kind, name)
        return tables.committed(uri) if kind == "table" else arrays.committed(uri)

    def _names(self, kind: Kind) -> list[str]:
        """The datasets of `kind`: folders with a first commit (Delta: a log entry; Icechunk: a snapshot)."""
        return [name for name in self._folders(kind) if self._committed(kind, name)]

    def exists(self, name: str) -> bool:
        """Whether a table or an array called `name` exists (has a commit)."""
        validate_name(name)
        return self._committed("table", name) or self._committed("array", name)

    def latest_version(self, name: str) -> int:
        """The newest version number of `name`."""
        history = self.history(name)
        if not history:
            raise CatalogError(f"{name!r} has no commits yet")
        return history[0].version

    def kind(self, name: str) -> Kind:
        """Whether `name` is a table or an array; `CatalogError` when it is neither."""
        validate_name(name)
        for kind in ("table", "array"):
            if self._committed(kind, name):
                return kind
        leftovers = [self.uri(kind, name) for kind in ("table", "array") if name in self._folders(kind)]
        raise no_dataset(name, leftovers[0]) if leftovers else CatalogError(
            f"no dataset named {name!r} in {self.home}; see `shoal catalog list`")

    def version_id(self, name: str, version: int | str | None = None) -> int | str:
        """What names one version for good: a table's version number, an array's snapshot id (default the newest)."""
        if self.kind(name) == "array":
            return arrays.resolve(self.uri("array", name), name, version).snapshot
        chosen = _table_version(name, version)
        return self.latest_version(name) if chosen is None else chosen

    def list(self) -> list[DatasetInfo]:
        """Every dataset with its latest version, tables first, by name."""
        found = []
        for kind in ("table", "array"):
            for name in self._names(kind):
                history = self.history(name)
                found.append(DatasetInfo(name, kind, history[0].version, history[0].created_at))
        return found

    def history(self, name: str) -> list[tables.TableVersion] | list[arrays.ArrayVersion]:
        """All versions of `name`, newest first, each with its lineage."""
        if self.kind(name) == "table":
            return tables.history(self.uri("table", name), name)
        return arrays.history(self.uri("array", name), name)

    def describe(self, name: str, *, version: int | str | None = None) -> dict[str, object]:
        """Kind, schema or dims, rows or shape, and lineage of one version."""
        kind = self.kind(name)
        if kind == "table":
            facts = tables.describe(self.uri(kind, name), name, _table_version(name, version))
        else:
            facts = arrays.describe(self.uri(kind, name), name, version)
        lineage = self.lineage(name, version=facts["version"])
        shown = {key: value for key, value in lineage.to_dict().items() if key != "stats"} if lineage else None
        return {"name": name, "kind": kind, **facts, "lineage": shown}  # the statistics: `catalog stats`

    def stats(self, name: str, *, version: int | str | None = None) -> Columns:
        """The statistics per column (table) or variable (array) of the data version `version` holds (default latest).

        Folded from the statistics each commit stored (`shoal.commit_stats`): no data is read.

        Raises:
            CatalogError: no such version, or a commit up to it has no statistics (written before shoal kept
                them, or by another tool).
        """
        from shoal.commit_stats import combine, fold

        kind = self.kind(name)
        if kind == "array":
            wanted = arrays.resolve(self.uri(kind, name), name, version).version
        else:
            wanted = _table_version(name, version)
            wanted = self.latest_version(name) if wanted is None else wanted
        history = [entry for entry in reversed(self.history(name)) if entry.version <= wanted]
        if not history or history[-1].version != wanted:
            raise CatalogError(f"{kind} {name!r} has no version {version}; see `shoal catalog history {name}`")
        commits = [_commit_stats(entry) for entry in history]
        parts = fold(commit for commit in commits if commit is not _NO_CHANGE)
        if parts is None:
            missing = max(entry.version for entry, commit in zip(history, commits, strict=True) if commit is None)
            raise CatalogError(f"{kind} {name!r} version {wanted}: version {missing} has no statistics (written before "
                               f"shoal kept them, or by another tool); write {name} again (ingest or build it) to have them")
        return combine(parts)

    def lineage(self, name: str, *, version: int | str | None = None) -> Lineage | None:
        """The lineage recorded with one version (default latest)."""
        kind = self.kind(name)
        if kind == "array":
            return arrays.resolve(self.uri(kind, name), name, version).lineage
        wanted = _table_version(name, version)
        for entry in tables.history(self.uri(kind, name), name):
            if wanted is None or entry.version == wanted:
                return entry.lineage
        raise CatalogError(f"table {name!r} has no version {version}; see `shoal catalog history {name}`")

    def lineage_tree(self, name: str, *, version: int | str | None = None) -> LineageNode:
        """Walk the inputs of a version back to its source files."""
        kind = self.kind(name)
        lineage = self.lineage(name, version=version)
        if kind == "array":
            version = arrays.resolve(self.uri(kind, name), name, version).version
        else:
            version = _table_version(name, version)
            if version is None:
                version = self.latest_version(name)
        parents = tuple(self._parent(item) for item in (lineage.inputs if lineage else ()))
        return LineageNode(name=name, kind=kind, version=version, lineage=lineage, parents=parents)

    def _parent(self, item: InputVersion) -> LineageNode:
        try:
            return self.lineage_tree(item.name, version=item.version)
        except CatalogError:  # the input was deleted or vacuumed: show it, unresolved
            return LineageNode(name=item.name, kind=item.kind, version=item.version, lineage=None)  # type: ignore[arg-type]


# Delta operations that change no rows: a commit of them (by another tool) leaves the statistics as they were.
_KEEPS_ROWS = frozenset({"OPTIMIZE", "VACUUM START", "VACUUM END", "SET TBLPROPERTIES", "ADD CONSTRAINT",
                         "DROP CONSTRAINTS", "ADD FEATURE"})
_NO_CHANGE = object()


def _commit_stats(entry: tables.TableVersion | arrays.ArrayVersion) -> object:
    """A commit's `CommitStats`; None when it changed data without them; `_NO_CHANGE` when it changed none."""
    from shoal.commit_stats import CommitStats

    if entry.lineage is None and getattr(entry, "operation", "") in _KEEPS_ROWS:
        return _NO_CHANGE
    if entry.lineage is None or entry.lineage.stats is None:
        return None
    return CommitStats.from_dict(entry.lineage.stats)


def _table_version(name: str, version: int | str | None) -> int | None:
    if version is None or isinstance(version, int):
        return version
    if not version.isdigit():
        raise CatalogError(f"table {name!r}: version must be a whole number, got {version!r}")
    return int(version)

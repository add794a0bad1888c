"""Delta Lake tables: every write is one ACID commit that carries its lineage.

Concurrent writers are safe through Delta's own commit protocol (an atomic
put-if-absent of the next log entry, retried by delta-rs for appends); a writer killed
mid-write leaves only unreferenced Parquet files behind, never a half-written version.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pyarrow as pa

from shoal.commit_stats import WHOLE, Columns, CommitStats, arrow_stats, merge_columns
from shoal.errors import CatalogError, no_dataset
from shoal.lineage import LINEAGE_KEY, Lineage, Provenance

if TYPE_CHECKING:
    from typing import TypeAlias

    import polars as pl

    TableData: TypeAlias = pa.Table | pa.RecordBatchReader | Iterable[pa.RecordBatch] | pl.DataFrame
WriteMode = Literal["append", "overwrite"]


@dataclass(frozen=True)
class TableVersion:
    """One commit of a table, newest first in `history`."""

    version: int
    created_at: str
    operation: str
    lineage: Lineage | None


def _as_arrow(data: object) -> pa.Table | pa.RecordBatchReader:
    if isinstance(data, pa.Table | pa.RecordBatchReader):
        return data
    if type(data).__module__.startswith("polars"):
        return data.to_arrow()  # type: ignore[attr-defined]
    batches = iter(data)  # type: ignore[call-overload]
    first = next(batches, None)
    if first is None:
        raise CatalogError("cannot write an empty stream of record batches; pass at least one batch")

    def chained() -> Iterator[pa.RecordBatch]:
        yield first
        yield from batches

    return pa.RecordBatchReader.from_batches(first.schema, chained())


class CommitNotLanded(CatalogError):
    """A table write failed before its commit: nothing was committed, so its side files may go."""


class _CreatedMeanwhile(Exception):  # noqa: N818 (a signal to retry, never shown)
    """Another writer created the table between our look and our commit (no lock on object storage)."""


def write_table(
    uri: str,
    name: str,
    data: TableData,
    *,
    mode: WriteMode,
    predicate: str | None,
    provenance: Provenance,
) -> int:
    """Write `data` to the Delta table at `uri` as one commit; return the version of that commit.

    Raises:
        CommitNotLanded: the write failed; nothing was committed.
        CatalogError: a bad request (nothing written), or the commit landed but its version
            could not be read back.
    """
    from deltalake import CommitProperties, DeltaTable, write_deltalake
    from deltalake.exceptions import DeltaError
    from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

    arrow = _as_arrow(data)
    if predicate is not None and mode != "overwrite":
        raise CatalogError(f"table {name!r}: a predicate needs mode='overwrite' (replace where)")
    if isinstance(arrow, pa.RecordBatchReader) and (predicate is not None or _existing_table(uri) is None):
        # A create that loses the race is written again (below), and a stream read once is empty the second
        # time: that retry committed no rows and said success (4 writers on S3 kept 200 of 400 rows). So the
        # first write of a table is held in memory; so are the rows a predicate replaces (delta-rs writes them
        # in one call, and the commit's statistics must be known before it). Other streams still stream.
        arrow = arrow.read_all()
    if isinstance(arrow, pa.RecordBatchReader):
        return _write_stream(uri, name, arrow, mode=mode, provenance=provenance)
    rows = arrow.num_rows
    stats = _table_commit_stats(arrow, mode=mode, predicate=predicate)
    lineage = Lineage.complete(provenance, dataset=name, kind="table", rows=rows, stats=stats)
    stamp = json.dumps(lineage.to_dict())

    def write() -> DeltaTable | None:
        table = _existing_table(uri)
        try:
            # Given a DeltaTable, delta-rs moves it to the snapshot of its own commit, retries
            # over concurrent appends included: its version() is then ours, whatever landed since.
            write_deltalake(uri if table is None else table, arrow, mode=mode, predicate=predicate,
                            commit_properties=CommitProperties(custom_metadata={LINEAGE_KEY: stamp}))
        except DeltaError as error:
            # Two first writes race to create the table and delta-rs refuses the second ("Metadata
            # changed since last commit"): nothing of ours landed, so write again, into the table.
            if table is None and _existing_table(uri) is not None:
                raise _CreatedMeanwhile from error
            raise
        return table

    retrying = Retrying(retry=retry_if_exception_type(_CreatedMeanwhile), stop=stop_after_attempt(3), reraise=True)
    try:
        table = retrying(write)
    except (DeltaError, ValueError, _CreatedMeanwhile) as error:
        raise CommitNotLanded(f"table {name!r}: write failed: {error}; nothing was committed") from error
    try:
        return _committed_version(uri, table, stamp)
    except Exception as error:  # noqa: BLE001 (whatever broke, the commit is there: never say otherwise)
        raise CatalogError(
            f"table {name!r}: the write landed (it is committed), but its version could not be read "
            f"back ({error}); see `shoal catalog history {name}` for it, and do not write it again"
        ) from error


def _write_stream(uri: str, name: str, stream: pa.RecordBatchReader, *, mode: WriteMode,
                  provenance: Provenance) -> int:
    """A stream into an existing table, as `StreamedWrite` files: each file's statistics are summarized as it is written.

    Every batch is cast to the table's schema first (delta-rs' own writes cast too): a batch
    that does not fit it fails the write, and nothing is committed.
    """
    schema = pa.schema(_existing_table(uri).schema().to_arrow())
    writer = StreamedWrite(uri, name, schema)
    try:
        for batch in stream:
            writer.write(batch.cast(schema))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as error:  # a batch that does not fit
        writer.abort()
        raise CommitNotLanded(f"table {name!r}: write failed: {error}; nothing was committed") from error
    except BaseException:  # a full disk, an interrupted producer: the files written so far go too
        writer.abort()
        raise
    return writer.commit(provenance, mode=mode)


def _table_commit_stats(table: pa.Table, *, mode: WriteMode, predicate: str | None) -> dict[str, object]:
    """The statistics of rows written by one commit: appended, all the table holds, or the rows `predicate` replaces."""
    if predicate is not None:
        return CommitStats(mode="replace", parts={predicate: arrow_stats(table)}).to_dict()
    return CommitStats(mode=mode, parts={WHOLE: arrow_stats(table)}).to_dict()


def write_parquet(table: pa.Table, path: str, *, filesystem: object | None = None) -> None:
    """One Parquet data file as shoal writes them: snappy, the text columns dictionary-encoded.

    Dictionary-encoding only the text columns: trying it on every float column made each
    file ~6x slower to write (pyarrow builds the dictionary, then gives it up).
    """
    import pyarrow.parquet as pq

    text = [field.name for field in table.schema if pa.types.is_string(field.type) or pa.types.is_dictionary(field.type)]
    pq.write_table(table, path, filesystem=filesystem, compression="snappy", use_dictionary=text)


class StreamedWrite:
    """Record batches written to Parquet files by worker threads, then ONE Delta commit adding them all.

    pyarrow encodes Parquet without the GIL, so `workers` files are encoded at once while the
    caller keeps producing batches. Nothing is visible until `commit`: files of a write that
    fails or is never committed are not referenced by the table (and are deleted when it can).

    Args:
        uri: the table's folder: a local path or an object-store URL (files go through pyarrow's filesystem).
        name: the table's name, for messages.
        schema: the schema of every batch.
        workers: files encoded at once.
        file_bytes: about how many bytes of batches go into one Parquet file.
    """

    def __init__(self, uri: str, name: str, schema: pa.Schema, *, workers: int = 2, file_bytes: int = 64 << 20) -> None:
        from concurrent.futures import ThreadPoolExecutor

        import pyarrow.fs as pafs

        self.uri, self.name, self.schema, self.file_bytes = uri, name, schema, file_bytes
        self._fs, self._root = pafs.FileSystem.from_uri(uri if "://" in uri else Path(uri).as_uri())
        self.rows, self._batches, self._size = 0, [], 0
        self._pool, self._pending, self._actions, self._paths = ThreadPoolExecutor(workers), [], [], []
        self._workers = workers
        # Each file's column statistics, by path: merged in the order of the files, so a rerun stores the same bytes.
        self._stats: dict[str, Columns | None] = {}

    def write(self, batch: pa.RecordBatch) -> None:
        """Add a batch; a file's worth of batches goes to a worker."""
        self._batches.append(batch)
        self._size += batch.nbytes
        self.rows += batch.num_rows
        if self._size >= self.file_bytes:
            self._flush()

    def _flush(self) -> None:
        if not self._batches:
            return
        import uuid

        path = f"part-{uuid.uuid4().hex}.snappy.parquet"
        self._paths.append(path)
        self._pending.append(self._pool.submit(self._write_file, path, self._batches))
        self._batches, self._size = [], 0
        while len(self._pending) > self._workers:  # bounded memory: wait for the oldest file
            self._actions.append(self._pending.pop(0).result())

    def _write_file(self, path: str, batches: list[pa.RecordBatch]):  # noqa: ANN202 (deltalake is lazy)
        table = pa.Table.from_batches(batches, schema=self.schema)
        write_parquet(table, f"{self._root}/{path}", filesystem=self._fs)
        self._stats[path] = arrow_stats(table)  # on this worker, while the rows are in memory: no second pass
        return self._add_action(path, table.num_rows)

    def adopt(self, paths: Iterable[str], *, stats: Columns | None = None) -> None:
        """Add Parquet files already written into the table's folder (paths relative to it), e.g. by a polars sink.

        Args:
            paths: the files, relative to the table's folder.
            stats: the column statistics of all these files' rows, computed by whoever wrote them; without
                them the commit has no statistics.
        """
        import pyarrow.parquet as pq

        paths = list(paths)
        for number, path in enumerate(paths):
            self._stats[path] = stats if number == 0 else {}
            self._paths.append(path)
            rows = pq.read_metadata(f"{self._root}/{path}", filesystem=self._fs).num_rows
            self._actions.append(self._add_action(path, rows))
            self.rows += rows

    def upload(self, local: Path, path: str) -> None:
        """Copy a local Parquet file into the table's folder as `path` (relative), to `adopt` it."""
        import pyarrow.fs as pafs

        pafs.copy_files(str(local), f"{self._root}/{path}", destination_filesystem=self._fs)
        self._paths.append(path)

    def _add_action(self, path: str, rows: int):  # noqa: ANN202 (deltalake is lazy)
        import time

        from deltalake.transaction import AddAction

        size = self._fs.get_file_info(f"{self._root}/{path}").size
        return AddAction(path=path, size=size, partition_values={}, modification_time=int(time.time() * 1000),
                         data_change=True, stats=json.dumps({"numRecords": rows}))

    def commit(self, provenance: Provenance, *, mode: WriteMode = "append", remove_folder: bool = False) -> int:
        """Wait for every file and add them all to the table in one commit; return its version.

        With mode "overwrite", the same commit removes every file the table had.

        Raises:
            CommitNotLanded: a file or the commit failed; nothing was committed.
        """
        from deltalake import CommitProperties, Schema
        from deltalake.exceptions import DeltaError
        from deltalake.transaction import create_table_with_add_actions

        try:
            self._flush()
            self._actions += [future.result() for future in self._pending]
            self._pending = []
            lineage = Lineage.complete(provenance, dataset=self.name, kind="table", rows=self.rows,
                                       stats=self._commit_stats(mode))
            stamp = json.dumps(lineage.to_dict())
            properties = CommitProperties(custom_metadata={LINEAGE_KEY: stamp})
            table = _existing_table(self.uri)
            if table is None:
                create_table_with_add_actions(self.uri, Schema.from_arrow(self.schema), self._actions, mode="append",
                                              commit_properties=properties)
            else:
                table.create_write_transaction(self._actions, mode=mode, schema=self.schema,
                                               commit_properties=properties)
        except (DeltaError, ValueError, OSError) as error:
            self.abort(remove_folder=remove_folder)
            raise CommitNotLanded(f"table {self.name!r}: write failed: {error}; nothing was committed") from error
        finally:
            self._pool.shutdown()
        return _committed_version(self.uri, None, stamp)

    def _commit_stats(self, mode: WriteMode) -> dict[str, object] | None:
        """The statistics of every file's rows merged, or None when a file came without them."""
        merged: Columns = {}
        for path in dict.fromkeys(self._paths):  # an uploaded file is listed twice: uploaded, then adopted
            columns = self._stats.get(path)
            if columns is None:
                return None
            merged = merge_columns(merged, columns)
        return CommitStats(mode=mode, parts={WHOLE: merged}).to_dict()

    def abort(self, *, remove_folder: bool = False) -> None:
        """Drop what was written: the files are not in the table; delete them.

        With `remove_folder` (the write was to create the table), the folder goes too when
        no commit ever landed in it.
        """
        import pyarrow.fs as pafs

        for future in self._pending:
            future.exception()  # wait, whatever happened
        self._pool.shutdown()
        for path in self._paths:  # a file never written (its worker failed first) is simply not there
            if self._fs.get_file_info(f"{self._root}/{path}").type == pafs.FileType.File:
                self._fs.delete_file(f"{self._root}/{path}")
        if remove_folder and self._fs.get_file_info(f"{self._root}/_delta_log").type == pafs.FileType.NotFound:
            with contextlib.suppress(FileNotFoundError):
                self._fs.delete_dir(self._root)


def committed(uri: str) -> bool:
    """Whether the table at `uri` is a dataset: its log has a first commit (the Delta protocol's rule)."""
    from deltalake import DeltaTable

    if "://" not in uri and not Path(uri, "_delta_log").is_dir():
        return False
    return DeltaTable.is_deltatable(uri)


def clear_leftover(uri: str) -> None:
    """Remove what a first write that never committed left at `uri` (local homes; object stores: `catalog check`)."""
    import shutil

    if "://" not in uri:
        shutil.rmtree(uri, ignore_errors=True)


def _existing_table(uri: str):  # noqa: ANN202 (deltalake is lazy)
    """The table at `uri`, or None when this write is to create it."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(uri)
    except TableNotFoundError:
        return None


def _committed_version(uri: str, table: object | None, stamp: str) -> int:
    """The version our write produced: the table's own, or found by its lineage stamp."""
    if table is not None:
        return table.version()  # type: ignore[attr-defined]
    # A creating write gets no table back: search the whole history (no limit, so commits
    # made by others since cannot push ours out of sight).
    from deltalake import DeltaTable

    for entry in DeltaTable(uri).history():
        if entry.get(LINEAGE_KEY) == stamp:
            return entry["version"]
    raise CatalogError("no commit in the table's history carries this write's lineage")


def _open(uri: str, name: str, version: int | None = None):  # noqa: ANN202 (deltalake is lazy)
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    if not committed(uri):
        raise no_dataset(name, uri)
    try:
        return DeltaTable(uri, version=version)
    except TableNotFoundError as error:
        raise CatalogError(f"table {name!r} has no version {version}: {error}") from error
    except Exception as error:  # deltalake raises bare Exception for a missing version
        raise CatalogError(f"table {name!r} has no version {version}; see `shoal catalog history {name}`") from error


def scan_table(uri: str, name: str, version: int | None = None) -> pl.LazyFrame:
    """A polars LazyFrame over the table at `version` (default: latest)."""
    import polars as pl

    _open(uri, name, version)  # a clear error for a missing table or version
    return pl.scan_delta(uri, version=version)


def read_table(uri: str, name: str, version: int | None = None) -> pa.Table:
    """The whole table at `version` as Arrow, in the table's own Delta schema.

    Read through polars: deltalake's own pyarrow dataset leaves scanner threads that abort
    the interpreter at exit (delta-io/delta-rs#2184, seen here with deltalake 1.6). polars
    hands back large strings and lists; the cast restores the written types.
    """
    schema = pa.schema(_open(uri, name, version).schema().to_arrow())
    return scan_table(uri, name, version).collect().to_arrow().cast(schema)


def history(uri: str, name: str) -> list[TableVersion]:
    """Every commit of the table, newest first."""
    versions = []
    for entry in _open(uri, name).history():
        raw = entry.get(LINEAGE_KEY)
        lineage = Lineage.from_dict(json.loads(raw)) if raw else None
        if lineage is not None and lineage.rows is None:  # a streamed write: Delta counted it
            added = entry.get("operationMetrics", {}).get("num_added_rows")
            lineage = replace(lineage, rows=added)
        versions.append(
            TableVersion(
                version=entry["version"],
                created_at=lineage.created_at if lineage else str(entry["timestamp"]),
                operation=entry.get("operation", ""),
                lineage=lineage,
            )
        )
    return versions


def describe(uri: str, name: str, version: int | None = None) -> dict[str, object]:
    """Schema and row count of one version."""
    import polars as pl

    table = _open(uri, name, version)
    schema = table.schema().to_arrow()
    rows = pl.scan_delta(uri, version=table.version()).select(pl.len()).collect().item()
    return {
        "version": table.version(),
        "schema": {field.name: str(field.type) for field in pa.schema(schema)},
        "rows": rows,
    }

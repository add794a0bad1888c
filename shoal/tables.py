"""Delta Lake tables: every write is one ACID commit that carries its lineage.

Concurrent writers are safe through Delta's own commit protocol (an atomic
put-if-absent of the next log entry, retried by delta-rs for appends); a writer killed
mid-write leaves only unreferenced Parquet files behind, never a half-written version.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import pyarrow as pa

from shoal.errors import CatalogError
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


def write_table(
    uri: str,
    name: str,
    data: TableData,
    *,
    mode: WriteMode,
    predicate: str | None,
    provenance: Provenance,
) -> int:
    """Write `data` to the Delta table at `uri` as one commit; return the new version."""
    from deltalake import CommitProperties, write_deltalake
    from deltalake.exceptions import DeltaError

    arrow = _as_arrow(data)
    rows = arrow.num_rows if isinstance(arrow, pa.Table) else None
    lineage = Lineage.complete(provenance, dataset=name, kind="table", rows=rows)
    if predicate is not None and mode != "overwrite":
        raise CatalogError(f"table {name!r}: a predicate needs mode='overwrite' (replace where)")
    stamp = json.dumps(lineage.to_dict())
    try:
        write_deltalake(
            uri,
            arrow,
            mode=mode,
            predicate=predicate,
            commit_properties=CommitProperties(custom_metadata={LINEAGE_KEY: stamp}),
        )
        # Other writers may have committed since: find ours by its lineage stamp.
        return next(e["version"] for e in _open(uri, name).history(limit=64) if e.get(LINEAGE_KEY) == stamp)
    except (DeltaError, ValueError) as error:
        raise CatalogError(f"table {name!r}: write failed: {error}; nothing was committed") from error


def _open(uri: str, name: str, version: int | None = None):  # noqa: ANN202 (deltalake is lazy)
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

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

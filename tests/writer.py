"""A catalog writer run as a separate process by the concurrency and crash tests.

    python tests/writer.py table HOME ID [--hang MARKER]
    python tests/writer.py array HOME ID [--hang MARKER]

`table` appends 100 rows tagged ID to table `shared` in one commit; `array` writes ID into
time slot ID of array `grid` (a region write) and commits. With --hang, the writer creates
MARKER in the middle of its write (table: after 3 of 6 batches were handed to Delta; array:
after its chunks are written, before the commit) and then waits to be killed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from shoal.catalog import Catalog
from shoal.lineage import Provenance

SLOTS = 8  # time slots of the array `grid`


def _hang(marker: str | None) -> None:
    if marker:
        Path(marker).touch()
        time.sleep(600)


def write_table(catalog: Catalog, writer: int, marker: str | None) -> None:
    batch = pa.record_batch({"writer": pa.array([writer] * 100, pa.int64()), "x": np.arange(100.0)})

    def hanging() -> Iterator[pa.RecordBatch]:
        for index in range(6):
            if index == 3:
                _hang(marker)
            yield batch

    data = hanging() if marker else [batch]
    catalog.write_table("shared", data, provenance=Provenance(parameters={"writer": writer}))


def write_array(catalog: Catalog, writer: int, marker: str | None) -> None:
    import xarray as xr

    with catalog.array_session("grid") as session:
        values = np.full((1, 4, 6), float(writer), dtype=np.float32)
        xr.Dataset({"v": (("time", "y", "x"), values)}).to_zarr(
            session.store, region={"time": slice(writer, writer + 1)}, consolidated=False
        )
        _hang(marker)
        session.commit(Provenance(parameters={"writer": writer}, message=f"slot {writer}"))


def make_grid(catalog: Catalog) -> str:
    """Create array `grid`: SLOTS time slots of NaN, committed once."""
    import xarray as xr

    with catalog.array_session("grid") as session:
        empty = np.full((SLOTS, 4, 6), np.nan, dtype=np.float32)
        xr.Dataset({"v": (("time", "y", "x"), empty)}).to_zarr(
            session.store, mode="w", consolidated=False, encoding={"v": {"chunks": (1, 4, 6)}}
        )
        return session.commit(Provenance(message="empty grid"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["table", "array"])
    parser.add_argument("home")
    parser.add_argument("id", type=int)
    parser.add_argument("--hang")
    args = parser.parse_args()
    write = write_table if args.kind == "table" else write_array
    write(Catalog(args.home), args.id, args.hang)

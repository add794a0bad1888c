"""`shoal catalog check [--repair]`: findings one line each, repairs that never touch a committed version."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shoal.catalog import Catalog
from shoal.check import check
from shoal.lineage import InputVersion, Provenance
from tests.test_cli import shoal


def _grid(values: float) -> object:
    import xarray as xr

    noise = np.random.default_rng(0).random((4, 4096), np.float32) / 10  # a chunk too big to inline in a manifest
    return xr.Dataset({"v": (("t", "x"), values + noise)})


@pytest.fixture
def damaged(catalog: Catalog) -> Catalog:
    """A home with two good datasets (the table overwritten once) and what four interrupted writes left."""
    catalog.write_table("good", pa.table({"x": [1, 2]}), provenance=Provenance())
    catalog.write_table("good", pa.table({"x": [3]}), mode="overwrite", provenance=Provenance())
    catalog.write_array("grid", _grid(1.0), provenance=Provenance(inputs=(InputVersion("good", "table", 1),)))
    stray = Path(catalog.uri("table", "good"), "files-0123")  # a streamed write killed before its commit
    stray.mkdir()
    pq.write_table(pa.table({"x": [99]}), stray / "part-killed.snappy.parquet")
    Path(catalog.uri("table", "first")).mkdir()  # a first write killed before its commit
    pq.write_table(pa.table({"x": [1]}), Path(catalog.uri("table", "first"), "part-0.parquet"))
    with catalog.array_session("grid") as session:  # chunks written, never committed
        _grid(2.0).to_zarr(session.store, mode="w", consolidated=False)
    return catalog


def test_a_clean_home_is_clean(catalog: Catalog) -> None:
    catalog.write_table("good", pa.table({"x": [1]}), provenance=Provenance())
    catalog.write_array("grid", _grid(1.0), provenance=Provenance(inputs=(InputVersion("good", "table", 0),)))
    result = shoal("catalog", "check", home=Path(catalog.home))
    assert result.returncode == 0 and result.stdout.strip().endswith(": clean"), result.stdout


def test_check_lists_each_leftover_on_one_line_and_repair_removes_only_those(damaged: Catalog) -> None:
    home = Path(damaged.home)
    found = shoal("catalog", "check", home=home)
    assert found.returncode == 1, found.stdout + found.stderr
    lines = found.stdout.splitlines()
    assert len(lines) == 3, lines
    assert any(line.startswith("tables/first: an interrupted first write left files") for line in lines)
    assert any(line.startswith("tables/good: 1 file(s) that no commit references") for line in lines)
    assert any(line.startswith("arrays/grid: ") and "object(s)" in line for line in lines)

    repaired = shoal("catalog", "check", "--repair", home=home)
    assert repaired.returncode == 0 and repaired.stdout.count("repaired: ") == 3, repaired.stdout
    assert shoal("catalog", "check", home=home).returncode == 0
    assert not Path(damaged.uri("table", "first")).exists()
    assert not Path(damaged.uri("table", "good"), "files-0123").exists()
    # Every committed version is whole: time travel to the overwritten one reads its files.
    assert damaged.read_table("good", version=0).column("x").to_pylist() == [1, 2]
    assert damaged.read_table("good").column("x").to_pylist() == [3]
    assert (damaged.open_array("grid").v.values < 1.5).all()


def test_a_lineage_input_that_does_not_exist_and_a_lineage_that_does_not_parse_are_findings(catalog: Catalog) -> None:
    from deltalake import CommitProperties, write_deltalake

    catalog.write_table("derived", pa.table({"x": [1]}), provenance=Provenance(
        inputs=(InputVersion("ghost", "table", 3),)))
    write_deltalake(catalog.uri("table", "derived"), pa.table({"x": [2]}), mode="append",
                    commit_properties=CommitProperties(custom_metadata={"shoal": "{not json"}))
    report = check(catalog)
    assert report.findings == [
        "tables/derived: version 1: its lineage does not parse (JSONDecodeError: Expecting property name enclosed "
        "in double quotes: line 1 column 2 (char 1))",
        "tables/derived: version 0: its input ghost version 3 does not exist (deleted, or vacuumed)"]


def test_a_dataset_being_written_is_skipped_with_a_note(damaged: Catalog) -> None:
    import threading

    held, release = threading.Event(), threading.Event()

    def writer() -> None:
        with damaged.lock("good"):
            held.set()
            release.wait()

    thread = threading.Thread(target=writer)
    thread.start()
    held.wait()
    try:
        report = check(damaged, repair=True)
    finally:
        release.set()
        thread.join()
    assert report.notes == ["tables/good: a write is in progress (its lock is held); not checked, rerun later"]
    assert Path(damaged.uri("table", "good"), "files-0123").exists()

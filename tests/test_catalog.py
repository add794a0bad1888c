"""The catalog: Delta tables and Icechunk arrays under one home, with lineage and safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import xarray as xr

from shoal.catalog import Catalog, validate_name
from shoal.errors import CatalogError
from shoal.lineage import InputVersion, Provenance, SourceFile
from shoal.settings import resolve_home
from shoal.tables import CommitNotLanded
from tests.timeouts import scaled

WRITER = Path(__file__).parent / "writer.py"
sys.path.insert(0, str(WRITER.parent))
import writer  # noqa: E402  (the subprocess writer, also used in-process to set up)


def _rows(catalog: Catalog, name: str, version: int | None = None) -> list[dict]:
    return catalog.read_table(name, version=version).sort_by("a").to_pylist()


# -- names and homes -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nino34", "sst", "a", "higgs_features_v2"])
def test_valid_names_are_accepted(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "../etc", "a/b", "..", ".hidden", "Nino", "1abc", "a-b", "a b", "x" * 65, "/abs"])
def test_invalid_names_are_refused_with_the_rule(catalog: Catalog, name: str) -> None:
    with pytest.raises(CatalogError, match=r"invalid dataset name.*\[a-z\]"):
        catalog.uri("table", name)
    with pytest.raises(CatalogError, match="invalid dataset name"):
        catalog.write_table(name, pa.table({"a": [1]}), provenance=Provenance())


def test_a_symlinked_folder_cannot_lead_outside_the_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "tables").mkdir(parents=True)
    (home / "tables" / "escape").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CatalogError, match="outside the home"):
        Catalog(home).uri("table", "escape")


def test_home_comes_from_argument_then_environment_then_default(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "env"))
    assert resolve_home(tmp_path / "arg") == str(tmp_path / "arg")
    assert resolve_home(None) == str(tmp_path / "env")
    monkeypatch.delenv("SHOAL_HOME")
    assert resolve_home(None) == str(Path("~/.local/share/shoal").expanduser())
    assert resolve_home("s3://bucket/prefix/") == "s3://bucket/prefix"


# -- tables ----------------------------------------------------------------------------------


def test_append_overwrite_and_replace_where_each_make_one_version(catalog: Catalog) -> None:
    assert catalog.write_table("t", pa.table({"a": [1, 2, 3]}), provenance=Provenance()) == 0
    assert catalog.write_table("t", pl.DataFrame({"a": [4, 5]}), provenance=Provenance()) == 1
    assert catalog.write_table("t", pa.table({"a": [50]}), mode="overwrite", predicate="a >= 4", provenance=Provenance()) == 2
    assert [r["a"] for r in _rows(catalog, "t")] == [1, 2, 3, 50]
    assert catalog.write_table("t", pa.table({"a": [7]}), mode="overwrite", provenance=Provenance()) == 3
    assert [r["a"] for r in _rows(catalog, "t")] == [7]
    assert [r["a"] for r in _rows(catalog, "t", version=1)] == [1, 2, 3, 4, 5]
    assert [v.version for v in catalog.history("t")] == [3, 2, 1, 0]


def test_a_stream_of_record_batches_is_one_commit_with_its_row_count(catalog: Catalog) -> None:
    batches = (pa.record_batch({"a": np.arange(i * 10, i * 10 + 10)}) for i in range(25))
    assert catalog.write_table("t", batches, provenance=Provenance()) == 0
    assert len(catalog.history("t")) == 1
    assert catalog.read_table("t").num_rows == 250
    assert catalog.lineage("t").rows == 250


def test_scan_table_is_a_lazy_polars_frame_at_any_version(catalog: Catalog) -> None:
    catalog.write_table("t", pa.table({"a": [1, 2]}), provenance=Provenance())
    catalog.write_table("t", pa.table({"a": [3]}), provenance=Provenance())
    frame = catalog.scan_table("t", version=0)
    assert isinstance(frame, pl.LazyFrame)
    assert frame.select(pl.col("a").sum()).collect().item() == 3


def test_schema_mismatch_is_refused_and_nothing_is_committed(catalog: Catalog) -> None:
    catalog.write_table("t", pa.table({"a": [1]}), provenance=Provenance())
    with pytest.raises(CommitNotLanded, match="nothing was committed"):
        catalog.write_table("t", pa.table({"b": ["x"]}), provenance=Provenance())
    assert [v.version for v in catalog.history("t")] == [0]


@pytest.mark.parametrize("existing", [False, True], ids=["creating", "appending"])
def test_a_write_returns_its_own_version_when_70_other_commits_land_before_the_read_back(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    import deltalake

    real = deltalake.write_deltalake
    uri = catalog.uri("table", "t")
    if existing:
        catalog.write_table("t", pa.table({"a": [-1]}), provenance=Provenance())

    def then_another_writer(*args, **kwargs) -> None:  # noqa: ANN002, ANN003
        real(*args, **kwargs)
        for i in range(70):  # more than any fixed window of recent history
            real(uri, pa.table({"a": [i]}), mode="append")

    monkeypatch.setattr(deltalake, "write_deltalake", then_another_writer)
    version = catalog.write_table("t", pa.table({"a": [999]}), provenance=Provenance(message="mine"))
    assert version == int(existing)
    assert catalog.lineage("t", version=version).message == "mine"
    assert [r["a"] for r in _rows(catalog, "t", version=version)] == ([-1, 999] if existing else [999])
    assert catalog.history("t")[0].version == version + 70


def test_a_read_back_failure_says_the_write_landed_never_that_nothing_was_committed(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shoal import tables

    catalog.write_table("t", pa.table({"a": [1]}), provenance=Provenance())

    def broken(*args: object) -> int:
        raise OSError("the log cannot be read")

    monkeypatch.setattr(tables, "_committed_version", broken)
    with pytest.raises(CatalogError, match=r"table 't': the write landed .*could not be read back") as raised:
        catalog.write_table("t", pa.table({"a": [2]}), provenance=Provenance(message="landed"))
    assert "nothing was committed" not in str(raised.value) and not isinstance(raised.value, CommitNotLanded)
    monkeypatch.undo()
    assert catalog.lineage("t").message == "landed" and [v.version for v in catalog.history("t")] == [1, 0]


def test_predicate_without_overwrite_is_refused(catalog: Catalog) -> None:
    with pytest.raises(CatalogError, match="predicate needs mode='overwrite'"):
        catalog.write_table("t", pa.table({"a": [1]}), predicate="a > 0", provenance=Provenance())


def test_reading_a_missing_table_or_version_is_a_catalog_error(catalog: Catalog) -> None:
    with pytest.raises(CatalogError, match="no dataset named 'nope'"):
        catalog.history("nope")
    catalog.write_table("t", pa.table({"a": [1]}), provenance=Provenance())
    with pytest.raises(CatalogError, match="no version 5"):
        catalog.read_table("t", version=5)
    with pytest.raises(CatalogError, match="no version 5"):
        catalog.describe("t", version=5)


def test_every_commit_records_full_lineage_readable_without_shoal(catalog: Catalog, tmp_path: Path) -> None:
    source = tmp_path / "input.txt"
    source.write_text("hello")
    provenance = Provenance(
        sources=(SourceFile.of(source),),
        inputs=(InputVersion("other", "table", 3),),
        parameters={"alpha": 0.5},
        message="test write",
    )
    catalog.write_table("t", pa.table({"a": [1, 2]}), provenance=provenance)
    lineage = catalog.lineage("t")
    assert lineage.dataset == "t" and lineage.kind == "table" and lineage.rows == 2
    assert lineage.sources[0].sha256 == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert lineage.sources[0].bytes == 5
    assert lineage.inputs == (InputVersion("other", "table", 3),)
    assert lineage.parameters == {"alpha": 0.5}
    assert lineage.shoal_version and lineage.created_at
    from deltalake import DeltaTable

    raw = json.loads(DeltaTable(catalog.uri("table", "t")).history()[0]["shoal"])
    assert raw["sources"][0]["sha256"] == lineage.sources[0].sha256


# -- arrays ----------------------------------------------------------------------------------


def test_array_region_writes_commit_versions_that_time_travel(catalog: Catalog) -> None:
    first = writer.make_grid(catalog)
    session = catalog.array_session("grid")
    xr.Dataset({"v": (("time", "y", "x"), np.ones((2, 4, 6), np.float32))}).to_zarr(
        session.store, region={"time": slice(2, 4)}, consolidated=False
    )
    second = session.commit(Provenance(inputs=(InputVersion("t", "table", 0),), message="slots 2-3"))
    latest = catalog.open_array("grid")
    assert np.isnan(latest.v[0].values).all() and (latest.v[2:4].values == 1).all()
    assert np.isnan(catalog.open_array("grid", version=0).v.values).all()
    assert np.isnan(catalog.open_array("grid", version=first).v.values).all()
    history = catalog.history("grid")
    assert [(v.version, v.snapshot) for v in history] == [(1, second), (0, first)]
    assert history[0].lineage.shape == {"time": writer.SLOTS, "y": 4, "x": 6}
    assert history[0].lineage.message == "slots 2-3"
    facts = catalog.describe("grid")
    assert facts["dims"] == {"time": writer.SLOTS, "y": 4, "x": 6} and facts["kind"] == "array"


def test_an_array_is_readable_without_shoal(catalog: Catalog) -> None:
    import icechunk

    writer.make_grid(catalog)
    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(catalog.uri("array", "grid")))
    ds = xr.open_zarr(repo.readonly_session(branch="main").store, consolidated=False)
    assert ds.v.shape == (writer.SLOTS, 4, 6)
    snapshot = next(iter(repo.ancestry(branch="main")))
    assert snapshot.metadata["shoal"]["dataset"] == "grid"


def test_missing_array_version_is_a_catalog_error(catalog: Catalog) -> None:
    writer.make_grid(catalog)
    with pytest.raises(CatalogError, match="no version 'ZZZ'"):
        catalog.open_array("grid", version="ZZZ")


def test_a_name_is_either_a_table_or_an_array(catalog: Catalog) -> None:
    writer.make_grid(catalog)
    with pytest.raises(CatalogError, match="already an array"):
        catalog.write_table("grid", pa.table({"a": [1]}), provenance=Provenance())


# -- listing and lineage ---------------------------------------------------------------------


def test_list_shows_tables_and_arrays_with_latest_versions(catalog: Catalog) -> None:
    assert catalog.list() == []
    catalog.write_table("t", pa.table({"a": [1]}), provenance=Provenance())
    catalog.write_table("t", pa.table({"a": [2]}), provenance=Provenance())
    writer.make_grid(catalog)
    assert [(d.name, d.kind, d.version) for d in catalog.list()] == [("t", "table", 1), ("grid", "array", 0)]


def test_lineage_tree_walks_inputs_back_to_source_files(catalog: Catalog, tmp_path: Path) -> None:
    source = tmp_path / "raw.csv"
    source.write_text("a\n1\n")
    catalog.write_table("raw", pa.table({"a": [1]}), provenance=Provenance(sources=(SourceFile.of(source),)))
    catalog.write_table("raw", pa.table({"a": [2]}), provenance=Provenance())
    features = Provenance(inputs=(InputVersion("raw", "table", 0), InputVersion("gone", "table", 4)))
    catalog.write_table("features", pa.table({"a": [1.0]}), provenance=features)
    tree = catalog.lineage_tree("features")
    assert (tree.name, tree.version) == ("features", 0)
    raw, gone = tree.parents
    assert (raw.name, raw.version) == ("raw", 0)
    assert raw.lineage.sources[0].path == str(source)
    assert (gone.name, gone.lineage) == ("gone", None)


# -- concurrency and crashes -----------------------------------------------------------------


def _spawn(kind: str, home: Path, writer_id: int, hang: Path | None = None) -> subprocess.Popen:
    command = [sys.executable, str(WRITER), kind, str(home), str(writer_id)]
    if hang is not None:
        command += ["--hang", str(hang)]
    return subprocess.Popen(command, stderr=subprocess.PIPE, text=True)


def _wait_for(marker: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + scaled(60)
    while not marker.exists():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the writer never reached the middle of its write"
        time.sleep(0.05)


@pytest.mark.slow
def test_concurrent_processes_appending_to_one_table_lose_nothing(catalog: Catalog) -> None:
    processes = [_spawn("table", Path(catalog.home), i) for i in range(6)]
    for process in processes:
        assert process.wait(timeout=scaled(120)) == 0, process.stderr.read()
    table = catalog.read_table("shared")
    assert table.num_rows == 600
    assert sorted(set(table.column("writer").to_pylist())) == list(range(6))
    assert sorted(v.version for v in catalog.history("shared")) == list(range(6))
    for version in range(6):  # every intermediate version is readable
        assert catalog.read_table("shared", version=version).num_rows == 100 * (version + 1)


@pytest.mark.slow
def test_concurrent_processes_committing_regions_of_one_array_rebase_and_all_land(catalog: Catalog) -> None:
    writer.make_grid(catalog)
    processes = [_spawn("array", Path(catalog.home), i) for i in range(writer.SLOTS)]
    for process in processes:
        assert process.wait(timeout=scaled(120)) == 0, process.stderr.read()
    values = catalog.open_array("grid").v.values
    for slot in range(writer.SLOTS):
        assert (values[slot] == slot).all(), f"slot {slot} lost"
    assert len(catalog.history("grid")) == writer.SLOTS + 1


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["table", "array"])
def test_a_writer_killed_mid_write_leaves_the_last_version_intact_and_a_rerun_succeeds(
    catalog: Catalog, tmp_path: Path, kind: str
) -> None:
    name = "shared" if kind == "table" else "grid"
    if kind == "table":
        assert _spawn("table", Path(catalog.home), 0).wait(timeout=scaled(60)) == 0
    else:
        writer.make_grid(catalog)
    before = catalog.history(name)
    marker = tmp_path / "mid-write"
    victim = _spawn(kind, Path(catalog.home), 1, hang=marker)
    _wait_for(marker, victim)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=scaled(30))
    assert [v.version for v in catalog.history(name)] == [v.version for v in before]
    if kind == "table":
        assert catalog.read_table(name).column("writer").to_pylist() == [0] * 100
    else:
        assert np.isnan(catalog.open_array(name).v.values).all()
    # The lock died with the process: a rerun commits at once.
    assert _spawn(kind, Path(catalog.home), 1).wait(timeout=scaled(60)) == 0
    assert len(catalog.history(name)) == len(before) + 1


def _rows_batch(start: int, n: int):  # noqa: ANN202
    return pa.RecordBatch.from_pydict({"x": pa.array(range(start, start + n), pa.int64())})


def test_a_streamed_append_lands_as_one_commit_with_its_lineage_rows(catalog) -> None:  # noqa: ANN001
    from shoal.lineage import Provenance

    schema = pa.schema([("x", pa.int64())])
    batches = (_rows_batch(i * 10, 10) for i in range(5))
    version = catalog.write_streamed("streamed", batches, schema=schema, provenance=lambda: Provenance(message="five"))
    assert version == 0 and catalog.read_table("streamed").column("x").to_pylist() == list(range(50))
    assert catalog.history("streamed")[0].lineage.rows == 50
    again = catalog.write_streamed("streamed", iter([_rows_batch(50, 3)]), schema=schema,
                                    provenance=lambda: Provenance())
    assert again == 1 and catalog.read_table("streamed").num_rows == 53
    assert catalog.write_streamed("streamed", iter([]), schema=schema, provenance=lambda: Provenance()) is None


def test_a_streamed_append_that_fails_midway_commits_nothing_and_leaves_no_files(catalog) -> None:  # noqa: ANN001
    from pathlib import Path

    from shoal.lineage import Provenance

    schema = pa.schema([("x", pa.int64())])

    def broken(start: int):  # noqa: ANN202
        yield _rows_batch(start, 10)
        raise RuntimeError("the source broke")

    with pytest.raises(RuntimeError, match="the source broke"):
        catalog.write_streamed("fresh", broken(0), schema=schema, provenance=lambda: Provenance())
    assert not catalog.exists("fresh")
    catalog.write_streamed("kept", iter([_rows_batch(0, 5)]), schema=schema, provenance=lambda: Provenance())
    files = set(Path(catalog.uri("table", "kept")).glob("*.parquet"))
    with pytest.raises(RuntimeError):
        catalog.write_streamed("kept", broken(5), schema=schema, provenance=lambda: Provenance())
    assert set(Path(catalog.uri("table", "kept")).glob("*.parquet")) == files
    assert catalog.latest_version("kept") == 0 and catalog.read_table("kept").num_rows == 5


def test_files_written_by_polars_land_as_one_commit_and_a_failed_writer_leaves_nothing(catalog) -> None:  # noqa: ANN001
    from pathlib import Path

    import polars as pl

    from shoal.lineage import Provenance

    schema = pa.schema([("x", pa.int64())])

    def sink(folder: Path, start: int = 0) -> list[Path]:
        pl.LazyFrame({"x": range(start, start + 50)}).sink_parquet(pl.PartitionBy(folder, max_rows_per_file=10),
                                                                   mkdir=True)
        return sorted(folder.glob("*.parquet"))

    def broken(folder: Path) -> list[Path]:
        sink(folder, 50)
        raise RuntimeError("the check failed")

    version = catalog.write_files("sunk", sink, schema=schema, provenance=lambda: Provenance(message="fifty"))
    assert version == 0 and catalog.read_table("sunk").column("x").to_pylist() == list(range(50))
    assert catalog.history("sunk")[0].lineage.rows == 50
    files = set(Path(catalog.uri("table", "sunk")).rglob("*.parquet"))
    assert len(files) == 5
    with pytest.raises(RuntimeError, match="the check failed"):
        catalog.write_files("sunk", broken, schema=schema, provenance=lambda: Provenance())
    assert set(Path(catalog.uri("table", "sunk")).rglob("*.parquet")) == files
    assert catalog.latest_version("sunk") == 0
    with pytest.raises(RuntimeError):
        catalog.write_files("fresh", broken, schema=schema, provenance=lambda: Provenance())
    assert not catalog.exists("fresh") and not Path(catalog.uri("table", "fresh")).exists()


def test_an_aborted_streamed_write_deletes_the_files_its_workers_wrote(tmp_path) -> None:  # noqa: ANN001
    from shoal.tables import StreamedWrite

    folder = tmp_path / "table"
    folder.mkdir()
    writer = StreamedWrite(str(folder), "table", pa.schema([("x", pa.int64())]), file_bytes=1)
    for i in range(4):
        writer.write(_rows_batch(i, 1))
    writer.abort(remove_folder=True)
    assert not folder.exists()

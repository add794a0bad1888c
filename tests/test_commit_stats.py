"""Every commit stores the statistics of what it wrote; a version's statistics describe what it holds."""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import xarray as xr

from shoal import cluster
from shoal.catalog import Catalog
from shoal.datasets import cobe_sst, higgs, speech_commands
from shoal.errors import CatalogError
from shoal.lineage import Provenance
from shoal.stats import RunningStats
from tests.test_cli import shoal

SST = Path(__file__).parent / "data" / "cobe_sst"
FIRST5 = Path(__file__).parent / "data" / "higgs" / "higgs_first5.csv"
HIGGS20 = Path(__file__).parent / "data" / "higgs" / "higgs_20.csv"
SPEECH = Path(__file__).parent / "data" / "speech_commands" / "v0.01"
RTOL = 1e-12


def _rows(seed: int, n: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(1e3, 2.0, n)
    x[::7] = np.nan
    return pa.table({"x": x, "k": pa.array(rng.integers(0, 9, n), pa.int32()),
                     "tag": pa.array([f"t{i}" for i in range(n)]), "flag": pa.array(rng.random(n) > 0.5)})


def _assert_numpy(summary: RunningStats, values: np.ndarray) -> None:
    """The summary equals numpy's float64 two-pass computation over `values` (NaN: missing)."""
    values = np.asarray(values, np.float64).ravel()
    kept = values[~np.isnan(values)]
    assert int(summary.count) == kept.size and int(summary.nan_count) == values.size - kept.size
    np.testing.assert_allclose(summary.mean, kept.mean(), rtol=RTOL)
    np.testing.assert_allclose(summary.m2, ((kept - kept.mean()) ** 2).sum(), rtol=1e-10)
    assert float(summary.min) == kept.min() and float(summary.max) == kept.max()


def _assert_table(catalog: Catalog, name: str, version: int | None = None,
                  numeric: tuple[str, ...] = ("flag", "k", "x")) -> None:
    stats = catalog.stats(name, version=version)
    data = catalog.read_table(name, version=version)
    assert sorted(stats) == sorted(numeric)  # numeric columns only: text and list columns have none
    for column in stats:
        _assert_numpy(stats[column], data.column(column).cast(pa.float64()).to_numpy(zero_copy_only=False))


def test_parts_of_one_layout_are_stored_stacked_and_read_back_as_they_were() -> None:
    from shoal.commit_stats import CommitStats

    rng = np.random.default_rng(4)
    months = {f"1990-{m:02d}": {"sst": RunningStats.from_values(rng.normal(size=50), axis=None),
                                "bands": RunningStats.from_values(rng.normal(size=(9, 3)), axis=0)}
              for m in range(1, 13)}
    stored = json.loads(json.dumps(CommitStats("replace", months).to_dict()))
    assert stored["keys"] == list(months) and set(stored["stacked"]) == {"sst", "bands"}
    assert stored["stacked"]["bands"]["shape"] == [12, 3]
    back = CommitStats.from_dict(stored)
    assert list(back.parts) == list(months) and all(back.parts[k][n] == months[k][n] for k in months for n in months[k])


def test_a_commit_stored_one_dict_per_part_still_reads() -> None:
    from shoal.commit_stats import CommitStats

    one = {"x": RunningStats.from_values(np.arange(5.0), axis=None)}
    other = {"x": RunningStats.from_values(np.arange(3.0), axis=None),
             "y": RunningStats.from_values(np.ones(2), axis=None)}
    stored = json.loads(json.dumps(CommitStats("append", {"a": one, "b": other}).to_dict()))  # two layouts: per part
    assert set(stored["parts"]) == {"a", "b"}
    assert CommitStats.from_dict(stored).parts["b"]["y"] == other["y"]


def test_a_table_version_holds_the_statistics_numpy_computes_over_its_rows(catalog: Catalog) -> None:
    catalog.write_table("t", _rows(0, 1000), provenance=Provenance())
    _assert_table(catalog, "t")


def test_an_append_merges_exactly_and_an_overwrite_replaces(catalog: Catalog) -> None:
    first = catalog.write_table("t", _rows(0, 500), provenance=Provenance())
    appended = catalog.write_table("t", _rows(1, 300), provenance=Provenance())
    _assert_table(catalog, "t", appended)
    # statistics of versions merge exactly: the appended version is the first merged with what the append wrote
    added = RunningStats.from_values(_rows(1, 300).column("x"), axis=None)
    assert catalog.stats("t", version=appended)["x"] == catalog.stats("t", version=first)["x"].merge(added)
    replaced = catalog.write_table("t", _rows(2, 50), mode="overwrite", provenance=Provenance())
    _assert_table(catalog, "t", replaced)
    _assert_table(catalog, "t", appended)  # an older version still says what it held


def test_a_replace_where_replaces_the_rows_its_predicate_selects(catalog: Catalog) -> None:
    def model(version: int, seed: int) -> pa.Table:
        rows = _rows(seed, 100)
        return rows.append_column("model_version", pa.array([version] * rows.num_rows, pa.int64()))

    for version, seed in ((1, 0), (2, 1), (1, 2)):  # model 1's rows are written again
        catalog.write_table("p", model(version, seed), mode="overwrite", predicate=f"model_version = {version}",
                            provenance=Provenance())
    stats = catalog.stats("p")
    data = catalog.read_table("p")
    assert data.num_rows == 200
    _assert_numpy(stats["x"], data.column("x").to_numpy())


def test_a_streamed_write_stores_the_statistics_of_all_its_files(catalog: Catalog) -> None:
    rows = _rows(3, 4000)
    version = catalog.write_streamed("s", rows.to_batches(max_chunksize=500), schema=rows.schema,
                                     provenance=Provenance, file_bytes=8 << 10)
    assert len(list(Path(catalog.uri("table", "s")).glob("*.parquet"))) > 1
    _assert_table(catalog, "s", version)


def test_a_commit_without_statistics_is_named_and_an_overwrite_makes_them_known_again(catalog: Catalog) -> None:
    from deltalake import write_deltalake

    catalog.write_table("t", _rows(0, 10), provenance=Provenance())
    write_deltalake(catalog.uri("table", "t"), _rows(1, 10), mode="append")  # another tool's commit
    with pytest.raises(CatalogError, match=r"table 't' version 1: version 1 has no statistics"):
        catalog.stats("t")
    catalog.write_table("t", _rows(2, 10), mode="overwrite", provenance=Provenance())
    _assert_table(catalog, "t")


def test_a_whole_array_write_stores_every_real_variables_statistics(catalog: Catalog) -> None:
    values = np.random.default_rng(0).normal(20, 3, (4, 5, 6)).astype(np.float32)
    values[0, 0] = np.nan
    dataset = xr.Dataset({"sst": (("t", "y", "x"), values), "label": (("t",), np.arange(4)),
                          "name": (("t",), np.array(["a", "b", "c", "d"], dtype=object))})
    catalog.write_array("a", dataset, provenance=Provenance())
    stats = catalog.stats("a")
    assert sorted(stats) == ["label", "sst"]
    _assert_numpy(stats["sst"], values)
    _assert_numpy(stats["label"], np.arange(4))


def test_sst_statistics_follow_its_months_and_a_month_ingested_again_replaces_its_own(catalog: Catalog,
                                                                                      tmp_path: Path) -> None:
    good = sorted((SST / "good").glob("*.grb"))
    cobe_sst.ingest(catalog, good[:2])
    cobe_sst.ingest(catalog, good[2:])
    _assert_numpy(catalog.stats("sst")["sst"], catalog.open_array("sst").sst.values)
    revised = tmp_path / "revised"
    revised.mkdir()
    shutil.copy(SST / "revised" / "sst198202.grb", revised)
    cobe_sst.ingest(catalog, [revised / "sst198202.grb"])
    latest = catalog.open_array("sst").sst.values
    assert not np.array_equal(latest, catalog.open_array("sst", version=1).sst.values, equal_nan=True)
    _assert_numpy(catalog.stats("sst")["sst"], latest)
    _assert_numpy(catalog.stats("sst", version=0)["sst"], catalog.open_array("sst", version=0).sst.values)


@pytest.mark.parametrize("wrap", ["plain", "gzip"])
def test_higgs_ingest_stores_the_statistics_of_every_column_without_a_second_pass(catalog: Catalog, tmp_path: Path,
                                                                                  wrap: str) -> None:
    path = tmp_path / "HIGGS.csv"
    path.write_bytes(FIRST5.read_bytes() * 4)
    if wrap == "gzip":
        path = tmp_path / "HIGGS.csv.gz"
        path.write_bytes(gzip.compress(FIRST5.read_bytes() * 4))
    higgs.ingest(catalog, [path])
    stats, data = catalog.stats("higgs"), catalog.read_table("higgs")
    assert sorted(stats) == sorted(data.column_names)
    for column in data.column_names:
        _assert_numpy(stats[column], data.column(column).cast(pa.float64()).to_numpy())


def test_catalog_stats_prints_a_table_and_json_of_the_version_asked_for(catalog: Catalog) -> None:
    catalog.write_table("t", _rows(0, 100), provenance=Provenance())
    catalog.write_table("t", _rows(1, 100), provenance=Provenance())
    shown = shoal("catalog", "stats", "t", "--version", "0", home=Path(catalog.home))
    assert shown.returncode == 0, shown.stderr
    assert "t version 0" in shown.stdout and "85" in shown.stdout  # 100 rows, every 7th x NaN: 85 counted
    data = json.loads(shoal("catalog", "stats", "t", "--json", home=Path(catalog.home)).stdout)
    assert data["version"] == 1
    assert RunningStats.from_dict(data["stats"]["x"]) == catalog.stats("t")["x"]


@pytest.mark.parametrize("mode", ["append", "overwrite"])
def test_a_stream_into_an_existing_table_stores_the_statistics_of_its_rows(catalog: Catalog, mode: str) -> None:
    catalog.write_table("t", _rows(0, 100), provenance=Provenance())
    rows = _rows(1, 3000)
    version = catalog.write_table("t", pa.RecordBatchReader.from_batches(rows.schema, rows.to_batches(500)),
                                  mode=mode, provenance=Provenance())
    _assert_table(catalog, "t", version)
    assert catalog.read_table("t").num_rows == (3100 if mode == "append" else 3000)


def test_a_stream_that_does_not_fit_the_tables_schema_commits_nothing(catalog: Catalog) -> None:
    catalog.write_table("t", _rows(0, 10), provenance=Provenance())
    other = pa.table({"x": ["not a number"]})
    with pytest.raises(CatalogError, match="nothing was committed"):
        catalog.write_table("t", pa.RecordBatchReader.from_batches(other.schema, other.to_batches()),
                            provenance=Provenance())
    assert catalog.latest_version("t") == 0 and len(list(Path(catalog.uri("table", "t")).glob("*.parquet"))) == 1


def test_a_higgs_file_streamed_over_an_existing_table_stores_the_statistics_of_the_new_rows(catalog: Catalog,
                                                                                           tmp_path: Path) -> None:
    higgs.ingest(catalog, [HIGGS20])
    path = tmp_path / "HIGGS.csv.gz"
    path.write_bytes(gzip.compress(FIRST5.read_bytes() * 3))
    assert higgs.ingest(catalog, [path]).exit_code == 0
    assert catalog.read_table("higgs").num_rows == 15
    _assert_table(catalog, "higgs", numeric=higgs.SCHEMA.names)


@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    """Two worker processes of one thread each, for the module's writes on a cluster."""
    with cluster.connect(cluster.ClusterSpec(workers=2)) as started:
        yield started


def test_a_higgs_csv_written_in_spans_on_a_cluster_stores_the_statistics_of_all_its_rows(
        client: object, catalog: Catalog, tmp_path: Path) -> None:
    path = tmp_path / "HIGGS.csv"
    path.write_bytes(HIGGS20.read_bytes() * 5)
    assert higgs.ingest(catalog, [path], client=client).exit_code == 0
    _assert_table(catalog, "higgs", numeric=higgs.SCHEMA.names)


def test_speech_clips_written_in_shards_on_a_cluster_store_the_statistics_of_every_shard(
        client: object, catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speech_commands, "BATCH", 4)  # several shards, merged
    report = speech_commands.ingest(catalog, [SPEECH], client=client)
    assert report.exit_code == 0 and len(report.committed) > 4, report.failures
    numeric = tuple(f.name for f in speech_commands.SCHEMA if pa.types.is_integer(f.type))
    _assert_table(catalog, "speech", numeric=numeric)


def test_sst_months_written_on_a_cluster_store_the_statistics_of_every_month(client: object, catalog: Catalog) -> None:
    cobe_sst.ingest(catalog, sorted((SST / "good").glob("*.grb")), client=client)
    _assert_numpy(catalog.stats("sst")["sst"], catalog.open_array("sst").sst.values)


def test_a_lazy_array_write_summarizes_each_block_as_it_is_written_once(catalog: Catalog) -> None:
    import threading

    import dask
    import dask.array as da

    rng = np.random.default_rng(4)
    values, weights, land = rng.normal(1e3, 5, (6, 8, 10)), rng.normal(0, 1, 6), rng.random((8, 10)) > 0.7
    values[2, :4] = np.nan
    computed: list[tuple[str, tuple[int, ...]]] = []
    lock = threading.Lock()

    def counted(name: str, data: np.ndarray, chunks: tuple[int, ...]) -> da.Array:
        def block(x: np.ndarray, block_info: dict | None = None) -> np.ndarray:
            with lock:
                computed.append((name, tuple(block_info[0]["chunk-location"])))
            return x

        return da.from_array(data, chunks=chunks).map_blocks(block, dtype=data.dtype)

    dataset = xr.Dataset({"v": (("t", "y", "x"), counted("v", values, (2, 4, 10))),
                          "w": (("t",), counted("w", weights, (3,))),  # other blocks along t: slabs of 6
                          "land": (("y", "x"), counted("land", land, (8, 5))),  # without t: computed whole, once
                          "step": (("t",), np.arange(6))}, coords={"t": np.arange(6), "y": np.arange(8)})
    with dask.config.set(scheduler="threads"):  # counted here, even while this module's cluster is up
        catalog.write_array("a", dataset, encoding={"v": {"chunks": (2, 4, 10)}}, provenance=Provenance())
    assert len(computed) == len(set(computed)) == 6 + 2 + 2  # every block once: written and summarized
    stats, stored = catalog.stats("a"), catalog.open_array("a")
    assert sorted(stats) == ["land", "step", "v", "w"]
    for name, data in (("v", values), ("w", weights), ("land", land), ("step", np.arange(6))):
        _assert_numpy(stats[name], data)
        np.testing.assert_array_equal(stored[name].values, data)

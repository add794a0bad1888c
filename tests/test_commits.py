"""A dataset exists once it has a commit: what an interrupted first write leaves is not a dataset.

Reads ignore such leftovers and say so; the next write of the name removes them; nothing
that only reads creates a folder in the home.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import shoal
from shoal.catalog import Catalog
from shoal.errors import CatalogError
from shoal.lineage import Provenance

NINO = Path(__file__).parent / "data" / "nino" / "oni_small.txt"


# A first streamed write of table `shared` that hangs after three files (one per batch) are written.
KILLED_FIRST_WRITE = """
import sys, time, pathlib
import pyarrow as pa
from shoal.catalog import Catalog
from shoal.lineage import Provenance

def batches():
    for index in range(6):
        if index == 4:
            pathlib.Path(sys.argv[2]).touch()
            time.sleep(600)
        yield pa.record_batch({"x": pa.array([index] * 1000, pa.int64())})

Catalog(sys.argv[1]).write_streamed("shared", batches(), schema=pa.schema([("x", pa.int64())]),
                                    provenance=lambda: Provenance(), file_bytes=1, workers=1)
"""


def _tree(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*")) if home.exists() else []


def _leftover_table(catalog: Catalog, name: str) -> Path:
    """A table folder as a first write killed before its commit leaves it: Parquet files, no log."""
    folder = Path(catalog.uri("table", name))
    folder.mkdir(parents=True)
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1, 2, 3]}), folder / "part-00000-killed.snappy.parquet")
    return folder


def _leftover_array(catalog: Catalog, name: str) -> Path:
    """An Icechunk repository created by a first write killed before its commit: the root snapshot only."""
    import icechunk

    folder = Path(catalog.uri("array", name))
    icechunk.Repository.create(icechunk.local_filesystem_storage(str(folder)))
    return folder


def test_a_killed_first_table_write_is_ignored_by_reads_and_removed_by_the_next_write(catalog: Catalog,
                                                                                      tmp_path: Path) -> None:
    catalog.write_table("other", pa.table({"y": [1]}), provenance=Provenance())
    marker = tmp_path / "mid-write"
    victim = subprocess.Popen([sys.executable, "-c", KILLED_FIRST_WRITE, catalog.home, str(marker)])
    try:
        while not marker.exists():
            assert victim.poll() is None
    finally:
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
    folder = Path(catalog.uri("table", "shared"))
    assert any(folder.rglob("*.parquet")) and not any(folder.glob("_delta_log/*.json"))
    _leftover_table(catalog, "leftover")

    assert [info.name for info in catalog.list()] == ["other"]
    assert not catalog.exists("leftover")
    with pytest.raises(CatalogError, match=r"no dataset 'leftover' \(an interrupted first write left files; "
                                           r"they are ignored\)"):
        catalog.history("leftover")
    with pytest.raises(CatalogError, match="interrupted first write"):
        catalog.read_table("leftover")

    version = catalog.write_table("leftover", pa.table({"x": [7]}), provenance=Provenance())
    assert version == 0 and catalog.read_table("leftover").column("x").to_pylist() == [7]
    assert not list(Path(catalog.uri("table", "leftover")).glob("part-00000-killed*"))


def test_a_first_streamed_write_over_leftovers_commits_only_its_own_files(catalog: Catalog) -> None:
    _leftover_table(catalog, "streamed")
    schema = pa.schema([("x", pa.int64())])
    batches = iter([pa.record_batch({"x": pa.array([5, 6], pa.int64())})])
    assert catalog.write_streamed("streamed", batches, schema=schema, provenance=lambda: Provenance()) == 0
    assert catalog.read_table("streamed").column("x").to_pylist() == [5, 6]


def test_an_array_without_a_commit_is_not_a_dataset_and_the_next_write_replaces_it(catalog: Catalog) -> None:
    import xarray as xr

    _leftover_array(catalog, "grid")
    assert catalog.list() == [] and not catalog.exists("grid")
    with pytest.raises(CatalogError, match="interrupted first write"):
        catalog.open_array("grid")
    with pytest.raises(CatalogError, match="interrupted first write"):
        catalog.describe("grid")
    snapshot = catalog.write_array("grid", xr.Dataset({"v": (("t",), np.arange(3.0))}), provenance=Provenance())
    assert [v.snapshot for v in catalog.history("grid")] == [snapshot]
    assert [info.name for info in catalog.list()] == ["grid"]


def test_an_empty_dataset_folder_is_no_dataset(catalog: Catalog) -> None:
    Path(catalog.uri("array", "enso_features")).mkdir(parents=True)
    assert catalog.list() == []
    with pytest.raises(CatalogError, match=r"no dataset 'enso_features'; see `shoal catalog list`"):
        catalog.lineage("enso_features")


@pytest.mark.parametrize("with_data", [False, True], ids=["empty home", "home with nino34"])
def test_reads_never_create_a_folder_in_the_home(catalog: Catalog, with_data: bool) -> None:
    from shoal.datasets import oni
    from shoal.models.runs import evaluate_model
    from shoal.contract import get_task

    if with_data:
        oni.ingest(catalog, [NINO])
    home = Path(catalog.home)
    before = _tree(home)
    for task in ("enso", "higgs", "speech"):
        with pytest.raises(CatalogError):
            shoal.open_features(task, home=str(home))
        with pytest.raises(CatalogError):
            evaluate_model(catalog, get_task(task), model_version=None, device="cpu")
    for name in ("enso_features", "sst", "higgs"):
        with pytest.raises(CatalogError):
            catalog.history(name)
    catalog.list()
    assert _tree(home) == before


def test_train_before_features_names_the_missing_features_and_creates_nothing(catalog: Catalog) -> None:
    from shoal.datasets import oni
    from shoal.models.runs import train_model
    from shoal.contract import get_task

    oni.ingest(catalog, [NINO])
    before = _tree(Path(catalog.home))
    task = get_task("enso")
    with pytest.raises(CatalogError, match="enso_features"):
        train_model(catalog, task, task.parse({"device": "cpu"}))
    assert not Path(catalog.uri("array", "enso_features")).exists()
    assert [p for p in _tree(Path(catalog.home)) if p not in before and not p.startswith(".locks")] == []


def test_a_first_write_that_loses_the_race_to_create_the_table_writes_again_into_it(tmp_path: Path,
                                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """On object storage no lock orders first writes: two see no table, one creates it, delta-rs refuses the
    other ("Metadata changed since last commit"). That one must land in the table the winner made."""
    import deltalake
    from deltalake.exceptions import CommitFailedError

    from shoal import tables

    uri = str(tmp_path / "shared")
    real = deltalake.write_deltalake
    raced = []

    def racing(target: object, data: pa.Table, **options: object) -> None:
        if not raced:  # the other writer creates the table first; our commit of version 0 is refused
            raced.append(True)
            real(uri, pa.table({"writer": [1]}), mode="append")
            raise CommitFailedError("Failed to commit transaction: Metadata changed since last commit.")
        real(target, data, **options)

    monkeypatch.setattr(deltalake, "write_deltalake", racing)
    version = tables.write_table(uri, "shared", pa.table({"writer": [0]}), mode="append", predicate=None,
                                 provenance=Provenance(parameters={"writer": 0}))
    assert version == 1 and sorted(deltalake.DeltaTable(uri).to_pyarrow_table().column("writer").to_pylist()) == [0, 1]

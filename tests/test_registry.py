"""The model registry: versions per name, checkpoints under the home, lineage to the features."""

from __future__ import annotations

import hashlib
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pytest

from shoal.catalog import Catalog
from shoal.errors import CatalogError
from shoal.lineage import InputVersion
from shoal.models.registry import ModelVersion, find_run, load_model_entry, register_model
from shoal.tables import CommitNotLanded


def _register(catalog: Catalog, tmp_path: Path, payload: bytes, feature_version: str = "SNAP1") -> ModelVersion:
    checkpoint = tmp_path / f"best-{payload.decode()}.pt"
    checkpoint.write_bytes(payload)
    return register_model(catalog, name="enso_convlstm", architecture="convlstm", config={"hidden": [16, 16, 32]},
                          feature=InputVersion("enso_features", "array", feature_version),
                          metrics={"rmse_c": 0.5}, checkpoint=checkpoint, run_id=f"run-{payload.decode()}")


def test_versions_count_from_zero_per_model_and_checkpoints_live_under_the_home(catalog: Catalog, tmp_path: Path) -> None:
    first = _register(catalog, tmp_path, b"a")
    second = _register(catalog, tmp_path, b"b", feature_version="SNAP2")
    assert (first.version, second.version) == (0, 1)
    assert second.checkpoint == Path(catalog.home, "models", "enso_convlstm", "1.pt") and second.checkpoint_relative == "models/enso_convlstm/1.pt"
    assert second.checkpoint.read_bytes() == b"b" and first.checkpoint.read_bytes() == b"a"
    assert second.checkpoint_sha256 == hashlib.sha256(b"b").hexdigest()
    assert sorted(p.name for p in Path(catalog.home, "models", "enso_convlstm").iterdir()) == ["0.pt", "1.pt"]


def test_load_returns_the_latest_by_default_or_the_version_asked(catalog: Catalog, tmp_path: Path) -> None:
    _register(catalog, tmp_path, b"a")
    _register(catalog, tmp_path, b"b", feature_version="SNAP2")
    latest = load_model_entry(catalog, "enso_convlstm")
    assert latest.version == 1 and latest.run_id == "run-b" and latest.metrics == {"rmse_c": 0.5}
    assert latest.feature == InputVersion("enso_features", "array", "SNAP2") and latest.config == {"hidden": [16, 16, 32]}
    assert load_model_entry(catalog, "enso_convlstm", 0).run_id == "run-a"
    assert load_model_entry(catalog, "enso_convlstm", 0).checkpoint.read_bytes() == b"a"


def test_the_registry_commit_records_the_feature_version_as_its_input(catalog: Catalog, tmp_path: Path) -> None:
    _register(catalog, tmp_path, b"a")
    _register(catalog, tmp_path, b"b", feature_version="SNAP2")
    assert catalog.lineage("model_registry", version=0).inputs == (InputVersion("enso_features", "array", "SNAP1"),)
    lineage = catalog.lineage("model_registry")
    assert lineage.inputs == (InputVersion("enso_features", "array", "SNAP2"),)
    assert lineage.parameters["model"] == "enso_convlstm" and lineage.parameters["version"] == 1
    rows = pl.read_delta(str(Path(catalog.home, "tables", "model_registry"))).sort("version")  # readable without shoal
    assert rows["version"].to_list() == [0, 1] and rows["checkpoint"].to_list()[1] == "models/enso_convlstm/1.pt"


def test_concurrent_registrations_get_distinct_versions(catalog: Catalog, tmp_path: Path) -> None:
    with ThreadPoolExecutor(4) as pool:
        versions = sorted(pool.map(lambda p: _register(catalog, tmp_path, p).version, [b"a", b"b", b"c", b"d"]))
    assert versions == [0, 1, 2, 3]
    stored = {load_model_entry(catalog, "enso_convlstm", v).checkpoint.read_bytes() for v in versions}
    assert stored == {b"a", b"b", b"c", b"d"}


def test_a_missing_model_or_version_is_a_catalog_error_with_the_fix(catalog: Catalog, tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"no version yet .*`shoal train enso` \(or `shoal run enso`\)"):
        load_model_entry(catalog, "enso_convlstm")  # the hint names the task that trains this model
    _register(catalog, tmp_path, b"a")
    with pytest.raises(CatalogError, match=r"no version 7 .*\(registered: 0\)"):
        load_model_entry(catalog, "enso_convlstm", 7)
    with pytest.raises(CatalogError, match="no version yet"):
        load_model_entry(catalog, "other_model")


def test_bad_inputs_are_refused_before_anything_is_written(catalog: Catalog, tmp_path: Path) -> None:
    feature = InputVersion("enso_features", "array", "SNAP1")
    with pytest.raises(CatalogError, match="does not exist"):
        register_model(catalog, name="m", architecture="a", config={}, feature=feature, metrics={},
                       checkpoint=tmp_path / "missing.pt", run_id="r")
    (tmp_path / "c.pt").write_bytes(b"c")
    with pytest.raises(CatalogError, match="invalid dataset name"):
        register_model(catalog, name="../up", architecture="a", config={}, feature=feature, metrics={},
                       checkpoint=tmp_path / "c.pt", run_id="r")
    with pytest.raises(CatalogError, match="JSON-serializable"):
        register_model(catalog, name="m", architecture="a", config={"x": object()}, feature=feature, metrics={},
                       checkpoint=tmp_path / "c.pt", run_id="r")
    assert not catalog.exists("model_registry") and not Path(catalog.home, "models").exists()


def test_a_row_that_landed_keeps_its_checkpoint_even_when_its_version_cannot_be_read_back(
    catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shoal import tables

    def broken(*args: object) -> int:
        raise OSError("the log cannot be read")

    monkeypatch.setattr(tables, "_committed_version", broken)
    with pytest.raises(CatalogError, match="the write landed"):
        _register(catalog, tmp_path, b"a")
    monkeypatch.undo()
    entry = load_model_entry(catalog, "enso_convlstm")  # the row is there, and so is its file
    assert entry.version == 0 and entry.checkpoint.read_bytes() == b"a"


def test_a_commit_that_did_not_land_leaves_no_checkpoint(
    catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import deltalake
    from deltalake.exceptions import DeltaError

    def failing(*args: object, **kwargs: object) -> None:
        raise DeltaError("no space left on device")

    monkeypatch.setattr(deltalake, "write_deltalake", failing)
    with pytest.raises(CommitNotLanded, match="nothing was committed"):
        _register(catalog, tmp_path, b"a")
    assert not Path(catalog.home, "models", "enso_convlstm", "0.pt").exists()


def test_find_run_returns_the_newest_version_a_run_registered(catalog: Catalog, tmp_path: Path) -> None:
    assert find_run(catalog, "enso_convlstm", "run-a") is None  # no registry yet
    _register(catalog, tmp_path, b"a")
    _register(catalog, tmp_path, b"b")
    _register(catalog, tmp_path, b"a", feature_version="SNAP2")  # run-a registered again
    found = find_run(catalog, "enso_convlstm", "run-a")
    assert found is not None and (found.version, found.run_id, found.feature_version) == (2, "run-a", "SNAP2")
    assert found.checkpoint.read_bytes() == b"a" and found.registry_version == 2
    assert find_run(catalog, "enso_convlstm", "run-b").version == 1
    assert find_run(catalog, "enso_convlstm", "run-z") is None
    assert find_run(catalog, "other_model", "run-a") is None


def test_the_registry_does_not_import_torch() -> None:
    import subprocess

    code = "import sys, shoal.models.registry; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0

"""The model registry: versions per name, checkpoints under the home, lineage to the features."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.catalog import Catalog
from shoal.errors import CatalogError
from shoal.lineage import InputVersion
from shoal.models.registry import load_model_entry, register_model


def _register(catalog: Catalog, tmp_path: Path, payload: bytes, feature_version: str = "SNAP1"):  # noqa: ANN202
    checkpoint = tmp_path / f"best-{payload.decode()}.pt"
    checkpoint.write_bytes(payload)
    return register_model(catalog, name="enso_convlstm", architecture="convlstm", config={"hidden": [16, 16, 32]},
                          feature=InputVersion("enso_features", "array", feature_version),
                          metrics={"rmse_c": 0.5}, checkpoint=checkpoint, run_id=f"run-{payload.decode()}")


def test_versions_count_from_zero_per_model_and_checkpoints_live_under_the_home(catalog: Catalog, tmp_path: Path) -> None:
    first = _register(catalog, tmp_path, b"a")
    second = _register(catalog, tmp_path, b"b", feature_version="SNAP2")
    assert (first.version, second.version) == (0, 1)
    assert second.checkpoint == Path(catalog.home, "models", "enso_convlstm", "1.pt")
    assert second.checkpoint.read_bytes() == b"b" and first.checkpoint.read_bytes() == b"a"
    latest = load_model_entry(catalog, "enso_convlstm")
    assert latest.version == 1 and latest.feature_version == "SNAP2" and latest.metrics == {"rmse_c": 0.5}
    assert load_model_entry(catalog, "enso_convlstm", 0).run_id == "run-a"
    assert catalog.lineage("model_registry").inputs == (InputVersion("enso_features", "array", "SNAP2"),)


def test_a_missing_model_or_version_is_a_catalog_error_with_the_fix(catalog: Catalog, tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no version yet .*shoal run enso"):
        load_model_entry(catalog, "enso_convlstm")
    _register(catalog, tmp_path, b"a")
    with pytest.raises(CatalogError, match=r"no version 7 \(registered: 0\)"):
        load_model_entry(catalog, "enso_convlstm", 7)

"""The model registry: the Delta table `model_registry` plus checkpoints under the home.

One row per trained model version: name, version (0, 1, ... per name), architecture,
config and metrics (JSON), the feature dataset and version it was trained on, the
checkpoint path (relative to the home: `models/<name>/<version>.pt`), run id, created_at.
Readable without shoal like every table: `pl.read_delta("<home>/tables/model_registry")`.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from shoal.errors import CatalogError
from shoal.lineage import InputVersion, Provenance
from shoal.settings import is_url

if TYPE_CHECKING:
    from shoal.catalog import Catalog

REGISTRY = "model_registry"
SCHEMA = pa.schema([
    ("name", pa.string()), ("version", pa.int64()), ("architecture", pa.string()), ("config", pa.string()),
    ("feature_dataset", pa.string()), ("feature_version", pa.string()), ("metrics", pa.string()),
    ("checkpoint", pa.string()), ("run_id", pa.string()), ("created_at", pa.string()),
])


@dataclass(frozen=True)
class ModelVersion:
    """A registered model version; `checkpoint` is absolute, `registry_version` the table's."""

    name: str
    version: int
    architecture: str
    config: Mapping[str, Any]
    feature_dataset: str
    feature_version: str
    metrics: Mapping[str, Any]
    checkpoint: Path
    run_id: str
    created_at: str
    registry_version: int


def _rows(catalog: Catalog, name: str) -> list[dict[str, Any]]:
    if not catalog.exists(REGISTRY):
        return []
    table = catalog.scan_table(REGISTRY)
    import polars as pl

    return table.filter(pl.col("name") == name).sort("version").collect().to_dicts()


def register_model(
    catalog: Catalog,
    *,
    name: str,
    architecture: str,
    config: Mapping[str, Any],
    feature: InputVersion,
    metrics: Mapping[str, Any],
    checkpoint: Path,
    run_id: str,
) -> ModelVersion:
    """Copy the checkpoint under the home and append its registry row (one commit)."""
    if is_url(catalog.home):
        raise CatalogError("the model registry keeps checkpoints on a local home for now; use a local --home")
    rows = _rows(catalog, name)
    version = rows[-1]["version"] + 1 if rows else 0
    relative = Path("models", name, f"{version}.pt")
    target = Path(catalog.home, relative)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint, target)
    row = {
        "name": name, "version": version, "architecture": architecture, "config": json.dumps(config),
        "feature_dataset": feature.name, "feature_version": str(feature.version),
        "metrics": json.dumps(metrics), "checkpoint": str(relative), "run_id": run_id,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
    }
    registry_version = catalog.write_table(
        REGISTRY,
        pa.Table.from_pylist([row], schema=SCHEMA),
        provenance=Provenance(inputs=(feature,), parameters={"model": name, "version": version, "run_id": run_id},
                              message=f"register {name} v{version}"),
    )
    return _entry(catalog, row, registry_version)


def _entry(catalog: Catalog, row: Mapping[str, Any], registry_version: int) -> ModelVersion:
    return ModelVersion(
        name=row["name"], version=row["version"], architecture=row["architecture"], config=json.loads(row["config"]),
        feature_dataset=row["feature_dataset"], feature_version=row["feature_version"],
        metrics=json.loads(row["metrics"]), checkpoint=Path(catalog.home, row["checkpoint"]), run_id=row["run_id"],
        created_at=row["created_at"], registry_version=registry_version,
    )


def load_model_entry(catalog: Catalog, name: str, version: int | None = None) -> ModelVersion:
    """A registered version of model `name` (default: the latest)."""
    rows = _rows(catalog, name)
    chosen = [r for r in rows if version is None or r["version"] == version]
    if not chosen:
        known = ", ".join(str(r["version"]) for r in rows) or "none"
        raise CatalogError(f"model {name!r} has no version {version if version is not None else 'yet'} "
                           f"(registered: {known}); train one with `shoal run enso`")
    return _entry(catalog, chosen[-1], catalog.latest_version(REGISTRY))

"""The model registry: the Delta table `model_registry` plus checkpoints under the home.

One row per trained model version: name, version (0, 1, ... per name), architecture,
config and metrics (JSON), the feature dataset, kind and version it was trained on, the
checkpoint path relative to the home (`models/<name>/<version>.pt`) and its sha256, run id,
created_at. Each registration is one commit whose lineage names the feature version.
Readable without shoal like every table: `pl.read_delta("<home>/tables/model_registry")`.

Registrations of one home are serialized by the registry table's lock
(`<home>/.locks/model_registry.lock`), so two concurrent runs never get the same version
number. Checkpoints are copied atomically before the row is committed: a row never points
at a missing or partial file.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from shoal.catalog import validate_name
from shoal.errors import CatalogError
from shoal.files import atomic_write, copy_atomic
from shoal.lineage import InputVersion, Provenance
from shoal.settings import is_url
from shoal.tables import CommitNotLanded

if TYPE_CHECKING:
    from shoal.catalog import Catalog

REGISTRY = "model_registry"
SCHEMA = pa.schema([
    ("name", pa.string()), ("version", pa.int64()), ("architecture", pa.string()), ("config", pa.string()),
    ("feature_dataset", pa.string()), ("feature_kind", pa.string()), ("feature_version", pa.string()),
    ("metrics", pa.string()), ("checkpoint", pa.string()), ("checkpoint_sha256", pa.string()), ("run_id", pa.string()),
    ("created_at", pa.string()),
])


@dataclass(frozen=True)
class ModelVersion:
    """A registered model version.

    Attributes:
        name, version: the model and its version (0, 1, ... per name).
        architecture: e.g. "convlstm".
        config: what it was built and trained with (parsed JSON).
        feature_dataset, feature_kind, feature_version: the feature version it was trained on.
        metrics: its evaluation (parsed JSON); `best_epoch_number` counts from 1, as every command shows it.
        checkpoint: the absolute path of the checkpoint file.
        run_id: the training run.
        created_at: ISO 8601, UTC.
        registry_version: a `model_registry` table version that holds this row (for lineage).
        checkpoint_relative: the checkpoint path relative to the home, as stored.
        checkpoint_sha256: the checkpoint's sha256.
    """

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
    feature_kind: str = "array"
    checkpoint_relative: str = ""
    checkpoint_sha256: str = ""

    @property
    def feature(self) -> InputVersion:
        """The feature version as a lineage input."""
        return InputVersion(self.feature_dataset, self.feature_kind, self.feature_version)


def _rows(catalog: Catalog, name: str) -> tuple[list[dict[str, Any]], int | None]:
    """The registry rows of model `name`, by version, and the registry version they were read at."""
    import polars as pl

    if not catalog.exists(REGISTRY):
        return [], None
    # Read one pinned version, so the version reported is one that holds every row returned.
    at = catalog.latest_version(REGISTRY)
    rows = catalog.scan_table(REGISTRY, version=at).filter(pl.col("name") == name).sort("version").collect()
    return rows.to_dicts(), at


def _json(value: Mapping[str, Any], what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError) as error:
        raise CatalogError(f"the model's {what} must be JSON-serializable (plain numbers, strings, lists, dicts): {error}") from error


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
    """Copy the checkpoint under the home (a local file, or an object) and append its registry row (one commit).

    Args:
        catalog: the catalog (a local or an object-store home).
        name: the model, a dataset-style name (`[a-z][a-z0-9_]*`).
        architecture: e.g. "convlstm".
        config: what the model was built and trained with (JSON-serializable).
        feature: the feature version it was trained on; recorded as the commit's input.
        metrics: its evaluation (JSON-serializable).
        checkpoint: the file to register (e.g. the run's `best.pt`).
        run_id: the training run.

    Returns:
        The new version: 0 for a new name, else 1 + the highest registered.

    Raises:
        CatalogError: a bad name, a missing checkpoint, non-JSON config/metrics.
    """
    validate_name(name)
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CatalogError(f"checkpoint {checkpoint} does not exist; pass the run's best.pt (TrainResult.best_checkpoint)")
    config_json, metrics_json = _json(config, "config"), _json(metrics, "metrics")
    if is_url(catalog.home):
        # No lock on object storage: the version is claimed by creating its checkpoint object
        # (a conditional put, If-None-Match); a version taken meanwhile is skipped.
        rows, _ = _rows(catalog, name)
        version = max(row["version"] for row in rows) + 1 if rows else 0
        while (sha256 := _put_new(catalog.home, f"models/{name}/{version}.pt", checkpoint)) is None:
            version += 1
        return _append(catalog, name, version, sha256, architecture, config_json, metrics_json, feature, run_id)
    # Reading the highest version and appending the next must not interleave: under the
    # registry table's own lock, which its write takes again (re-entrant in this thread).
    with catalog.lock(REGISTRY):
        rows, _ = _rows(catalog, name)
        version = max(row["version"] for row in rows) + 1 if rows else 0
        target = Path(catalog.home) / f"models/{name}/{version}.pt"
        target.parent.mkdir(parents=True, exist_ok=True)
        sha256 = copy_atomic(checkpoint, target)  # overwrites a leftover of a run that died before its commit
        try:
            return _append(catalog, name, version, sha256, architecture, config_json, metrics_json, feature, run_id)
        except CommitNotLanded:  # nothing was committed: no row, so no file
            target.unlink(missing_ok=True)
            raise
        # Any other error may come after the row landed: the file stays, a row may point at it.


def _put_new(home: str, relative: str, checkpoint: Path) -> str | None:
    """Upload `checkpoint` as `home/relative` unless that object exists (then None); return its sha256."""
    import hashlib

    import obstore
    from obstore.exceptions import AlreadyExistsError
    from obstore.store import from_url

    data = checkpoint.read_bytes()
    try:
        obstore.put(from_url(home), relative, data, mode="create")
    except AlreadyExistsError:
        return None
    return hashlib.sha256(data).hexdigest()


def _append(catalog: Catalog, name: str, version: int, sha256: str, architecture: str, config_json: str,
            metrics_json: str, feature: InputVersion, run_id: str) -> ModelVersion:
    relative = f"models/{name}/{version}.pt"
    row = {
        "name": name, "version": version, "architecture": architecture, "config": config_json,
        "feature_dataset": feature.name, "feature_kind": feature.kind, "feature_version": str(feature.version),
        "metrics": metrics_json, "checkpoint": relative, "checkpoint_sha256": sha256, "run_id": run_id,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
    }
    registry_version = catalog.write_table(
        REGISTRY,
        pa.Table.from_pylist([row], schema=SCHEMA),
        mode="append",
        provenance=Provenance(
            inputs=(feature,),
            parameters={"model": name, "version": version, "architecture": architecture, "run_id": run_id,
                        "checkpoint": relative, "checkpoint_sha256": sha256},
            message=f"register {name} v{version}",
        ),
    )
    return _entry(catalog, row, registry_version)


def checkpoint_file(catalog: Catalog, entry: ModelVersion) -> Path:
    """The registered checkpoint as a local file: under a local home, else fetched once into the work folder.

    Raises:
        CatalogError: the fetched object's sha256 is not the registered one.
    """
    if entry.checkpoint.is_file() or not is_url(catalog.home):
        return entry.checkpoint
    import hashlib

    import obstore
    from obstore.store import from_url

    data = bytes(obstore.get(from_url(catalog.home), entry.checkpoint_relative).bytes())
    if hashlib.sha256(data).hexdigest() != entry.checkpoint_sha256:
        raise CatalogError(f"{catalog.home}/{entry.checkpoint_relative}: sha256 is not the registered "
                           f"{entry.checkpoint_sha256}; the object was changed: retrain (`shoal train --retrain`)")
    entry.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(entry.checkpoint) as file:
        file.write(data)
    return entry.checkpoint


def _metrics(stored: str) -> dict[str, Any]:
    """A row's metrics, the best epoch numbered as people count (`best_epoch_number`: 1 is the first epoch).

    Rows registered before that field held `best_epoch`, counted from 0: read as the same 1-based field, so
    that no command shows the old number beside the new.
    """
    metrics = json.loads(stored)
    if "best_epoch" in metrics and "best_epoch_number" not in metrics:
        return {("best_epoch_number" if key == "best_epoch" else key): value + 1 if key == "best_epoch" else value
                for key, value in metrics.items()}
    return metrics


def _entry(catalog: Catalog, row: Mapping[str, Any], registry_version: int) -> ModelVersion:
    return ModelVersion(
        name=row["name"], version=row["version"], architecture=row["architecture"], config=json.loads(row["config"]),
        feature_dataset=row["feature_dataset"], feature_kind=row["feature_kind"], feature_version=row["feature_version"],
        metrics=_metrics(row["metrics"]), checkpoint=Path(catalog.local, row["checkpoint"]),
        checkpoint_relative=row["checkpoint"], checkpoint_sha256=row["checkpoint_sha256"], run_id=row["run_id"],
        created_at=row["created_at"], registry_version=registry_version,
    )


def load_model_entry(catalog: Catalog, name: str, version: int | None = None) -> ModelVersion:
    """A registered version of model `name` (default: the latest).

    Raises:
        CatalogError: no such model or version; the message lists what is registered.
    """
    validate_name(name)
    rows, at = _rows(catalog, name)
    chosen = [row for row in rows if version is None or row["version"] == version]
    if not chosen:
        from shoal.contract import tasks

        known = ", ".join(str(row["version"]) for row in rows) or "none"
        task = next((one.name for one in tasks().values() if one.model_name == name), "TASK")
        raise CatalogError(
            f"model {name!r} has no version {version if version is not None else 'yet'} in {catalog.home} "
            f"(registered: {known}); train one with `shoal train {task}` (or `shoal run {task}`)"
        )
    return _entry(catalog, chosen[-1], at)


def find_run(catalog: Catalog, name: str, run_id: str) -> ModelVersion | None:
    """The registered version of model `name` trained by run `run_id`, or None.

    For reusing a finished training run instead of training it again.

    Args:
        catalog: the catalog.
        name: the model.
        run_id: the training run (`ModelVersion.run_id`).

    Returns:
        The newest such version when the run was registered more than once, else the one
        version, else None.
    """
    validate_name(name)
    rows, at = _rows(catalog, name)
    found = [row for row in rows if row["run_id"] == run_id]
    return _entry(catalog, found[-1], at) if found else None


def model_versions(catalog: Catalog, name: str | None = None) -> list[ModelVersion]:
    """Every registered version (of model `name`, or of all models), by name then version."""
    import polars as pl

    if not catalog.exists(REGISTRY):
        return []
    at = catalog.latest_version(REGISTRY)
    rows = catalog.scan_table(REGISTRY, version=at)
    if name is not None:
        rows = rows.filter(pl.col("name") == name)
    return [_entry(catalog, row, at) for row in rows.sort("name", "version").collect().to_dicts()]

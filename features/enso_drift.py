"""Drift of the ENSO features: new SST months against the training months of a feature version (`shoal drift enso`).

The reference is the `sst` version the feature version names in its lineage, cropped as it was,
restricted to its training months (before `valid_start`); the new data is every SST month of the
newest `sst` from `--since` (default: `valid_start`). `shoal.drift.grid_findings` compares their
anomalies per Niño box and 10°x10° tile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from shoal.drift import DriftReport, Thresholds, feature_lineage, grid_findings, ordered, register_drift
from shoal.errors import CatalogError
from shoal.features.enso import DATASET, EnsoFeatureConfig

if TYPE_CHECKING:
    import xarray as xr

    from shoal.catalog import Catalog


@register_drift("enso")
def enso_drift(catalog: Catalog, *, version: int | str | None = None, since: str | None = None,
               thresholds: Thresholds = Thresholds()) -> DriftReport:
    """The SST months from `since` (default: the first month after training) against an ENSO feature version's training months.

    Args:
        version: the `enso_features` version (default: the newest).
        since: 'YYYY-MM', the first month of new data; it must lie after the training period.

    Raises:
        CatalogError: no feature version, `since` inside the training period, or no SST month from `since`.
    """
    from shoal.arrays import resolve

    lineage = feature_lineage(catalog, DATASET, version, "enso")
    config = EnsoFeatureConfig(**lineage.parameters["config"])
    (sst_input,) = [item for item in lineage.inputs if item.name == "sst"]
    start = np.datetime64(since or config.valid_start, "M")
    if start < np.datetime64(config.valid_start, "M"):
        raise CatalogError(f"--since {start} is inside the training period of {DATASET} (before {config.valid_start}); "
                           f"pass a month from {config.valid_start}")
    reference = catalog.open_array("sst", version=sst_input.version)
    latest = catalog.open_array("sst")
    found = resolve(catalog.uri("array", DATASET), DATASET, version)

    def grid(dataset: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
        sst = dataset.sst.sel(lat=slice(config.lat_min, config.lat_max))
        present = dataset.source_sha256.values.any(axis=1)
        return sst.values.astype(np.float64), present

    ref_values, ref_present = grid(reference)
    new_values, new_present = grid(latest)
    ref_months = reference.time.values.astype("datetime64[M]")
    new_months = latest.time.values.astype("datetime64[M]")
    train = ref_present & (ref_months < np.datetime64(config.valid_start, "M"))
    fresh = new_present & (new_months >= start)
    if not fresh.any():
        raise CatalogError(f"no SST month from {start} in the newest `sst`; ingest newer months "
                           "(`shoal ingest sst FOLDER`)")
    values = np.concatenate([ref_values[train], new_values[fresh]])
    months = np.concatenate([ref_months[train], new_months[fresh]])
    is_train = np.arange(len(months)) < int(train.sum())
    lat = latest.sst.sel(lat=slice(config.lat_min, config.lat_max)).lat.values
    findings = grid_findings("sst", values, months, is_train, ~is_train, lat, latest.lon.values, thresholds)
    fresh_months = new_months[fresh]
    return DriftReport(
        task="enso", features=f"{DATASET} version {found.version}",
        reference=f"{int(train.sum())} training SST months {ref_months[train].min()}..{ref_months[train].max()}",
        new=f"{len(fresh_months)} SST months {fresh_months.min()}..{fresh_months.max()}",
        thresholds=thresholds, findings=ordered(findings))

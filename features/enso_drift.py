"""Drift of the ENSO features: new SST months against the training months of a feature version (`shoal drift enso`).

The reference is the `sst` version the feature version names in its lineage, cropped as it was,
restricted to its training months (before `valid_start`); the new data is every SST month of the
newest `sst` from `--since` (default: `valid_start`). `shoal.drift.grid_findings` compares their
anomalies per Niño box and 10°x10° tile.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain
from typing import TYPE_CHECKING

import numpy as np

from shoal.drift import DriftReport, Thresholds, feature_lineage, grid_findings, ordered, register_drift
from shoal.errors import CatalogError
from shoal.features.enso import DATASET, EnsoFeatureConfig

SLICE_MONTHS = 120  # months read at a time: 20 MB of the 115 x 360 crop in float32

if TYPE_CHECKING:
    import xarray as xr

    from shoal.catalog import Catalog


@register_drift("enso")
def enso_drift(catalog: Catalog, *, version: int | str | None = None, since: str | None = None,
               thresholds: Thresholds = Thresholds()) -> DriftReport:
    """The SST months from `since` (default: the first month after training) against the training months.

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

    def months(dataset: xr.Dataset, first: np.datetime64 | None, end: np.datetime64 | None) -> np.ndarray:
        """Indices of the months that hold SST in [first, end)."""
        month = dataset.time.values.astype("datetime64[M]")
        present = dataset.source_sha256.values.any(axis=1)
        inside = (month >= first if first is not None else True) & (month < end if end is not None else True)
        return np.nonzero(present & inside)[0]

    def grids(dataset: xr.Dataset, index: np.ndarray) -> Iterator[np.ndarray]:
        """(t, H, W) slices of those months, cropped as the features were: only they are read, a slice at a time."""
        for first in range(0, len(index), SLICE_MONTHS):
            yield dataset.sst.isel(time=index[first:first + SLICE_MONTHS]).sel(
                lat=slice(config.lat_min, config.lat_max)).values

    train = months(reference, None, np.datetime64(config.valid_start, "M"))
    fresh = months(latest, start, None)
    if not len(fresh):
        raise CatalogError(f"no SST month from {start} in the newest `sst`; ingest newer months "
                           "(`shoal ingest sst FOLDER`)")
    ref_months = reference.time.values[train].astype("datetime64[M]")
    new_months = latest.time.values[fresh].astype("datetime64[M]")
    months_all = np.concatenate([ref_months, new_months])
    is_train = np.arange(len(months_all)) < len(train)
    lat = latest.sst.sel(lat=slice(config.lat_min, config.lat_max)).lat.values
    findings = grid_findings("sst", lambda: chain(grids(reference, train), grids(latest, fresh)), months_all, is_train,
                             ~is_train, lat, latest.lon.values, thresholds)
    return DriftReport(
        task="enso", features=f"{DATASET} version {found.version}",
        reference=f"{len(train)} training SST months {ref_months.min()}..{ref_months.max()}",
        new=f"{len(new_months)} SST months {new_months.min()}..{new_months.max()}",
        thresholds=thresholds, findings=ordered(findings))

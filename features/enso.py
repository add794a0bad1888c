"""ENSO features: normalized SST windows and the next month's Niño 3.4 index and phase.

As in the analysis (Keydana 2021): crop the SST grids to 55°S-60°N (115 x 360 at 1°),
normalize with one mean and std fitted on the training period only (default: months before
1990-01), then NaN -> 0 with a stored land mask; the target index is normalized with its
own training statistics; phase codes E / L / N. A sample is 6 consecutive months in and the
next month's (SST grid, index, phase) out; only windows whose 7 months are all present.

A feature version is the Icechunk array `enso_features`, content-addressed: building with the
same input versions and parameters returns the existing version instead of a new one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from shoal.errors import CatalogError
from shoal.lineage import InputVersion, Provenance
from shoal.stats import RunningStats

if TYPE_CHECKING:
    import torch
    import xarray as xr

    from shoal.catalog import Catalog

DATASET = "enso_features"
PHASES = ("E", "L", "N")  # class 0, 1, 2
FORMAT = 1  # bump when the feature computation changes: it is part of the content key


@dataclass(frozen=True)
class EnsoFeatureConfig:
    """What a feature version is computed with.

    Attributes:
        lat_min, lat_max: the crop (cell centres inside it are kept): 55°S-60°N -> 115 rows.
        train_end: the first month of the validation period; training is every month before.
        coarsen: average blocks of coarsen x coarsen cells (1 = the analysis' 1° grid).
        window: months in one sample.
    """

    lat_min: float = -55.0
    lat_max: float = 60.0
    train_end: str = "1990-01"
    coarsen: int = 1
    window: int = 6


@dataclass(frozen=True)
class FeatureBuild:
    """The outcome of `build`."""

    version: int
    snapshot: str
    reused: bool


def content_key(config: EnsoFeatureConfig, sst: InputVersion, nino34: InputVersion) -> str:
    """sha256 of everything a feature version depends on."""
    payload = {"format": FORMAT, "config": asdict(config), "sst": asdict(sst), "nino34": asdict(nino34)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _inputs(catalog: Catalog) -> tuple[InputVersion, InputVersion]:
    from shoal.arrays import resolve

    for name in ("sst", "nino34"):
        if not catalog.exists(name):
            raise CatalogError(f"ENSO features need {name!r}; run `shoal ingest {'sst' if name == 'sst' else 'oni'} ...` first")
    snapshot = resolve(catalog.uri("array", "sst"), "sst", None).snapshot
    return InputVersion("sst", "array", snapshot), InputVersion("nino34", "table", catalog.latest_version("nino34"))


def _existing(catalog: Catalog, key: str) -> FeatureBuild | None:
    if not catalog.exists(DATASET):
        return None
    for entry in catalog.history(DATASET):
        if entry.lineage is not None and entry.lineage.parameters.get("content_key") == key:
            return FeatureBuild(version=entry.version, snapshot=entry.snapshot, reused=True)
    return None


def compute(sst: xr.Dataset, nino34: dict[str, np.ndarray], config: EnsoFeatureConfig) -> tuple[xr.Dataset, dict]:
    """The feature dataset and its statistics, from the `sst` array and the `nino34` columns."""
    import xarray as xr

    grid = sst.sst.sel(lat=slice(config.lat_min, config.lat_max))
    if config.coarsen > 1:
        grid = grid.coarsen(lat=config.coarsen, lon=config.coarsen, boundary="trim").mean()
    values = grid.values  # (T, H, W) float32, NaN on land and in absent months
    months = sst.time.values.astype("datetime64[M]")
    present = sst.source_sha256.values.any(axis=1)
    train = present & (months < np.datetime64(config.train_end, "M"))
    if not train.any():
        raise CatalogError(f"no SST month before {config.train_end} to fit the statistics on; ingest earlier months")
    sst_stats = RunningStats.from_values(values[train], axis=None)
    land = np.isnan(values[present]).any(axis=0)  # (H, W)
    normalized = np.nan_to_num((values - sst_stats.mean) / sst_stats.std, nan=0.0).astype(np.float32)
    normalized[:, land] = 0.0

    by_month = {m: i for i, m in enumerate(nino34["month"])}
    rows = np.array([by_month.get(m, -1) for m in months])
    index_c = np.where(rows >= 0, nino34["nino34_mean"][rows], np.nan)
    phase_text = np.where(rows >= 0, nino34["phase"][rows], None)
    phase = np.array([PHASES.index(p) if p in PHASES else -1 for p in phase_text], dtype=np.int8)
    index_stats = RunningStats.from_values(index_c[train], axis=None)
    features = xr.Dataset(
        {
            "sst": (("time", "lat", "lon"), normalized),
            "land": (("lat", "lon"), land),
            "present": (("time",), present),
            "index": (("time",), ((index_c - index_stats.mean) / index_stats.std).astype(np.float32)),
            "nino34_mean": (("time",), index_c.astype(np.float32)),
            "phase": (("time",), phase),
            "train": (("time",), months < np.datetime64(config.train_end, "M")),
        },
        coords={"time": sst.time.values, "lat": grid.lat.values, "lon": grid.lon.values},
        attrs={"phase_codes": "0 = E (El Niño), 1 = L (La Niña), 2 = N (neutral), -1 = missing"},
    )
    return features, {"sst": sst_stats.to_dict(), "index": index_stats.to_dict()}


def build(catalog: Catalog, *, config: EnsoFeatureConfig) -> FeatureBuild:
    """Build (or reuse) the feature version for the latest `sst` and `nino34`."""
    sst_input, nino_input = _inputs(catalog)
    key = content_key(config, sst_input, nino_input)
    if (found := _existing(catalog, key)) is not None:
        return found
    table = catalog.read_table("nino34", version=int(nino_input.version))
    nino34 = {
        "month": np.array(table.column("month").to_pylist(), dtype="datetime64[M]"),
        "nino34_mean": table.column("nino34_mean").to_numpy(zero_copy_only=False).astype(np.float64),
        "phase": np.array(table.column("phase").to_pylist(), dtype=object),
    }
    features, stats = compute(catalog.open_array("sst", version=sst_input.version), nino34, config)
    session = catalog.array_session(DATASET)
    h, w = features.sizes["lat"], features.sizes["lon"]
    features.to_zarr(session.store, mode="w", consolidated=False, encoding={"sst": {"chunks": (12, h, w)}})
    session.commit(Provenance(
        inputs=(sst_input, nino_input),
        parameters={"content_key": key, "config": asdict(config), "statistics": stats},
        message=f"ENSO features {h} x {w}, train before {config.train_end}",
    ))
    latest = catalog.history(DATASET)[0]
    return FeatureBuild(version=latest.version, snapshot=latest.snapshot, reused=False)


class EnsoFeatures:
    """One feature version in memory: ONE copy of the grid series, shared by every split.

    Args:
        catalog: the catalog.
        version: a feature version (number or snapshot id); default latest.
    """

    def __init__(self, catalog: Catalog, *, version: int | str | None = None) -> None:
        import torch

        from shoal.arrays import resolve

        entry = resolve(catalog.uri("array", DATASET), DATASET, version)
        self.version, self.snapshot = entry.version, entry.snapshot
        self.parameters = entry.lineage.parameters if entry.lineage else {}
        data = catalog.open_array(DATASET, version=entry.snapshot).load()
        self.months = data.time.values.astype("datetime64[M]")
        self.sst = torch.from_numpy(data.sst.values).unsqueeze(1)  # (T, 1, H, W)
        self.land = torch.from_numpy(data.land.values)  # (H, W)
        self.index = torch.from_numpy(data.index.values)  # (T,)
        self.nino34_mean = data.nino34_mean.values  # (T,) °C, for evaluation
        self.phase = torch.from_numpy(data.phase.values.astype(np.int64))  # (T,)
        self.present = data.present.values & np.isfinite(data.index.values) & (data.phase.values >= 0)
        self.train = data.train.values
        self.window = int(self.parameters.get("config", {}).get("window", 6))
        self.index_stats = RunningStats.from_dict(self.parameters["statistics"]["index"])

    def targets(self, split: Literal["train", "valid"]) -> np.ndarray:
        """Time positions t of the target months of every complete window in `split`."""
        ok = self.present.astype(np.int64)
        complete = np.convolve(ok, np.ones(self.window + 1, dtype=np.int64), mode="valid") == self.window + 1
        t = np.nonzero(complete)[0] + self.window
        wanted = self.train[t] if split == "train" else ~self.train[t]
        return t[wanted]

    def windows(self, split: Literal["train", "valid"]) -> EnsoWindows:
        """A torch Dataset of the windows whose target month is in `split`."""
        return EnsoWindows(self, self.targets(split))


class EnsoWindows:
    """torch Dataset over `EnsoFeatures`: items are views into the shared grid series."""

    def __init__(self, features: EnsoFeatures, targets: np.ndarray) -> None:
        self.features, self.targets = features, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        import torch

        f, t = self.features, int(self.targets[item])
        return {
            "x": f.sst[t - f.window : t],  # (6, 1, H, W), a view
            "grid": f.sst[t],  # (1, H, W)
            "index": f.index[t],
            "phase": f.phase[t],
            "month": torch.tensor(f.months[t].astype(np.int64)),  # months since 1970-01
        }

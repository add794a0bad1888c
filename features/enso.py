"""ENSO features: normalized SST windows and the Niño 3.4 anomaly and phase at several leads.

As in the analysis (Keydana 2021): crop the SST grids to 55°S-60°N (115 x 360 at 1°),
normalize with one mean and std, then NaN -> 0 with a land mask; phase codes E / L / N. The
target is the published Niño 3.4 anomaly (NINO34_ANOM of the `nino34` table, °C), the
quantity ENSO forecasts are judged on, normalized with its own statistics.

Three periods by calendar month: train (before `valid_start`), valid (`valid_start` ..
`test_start`) and test (from `test_start`). Everything fitted (the SST and index statistics
AND the land mask) sees training months only, so what happens after `valid_start` can
never change the normalized training data.

A sample starts at an origin t: the 6 months t-6 .. t-1 in, the anomaly and phase of month
t-1+L out for every lead L (lead 1 = the next month, the analysis), plus the SST grid at the
first lead. A window belongs to the period of its LAST target month, so no validation or test
month is ever a training target and no test month is ever a validation target.

A feature version is the Icechunk array `enso_features`, content-addressed: building with the
same input versions, parameters and shoal version returns the existing version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from shoal.errors import CatalogError
from shoal.lineage import InputVersion, Provenance, code_fingerprint
from shoal.splits import SplitRecord, codes_by_bounds
from shoal.stats import RunningStats
from shoal.contract import FeatureBuild, building
from shoal.feature_sets import take

if TYPE_CHECKING:
    import torch
    import xarray as xr
    from distributed import Client

    from shoal.catalog import Catalog
    from shoal.progress import Reporter

DATASET = "enso_features"
PHASES = ("E", "L", "N")  # class 0, 1, 2
PERIODS = ("train", "valid", "test")  # split codes 0, 1, 2
Period = Literal["train", "valid", "test"]
FORMAT = 2  # bump when the feature computation changes: it is part of the content key
SPREAD_MONTHS = 120  # months of SST a Dask worker reads and coarsens at a time (`shoal features enso --cluster`)
# CF attributes of the feature variables: normalized values are dimensionless (units "1").
VARIABLE_ATTRS = {
    "sst": {"units": "1", "long_name": "sea surface temperature normalized with the training months' mean and "
                                       "standard deviation, 0 on land"},
    "land": {"long_name": "land: a cell without SST in some training month (its normalized SST is 0)"},
    "present": {"long_name": "the month has SST"},
    "index": {"units": "1", "long_name": "Nino 3.4 SST anomaly normalized with the training months' statistics"},
    "nino34_anom": {"units": "degC", "long_name": "Nino 3.4 SST anomaly"},
    "phase": {"long_name": "ENSO phase", "flag_values": [-1, 0, 1, 2],
              "flag_meanings": "missing el_nino la_nina neutral"},
    "split": {"long_name": "evaluation period", "flag_values": [0, 1, 2], "flag_meanings": "train valid test"},
}


@dataclass(frozen=True)
class EnsoFeatureConfig:
    """What a feature version is computed with.

    Attributes:
        lat_min, lat_max: the crop (cell centres inside it are kept): 55°S-60°N -> 115 rows.
        valid_start: the first validation month ('YYYY-MM'); training is every month before.
        test_start: the first test month; validation is valid_start .. the month before.
        coarsen: average blocks of coarsen x coarsen cells (1 = the analysis' 1° grid).
        window: months in one sample.
    """

    lat_min: float = -55.0
    lat_max: float = 60.0
    valid_start: str = "1990-01"
    test_start: str = "2005-01"
    coarsen: int = 1
    window: int = 6

    def __post_init__(self) -> None:
        if not np.datetime64(self.valid_start, "M") < np.datetime64(self.test_start, "M"):
            raise CatalogError(f"--valid-start {self.valid_start} must come before --test-start {self.test_start}")

    def split(self, months: np.ndarray) -> np.ndarray:
        """The period code (0 train, 1 valid, 2 test) of each month."""
        return codes_by_bounds(months, (np.datetime64(self.valid_start, "M"), np.datetime64(self.test_start, "M")))


def split_record(config: EnsoFeatureConfig, codes: np.ndarray) -> SplitRecord:
    """How a feature version was split (`shoal.splits`): `codes` of the months that hold SST."""
    return SplitRecord.of("by_time", {"valid_start": config.valid_start, "test_start": config.test_start}, codes)


def content_key(config: EnsoFeatureConfig, sst: InputVersion, nino34: InputVersion) -> str:
    """sha256 of everything a feature version depends on, the code (format, source fingerprint) included."""
    payload = {"format": FORMAT, "code": code_fingerprint(), "config": asdict(config), "sst": asdict(sst),
               "nino34": asdict(nino34)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _inputs(catalog: Catalog) -> tuple[InputVersion, InputVersion]:
    from shoal.arrays import resolve

    for name in ("sst", "nino34"):
        if not catalog.exists(name):
            raise CatalogError(f"ENSO features need {name!r}; run `shoal ingest {'sst' if name == 'sst' else 'oni'} ...` first")
    snapshot = resolve(catalog.uri("array", "sst"), "sst", None).snapshot
    return InputVersion("sst", "array", snapshot), InputVersion("nino34", "table", catalog.latest_version("nino34"))


def compute(sst: xr.Dataset, nino34: dict[str, np.ndarray], config: EnsoFeatureConfig) -> tuple[xr.Dataset, dict]:
    """The feature dataset and its statistics, from the `sst` array and the `nino34` columns."""
    import xarray as xr

    grid = sst.sst.sel(lat=slice(config.lat_min, config.lat_max))
    if config.coarsen > 1:
        grid = grid.coarsen(lat=config.coarsen, lon=config.coarsen, boundary="trim").mean()
    values = grid.values  # (T, H, W) float32, NaN on land and in absent months
    months = sst.time.values.astype("datetime64[M]")
    present = sst.source_sha256.values.any(axis=1)
    split = config.split(months)
    train = present & (split == 0)
    if not train.any():
        raise CatalogError(f"no SST month before {config.valid_start} to fit the statistics on; ingest earlier months")
    sst_stats = RunningStats.from_values(values[train], axis=None)
    land = np.isnan(values[train]).any(axis=0)  # (H, W), from training months only
    normalized = np.nan_to_num((values - sst_stats.mean) / sst_stats.std, nan=0.0).astype(np.float32)
    normalized[:, land] = 0.0

    by_month = {m: i for i, m in enumerate(nino34["month"])}
    rows = np.array([by_month.get(m, -1) for m in months])
    anomaly = np.where(rows >= 0, nino34["nino34_anom"][rows], np.nan)
    phase_text = np.where(rows >= 0, nino34["phase"][rows], None)
    phase = np.array([PHASES.index(p) if p in PHASES else -1 for p in phase_text], dtype=np.int8)
    index_stats = RunningStats.from_values(anomaly[train], axis=None)
    features = xr.Dataset(
        {
            "sst": (("time", "lat", "lon"), normalized),
            "land": (("lat", "lon"), land),
            "present": (("time",), present),
            "index": (("time",), ((anomaly - index_stats.mean) / index_stats.std).astype(np.float32)),
            "nino34_anom": (("time",), anomaly.astype(np.float32)),
            "phase": (("time",), phase),
            "split": (("time",), split),
        },
        # The coordinates keep the input's CF attributes (none on an `sst` written before shoal set them).
        coords={"time": ("time", sst.time.values, sst.time.attrs), "lat": ("lat", grid.lat.values, sst.lat.attrs),
                "lon": ("lon", grid.lon.values, sst.lon.attrs)},
        attrs={"phase_codes": "0 = E (El Niño), 1 = L (La Niña), 2 = N (neutral), -1 = missing",
               "split_codes": "0 = train, 1 = valid, 2 = test"},
    )
    for name, attrs in VARIABLE_ATTRS.items():
        features[name].attrs.update(attrs)
    return features, {"sst": sst_stats.to_dict(), "index": index_stats.to_dict()}


def build(catalog: Catalog, *, config: EnsoFeatureConfig, reporter: Reporter | None = None,
          client: Client | None = None) -> FeatureBuild:
    """Build (or reuse) the feature version for the latest `sst` and `nino34`.

    With a Dask `client`, its workers read, crop and coarsen the SST in blocks of
    SPREAD_MONTHS months (the part that grows with the archive); the statistics, the
    normalization and the one commit stay here. The bytes are those of a build without one.
    """
    from shoal.arrays import resolve
    from shoal.progress import NULL

    reporter = reporter or NULL
    reporter.start("features enso", total=4)
    sst_input, nino_input = _inputs(catalog)
    key = content_key(config, sst_input, nino_input)
    # Under the feature set's lock: an identical build running now is found once it commits.
    with building(catalog, DATASET, key) as found:
        if found is not None:
            reporter.finish(f"enso_features version {found.version} (snapshot {found.snapshot}): unchanged inputs and "
                            "parameters, reused")
            return found
        table = catalog.read_table("nino34", version=int(nino_input.version))
        nino34 = {
            "month": np.array(table.column("month").to_pylist(), dtype="datetime64[M]"),
            "nino34_anom": table.column("nino34_anom").to_numpy(zero_copy_only=False).astype(np.float64),
            "phase": np.array(table.column("phase").to_pylist(), dtype=object),
        }
        reporter.advance(status="read nino34")
        sst = catalog.open_array("sst", version=sst_input.version)
        if client is None:
            features, stats = compute(sst, nino34, config)
        else:
            import dask

            with dask.config.set(scheduler=client):
                features, stats = compute(sst.chunk({"time": SPREAD_MONTHS}), nino34, config)
        reporter.advance(status="computed")
        h, w = features.sizes["lat"], features.sizes["lon"]
        snapshot = catalog.write_array(DATASET, features, encoding={"sst": {"chunks": (12, h, w)}}, provenance=Provenance(
            inputs=(sst_input, nino_input),
            parameters={"content_key": key, "config": asdict(config), "statistics": stats,
                        "split": split_record(config, features.split.values[features.present.values]).to_dict()},
            message=f"ENSO features {h} x {w}, valid from {config.valid_start}, test from {config.test_start}",
        ))
        reporter.advance(status="committed")
        version = resolve(catalog.uri("array", DATASET), DATASET, snapshot).version
        reporter.finish(f"enso_features version {version} (snapshot {snapshot}): {h} x {w}, {features.sizes['time']} months")
        return FeatureBuild(version=version, snapshot=snapshot, reused=False)


@dataclass(frozen=True)
class IndexSeries:
    """The monthly target series of a feature version in plain numpy: what windows, baselines and scores index.

    Attributes:
        months: (T,) datetime64[M].
        anomaly: (T,) the Niño 3.4 anomaly, °C.
        phase: (T,) phase codes (0 E, 1 L, 2 N).
        present: (T,) the month's SST, anomaly and phase are all there.
        split: (T,) period codes (0 train, 1 valid, 2 test).
        window: input months per sample.
    """

    months: np.ndarray
    anomaly: np.ndarray
    phase: np.ndarray
    present: np.ndarray
    split: np.ndarray
    window: int = 6

    def origins(self) -> np.ndarray:
        """Every origin t (inputs t-window .. t-1) whose input months are all present; t may be len(months)."""
        run = np.convolve(self.present.astype(np.int64), np.ones(self.window, dtype=np.int64), mode="valid")
        return np.nonzero(run == self.window)[0] + self.window

    def targets_present(self, origins: np.ndarray, lead: int) -> np.ndarray:
        """Whether the target month of each origin at `lead` is in the data and present."""
        target = origins - 1 + lead
        inside = target < len(self.months)
        ok = np.zeros(len(origins), dtype=bool)
        ok[inside] = self.present[target[inside]]
        return ok

    def rows(self, lead: int, period: Period) -> np.ndarray:
        """Origins whose target at `lead` is present and in `period`: the rows scored at that lead."""
        origins = self.origins()
        origins = origins[self.targets_present(origins, lead)]
        return origins[self.split[origins - 1 + lead] == PERIODS.index(period)]


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
        if self.parameters.get("config", {}).get("valid_start") is None:
            raise CatalogError(f"enso_features version {entry.version} was built by an older shoal; "
                               "rebuild it with `shoal features enso`")
        data = catalog.open_array(DATASET, version=entry.snapshot).load()
        self.home = catalog.home
        self.config = EnsoFeatureConfig(**self.parameters["config"])
        self.months = data.time.values.astype("datetime64[M]")
        self.sst = torch.from_numpy(data.sst.values).unsqueeze(1)  # (T, 1, H, W)
        self.land = torch.from_numpy(data.land.values)  # (H, W)
        self.index = torch.from_numpy(data["index"].values)  # (T,) normalized anomaly
        self.anomaly = data.nino34_anom.values.astype(np.float64)  # (T,) °C, for evaluation
        self.phase = torch.from_numpy(data.phase.values.astype(np.int64))  # (T,)
        self.present = data.present.values & np.isfinite(data["index"].values) & (data.phase.values >= 0)
        self.split = data.split.values
        self.window = self.config.window
        self.series = IndexSeries(months=self.months, anomaly=self.anomaly, phase=data.phase.values.astype(np.int64),
                                  present=self.present, split=self.split, window=self.window)
        self.index_stats = RunningStats.from_dict(self.parameters["statistics"]["index"])

    def training_origins(self, split: Period, leads: tuple[int, ...]) -> np.ndarray:
        """Origins of the complete windows (all inputs and targets present) whose last target is in `split`."""
        origins = self.series.origins()
        complete = np.logical_and.reduce([self.series.targets_present(origins, lead) for lead in leads])
        origins = origins[complete]
        return origins[self.split[origins - 1 + max(leads)] == PERIODS.index(split)]

    def windows(self, split: Period, leads: tuple[int, ...] = (1,)) -> EnsoWindows:
        """A torch Dataset of the complete windows whose last target month is in `split`."""
        return EnsoWindows(self, self.training_origins(split, leads), leads)

    def inputs(self, origins: np.ndarray) -> EnsoWindows:
        """A torch Dataset of the input windows of `origins` alone (items hold only "x"), for prediction."""
        return EnsoWindows(self, origins, ())


class EnsoWindows:
    """torch Dataset over `EnsoFeatures`: items are views into the shared grid series.

    With no leads, items hold the inputs alone. `gather` builds a whole batch from an index tensor on the device the series was moved to
    (`to(device)`), so the train loop can stage the series on a GPU once and never copy
    windows from the host. It pickles as a reference (home, snapshot, origins, leads): unpickling
    opens the feature version again (on the CPU), so a DataLoader worker reads the store
    itself instead of receiving the grid series.
    """

    def __init__(self, features: EnsoFeatures, origins: np.ndarray, leads: tuple[int, ...]) -> None:
        import torch

        self.features, self.origins, self.leads = features, origins, tuple(leads)
        self._series = {"sst": features.sst, "index": features.index, "phase": features.phase}
        self._origins = torch.from_numpy(origins.astype(np.int64))
        self._steps = torch.arange(-features.window, 0)  # input offsets from the origin
        self._offsets = torch.tensor(self.leads) - 1  # target offsets from the origin

    def __len__(self) -> int:
        return len(self.origins)

    def __getstate__(self) -> dict[str, object]:
        return {"source": (self.features.home, self.features.snapshot, self.origins, self.leads)}

    def __setstate__(self, state: dict[str, object]) -> None:
        from shoal.catalog import Catalog

        home, snapshot, origins, leads = state["source"]
        self.__init__(EnsoFeatures(Catalog(home), version=snapshot), origins, leads)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        f, t = self.features, int(self.origins[item])
        targets = [t - 1 + lead for lead in self.leads]
        if not targets:
            return {"x": f.sst[t - f.window : t]}
        return {
            "x": f.sst[t - f.window : t],  # (6, 1, H, W), a view
            "grid": f.sst[targets[0]],  # (1, H, W), at the first lead
            "index": f.index[targets],  # (L,)
            "phase": f.phase[targets],  # (L,)
        }

    def to(self, device: torch.device) -> EnsoWindows:
        """The same windows with the series on `device` (the grid series is copied once)."""
        moved = EnsoWindows(self.features, self.origins, self.leads)
        moved._series = {key: value.to(device) for key, value in self._series.items()}
        moved._origins, moved._steps, moved._offsets = (t.to(device) for t in (self._origins, self._steps, self._offsets))
        return moved

    def gather(self, items: torch.Tensor) -> dict[str, torch.Tensor]:
        """The batch of `items` (B,), exactly as the default collation of `__getitem__` would give it."""
        origins = take(self._origins, items)  # (B,)
        targets = origins[:, None] + self._offsets  # (B, L)
        sst = self._series["sst"]
        if not self.leads:
            return {"x": take(sst, origins[:, None] + self._steps)}
        return {
            "x": take(sst, origins[:, None] + self._steps),  # (B, 6, 1, H, W)
            "grid": take(sst, targets[:, 0]),  # (B, 1, H, W)
            "index": take(self._series["index"], targets),  # (B, L)
            "phase": take(self._series["phase"], targets),  # (B, L)
        }

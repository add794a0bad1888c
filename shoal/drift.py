"""Drift: data ingested after a feature version's training period against that version's TRAINING data.

The reference is recomputed from the raw inputs a feature version names in its lineage (the
input versions and the split), restricted to its training items; the new data is summarized the
same way. Each variable, and for grids each region (the Niño boxes and 10°x10° tiles), is
compared by two numbers:

- the standardized mean shift, |mean(new) - mean(train)| / std(train);
- the population stability index over bins at the training deciles,
  PSI = sum((q - p) * ln(q / p)) for training fractions p and new fractions q per bin.

A finding is a drift when the shift exceeds `Thresholds.shift` or the PSI exceeds
`Thresholds.psi`. PSI > 0.25 is the usual "significant shift" (Siddiqi 2006, *Credit Risk
Scorecards*, Wiley; Yurdakul 2018, "Statistical properties of population stability index",
Western Michigan University dissertation). PSI has a small-sample bias of about
(bins - 1) / n, so it is only computed when the new data has `Thresholds.min_psi_values`
independent values: rows for tables, MONTHS for grids (a grid's neighbouring cells move
together, so one month's cells are one observation, not hundreds).

Grids compare like with like: a cell's value becomes its anomaly against the training
climatology of the same calendar month (else the seasonal cycle alone would be a drift; a
training month's against the other training years', as a new month's is), a
region's value for a month is the mean anomaly of its ocean cells (cells with SST in every
training month), divided by the standard deviation of that region's training anomalies in the
same season (the calendar month and the two beside it: sea ice, for one, makes winter anomalies
smaller than summer ones). The shift is then in those seasonal standard deviations.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from shoal.errors import CatalogError
from shoal.stats import RunningStats

if TYPE_CHECKING:
    from shoal.catalog import Catalog
    from shoal.lineage import Lineage

BINS = 10  # training deciles
PSI_FLOOR = 1e-4  # an empty bin counts as this fraction: PSI stays finite
# The Niño regions (lat_min, lat_max, lon_min, lon_max; longitudes 0..360 east), as NOAA CPC defines them.
NINO_BOXES = {
    "nino1+2": (-10.0, 0.0, 270.0, 280.0),
    "nino3": (-5.0, 5.0, 210.0, 270.0),
    "nino3.4": (-5.0, 5.0, 190.0, 240.0),
    "nino4": (-5.0, 5.0, 160.0, 210.0),
}
TILE = 10  # degrees


@dataclass(frozen=True)
class Thresholds:
    """When a finding is a drift (documented in docs/operations.md, "Drift").

    Attributes:
        shift: standardized mean shift, in training standard deviations. 3 is a 0.3% two-sided
            event for one variable or region of normally distributed training data.
        psi: population stability index; above 0.25 is the usual "significant shift".
        min_psi_values: new values (table rows, grid months) below which PSI is not computed:
            its bias (bins - 1) / n stays under 0.1.
        min_std: the smallest seasonal standard deviation a grid region's anomaly is divided by, in the
            variable's units (°C for SST): where the training anomalies hardly vary (sea ice held at
            -1.8 °C) a change of hundredths of a degree is not a shift of many standard deviations.
    """

    shift: float = 3.0
    psi: float = 0.25
    min_psi_values: int = 100
    min_std: float = 0.2


@dataclass(frozen=True)
class Finding:
    """One variable (and region) compared.

    Attributes:
        variable: the column or array variable.
        region: "all", a Niño box, or a tile "lat0..lat1,lon0..lon1" (degrees north, east).
        shift: the standardized mean shift.
        psi: the PSI, or None when the new data has too few values.
        reference: training values summarized (rows, or months).
        new: new values summarized.
        drift: whether a threshold is exceeded.
    """

    variable: str
    region: str
    shift: float
    psi: float | None
    reference: int
    new: int
    drift: bool


@dataclass(frozen=True)
class DriftReport:
    """What `drift` found for one feature version.

    Attributes:
        task: the task name.
        features: "DATASET version V".
        reference: what the training reference was made of.
        new: what the new data was.
        thresholds: the thresholds applied.
        findings: every comparison, the largest shift first.
    """

    task: str
    features: str
    reference: str
    new: str
    thresholds: Thresholds
    findings: tuple[Finding, ...]

    @property
    def drifted(self) -> tuple[Finding, ...]:
        """The findings over a threshold."""
        return tuple(finding for finding in self.findings if finding.drift)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: what `shoal drift --json` prints and the event carries."""
        return {"task": self.task, "features": self.features, "reference": self.reference, "new": self.new,
                "thresholds": asdict(self.thresholds), "drift": bool(self.drifted),
                "drifted": [asdict(finding) for finding in self.drifted],
                "findings": [asdict(finding) for finding in self.findings]}

    def markdown(self, *, top: int = 10) -> str:
        """A markdown summary: the verdict and the largest shifts (the Prefect artifact)."""
        verdict = f"**drift** in {len(self.drifted)} of {len(self.findings)}" if self.drifted else \
            f"no drift in {len(self.findings)}"
        lines = [f"# Drift of {self.task}: {verdict} comparisons", "",
                 f"{self.features}; reference: {self.reference}; new: {self.new}; thresholds: shift > "
                 f"{self.thresholds.shift:g} or PSI > {self.thresholds.psi:g}", "",
                 "| variable | region | shift | PSI | train | new | drift |", "|---|---|---|---|---|---|---|"]
        for f in (self.drifted or self.findings)[:top]:
            psi = "-" if f.psi is None else f"{f.psi:.3f}"
            lines.append(f"| {f.variable} | {f.region} | {f.shift:.2f} | {psi} | {f.reference} | {f.new} | "
                         f"{'yes' if f.drift else 'no'} |")
        return "\n".join(lines) + "\n"


def edges(reference: np.ndarray, *, bins: int = BINS) -> np.ndarray:
    """The inner bin edges at the reference's quantiles (ties merged)."""
    return np.unique(np.quantile(reference, np.linspace(0.0, 1.0, bins + 1)[1:-1]))


def fractions(values: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The fraction of `values` in each bin of the inner edges `inner`."""
    return np.bincount(np.searchsorted(inner, values, side="right"), minlength=len(inner) + 1) / len(values)


def psi_of(p: np.ndarray, q: np.ndarray) -> float:
    """The population stability index of bin fractions `q` (new) against `p` (reference)."""
    p, q = np.maximum(p, PSI_FLOOR), np.maximum(q, PSI_FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


def psi(reference: np.ndarray, new: np.ndarray, *, bins: int = BINS) -> float:
    """The population stability index of `new` against `reference`, over the reference's quantile bins."""
    inner = edges(reference, bins=bins)
    return psi_of(fractions(reference, inner), fractions(new, inner))


def judge(variable: str, region: str, *, reference: RunningStats, new: RunningStats, index: float | None,
          thresholds: Thresholds) -> Finding:
    """One finding from the summaries of the reference and the new values and their PSI (None: too few values)."""
    std, count = float(reference.std), int(new.count)
    difference = abs(float(new.mean) - float(reference.mean))
    shift = difference / std if std > 0 else (0.0 if difference == 0 else float("inf"))
    index = index if count >= thresholds.min_psi_values else None
    drift = shift > thresholds.shift or (index is not None and index > thresholds.psi)
    return Finding(variable, region, round(shift, 6), None if index is None else round(index, 6),
                   int(reference.count), count, bool(drift))


def compare(variable: str, region: str, reference: np.ndarray, new: np.ndarray, thresholds: Thresholds) -> Finding:
    """One finding: `reference` and `new` are the finite values (rows, or a region's monthly means)."""
    return judge(variable, region, reference=RunningStats.from_values(reference, axis=None),
                 new=RunningStats.from_values(new, axis=None),
                 index=psi(reference, new) if len(new) >= thresholds.min_psi_values else None, thresholds=thresholds)


def regions(lat: np.ndarray, lon: np.ndarray) -> dict[str, np.ndarray]:
    """(H, W) masks of the whole grid, the Niño boxes and the 10°x10° tiles with a cell centre inside."""
    found = {"all": np.ones((len(lat), len(lon)), dtype=bool)}
    for name, (s, n, w, e) in NINO_BOXES.items():
        found[name] = ((lat >= s) & (lat <= n))[:, None] & ((lon >= w) & (lon <= e))[None, :]
    for south in range(int(np.floor(lat.min() / TILE)) * TILE, int(lat.max()) + 1, TILE):
        for west in range(0, 360, TILE):
            mask = ((lat >= south) & (lat < south + TILE))[:, None] & ((lon >= west) & (lon < west + TILE))[None, :]
            if mask.any():
                found[f"{south}..{south + TILE},{west}..{west + TILE}"] = mask
    return found


def grid_findings(variable: str, values: Callable[[], Iterable[np.ndarray]], months: np.ndarray, train: np.ndarray,
                  new: np.ndarray, lat: np.ndarray, lon: np.ndarray, thresholds: Thresholds) -> list[Finding]:
    """Findings for a (T, H, W) grid: anomalies against the training calendar-month climatology, per region.

    A region's mean anomaly over cells that hold a value in every training month is its mean
    value less the mean of those cells' climatologies, so the grid is read as per-month region
    means, a slice of months at a time: memory holds a slice, never the series (1,200 training
    months of the ENSO crop are 400 MB in float64).

    Args:
        values: returns the (t, H, W) slices of the grid in the order of `months`, NaN where there is
            no value; called twice (the ocean cells, then the region means).
        months: (T,) datetime64[M].
        train, new: (T,) bool: the training months and the new months.
    """
    calendar = months.astype(np.int64) % 12
    missing = sorted({int(c) + 1 for c in calendar[new]} - {int(c) + 1 for c in calendar[train]})
    if missing:
        raise CatalogError(f"the training months have no calendar month {missing} to take the new months' anomalies "
                           "against; build the features with a training period of whole years")
    years = np.bincount(calendar[train], minlength=12)
    if (years[np.unique(calendar)] < 2).any():
        raise CatalogError("drift needs two training years of every calendar month it compares; build the features "
                           "with a longer training period (--valid-start)")
    ocean = np.ones((len(lat), len(lon)), dtype=bool)  # cells with a value in every training month
    for first, grid in _slices(values()):
        ocean &= ~np.isnan(grid[train[first:first + len(grid)]]).any(axis=0)
    cells = {name: np.flatnonzero(mask & ocean) for name, mask in regions(lat, lon).items() if (mask & ocean).any()}
    means = np.concatenate([np.stack([flat[:, index].mean(axis=1) for index in cells.values()], axis=1)
                            for flat in (grid.reshape(len(grid), -1).astype(np.float64) for _, grid in
                                         _slices(values()))])  # (T, regions): NaN where a cell has none
    totals = np.stack([means[train & (calendar == c)].sum(axis=0) for c in range(12)])  # (12, regions)
    anomaly = means - (totals / np.maximum(years, 1)[:, None])[calendar]
    # A training month against the climatology of the OTHER training years, as a new month is: else its anomaly
    # would be shrunk by its own share of the mean (by 1/4 of the variance with 4 training years).
    own = years[calendar[train]][:, None]
    anomaly[train] = means[train] - (totals[calendar[train]] - means[train]) / (own - 1)
    # A month's season: its calendar month and the two beside it (e.g. sea ice makes winter anomalies smaller).
    season = np.abs((np.arange(12)[:, None] - calendar[None, :] + 6) % 12 - 6) <= 1  # (12, T)
    findings = []
    for column, name in enumerate(cells):
        region = anomaly[:, column]  # (T,) the region's mean anomaly per month
        spread = np.array([region[train & season[c]].std() if (train & season[c]).any() else 0.0 for c in range(12)])
        scaled = region / np.maximum(spread, thresholds.min_std)[calendar]
        fresh = scaled[new]
        if np.isnan(fresh).all():
            continue
        findings.append(compare(variable, name, scaled[train], fresh[np.isfinite(fresh)], thresholds))
    return findings


def _slices(grids: Iterable[np.ndarray]) -> Iterator[tuple[int, np.ndarray]]:
    """Each slice with the index of its first month."""
    first = 0
    for grid in grids:
        yield first, grid
        first += len(grid)


def ordered(findings: list[Finding]) -> tuple[Finding, ...]:
    """Findings as a report lists them: drifts first, then by shift, largest first."""
    return tuple(sorted(findings, key=lambda f: (not f.drift, -f.shift)))


class DriftReader(Protocol):
    """What a feature set registers: its version's training reference and the new data, compared."""

    def __call__(self, catalog: Catalog, *, version: int | str | None, since: str | None,
                 thresholds: Thresholds) -> DriftReport: ...


_READERS: dict[str, DriftReader] = {}


def register_drift(task: str) -> Callable[[DriftReader], DriftReader]:
    """Register the decorated function as the drift reader of `task` (`shoal drift TASK`)."""

    def decorate(reader: DriftReader) -> DriftReader:
        if task in _READERS:
            raise ValueError(f"drift of {task!r} is registered twice")
        _READERS[task] = reader
        return reader

    return decorate


def feature_lineage(catalog: Catalog, dataset: str, version: int | str | None, task: str) -> Lineage:
    """The lineage of a feature version: the input versions and split its training reference is read from.

    Raises:
        CatalogError: no such feature set in the home, or a version without lineage.
    """
    if not catalog.exists(dataset):
        raise CatalogError(f"no {dataset} in {catalog.home}: drift compares against a feature version's training "
                           f"data; build one (`shoal features {task}`)")
    lineage = catalog.lineage(dataset, version=version)
    if lineage is None:
        raise CatalogError(f"{dataset} version {version} has no lineage to find its training data in")
    return lineage


def drift(catalog: Catalog, task: str, *, version: int | str | None = None, since: str | None = None,
          thresholds: Thresholds = Thresholds()) -> DriftReport:
    """The drift report of `task`'s feature version (default: the newest).

    Raises:
        CatalogError: a task drift does not know, or what its reader raises.
    """
    importlib.import_module("shoal.features")  # fills the registry
    if task not in _READERS:
        raise CatalogError(f"drift knows {', '.join(sorted(_READERS))}, not {task!r}")
    if since is not None:
        try:
            np.datetime64(since, "M")
        except ValueError:
            raise CatalogError(f"--since {since!r} is not a month; pass YYYY-MM, e.g. 2024-01") from None
    return _READERS[task](catalog, version=version, since=since, thresholds=thresholds)

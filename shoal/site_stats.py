"""The statistics the catalog site shows: each column's stored summary with a histogram between its range.

A dataset's latest version is summarized by the statistics its commits store (`Catalog.stats`,
folded from each commit's `RunningStats`); the histograms are counted between their ranges in
one bounded-memory pass over that version (polars for a table, slices along the first dimension
for an array), and a table whose commits stored none is summarized from its rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shoal.catalog import Catalog

HISTOGRAM_BINS = 20


@dataclass(frozen=True)
class ColumnStatistics:
    """One column's summary as the site shows it; `histogram` is (edges, counts) or None."""

    name: str
    count: int
    nulls: int
    mean: float
    std: float
    minimum: float
    maximum: float
    histogram: tuple[tuple[float, ...], tuple[int, ...]] | None = None
    source: str = "computed"  # "commit" when read from the commit metadata


def stored_statistics(catalog: Catalog, name: str) -> dict[str, ColumnStatistics]:
    """The statistics the commits of `name` store for its latest version, per column or variable; {} without them.

    A summary of more than one element (a variable kept per grid cell) has no one-line row and is left out.
    """
    from shoal.errors import CatalogError

    try:
        columns = catalog.stats(name)
    except CatalogError:  # a commit up to it was written without statistics
        return {}
    return {column: ColumnStatistics(name=column, count=int(stats.count.item()), nulls=int(stats.nan_count.item()),
                                     mean=float(stats.mean.item()), std=float(stats.std.item()),
                                     minimum=float(stats.min.item()), maximum=float(stats.max.item()),
                                     source="commit")
            for column, stats in columns.items() if stats.count.size == 1}


def table_statistics(catalog: Catalog, name: str, version: int,
                     stored: Mapping[str, ColumnStatistics]) -> list[ColumnStatistics]:
    """Count, nulls, mean, standard deviation, range and a histogram of each numeric column of one table version.

    With the `stored` statistics of every column, one streamed polars pass counts the histograms
    between their ranges; else a first pass summarizes the columns too. The standard deviation is
    the population's (ddof 0), as `RunningStats.std`.
    """
    import polars as pl

    frame = catalog.scan_table(name, version=version)
    numeric = [column for column, dtype in frame.collect_schema().items() if dtype.is_numeric()]
    if not numeric:
        return []
    if all(column in stored for column in numeric):
        ranges = {f"{c}\0{key}": getattr(stored[c], field) for c in numeric
                  for key, field in (("min", "minimum"), ("max", "maximum"))}
        counts = _histogram_counts(frame, numeric, {k: None if math.isnan(v) else v for k, v in ranges.items()})
        return [replace(stored[c], histogram=(_edges(stored[c].minimum, stored[c].maximum), counts[c])
                        if c in counts else None) for c in numeric]
    summary = frame.select(
        *(pl.col(c).cast(pl.Float64).count().alias(f"{c}\0count") for c in numeric),
        *(pl.col(c).null_count().alias(f"{c}\0nulls") for c in numeric),
        *(pl.col(c).cast(pl.Float64).mean().alias(f"{c}\0mean") for c in numeric),
        *(pl.col(c).cast(pl.Float64).std(ddof=0).alias(f"{c}\0std") for c in numeric),
        *(pl.col(c).cast(pl.Float64).min().alias(f"{c}\0min") for c in numeric),
        *(pl.col(c).cast(pl.Float64).max().alias(f"{c}\0max") for c in numeric),
    ).collect(engine="streaming").row(0, named=True)
    counts = _histogram_counts(frame, numeric, summary)
    found = []
    for column in numeric:
        low, high = summary[f"{column}\0min"], summary[f"{column}\0max"]
        edges = None if low is None else _edges(low, high)
        found.append(ColumnStatistics(
            name=column, count=int(summary[f"{column}\0count"]), nulls=int(summary[f"{column}\0nulls"]),
            mean=_float(summary[f"{column}\0mean"]), std=_float(summary[f"{column}\0std"]), minimum=_float(low),
            maximum=_float(high), histogram=(edges, counts[column]) if edges and column in counts else None))
    return found


def _edges(low: float, high: float) -> tuple[float, ...]:
    return tuple(low + (high - low) * i / HISTOGRAM_BINS for i in range(HISTOGRAM_BINS + 1))


def _float(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _histogram_counts(frame: Any, columns: list[str], summary: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Counts in `HISTOGRAM_BINS` equal bins from each column's min to max (the max in the last bin)."""
    import polars as pl

    bins = {}
    for column in columns:
        low, high = summary[f"{column}\0min"], summary[f"{column}\0max"]
        if low is None or not (math.isfinite(low) and math.isfinite(high)):
            continue
        span = (high - low) or 1.0
        index = ((pl.col(column).cast(pl.Float64) - low) / span * HISTOGRAM_BINS).floor().clip(0, HISTOGRAM_BINS - 1)
        bins[column] = [(index == b).sum().alias(f"{column}\0{b}") for b in range(HISTOGRAM_BINS)]
    if not bins:
        return {}
    row = frame.select(*(e for exprs in bins.values() for e in exprs)).collect(engine="streaming").row(0, named=True)
    return {column: tuple(int(row[f"{column}\0{b}"]) for b in range(HISTOGRAM_BINS)) for column in bins}


def array_statistics(catalog: Catalog, name: str, stored: Mapping[str, ColumnStatistics],
                     chunk: int = 1 << 22) -> list[ColumnStatistics]:
    """The stored statistics of an array's variables, each with its histogram between the stored range.

    The latest version is read along its first dimension, about `chunk` values at a time, so
    memory stays bounded whatever the array's size; NaN (land, missing months) is not counted.
    """
    import numpy as np

    dataset = catalog.open_array(name)
    shown = []
    for variable, column in stored.items():
        if variable not in dataset.data_vars or not (math.isfinite(column.minimum) and math.isfinite(column.maximum)):
            shown.append(column)
            continue
        data = dataset[variable] if dataset[variable].ndim else dataset[variable].expand_dims("one")
        step = max(1, chunk * data.shape[0] // max(1, data.size))  # first-axis slices of about `chunk` values
        counts = np.zeros(HISTOGRAM_BINS, np.int64)
        span = (column.minimum, column.maximum if column.maximum > column.minimum else column.minimum + 1.0)
        for start in range(0, data.shape[0], step):
            values = np.asarray(data[start:start + step], np.float64).ravel()
            counts += np.histogram(values[np.isfinite(values)], bins=HISTOGRAM_BINS, range=span)[0]
        shown.append(replace(column, histogram=(_edges(*span), tuple(int(c) for c in counts))))
    return shown

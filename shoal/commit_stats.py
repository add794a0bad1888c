"""Statistics of every commit, and of what a version holds.

Each commit stores, in its lineage, the `RunningStats` of the data it wrote, per column (a
table) or per variable (an array), grouped in parts, and how they combine with the version
before it:

    * "append": the parts merge into the stored ones (Chan et al.'s merge is exact);
    * "overwrite": the commit's parts are all the version holds;
    * "replace": each part replaces the stored part of the same key, e.g. one month of
      `sst` re-ingested, or the rows a replace-where predicate selects (keyed by the
      predicate's text).

The statistics of a version fold its history from the oldest commit; a version's statistics
are the merge of its parts. A commit without statistics (written before they were kept, or
by another tool) makes them unknown until the next overwrite.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from shoal.stats import RunningStats

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa

Columns = dict[str, RunningStats]
StatsMode = Literal["append", "overwrite", "replace"]
WHOLE = ""  # the part of data that is not split in parts (a table's rows, a whole array)


@dataclass(frozen=True)
class CommitStats:
    """What one commit wrote: part key -> column or variable -> summary, and how it combines."""

    mode: StatsMode
    parts: Mapping[str, Columns]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, as stored under the lineage's `stats` key.

        Parts with the same columns of the same shapes (the 1,560 months of `sst`) are stored stacked:
        the part keys once, and per column one summary whose first axis is the part. One dict per part
        and column made the commit's metadata twice as slow to write and four times as slow to read.
        """
        if _stackable(self.parts):
            keys = list(self.parts)
            names = list(self.parts[keys[0]])
            return {"mode": self.mode, "keys": keys,
                    "stacked": {name: RunningStats(*map(np.stack, zip(*(_arrays(self.parts[key][name]) for key in keys),
                                                                      strict=True))).to_dict() for name in names}}
        return {"mode": self.mode,
                "parts": {part: {name: s.to_dict() for name, s in columns.items()}
                          for part, columns in self.parts.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CommitStats:
        """The inverse of `to_dict` (either form)."""
        if "stacked" in data:
            stacked = {name: _arrays(RunningStats.from_dict(s)) for name, s in data["stacked"].items()}
            return cls(mode=data["mode"], parts={key: {name: RunningStats(*(array[index] for array in arrays))
                                                       for name, arrays in stacked.items()}
                                                 for index, key in enumerate(data["keys"])})
        return cls(mode=data["mode"],
                   parts={part: {name: RunningStats.from_dict(s) for name, s in columns.items()}
                          for part, columns in data["parts"].items()})


def _arrays(summary: RunningStats) -> list[np.ndarray]:
    """The six arrays of a summary, in field order."""
    return [getattr(summary, field.name) for field in fields(RunningStats)]


def _stackable(parts: Mapping[str, Columns]) -> bool:
    """Several parts, each with the same columns in the same order and shapes."""
    if len(parts) < 2:
        return False
    first = next(iter(parts.values()))
    layout = [(name, s.shape) for name, s in first.items()]
    return bool(layout) and all([(name, s.shape) for name, s in columns.items()] == layout
                                for columns in parts.values())


def merge_columns(a: Mapping[str, RunningStats], b: Mapping[str, RunningStats]) -> Columns:
    """Merge two column -> summary maps; a column on one side only keeps its summary."""
    merged = dict(a)
    for name, summary in b.items():
        merged[name] = merged[name].merge(summary) if name in merged else summary
    return merged


def arrow_stats(data: pa.Table | pa.RecordBatch) -> Columns:
    """The summary of every numeric column (integers, floats, booleans) of Arrow data; nulls count as NaN."""
    import pyarrow as pa

    numeric = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean)
    return {field.name: RunningStats.from_values(data.column(field.name), axis=None)
            for field in data.schema if any(test(field.type) for test in numeric)}


def fold(commits: Iterable[CommitStats | None]) -> dict[str, Columns] | None:
    """The parts a version holds, from its commits oldest first; None where they are unknown."""
    held: dict[str, Columns] | None = {}
    for commit in commits:
        if commit is None:
            held = None
        elif commit.mode == "overwrite":
            held = {part: dict(columns) for part, columns in commit.parts.items()}
        elif held is not None and commit.mode == "replace":
            held.update({part: dict(columns) for part, columns in commit.parts.items()})
        elif held is not None:
            for part, columns in commit.parts.items():
                held[part] = merge_columns(held.get(part, {}), columns)
    return held


def combine(parts: Mapping[str, Columns]) -> Columns:
    """The summary per column of a version: the merge of its parts."""
    total: Columns = {}
    for columns in parts.values():
        total = merge_columns(total, columns)
    return total


def polars_summary(frame: pl.LazyFrame, columns: Iterable[str], *, finite: bool = False) -> pl.LazyFrame:
    """A query for the summary of `columns` of `frame`, to run beside a sink of it (`pl.collect_all`: one scan).

    NaN counts as missing, as in `RunningStats`; `columns_of_summary` reads its one row. With
    `finite` (every value is known finite, as in a HIGGS file that is committed at all) the NaN
    pass is left out: it was most of the summary's cost on HIGGS's 29 columns.
    """
    import polars as pl

    exprs = []
    for name in columns:
        value = pl.col(name).cast(pl.Float64)  # float64 moments: polars' Float32 variance is ~1e-8 off numpy's
        value = value if finite else value.fill_nan(None)
        exact = pl.col(name) if finite else value  # count, min and max need no cast: they are exact in any dtype
        exprs += [exact.count().alias(f"{name}\0count"), value.mean().alias(f"{name}\0mean"),
                  (value.var(ddof=0) * exact.count()).alias(f"{name}\0m2"), exact.min().alias(f"{name}\0min"),
                  exact.max().alias(f"{name}\0max"), exact.null_count().alias(f"{name}\0nan_count")]
    return frame.select(exprs)


def columns_of_summary(summary: pl.DataFrame) -> Columns:
    """The `RunningStats` per column of a collected `polars_summary`."""
    row = summary.row(0, named=True)
    names = dict.fromkeys(key.split("\0")[0] for key in row)
    columns = {}
    for name in names:
        count = row[f"{name}\0count"]
        empty = count == 0
        columns[name] = RunningStats(
            count=count, mean=math.nan if empty else row[f"{name}\0mean"], m2=0.0 if empty else row[f"{name}\0m2"],
            min=math.nan if empty else float(row[f"{name}\0min"]), max=math.nan if empty else float(row[f"{name}\0max"]),
            nan_count=row[f"{name}\0nan_count"])
    return columns

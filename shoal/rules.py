"""Validation rules of a source, declared as data and checked on every ingest.

A source module declares one `Rules` (the ranges its values must lie in, the NaN fraction it
allows, the grid, columns or sample rate it expects) and checks each item it ingests (a month,
a file, a clip) with `violations`, from the statistics it computes for the commit anyway: a
check costs no pass over the data. Each violation is one line that names the item, what was
expected, what was found and the fix; an item with a violation is refused, the others land.

A source whose item is a whole file of rows (a table) checks its rows instead, so that the
line names the first bad row: `range_checks` as polars expressions beside the parse, `outside`
over a column in numpy, and `out_of_range` for the one value a message shows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from shoal.stats import RunningStats

if TYPE_CHECKING:
    import polars as pl


@dataclass(frozen=True)
class Rules:
    """What a source's items must be.

    Attributes:
        ranges: column or variable -> (lowest, highest) allowed value, both included (NaN aside).
        max_nan_fraction: column or variable -> the largest allowed fraction of NaN (missing) values.
        columns: the columns every item has, in this order; None: not checked.
        grid: the shape of every item's field, e.g. (lat, lon); None: not checked.
        sample_rate: the sample rate of every item in Hz; None: not checked.
        fix: what the user should do about an item that breaks a rule.
    """

    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    max_nan_fraction: Mapping[str, float] = field(default_factory=dict)
    columns: tuple[str, ...] | None = None
    grid: tuple[int, ...] | None = None
    sample_rate: int | None = None
    fix: str = "check the file, or fetch it again"


def violations(rules: Rules, where: str, *, stats: Mapping[str, RunningStats] | None = None,
               columns: Sequence[str] | None = None, grid: tuple[int, ...] | None = None,
               sample_rate: int | None = None) -> list[str]:
    """One line per rule that an item breaks: `WHERE: NAME expected ..., found ...; FIX`.

    Args: as `problems`, and `where`: the item, as a person finds it (a file, `file:line`, an archive member).
    """
    return [f"{where}: {problem}; {rules.fix}" for problem in problems(rules, stats=stats, columns=columns, grid=grid,
                                                                        sample_rate=sample_rate)]


def problems(rules: Rules, *, stats: Mapping[str, RunningStats] | None = None, columns: Sequence[str] | None = None,
             grid: tuple[int, ...] | None = None, sample_rate: int | None = None) -> list[str]:
    """What an item breaks, one `NAME expected ..., found ...` per rule (for an error that names the item itself).

    Args:
        rules: the source's rules.
        stats: the item's statistics per column or variable, for `ranges` and `max_nan_fraction`.
        columns: the item's columns, for `columns`.
        grid: the item's field shape, for `grid`.
        sample_rate: the item's sample rate, for `sample_rate`.
    """
    found: list[str] = []
    if rules.columns is not None and columns is not None and tuple(columns) != rules.columns:
        found.append(f"columns expected {list(rules.columns)}, found {list(columns)}")
    if rules.grid is not None and grid is not None and tuple(grid) != rules.grid:
        found.append(f"grid expected {rules.grid}, found {tuple(grid)}")
    if rules.sample_rate is not None and sample_rate is not None and sample_rate != rules.sample_rate:
        found.append(f"sample rate expected {rules.sample_rate} Hz, found {sample_rate} Hz")
    for name, summary in (stats or {}).items():
        if name in rules.ranges and int(summary.count) > 0:
            low, high = rules.ranges[name]
            if float(summary.min) < low or float(summary.max) > high:
                found.append(f"{name} expected in {low:g} .. {high:g}, found {float(summary.min):g} .. "
                             f"{float(summary.max):g}")
        total = int(summary.count) + int(summary.nan_count)
        if name in rules.max_nan_fraction and total > 0:
            fraction = int(summary.nan_count) / total
            if fraction > rules.max_nan_fraction[name]:
                found.append(f"{name} expected at most {rules.max_nan_fraction[name]:.0%} NaN, found {fraction:.1%}")
    return found


def out_of_range(rules: Rules, name: str, value: float) -> str | None:
    """Why one value of `name` breaks its range (`expected in LOW .. HIGH, found VALUE`), or None.

    NaN is left to `max_nan_fraction`: it is in no range and out of none.
    """
    if name not in rules.ranges or math.isnan(value):
        return None
    low, high = rules.ranges[name]
    return None if low <= value <= high else f"expected in {low:g} .. {high:g}, found {value:g}"


def outside(rules: Rules, name: str, values: np.ndarray) -> np.ndarray:
    """Where the values of `name` break its range (NaN never does), as a boolean array; all False without a range."""
    values = np.asarray(values, np.float64)
    if name not in rules.ranges:
        return np.zeros(values.shape, bool)
    low, high = rules.ranges[name]
    with np.errstate(invalid="ignore"):
        return (values < low) | (values > high)


def range_checks(rules: Rules, names: Iterable[str]) -> list[pl.Expr]:
    """Polars expressions, one per column of `names` with a range, false on a row whose value is outside it.

    Rows are judged one by one, beside the parse: a file whose rows all pass has every
    column within range in its statistics, and a failing file names its first bad row.
    """
    import polars as pl

    return [pl.col(name).cast(pl.Float64).is_between(*rules.ranges[name]) for name in names if name in rules.ranges]

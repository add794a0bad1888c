"""Evaluation written once: metrics with 95% intervals, the skill table, a verdict from a paired bootstrap.

A task hands `score` the truth of its test items and each method's forecasts of them (the
model's and the baselines', as arrays by name), and declares as data how they are scored,
shown and judged: a `Scoring` (title, metric columns, the metric the verdict compares, the
column that counts the items, the grouping column, the bootstrap's block length). `score`
gives every skill row its value and a 95% percentile interval from resampling the test items
(`RESAMPLES` times: items drawn with replacement; for a time series, moving blocks of `block`
consecutive items, so that autocorrelated months are not counted as independent evidence),
and the model's row the difference to every baseline with its interval from the SAME
resamples (paired). `verdict` then says per group whether the model is better than the best
baseline, worse, or not distinguishable at this test size. Every metric is a weighted
statistic of the items, so a resample is a vector of counts and no item is copied.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MODEL = "model"  # the method name of the model's own rows; every other method is a baseline
RESAMPLES = 1000  # bootstrap resamples: the 2.5% and 97.5% percentiles move by ~1% of the width between runs
LEVEL = 95.0  # percent of the resamples inside an interval

Items = Mapping[str, np.ndarray]  # arrays by name, one entry per test item
Scorer = Callable[[np.ndarray], float]  # the metric of the items weighted by counts (N,)


@dataclass(frozen=True)
class Metric:
    """A column of the skill rows.

    Attributes:
        key, label: its key in a skill row and its header.
        prepare: `prepare(forecast, truth)` -> the metric as a function of item weights
            (`accuracy_of`, `roc_auc_of`, `rmse_of`, `correlation_of`, or your own).
        digits: the digits of a value that has no interval (an old registry entry).
        higher_is_better: the direction the verdict compares in.
    """

    key: str
    label: str
    prepare: Callable[[Items, Items], Scorer]
    digits: int = 3
    higher_is_better: bool = True


@dataclass(frozen=True)
class Scoring:
    """How a task's skill rows are scored, shown and judged.

    Attributes:
        title: the table's title, formatted with the metrics `evaluate` returned (e.g. "{split}").
        metrics: the metric columns, in order.
        primary: the key of the metric the verdict compares.
        count: the key and header of the column that counts the scored items ("rows", "clips", "months").
        group: the key that splits the rows into separate comparisons (ENSO: "lead"), or None.
        block: items in a bootstrap block (ENSO: 12 months), or None for independent items.
    """

    title: str
    metrics: tuple[Metric, ...]
    primary: str
    count: str
    group: str | None = None
    block: int | None = None

    @property
    def primary_metric(self) -> Metric:
        """The metric the verdict compares."""
        return next(metric for metric in self.metrics if metric.key == self.primary)


@dataclass(frozen=True)
class SkillTable:
    """The test skill as a table for people: title, columns, rows of strings, and a verdict line.

    `model_rows` flags the rows of the model itself (shown in bold), the others are baselines.
    """

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    verdict: str
    model_rows: tuple[bool, ...] = ()


# -- metrics of weighted items: NaN where undefined (one class, a constant forecast) ----------


def _mean(values: np.ndarray, weights: np.ndarray) -> float:
    total = weights.sum()
    return float(values @ weights / total) if total > 0 else math.nan


def accuracy_of(forecast: str, truth: str, decide: Callable[[np.ndarray], np.ndarray] | None = None) -> Callable[
        [Items, Items], Scorer]:
    """The fraction of items whose forecast (after `decide`, e.g. a threshold) equals the truth."""

    def prepare(forecasts: Items, truths: Items) -> Scorer:
        value = forecasts[forecast]
        hits = ((decide(value) if decide else value) == truths[truth]).astype(np.float64)
        return lambda weights: _mean(hits, weights)

    return prepare


def rmse_of(forecast: str, truth: str) -> Callable[[Items, Items], Scorer]:
    """The root mean squared error."""

    def prepare(forecasts: Items, truths: Items) -> Scorer:
        squared = (np.asarray(forecasts[forecast], np.float64) - truths[truth]) ** 2
        return lambda weights: math.sqrt(_mean(squared, weights))  # NaN without weight, as _mean

    return prepare


def correlation_of(forecast: str, truth: str) -> Callable[[Items, Items], Scorer]:
    """Pearson's correlation; NaN for fewer than two distinct items or a constant forecast."""

    def prepare(forecasts: Items, truths: Items) -> Scorer:
        x, y = np.asarray(forecasts[forecast], np.float64), np.asarray(truths[truth], np.float64)

        def score(weights: np.ndarray) -> float:
            if np.count_nonzero(weights) < 2:
                return math.nan
            dx, dy = x - _mean(x, weights), y - _mean(y, weights)
            vx, vy = weights @ (dx * dx), weights @ (dy * dy)
            return float(weights @ (dx * dy) / math.sqrt(vx * vy)) if vx > 1e-12 * weights.sum() and vy > 0 else math.nan

        return score

    return prepare


def roc_auc_of(forecast: str, truth: str) -> Callable[[Items, Items], Scorer]:
    """The area under the ROC curve of a score against 0/1 labels (ties count a half); NaN with one class.

    The items are sorted once; a weighting then costs two bincounts and a cumulative sum.
    """

    def prepare(forecasts: Items, truths: Items) -> Scorer:
        order = np.argsort(forecasts[forecast], kind="stable")
        ranked, positive = np.asarray(forecasts[forecast])[order], np.asarray(truths[truth])[order] == 1
        ties = np.concatenate([[0], np.cumsum(ranked[1:] != ranked[:-1])]) if len(ranked) else np.zeros(0, int)
        groups = int(ties[-1]) + 1 if len(ties) else 0

        def score(weights: np.ndarray) -> float:
            weights = weights[order]
            pos = np.bincount(ties, weights=weights * positive, minlength=groups)
            neg = np.bincount(ties, weights=weights * ~positive, minlength=groups)
            if pos.sum() == 0 or neg.sum() == 0:
                return math.nan
            return float(pos @ (np.cumsum(neg) - neg / 2) / (pos.sum() * neg.sum()))

        return score

    return prepare


def _point(prepare: Callable[[Items, Items], Scorer], forecast: np.ndarray, truth: np.ndarray) -> float:
    return prepare({"x": forecast}, {"x": truth})(np.ones(len(truth)))


def accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    """The fraction of items whose prediction equals the truth."""
    return _point(accuracy_of("x", "x"), predicted, truth)


def roc_auc(probability: np.ndarray, label: np.ndarray) -> float:
    """The area under the ROC curve; NaN with one class."""
    return _point(roc_auc_of("x", "x"), probability, label)


def correlation(predicted: np.ndarray, observed: np.ndarray) -> float:
    """Pearson's correlation; NaN for fewer than two items or a constant prediction."""
    return _point(correlation_of("x", "x"), predicted, observed)


def rmse(predicted: np.ndarray, observed: np.ndarray) -> float:
    """The root mean squared error."""
    return _point(rmse_of("x", "x"), predicted, observed)


# -- resampling and scoring ------------------------------------------------------------------


def resamples(n: int, *, block: int | None, count: int = RESAMPLES, seed: int = 0) -> Iterator[np.ndarray]:
    """Bootstrap weights of n items (how often each is drawn), `count` times, seeded.

    Independent items are drawn one by one; with `block`, runs of `block` consecutive items
    are drawn (the moving-block bootstrap of a series), cut to n items. A series shorter than
    two blocks is drawn in blocks of half its length: a single block would be the whole series
    in every resample, an interval of width zero that claims certainty from a handful of months.
    """
    rng = np.random.default_rng(seed)
    length = min(block or 1, max(n // 2, 1))
    for _ in range(count):
        starts = rng.integers(0, n - length + 1, -(-n // length))
        drawn = (starts[:, None] + np.arange(length)).ravel()[:n]
        yield np.bincount(drawn, minlength=n).astype(np.float64)


def _interval(draws: np.ndarray) -> list[float]:
    finite = draws[np.isfinite(draws)]
    if len(finite) < len(draws) / 2:  # undefined in most resamples: no interval
        return [math.nan, math.nan]
    return [float(v) for v in np.percentile(finite, [(100 - LEVEL) / 2, (100 + LEVEL) / 2])]


def score(scoring: Scoring, truth: Items, forecasts: Mapping[str, Items], *, group: Any = None,
          seed: int = 0) -> list[dict[str, Any]]:
    """Skill rows of every method's forecasts of the same items, each metric with its 95% interval.

    Args:
        scoring: the task's scoring.
        truth: the items' true values by name (e.g. {"label": ...}), in order (time order for blocks).
        forecasts: method -> its forecasts by name; the model's is MODEL.
        group: the value of `scoring.group` these rows share (ENSO: the lead), or None.
        seed: seeds the resamples (the same for every method: the differences are paired).

    Returns:
        One row per method: {group, "method", metric: value, count: n, "interval": {metric: [low, high]}};
        the model's row also has "versus": {baseline: {"difference": d, "interval": [low, high]}} on
        the primary metric (model minus baseline).
    """
    n = len(next(iter(truth.values())))
    scorers = {name: [metric.prepare(forecast, truth) for metric in scoring.metrics]
               for name, forecast in forecasts.items()}
    ones = np.ones(n)
    points = {name: np.array([scorer(ones) for scorer in found]) for name, found in scorers.items()}
    draws = {name: np.empty((RESAMPLES, len(scoring.metrics))) for name in scorers}
    for index, weights in enumerate(resamples(n, block=scoring.block, seed=seed)):
        for name, found in scorers.items():
            draws[name][index] = [scorer(weights) for scorer in found]
    primary = [metric.key for metric in scoring.metrics].index(scoring.primary)
    rows = []
    for name in scorers:
        row = {**({scoring.group: group} if scoring.group else {}), "method": name,
               **{metric.key: float(points[name][j]) for j, metric in enumerate(scoring.metrics)}, scoring.count: n,
               "interval": {metric.key: _interval(draws[name][:, j]) for j, metric in enumerate(scoring.metrics)}}
        if name == MODEL:
            row["versus"] = {other: {"difference": float(points[name][primary] - points[other][primary]),
                                     "interval": _interval(draws[name][:, primary] - draws[other][:, primary])}
                             for other in scorers if other != MODEL}
        rows.append(row)
    return rows


# -- showing and judging -----------------------------------------------------------------------


def digits(interval: Sequence[float] | None, default: int) -> int:
    """Decimals that an interval supports: two significant digits of its half-width (0 to 6)."""
    if not interval or not all(map(math.isfinite, interval)) or interval[1] <= interval[0]:
        return default
    return min(6, max(0, 1 - math.floor(math.log10((interval[1] - interval[0]) / 2))))


def _cell(value: float, interval: Sequence[float] | None, default: int) -> str:
    if not (interval and all(map(math.isfinite, interval))):  # an old entry, or undefined in most resamples
        return f"{value:.{default}f}"
    places = digits(interval, default)
    return f"{value:.{places}f} [{interval[0]:.{places}f}, {interval[1]:.{places}f}]"


def skill_table(scoring: Scoring, metrics: Mapping[str, Any]) -> SkillTable:
    """The skill rows of `metrics["skill"]` as a table (values with their 95% intervals), with the verdict."""
    skill = metrics["skill"]
    keys = ([scoring.group] if scoring.group else []) + ["method"]
    columns = (*keys, *(f"{metric.label} [95% interval]" for metric in scoring.metrics), scoring.count)
    rows = tuple((*(str(row[key]) for key in keys),
                  *(_cell(row[metric.key], row.get("interval", {}).get(metric.key), metric.digits)
                    for metric in scoring.metrics), str(row[scoring.count])) for row in skill)
    return SkillTable(title=scoring.title.format(**metrics), columns=columns, rows=rows,
                      verdict=verdict(scoring, skill), model_rows=tuple(row["method"] == MODEL for row in skill))


@dataclass(frozen=True)
class Comparison:
    """The model against the best baseline on the primary metric, in one group (None: all rows).

    Attributes:
        outcome: "better", "worse" or "not distinguishable" (the paired interval of the
            difference holds 0); by the values alone when the rows have no interval.
        difference, interval: model minus baseline, and its paired 95% interval (None without one).
    """

    group: Any
    model: float
    baseline: str
    best: float
    outcome: str
    difference: float
    interval: tuple[float, float] | None

    @property
    def wins(self) -> bool:
        """The model is better than the best baseline, beyond the test's noise."""
        return self.outcome == "better"


def comparisons(scoring: Scoring, skill: Sequence[Mapping[str, Any]]) -> list[Comparison]:
    """Per group (or once): the model against the best baseline (by value) and the outcome.

    A baseline whose metric is undefined (NaN) is not a contender; a model whose metric is
    undefined is worse.
    """
    metric = scoring.primary_metric
    sign = 1.0 if metric.higher_is_better else -1.0
    found = []
    for group in sorted({row[scoring.group] for row in skill}) if scoring.group else [None]:
        rows = [row for row in skill if group is None or row[scoring.group] == group]
        model_row = next(row for row in rows if row["method"] == MODEL)
        model = model_row[metric.key]
        contenders = [(row["method"], row[metric.key]) for row in rows
                      if row["method"] != MODEL and math.isfinite(row[metric.key])]
        name, best = max(contenders, key=lambda item: sign * item[1], default=("none", -sign * math.inf))
        paired = model_row.get("versus", {}).get(name)
        interval = tuple(paired["interval"]) if paired and all(map(math.isfinite, paired["interval"])) else None
        if not math.isfinite(model):
            outcome = "worse"
        elif interval is None:
            outcome = "better" if sign * model > sign * best else "worse"
        else:  # the paired interval of model minus baseline, turned so that above 0 is better
            low, high = sorted((sign * interval[0], sign * interval[1]))
            outcome = "better" if low > 0 else "worse" if high < 0 else "not distinguishable"
        found.append(Comparison(group, model, name, best, outcome, model - best, interval))
    return found


def _judged(metric: Metric, one: Comparison) -> str:
    where = digits(one.interval, metric.digits)
    values = f"{metric.label} {one.model:.{where}f} vs {one.best:.{where}f}"
    if one.interval is None:
        return f"{one.outcome} than {one.baseline} ({values}; no interval: run `shoal evaluate` again)"
    low, high = one.interval
    paired = f"{values}, difference {one.difference:+.{where}f} [{low:+.{where}f}, {high:+.{where}f}]"
    if one.outcome == "not distinguishable":
        return f"not distinguishable from {one.baseline} at this test size ({paired})"
    return f"{one.outcome} than {one.baseline} ({paired})"


def verdict(scoring: Scoring, skill: Sequence[Mapping[str, Any]]) -> str:
    """The model against the best baseline on the primary metric, per group when rows are grouped."""
    metric = scoring.primary_metric
    found = comparisons(scoring, skill)
    if scoring.group is None:
        (one,) = found
        return f"The model is {_judged(metric, one)}."
    said = "; ".join(f"at {scoring.group} {one.group} the model is {_judged(metric, one)}" for one in found)
    return said[:1].upper() + said[1:] + "."

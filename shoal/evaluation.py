"""Evaluation written once: metric functions, the skill table, the verdict against the best baseline.

A task scores its model and its baselines on the same test rows into skill rows (one dict per
method, and per group such as the forecast lead), and declares how they are shown and judged
as data: a `Scoring` (title, metric columns with their precision, the metric the verdict
compares, the column that counts the rows, the grouping column). `skill_table` and `verdict`
do the rest for every task the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MODEL = "model"  # the method name of the model's own rows; every other method is a baseline


@dataclass(frozen=True)
class Metric:
    """A column of the skill rows: its key, its header, and the digits it is printed with."""

    key: str
    label: str
    digits: int = 3
    higher_is_better: bool = True


@dataclass(frozen=True)
class Scoring:
    """How a task's skill rows are shown and judged.

    Attributes:
        title: the table's title, formatted with the metrics `evaluate` returned (e.g. "{split}").
        metrics: the metric columns, in order.
        primary: the key of the metric the verdict compares.
        count: the key and header of the column that counts the scored items ("rows", "clips", "months").
        group: the key that splits the rows into separate comparisons (ENSO: "lead"), or None.
    """

    title: str
    metrics: tuple[Metric, ...]
    primary: str
    count: str
    group: str | None = None

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


# -- metrics: NaN where a metric is undefined (one class, a constant prediction) ------------


def accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    """The fraction of items whose prediction equals the truth."""
    return float(np.mean(predicted == truth)) if len(truth) else math.nan


def roc_auc(probability: np.ndarray, label: np.ndarray) -> float:
    """The area under the ROC curve of a probability against binary labels; NaN with one class."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(label, probability)) if len(np.unique(label)) == 2 else math.nan


def correlation(predicted: np.ndarray, observed: np.ndarray) -> float:
    """Pearson's correlation; NaN for fewer than two items or a constant prediction."""
    if len(observed) < 2 or predicted.std() == 0:
        return math.nan
    return float(np.corrcoef(predicted, observed)[0, 1])


def rmse(predicted: np.ndarray, observed: np.ndarray) -> float:
    """The root mean squared error."""
    return float(np.sqrt(np.mean((predicted - observed) ** 2))) if len(observed) else math.nan


# -- showing and judging -----------------------------------------------------------------------


def skill_table(scoring: Scoring, metrics: Mapping[str, Any]) -> SkillTable:
    """The skill rows of `metrics["skill"]` as a table, with the verdict."""
    skill = metrics["skill"]
    keys = ([scoring.group] if scoring.group else []) + ["method"]
    columns = (*keys, *(metric.label for metric in scoring.metrics), scoring.count)
    rows = tuple((*(str(row[key]) for key in keys), *(f"{row[metric.key]:.{metric.digits}f}" for metric in scoring.metrics),
                  str(row[scoring.count])) for row in skill)
    return SkillTable(title=scoring.title.format(**metrics), columns=columns, rows=rows,
                      verdict=verdict(scoring, skill), model_rows=tuple(row["method"] == MODEL for row in skill))


@dataclass(frozen=True)
class Comparison:
    """The model against the best baseline on the primary metric, in one group (None: all rows)."""

    group: Any
    model: float
    baseline: str
    best: float
    wins: bool


def comparisons(scoring: Scoring, skill: Sequence[Mapping[str, Any]]) -> list[Comparison]:
    """Per group (or once): the model's value, the best baseline and its value, and whether the model wins.

    A baseline whose metric is undefined (NaN) is not a contender; a model whose metric is
    undefined loses.
    """
    metric = scoring.primary_metric
    sign = 1.0 if metric.higher_is_better else -1.0
    found = []
    for group in sorted({row[scoring.group] for row in skill}) if scoring.group else [None]:
        rows = [row for row in skill if group is None or row[scoring.group] == group]
        model = next(row[metric.key] for row in rows if row["method"] == MODEL)
        contenders = [(row["method"], row[metric.key]) for row in rows
                      if row["method"] != MODEL and math.isfinite(row[metric.key])]
        name, best = max(contenders, key=lambda item: sign * item[1], default=("none", -sign * math.inf))
        found.append(Comparison(group, model, name, best, math.isfinite(model) and sign * model > sign * best))
    return found


def verdict(scoring: Scoring, skill: Sequence[Mapping[str, Any]]) -> str:
    """Whether the model beats the best baseline on the primary metric: per group when rows are grouped."""
    metric = scoring.primary_metric
    digits = metric.digits
    found = comparisons(scoring, skill)
    if scoring.group is None:
        (one,) = found
        if one.wins:
            return f"The model beats every baseline: test {metric.label} {one.model:.{digits}f} vs {one.baseline} {one.best:.{digits}f}"
        return f"The model loses to the {one.baseline} baseline: test {metric.label} {one.model:.{digits}f} vs {one.best:.{digits}f}"
    wins = [str(c.group) for c in found if c.wins]
    losses = [f"{scoring.group} {c.group} ({c.baseline} {c.best:.{digits}f} vs model {c.model:.{digits}f})"
              for c in found if not c.wins]
    parts = [f"The model beats every baseline's {metric.label} at {scoring.group} {', '.join(wins)}"] if wins else []
    if losses:
        parts.append(f"{'it' if wins else 'The model'} loses to the best baseline at {'; '.join(losses)}")
    return "; ".join(parts)

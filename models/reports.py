"""Plots of a task's results, drawn on `matplotlib.figure.Figure` objects directly: `X_figure` builds one, `plot_X`
writes it as a PNG.

No pyplot: the user's backend and global figure state are never touched, and nothing
needs a display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shoal.files import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

USEFUL_CORRELATION = 0.5
"""The correlation above which ENSO forecasts are usually called skilful (e.g. Ham et al. 2019, Nature 573): a
reference line of the skill plot."""


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if figure.get_layout_engine() is None:
        figure.tight_layout()
    with atomic_write(path) as f:
        figure.savefig(f, format="png", dpi=100)
    return path


def hindcast_figure(table: pa.Table, *, lead: int, title: str, note: str | None = None) -> Figure:
    """Predicted vs observed Niño 3.4 anomaly of the hindcast rows at `lead`, periods shaded.

    Args:
        table: the predictions (ENSO predictions schema).
        lead: the lead in months whose hindcasts are drawn.
        title: the figure's title.
        note: a line under the plot, e.g. that the SST the model read is synthetic sample data.
    """
    from matplotlib.figure import Figure

    rows = table.filter(pc.and_(pc.equal(table["lead"], lead),
                                        pc.equal(table["kind"], "hindcast"))).to_pydict()
    figure = Figure(figsize=(10, 3.8 if note else 3.5))
    axes = figure.add_subplot()
    months = np.array(rows["target_month"], dtype="datetime64[D]")
    observed = np.array([np.nan if v is None else v for v in rows["observed_anom_c"]], dtype=np.float64)
    axes.plot(months, observed, label="observed (NINO34_ANOM)", color="black")
    axes.plot(months, rows["predicted_anom_c"], label=f"predicted, lead {lead}", color="tab:red")
    test = [m for m, p in zip(months, rows["period"], strict=True) if p == "test"]
    if test:
        axes.axvspan(min(test), max(test), color="tab:blue", alpha=0.08, label="test period")
    axes.axhline(0.0, color="grey", linewidth=0.5)
    axes.set_xlabel(f"target month (forecast issued {lead} month{'s' if lead != 1 else ''} before)")
    axes.set_ylabel("Niño 3.4 anomaly (°C)")
    axes.set_title(title)
    axes.legend(loc="upper left")
    if note:
        figure.text(0.01, 0.01, note, fontsize=9, color="tab:red", ha="left", va="bottom")
        figure.set_layout_engine("tight", rect=(0.0, 0.06, 1.0, 1.0))  # room for the note under the axis label
    return figure


def plot_hindcast(path: Path, table: pa.Table, *, lead: int, title: str, note: str | None = None) -> Path:
    """`hindcast_figure` written to `path` as a PNG."""
    return _save(hindcast_figure(table, lead=lead, title=title, note=note), path)


def skill_figure(skill: Sequence[Mapping[str, Any]], *, title: str) -> Figure:
    """Test correlation against lead, one line per method (the model and each baseline), with its 95% interval.

    Intervals are bands between leads; at a single lead, where a band has no width, they are
    error bars. The reference lines are named in the legend.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    figure = Figure(figsize=(8.5, 4.2))
    axes = figure.add_subplot()
    all_leads = sorted({row["lead"] for row in skill})
    methods = list(dict.fromkeys(row["method"] for row in skill))
    intervals = False
    for index, method in enumerate(methods):
        rows = sorted((row for row in skill if row["method"] == method), key=lambda row: row["lead"])
        # One lead: the methods side by side, so that each one's interval shows.
        leads = [row["lead"] + (0.0 if len(all_leads) > 1 else 0.12 * (index - (len(methods) - 1) / 2)) for row in rows]
        values = [row["correlation"] for row in rows]
        line, = axes.plot(leads, values, marker="o", label=method, linewidth=2.5 if method == "model" else 1.2)
        band = np.array([row.get("interval", {}).get("correlation", [np.nan, np.nan]) for row in rows], dtype=float)
        if not np.isfinite(band).any():
            continue
        intervals = True
        if len(all_leads) > 1:
            axes.fill_between(leads, band[:, 0], band[:, 1], color=line.get_color(), alpha=0.15, linewidth=0)
        else:
            axes.errorbar(leads, values, yerr=[np.subtract(values, band[:, 0]), np.subtract(band[:, 1], values)],
                          fmt="none", ecolor=line.get_color(), capsize=4)
    axes.axhline(USEFUL_CORRELATION, color="grey", linewidth=0.8, linestyle="--",
                 label=f"{USEFUL_CORRELATION}: usual threshold of a useful forecast")
    axes.axhline(0.0, color="grey", linewidth=0.8, linestyle=":", label="0: no skill")
    handles, labels = axes.get_legend_handles_labels()
    if intervals:
        handles.append(Patch(color="grey", alpha=0.3) if len(all_leads) > 1
                       else Line2D([], [], color="grey", marker="|", markersize=12, linestyle="none"))
        labels.append("95% interval")
    # Whole months only, with room either side: one lead would otherwise get a 0.1-month axis.
    margin = 0.5 if len(all_leads) > 1 else 1.0
    axes.set_xticks(all_leads)
    axes.set_xlim(all_leads[0] - margin, all_leads[-1] + margin)
    axes.set_xlabel("lead (months)")
    axes.set_ylabel("correlation on the test period")
    axes.set_title(title)
    axes.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # bands stay visible
    return figure


def plot_skill(path: Path, skill: Sequence[Mapping[str, Any]], *, title: str) -> Path:
    """`skill_figure` written to `path` as a PNG."""
    return _save(skill_figure(skill, title=title), path)


def seasons_figure(by_season: Sequence[Mapping[str, Any]], seasons: Sequence[str], *, title: str) -> Figure:
    """Heat maps of the model's correlation and RMSE by lead (rows) and target season (columns), beside the
    correlation of the best baseline in each cell: where the model's skill is, and the spring barrier."""
    from matplotlib.figure import Figure

    leads = sorted({row["lead"] for row in by_season})
    panels = {"model correlation": ("correlation", lambda rows: [r for r in rows if r["method"] == "model"], max),
              "best baseline correlation": ("correlation", lambda rows: [r for r in rows if r["method"] != "model"],
                                            max),
              "model RMSE °C": ("rmse_c", lambda rows: [r for r in rows if r["method"] == "model"], min)}
    figure = Figure(figsize=(4.2 * len(panels), 0.6 * len(leads) + 2.2))
    for index, (label, (key, which, best)) in enumerate(panels.items()):
        grid = np.full((len(leads), len(seasons)), np.nan)
        for i, lead in enumerate(leads):
            for j, season in enumerate(seasons):
                values = [r[key] for r in which([r for r in by_season if r["lead"] == lead and r["season"] == season])
                          if np.isfinite(r[key])]
                grid[i, j] = best(values) if values else np.nan
        axes = figure.add_subplot(1, len(panels), index + 1)
        image = axes.imshow(grid, cmap="RdBu_r" if key == "correlation" else "viridis", aspect="auto",
                            **({"vmin": -1.0, "vmax": 1.0} if key == "correlation" else {}))
        for (i, j), value in np.ndenumerate(grid):
            axes.text(j, i, "" if np.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=8)
        axes.set_xticks(range(len(seasons)), seasons)
        axes.set_yticks(range(len(leads)), [str(lead) for lead in leads])
        axes.set_xlabel("target season")
        axes.set_ylabel("lead (months)")
        axes.set_title(label, fontsize=10)
        figure.colorbar(image, ax=axes, shrink=0.8)
    figure.suptitle(title)
    return figure


def plot_seasons(path: Path, by_season: Sequence[Mapping[str, Any]], seasons: Sequence[str], *, title: str) -> Path:
    """`seasons_figure` written to `path` as a PNG."""
    return _save(seasons_figure(by_season, seasons, title=title), path)


def confusion_figure(confusion: np.ndarray, labels: Sequence[str], *, title: str) -> Figure:
    """The confusion matrix (rows: true label, columns: predicted), coloured by each row's fractions.

    Every non-zero cell shows its count, each row label its number of test clips; the row of a
    word with no test clip is hatched and its label says so (its fractions are undefined, not
    zero). The title gets the accuracy and the number of clips.
    """
    from matplotlib.figure import Figure

    confusion = np.asarray(confusion)
    totals = confusion.sum(axis=1)
    fractions = np.divide(confusion, totals[:, None], out=np.full(confusion.shape, np.nan), where=totals[:, None] > 0)
    n = int(totals.sum())
    correct = int(np.trace(confusion))
    side = max(6.0, 0.3 * len(labels) + 3.0)
    figure = Figure(figsize=(side + 1.2, side))
    axes = figure.add_subplot()
    image = axes.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    small = 8 if len(labels) <= 20 else 7
    for (i, j), count in np.ndenumerate(confusion):
        if count:
            axes.text(j, i, str(count), ha="center", va="center", fontsize=small,
                      color="white" if fractions[i, j] > 0.6 else "black")
    for i in np.nonzero(totals == 0)[0]:
        axes.axhspan(i - 0.5, i + 0.5, facecolor="none", edgecolor="grey", hatch="///", linewidth=0)
    axes.set_xticks(range(len(labels)), labels, rotation=90, fontsize=8)
    axes.set_yticks(range(len(labels)), [f"{label} (n={total})" if total else f"{label} (no test clips)"
                                         for label, total in zip(labels, totals, strict=True)], fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true (test clips)")
    accuracy = f"{correct / n:.1%}" if n else "undefined"
    axes.set_title(f"{title}\naccuracy {accuracy} ({correct} of n = {n} test clips)")
    figure.colorbar(image, ax=axes, fraction=0.046, label="fraction of the true word's clips")
    return figure


def plot_confusion(path: Path, confusion: np.ndarray, labels: Sequence[str], *, title: str) -> Path:
    """`confusion_figure` written to `path` as a PNG."""
    return _save(confusion_figure(confusion, labels, title=title), path)


def masks_figure(masks: np.ndarray, features: Sequence[str], *, probability: np.ndarray,
               importances: np.ndarray, title: str) -> Figure:
    """A heat map of per-row feature importances (features x rows), as the TabNet analysis drew its masks.

    The rows are sorted by P(signal): confident background on the left, confident signal on
    the right, the predicted class changing at the white line; a strip above shows P(signal).
    The features are ordered by global importance, most important on top, with that importance
    as a bar chart beside the heat map.

    Args:
        masks: (rows, features) the aggregated masks M_explain of the rows.
        features: the feature names.
        probability: (rows,) each row's predicted P(signal).
        importances: (features,) the global importances.
        title: the figure's title.
    """
    from matplotlib.figure import Figure

    rows = np.argsort(probability, kind="stable")
    columns = np.argsort(-np.asarray(importances), kind="stable")
    background = int(np.count_nonzero(probability < 0.5))  # predicted_label is P(signal) >= 0.5
    figure = Figure(figsize=(12, 6.5), layout="constrained")
    grid = figure.add_gridspec(2, 3, width_ratios=(6.0, 1.4, 0.15), height_ratios=(1.0, 6.0))
    heat = figure.add_subplot(grid[1, 0])
    strip = figure.add_subplot(grid[0, 0], sharex=heat)
    bars = figure.add_subplot(grid[1, 1], sharey=heat)
    image = heat.imshow(masks[rows][:, columns].T, aspect="auto", cmap="viridis", interpolation="nearest")
    heat.set_yticks(range(len(features)), [features[c] for c in columns], fontsize=7)
    heat.set_xlabel(f"test rows sorted by P(signal): {background} predicted background | "
                    f"{len(rows) - background} predicted signal")
    strip.plot(np.arange(len(rows)), probability[rows], color="black", linewidth=1)
    strip.axhline(0.5, color="grey", linewidth=0.5, linestyle="--")
    strip.set_ylim(0.0, 1.0)
    strip.set_ylabel("P(signal)", fontsize=8)
    strip.tick_params(labelbottom=False, labelsize=7)
    for axes in (heat, strip):
        axes.axvline(background - 0.5, color="white" if axes is heat else "grey", linewidth=1)
    bars.barh(range(len(features)), np.asarray(importances)[columns], color="tab:blue")
    bars.tick_params(labelleft=False, labelsize=7)
    bars.set_xlabel("global importance\n(share of attention)", fontsize=8)
    figure.colorbar(image, cax=figure.add_subplot(grid[1, 2]), label="share of the row's attention")
    strip.set_title(title)
    return figure


def plot_masks(path: Path, masks: np.ndarray, features: Sequence[str], *, probability: np.ndarray,
               importances: np.ndarray, title: str) -> Path:
    """`masks_figure` written to `path` as a PNG."""
    return _save(masks_figure(masks, features, probability=probability, importances=importances, title=title), path)

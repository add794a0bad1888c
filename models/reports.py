"""Plots of a task's results, drawn on `matplotlib.figure.Figure` objects directly.

No pyplot: the user's backend and global figure state are never touched, and nothing
needs a display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shoal.files import atomic_write


def _save(figure: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    with atomic_write(path) as f:
        figure.savefig(f, format="png", dpi=100)
    return path


def plot_hindcast(path: Path, table: pa.Table, *, lead: int, title: str) -> Path:
    """Predicted vs observed Niño 3.4 anomaly of the hindcast rows at `lead`, periods shaded."""
    from matplotlib.figure import Figure

    rows = table.filter(pc.and_(pc.equal(table["lead"], lead),
                                        pc.equal(table["kind"], "hindcast"))).to_pydict()
    figure = Figure(figsize=(10, 3.5))
    axes = figure.add_subplot()
    months = np.array(rows["target_month"], dtype="datetime64[D]")
    observed = np.array([np.nan if v is None else v for v in rows["observed_anom_c"]], dtype=np.float64)
    axes.plot(months, observed, label="observed (NINO34_ANOM)", color="black")
    axes.plot(months, rows["predicted_anom_c"], label=f"predicted, lead {lead}", color="tab:red")
    test = [m for m, p in zip(months, rows["period"], strict=True) if p == "test"]
    if test:
        axes.axvspan(min(test), max(test), color="tab:blue", alpha=0.08, label="test period")
    axes.axhline(0.0, color="grey", linewidth=0.5)
    axes.set_ylabel("Niño 3.4 anomaly (°C)")
    axes.set_title(title)
    axes.legend(loc="upper left")
    return _save(figure, path)


def plot_skill(path: Path, skill: Sequence[Mapping[str, Any]], *, title: str) -> Path:
    """Test correlation against lead, one line per method (the model and each baseline), with its 95% band."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    for method in dict.fromkeys(row["method"] for row in skill):
        rows = sorted((row for row in skill if row["method"] == method), key=lambda row: row["lead"])
        leads = [row["lead"] for row in rows]
        line, = axes.plot(leads, [row["correlation"] for row in rows], marker="o", label=method,
                          linewidth=2.5 if method == "model" else 1.2)
        band = [row.get("interval", {}).get("correlation", [np.nan, np.nan]) for row in rows]
        axes.fill_between(leads, [low for low, _ in band], [high for _, high in band], color=line.get_color(),
                          alpha=0.15, linewidth=0)
    axes.axhline(0.5, color="grey", linewidth=0.5, linestyle="--")
    axes.set_xlabel("lead (months)")
    axes.set_ylabel("correlation on the test period")
    axes.set_title(title)
    axes.legend()
    return _save(figure, path)


def plot_seasons(path: Path, by_season: Sequence[Mapping[str, Any]], seasons: Sequence[str], *, title: str) -> Path:
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
    return _save(figure, path)


def plot_confusion(path: Path, confusion: np.ndarray, labels: Sequence[str], *, title: str) -> Path:
    """The confusion matrix (rows: true label, columns: predicted), each row as fractions of its clips."""
    from matplotlib.figure import Figure

    totals = confusion.sum(axis=1, keepdims=True)
    fractions = np.divide(confusion, totals, out=np.zeros(confusion.shape), where=totals > 0)
    figure = Figure(figsize=(9, 8))
    axes = figure.add_subplot()
    image = axes.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(len(labels)), labels, rotation=90, fontsize=8)
    axes.set_yticks(range(len(labels)), labels, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, fraction=0.046, label="fraction of the true word's clips")
    return _save(figure, path)


def plot_masks(path: Path, masks: np.ndarray, features: Sequence[str], *, title: str) -> Path:
    """A heatmap of per-row feature importances (rows x features), as the TabNet analysis drew its masks."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 5))
    axes = figure.add_subplot()
    image = axes.imshow(masks.T, aspect="auto", cmap="viridis", interpolation="nearest")
    axes.set_yticks(range(len(features)), features, fontsize=7)
    axes.set_xlabel("test row")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, label="share of the row's attention")
    return _save(figure, path)

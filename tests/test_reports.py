"""The plots a scientist shows: what each figure says, read from matplotlib's objects (texts, images), not pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.patches import Rectangle

from shoal.catalog import Catalog
from shoal.contract import get_task
from shoal.datasets import cobe_sst, oni
from shoal.datasets.cobe_sst_sample import months_between, sample_fields, write_grib, write_sample
from shoal.features.enso import EnsoFeatures
from shoal.models.reports import (confusion_figure, hindcast_figure, masks_figure, plot_confusion, plot_hindcast,
                                  plot_masks, plot_skill, skill_figure)
from shoal.progress import NULL
from shoal.tasks.enso import sample_note

LABELS = ["yes", "no", "up", "down"]
CONFUSION = np.array([[5, 1, 0, 0], [2, 7, 0, 1], [0, 0, 0, 0], [0, 3, 0, 4]])  # "up" has no test clip


def _texts(axes) -> dict[tuple[float, float], str]:  # noqa: ANN001
    return {tuple(np.round(text.get_position(), 6)): text.get_text() for text in axes.texts}


def _skill(leads: tuple[int, ...], *, intervals: bool) -> list[dict]:
    rows = []
    for lead in leads:
        for method, value in (("model", 0.8 - 0.05 * lead), ("persistence", 0.9 - 0.1 * lead)):
            row = {"lead": lead, "method": method, "correlation": value}
            if intervals and method == "model":  # the baseline has none: it gets no band
                row["interval"] = {"correlation": [value - 0.1, value + 0.05]}
            rows.append(row)
    return rows


def _hindcast_table(months: int = 36) -> pa.Table:
    target = np.arange(np.datetime64("2000-01"), np.datetime64("2000-01") + months).astype("datetime64[D]")
    observed = np.sin(np.arange(months) / 6.0)
    return pa.table({"target_month": target, "lead": [1] * months, "kind": ["hindcast"] * months,
                     "period": ["valid"] * (months // 2) + ["test"] * (months - months // 2),
                     "observed_anom_c": observed, "predicted_anom_c": observed + 0.1})


# -- speech: the confusion matrix ------------------------------------------------------------


def test_confusion_cells_hold_their_counts_and_rows_their_number_of_clips() -> None:
    axes = confusion_figure(CONFUSION, LABELS, title="cnn v0").axes[0]
    texts = _texts(axes)
    for (i, j), count in np.ndenumerate(CONFUSION):
        if count:
            assert texts[(float(j), float(i))] == str(count)
    rows = [label.get_text() for label in axes.get_yticklabels()]
    assert rows[0] == "yes (n=6)" and rows[1] == "no (n=10)" and rows[3] == "down (n=7)"


def test_confusion_title_gives_the_accuracy_and_the_number_of_clips() -> None:
    title = confusion_figure(CONFUSION, LABELS, title="cnn v0").axes[0].get_title()
    assert title.startswith("cnn v0\n") and "accuracy 69.6%" in title and "n = 23" in title  # 16 of 23


def test_a_word_without_test_clips_is_marked_not_left_blank() -> None:
    axes = confusion_figure(CONFUSION, LABELS, title="cnn v0").axes[0]
    assert axes.get_yticklabels()[2].get_text() == "up (no test clips)"
    (hatched,) = [patch for patch in axes.patches if patch.get_hatch()]
    rows = hatched.get_path().transformed(hatched.get_patch_transform()).vertices[:, 1]
    assert (rows.min(), rows.max()) == (1.5, 2.5)  # the row of "up"


# -- HIGGS: the masks ------------------------------------------------------------------------


def test_mask_rows_are_sorted_by_predicted_signal_and_features_by_global_importance() -> None:
    rng = np.random.default_rng(0)
    masks = rng.dirichlet(np.ones(4), 50)  # (rows, features)
    probability = rng.uniform(0.0, 1.0, 50)
    importances = np.array([0.1, 0.4, 0.2, 0.3])
    figure = masks_figure(masks, ["a", "b", "c", "d"], probability=probability, importances=importances, title="t")
    (heat,) = [axes for axes in figure.axes if axes.images]
    shown = heat.images[0].get_array()
    rows, columns = np.argsort(probability), [1, 3, 2, 0]
    np.testing.assert_array_equal(shown, masks[rows][:, columns].T)  # features down, rows across
    assert [label.get_text() for label in heat.get_yticklabels()] == ["b", "d", "c", "a"]
    assert f"{np.count_nonzero(probability < 0.5)} predicted background" in heat.get_xlabel()


def test_global_importance_is_a_bar_chart_beside_the_masks_in_the_same_order() -> None:
    importances = np.array([0.1, 0.4, 0.2, 0.3])
    figure = masks_figure(np.full((5, 4), 0.25), ["a", "b", "c", "d"], probability=np.linspace(0, 1, 5),
                          importances=importances, title="t")
    (bars,) = [axes for axes in figure.axes if [p for p in axes.patches if isinstance(p, Rectangle)]]
    widths = [patch.get_width() for patch in bars.patches]
    centres = [patch.get_y() + patch.get_height() / 2 for patch in bars.patches]
    assert widths == [0.4, 0.3, 0.2, 0.1] and centres == [0, 1, 2, 3]  # row i of the heat map is bar i
    heat = next(axes for axes in figure.axes if axes.images)
    assert bars.get_shared_y_axes().joined(bars, heat)


# -- ENSO: skill by lead ---------------------------------------------------------------------


def test_skill_at_one_lead_has_an_axis_of_whole_months_around_it() -> None:
    axes = skill_figure(_skill((3,), intervals=True), title="t").axes[0]
    low, high = axes.get_xlim()
    assert np.isfinite([low, high]).all() and low <= 2 and high >= 4
    assert list(axes.get_xticks()) == [3]
    assert [c for c in axes.collections if isinstance(c, LineCollection)]  # the interval, as an error bar


def test_skill_reference_lines_are_named_in_the_legend() -> None:
    axes = skill_figure(_skill((1, 3, 6), intervals=False), title="t").axes[0]
    horizontal = [line for line in axes.lines if len(set(line.get_ydata())) == 1 and len(line.get_ydata()) == 2]
    legend = [text.get_text() for text in axes.get_legend().get_texts()]
    assert {line.get_ydata()[0] for line in horizontal} == {0.0, 0.5}
    for line in horizontal:
        assert not line.get_label().startswith("_") and line.get_label() in legend
    assert any(label.startswith("0.5: ") for label in legend)


def test_skill_intervals_are_bands_for_the_methods_that_have_them() -> None:
    with_intervals = skill_figure(_skill((1, 3, 6), intervals=True), title="t").axes[0]
    bands = [c for c in with_intervals.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1  # the model's; the baseline without intervals gets none
    band = bands[0].get_paths()[0].vertices
    assert band[:, 1].min() == pytest.approx(0.8 - 0.05 * 6 - 0.1)  # the lower end at lead 6
    assert band[:, 1].max() == pytest.approx(0.8 - 0.05 * 1 + 0.05)  # the upper end at lead 1
    assert "95% interval" in [text.get_text() for text in with_intervals.get_legend().get_texts()]
    without = skill_figure(_skill((1, 3, 6), intervals=False), title="t").axes[0]
    assert not [c for c in without.collections if isinstance(c, PolyCollection)]


# -- ENSO: the hindcast ----------------------------------------------------------------------


def test_hindcast_axes_say_what_they_measure_and_in_which_unit() -> None:
    axes = hindcast_figure(_hindcast_table(), lead=1, title="t").axes[0]
    assert "(°C)" in axes.get_ylabel()
    assert axes.get_xlabel() == "target month (forecast issued 1 month before)"


def test_hindcast_shows_a_note_only_when_given_one() -> None:
    noted = hindcast_figure(_hindcast_table(), lead=1, title="t", note="SST: synthetic sample data")
    assert [text.get_text() for text in noted.texts] == ["SST: synthetic sample data"]
    assert not hindcast_figure(_hindcast_table(), lead=1, title="t").texts


def _enso_home(root: Path, *, marked: bool) -> tuple[Catalog, EnsoFeatures]:
    catalog = Catalog(root / "home")
    if marked:
        folder = Path(write_sample(root / "sst", start="1990-01", end="1995-12", bits=8)[0]).parent
    else:  # the same fields without the generator's mark: what a real COBE-SST download looks like to ingest
        folder = root / "sst"
        folder.mkdir(parents=True)
        months = months_between("1990-01", "1995-12")
        for month, field in zip(months, sample_fields(months), strict=True):
            write_grib(folder / f"sst{str(month).replace('-', '')}.grb", field, month, bits=8, mark=False)
    cobe_sst.ingest(catalog, [folder])
    oni.ingest(catalog, [oni.SAMPLE])
    task = get_task("enso")
    settings = task.parse({"coarsen": 8, "leads": "1", "valid_start": "1994-01", "test_start": "1995-01"})
    built = task.build_features(catalog, settings, NULL)
    return catalog, EnsoFeatures(catalog, version=built.version)


def test_sample_sst_gets_the_note_and_other_sst_does_not(tmp_path: Path) -> None:
    catalog, features = _enso_home(tmp_path / "sample", marked=True)
    assert sample_note(catalog, features) == ("SST: synthetic sample data from shoal.datasets.cobe_sst_sample in 72 "
                                              "months (1990-01 .. 1995-12), not COBE-SST observations")
    catalog, features = _enso_home(tmp_path / "other", marked=False)
    assert sample_note(catalog, features) is None


def test_a_sample_month_replaced_by_an_unmarked_file_is_no_longer_sample(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "home")
    files = write_sample(tmp_path / "sample", start="1990-01", end="1990-03", bits=8)
    cobe_sst.ingest(catalog, [files[0].parent])
    assert cobe_sst.sample_months(catalog) == ["1990-01", "1990-02", "1990-03"]
    month = np.datetime64("1990-02")
    (tmp_path / "real").mkdir()
    real = write_grib(tmp_path / "real" / "sst199002.grb", sample_fields(np.array([month]), seed=1)[0], month, bits=8,
                      mark=False)
    cobe_sst.ingest(catalog, [real])
    assert cobe_sst.sample_months(catalog) == ["1990-01", "1990-03"]
    assert cobe_sst.sample_months(catalog, version=0) == ["1990-01", "1990-02", "1990-03"]  # as it was


# -- the files -------------------------------------------------------------------------------


def test_every_plot_writes_a_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    written = [
        plot_confusion(tmp_path / "confusion.png", CONFUSION, LABELS, title="t"),
        plot_masks(tmp_path / "masks.png", rng.dirichlet(np.ones(4), 20), LABELS, probability=rng.uniform(size=20),
                   importances=np.full(4, 0.25), title="t"),
        plot_skill(tmp_path / "skill.png", _skill((1,), intervals=True), title="t"),
        plot_hindcast(tmp_path / "hindcast.png", _hindcast_table(), lead=1, title="t", note="a note"),
    ]
    assert all(path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for path in written)

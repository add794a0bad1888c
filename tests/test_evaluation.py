"""Evaluation written once: weighted metrics against numpy and scikit-learn, bootstrap intervals (items and
moving blocks), the paired verdict, the precision the intervals support."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shoal.evaluation import (
    MODEL,
    Metric,
    Scoring,
    accuracy,
    accuracy_of,
    comparisons,
    correlation,
    correlation_of,
    digits,
    rmse,
    rmse_of,
    roc_auc,
    roc_auc_of,
    score,
    skill_table,
    verdict,
)

RNG = np.random.default_rng(0)
ACCURACY = Scoring(title="accuracy on {period}", metrics=(Metric("accuracy", "accuracy", accuracy_of("label", "label")),),
                   primary="accuracy", count="items")
ERROR = Scoring(title="error on {period}", metrics=(Metric("rmse", "RMSE", rmse_of("value", "value"), digits=2,
                                                           higher_is_better=False),), primary="rmse", count="rows")


def test_metrics_equal_numpy_and_scikit_learn_and_are_nan_where_undefined() -> None:
    from sklearn.metrics import roc_auc_score

    predicted, observed = RNG.normal(size=50), RNG.normal(size=50)
    assert correlation(predicted, observed) == pytest.approx(np.corrcoef(predicted, observed)[0, 1], rel=1e-12)
    assert rmse(predicted, observed) == pytest.approx(np.sqrt(np.mean((predicted - observed) ** 2)), rel=1e-12)
    label = RNG.integers(0, 2, size=50)
    assert roc_auc(predicted, label) == pytest.approx(roc_auc_score(label, predicted))
    assert accuracy(label, label) == 1.0
    assert math.isnan(correlation(np.ones(5), observed[:5])) and math.isnan(roc_auc(predicted, np.zeros(50)))
    assert math.isnan(accuracy(np.array([]), np.array([])))


def test_weighted_metrics_equal_the_metrics_of_the_items_repeated() -> None:
    from sklearn.metrics import roc_auc_score

    tied = np.round(RNG.random(300), 1)  # many ties: each counts a half
    label = (RNG.random(300) < tied).astype(int)
    weights = RNG.integers(0, 4, 300).astype(float)
    repeated = np.repeat(np.arange(300), weights.astype(int))
    assert roc_auc_of("p", "y")({"p": tied}, {"y": label})(weights) == pytest.approx(
        roc_auc_score(label[repeated], tied[repeated]), rel=1e-12)
    x, y = RNG.normal(size=300), RNG.normal(size=300)
    assert correlation_of("x", "y")({"x": x}, {"y": y})(weights) == pytest.approx(
        np.corrcoef(x[repeated], y[repeated])[0, 1], rel=1e-10)
    assert rmse_of("x", "y")({"x": x}, {"y": y})(weights) == pytest.approx(rmse(x[repeated], y[repeated]), rel=1e-12)


def test_an_accuracy_interval_has_the_binomial_width_and_holds_the_value() -> None:
    truth = np.zeros(400, int)
    hits = RNG.permutation(np.r_[np.ones(280), np.zeros(120)]).astype(bool)  # 70% right
    (row,) = score(ACCURACY, {"label": truth}, {MODEL: {"label": np.where(hits, 0, 1)}})
    low, high = row["interval"]["accuracy"]
    assert row["accuracy"] == 0.7 and low < 0.7 < high and row["items"] == 400
    assert high - low == pytest.approx(2 * 1.96 * math.sqrt(0.7 * 0.3 / 400), rel=0.15)
    again = score(ACCURACY, {"label": truth}, {MODEL: {"label": np.where(hits, 0, 1)}})
    assert again[0]["interval"] == row["interval"]  # seeded


def test_moving_blocks_widen_the_interval_of_an_autocorrelated_series() -> None:
    noise = RNG.normal(size=240)
    error = np.zeros(240)
    for t in range(1, 240):  # AR(1) forecast errors, rho 0.9: months are far from independent evidence
        error[t] = 0.9 * error[t - 1] + noise[t]
    truth, forecast = {"value": np.zeros(240)}, {MODEL: {"value": error}}
    blocks = Scoring(title="", metrics=ERROR.metrics, primary="rmse", count="rows", block=12)
    (iid,), (blocked,) = score(ERROR, truth, forecast), score(blocks, truth, forecast)
    width = lambda row: row["interval"]["rmse"][1] - row["interval"]["rmse"][0]  # noqa: E731
    assert width(blocked) > 1.5 * width(iid)


def test_a_series_shorter_than_two_blocks_still_has_an_interval_of_nonzero_width() -> None:
    truth, forecast = {"value": np.zeros(6)}, {MODEL: {"value": np.random.default_rng(1).normal(size=6)}}
    blocks = Scoring(title="", metrics=ERROR.metrics, primary="rmse", count="rows", block=12)
    ((row,),) = [score(blocks, truth, forecast)]
    low, high = row["interval"]["rmse"]
    assert low < row["rmse"] < high


def _rows(model_right: float, baseline_right: float, n: int = 500) -> list[dict]:
    truth = np.zeros(n, int)
    model, baseline = RNG.random(n) < model_right, RNG.random(n) < baseline_right
    return score(ACCURACY, {"label": truth}, {MODEL: {"label": np.where(model, 0, 1)},
                                              "coin": {"label": np.where(baseline, 0, 1)}})


def test_the_paired_verdict_says_better_worse_or_not_distinguishable_at_this_test_size() -> None:
    assert comparisons(ACCURACY, _rows(0.9, 0.6))[0].outcome == "better"
    assert comparisons(ACCURACY, _rows(0.6, 0.9))[0].outcome == "worse"
    truth = np.zeros(60, int)
    same = RNG.random(60) < 0.7
    flipped = same.copy()
    flipped[:2] = ~flipped[:2]  # two items of sixty differ: no evidence either way
    close = score(ACCURACY, {"label": truth}, {MODEL: {"label": np.where(same, 0, 1)},
                                               "other": {"label": np.where(flipped, 0, 1)}})
    (one,) = comparisons(ACCURACY, close)
    assert one.outcome == "not distinguishable" and one.interval[0] < 0 < one.interval[1]
    assert verdict(ACCURACY, close).startswith("The model is not distinguishable from other at this test size (")


def test_a_lower_is_better_metric_picks_the_lowest_baseline_and_a_nan_model_is_worse() -> None:
    truth = {"value": np.zeros(200)}
    found = score(ERROR, truth, {MODEL: {"value": RNG.normal(0, 0.5, 200)}, "zero": {"value": np.full(200, 2.0)},
                                 "mean": {"value": RNG.normal(0, 1.0, 200)}})
    (one,) = comparisons(ERROR, found)
    assert (one.baseline, one.outcome) == ("mean", "better") and one.difference < 0 and one.interval[1] < 0
    (broken,) = comparisons(ERROR, [{**found[0], "rmse": math.nan}, *found[1:]])
    assert (broken.baseline, broken.wins) == ("mean", False)


def test_values_are_printed_to_the_precision_their_interval_supports() -> None:
    assert digits([0.733, 0.773], 3) == 3 and digits([0.7, 0.9], 4) == 2 and digits([0.74, 0.7412], 2) == 5
    assert digits([math.nan, math.nan], 3) == 3 and digits(None, 4) == 4
    skill = [{"method": MODEL, "rmse": 0.5, "rows": 9, "interval": {"rmse": [0.41, 0.62]},
              "versus": {"mean": {"difference": -0.1, "interval": [-0.21, 0.02]}}},
             {"method": "mean", "rmse": 0.6, "rows": 9, "interval": {"rmse": [0.5, 0.71]}}]
    table = skill_table(ERROR, {"period": "test", "skill": skill})
    assert table.title == "error on test" and table.columns == ("method", "RMSE [95% interval]", "rows")
    assert table.rows == (("model", "0.50 [0.41, 0.62]", "9"), ("mean", "0.60 [0.50, 0.71]", "9"))
    assert table.model_rows == (True, False)
    assert table.verdict == ("The model is not distinguishable from mean at this test size "
                             "(RMSE 0.50 vs 0.60, difference -0.10 [-0.21, +0.02]).")


def test_rows_stored_before_intervals_are_judged_by_value_and_say_so() -> None:
    skill = [{"method": MODEL, "rmse": 0.5, "rows": 9}, {"method": "mean", "rmse": 0.123, "rows": 9}]
    table = skill_table(ERROR, {"period": "test", "skill": skill})
    assert table.rows == (("model", "0.50", "9"), ("mean", "0.12", "9"))
    assert table.verdict == "The model is worse than mean (RMSE 0.50 vs 0.12; no interval: run `shoal evaluate` again)."

"""Evaluation written once: metrics against numpy and scikit-learn, the table, the verdict rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shoal.evaluation import Metric, Scoring, accuracy, comparisons, correlation, rmse, roc_auc, skill_table, verdict

RNG = np.random.default_rng(0)


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


ERROR = Scoring(title="error on {period}", metrics=(Metric("rmse", "RMSE", digits=2, higher_is_better=False),),
                primary="rmse", count="rows")


def test_a_lower_is_better_metric_picks_the_lowest_baseline_and_a_nan_model_loses() -> None:
    skill = [{"method": "model", "rmse": 0.5, "rows": 9}, {"method": "zero", "rmse": 0.7, "rows": 9},
             {"method": "mean", "rmse": 0.6, "rows": 9}, {"method": "broken", "rmse": math.nan, "rows": 9}]
    assert verdict(ERROR, skill) == "The model beats every baseline: test RMSE 0.50 vs mean 0.60"
    (one,) = comparisons(ERROR, [{**skill[0], "rmse": math.nan}, *skill[1:]])
    assert (one.baseline, one.best, one.wins) == ("mean", 0.6, False)


def test_the_skill_table_formats_each_metric_with_its_digits_and_flags_the_model_rows() -> None:
    skill = [{"method": "model", "rmse": 0.5, "rows": 9}, {"method": "mean", "rmse": 0.123, "rows": 9}]
    table = skill_table(ERROR, {"period": "test", "skill": skill})
    assert table.title == "error on test" and table.columns == ("method", "RMSE", "rows")
    assert table.rows == (("model", "0.50", "9"), ("mean", "0.12", "9")) and table.model_rows == (True, False)
    assert table.verdict == "The model loses to the mean baseline: test RMSE 0.50 vs 0.12"

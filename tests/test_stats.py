"""RunningStats: monoid laws (hypothesis), agreement with numpy float64 two-pass, JSON round trip."""

from __future__ import annotations

import functools
import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from shoal.stats import RunningStats

RTOL = 1e-12
LAWS = settings(max_examples=100, deadline=None)

# Moderate finite values plus NaN. Subnormals are left out: their squares underflow, which
# makes "relative" meaningless without telling us anything about the merge.
values = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_subnormal=False),
    st.just(np.nan),
)


def tables(columns: int, max_rows: int = 20) -> st.SearchStrategy[np.ndarray]:
    return arrays(np.float64, st.tuples(st.integers(0, max_rows), st.just(columns)), elements=values)


def assert_rel(actual: np.ndarray, expected: np.ndarray, rtol: float = RTOL) -> None:
    """NaN exactly where expected is NaN; elsewhere |actual - expected| <= rtol * |expected|."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    ok = ~np.isnan(expected)
    error = np.abs(actual[ok] - expected[ok])
    assert np.all(error <= rtol * np.abs(expected[ok])), f"relative error {error / np.abs(expected[ok])}"


def assert_same_summary(a: RunningStats, b: RunningStats, data: np.ndarray) -> None:
    """Counts, min and max exact; mean and var within RTOL of the data's scale.

    Merges only see rounded means, so the tolerance is relative to max|x| for the mean and
    to mean(x**2) (= var + mean**2) for the variance: the best a merge of float64 means can do.
    """
    for name in ("count", "nan_count", "min", "max"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    finite = np.where(np.isnan(data), 0.0, data)
    np.testing.assert_array_equal(np.isnan(a.mean), np.isnan(b.mean))
    np.testing.assert_array_equal(np.isnan(a.var), np.isnan(b.var))
    mean_scale = np.abs(finite).max(axis=0, initial=0.0)
    var_scale = (finite**2).sum(axis=0) / np.maximum(a.count, 1)
    assert np.all(np.abs(np.nan_to_num(a.mean - b.mean)) <= RTOL * mean_scale)
    assert np.all(np.abs(np.nan_to_num(a.var - b.var)) <= RTOL * var_scale)


def assert_bit_identical(a: RunningStats, b: RunningStats) -> None:
    for x, y in zip(a._parts(), b._parts()):
        assert x.dtype == y.dtype and x.shape == y.shape
        if x.dtype.kind == "f":
            np.testing.assert_array_equal(np.isnan(x), np.isnan(y))
            x, y = np.where(np.isnan(x), 0.0, x), np.where(np.isnan(y), 0.0, y)
        assert x.tobytes() == y.tobytes()


def numpy_reference(column: np.ndarray) -> dict[str, float]:
    """Float64 two-pass statistics of the non-NaN values of one column."""
    v = column[~np.isnan(column)].astype(np.float64)
    return {
        "mean": np.mean(v),
        "var": np.var(v),
        "sample_var": np.var(v, ddof=1),
        "std": np.std(v),
        "min": np.min(v),
        "max": np.max(v),
    }


def assert_matches_numpy(stats: RunningStats, data: np.ndarray) -> None:
    for j in range(data.shape[1]):
        for name, expected in numpy_reference(data[:, j]).items():
            assert_rel(getattr(stats, name)[j], expected)
    np.testing.assert_array_equal(stats.count, (~np.isnan(data)).sum(axis=0))
    np.testing.assert_array_equal(stats.nan_count, np.isnan(data).sum(axis=0))


# -- monoid laws ---------------------------------------------------------------------------


@LAWS
@given(st.integers(1, 3).flatmap(lambda k: st.tuples(tables(k), tables(k), tables(k))))
def test_merge_is_associative(parts: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    a, b, c = (RunningStats.from_values(p) for p in parts)
    assert_same_summary((a + b) + c, a + (b + c), np.concatenate(parts))


@LAWS
@given(st.integers(1, 3).flatmap(lambda k: st.tuples(tables(k), tables(k))))
def test_merge_is_commutative(parts: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = (RunningStats.from_values(p) for p in parts)
    assert_same_summary(a.merge(b), b.merge(a), np.concatenate(parts))


@LAWS
@given(tables(3))
def test_identity_merges_exactly_on_both_sides(data: np.ndarray) -> None:
    x = RunningStats.from_values(data)
    identity = RunningStats.identity((3,))
    assert_bit_identical(x.merge(identity), x)
    assert_bit_identical(identity.merge(x), x)
    assert x + identity == x


@LAWS
@given(tables(2, max_rows=60), st.lists(st.integers(0, 60), max_size=6))
def test_merged_partition_summaries_equal_the_whole_summary(data: np.ndarray, cuts: list[int]) -> None:
    parts = np.split(data, sorted(min(c, len(data)) for c in cuts))
    merged = functools.reduce(RunningStats.merge, (RunningStats.from_values(p) for p in parts))
    assert_same_summary(merged, RunningStats.from_values(data), data)


def test_merge_of_mismatched_shapes_raises_value_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        RunningStats.identity((2,)).merge(RunningStats.identity((3,)))
    with pytest.raises(ValueError, match="shape"):
        RunningStats.identity(()) + RunningStats.identity((1,))


# -- agreement with numpy float64 two-pass --------------------------------------------------


def test_normal_data_matches_numpy_two_pass() -> None:
    rng = np.random.default_rng(1)
    data = rng.standard_normal((5000, 7)) * np.geomspace(1e-3, 1e3, 7) + np.linspace(-50, 50, 7)
    assert_matches_numpy(RunningStats.from_values(data), data)
    assert_matches_numpy(RunningStats.from_chunks(data, chunk_rows=333, workers=2), data)


@pytest.mark.parametrize("chunk_rows", [997, 1000, 4096])
def test_far_from_zero_tiny_variance_in_many_chunks_matches_exact_two_pass(chunk_rows: int) -> None:
    rng = np.random.default_rng(2)
    data = 1e8 + 1e-3 * rng.standard_normal((100_000, 2))
    # np.var(data) itself is off by ~1e-10 here (its rounded mean is ~1 ulp of 1e8 away);
    # x - x[0] is exact (Sterbenz), so the variance of the shifted data is the exact reference.
    expected_var = np.var(data - data[0], axis=0)
    stats = RunningStats.from_chunks(data, chunk_rows=chunk_rows, workers=2)
    assert_rel(stats.mean, np.mean(data, axis=0))
    assert_rel(stats.var, expected_var)
    assert_rel(RunningStats.from_values(data).var, expected_var)
    assert_rel(RunningStats.from_values(data[:, 0], axis=None).var, expected_var[0])


@pytest.mark.filterwarnings("error")
def test_all_nan_column_has_zero_count_nan_moments_and_no_warnings() -> None:
    data = np.random.default_rng(3).standard_normal((50, 3))
    data[:, 1] = np.nan
    for stats in (RunningStats.from_values(data), RunningStats.from_chunks(data, chunk_rows=8)):
        assert stats.count[1] == 0 and stats.nan_count[1] == 50
        for name in ("mean", "var", "sample_var", "std", "sample_std", "min", "max"):
            assert np.isnan(getattr(stats, name)[1]), name
        assert_matches_numpy(
            RunningStats.from_values(data[:, [0, 2]]), data[:, [0, 2]]
        )


@pytest.mark.filterwarnings("error")
def test_identity_has_nan_moments_without_warnings() -> None:
    identity = RunningStats.identity((4,))
    assert identity.shape == (4,)
    assert np.all(identity.count == 0) and np.all(identity.m2 == 0)
    for name in ("mean", "var", "sample_var", "std", "min", "max"):
        assert np.all(np.isnan(getattr(identity, name))), name


def test_single_value_has_zero_var_and_nan_sample_var() -> None:
    stats = RunningStats.from_values(np.array([2.5]))
    assert stats.shape == ()
    assert stats.count == 1 and stats.mean == 2.5 and stats.min == 2.5 and stats.max == 2.5
    assert stats.var == 0.0 and stats.std == 0.0
    assert np.isnan(stats.sample_var) and np.isnan(stats.sample_std)


def test_mixed_nan_columns_match_numpy_on_the_non_nan_values() -> None:
    rng = np.random.default_rng(4)
    data = rng.standard_normal((3000, 5)) * 4 + 10
    for j, fraction in enumerate([0.0, 0.01, 0.3, 0.9, 0.999]):
        data[rng.random(3000) < fraction, j] = np.nan
    assert_matches_numpy(RunningStats.from_values(data), data)
    assert_matches_numpy(RunningStats.from_chunks(data, chunk_rows=64, workers=2), data)


def test_float32_input_matches_float64_reference() -> None:
    data = (np.random.default_rng(5).standard_normal((4000, 6)) * 30 + 300).astype(np.float32)
    stats = RunningStats.from_chunks(data, chunk_rows=500)
    assert_matches_numpy(stats, data.astype(np.float64))
    assert_matches_numpy(RunningStats.from_values(data), data.astype(np.float64))
    assert stats.mean.dtype == np.float64


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int8, np.int64, np.bool_])
def test_one_column_of_any_real_dtype_matches_numpy_in_one_chunk_in_many_and_from_arrow(dtype: type) -> None:
    # One column has a path of its own (NaN dropped once, passes without masks): a grid summarized whole, a table column.
    rng = np.random.default_rng(9)
    if dtype in (np.float32, np.float64):
        column = (rng.standard_normal(5000) * 3 + 290).astype(dtype)
        column[rng.random(5000) < 0.45] = np.nan  # like the land of an SST month
    else:
        column = (rng.random(5000) < 0.3) if dtype is np.bool_ else rng.integers(-100, 100, 5000).astype(dtype)
    as_float = column.astype(np.float64)[:, None]
    assert_matches_numpy(RunningStats.from_values(column[:, None]), as_float)
    assert_matches_numpy(RunningStats.from_chunks(column[:, None], chunk_rows=999, workers=2), as_float)
    whole = RunningStats.from_values(column.reshape(50, 100), axis=None)
    assert whole.shape == () and whole == RunningStats.from_values(column, axis=None)
    for name, expected in numpy_reference(as_float[:, 0]).items():
        assert_rel(getattr(whole, name), expected)
    # NaN stays NaN in an Arrow float column, or is a null (from_pandas): both count as missing.
    for arrow in (RunningStats.from_values(pa.array(column)), RunningStats.from_values(pa.array(column, from_pandas=True))):
        for name in ("count", "nan_count", "min", "max"):
            np.testing.assert_array_equal(getattr(arrow, name), getattr(whole, name), err_msg=name)
        assert_rel(arrow.mean, whole.mean)
        assert_rel(arrow.var, whole.var)


def test_pyarrow_nulls_count_as_nan() -> None:
    floats = pa.array([1.0, None, 3.0, 4.5, None])
    stats = RunningStats.from_values(floats)
    assert stats.count == 3 and stats.nan_count == 2
    assert_rel(stats.mean, np.mean([1.0, 3.0, 4.5]))
    assert_rel(stats.var, np.var([1.0, 3.0, 4.5]))
    chunked = pa.chunked_array([[1.0, None], [3.0], [4.5, None]])
    assert RunningStats.from_values(chunked) == stats
    ints = RunningStats.from_values(pa.array([1, None, 3, 4], type=pa.int32()))
    assert ints.count == 3 and ints.nan_count == 1 and ints.mean == np.mean([1, 3, 4])


def test_reduces_over_an_axis_tuple_or_all_axes() -> None:
    data = np.random.default_rng(6).standard_normal((4, 5, 6)) + 1
    stats = RunningStats.from_values(data, axis=(0, 2))
    assert stats.shape == (5,)
    assert_rel(stats.mean, data.mean(axis=(0, 2)))
    assert_rel(stats.var, data.var(axis=(0, 2)))
    everything = RunningStats.from_values(data, axis=None)
    assert everything.shape == () and everything.count == data.size
    assert_rel(everything.var, data.var())


# -- from_chunks --------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("chunk_rows", [1, 7, 64, 1000, 1001, 5000])
def test_from_chunks_equals_from_values(chunk_rows: int, workers: int) -> None:
    rng = np.random.default_rng(7)
    data = rng.standard_normal((1001, 4)) * [1, 10, 0.1, 1e4] + [5, -3, 100, 1e5]
    data[rng.random(1001) < 0.05, 2] = np.nan
    chunked = RunningStats.from_chunks(data, chunk_rows=chunk_rows, workers=workers)
    whole = RunningStats.from_values(data)
    for name in ("count", "nan_count", "min", "max"):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name))
    assert_rel(chunked.mean, whole.mean)
    assert_rel(chunked.var, whole.var)


def test_from_chunks_result_does_not_depend_on_worker_count() -> None:
    data = np.random.default_rng(8).standard_normal((20_000, 3)).astype(np.float32)
    results = [RunningStats.from_chunks(data, chunk_rows=640, workers=w) for w in (1, 2, 4)]
    assert_bit_identical(results[0], results[1])
    assert_bit_identical(results[0], results[2])


def test_empty_input_gives_the_identity() -> None:
    assert RunningStats.from_values(np.empty((0, 3))) == RunningStats.identity((3,))
    assert RunningStats.from_chunks(np.empty((0, 3))) == RunningStats.identity((3,))


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="chunk_rows"):
        RunningStats.from_chunks(np.ones((3, 2)), chunk_rows=0)
    with pytest.raises(TypeError, match="real numbers"):
        RunningStats.from_values(np.array(["a", "b"]))
    with pytest.raises(ValueError, match="shape"):
        RunningStats(np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(3), np.zeros(2))


# -- JSON round trip ------------------------------------------------------------------------


def _summaries() -> list[RunningStats]:
    rng = np.random.default_rng(9)
    with_nan = rng.standard_normal((100, 4)) * 1e-7 + 1 / 3
    with_nan[:, 2] = np.nan
    return [
        RunningStats.identity(),
        RunningStats.identity((2, 3)),
        RunningStats.from_values(with_nan),
        RunningStats.from_values(rng.standard_normal((10, 2, 3)), axis=0),
        RunningStats.from_values(np.array([-0.0])),
    ]


@pytest.mark.parametrize("stats", _summaries(), ids=["identity", "identity-2x3", "all-nan-column", "2x3", "-0.0"])
def test_json_round_trip_is_bit_exact(stats: RunningStats) -> None:
    text = json.dumps(stats.to_dict(), allow_nan=False)
    restored = RunningStats.from_dict(json.loads(text))
    assert restored == stats
    assert_bit_identical(restored, stats)


def test_from_dict_rejects_malformed_input() -> None:
    good = RunningStats.identity((2,)).to_dict()
    with pytest.raises(ValueError, match="lacks key"):
        RunningStats.from_dict({k: v for k, v in good.items() if k != "m2"})
    with pytest.raises(ValueError, match="expected 2"):
        RunningStats.from_dict({**good, "mean": [0.0]})
    with pytest.raises(ValueError, match="expected numbers"):
        RunningStats.from_dict({**good, "mean": ["NaN", 0.0]})


def test_summaries_are_immutable() -> None:
    stats = RunningStats.from_values(np.arange(5.0))
    with pytest.raises(ValueError):
        stats.mean[...] = 1.0

"""Mergeable summary statistics: one monoid for every modality.

`RunningStats` holds, per kept element (a column, a variable, a frequency bin), the non-NaN
count, mean, M2 (sum of squared deviations from the mean), min, max and NaN count. Summaries
of partitions merge with Chan et al.'s parallel formula, so partitions can be summarized in
parallel, out of order, or months apart (a backfill merges into the stored summary).

Conventions:
    * `count` and `nan_count` are int64; `mean`, `m2`, `min`, `max` are float64.
    * Where `count == 0`, `mean`, `min` and `max` are NaN and `m2` is 0; the identity is such
      a summary. Merges treat those sides as absent, so identity merges are exact.
    * `to_dict` writes non-finite floats as the strings "nan", "inf" and "-inf", so
      `json.dumps(..., allow_nan=False)` works; finite floats round-trip bit-exactly.

Precision: one call to `from_values` or `from_chunks` equals a float64 two-pass computation
to ~1e-15 relative, even for data far from zero (1e8 + 1e-3 * noise): each chunk uses the
corrected two-pass algorithm, and partial means are kept relative to a rough per-column mean
while chunks merge. `merge` of summaries made in separate calls only has their rounded
means: where |mean| / std is large, the between-partition term of M2 loses about
log10(|mean| / std) digits.
"""

from __future__ import annotations

import itertools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.lib.array_utils import normalize_axis_tuple

if TYPE_CHECKING:
    import pyarrow as pa
    from numpy.typing import ArrayLike

# (count, mean, m2, min, max, nan_count), the field order of RunningStats.
_Parts = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]

_INT_FIELDS = ("count", "nan_count")
# 4 MiB of float64 per chunk: measured 1.3x faster than 1 MiB (per-chunk call overhead) and
# than 16 MiB (spills a 32 MiB L3 shared by two workers) on 10M x 28 float32.
_CHUNK_ELEMENTS = 1 << 19
_MAX_LANES = 32
_NO_SHIFT = np.zeros(1)  # a chunk summarized alone: its means need no shift
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


@dataclass(frozen=True, eq=False)
class RunningStats:
    """Count, mean, M2, min, max and NaN count per kept element; a commutative monoid.

    All six arrays have the kept shape (`()` for one variable, `(28,)` for 28 columns).
    Build summaries with `identity`, `from_values` or `from_chunks`; combine them with
    `merge` (or `+`). Equality (`==`) is exact, with NaN equal to NaN.
    """

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    min: np.ndarray
    max: np.ndarray
    nan_count: np.ndarray

    def __post_init__(self) -> None:
        shape = np.shape(self.count)
        for field in fields(self):
            dtype = np.int64 if field.name in _INT_FIELDS else np.float64
            value = np.array(getattr(self, field.name), dtype=dtype)  # a private, frozen copy
            if value.shape != shape:
                raise ValueError(
                    f"RunningStats.{field.name} has shape {value.shape}, expected {shape} "
                    "(the shape of count); pass arrays of one shape"
                )
            value.setflags(write=False)
            object.__setattr__(self, field.name, value)

    @classmethod
    def identity(cls, shape: tuple[int, ...] = ()) -> RunningStats:
        """The summary of no values: merging it changes nothing."""
        return cls(*_empty_parts(shape))

    @classmethod
    def from_values(
        cls, values: ArrayLike | pa.Array | pa.ChunkedArray, *, axis: int | tuple[int, ...] | None = 0
    ) -> RunningStats:
        """Summarize values on this thread with float64 accumulators.

        The reduced axes are flattened into rows; rows are summarized in chunks of about
        4 MiB of float64 (corrected two-pass per chunk) and merged pairwise, so no more than
        one chunk is converted at a time.

        Args:
            values: a real numpy array (any dtype that casts to float64), or a 1-D pyarrow
                Array / ChunkedArray, whose nulls count as NaN.
            axis: the axes reduced; the others are kept. None reduces all axes.

        Returns:
            The summary with the kept shape.
        """
        array = _as_real_array(values)
        if axis is None and 0 < array.size <= _CHUNK_ELEMENTS:
            # One column in one chunk (an SST month, a column of a Parquet file): nothing to split or merge.
            return cls(*(part.reshape(()) for part in _column_parts(array.reshape(-1), _NO_SHIFT, None)))
        axes = tuple(range(array.ndim)) if axis is None else normalize_axis_tuple(axis, array.ndim)
        kept = tuple(size for i, size in enumerate(array.shape) if i not in axes)
        rows = math.prod(array.shape[i] for i in axes)
        table = np.moveaxis(array, axes, tuple(range(len(axes)))).reshape(rows, math.prod(kept))
        return _summarize(table, kept, chunk_rows=_default_chunk_rows(table.shape[1]), workers=1)

    @classmethod
    def from_chunks(
        cls, values: np.ndarray, *, chunk_rows: int | None = None, workers: int | None = None
    ) -> RunningStats:
        """Summarize a large array over axis 0 in row chunks on a pool of threads.

        Each chunk is converted to float64 once and summarized in two passes; numpy releases
        the GIL, so threads run in parallel. The partial summaries are merged pairwise in
        chunk order, so the result depends on `chunk_rows` but not on `workers`.

        Args:
            values: a real array of shape (rows, ...); axis 0 is reduced. An array of more
                than 2 dimensions that is not C-contiguous is copied once.
            chunk_rows: rows per chunk; by default about 4 MiB of float64 per chunk.
            workers: threads; by default the usable CPU count.

        Returns:
            The summary with shape `values.shape[1:]`.

        Raises:
            ValueError: `values` is 0-d, or `chunk_rows` / `workers` is below 1.
        """
        array = _as_real_array(values)
        if array.ndim == 0:
            raise ValueError("from_chunks needs an array with a row axis, got a 0-d array; use from_values")
        rows, kept = array.shape[0], array.shape[1:]
        table = array.reshape(rows, math.prod(kept))
        if chunk_rows is None:
            chunk_rows = _default_chunk_rows(table.shape[1])
        if workers is None:
            workers = len(os.sched_getaffinity(0))
        if chunk_rows < 1 or workers < 1:
            raise ValueError(f"chunk_rows and workers must be >= 1, got {chunk_rows} and {workers}")
        return _summarize(table, kept, chunk_rows=chunk_rows, workers=workers)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunningStats:
        """Rebuild a summary from `to_dict` output (after a JSON round trip).

        Raises:
            ValueError: a key is missing or a list does not match `shape`.
        """
        try:
            shape = tuple(int(size) for size in data["shape"])
            arrays = [_decode(data[field.name], field.name, shape) for field in fields(cls)]
        except KeyError as missing:
            raise ValueError(f"RunningStats dict lacks key {missing}; pass the output of to_dict()") from None
        return cls(*arrays)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: shape plus one flat list per field (C order)."""
        data: dict[str, Any] = {"shape": list(self.shape)}
        for field in fields(self):
            flat = getattr(self, field.name).ravel().tolist()
            if field.name not in _INT_FIELDS:
                flat = [v if math.isfinite(v) else ("nan" if v != v else "inf" if v > 0 else "-inf") for v in flat]
            data[field.name] = flat
        return data

    def merge(self, other: RunningStats) -> RunningStats:
        """Combine two summaries (Chan et al.); associative and commutative up to rounding.

        Raises:
            ValueError: the shapes differ.
        """
        if self.shape != other.shape:
            raise ValueError(f"cannot merge RunningStats of shape {self.shape} with shape {other.shape}")
        return RunningStats(*_merge_parts(self._parts(), other._parts()))

    __add__ = merge

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RunningStats):
            return NotImplemented
        return self.shape == other.shape and all(
            np.array_equal(a, b, equal_nan=a.dtype.kind == "f") for a, b in zip(self._parts(), other._parts())
        )

    __hash__ = None  # type: ignore[assignment]  # __eq__ compares arrays by value

    @property
    def shape(self) -> tuple[int, ...]:
        """The kept shape."""
        return self.count.shape

    @property
    def var(self) -> np.ndarray:
        """Population variance (ddof=0); NaN where count is 0."""
        return _ratio(self.m2, self.count, self.count > 0)

    @property
    def sample_var(self) -> np.ndarray:
        """Sample variance (ddof=1); NaN where count is below 2."""
        return _ratio(self.m2, self.count - 1, self.count > 1)

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation (ddof=0)."""
        return np.sqrt(self.var)

    @property
    def sample_std(self) -> np.ndarray:
        """Sample standard deviation (ddof=1)."""
        return np.sqrt(self.sample_var)

    def _parts(self) -> _Parts:
        return (self.count, self.mean, self.m2, self.min, self.max, self.nan_count)


def _default_chunk_rows(cols: int) -> int:
    return max(_MAX_LANES, _CHUNK_ELEMENTS // max(cols, 1) // _MAX_LANES * _MAX_LANES)


def _summarize(table: np.ndarray, kept: tuple[int, ...], *, chunk_rows: int, workers: int) -> RunningStats:
    """Summarize a (rows, cols) table over rows: two passes per chunk, then a pairwise merge."""
    rows, cols = table.shape
    if rows == 0 or cols == 0:
        return RunningStats.identity(kept)
    n_chunks = -(-rows // chunk_rows)
    # One chunk is never merged: its corrected two-pass needs no shift (and a small array no pass for it).
    shift = _shift(table) if n_chunks > 1 else np.zeros(cols)
    partials = _empty_parts((n_chunks, cols))
    # next() on itertools.count is atomic under the GIL: threads pull chunks dynamically,
    # yet each partial lands in its chunk's slot, so the merge order is fixed.
    tickets = itertools.count()

    def work() -> None:
        scratch = np.empty((min(chunk_rows, rows), cols))
        while (i := next(tickets)) < n_chunks:
            chunk = table[i * chunk_rows : (i + 1) * chunk_rows]
            for out, part in zip(partials, _block_parts(chunk, shift, scratch)):
                out[i] = part

    workers = min(workers, n_chunks)
    if workers == 1:
        work()
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shoal-stats") as pool:
            for future in [pool.submit(work) for _ in range(workers)]:
                future.result()
    return _finish(_tree_merge(partials), shift, kept)


def _empty_parts(shape: tuple[int, ...]) -> _Parts:
    nan = np.full(shape, np.nan)
    zeros = np.zeros(shape)
    return (np.zeros(shape, np.int64), nan, zeros, nan.copy(), nan.copy(), np.zeros(shape, np.int64))


def _ratio(numerator: np.ndarray, denominator: np.ndarray, valid: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.full(numerator.shape, np.nan), where=valid)


def _as_real_array(values: Any) -> np.ndarray:
    if type(values).__module__.startswith("pyarrow"):
        import pyarrow as pa

        if isinstance(values, (pa.Array, pa.ChunkedArray)):
            numeric = pa.types.is_integer(values.type) or pa.types.is_floating(values.type)
            if numeric and values.null_count == 0:
                return values.to_numpy()  # as stored, no copy (one chunk): the summary converts it once
            # Nulls become NaN in the float64 view.
            return values.cast(pa.float64()).to_numpy(zero_copy_only=False)
    array = np.asarray(values)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"RunningStats needs real numbers, got dtype {array.dtype}; cast to float64 first")
    return array


def _lanes(block: np.ndarray) -> tuple[np.ndarray, int]:
    """View (rows, cols) as (rows / lanes, lanes * cols) where that is free.

    With few columns numpy's axis-0 loops run over short rows; folding rows into lanes makes
    them long (measured 2-10x faster for 28 columns). Results are unfolded by the callers.
    """
    rows, cols = block.shape
    lanes = math.gcd(rows, _MAX_LANES) if cols < 64 and block.flags.c_contiguous else 1
    return block.reshape(rows // lanes, lanes * cols), lanes


def _fold(ufunc: np.ufunc, block: np.ndarray) -> np.ndarray:
    flat, lanes = _lanes(block)
    return ufunc.reduce(ufunc.reduce(flat, axis=0).reshape(lanes, -1), axis=0)


def _subtract_rows(block: np.ndarray, row: np.ndarray) -> None:
    flat, lanes = _lanes(block)
    np.subtract(flat, np.tile(row, lanes), out=flat)


def _sum_squares(block: np.ndarray) -> np.ndarray:
    flat, lanes = _lanes(block)
    return np.einsum("ij,ij->j", flat, flat).reshape(lanes, -1).sum(axis=0)


def _shift(table: np.ndarray) -> np.ndarray:
    # Partial means are stored relative to a rough per-column mean (of the first rows), so
    # the Chan merge of chunks subtracts small numbers, not 1e8 - 1e8.
    head = table[:1024].astype(np.float64)
    present = ~np.isnan(head)
    rough = np.where(present, head, 0.0).sum(axis=0) / np.maximum(present.sum(axis=0), 1)
    return np.where(np.isfinite(rough), rough, 0.0)


def _block_parts(block: np.ndarray, shift: np.ndarray, scratch: np.ndarray | None) -> _Parts:
    """Corrected two-pass summary of a non-empty (rows, cols) block; means relative to `shift`.

    The second pass sums the deviations as well as their squares: that residual is the
    rounding of the first-pass mean, and removing it (Chan, Golub & LeVeque 1983) keeps full
    precision when |mean| >> std.
    """
    rows, cols = block.shape
    if cols == 1:
        return _column_parts(block[:, 0], shift, scratch)
    dev = np.empty(block.shape) if scratch is None else scratch[:rows]
    np.copyto(dev, block)  # the one float64 conversion
    total = _fold(np.add, dev)
    if np.isfinite(total).all():  # no NaN (nor inf): no masks needed
        counts, nans = np.full(cols, rows, np.int64), np.zeros(cols, np.int64)
        lo, hi = _fold(np.fmin, block), _fold(np.fmax, block)
        mean = total / rows
        _subtract_rows(dev, mean)
        residual = _fold(np.add, dev)
        squares = _sum_squares(dev)
    else:
        missing = np.isnan(dev)
        nans = np.count_nonzero(missing, axis=0)
        counts = rows - nans
        dev[missing] = 0.0
        mean = np.divide(np.add.reduce(dev, axis=0), np.maximum(counts, 1))
        dev -= mean
        dev[missing] = 0.0
        residual = np.add.reduce(dev, axis=0)
        squares = np.einsum("ij,ij->j", dev, dev)
        lo, hi = np.fmin.reduce(block, axis=0), np.fmax.reduce(block, axis=0)
    n = np.maximum(counts, 1)
    # max(., 0): the correction can round a zero M2 (all values equal) to a tiny negative.
    m2 = np.maximum(squares - residual * residual / n, 0.0)
    mean = np.where(counts > 0, (mean - shift) + residual / n, np.nan)
    return counts, mean, m2, lo.astype(np.float64), hi.astype(np.float64), nans


def _column_parts(column: np.ndarray, shift: np.ndarray, scratch: np.ndarray | None) -> _Parts:
    """`_block_parts` of one column (a 1-D block of `rows` values), in fewer passes.

    A single column has no other columns to keep aligned with its NaN, so they are dropped
    once and the passes after run over the present values without masks: 3-4x faster than
    the masked passes on a COBE-SST month (180 x 360 float32, 46% NaN), which every ingest
    summarizes, as it does every numeric column of a table it writes.
    """
    kept = column == column if column.dtype.kind == "f" else None  # False only at NaN: one pass, no inversion
    nans = 0 if kept is None else column.size - int(np.count_nonzero(kept))
    present = column[kept] if nans else column
    count = present.size
    if count == 0:
        return _empty_parts((1,))[:5] + (np.array([nans]),)
    dev = np.empty(count) if scratch is None else scratch.reshape(-1)[:count]
    np.copyto(dev, present)  # the one float64 conversion
    mean = np.add.reduce(dev) / count  # pairwise summation of a contiguous vector
    dev -= mean
    residual = np.add.reduce(dev)
    squares = np.einsum("i,i->", dev, dev)
    # As in `_block_parts`: the residual removes the first pass's rounding; max(., 0) a tiny negative M2.
    m2 = np.maximum(squares - residual * residual / count, 0.0)
    return (np.array([count]), np.array([(mean - shift[0]) + residual / count]), np.array([m2]),
            np.array([present.min()], np.float64), np.array([present.max()], np.float64), np.array([nans]))


def _merge_parts(a: _Parts, b: _Parts) -> _Parts:
    count_a, mean_a, m2_a, min_a, max_a, nan_a = a
    count_b, mean_b, m2_b, min_b, max_b, nan_b = b
    n_a, n_b = count_a.astype(np.float64), count_b.astype(np.float64)
    n = n_a + n_b
    weight_b = n_b / np.where(n > 0, n, 1.0)
    with np.errstate(invalid="ignore"):  # infinite data: inf - inf makes NaN moments, as numpy does
        delta = mean_b - mean_a
        mean = np.where(n_b == 0, mean_a, np.where(n_a == 0, mean_b, mean_a + delta * weight_b))
        m2 = np.where(n_b == 0, m2_a, np.where(n_a == 0, m2_b, m2_a + m2_b + delta * delta * (n_a * weight_b)))
    return count_a + count_b, mean, m2, np.fmin(min_a, min_b), np.fmax(max_a, max_b), nan_a + nan_b


def _tree_merge(parts: _Parts) -> _Parts:
    """Merge the rows of (k, cols) partials pairwise: error grows with log k, not k."""
    while len(parts[0]) > 1:
        pairs = len(parts[0]) // 2
        evens, odds = (tuple(p[start : 2 * pairs : 2] for p in parts) for start in (0, 1))
        merged = _merge_parts(evens, odds)  # type: ignore[arg-type]
        parts = tuple(np.concatenate([m, p[2 * pairs :]]) for m, p in zip(merged, parts))
    return tuple(p[0] for p in parts)


def _finish(parts: _Parts, shift: np.ndarray, kept: tuple[int, ...]) -> RunningStats:
    count, mean, m2, lo, hi, nans = parts
    return RunningStats(*(p.reshape(kept) for p in (count, mean + shift, m2, lo, hi, nans)))


def _decode(values: list[Any], name: str, shape: tuple[int, ...]) -> np.ndarray:
    if len(values) != math.prod(shape):
        raise ValueError(
            f"RunningStats dict field {name!r} has {len(values)} values, "
            f"expected {math.prod(shape)} for shape {shape}; pass the output of to_dict()"
        )
    if name in _INT_FIELDS:
        return np.array(values, dtype=np.int64).reshape(shape)
    unknown = {v for v in values if isinstance(v, str)} - _NONFINITE.keys()
    if unknown:
        raise ValueError(
            f"RunningStats dict field {name!r} holds {sorted(unknown)}; expected numbers, 'nan', 'inf' or '-inf'"
        )
    return np.array([_NONFINITE[v] if isinstance(v, str) else v for v in values], dtype=np.float64).reshape(shape)

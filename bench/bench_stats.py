"""`RunningStats.from_chunks` against numpy mean + std on a 10,000,000 x 28 float32 array.

Ours: `RunningStats.from_chunks(x)` splits the rows into chunks of about 4 MiB of float64,
converts each chunk once, summarizes it with a corrected two-pass (count, mean, M2, min,
max, NaN count per column) on a pool of threads (one per core), and merges the partial
summaries pairwise (Chan et al.). Baseline: `x.mean(axis=0, dtype=np.float64)` plus
`x.std(axis=0, dtype=np.float64)` on the whole array, which computes only mean and std and
materializes a 2.2 GB float64 temporary. Both are timed as the best of 3 runs; the speed-up
is the throughput ratio (rows/s ours / rows/s numpy). The data are seeded standard normals,
scaled from 0.01 to 100 and shifted from -1000 to 1000 per column. Accuracy: the largest
relative difference of mean and std against a float64 two-pass reference (pairwise sums
over a contiguous float64 copy of each block of 4 columns, with the corrected two-pass
term). Targets: speed-up >= 0.5 and relative difference <= 1e-12.
"""

from __future__ import annotations

import gc
import os

import numpy as np

from bench.run import Result, best_of
from shoal.stats import RunningStats

ROWS, COLS = 10_000_000, 28
MIN_SPEEDUP, MAX_REL_DIFF = 0.5, 1e-12


def make_data(rows: int = ROWS, cols: int = COLS, *, seed: int = 0) -> np.ndarray:
    """Seeded float32 normals, a different scale and offset per column."""
    x = np.random.default_rng(seed).standard_normal((rows, cols), dtype=np.float32)
    x *= np.geomspace(0.01, 100.0, cols, dtype=np.float32)
    x += np.linspace(-1000.0, 1000.0, cols, dtype=np.float32)
    return x


def reference(x: np.ndarray, *, block: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Float64 two-pass mean and population std per column, a few columns at a time."""
    rows = x.shape[0]
    means, stds = [], []
    for start in range(0, x.shape[1], block):
        columns = np.ascontiguousarray(x[:, start : start + block].T, dtype=np.float64)  # (block, rows)
        mean = columns.mean(axis=1)  # pairwise summation along the contiguous axis
        columns -= mean[:, None]
        correction = columns.sum(axis=1)  # the rounding of mean, summed: ~0
        columns *= columns
        means.append(mean + correction / rows)
        stds.append(np.sqrt((columns.sum(axis=1) - correction**2 / rows) / rows))
        del columns
    return np.concatenate(means), np.concatenate(stds)


def _numpy_mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(axis=0, dtype=np.float64), x.std(axis=0, dtype=np.float64)


def _rel_diff(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(ours - ref) / np.abs(ref)))


def run() -> list[Result]:
    """Time ours and numpy on the same array; check accuracy against the reference."""
    x = make_data()
    ref_mean, ref_std = reference(x)
    gc.collect()
    ours_s, stats = best_of(lambda: RunningStats.from_chunks(x))
    gc.collect()
    numpy_s, (np_mean, np_std) = best_of(lambda: _numpy_mean_std(x))
    ours_diff = max(_rel_diff(stats.mean, ref_mean), _rel_diff(stats.std, ref_std))
    numpy_diff = max(_rel_diff(np_mean, ref_mean), _rel_diff(np_std, ref_std))
    ratio = numpy_s / ours_s
    threads = len(os.sched_getaffinity(0))
    return [
        Result(
            name=f"RunningStats {ROWS:,} x {COLS} float32",
            ours_label=f"RunningStats.from_chunks ({threads} threads)",
            ours_seconds=ours_s,
            baseline_label="numpy mean + std (dtype=float64)",
            baseline_seconds=numpy_s,
            target=f">= {MIN_SPEEDUP}x, max rel diff <= {MAX_REL_DIFF:g}",
            passed=ratio >= MIN_SPEEDUP and ours_diff <= MAX_REL_DIFF,
            notes=(
                f"ours {ROWS / ours_s / 1e6:.1f} M rows/s, numpy {ROWS / numpy_s / 1e6:.1f} M rows/s; "
                f"max rel diff of mean/std vs float64 two-pass: ours {ours_diff:.1e}, numpy {numpy_diff:.1e}"
            ),
        )
    ]

"""HIGGS ingest: rows/s and peak RSS of `shoal ingest higgs` beside polars and pandas.

Files: HIGGS-format samples (`shoal.datasets.higgs_sample`) of 1,000,000 and 4,000,000 rows,
plain, and the 1,000,000 rows gzipped, cached in `bench/.out/higgs/`. Each run is a fresh
process (so its peak RSS is its own) that imports its libraries before the clock starts (the
time is the ingest's, not Python's imports), in turn: ours, (a), (b), repeated.
Ours: `shoal.datasets.higgs.ingest` into a fresh catalog: ONE polars streaming query
(`scan_csv`, every value checked as an expression, row_id, `sink_parquet` into files of
262,144 rows) while a thread computes the sha256, then the Parquet statistics say whether a
row was bad, and ONE Delta commit adds them all. (Until the split moved to the feature
version, ingest also labelled every row's split from a row-count estimate and relabelled the
files across the boundaries; the numbers below before that change include it.)
(a) the ceiling: polars `scan_csv(...).sink_parquet(...)` with float32 columns (no checks, no
row_id, no hash, no commit). (b) what a user would write: pandas `read_csv` +
`to_parquet`. Targets: >= 0.8x (a) on plain CSV, >= 3x (b), peak RSS <= 1 GB and flat from
1 M to 4 M rows; on .gz, >= 1.5x polars' own path.

History (2 cores, bootstrapped data). The first version (polars `read_csv` on 32 MB blocks
cut by a reader thread, pyarrow encoding, the tail held in memory) ran at 0.46-0.48x the
ceiling and 0.9-1.0x pandas, with peak RSS 456 MB at 1 M rows and 718 MB at 4 M. Two
findings moved it: (1) pyarrow's `write_table` tried dictionary encoding on every float
column and gave it up — 6x slower per file than with dictionaries only on text columns
(now the rule in `Catalog.write_streamed` too); (2) polars' streaming engine, given the path,
pipelines parsing and encoding across both cores where the block-wise parse could not. Now:
0.73-0.77x the ceiling, 1.4-1.9x pandas, peak RSS flat (449 MB at 1 M, 455 MB at 4 M rows),
0.84x polars on the .gz and 3x pandas there.

Why the rest of the targets are out of reach here: the sha256 that the lineage needs costs
~0.45 s of a core per 730 MB (1.5 GB/s with SHA-NI) on a machine whose two cores the
ceiling already fills, i.e. ~18% of the ceiling's CPU before any check: ~0.82x is the bound.
">= 3x pandas" would need 0.8 s for 1 M rows, faster than the unchecked polars ceiling
(1.26 s). On .gz the target assumed polars inflating with zlib at 4.7 s; polars 2.1 here
takes 2.0-2.4 s, and beating that 1.5x would mean ingesting gzip faster than polars parses
the plain file. ISA-L cannot be put under polars' streaming engine: `scan_csv` of a Python
file object reads it whole into memory (1.5 GB RSS on 1 M rows) and a FIFO reads as empty.
The zip path (UCI's archive) still goes block-wise; it is not benchmarked here.

Since the hostile-input work (`HiggsLimits`), a .gz goes block-wise too (ISA-L inflating in a
reader thread that counts compressed and inflated bytes, polars parsing blocks): polars' own
gzip reader cannot be bounded — a 5 MB gzip bomb of zeros took it to 2.6 GB before its error,
and cancelling its query did not stop it — while the block-wise path refuses that bomb in
0.5 s at ~170 MB. The price, measured on an idle machine: .gz 0.65-0.75x polars' own path (was
0.84x; two runs) and 2.1x pandas (was 3x). The plain CSV path stays the streaming query, with a line
length check before it (~0.25 s per GB read). Peak RSS is measured with `ru_maxrss` of a
fresh process per run.

Since the split moved to the feature version (2026-12-06) the ingest labels no split and
rewrites no file at the end: 0.67x the ceiling at 1 M rows and 0.77x at 4 M, .gz 0.76x
polars' own path, peak RSS flat (470-497 MB) — within the noise of the runs before, so the
split was never the cost; the sha256 and the checks are. Against pandas this run gave 0.86x
at 1 M rows (pandas took 2.7 s, against ~3.5-4 s in earlier runs) and 1.26x at 4 M, where
pandas peaks at 3.8 GB: two repeats on a 2-core machine move such ratios by 0.3x.
"""

from __future__ import annotations

import multiprocessing
import resource
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.run import Result

CACHE = Path(__file__).parent / ".out" / "higgs"
REPEATS = 2


def sample(rows: int, compression: str | None = None) -> Path:
    """A cached sample file of `rows` rows."""
    from shoal.datasets.higgs_sample import write_sample

    folder = CACHE / f"{rows}{'-' + compression if compression else ''}"
    done = folder / ".complete"
    if not done.exists():
        path = write_sample(folder, rows=rows, compression=compression)
        done.write_text(path.name)
    return folder / done.read_text()


def _ours(path: str, scratch: str) -> None:
    from shoal.catalog import Catalog
    from shoal.datasets import higgs

    report = higgs.ingest(Catalog(scratch), [Path(path)])
    assert report.exit_code == 0, report.failures


def _polars(path: str, scratch: str) -> None:
    import polars as pl

    from shoal.datasets.higgs import COLUMNS

    schema = dict.fromkeys(COLUMNS, pl.Float32)
    pl.scan_csv(path, has_header=False, new_columns=list(COLUMNS), schema=schema).sink_parquet(f"{scratch}/out.parquet")


def _pandas(path: str, scratch: str) -> None:
    import pandas as pd

    from shoal.datasets.higgs import COLUMNS

    pd.read_csv(path, header=None, names=list(COLUMNS), dtype="float32").to_parquet(f"{scratch}/out.parquet")


_IMPORTS = {"_ours": ("shoal.catalog", "shoal.datasets.higgs", "deltalake", "pyarrow.parquet", "polars"),
            "_polars": ("polars", "shoal.datasets.higgs"), "_pandas": ("pandas", "pyarrow.parquet", "shoal.datasets.higgs")}


def _child(name: str, path: str, scratch: str, out: multiprocessing.Queue) -> None:
    import importlib

    for module in _IMPORTS[name]:
        importlib.import_module(module)
    start = time.perf_counter()
    globals()[name](path, scratch)
    out.put((time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def measure(name: str, path: Path) -> tuple[float, float]:
    """(seconds, peak RSS MB) of one run in a fresh process."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
        process = context.Process(target=_child, args=(name, str(path), scratch, out))
        process.start()
        result = out.get()
        process.join()
    return result


def run() -> list[Result]:
    """Ours against polars and pandas on each file, fresh processes, interleaved."""
    CACHE.mkdir(parents=True, exist_ok=True)
    results = []
    peaks = {}
    for rows, compression in ((1_000_000, None), (4_000_000, None), (1_000_000, "gzip")):
        path = sample(rows, compression)
        runs = {name: [] for name in ("_ours", "_polars", "_pandas")}
        for _ in range(REPEATS):
            for name in runs:
                runs[name].append(measure(name, path))
        seconds = {name: statistics.median(s for s, _ in found) for name, found in runs.items()}
        rss = {name: max(m for _, m in found) for name, found in runs.items()}
        peaks[(rows, compression)] = rss["_ours"]
        label = f"HIGGS ingest, {rows:,} rows{' .gz' if compression else ''}"
        notes = (f"{rows / seconds['_ours']:,.0f} rows/s; peak RSS ours {rss['_ours']:.0f} MB, polars "
                 f"{rss['_polars']:.0f} MB, pandas {rss['_pandas']:.0f} MB; median of {REPEATS}")
        ceiling_target = 1.5 if compression else 0.8
        results.append(Result(name=label, ours_label="shoal ingest higgs (checked, one commit)",
                              ours_seconds=seconds["_ours"], baseline_label="(a) polars scan_csv + sink_parquet",
                              baseline_seconds=seconds["_polars"], target=f">= {ceiling_target}x",
                              passed=seconds["_polars"] / seconds["_ours"] >= ceiling_target, notes=notes))
        results.append(Result(name=label, ours_label="shoal ingest higgs (checked, one commit)",
                              ours_seconds=seconds["_ours"], baseline_label="(b) pandas read_csv + to_parquet",
                              baseline_seconds=seconds["_pandas"], target=">= 3x",
                              passed=seconds["_pandas"] / seconds["_ours"] >= 3.0, notes=notes))
    flat = peaks[(4_000_000, None)] <= 1.25 * peaks[(1_000_000, None)] and max(peaks.values()) <= 1024
    results[-1] = replace(results[-1], notes=f"{results[-1].notes}; peak RSS flat from 1 M to 4 M rows and <= 1 GB: "
                                               f"{'yes' if flat else 'NO'}")
    return results

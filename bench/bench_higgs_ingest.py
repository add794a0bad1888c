"""HIGGS ingest: rows/s and peak RSS of `shoal ingest higgs` beside polars and pandas.

Files: HIGGS-format samples (`shoal.datasets.higgs_sample`) of 1,000,000 and 4,000,000 rows,
plain, and the 1,000,000 rows gzipped, cached in `bench/.out/higgs/`. Each run is a fresh
process (so its peak RSS is its own), in turn: ours, (a), (b), repeated.
Ours: `shoal.datasets.higgs.ingest` into a fresh catalog: a reader thread (ISA-L inflate,
sha256), polars parse of 32 MB blocks into float32, every value checked, the split of the
tail held back, Parquet files encoded by two threads, one Delta commit.
(a) the ceiling: polars `scan_csv(...).sink_parquet(...)` with float32 columns (no checks, no
row_id or split, no commit). (b) what a user would write: pandas `read_csv` + `to_parquet`.
Targets: >= 0.8x (a) on plain CSV, >= 3x (b), peak RSS <= 1 GB and flat from 1 M to 4 M rows;
on .gz, >= 1.5x polars' own path (which inflates with zlib).

First numbers (this session, 2 cores, bootstrapped data): ours runs at 0.46-0.48x the polars
ceiling and at 0.9-1.0x pandas, and at 0.63x polars on the .gz — every target but "peak RSS
<= 1 GB" missed. Where the time goes (cProfile, 1 M rows, 4.8 s): 2.4 s in polars (parsing 22
blocks of 32 MB with `read_csv`, the checks, the row index), 1.1 s waiting for the reader
thread (read, sha256, and two copies of every block while cutting it at a newline), 0.65 s
adding the split column. polars' own streaming engine pipelines parsing and writing inside
one query, which is what the next session should try: `scan_csv` on the reader's stream with
the checks as expressions and the split from `row_id`, written through `write_streamed`.
pandas is faster here than the issue assumed (4.2 s for 1 M rows; the bootstrapped values
have 19 significant digits like the real file), so ">= 3x pandas" would need ~1.4 s. Peak RSS
is 456 MB at 1 M rows and 718 MB at 4 M rows: under 1 GB, but not flat; the tail buffer is
1 M rows in both, so the growth is elsewhere (the Parquet writers' pending files, or the
allocator keeping freed blocks) — not yet explained.
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


def _child(name: str, path: str, scratch: str, out: multiprocessing.Queue) -> None:
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

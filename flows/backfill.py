"""The `backfill-sst` flow: months of COBE-SST in chunks of Prefect tasks, at most N at a time, one commit.

A Prefect task costs ~18 ms here even when mapped, and decoding + writing one COBE month ~2 ms,
so a task takes a chunk of months (default DEFAULT_CHUNK, chosen by bench/bench_backfill.py).
The core is `shoal.datasets.cobe_sst_backfill`; this module only spreads its chunks.

Under the default task runner (threads of this process) the tasks decode and the flow
writes; on a prefect-dask `DaskTaskRunner` (`shoal backfill --cluster ...`, or a deployment
that sets one) each task decodes and writes its chunk into its own fork of the session on a
worker, and the flow merges the forks. Either way, one commit at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import task_run
from prefect.tasks import exponential_backoff
from pydantic import DirectoryPath, PositiveInt

from shoal.catalog import Catalog
from shoal.datasets.cobe_sst_backfill import Backfill, ChunkResult, ChunkWork, plan, write_chunk
from shoal.flows.ingest import SHOWN, _transient, flow_dask_client
from shoal.flows.pipelines import features_task
from shoal.flows.terminal import cli_bar
from shoal.progress import NULL, Reporter
from shoal.sources import IngestReport

DEFAULT_CHUNK = 120  # months per task: see bench/bench_backfill.py (12 cost +72% over the core ingest on 1,560 months)


def _chunk_name() -> str:
    months = task_run.parameters["months"]
    return f"decode {months[0]}..{months[-1]}"


@task(cache_policy=NO_CACHE, tags=["ingest"], task_run_name=_chunk_name, retries=3,
      retry_delay_seconds=exponential_backoff(backoff_factor=1), retry_jitter_factor=0.5,
      retry_condition_fn=_transient)  # decoding writes nothing: a retry is safe
def decode_chunk(backfill: Backfill, months: list[np.datetime64]) -> ChunkResult:
    """Decode one chunk of months (the flow writes them)."""
    return backfill.decode_chunk(months)


def _work_name() -> str:
    months = task_run.parameters["work"].months
    return f"decode and write {months[0]}..{months[-1]}"


@task(cache_policy=NO_CACHE, tags=["ingest"], task_run_name=_work_name, retries=3,
      retry_delay_seconds=exponential_backoff(backoff_factor=1), retry_jitter_factor=0.5,
      retry_condition_fn=_transient)  # it writes only into its own fork, the same slots again: a retry is safe
def write_chunk_task(work: ChunkWork) -> ChunkResult:
    """Decode one chunk of months and write them into the chunk's fork, on a Dask worker (the flow merges the forks)."""
    return write_chunk(work)


@flow(name="backfill-sst", flow_run_name="backfill-sst-{start}-{end}")
def backfill_sst(source: DirectoryPath, start: str, end: str, home: str | None = None,
                 chunk: PositiveInt = DEFAULT_CHUNK, concurrency: PositiveInt = 2, force: bool = False,
                 features: dict[str, Any] | None = None) -> IngestReport:
    """Ingest every month from `start` to `end` (YYYY-MM) found in folder `source` as sstYYYYMM.grb.

    Months already stored from an identical file are skipped (`force` re-ingests them);
    a missing or bad file fails its month only; ONE commit at the end. The report lists
    every failed month with its reason. `features`: the ENSO feature settings (e.g. {} for
    the defaults, {"coarsen": 4}) to build once at the end when months were committed;
    None builds nothing. Run on a `DaskTaskRunner` (`shoal.flows.ingest.on_cluster`), the
    chunks are decoded and written on its workers.
    """
    logger, progress = get_run_logger(), cli_bar() or NULL  # a run started elsewhere (the UI, a deployment) logs
    catalog = Catalog(home)
    found = plan(catalog, Path(source), start, end, force=force)
    chunks = found.chunks(chunk)
    logger.info("backfill %s..%s: %d month(s) to ingest in %d task(s), %d unchanged, %d missing",
                start, end, len(found.pending), len(chunks), len(found.unchanged), len(found.failures))
    spread = flow_dask_client() is not None  # tasks on Dask workers cannot share this process's session
    with Backfill(catalog, found, spread=spread) as backfill:  # holds the lock of sst on a local home
        progress.start(f"backfill sst {start}..{end}", total=len(found.months))
        progress.advance(len(found.unchanged) + len(found.failures))
        running: list[PrefectFuture] = []
        for months in chunks:
            if len(running) >= concurrency:  # a sliding window: the next chunk starts when one ends
                first = next(as_completed(running))
                running.remove(first)
                _take(backfill, first, progress)
            running.append(write_chunk_task.submit(backfill.chunk_work(months)) if spread
                           else decode_chunk.submit(backfill, months))
        for future in as_completed(running):
            _take(backfill, future, progress)
        progress.advance(0, status="committing")
        report = backfill.commit()
    # `shoal backfill` prints the summary and every failed month itself: on its console, once.
    logger.info("sst version %s: %d committed, %d unchanged, %d failed", report.version, len(report.committed),
                len(report.unchanged), len(report.failures), extra=SHOWN)
    for failure in report.failures:
        logger.error(failure, extra=SHOWN)
    if features is not None and report.committed:  # once for the whole backfill, not per month
        features_task("enso", home, features)
    return report


def _take(backfill: Backfill, future: PrefectFuture, progress: Reporter) -> None:
    result = future.result()
    backfill.add(result)
    progress.advance(len(result.decoded) + len(result.failures))

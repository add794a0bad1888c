"""COBE-SST ingest of 1,560 months on a 2-worker Dask LocalCluster vs the same ingest in one process.

Files: the 1,560 sample months of `bench_sst_ingest` (1891-01 .. 2020-12, cached in
`bench/.out/cobe_sst/`). Ours: `shoal.datasets.cobe_sst.ingest(..., client=client)` on a
`distributed.LocalCluster` of 2 worker processes with one thread each (what `shoal ingest
sst --cluster local:2` starts): the driver hashes the files; the workers decode their months
and keep the fields; the driver makes the time axis in a fork of the one Icechunk session;
each worker writes its fields into a copy of that fork; the driver merges the copies, writes
the months' sha256 and commits once. Baseline: the same call without a client (hash, decode,
region writes, one commit, all in this process). Each run goes into a fresh catalog; three
interleaved runs each (ours, baseline, ...), medians with their spread. The cluster is
started once before the clock; a second result adds its start and close (the cost of one
`--cluster local:2` command) to one run. Target: the same stored bytes as the baseline (every
Zarr key of the array compared); the speed is reported as measured, with no target on this
machine: its 2 cores are shared by the driver and both workers (and by other users). The
cluster adds pickling two forks and 1,560 months' metadata, a second round of tasks for the
writes, and a driver that competes with the workers for the cores while it hashes and merges;
it moves the decoding and the compression off the driver. Where the workers have cores of
their own, those are what spreads.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from bench.bench_sst_ingest import CACHE, FILES, sample_files
from bench.run import Result, interleaved, timed
from shoal import cluster
from shoal.catalog import Catalog
from shoal.datasets import cobe_sst

REPEATS = 3
WORKERS = 2


def stored(catalog: Catalog) -> dict[str, bytes]:
    """Every key of the array `sst` (metadata, coordinates, field and sha256 chunks) with its bytes."""
    from zarr.core.buffer import default_buffer_prototype

    store = catalog.array_session(cobe_sst.DATASET).store

    async def read() -> dict[str, bytes]:
        return {key: (await store.get(key, prototype=default_buffer_prototype())).to_bytes()
                for key in sorted([key async for key in store.list()])}

    return asyncio.run(read())


def run() -> list[Result]:
    """The cluster ingest beside the one-process ingest, on a running cluster and with its start-up."""
    sample_files()
    spec = cluster.ClusterSpec(workers=WORKERS)
    with tempfile.TemporaryDirectory(dir=CACHE.parent) as scratch:
        homes = iter(Path(scratch, f"home{i}") for i in range(2 * REPEATS + 1))
        spread, local = [], []
        with cluster.connect(spec) as client:
            comparison = interleaved(
                timed(lambda: spread.append(cobe_sst.ingest(Catalog(next(homes)), [CACHE], client=client))),
                timed(lambda: local.append(cobe_sst.ingest(Catalog(next(homes)), [CACHE]))), repeats=REPEATS)
        assert all(len(report.committed) == FILES for report in spread + local)
        same = stored(Catalog(Path(scratch, "home0"))) == stored(Catalog(Path(scratch, "home1")))
        started = time.perf_counter()
        with cluster.connect(spec) as client:
            cobe_sst.ingest(Catalog(next(homes)), [CACHE], client=client)
        whole = time.perf_counter() - started
    ours_label = f"ingest on a LocalCluster of {WORKERS} workers (1 thread each)"
    baseline_label = "cobe_sst.ingest in one process"
    target = "same bytes; speed reported (2 shared cores)"
    name = f"SST ingest, {FILES:,} GRIB files"
    return [
        Result(name=f"{name}, cluster running", ours_label=ours_label, ours_seconds=comparison.ours.median,
               ours_spread=comparison.ours.spread, baseline_label=baseline_label,
               baseline_seconds=comparison.baseline.median, baseline_spread=comparison.baseline.spread,
               target=target, passed=same,
               notes=f"speed-up {comparison.summary}; stored bytes {'identical' if same else 'DIFFER'}"),
        Result(name=f"{name}, with the cluster's start and close", ours_label=f"{ours_label}, started for the call",
               ours_seconds=whole, baseline_label=baseline_label, baseline_seconds=comparison.baseline.median,
               baseline_spread=comparison.baseline.spread, target="none (shown for `--cluster local:2`)", passed=True,
               notes=f"start + close {whole - comparison.ours.median:.2f} s over the ingest (one run)"),
    ]

"""COBE-SST ingest of 1,560 months with the catalog, or the source files, on S3 vs all local.

The server: moto's S3 server (`moto[server]`, in memory, in its own process on 127.0.0.1),
as in `tests/test_s3.py` — loopback, so what is measured is the object-storage code path
(HTTP requests, conditional puts, one object per chunk) and moto's own cost, not a network.
Files: the 1,560 sample months of `bench_sst_ingest` (116 MB, cached in `bench/.out/cobe_sst/`).
(1) Ours: `cobe_sst.ingest` into a fresh prefix of the bucket as the home (Icechunk through
`icechunk.s3_storage`); baseline: the same ingest into a fresh local home. (2) Ours: the
files uploaded once to the bucket and ingested from `s3://bucket/cobe/` into a local home
(`shoal.staging` streams them into a temporary folder, 8 at a time, then the usual ingest,
lineage naming the URLs); baseline: the same ingest from the local folder. Three interleaved
runs each, medians with their spread. Target: the same stored array as the local run; the
speed is reported as measured (no target: moto is a Python server sharing this machine's 2
cores with the ingest, slower than a real object store).
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import numpy as np
from shoal.datasets import cobe_sst

from bench.bench_sst_ingest import CACHE, FILES, sample_files
from bench.run import Result, interleaved, timed
from shoal.catalog import Catalog
from shoal.sources import IngestReport
from shoal.staging import staged
from tests.s3server import moto_s3

REPEATS = 3
BUCKET = "shoal-bench"


def upload(files: list[Path], prefix: str) -> None:
    """Put the files into the bucket under `prefix` (8 at a time)."""
    from concurrent.futures import ThreadPoolExecutor

    import obstore
    from obstore.store import from_url

    store = from_url(f"s3://{BUCKET}/{prefix}")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda path: obstore.put(store, path.name, path.read_bytes()), files))


def from_bucket(home: Path, url: str) -> IngestReport:
    """What `shoal ingest sst s3://...` does: stage the files, ingest the local copies."""
    with staged([url]) as local:
        return cobe_sst.ingest(Catalog(home), local)


def same_array(ours: Catalog, theirs: Catalog) -> bool:
    """Whether two catalogs hold the same SST fields and file digests."""
    a, b = ours.open_array(cobe_sst.DATASET), theirs.open_array(cobe_sst.DATASET)
    return bool(np.array_equal(a.sst.values, b.sst.values, equal_nan=True)
                and np.array_equal(a.source_sha256.values, b.source_sha256.values))


def run() -> list[Result]:
    """The S3 home beside the local home, and sources on S3 beside local sources."""
    files = sample_files()
    with moto_s3(BUCKET), tempfile.TemporaryDirectory(dir=CACHE.parent) as scratch:
        local_homes = iter(Path(scratch, f"local{i}") for i in range(4 * REPEATS))
        s3_homes = []
        reports: list[IngestReport] = []

        def into_s3() -> None:
            s3_homes.append(f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}")
            reports.append(cobe_sst.ingest(Catalog(s3_homes[-1]), [CACHE]))

        home = interleaved(timed(into_s3), timed(lambda: reports.append(cobe_sst.ingest(Catalog(next(local_homes)),
                                                                                         [CACHE]))), repeats=REPEATS)
        home_same = same_array(Catalog(s3_homes[0]), Catalog(Path(scratch, "local0")))
        upload(files, "cobe")
        staged_homes, plain_homes = [], []

        def staged_run() -> None:
            staged_homes.append(next(local_homes))
            reports.append(from_bucket(staged_homes[-1], f"s3://{BUCKET}/cobe/"))

        def plain_run() -> None:
            plain_homes.append(next(local_homes))
            reports.append(cobe_sst.ingest(Catalog(plain_homes[-1]), [CACHE]))

        sources = interleaved(timed(staged_run), timed(plain_run), repeats=REPEATS)
        sources_same = same_array(Catalog(staged_homes[0]), Catalog(plain_homes[0]))
        assert all(len(report.committed) == FILES for report in reports), reports[0].failures
        lineage = Catalog(staged_homes[0]).lineage(cobe_sst.DATASET).sources
        assert all(source.path.startswith(f"s3://{BUCKET}/cobe/") for source in lineage)
    name, target = f"SST ingest, {FILES:,} GRIB files", "same array; speed reported (moto on loopback)"
    baseline = "cobe_sst.ingest, local home, local files"
    return [
        Result(name=f"{name}, home on S3", ours_label="home s3://bucket/prefix (moto, 127.0.0.1)",
               ours_seconds=home.ours.median, ours_spread=home.ours.spread, baseline_label=baseline,
               baseline_seconds=home.baseline.median, baseline_spread=home.baseline.spread, target=target,
               passed=home_same, notes=f"speed-up {home.summary}; array {'identical' if home_same else 'DIFFERS'}"),
        Result(name=f"{name}, source files on S3", ours_label="ingest sst s3://bucket/cobe/ (staged, local home)",
               ours_seconds=sources.ours.median, ours_spread=sources.ours.spread, baseline_label=baseline,
               baseline_seconds=sources.baseline.median, baseline_spread=sources.baseline.spread, target=target,
               passed=sources_same,
               notes=f"speed-up {sources.summary}; array {'identical' if sources_same else 'DIFFERS'}"),
    ]

"""Backfilling a range of COBE-SST months from a folder: plan, decode in chunks, commit once.

`plan` looks at every month from `start` to `end`: its file `sstYYYYMM.grb` in the source
folder, hashed; a month whose stored sha256 is that file's is skipped (unless `force`), a
month without a file is a failure. `Backfill` then holds ONE writable session on the array
`sst`, its time axis made to cover the pending months: `decode_chunk` decodes a chunk of
months (chunks may decode at once, in threads or on workers: it writes nothing); `add`
region-writes the decoded fields in runs of up to 120 months, as the plain ingest does; and
`commit` writes the months' sha256 (one shared Zarr chunk) and commits once, with the
lineage of every month written. A month that fails does not
stop the others; a rerun redoes only what is missing or failed, since the rest is stored.

On a Dask cluster (`spread=True`) a chunk goes to a worker as a `ChunkWork`: `write_chunk`
decodes its months and writes their fields into the chunk's own fork of the session; `add`
keeps the fork, and `commit` merges the forks before the sha256 and the one commit. The
stored bytes and the lineage are those of the chunks written by the driver.

The Prefect flow that spreads the chunks over tasks is `shoal.flows.backfill.backfill_sst`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from shoal import cluster
from shoal.arrays import resolve
from shoal.datasets.cobe_sst import (DATASET, MAX_RUN, decode_months, month_stats, prepare_axis, sample_months_of,
                                     stored_digests, without_values, write_digests, write_months)
from shoal.datasets.cobe_sst_grib import SstMonth
from shoal.datasets.cobe_sst_fetch import month_urls
from shoal.errors import SourceError
from shoal.lineage import Provenance, SourceFile
from shoal.sources import IngestReport

if TYPE_CHECKING:
    from collections.abc import Sequence

    from icechunk import ForkSession

    from shoal.catalog import Catalog

@dataclass(frozen=True)
class BackfillPlan:
    """What a backfill will do: the months to ingest, those skipped, those that cannot be."""

    months: tuple[np.datetime64, ...]
    pending: dict[np.datetime64, SourceFile]
    unchanged: tuple[str, ...]
    failures: dict[np.datetime64, str]

    def chunks(self, size: int) -> list[list[np.datetime64]]:
        """The pending months in chunks of `size`, in time order."""
        months = sorted(self.pending)
        return [months[i : i + size] for i in range(0, len(months), size)]


def plan(catalog: Catalog, source: Path, start: str, end: str, *, force: bool = False) -> BackfillPlan:
    """Which months of `start`..`end` to ingest from folder `source` (hashing every file found)."""
    if not Path(source).is_dir():
        raise SourceError(source, "no such folder", fix="pass the folder that holds the sstYYYYMM.grb files (--source)")
    paths = {np.datetime64(m.month, "M"): Path(source, m.filename) for m in month_urls(start, end)}
    months = list(paths)
    failures = {month: str(SourceError(path, f"no file for {month}",
                                       fix=f"fetch it (`shoal fetch sst --start {month} --end {month}`) or pass "
                                           "the folder that holds it"))
                for month, path in paths.items() if not path.is_file()}
    present = [month for month in months if month not in failures]
    with ThreadPoolExecutor() as pool:  # hashlib releases the GIL
        sources = dict(zip(present, pool.map(SourceFile.of, [paths[m] for m in present]), strict=True))
    stored = {} if not catalog.exists(DATASET) else stored_digests(catalog.open_array(DATASET))
    unchanged = {m for m, s in sources.items() if stored.get(m) == s.sha256 and not force}
    return BackfillPlan(months=tuple(months), pending={m: s for m, s in sources.items() if m not in unchanged},
                        unchanged=tuple(str(sources[m].path) for m in sorted(unchanged)), failures=failures)


@dataclass(frozen=True)
class ChunkResult:
    """The months of one chunk: decoded (with their fields, or written into `fork` without them), and failed."""

    decoded: tuple[SstMonth, ...] = ()
    failures: dict[np.datetime64, str] = field(default_factory=dict)
    fork: ForkSession | None = None


@dataclass(frozen=True)
class ChunkWork:
    """What a worker needs to decode and write one chunk: its months' files, the time axis, its own fork."""

    sources: dict[np.datetime64, SourceFile]
    axis: np.ndarray
    fork: ForkSession

    @property
    def months(self) -> list[np.datetime64]:
        """The chunk's months, in time order."""
        return list(self.sources)


def write_chunk(work: ChunkWork) -> ChunkResult:
    """Decode a chunk's months and write their fields into its fork (on a worker); a bad file fails its month only.

    Rerunning it rewrites the same slots of the same fork: a retry is safe.
    """
    decoded, failures = decode_months(work.sources)
    write_months(work.fork, work.axis, decoded, digests=False)
    return ChunkResult(decoded=tuple(without_values(d) for d in decoded), failures=failures, fork=work.fork)


class Backfill:
    """One session on `sst` for the pending months of a plan: decode (and write) chunks anywhere, `add` each result, `commit`.

    In one process (`decode_chunk`), `add` buffers the decoded months and region-writes them
    in runs of up to MAX_RUN months (one xarray write costs ~50-100 ms whatever its size, so
    one per chunk of 12 months would cost more than decoding them). On a cluster
    (`spread=True`, `chunk_work` + `write_chunk`), the time axis is made in a fork of the
    untouched session, each chunk is written into a copy of that fork by its worker, and
    `add` keeps the copies. `commit` writes the rest, merges the forks, writes the months'
    sha256 in one write, and commits once.
    """

    def __init__(self, catalog: Catalog, backfill: BackfillPlan, *, spread: bool = False) -> None:
        self.catalog, self.plan = catalog, backfill
        self.session = catalog.array_session(DATASET)
        try:
            self._start(backfill, spread=spread)
        except BaseException:
            self.session.close()
            raise

    def _start(self, backfill: BackfillPlan, *, spread: bool) -> None:
        current = self.session.current()
        self.stored = stored_digests(current)
        # On a cluster the axis goes into a fork: icechunk forks only a session without changes.
        self._base = self.session.fork() if spread and backfill.pending else None
        target = self._base if self._base is not None else self.session
        self.axis = prepare_axis(target, current, list(backfill.pending)) if backfill.pending else None
        self.written: list[SstMonth] = []  # without their values, once written
        self.failures = dict(backfill.failures)
        self._buffer: list[SstMonth] = []
        self._forks: list[ForkSession] = []

    def __enter__(self) -> Backfill:
        return self

    def __exit__(self, *_: object) -> None:
        self.session.close()

    def decode_chunk(self, months: Sequence[np.datetime64]) -> ChunkResult:
        """Decode the chunk's months (no writes: it may run in any thread); a bad file fails its month only."""
        decoded, failures = decode_months({month: self.plan.pending[month] for month in months})
        return ChunkResult(decoded=tuple(decoded), failures=failures)

    def chunk_work(self, months: Sequence[np.datetime64]) -> ChunkWork:
        """A chunk for `write_chunk` on a worker, with its own copy of the fork that holds the axis (`spread=True` only)."""
        if self._base is None:
            raise ValueError("chunk_work needs a Backfill(..., spread=True) with pending months")
        return ChunkWork(sources={month: self.plan.pending[month] for month in months}, axis=self.axis,
                         fork=cluster.copy_fork(self._base))

    def add(self, result: ChunkResult) -> None:
        """Take a chunk's result; write the buffered fields once MAX_RUN months are waiting."""
        self.failures.update(result.failures)
        if result.fork is not None:
            self._forks.append(result.fork)
            self.written += result.decoded
            return
        self._buffer += result.decoded
        if len(self._buffer) >= MAX_RUN:
            self._flush()

    def _flush(self) -> None:
        write_months(self.session, self.axis, self._buffer, digests=False)
        self.written += [without_values(d) for d in self._buffer]
        self._buffer = []

    def commit(self) -> IngestReport:
        """Write the rest and the sha256 of every month written, and commit them all at once (nothing when none was)."""
        self._flush()
        written = sorted(self.written, key=lambda d: d.month)
        failed = tuple(self.failures[m] for m in sorted(self.failures))
        if not written:
            version = self.catalog.latest_version(DATASET) if self.catalog.exists(DATASET) else None
            return IngestReport(DATASET, version, unchanged=self.plan.unchanged, failures=failed)
        if self._forks:
            self.session.merge(self._forks)
        write_digests(self.session, self.axis, written)
        replaced = {str(d.month): {"old_sha256": self.stored[d.month], "new_sha256": d.source.sha256}
                    for d in written if d.month in self.stored}
        snapshot = self.session.commit(Provenance(
            sources=tuple(d.source for d in written),
            parameters={"months": [str(d.month) for d in written], "replaced": replaced,
                        "backfill": [str(self.plan.months[0]), str(self.plan.months[-1])],
                        "converted_from": {str(d.month): d.unit for d in written if d.unit != "°C"},
                        "sample_months": sample_months_of(written)},
            message=f"backfill {len(written)} month(s) of {self.plan.months[0]}..{self.plan.months[-1]}"),
            stats=month_stats(written))
        version = resolve(self.catalog.uri("array", DATASET), DATASET, snapshot).version
        return IngestReport(DATASET, version, committed=tuple(str(d.source.path) for d in written),
                            unchanged=self.plan.unchanged, failures=failed)

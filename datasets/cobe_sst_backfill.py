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

The Prefect flow that spreads the chunks over tasks is `shoal.flows.backfill.backfill_sst`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from shoal.arrays import resolve
from shoal.datasets.cobe_sst import (DATASET, MAX_RUN, SstMonth, _digest, _prepare_axis, _stored_digests, _write,
                                     decode)
from shoal.datasets.cobe_sst_fetch import month_urls
from shoal.errors import SourceError
from shoal.lineage import Provenance, SourceFile
from shoal.sources import IngestReport

if TYPE_CHECKING:
    from collections.abc import Sequence

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
    stored = {} if not catalog.exists(DATASET) else _stored_digests(catalog.open_array(DATASET))
    unchanged = {m for m, s in sources.items() if stored.get(m) == s.sha256 and not force}
    return BackfillPlan(months=tuple(months), pending={m: s for m, s in sources.items() if m not in unchanged},
                        unchanged=tuple(str(sources[m].path) for m in sorted(unchanged)), failures=failures)


@dataclass(frozen=True)
class ChunkResult:
    """The months of one chunk: decoded (with their fields), and failed."""

    decoded: tuple[SstMonth, ...] = ()
    failures: dict[np.datetime64, str] = field(default_factory=dict)


class Backfill:
    """One session on `sst` for the pending months of a plan: `decode_chunk` anywhere, `add` each result, `commit`.

    `add` buffers the decoded months and region-writes them in runs of up to MAX_RUN months
    (one xarray write costs ~50-100 ms whatever its size, so one per chunk of 12 months
    would cost more than decoding them); `commit` writes the rest, then the months' sha256
    in one write, and commits once.
    """

    def __init__(self, catalog: Catalog, backfill: BackfillPlan) -> None:
        self.catalog, self.plan = catalog, backfill
        self.session = catalog.array_session(DATASET)
        current = self.session.current()
        self.stored = _stored_digests(current)
        self.axis = _prepare_axis(self.session, current, list(backfill.pending)) if backfill.pending else None
        self.written: list[SstMonth] = []  # without their values, once written
        self.failures = dict(backfill.failures)
        self._buffer: list[SstMonth] = []

    def decode_chunk(self, months: Sequence[np.datetime64]) -> ChunkResult:
        """Decode the chunk's months (no writes: it may run in any thread); a bad file fails its month only."""
        decoded, failures = [], {}
        for month in months:
            source = self.plan.pending[month]
            try:
                decoded.append(decode(source.path, source=source))
            except SourceError as error:
                failures[month] = str(error)
        return ChunkResult(decoded=tuple(decoded), failures=failures)

    def add(self, result: ChunkResult) -> None:
        """Take a chunk's result; write the buffered fields once MAX_RUN months are waiting."""
        self.failures.update(result.failures)
        self._buffer += result.decoded
        if len(self._buffer) >= MAX_RUN:
            self._flush()

    def _flush(self) -> None:
        _write(self.session, self.axis, self._buffer, digests=False)
        self.written += [replace(d, values=np.empty(0, np.float32)) for d in self._buffer]
        self._buffer = []

    def _write_digests(self, written: list[SstMonth]) -> None:
        """The sha256 of the written months in ONE region write over their span (a write per run cost ~1 s on 1,560)."""
        import xarray as xr

        first, last = (int((d.month - self.axis[0]).astype(int)) for d in (written[0], written[-1]))
        digests = self.session.current().source_sha256.values[first : last + 1].copy()  # keep the months between
        for d in written:
            digests[int((d.month - self.axis[0]).astype(int)) - first] = _digest(d.source)
        xr.Dataset({"source_sha256": (("time", "sha256_byte"), digests)}).to_zarr(
            self.session.store, region={"time": slice(first, last + 1)}, consolidated=False)

    def commit(self) -> IngestReport:
        """Write the rest and the sha256 of every month written, and commit them all at once (nothing when none was)."""
        self._flush()
        written = sorted(self.written, key=lambda d: d.month)
        failed = tuple(self.failures[m] for m in sorted(self.failures))
        if not written:
            version = self.catalog.latest_version(DATASET) if self.catalog.exists(DATASET) else None
            return IngestReport(DATASET, version, unchanged=self.plan.unchanged, failures=failed)
        self._write_digests(written)
        replaced = {str(d.month): {"old_sha256": self.stored[d.month], "new_sha256": d.source.sha256}
                    for d in written if d.month in self.stored}
        snapshot = self.session.commit(Provenance(
            sources=tuple(d.source for d in written),
            parameters={"months": [str(d.month) for d in written], "replaced": replaced,
                        "backfill": [str(self.plan.months[0]), str(self.plan.months[-1])],
                        "converted_from": {str(d.month): d.unit for d in written if d.unit != "°C"}},
            message=f"backfill {len(written)} month(s) of {self.plan.months[0]}..{self.plan.months[-1]}"))
        version = resolve(self.catalog.uri("array", DATASET), DATASET, snapshot).version
        return IngestReport(DATASET, version, committed=tuple(str(d.source.path) for d in written),
                            unchanged=self.plan.unchanged, failures=failed)

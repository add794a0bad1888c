"""COBE-SST monthly GRIB files (JMA/TCC) into the Icechunk array `sst`.

One file `sstYYYYMM.grb` holds one month: GRIB1, regular lat-lon 1° (360 x 180), land as
missing values. The array `sst` has variable `sst` (time, lat, lon), float32 °C, NaN on land;
lat ascending -89.5 .. 89.5 (south to north, whatever the file's scanning mode), lon 0.5 ..
359.5, one slot per calendar month, plus `source_sha256` (time, sha256_byte) — the raw sha256
of the file each month came from, all zeros where a month was never ingested.

Ingest is backfill-ready: months arrive in any order; each month is a region write into its
slot; the time axis grows (or is rebuilt when a month precedes it); a file whose sha256 is
already stored is a no-op; a changed file replaces its month. One commit per call.

With a Dask client (`shoal ingest sst --cluster ...`), the workers decode the months and
write their fields into forks of the ONE Icechunk session; the driver merges the forks and
commits once, with the same lineage and the same stored bytes as an ingest in one process.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random

from shoal import cluster
from shoal.arrays import history, open_repo, resolve
from shoal.commit_stats import CommitStats
from shoal.datasets.cobe_sst_grib import LAT, LON, NI, NJ, SstMonth, decode, month_of_name
from shoal.errors import ConcurrentCommit, SourceError
from shoal.lineage import Provenance, SourceFile
from shoal.sources import FileDone, IngestReport, check_path, folder_files, no_progress, register_source

if TYPE_CHECKING:
    import xarray as xr
    from distributed import Client, Future
    from icechunk import ForkSession

    from shoal.arrays import ArraySession
    from shoal.catalog import Catalog

DATASET = "sst"
# CF attributes, so that xarray / cf-xarray users find the axes and units without shoal. The
# time's units are not here: xarray writes them from the time encoding (days since 1850-01-01).
LAT_ATTRS = {"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude", "axis": "Y"}
LON_ATTRS = {"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude", "axis": "X"}
TIME_ATTRS = {"standard_name": "time", "long_name": "month", "axis": "T"}
SST_ATTRS = {"units": "degC", "standard_name": "sea_surface_temperature", "long_name": "sea surface temperature"}
MAX_RUN = 120  # months per region write (31 MB of float32)
ATTEMPTS = 8  # sessions an ingest into an object-store home opens while other writers of sst keep committing first


def expand(paths: Sequence[Path], *, follow_links: bool = False) -> tuple[list[Path], list[str]]:
    """Files as given, folders as their `sst*.grb` files sorted by name, and one line per path or entry refused.

    Refused: a path that does not exist or is no regular file, a folder without sst*.grb
    files, and in a folder a link (unless `follow_links`), device or pipe named sst*.grb.
    """
    found: list[Path] = []
    failures: list[str] = []
    for path in map(Path, paths):
        if (problem := check_path(path, folders=True, expected="COBE-SST sstYYYYMM.grb files or their folder")):
            failures.append(str(problem))
            continue
        if not path.is_dir():
            found.append(path)
            continue
        files, refused = folder_files(path, pattern="sst*.grb", recursive=False, follow_links=follow_links)
        if not files and not refused:
            failures.append(str(SourceError(path, "no sstYYYYMM.grb file in this folder",
                                            fix="pass COBE-SST files or their folder")))
        found.extend(files)
        failures.extend(refused)
    return found, failures


def files(paths: Sequence[Path], *, follow_links: bool = False) -> list[Path]:
    """The files an ingest of `paths` processes (`expand` without its failures)."""
    return expand(paths, follow_links=follow_links)[0]


def _digest(source: SourceFile) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(source.sha256), dtype=np.uint8)


def stored_digests(current: xr.Dataset | None) -> dict[np.datetime64, str]:
    if current is None:
        return {}
    digests = current.source_sha256.values
    months = current.time.values.astype("datetime64[M]")
    return {m: bytes(d).hex() for m, d in zip(months, digests, strict=True) if d.any()}


def _template(months: np.ndarray) -> xr.Dataset:
    import dask.array as da
    import xarray as xr

    time = months.astype("datetime64[ns]")
    # One dask chunk: the template is written with compute=False (metadata only), and a
    # graph of one task per month costs more than the ingest's writes of small batches.
    sst = da.full((len(months), NJ, NI), np.nan, dtype=np.float32, chunks=-1)
    digest = da.zeros((len(months), 32), dtype=np.uint8, chunks=(len(months), 32))
    dataset = xr.Dataset(
        {"sst": (("time", "lat", "lon"), sst), "source_sha256": (("time", "sha256_byte"), digest)},
        coords={"time": ("time", time, TIME_ATTRS), "lat": ("lat", LAT.astype(np.float32), LAT_ATTRS),
                "lon": ("lon", LON.astype(np.float32), LON_ATTRS)},
        attrs={"title": "COBE-SST monthly sea-surface temperature", "source": "JMA/TCC COBE-SST via shoal",
               "latitude_order": "south to north"},
    )
    dataset.sst.attrs.update(SST_ATTRS)
    return dataset


def prepare_axis(session: object, current: xr.Dataset | None, months: list[np.datetime64]) -> np.ndarray:
    """Make the time axis cover `months`: create it, append to it, or rebuild it.

    It writes no `sst` chunk of `months` (metadata and coordinates only, `compute=False`):
    their fields come next, perhaps from workers writing into copies of a fork that holds
    these changes, and merging those copies would put a chunk written here back over a
    worker's.
    """
    held = current.time.values.astype("datetime64[M]") if current is not None else np.array([], "datetime64[M]")
    first, last = min(months + list(held[:1])), max(months + list(held[-1:]))
    axis = np.arange(first, last + 1, dtype="datetime64[M]")
    import xarray as xr
    from zarr.codecs import BloscCodec

    # Blosc lz4 with byte shuffle: measured here 2.1x faster to write and 19% smaller than
    # zarr's default zstd on COBE-like fields; a standard Zarr v3 codec every reader has.
    blosc = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
    encoding = {"sst": {"chunks": (1, NJ, NI), "compressors": (blosc,)}, "source_sha256": {"chunks": (MAX_RUN * 10, 32)},
                "time": {"units": "days since 1850-01-01", "dtype": "int64", "chunks": (MAX_RUN * 10,)}}
    if current is None or first < held[0]:
        # No axis yet, or a month before it: write the axis anew, in this same commit. The
        # stored months move to their new slots (all but those about to be rewritten); they
        # are read first, as mode="w" replaces the arrays this session reads them from.
        rewritten = set(months)
        moved = [(run[0], current.sst[_slot(held, run[0]) : _slot(held, run[-1]) + 1].values)
                 for run in _runs([m for m in stored_digests(current) if m not in rewritten])]
        digests = None if current is None else current.source_sha256.values
        _template(axis).to_zarr(session.store, mode="w", consolidated=False, compute=False, encoding=encoding)
        if digests is not None:
            xr.Dataset({"source_sha256": (("time", "sha256_byte"), digests)}).to_zarr(
                session.store, region={"time": slice(_slot(axis, held[0]), _slot(axis, held[-1]) + 1)}, consolidated=False)
        for start, fields in moved:
            xr.Dataset({"sst": (("time", "lat", "lon"), fields)}).to_zarr(
                session.store, region={"time": slice(_slot(axis, start), _slot(axis, start) + len(fields))},
                consolidated=False)
    elif last > held[-1]:
        _template(axis[axis > held[-1]]).to_zarr(session.store, append_dim="time", consolidated=False, compute=False)
    return axis


def _slot(axis: np.ndarray, month: np.datetime64) -> int:
    """The index of `month` on a time axis of consecutive months."""
    return int((month - axis[0]).astype(int))


def _runs(months: list[np.datetime64]) -> Iterator[list[np.datetime64]]:
    """Sorted months in runs of consecutive months, at most MAX_RUN long."""
    run: list[np.datetime64] = []
    for month in sorted(months):
        if run and (month != run[-1] + 1 or len(run) == MAX_RUN):
            yield run
            run = []
        run.append(month)
    if run:
        yield run


def _by_month(files: Sequence[Path]) -> tuple[dict[np.datetime64, Path], list[str]]:
    """One file per month; misnamed files and months given twice are failures."""
    failures: list[str] = []
    groups: dict[np.datetime64, list[Path]] = {}
    for path in files:
        try:
            groups.setdefault(month_of_name(path), []).append(path)
        except SourceError as error:
            failures.append(str(error))
    for month, group in groups.items():
        for path in group if len(group) > 1 else ():
            others = ", ".join(str(other) for other in group if other != path)
            failures.append(str(SourceError(path, f"month {month} is also given by {others}", fix="pass one file per month")))
    return {month: group[0] for month, group in groups.items() if len(group) == 1}, failures


def _decode_all(pending: dict[np.datetime64, SourceFile], names: dict[np.datetime64, Path],
                done: FileDone) -> tuple[list[SstMonth], list[str]]:
    decoded, failures = [], []
    for month in sorted(pending):
        try:
            decoded.append(decode(pending[month].path, source=pending[month]))
        except SourceError as error:
            failures.append(str(error))
        done(str(names[month]))
    return decoded, failures


def write_months(session: object, axis: np.ndarray, decoded: list[SstMonth], *, digests: bool = True) -> None:
    """Region-write decoded months (and, unless told not to, their sha256), a run of consecutive months at a time."""
    import xarray as xr

    by_month = {d.month: d for d in decoded}
    for run in _runs(list(by_month)):
        start = _slot(axis, run[0])
        variables = {"sst": (("time", "lat", "lon"), np.stack([by_month[m].values for m in run]))}
        if digests:
            variables["source_sha256"] = (("time", "sha256_byte"), np.stack([_digest(by_month[m].source) for m in run]))
        xr.Dataset(variables).to_zarr(session.store, region={"time": slice(start, start + len(run))},
                                      consolidated=False)


def write_digests(session: object, axis: np.ndarray, written: list[SstMonth]) -> None:
    """The sha256 of the written months (sorted) in ONE region write over their span, keeping the months between.

    One write, as they share Zarr chunks of 1,200 months (a write per run cost ~1 s on 1,560
    months), and from the driver only: two forks writing into one chunk would each keep
    their own version of it.
    """
    import xarray as xr

    first, last = _slot(axis, written[0].month), _slot(axis, written[-1].month)
    digests = session.current().source_sha256.values[first : last + 1].copy()
    for d in written:
        digests[_slot(axis, d.month) - first] = _digest(d.source)
    xr.Dataset({"source_sha256": (("time", "sha256_byte"), digests)}).to_zarr(
        session.store, region={"time": slice(first, last + 1)}, consolidated=False)


Decoded = tuple[list[SstMonth], dict[np.datetime64, str]]
"""Some months decoded: their fields, and one line per month whose file failed."""


def decode_months(sources: dict[np.datetime64, SourceFile]) -> Decoded:
    """Decode the files of some months, in their order (writing nothing: it may run in any thread or worker).

    Returns:
        The decoded months, and one line per month whose file failed.
    """
    decoded, failures = [], {}
    for month, source in sources.items():
        try:
            decoded.append(decode(source.path, source=source))
        except SourceError as error:
            failures[month] = str(error)
    return decoded, failures


def sample_months_of(written: Sequence[SstMonth]) -> list[str]:
    """The months among `written` whose files carry SAMPLE_MARK: the commit's "sample_months" fact."""
    return [str(d.month) for d in written if d.sample]


def sample_months(catalog: Catalog, *, version: int | str | None = None) -> list[str]:
    """The months of `sst` at `version` (default latest) whose data came from sample files, sorted.

    The commit that wrote a month last decides: a sample month later replaced by a real file
    is no longer one. Commits from before the fact was recorded count as real data.
    """
    newest = resolve(catalog.uri("array", DATASET), DATASET, version).version
    sample: dict[str, bool] = {}
    for entry in reversed(history(catalog.uri("array", DATASET), DATASET)):
        if entry.version > newest:
            break
        parameters = entry.lineage.parameters if entry.lineage else {}
        marked = set(parameters.get("sample_months", ()))
        sample.update((month, month in marked) for month in parameters.get("months", ()))
    return sorted(month for month, marked in sample.items() if marked)


def without_values(month: SstMonth) -> SstMonth:
    """A decoded month without its field: what the driver keeps of a month written elsewhere."""
    return replace(month, values=np.empty(0, np.float32))


def month_stats(written: Sequence[SstMonth]) -> CommitStats:
    """The statistics of written months, one part per month: a month written again replaces its part."""
    return CommitStats(mode="replace", parts={str(d.month): {"sst": d.stats} for d in written})


def _decoded_only(part: Decoded) -> Decoded:
    """What a worker sends the driver of its decoded part: the fields stay with it, for the writes."""
    decoded, failures = part
    return [without_values(d) for d in decoded], failures


def _write_part(fork: ForkSession, axis: np.ndarray, part: Decoded) -> ForkSession:
    """On a worker: write a decoded part's fields (not their sha256: the driver writes those) into its own fork."""
    write_months(fork, axis, part[0], digests=False)
    return fork


def _spread(client: Client, session: ArraySession, current: xr.Dataset | None, pending: dict[np.datetime64, SourceFile],
            names: dict[np.datetime64, Path], done: FileDone) -> tuple[list[SstMonth], list[str]]:
    """Decode and write the pending months on the workers of `client`, into forks merged back into `session`.

    Two rounds, so that the time axis covers exactly the months that decoded, as in one
    process: the workers decode their part of the months and keep the fields; the driver
    makes the axis in a fork of the untouched session; each worker writes its fields into
    a copy of that fork; the driver merges the copies and writes the months' sha256.

    Returns:
        The months written (without their fields) and the failures, both in time order.
    """
    from distributed import as_completed

    months = sorted(pending)
    size = max(1, min(MAX_RUN, -(-len(months) // cluster.workers(client))))  # every worker gets a part
    parts: list[Future] = [client.submit(decode_months, {m: pending[m] for m in months[i : i + size]}, pure=False)
                           for i in range(0, len(months), size)]
    written, failed = [], {}
    for summary in as_completed([client.submit(_decoded_only, part, pure=False) for part in parts]):
        decoded, failures = summary.result()
        written += decoded
        failed.update(failures)
        for month in sorted([d.month for d in decoded] + list(failures)):
            done(str(names[month]))
    written.sort(key=lambda d: d.month)
    if written:
        base = session.fork()
        axis = prepare_axis(base, current, [d.month for d in written])
        session.merge(client.gather([client.submit(_write_part, cluster.copy_fork(base), axis, part, pure=False)
                                     for part in parts]))
        write_digests(session, axis, written)
    return written, [failed[m] for m in sorted(failed)]


@register_source("sst", dataset=DATASET, description="COBE-SST monthly GRIB files (sstYYYYMM.grb or folders of them)",
                 expand=files, spreads=True)
def ingest(catalog: Catalog, paths: Sequence[Path], *, progress: FileDone | None = None,
           client: Client | None = None, follow_links: bool = False) -> IngestReport:
    """Ingest COBE-SST files into the array `sst` in one commit; bad files are reported.

    Args:
        catalog: the catalog.
        paths: `sstYYYYMM.grb` files, or folders of them.
        progress: called once per file of `files(paths)`: when it is decoded, found
            unchanged, or has failed (before the one commit of the whole call).
        client: a Dask client whose workers decode and write the months (the same result
            as without one); None: all in this process.
        follow_links: read what links named sst*.grb in a folder point to; without it each is refused.
    """
    done = progress or no_progress
    found, failures = expand(paths, follow_links=follow_links)
    by_month, misnamed = _by_month(found)
    failures.extend(misnamed)
    kept = set(by_month.values())
    for path in found:
        if path not in kept:  # misnamed, or its month given twice: failed already
            done(str(path))
    reported: set[str] = set()

    def once(path: str) -> None:  # a retried attempt reports no file twice
        if path not in reported:
            reported.add(path)
            done(path)

    # On a local home the session holds the lock of sst: nobody commits meanwhile. On object
    # storage a writer of other months may commit first; Icechunk cannot rebase a grown time
    # axis, so the months are written again on the new snapshot (tenacity: a few tries, random waits).
    retrying = Retrying(retry=retry_if_exception_type(ConcurrentCommit), stop=stop_after_attempt(ATTEMPTS),
                        wait=wait_random(0, 2), reraise=True)
    return retrying(_ingest_months, catalog, by_month, tuple(failures), once, client)


def _version_of(catalog: Catalog, snapshot: str) -> int:
    """The version number of `snapshot` of sst: its place on main, counted without reading any commit's lineage.

    `resolve` would parse every commit's lineage, the statistics of all its months included
    (~0.1 s after an ingest of 1,560 months).
    """
    ancestry = open_repo(catalog.uri("array", DATASET), DATASET).ancestry(snapshot_id=snapshot)
    return sum(1 for _ in ancestry) - 2  # the root is no version, and versions count from 0


def _ingest_months(catalog: Catalog, by_month: dict[np.datetime64, Path], failed: tuple[str, ...], done: FileDone,
                   client: Client | None) -> IngestReport:
    """Hash, decode, write and commit the months in one session on the newest snapshot."""
    failures = list(failed)
    with catalog.array_session(DATASET) as session:  # on a local home: other writers of sst wait
        current = session.current()
        stored = stored_digests(current)
        with ThreadPoolExecutor() as pool:  # hashlib releases the GIL: hash on every core
            sources = dict(zip(by_month, pool.map(SourceFile.of, by_month.values()), strict=True))
        unchanged = tuple(str(s.path) for m, s in sources.items() if stored.get(m) == s.sha256)
        pending = {m: s for m, s in sources.items() if stored.get(m) != s.sha256}
        for month in sorted(sources.keys() - pending.keys()):
            done(str(by_month[month]))
        if client is None:
            written, bad = _decode_all(pending, by_month, done)
            if written:
                write_months(session, prepare_axis(session, current, [d.month for d in written]), written)
        else:
            written, bad = _spread(client, session, current, pending, by_month, done)
        failures.extend(bad)
        if not written:
            version = catalog.latest_version(DATASET) if current is not None else None
            return IngestReport(DATASET, version, unchanged=unchanged, failures=tuple(failures))
        replaced = {str(d.month): {"old_sha256": stored[d.month], "new_sha256": d.source.sha256}
                    for d in written if d.month in stored}
        converted = {str(d.month): d.unit for d in written if d.unit != "°C"}
        message = f"ingest {len(written)} month(s)" + (f", replacing {', '.join(sorted(replaced))}" if replaced else "")
        snapshot = session.commit(Provenance(
            sources=tuple(d.source for d in written),
            parameters={"months": [str(d.month) for d in written], "replaced": replaced, "converted_from": converted,
                        "sample_months": sample_months_of(written)},
            message=message,
        ), stats=month_stats(written))
        # The number of OUR snapshot: other writers may have committed since.
        version = _version_of(catalog, snapshot)
        return IngestReport(DATASET, version, committed=tuple(str(d.source.path) for d in written),
                            unchanged=unchanged, failures=tuple(failures))

"""COBE-SST ingest of the full series: 1,560 monthly GRIB files, 1891-01 .. 2020-12.

The files are COBE-format samples written by `shoal.datasets.cobe_sst_sample` (GRIB1,
360 x 180, land bitmap, 16-bit packing; 116 MB), cached in `bench/.out/cobe_sst/`.
Ours: `shoal.datasets.cobe_sst.ingest` into a fresh catalog: sha256 of every file, a raw
ecCodes decode with full validation (parameter, grid, date vs file name, units by range),
canonical latitude order, region writes of up to 120 months into an Icechunk repository
(Zarr v3 float32, NaN fill, one month per chunk, Blosc lz4 level 5 with byte shuffle) and
one commit with the lineage of all 1,560 files.
Ceiling (a): shoal's decode and store without its checks and bookkeeping. Decode: per file
`codes_grib_new_from_file`, the sea points' values (`codedValues`) and, once per bitmap
(shoal's `sea_points`: keyed by the md5 of its section), where they lie; float32, land NaN,
flip to south-north. Store: one write of all grids into a plain local Zarr v3
array with shoal's dtype, fill, chunks and codecs (checked against the ingested array) — no
hashing, no validation keys, no coordinates, no transaction, no lineage. Baseline (b): what a user
would write: `xarray.open_mfdataset(engine="cfgrib")` + `to_zarr`. Targets: >= 0.9x the
ceiling, >= 3x the cfgrib baseline. Ours and the ceiling: five interleaved runs each (ours,
ceiling, ours, ...), medians with their spread (min..max), and the verdict on the ratio;
cfgrib: one run (it takes tens of seconds); the ceiling's decode alone: best of 3, in the notes.

History. Until 2026-12-06 shoal and the ceiling read every point's value (`codes_get_values`):
ecCodes then expands the land bitmap into each month's 64,800 slots, ~0.45 ms of a ~1.6 ms
decode, more than the values' own unpacking (~0.2 ms). Measured then (2026-12-01): ours
5.63 s, the ceiling 6.10 s (1.08x), the ceiling's decode alone 2.71 s, cfgrib 7.27x. Both
now read only the sea points' values and each bitmap once: ours took 3.98 s in the first run
after (1.4x faster), the ceiling's decode alone fell to ~1.2 s, and the ceiling to ~3.3 s. So
the >= 0.9x target is on its edge since (0.77-0.90x over its first six runs, met once): what
the ceiling leaves out is now a larger share of a faster ingest — per month ~0.3 ms of checks
(20 ecCodes keys for the grid, parameter, date and sample mark; the bitmap against the values;
the range and NaN rules) and the month's statistics (~0.1 ms), and per ingest the sha256 of
every file (~0.25 s on 2 cores), its lineage and the commit.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.run import Result, best_of, interleaved, timed
from shoal.catalog import Catalog
from shoal.datasets import cobe_sst
from shoal.datasets.cobe_sst import NI, NJ
from shoal.datasets.cobe_sst_grib import sea_points
from shoal.datasets.cobe_sst_sample import write_sample

if TYPE_CHECKING:
    import zarr

START, END, FILES = "1891-01", "2020-12", 1560
REPEATS = 5  # this 2-core machine is shared: five pairs keep the medians stable
CACHE = Path(__file__).parent / ".out" / "cobe_sst"


def sample_files() -> list[Path]:
    """The 1,560 sample files, written once and reused."""
    files = sorted(CACHE.glob("sst*.grb"))
    if len(files) != FILES:
        files = write_sample(CACHE, start=START, end=END)
    return files


def decode_loop(files: list[Path]) -> np.ndarray:
    """shoal's decode without its checks: (T, 180, 360) float32, south to north, NaN on land."""
    import eccodes

    grids = np.empty((len(files), NJ, NI), dtype=np.float32)
    for i, path in enumerate(files):
        with path.open("rb") as f:
            handle = eccodes.codes_grib_new_from_file(f)
            try:
                coded, sea = eccodes.codes_get_array(handle, "codedValues"), sea_points(handle)
            finally:
                eccodes.codes_release(handle)
        flat = np.full(NJ * NI, np.nan, np.float32)
        flat[sea] = coded
        grids[i] = flat.reshape(NJ, NI)[::-1]  # the samples scan north to south
    return grids


def ceiling(files: list[Path], store: Path) -> zarr.Array:
    """Decode + one write into a plain Zarr array with shoal's dtype, fill, chunks and codecs."""
    import zarr
    from zarr.codecs import BloscCodec

    grids = decode_loop(files)
    array = zarr.create_array(store=str(store), shape=grids.shape, chunks=(1, NJ, NI), dtype="float32",
                              fill_value=np.nan, compressors=BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
                              overwrite=True)
    array[:] = grids
    return array


def assert_like_for_like(catalog: Catalog, plain: zarr.Array) -> None:
    """The ceiling's array has the dtype, fill, chunks and codecs of the array shoal ingested."""
    encoding = catalog.open_array(cobe_sst.DATASET).sst.encoding
    ours = (encoding["dtype"], encoding["chunks"], encoding["serializer"], encoding["compressors"])
    same_fill = np.array_equal(encoding["fill_value"], plain.fill_value, equal_nan=True)
    assert same_fill and ours == (plain.dtype, plain.chunks, plain.serializer, plain.compressors), (encoding, plain.metadata)


def cfgrib(files: list[Path], store: Path) -> None:
    """What a user would write with xarray + cfgrib."""
    import xarray as xr

    dataset = xr.open_mfdataset([str(f) for f in files], engine="cfgrib", combine="nested", concat_dim="time",
                                backend_kwargs={"indexpath": ""})
    dataset.to_zarr(str(store), mode="w", consolidated=False)


def run() -> list[Result]:
    """Time ours against the ceiling (interleaved) and the cfgrib baseline on the same files."""
    files = sample_files()
    with tempfile.TemporaryDirectory(dir=CACHE.parent) as scratch:
        homes = iter(Path(scratch, f"home{i}") for i in range(REPEATS))
        reports, plain = [], []
        comparison = interleaved(timed(lambda: reports.append(cobe_sst.ingest(Catalog(next(homes)), [CACHE]))),
                                 timed(lambda: plain.append(ceiling(files, Path(scratch, "plain.zarr")))), repeats=REPEATS)
        assert all(len(report.committed) == FILES for report in reports), reports[0].failures
        assert_like_for_like(Catalog(Path(scratch, "home0")), plain[0])
        decode_s, _ = best_of(lambda: decode_loop(files))
        cfgrib_s, _ = best_of(lambda: cfgrib(files, Path(scratch, "cfgrib.zarr")), repeats=1)
    ours_s, ours_spread = comparison.ours.median, comparison.ours.spread
    notes = f"{FILES / ours_s:.0f} files/s; the ceiling's decode alone {decode_s:.2f} s"
    name, ours_label = f"SST ingest, {FILES} GRIB files", "shoal ingest sst (Icechunk, one commit)"
    return [
        Result(name=name, ours_label=ours_label, ours_seconds=ours_s, ours_spread=ours_spread,
               baseline_label="(a) ceiling: bare decode + plain Zarr, shoal's chunks and codecs",
               baseline_seconds=comparison.baseline.median, baseline_spread=comparison.baseline.spread,
               target=">= 0.9x", passed=comparison.ratio >= 0.9, notes=f"speed-up {comparison.summary}; {notes}"),
        Result(name=name, ours_label=ours_label, ours_seconds=ours_s, ours_spread=ours_spread,
               baseline_label="(b) xarray open_mfdataset(cfgrib) + to_zarr", baseline_seconds=cfgrib_s,
               target=">= 3x", passed=cfgrib_s / ours_s >= 3.0, notes=notes),
    ]

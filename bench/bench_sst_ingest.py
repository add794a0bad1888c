"""COBE-SST ingest of the full series: 1,560 monthly GRIB files, 1891-01 .. 2020-12.

The files are COBE-format samples written by `shoal.datasets.cobe_sst_sample` (GRIB1,
360 x 180, land bitmap, 16-bit packing; 116 MB), cached in `bench/.out/cobe_sst/`.
Ours: `shoal.datasets.cobe_sst.ingest` into a fresh catalog: sha256 of every file, a raw
ecCodes decode with full validation (parameter, grid, date vs file name, units by range),
canonical latitude order, region writes into an Icechunk repository (Zarr v3, default
codecs, one month per chunk) and one commit with the lineage of all 1,560 files.
Ceiling (a): a bare ecCodes decode loop (values, missing -> NaN, flip to south-north) that
writes the same grids into a plain local Zarr v3 array with default codecs and the same
chunks — decode + store, no validation, no transaction, no lineage. Baseline (b): what a user
would write: `xarray.open_mfdataset(engine="cfgrib")` + `to_zarr`. Targets: >= 0.9x the
ceiling, >= 3x the cfgrib baseline. The decode-only time of the bare loop is in the notes.
Ours and the ceiling: best of 3; cfgrib: one run (it takes tens of seconds).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from bench.run import Result, best_of
from shoal.catalog import Catalog
from shoal.datasets import cobe_sst
from shoal.datasets.cobe_sst_sample import write_sample

START, END, FILES = "1891-01", "2020-12", 1560
CACHE = Path(__file__).parent / ".out" / "cobe_sst"


def sample_files() -> list[Path]:
    """The 1,560 sample files, written once and reused."""
    files = sorted(CACHE.glob("sst*.grb"))
    if len(files) != FILES:
        files = write_sample(CACHE, start=START, end=END)
    return files


def decode_loop(files: list[Path]) -> np.ndarray:
    """The bare ecCodes loop: (T, 180, 360) float32, south to north, NaN on land."""
    import eccodes

    grids = np.empty((len(files), 180, 360), dtype=np.float32)
    for i, path in enumerate(files):
        with path.open("rb") as f:
            handle = eccodes.codes_grib_new_from_file(f)
            values = eccodes.codes_get_values(handle)
            missing = eccodes.codes_get(handle, "missingValue")
            eccodes.codes_release(handle)
        grids[i] = np.where(values == missing, np.nan, values).reshape(180, 360)[::-1]
    return grids


def ceiling(files: list[Path], store: Path) -> None:
    """Decode + plain Zarr write with default codecs."""
    import zarr

    grids = decode_loop(files)
    array = zarr.create_array(store=str(store), shape=grids.shape, chunks=(1, 180, 360), dtype="float32",
                              fill_value=np.nan, overwrite=True)
    array[:] = grids


def cfgrib(files: list[Path], store: Path) -> None:
    """What a user would write with xarray + cfgrib."""
    import xarray as xr

    dataset = xr.open_mfdataset([str(f) for f in files], engine="cfgrib", combine="nested", concat_dim="time",
                                backend_kwargs={"indexpath": ""})
    dataset.to_zarr(str(store), mode="w", consolidated=False)


def run() -> list[Result]:
    """Time ours, the ceiling and the cfgrib baseline on the same files."""
    files = sample_files()
    with tempfile.TemporaryDirectory(dir=CACHE.parent) as scratch:
        homes = iter(Path(scratch, f"home{i}") for i in range(10))
        ours_s, report = best_of(lambda: cobe_sst.ingest(Catalog(next(homes)), [CACHE]))
        assert len(report.committed) == FILES, report.failures
        decode_s, _ = best_of(lambda: decode_loop(files))
        ceiling_s, _ = best_of(lambda: ceiling(files, Path(scratch, "plain.zarr")))
        cfgrib_s, _ = best_of(lambda: cfgrib(files, Path(scratch, "cfgrib.zarr")), repeats=1)
    notes = f"{FILES / ours_s:.0f} files/s; bare decode alone {decode_s:.2f} s"
    return [
        Result(name=f"SST ingest, {FILES} GRIB files", ours_label="shoal ingest sst (Icechunk, one commit)",
               ours_seconds=ours_s, baseline_label="(a) ceiling: ecCodes loop + plain Zarr",
               baseline_seconds=ceiling_s, target=">= 0.9x", passed=ceiling_s / ours_s >= 0.9, notes=notes),
        Result(name=f"SST ingest, {FILES} GRIB files", ours_label="shoal ingest sst (Icechunk, one commit)",
               ours_seconds=ours_s, baseline_label="(b) xarray open_mfdataset(cfgrib) + to_zarr",
               baseline_seconds=cfgrib_s, target=">= 3x", passed=cfgrib_s / ours_s >= 3.0, notes=notes),
    ]

"""Sample COBE-format GRIB files for the demo, the benchmarks and the tests.

No real COBE-SST file could be obtained when this was written, so these files are
written with ecCodes in the COBE format (GRIB1, JMA centre, table 128 parameter 34 `sst`,
regular lat-lon 1°, 360 x 180, north to south, land as a bitmap) and carry a field with real
temporal dynamics: the Niño 3.4 box (5°S-5°N, 170°W-120°W) follows the REAL monthly
NINO34_MEAN series of the embedded ONI table, under a plausible climatology (warm tropics,
a west-Pacific warm pool and east-Pacific cold tongue, a hemispheric seasonal cycle) and
smooth, seeded, autocorrelated noise. The land mask is real: the missing points of an ECMWF
1° wave field (ecmwf/magics test data, Apache-2.0), taken at the COBE cell centres.

The ENSO task is scored on the index, so the EFFECTIVE test items of a sample are months of
the REAL Niño 3.4 series: with the default `--test-start 2005-01`, the ~190 months to the
table's end in 2020, which are far from independent (the scoring's moving 12-month blocks
count them as ~16 years of evidence).

Every file carries `shoal.datasets.cobe_sst_grib.SAMPLE_MARK` (GRIB1 sub-centre 83, generating
process 72): ingest records the months of marked files as the commit's "sample_months", and
the ENSO hindcast plot says when its SST is this synthetic sample rather than COBE-SST.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from shoal.datasets.cobe_sst_grib import LAT, LON, NI, NJ, SAMPLE_MARK
from shoal.datasets.oni import SAMPLE as ONI_SAMPLE
from shoal.datasets.oni import read_oni

LAND_SOURCE = Path(__file__).parent / "sample_data" / "ecmwf_magics_test_python_period_of_swell.grib"
NINO34_BOX = {"lat": (-5.0, 5.0), "lon": (190.0, 240.0)}
MISSING = 9999.0
_MODES = 16  # smooth noise: random low-wavenumber modes with AR(1) amplitudes


def months_between(start: str, end: str) -> np.ndarray:
    """Every month from `start` to `end` inclusive ('YYYY-MM')."""
    return np.arange(np.datetime64(start, "M"), np.datetime64(end, "M") + 1)


@functools.cache
def land_mask() -> np.ndarray:
    """(180, 360) bool, lat ascending: a COBE cell is land when 2 of its 4 corners are missing."""
    import eccodes

    with LAND_SOURCE.open("rb") as f:
        handle = eccodes.codes_grib_new_from_file(f)
        try:
            missing = eccodes.codes_get_values(handle) == eccodes.codes_get(handle, "missingValue")
        finally:
            eccodes.codes_release(handle)
    points = missing.reshape(181, 360)[::-1]  # rows 90S .. 90N, columns 0E .. 359E
    corners = points[:-1] * 1 + points[1:] + np.roll(points[:-1], -1, axis=1) + np.roll(points[1:], -1, axis=1)
    return corners >= 2


def box_mask() -> np.ndarray:
    """(180, 360) bool: the Niño 3.4 box."""
    lat = (LAT >= NINO34_BOX["lat"][0]) & (LAT <= NINO34_BOX["lat"][1])
    lon = (LON >= NINO34_BOX["lon"][0]) & (LON <= NINO34_BOX["lon"][1])
    return lat[:, None] & lon[None, :]


def nino34_mean(months: np.ndarray) -> np.ndarray:
    """The real NINO34_MEAN (°C) of each month; NaN where the table has none."""
    table = read_oni(ONI_SAMPLE)
    by_month = dict(zip(np.array(table.column("month").to_pylist(), dtype="datetime64[M]"),
                        table.column("nino34_mean").to_numpy(zero_copy_only=False), strict=True))
    return np.array([by_month.get(m, np.nan) for m in months], dtype=np.float64)


def sample_fields(months: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """(T, 180, 360) float32 °C, lat ascending, NaN on land, for `months`."""
    rng = np.random.default_rng(seed)
    lat, lon = np.radians(LAT)[:, None], np.radians(LON)[None, :]
    climate = -1.8 + 30.0 * np.cos(lat) ** 2 + 1.5 * np.cos(lon - np.radians(150.0)) * np.exp(-((LAT[:, None] / 20.0) ** 2))
    pattern = np.exp(-((LAT[:, None] / 12.0) ** 2) - ((LON[None, :] - 225.0) / 45.0) ** 2)
    box = box_mask()
    # Smooth noise: random low-wavenumber modes, each with AR(1) amplitudes (phi 0.8).
    k_lon, k_lat = rng.integers(1, 6, _MODES), rng.integers(1, 4, _MODES)
    phase = rng.uniform(0.0, 2.0 * np.pi, (2, _MODES))
    basis = np.cos(k_lon[:, None, None] * lon + phase[0][:, None, None]) * np.cos(
        k_lat[:, None, None] * lat + phase[1][:, None, None]
    )  # (K, 180, 360)
    shocks = rng.standard_normal((len(months), _MODES)) * 0.25
    amplitudes = np.zeros_like(shocks)
    for t in range(len(months)):
        amplitudes[t] = (0.8 * amplitudes[t - 1] if t else 0.0) + shocks[t]
    target = nino34_mean(months)
    calendar = (months.astype(int) % 12).astype(np.float64)  # 0 = January
    fields = np.empty((len(months), NJ, NI), dtype=np.float32)
    for t in range(len(months)):
        seasonal = 3.0 * np.sin(lat) * np.cos(2.0 * np.pi * (calendar[t] - 7.5) / 12.0)
        field = climate + seasonal + np.tensordot(amplitudes[t], basis, axes=1)
        if np.isfinite(target[t]):  # pin the box mean to the real index with the ENSO pattern
            field += (target[t] - field[box].mean()) * pattern / pattern[box].mean()
        fields[t] = np.maximum(field, -1.8)
    fields[:, land_mask()] = np.nan
    return fields


def write_grib(
    path: Path,
    values: np.ndarray,
    month: np.datetime64,
    *,
    north_to_south: bool = True,
    add: float = 0.0,
    bits: int = 16,
    indicator_of_parameter: int = 34,
    first_lat: float = 89.5,
    first_lon: float = 0.5,
    increment: float = 1.0,
    mark: bool = True,
    bitmap: bool = True,
) -> Path:
    """Write one COBE-format GRIB1 message; `values` are (nj, ni), lat ascending, NaN = missing.

    The keyword arguments exist to write the unusual files of the tests: `add=273.15` for
    Kelvin, `north_to_south=False` for the other scanning mode, another parameter or grid,
    `mark=False` for a file without SAMPLE_MARK that stands in for a real COBE-SST file,
    `bitmap=False` for a field without missing points coded without a bitmap section.
    """
    import eccodes

    nj, ni = values.shape
    rows = values[::-1] if north_to_south else values
    handle = eccodes.codes_grib_new_from_samples("regular_ll_sfc_grib1")
    try:
        for key, value in {
            "centre": 34, "table2Version": 128, "indicatorOfParameter": indicator_of_parameter,
            "Ni": ni, "Nj": nj, "jScansPositively": 0 if north_to_south else 1,
            "dataDate": int(str(month).replace("-", "") + "01"), "dataTime": 0,
            "bitmapPresent": int(bitmap), "bitsPerValue": bits, **(SAMPLE_MARK if mark else {}),
        }.items():
            eccodes.codes_set_long(handle, key, value)
        last_lat = first_lat - (nj - 1) * increment
        for key, value in {
            "latitudeOfFirstGridPointInDegrees": first_lat if north_to_south else last_lat,
            "latitudeOfLastGridPointInDegrees": last_lat if north_to_south else first_lat,
            "longitudeOfFirstGridPointInDegrees": first_lon,
            "longitudeOfLastGridPointInDegrees": first_lon + (ni - 1) * increment,
            "iDirectionIncrementInDegrees": increment, "jDirectionIncrementInDegrees": increment,
            "missingValue": MISSING,
        }.items():
            eccodes.codes_set_double(handle, key, value)
        flat = np.where(np.isnan(rows), MISSING, rows + add).astype(np.float64).ravel()
        eccodes.codes_set_values(handle, flat)
        with path.open("wb") as f:
            eccodes.codes_write(handle, f)
    finally:
        eccodes.codes_release(handle)
    return path


def write_sample(dest: str | Path, *, start: str, end: str, seed: int = 0, bits: int = 16) -> list[Path]:
    """Write `sstYYYYMM.grb` for every month from `start` to `end` into `dest`; deterministic."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    months = months_between(start, end)
    fields = sample_fields(months, seed=seed)
    return [
        write_grib(dest / f"sst{str(month).replace('-', '')}.grb", field, month, bits=bits)
        for month, field in zip(months, fields, strict=True)
    ]

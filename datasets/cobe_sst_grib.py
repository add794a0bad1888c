"""One COBE-SST GRIB file decoded and checked into one month (`decode`), with a raw ecCodes loop.

A COBE-SST file (JMA/TCC) holds one month: GRIB1, table 128 parameter 34, regular lat-lon
1° (360 x 180), land as missing values. `decode` refuses anything else in one line naming
the file and the message, follows the file's scanning mode into one canonical latitude
order (south to north), judges the unit by the physically plausible range (°C, K, or °C
that GDAL shifted by -273.15) and summarizes the month while it converts it: the statistics
the ingest's commit stores and the rules check. `shoal.datasets.cobe_sst` writes the months.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from shoal.errors import SourceError
from shoal.lineage import SourceFile
from shoal.rules import Rules, problems
from shoal.stats import RunningStats

NI, NJ = 360, 180
LAT = np.arange(-89.5, 90.0, 1.0)  # canonical order: south to north
LON = np.arange(0.5, 360.0, 1.0)
SST_GRIB1 = {"table2Version": 128, "indicatorOfParameter": 34}  # sea-surface temperature, as COBE-SST writes it
FILE_NAME = re.compile(r"sst(\d{4})(\d{2})\.grb")
_FIX_GRID = "expected a COBE-SST field: regular lat-lon 1°, 360 x 180, lon 0.5..359.5, lat ±89.5"
# (low, high, offset to add): °C, Kelvin, and °C that GDAL shifted by -273.15 (SOURCES.md).
UNIT_RANGES = {"°C": (-5.0, 45.0, 0.0), "K": (268.0, 318.0, -273.15), "GDAL-shifted °C": (-278.15, -228.15, 273.15)}
# The mark `shoal.datasets.cobe_sst_sample` writes into section 1 of every file: sub-centre 83
# and generating process 72 ("S", "H") under the JMA centre. Ingest records the months of
# marked files as a fact ("sample_months"), so a home knows its SST is synthetic however the
# files were named, moved or fetched; the pair is not expected in a JMA file (no real
# COBE-SST file could be read here to confirm it, SOURCES.md).
SAMPLE_MARK = {"subCentre": 83, "generatingProcessIdentifier": 72}
# What every month must be once decoded to °C. Land and sea ice are NaN: 46% of the COBE grid.
RULES = Rules(ranges={"sst": UNIT_RANGES["°C"][:2]}, max_nan_fraction={"sst": 0.6}, grid=(NJ, NI),
              fix="expected a COBE-SST month of sea-surface temperature; check the file, or fetch it again")


@dataclass(frozen=True)
class SstMonth:
    """One decoded month: values (lat ascending, lon) in °C with NaN on land."""

    month: np.datetime64
    values: np.ndarray  # (NJ, NI) float32
    unit: str
    source: SourceFile
    sample: bool = False  # the file carries SAMPLE_MARK: written by the sample generator, not by JMA
    stats: RunningStats | None = None  # of `values`, summarized while decoded: the commit's statistics, no second pass


def month_of_name(path: Path) -> np.datetime64:
    """The month a file name `sstYYYYMM.grb` promises."""
    found = FILE_NAME.fullmatch(path.name)
    if not found or not 1 <= int(found.group(2)) <= 12:
        raise SourceError(path, "unexpected file name", fix="COBE-SST files are named sstYYYYMM.grb, e.g. sst189101.grb")
    return np.datetime64(f"{found.group(1)}-{found.group(2)}", "M")


def _keys(handle: int, names: Sequence[str]) -> dict[str, object]:
    """Typed getters: ecCodes' generic `codes_get` looks up each key's type first (2x slower)."""
    import eccodes

    def get(name: str) -> object:
        if name in ("shortName", "gridType"):
            return eccodes.codes_get_string(handle, name)
        if name.endswith("InDegrees") or name == "offset":
            return eccodes.codes_get_double(handle, name)
        return eccodes.codes_get_long(handle, name)

    return {name: get(name) for name in names}


def _check_grid(path: Path, handle: int) -> dict[str, object]:
    keys = _keys(
        handle,
        ["gridType", "Ni", "Nj", "iDirectionIncrementInDegrees", "jDirectionIncrementInDegrees",
         "longitudeOfFirstGridPointInDegrees", "latitudeOfFirstGridPointInDegrees",
         "latitudeOfLastGridPointInDegrees", "iScansNegatively", "jScansPositively", "jPointsAreConsecutive"],
    )
    lat_first, lat_last = keys["latitudeOfFirstGridPointInDegrees"], keys["latitudeOfLastGridPointInDegrees"]
    expected = (
        keys["gridType"] == "regular_ll" and (keys["Ni"], keys["Nj"]) == (NI, NJ)
        and keys["iDirectionIncrementInDegrees"] == keys["jDirectionIncrementInDegrees"] == 1.0
        and keys["longitudeOfFirstGridPointInDegrees"] in (0.5, 359.5)
        and sorted([lat_first, lat_last]) == [-89.5, 89.5]
    )
    if not expected:
        found = (f"{keys['gridType']} {keys['Ni']} x {keys['Nj']}, increments {keys['iDirectionIncrementInDegrees']}°"
                 f" x {keys['jDirectionIncrementInDegrees']}°, first point {lat_first}°N {keys['longitudeOfFirstGridPointInDegrees']}°E")
        raise SourceError(path, f"grid is {found}", fix=_FIX_GRID, line=1)
    return keys


def _to_celsius(path: Path, present: np.ndarray, *, missing: int) -> tuple[str, RunningStats]:
    """Convert the month's values (float32, sea points only) to °C in place, judging the unit by their range.

    `missing` points of the grid (land, sea ice) hold no value: the summary counts them as NaN, as they are stored.

    Returns:
        The unit the file was in, and the summary of the month's °C values: the commit's
        statistics and what the rules check. Its min and max are the range that tells the
        unit, so judging it costs no pass of its own; a converted month is summarized again,
        as its stored values are the float32 sums.
    """
    stats = sea_stats(present, missing=missing)
    if not stats.count:
        return "°C", stats  # nothing to convert: the rules refuse a field without sea points
    low, high = float(stats.min), float(stats.max)
    for unit, (lowest, highest, offset) in UNIT_RANGES.items():
        if lowest <= low and high <= highest:
            if offset:
                present += np.float32(offset)
                stats = sea_stats(present, missing=missing)
            return unit, stats
    raise SourceError(
        path,
        f"values range {low:.2f} .. {high:.2f} fit neither °C (-5..45), K (268..318) nor GDAL-shifted °C "
        "(-278.15..-228.15)",
        fix="expected sea-surface temperature; check the parameter and its units",
        line=1,
    )


def sea_stats(present: np.ndarray, *, missing: int) -> RunningStats:
    """The summary of a month as stored: its sea points' values, and its `missing` points (land, sea ice) as NaN."""
    return replace(RunningStats.from_values(present, axis=None), nan_count=missing)


_BITMAPS: dict[str, np.ndarray] = {}  # md5 of a bitmap section -> its points that hold a value (read-only)
_MAX_BITMAPS = 16  # COBE-SST has one land mask for every month; a file with its own bitmap costs one read


def sea_points(handle: int) -> np.ndarray:
    """The points of the grid that hold a value, from the message's bitmap section (read-only, flat, bool).

    ecCodes expands the bitmap into every value's slot (`values`) at ~0.45 ms a month, 2-3x
    the decoding of the values themselves; the bitmap is the same in every month of the series,
    so its expansion is read from ecCodes once per bitmap (keyed by the section's md5) and
    `codedValues`, the sea points alone, are read each month.
    """
    import eccodes

    digest = eccodes.codes_get_string(handle, "md5Section3")
    if (sea := _BITMAPS.get(digest)) is None:
        sea = eccodes.codes_get_array(handle, "bitmap").astype(bool)
        sea.flags.writeable = False
        if len(_BITMAPS) >= _MAX_BITMAPS:
            _BITMAPS.clear()
        _BITMAPS[digest] = sea
    return sea


def decode(path: str | Path, *, source: SourceFile | None = None) -> SstMonth:
    """Decode one COBE-SST file with a raw ecCodes loop, validating it fully.

    Args:
        path: a file named sstYYYYMM.grb.
        source: its `SourceFile`, when already hashed.

    Raises:
        SourceError: not GRIB, truncated, bytes before the message, more than one message,
            another parameter or grid, a date that disagrees with the file name, values
            that are not a plausible SST in any known unit.
    """
    import eccodes

    path = Path(path)
    named = month_of_name(path)
    try:
        with path.open("rb") as f:
            handle = eccodes.codes_grib_new_from_file(f)
            if handle is None:
                raise SourceError(path, "not a GRIB file (no message found)", fix="pass COBE-SST .grb files")
            try:
                keys = _read_message(path, handle)
                if keys["bitmapPresent"]:  # the values of the sea points alone, and where they lie
                    coded, sea = eccodes.codes_get_array(handle, "codedValues"), sea_points(handle)
                else:  # every point holds a value
                    coded, sea = eccodes.codes_get_values(handle), None
            finally:
                eccodes.codes_release(handle)
            extra = eccodes.codes_grib_new_from_file(f) if keys["totalLength"] < path.stat().st_size else None
            if extra is not None:
                eccodes.codes_release(extra)
                raise SourceError(path, "more than one GRIB message", fix="a COBE-SST file holds exactly one month", line=2)
    except eccodes.GribInternalError as error:
        with path.open("rb") as start:
            magic = start.read(4)
        if magic != b"GRIB":
            raise SourceError(path, "not a GRIB file (no message at its start)", fix="pass COBE-SST .grb files") from error
        raise SourceError(path, f"unreadable GRIB message ({error}): the file is truncated or corrupt",
                          fix="download the file again", line=1) from error
    except OSError as error:
        raise SourceError(path, f"cannot read the file ({error.strerror})", fix="check the path") from error
    dated = np.datetime64(f"{str(keys['dataDate'])[:4]}-{str(keys['dataDate'])[4:6]}", "M")
    if dated != named:
        raise SourceError(path, f"GRIB date {keys['dataDate']} is month {dated}, the file name says {named}",
                          fix="rename the file after the month it holds", line=1)
    points = NI * NJ if sea is None else int(np.count_nonzero(sea))
    if coded.size != points:
        marked = "its bitmap marks" if sea is not None else "its grid has"
        raise SourceError(path, f"{marked} {points} points with a value but {coded.size} values are stored", line=1,
                          fix="the file is corrupt: download it again")
    present = coded.astype(np.float32)  # the values as stored
    unit, stats = _to_celsius(path, present, missing=NI * NJ - points)
    if sea is None:
        flat = present
    else:
        flat = np.full(NI * NJ, np.nan, np.float32)
        flat[sea] = present
    grid = flat.reshape((NI, NJ)).T if keys["jPointsAreConsecutive"] else flat.reshape((NJ, NI))
    if not keys["jScansPositively"]:
        grid = grid[::-1]
    if keys["iScansNegatively"]:
        grid = grid[:, ::-1]
    grid = np.ascontiguousarray(grid)
    if broken := problems(RULES, stats={"sst": stats}, grid=grid.shape):  # one line: the month is refused
        raise SourceError(path, "; ".join(broken), fix=RULES.fix, line=1)
    return SstMonth(month=named, values=grid, unit=unit, source=source or SourceFile.of(path),
                    sample=all(keys[key] == value for key, value in SAMPLE_MARK.items()), stats=stats)


def _read_message(path: Path, handle: int) -> dict[str, object]:
    keys = _keys(handle, ["offset", "totalLength", "editionNumber", "dataDate", "bitmapPresent",
                          *SAMPLE_MARK])
    if keys["offset"]:
        raise SourceError(path, f"{int(keys['offset'])} bytes precede the GRIB message (a WMO bulletin header?)",
                          fix=f"strip them, e.g. tail -c +{int(keys['offset']) + 1} FILE > sstYYYYMM.grb", line=1)
    # The raw GRIB1 numbers, not paramId: ecCodes resolves paramId through its parameter
    # tables (370-550 µs a file, more than the rest of the checks together); shortName, a
    # string, is read only to word the error.
    edition = keys["editionNumber"]
    if edition != 1 or _keys(handle, ["table2Version", "indicatorOfParameter"]) != SST_GRIB1:
        name = _keys(handle, ["shortName"])["shortName"]
        if edition != 1 and name == "sst":  # the right parameter in the wrong edition: say which is wrong
            raise SourceError(path, f"GRIB edition {edition}; COBE-SST files are GRIB edition 1",
                              fix="pass the files as JMA publishes them (`shoal fetch sst`), not a conversion", line=1)
        edition_note = f"; this file is GRIB edition {edition}" if edition != 1 else ""
        raise SourceError(path, f"parameter is {name!r}, not 'sst'",
                          fix=f"expected sea-surface temperature (GRIB1 table 128 parameter 34){edition_note}", line=1)
    return keys | _check_grid(path, handle)

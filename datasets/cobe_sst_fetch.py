"""Fetch the COBE-SST monthly GRIB files `sstYYYYMM.grb` from JMA/TCC.

The URL pattern, read off JMA's list of files (1891-01 .. 2020-12, 1,560 URLs):

    {base}/{decade}/sstYYYYMM.grb
    base   = https://ds.data.jma.go.jp/tcc/tcc/products/elnino/cobesst/gpvdata
    decade = "1891-1899" for the 1890s (the data start in 1891-01), else "YYY0-YYY9"

Files land flat in one folder under their own names, and `SHA256SUMS` there lists every
file's sha256 (`sha256sum -c SHA256SUMS` checks them). A file already in the folder is
complete (see `shoal.download`) and is not fetched again; when the manifest already lists it
with another sha256, it is reported as a failure (the local copy changed) instead.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from shoal.download import DownloadConfig, DownloadReport, FetchArgumentError, ProgressFn, check_url
from shoal.manifest import MANIFEST, download_into

__all__ = ["COBE_SST_BASE_URL", "FIRST_MONTH", "MANIFEST", "FetchArgumentError", "MonthUrl", "fetch_sst",
           "month_urls", "parse_month"]

COBE_SST_BASE_URL = "https://ds.data.jma.go.jp/tcc/tcc/products/elnino/cobesst/gpvdata"
FIRST_MONTH = "1891-01"  # COBE-SST starts here; there is no earlier file
_MONTH = re.compile(r"(\d{4})-(\d{2})")


class MonthUrl(NamedTuple):
    """One month's file: the month `YYYY-MM`, its URL and its file name."""

    month: str
    url: str
    filename: str


def parse_month(text: str, *, what: str = "month") -> tuple[int, int]:
    """`"YYYY-MM"` -> (year, month).

    Raises:
        FetchArgumentError: not YYYY-MM with a month 01-12.
    """
    found = _MONTH.fullmatch(text.strip())
    if not found or not 1 <= int(found.group(2)) <= 12:
        raise FetchArgumentError(f"{what} {text!r} is not a month YYYY-MM (month 01-12); write it like {FIRST_MONTH}")
    return int(found.group(1)), int(found.group(2))


def month_urls(start: str, end: str, base_url: str = COBE_SST_BASE_URL) -> list[MonthUrl]:
    """Every month from `start` to `end` (both `YYYY-MM`, inclusive) with its URL and file name.

    Raises:
        FetchArgumentError: a month is malformed, `end` is before `start`, `start` is before
            1891-01, or `base_url` is not http(s).
    """
    first, last = parse_month(start, what="start"), parse_month(end, what="end")
    if last < first:
        raise FetchArgumentError(f"--end {end} is before --start {start}; give an end on or after the start")
    if first < parse_month(FIRST_MONTH):
        raise FetchArgumentError(f"start {start} is before COBE-SST's first month {FIRST_MONTH}; start at {FIRST_MONTH} or later")
    check_url(base_url, what="base URL", default=COBE_SST_BASE_URL)
    base = base_url.rstrip("/")
    found = []
    year, month = first
    while (year, month) <= last:
        decade = year // 10 * 10
        folder = "1891-1899" if decade == 1890 else f"{decade}-{decade + 9}"
        filename = f"sst{year:04d}{month:02d}.grb"
        found.append(MonthUrl(f"{year:04d}-{month:02d}", f"{base}/{folder}/{filename}", filename))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return found


def fetch_sst(
    *,
    start: str,
    end: str,
    dest: str | Path,
    base_url: str = COBE_SST_BASE_URL,
    config: DownloadConfig = DownloadConfig(),
    progress: ProgressFn | None = None,
) -> DownloadReport:
    """Download the COBE-SST files of `start`..`end` into `dest` and update `dest/SHA256SUMS`.

    Args:
        start: first month, `YYYY-MM` (1891-01 or later).
        end: last month, `YYYY-MM`, inclusive.
        dest: the folder; created when missing.
        base_url: where the decade folders live (a mirror, or a test server).
        config: retries, timeout, backoff and concurrency of the downloads.
        progress: called once per month with its URL and outcome.

    Returns:
        The report: months downloaded, skipped (already there) and failed (one line each).
        The manifest lists every downloaded and skipped file, and keeps other entries.

    Raises:
        FetchArgumentError: bad months or URL, or `dest` cannot be created.
        DownloadError: `dest/SHA256SUMS` cannot be read or written.
    """
    months = month_urls(start, end, base_url)
    return download_into([(m.url, m.filename) for m in months], dest, config=config, progress=progress)

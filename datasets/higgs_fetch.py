"""Fetch the UCI HIGGS table (Baldi, Sadowski & Whiteson 2014, UCI id 280, CC BY 4.0).

One file lands in `dest` under the last part of its URL: by default UCI's `higgs.zip`, which
wraps the one member `HIGGS.csv.gz` (about 2.6 GB: 11,000,000 rows x 29 columns, the class
first; the last 500,000 rows are the customary test set). A mirror of `HIGGS.csv.gz` itself
can be given as the URL. `dest/SHA256SUMS` lists the file's sha256 (`sha256sum -c SHA256SUMS`
checks it). As for `shoal fetch speech`, the download resumes from `NAME.part` after a failed
or killed run, a complete file already in `dest` is not fetched again, and a local copy whose
sha256 no longer matches the manifest is reported as a failure.
"""

from __future__ import annotations

from pathlib import Path

from shoal.download import DownloadConfig, DownloadReport, ProgressFn, file_items
from shoal.manifest import download_into

HIGGS_URL = "https://archive.ics.uci.edu/static/public/280/higgs.zip"


def fetch_higgs(
    *,
    dest: str | Path,
    url: str = HIGGS_URL,
    config: DownloadConfig = DownloadConfig(),
    progress: ProgressFn | None = None,
) -> DownloadReport:
    """Download the HIGGS file into `dest` and update `dest/SHA256SUMS`.

    Args:
        dest: the folder; created when missing.
        url: UCI's higgs.zip, or a mirror of it or of HIGGS.csv.gz (or a test server); saved
            under its URL's file name.
        config: retries, timeout and backoff of the download.
        progress: called once, with the URL and its outcome.

    Returns:
        The report: the file downloaded, skipped (already there) or failed (one line).

    Raises:
        FetchArgumentError: a bad URL, or `dest` cannot be created.
        DownloadError: `dest/SHA256SUMS` cannot be read or written.
    """
    return download_into(file_items(url, default=HIGGS_URL), dest, config=config, progress=progress, resume=True)

"""Fetch the Google Speech Commands v0.01 archive (Warden 2017, CC BY 4.0).

One file, `speech_commands_v0.01.tar.gz` (about 1.4 GB, 64,727 clips in 30 word folders,
`_background_noise_/`, `validation_list.txt`, `testing_list.txt`), lands in `dest` under its
own name, and `dest/SHA256SUMS` lists its sha256 (`sha256sum -c SHA256SUMS` checks it). The
download resumes: a run that fails or is killed leaves `speech_commands_v0.01.tar.gz.part`,
and the next run asks only for the missing bytes. A complete archive already in `dest` is not
fetched again; when the manifest lists it with another sha256, that is reported as a failure
(the local copy changed). `shoal ingest speech DEST/speech_commands_v0.01.tar.gz` reads the
archive as a stream, without unpacking it.
"""

from __future__ import annotations

from pathlib import Path

from shoal.download import DownloadConfig, DownloadReport, ProgressFn, file_items
from shoal.manifest import download_into

SPEECH_COMMANDS_URL = "http://download.tensorflow.org/data/speech_commands_v0.01.tar.gz"


def fetch_speech(
    *,
    dest: str | Path,
    url: str = SPEECH_COMMANDS_URL,
    config: DownloadConfig = DownloadConfig(),
    progress: ProgressFn | None = None,
) -> DownloadReport:
    """Download the Speech Commands archive into `dest` and update `dest/SHA256SUMS`.

    Args:
        dest: the folder; created when missing.
        url: the archive (a mirror, or a test server); it is saved under its URL's file name.
        config: retries, timeout and backoff of the download.
        progress: called once, with the URL and its outcome.

    Returns:
        The report: the archive downloaded, skipped (already there) or failed (one line).

    Raises:
        FetchArgumentError: a bad URL, or `dest` cannot be created.
        DownloadError: `dest/SHA256SUMS` cannot be read or written.
    """
    return download_into(file_items(url, default=SPEECH_COMMANDS_URL), dest, config=config, progress=progress, resume=True)

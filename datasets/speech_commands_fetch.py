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
from urllib.parse import urlsplit

from shoal.download import DownloadConfig, DownloadReport, FetchArgumentError, ProgressFn, check_url
from shoal.manifest import download_into

SPEECH_COMMANDS_URL = "http://download.tensorflow.org/data/speech_commands_v0.01.tar.gz"


def speech_items(url: str = SPEECH_COMMANDS_URL) -> list[tuple[str, str]]:
    """The `(url, file name)` to download: the archive, under the last part of its URL.

    Raises:
        FetchArgumentError: `url` is not http(s), or names no file.
    """
    check_url(url, what="URL", default=SPEECH_COMMANDS_URL)
    name = urlsplit(url).path.rsplit("/", 1)[-1]
    if not name:
        raise FetchArgumentError(f"URL {url!r} names a folder, not a file; give the archive's URL, "
                                 f"default is {SPEECH_COMMANDS_URL}")
    return [(url, name)]


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
    return download_into(speech_items(url), dest, config=config, progress=progress, resume=True)

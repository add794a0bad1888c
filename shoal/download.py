"""Download files over HTTP(S): retries, timeouts, resume, atomic renames, sha256.

Generic: it knows URLs and destination paths, nothing of what the files hold. One attempt at
one file (the GET, the `.part`, the lock) is `shoal.transfer`'s; this module retries and reports.

- **Atomic.** Each file is streamed through `shoal.files.atomic_write` (a hidden temporary
  file in its destination folder, fsynced), checked against the server's Content-Length, and
  only then renamed (`os.replace`) to its final name. A partial file is never visible under
  the final name; a failed download deletes its temporary file.
- **Skip.** Because of that, a file that exists under its final name is complete: it is
  skipped without asking the server (no HEAD, no GET), and hashed locally for the report. A
  temporary file of `atomic_write` left by a killed run is never trusted (nor reused).
- **Resume** (`resume=True`, for big files such as a 1.4 GB archive): the bytes go to
  `NAME.part` beside the final name instead, which a failed attempt, a failed run or a kill
  leaves behind; the next attempt (or run) asks for the rest with a `Range` request and
  appends it, or starts over when the server answers 200. The file is locked while written
  (POSIX `flock`), so two processes never append to one `.part`; once complete it is
  fsynced and renamed. Without `resume` every download starts from byte 0 (small files).
- **Retries** (tenacity): connection errors, timeouts, a connection dropped mid-body or a
  body shorter than its Content-Length, HTTP 408, 429 and 5xx are retried with exponential
  backoff plus jitter (honouring a numeric `Retry-After`). Anything else, 404 included, fails
  at once: retrying cannot make a missing file appear.
- **Failures** are per file: one line each (URL, status or error, attempts, fix) in the
  report; the other files still download.

A `shoal fetch` command calls `shoal.manifest.download_into`, which downloads into one folder
and keeps that folder's `sha256sum`-format manifest up to date; `fetch_file` does so for a
source that is one big file (resumed, optionally checked against a known sha256).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from shoal.errors import ShoalError, exit_code
from shoal.files import sha256_file
from shoal.lineage import SourceFile
from shoal.transfer import BadStatus, Busy, Restart, Truncated, get_resumed, get_whole

if TYPE_CHECKING:
    import httpx
    import tenacity

log = logging.getLogger(__name__)

_RETRIED_STATUS = frozenset({408, 429})  # plus every 5xx
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")

Outcome = Literal["downloaded", "skipped", "failed"]
ProgressFn = Callable[[str, Outcome], None]


class DownloadError(ShoalError):
    """A download cannot be set up, or its manifest cannot be read or written."""


class FetchArgumentError(ShoalError):
    """A fetch was asked for something that cannot exist (bad month, bad range, bad URL, bad folder)."""


def check_url(url: str, *, what: str, default: str | None = None) -> str:
    """`url` when it is http:// or https://.

    Raises:
        FetchArgumentError: another scheme, or no URL; the message names `what` (and
            `default`, when there is one).
    """
    if not url.startswith(("http://", "https://")):
        raise FetchArgumentError(f"{what} {url!r} is not http:// or https://; "
                                 + (f"default is {default}" if default else "give an http:// or https:// URL"))
    return url


def file_items(url: str, *, default: str | None = None) -> list[tuple[str, str]]:
    """The one `(url, file name)` of a single-file download: the file under its URL's last part.

    Raises:
        FetchArgumentError: `url` is not http(s), or names a folder; the message gives
            `default` when there is one.
    """
    from urllib.parse import urlsplit

    check_url(url, what="URL", default=default)
    name = urlsplit(url).path.rsplit("/", 1)[-1]
    if not name:
        raise FetchArgumentError(f"URL {url!r} names a folder, not a file; give the file's URL"
                                 + (f", default is {default}" if default else ""))
    return [(url, name)]


@dataclass(frozen=True)
class DownloadConfig:
    """How hard to try.

    Attributes:
        retries: retries after the first attempt of a file (0: try once).
        timeout: seconds allowed to connect, and between two reads or writes (not a
            limit on the whole transfer).
        backoff: seconds before the first retry; doubles on each retry (+ up to
            `backoff` of random jitter), at most `max_backoff`.
        max_backoff: the longest wait between two attempts, `Retry-After` included.
        workers: files downloaded at once.
    """

    retries: int = 4
    timeout: float = 60.0
    backoff: float = 1.0
    max_backoff: float = 60.0
    workers: int = 4

    def __post_init__(self) -> None:
        checks = [
            (self.retries >= 0, "retries", self.retries, "use 0 or more"),
            (self.timeout > 0, "timeout", self.timeout, "use a positive number of seconds"),
            (self.backoff >= 0, "backoff", self.backoff, "use 0 or more seconds"),
            (self.max_backoff >= 0, "max_backoff", self.max_backoff, "use 0 or more seconds"),
            (self.workers >= 1, "workers", self.workers, "use 1 or more"),
        ]
        for ok, name, value, fix in checks:
            if not ok:
                raise DownloadError(f"DownloadConfig.{name} = {value!r} is out of range; {fix}")


@dataclass(frozen=True)
class DownloadedFile:
    """A complete file on disk: where it came from, where it is, its sha256 and size."""

    url: str
    path: str
    sha256: str
    bytes: int

    def source_file(self) -> SourceFile:
        """The lineage record of this file (absolute path, sha256, bytes)."""
        return SourceFile(path=str(Path(self.path).resolve()), sha256=self.sha256, bytes=self.bytes)


@dataclass(frozen=True)
class DownloadFailure:
    """A file that could not be downloaded; `str()` is its one-line report.

    Attributes:
        url: the URL.
        path: the destination it was meant for (nothing is left there).
        problem: what went wrong, e.g. `HTTP 404 Not Found`.
        fix: what to do about it.
        status: the HTTP status, when the server answered with one.
        attempts: how many attempts were made (0: not a download problem, e.g. a changed
            local copy).
    """

    url: str
    path: str
    problem: str
    fix: str
    status: int | None = None
    attempts: int = 1

    def __str__(self) -> str:
        tries = {0: "", 1: " (1 attempt)"}.get(self.attempts, f" ({self.attempts} attempts)")
        return f"{self.url}: {self.problem}{tries}; {self.fix}"


@dataclass(frozen=True)
class DownloadReport:
    """What one `download` call did, in the order the items were given.

    Attributes:
        downloaded: files fetched by this call.
        skipped: files already complete under their final name (not fetched, hashed locally).
        failures: one per file that failed after its retries.
    """

    downloaded: tuple[DownloadedFile, ...] = ()
    skipped: tuple[DownloadedFile, ...] = ()
    failures: tuple[DownloadFailure, ...] = ()

    @property
    def exit_code(self) -> int:
        """0: all good; 1: some files failed, the rest are there; 2: nothing is there."""
        return exit_code(failed=bool(self.failures), done=bool(self.downloaded or self.skipped))


def download(
    items: Sequence[tuple[str, str | Path]],
    *,
    config: DownloadConfig = DownloadConfig(),
    progress: ProgressFn | None = None,
    resume: bool = False,
) -> DownloadReport:
    """Download each `(url, dest)` that is not already complete at `dest`.

    Args:
        items: URL and destination file pairs; destinations must be distinct.
        config: retries, timeout, backoff and concurrency.
        progress: called once per item, from a worker thread, with the URL and its outcome.
        resume: keep partial bytes in `dest.part` and continue them with Range requests
            (see the module docstring); for big files.

    Returns:
        The report; a file that still fails after its retries is a failure in it, not an
        exception.

    Raises:
        DownloadError: two items share a destination.
    """
    import httpx

    pairs = [(url, Path(dest)) for url, dest in items]
    seen: dict[Path, str] = {}
    for url, dest in pairs:
        key = Path(os.path.abspath(dest))
        if key in seen:
            raise DownloadError(f"{dest}: destination given twice ({seen[key]} and {url}); give each URL its own file")
        seen[key] = url

    timeout = httpx.Timeout(config.timeout)
    limits = httpx.Limits(max_connections=config.workers, max_keepalive_connections=config.workers)
    # Accept-Encoding identity: the bytes written are the bytes the server counts in Content-Length.
    with httpx.Client(timeout=timeout, limits=limits, follow_redirects=True,
                      headers={"Accept-Encoding": "identity"}) as client:

        def one(pair: tuple[str, Path]) -> tuple[Outcome, DownloadedFile | DownloadFailure]:
            outcome, result = _download_one(client, pair[0], pair[1], config, resume=resume)
            if progress is not None:
                progress(pair[0], outcome)
            return outcome, result

        if config.workers == 1 or len(pairs) <= 1:
            results = [one(pair) for pair in pairs]
        else:
            pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="shoal-download")
            try:
                results = list(pool.map(one, pairs))
            finally:  # on Ctrl-C, drop the queued files instead of downloading them all first
                pool.shutdown(wait=True, cancel_futures=True)

    done: dict[Outcome, list] = {"downloaded": [], "skipped": [], "failed": []}
    for outcome, result in results:
        done[outcome].append(result)
    return DownloadReport(downloaded=tuple(done["downloaded"]), skipped=tuple(done["skipped"]),
                          failures=tuple(done["failed"]))


def fetch_file(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    config: DownloadConfig = DownloadConfig(),
    progress: ProgressFn | None = None,
) -> DownloadReport:
    """Download the one file at `url` into the folder `dest` and update `dest/SHA256SUMS`.

    For a source that is one big file (`shoal fetch higgs`, `shoal fetch speech`). The file
    lands under its URL's last part. The download resumes from `NAME.part` after a failed or
    killed attempt or run; a complete file already in `dest` is not fetched again; a local copy
    whose sha256 no longer matches the manifest is a failure (see `shoal.manifest.download_into`).

    Args:
        url: the file's http(s) URL (a mirror, or a test server).
        dest: the folder; created when missing.
        sha256: the file's known sha256, when there is one. A file downloaded or found with
            another sha256 is a failure in the report; it stays in `dest` (and in the manifest,
            which lists what is on disk), so that a wrong `sha256` costs no second download.
        config: retries, timeout and backoff of the download.
        progress: called once, with the URL and its outcome.

    Returns:
        The report: the file downloaded, skipped (already there) or failed (one line).

    Raises:
        FetchArgumentError: a bad URL or `sha256`, or `dest` cannot be created.
        DownloadError: `dest/SHA256SUMS` cannot be read or written.
    """
    from shoal.manifest import download_into  # shoal.manifest builds on this module

    items = file_items(url)
    if sha256 is not None and not _SHA256.fullmatch(sha256):
        raise FetchArgumentError(f"sha256 {sha256!r} is not 64 hex digits; give the file's sha256 as sha256sum prints it")
    report = download_into(items, dest, config=config, progress=progress, resume=True)
    if sha256 is None:
        return report
    expected = sha256.lower()
    wrong = [f for f in (*report.downloaded, *report.skipped) if f.sha256 != expected]
    if not wrong:
        return report
    failures = tuple(
        DownloadFailure(url=f.url, path=f.path, attempts=0, problem=f"{f.path} has sha256 {f.sha256}, expected {expected}",
                        fix="check the URL and the expected sha256; if both are right, delete the file and fetch again")
        for f in wrong
    )
    return replace(report, downloaded=tuple(f for f in report.downloaded if f not in wrong),
                   skipped=tuple(f for f in report.skipped if f not in wrong), failures=report.failures + failures)


def _download_one(client: httpx.Client, url: str, dest: Path, config: DownloadConfig,
                  *, resume: bool) -> tuple[Outcome, DownloadedFile | DownloadFailure]:
    """One item: skipped, downloaded, or failed after its retries."""
    import httpx
    import tenacity

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(config.retries + 1),
        wait=_wait(config),
        retry=tenacity.retry_if_exception(_is_transient),
        before_sleep=_log_retry,
        reraise=True,
    )
    try:
        if dest.is_file():  # only a complete download is ever renamed to its final name
            sha256, size = sha256_file(dest)
            return "skipped", DownloadedFile(url=url, path=str(dest), sha256=sha256, bytes=size)
        sha256, size = retrying(get_resumed if resume else get_whole, client, url, dest)
        return "downloaded", DownloadedFile(url=url, path=str(dest), sha256=sha256, bytes=size)
    except (httpx.HTTPError, httpx.InvalidURL, BadStatus, Truncated, Restart, Busy, OSError) as error:
        attempts = retrying.statistics.get("attempt_number", 1)
        return "failed", _failure(url, dest, error, attempts, config)


def _is_transient(error: BaseException) -> bool:
    import httpx

    if isinstance(error, BadStatus):
        return error.status in _RETRIED_STATUS or 500 <= error.status <= 599
    return isinstance(error, (Truncated, Restart, httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError))


def _wait(config: DownloadConfig) -> Callable[[tenacity.RetryCallState], float]:
    """Exponential backoff with jitter, or the server's Retry-After when it asks for longer."""
    import tenacity

    exponential = (tenacity.wait_exponential(multiplier=config.backoff, max=config.max_backoff)
                   + tenacity.wait_random(0, config.backoff))

    def wait(state: tenacity.RetryCallState) -> float:
        seconds = exponential(state)
        error = state.outcome.exception() if state.outcome is not None else None
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            seconds = max(seconds, retry_after)
        return min(seconds, config.max_backoff)

    return wait


def _log_retry(state: tenacity.RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    wait = state.next_action.sleep if state.next_action is not None else 0.0
    log.info("%s: %s; retry %d in %.2f s", state.args[1], _describe(error), state.attempt_number, wait)


def _describe(error: BaseException | None) -> str:
    """The error on one line, with its type unless it is one of ours."""
    text = " ".join(str(error).split())  # one line, whatever the library put in it
    if isinstance(error, (BadStatus, Truncated, Restart, Busy)):
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _failure(url: str, dest: Path, error: BaseException, attempts: int, config: DownloadConfig) -> DownloadFailure:
    import httpx

    status = error.status if isinstance(error, BadStatus) else None
    if status in (404, 410):
        fix = "the server has no file at this URL: check the URL and that the file is published"
    elif status in (401, 403):
        fix = "the server refused access: check the URL"
    elif status is not None and _is_transient(error):
        fix = "the server kept failing: rerun later (complete files are skipped)"
    elif status is not None:
        fix = "the server refused the request: check the URL"
    elif isinstance(error, Truncated) or isinstance(error, httpx.RemoteProtocolError):
        fix = "the connection kept dropping mid-file: rerun later (complete files are skipped)"
    elif isinstance(error, Restart):
        fix = "rerun: the download starts over"
    elif isinstance(error, Busy):
        fix = "another fetch is writing this file: wait for it to finish, then rerun"
    elif isinstance(error, httpx.TimeoutException):
        fix = f"no answer within the {config.timeout:g} s timeout: raise the timeout or rerun later"
    elif isinstance(error, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        fix = "use an http:// or https:// URL"
    elif isinstance(error, httpx.HTTPError):
        fix = "check the network connection and the URL, then rerun"
    else:  # OSError: the local side
        fix = f"check that {dest.parent} is writable and has free space"
    return DownloadFailure(url=url, path=str(dest), problem=_describe(error), fix=fix, status=status, attempts=attempts)

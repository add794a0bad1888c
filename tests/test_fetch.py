"""`shoal fetch sst|speech|higgs` and shoal.download against a real HTTP server on 127.0.0.1.

The server serves seeded random bytes (the downloader does not care that they are not GRIB
or a tar.gz) under the JMA folder layout and at the Speech Commands archive's path, answers
`Range: bytes=N-` with 206 (unless told to ignore it), and follows a per-path script of
behaviours: a status code, a truncated body (Content-Length larger than what is sent, then
the connection closes), a reply slower than the client's timeout.
"""

from __future__ import annotations

import hashlib
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from typer.testing import CliRunner

from shoal.cli import app
from shoal.datasets.cobe_sst_fetch import (
    COBE_SST_BASE_URL,
    FetchArgumentError,
    fetch_sst,
    month_urls,
)
from shoal.datasets.higgs import HIGGS_URL
from shoal.datasets.higgs_sample import write_sample
from shoal.datasets.speech_commands import SPEECH_COMMANDS_URL
from shoal.download import (
    DownloadConfig,
    DownloadError,
    DownloadFailure,
    DownloadReport,
    download,
    fetch_file,
)
from shoal.transfer import part_name
from tests.timeouts import scaled

JMA_LIST = Path(__file__).parent / "data" / "cobe_sst" / "cobe_sst_urls.txt"  # JMA's real list (see its README)

START, END = "1899-10", "1900-03"  # six months across the first decade-folder boundary
FAST = DownloadConfig(retries=2, timeout=5.0, backoff=0.01, max_backoff=0.05, workers=4)
FAST_CLI = ["--retries", "2", "--backoff", "0.01", "--timeout", "5"]
ARCHIVE = "speech_commands_v0.01.tar.gz"
ARCHIVE_PATH = f"/data/{ARCHIVE}"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@dataclass
class FakeJma:
    """What the server serves, how it misbehaves, and what it was asked."""

    base_url: str = ""
    root_url: str = ""  # http://127.0.0.1:PORT
    files: dict[str, bytes] = field(default_factory=dict)  # URL path -> body
    honour_range: bool = True  # False: answer a Range request with the whole file (200)
    ranges: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header) of each GET
    script: dict[str, list[str]] = field(default_factory=dict)  # path -> behaviour of each next GET
    always: dict[str, str] = field(default_factory=dict)  # path -> behaviour of every GET
    requests: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def gets(self, path: str) -> int:
        with self.lock:
            return sum(1 for method, seen in self.requests if method == "GET" and seen == path)

    def all_gets(self) -> list[str]:
        with self.lock:
            return [seen for method, seen in self.requests if method == "GET"]

    def range_headers(self, path: str) -> list[str | None]:
        with self.lock:
            return [header for seen, header in self.ranges if seen == path]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: FakeJma

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        pass  # a client that timed out leaves a broken pipe behind; expected here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so every reply needs its Content-Length
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _reply(self, status: int, body: bytes, *, send_body: bool, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _serve(self, *, body: bool) -> None:
        state = self.server.state
        with state.lock:
            state.requests.append((self.command, self.path))
            behaviour = "ok"
            if body:
                state.ranges.append((self.path, self.headers.get("Range")))
                queue = state.script.get(self.path)
                behaviour = state.always.get(self.path) or (queue.pop(0) if queue else "ok")
        data = state.files.get(self.path)
        if data is None:
            behaviour = "404"
        if behaviour.isdigit():
            headers = {"Retry-After": "0"} if behaviour == "429" else None
            self._reply(int(behaviour), b"no luck\n", send_body=body, headers=headers)
            return
        if behaviour == "slow":
            time.sleep(0.6)
        status, headers = 200, {}
        asked = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if asked and state.honour_range:
            first = int(asked.group(1))
            if first >= len(data):
                self._reply(416, b"", send_body=body, headers={"Content-Range": f"bytes */{len(data)}"})
                return
            status, headers = 206, {"Content-Range": f"bytes {first}-{len(data) - 1}/{len(data)}"}
            data = data[first:]
        if behaviour == "truncate":
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True  # the socket closes after half the body
            return
        self._reply(status, data, send_body=body, headers=headers)


def _path(url: str) -> str:
    return urlsplit(url).path


@pytest.fixture
def jma(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeJma]:
    """A JMA look-alike on 127.0.0.1 serving START..END (one file of 200 KB, the rest a few KB)."""
    for name in PROXY_VARIABLES:  # httpx honours proxy variables; this server is local
        monkeypatch.delenv(name, raising=False)
    state = FakeJma()
    server = _Server(("127.0.0.1", 0), _Handler)
    server.state = state
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.root_url = f"http://127.0.0.1:{server.server_address[1]}"
    state.base_url = f"{state.root_url}/gpvdata"
    rng = random.Random(1891)
    for index, month in enumerate(month_urls(START, END, state.base_url)):
        state.files[_path(month.url)] = rng.randbytes(200_000 if index == 2 else rng.randint(2_000, 9_000))
    state.files[ARCHIVE_PATH] = rng.randbytes(300_000)  # a stand-in for the 1.4 GB archive
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=scaled(5))


def _months(jma: FakeJma, start: str = START, end: str = END) -> list[tuple[str, str, str]]:
    """(path on the server, file name, month) for each month."""
    return [(_path(m.url), m.filename, m.month) for m in month_urls(start, end, jma.base_url)]


def _invoke(*args: str | Path):  # noqa: ANN202
    return CliRunner().invoke(app, [str(arg) for arg in args])


def _error_lines(result) -> list[str]:  # noqa: ANN001
    lines = result.stderr.splitlines()
    assert all(line.startswith("error: ") for line in lines), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines


def _leftovers(folder: Path) -> list[Path]:
    """Temporary files of `shoal.files.atomic_write` (hidden, `.tmp`), or `.part` files."""
    return [p for p in folder.iterdir() if p.name.endswith((".tmp", ".part"))]


# --- the URL pattern -------------------------------------------------------------------


def test_month_urls_follow_the_jma_pattern() -> None:
    months = month_urls("1891-01", "2020-12")
    assert len(months) == 130 * 12
    assert months[0] == ("1891-01", f"{COBE_SST_BASE_URL}/1891-1899/sst189101.grb", "sst189101.grb")
    assert months[-1].url == "https://ds.data.jma.go.jp/tcc/tcc/products/elnino/cobesst/gpvdata/2020-2029/sst202012.grb"
    assert month_urls("1899-12", "1900-01", "http://mirror/x/") == [
        ("1899-12", "http://mirror/x/1891-1899/sst189912.grb", "sst189912.grb"),
        ("1900-01", "http://mirror/x/1900-1909/sst190001.grb", "sst190001.grb"),
    ]
    assert [m.url for m in months] == JMA_LIST.read_text().split()  # JMA's real list of files


@pytest.mark.parametrize(("start", "end", "expected"), [
    ("1891-13", "2020-08", "start '1891-13' is not a month YYYY-MM"),
    ("1891-1", "2020-08", "start '1891-1' is not a month YYYY-MM"),
    ("91-01", "2020-08", "start '91-01' is not a month"),
    ("1891-01", "August", "end 'August' is not a month"),
    ("2020-08", "1891-01", "--end 1891-01 is before --start 2020-08"),
    ("1890-12", "1891-03", "before COBE-SST's first month 1891-01"),
])
def test_bad_months_exit_2_with_one_line(start: str, end: str, expected: str, tmp_path: Path) -> None:
    with pytest.raises(FetchArgumentError, match=expected.replace("(", r"\(")):
        month_urls(start, end)
    result = _invoke("fetch", "sst", "--start", start, "--end", end, "--dest", tmp_path / "sst")
    assert result.exit_code == 2
    (line,) = _error_lines(result)
    assert expected in line
    assert not (tmp_path / "sst").exists()


def test_bad_base_url_and_options_exit_2(tmp_path: Path) -> None:
    for extra in (["--base-url", "ftp://mirror/gpvdata"], ["--retries", "-1"], ["--workers", "0"]):
        result = _invoke("fetch", "sst", "--start", START, "--end", END, "--dest", tmp_path, *extra)
        assert result.exit_code == 2, extra
        assert len(_error_lines(result)) == 1


# --- downloading ---------------------------------------------------------------------


def test_every_month_downloaded_with_sha256_and_manifest(jma: FakeJma, tmp_path: Path) -> None:
    dest = tmp_path / "sst"
    seen: list[tuple[str, str]] = []
    report = fetch_sst(start=START, end=END, dest=dest, base_url=jma.base_url, config=FAST,
                       progress=lambda url, outcome: seen.append((url, outcome)))
    assert report.exit_code == 0 and not report.failures and not report.skipped
    months = _months(jma)
    assert [Path(f.path).name for f in report.downloaded] == [name for _, name, _ in months]
    expected = {}
    for (path, name, _), file in zip(months, report.downloaded, strict=True):
        body = jma.files[path]
        assert (dest / name).read_bytes() == body
        assert file.sha256 == hashlib.sha256(body).hexdigest() and file.bytes == len(body)
        assert file.url == jma.base_url + path.removeprefix("/gpvdata")
        assert file.source_file().path == str((dest / name).resolve())
        expected[name] = file.sha256
        assert jma.gets(path) == 1
    assert sorted(seen) == sorted((f.url, "downloaded") for f in report.downloaded)
    assert (dest / "SHA256SUMS").read_text() == "".join(f"{expected[n]}  {n}\n" for n in sorted(expected))
    assert sorted(p.name for p in dest.iterdir()) == sorted([*expected, "SHA256SUMS"])  # no temporary file left
    if shutil.which("sha256sum"):
        subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=dest, check=True)


@pytest.mark.parametrize("status", ["500", "503", "429"])
def test_transient_status_is_retried(jma: FakeJma, tmp_path: Path, status: str) -> None:
    path, name, _ = _months(jma)[1]
    jma.script[path] = [status]
    report = fetch_sst(start=START, end=END, dest=tmp_path, base_url=jma.base_url, config=FAST)
    assert report.exit_code == 0
    assert jma.gets(path) == 2
    assert (tmp_path / name).read_bytes() == jma.files[path]


def test_truncated_response_is_retried(jma: FakeJma, tmp_path: Path) -> None:
    path, name, _ = _months(jma)[2]  # the 200 KB file: several blocks arrive before the cut
    jma.script[path] = ["truncate", "truncate"]
    report = fetch_sst(start=START, end=END, dest=tmp_path, base_url=jma.base_url, config=FAST)
    assert report.exit_code == 0
    assert jma.gets(path) == 3
    assert (tmp_path / name).read_bytes() == jma.files[path]
    assert not _leftovers(tmp_path)


def test_timeout_is_retried(jma: FakeJma, tmp_path: Path) -> None:
    path, name, _ = _months(jma)[0]
    jma.script[path] = ["slow"]
    config = DownloadConfig(retries=1, timeout=0.2, backoff=0.01, workers=2)
    report = fetch_sst(start=START, end=START, dest=tmp_path, base_url=jma.base_url, config=config)
    assert report.exit_code == 0 and jma.gets(path) == 2
    assert (tmp_path / name).read_bytes() == jma.files[path]


def test_always_truncated_month_fails_cleanly_and_the_others_land(jma: FakeJma, tmp_path: Path) -> None:
    dest = tmp_path / "sst"
    months = _months(jma)
    path, name, _ = months[2]
    jma.always[path] = "truncate"
    result = _invoke("fetch", "sst", "--start", START, "--end", END, "--dest", dest, "--base-url", jma.base_url, *FAST_CLI)
    assert result.exit_code == 1
    (line,) = _error_lines(result)
    assert f"{jma.base_url}/1891-1899/{name}" in line
    assert "truncated response" in line or "RemoteProtocolError" in line
    assert "(3 attempts)" in line and "rerun later" in line
    assert jma.gets(path) == 3
    assert not (dest / name).exists()
    assert not _leftovers(dest)  # a failed month leaves nothing behind
    for other_path, other_name, _ in months[:2] + months[3:]:
        assert (dest / other_name).read_bytes() == jma.files[other_path]
    assert name not in (dest / "SHA256SUMS").read_text()
    assert "5 downloaded, 0 already complete, 1 failed" in result.stdout


def test_404_fails_at_once(jma: FakeJma, tmp_path: Path) -> None:
    path, name, month = _months(jma)[3]
    del jma.files[path]
    report = fetch_sst(start=START, end=END, dest=tmp_path, base_url=jma.base_url, config=FAST)
    assert report.exit_code == 1 and len(report.downloaded) == 5
    (failure,) = report.failures
    assert failure.status == 404 and failure.attempts == 1
    assert str(failure).startswith(f"{jma.base_url}/1900-1909/{name}: HTTP 404 Not Found (1 attempt); ")
    assert jma.gets(path) == 1
    assert not (tmp_path / name).exists() and not _leftovers(tmp_path)

    result = _invoke("fetch", "sst", "--start", month, "--end", month, "--dest", tmp_path / "alone",
                     "--base-url", jma.base_url, *FAST_CLI)
    assert result.exit_code == 2  # nothing succeeded
    assert "HTTP 404" in _error_lines(result)[0]


def test_unreachable_server_fails_every_month_after_retries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = DownloadConfig(retries=1, timeout=2.0, backoff=0.0, workers=2)
    report = fetch_sst(start="1891-01", end="1891-02", dest=tmp_path, base_url=f"http://127.0.0.1:{port}/g", config=config)
    assert report.exit_code == 2 and len(report.failures) == 2
    assert all("ConnectError" in f.problem and f.attempts == 2 for f in report.failures)
    assert all("check the network" in str(f) for f in report.failures)


# --- resume ---------------------------------------------------------------------------


def test_rerun_skips_complete_files(jma: FakeJma, tmp_path: Path) -> None:
    first = fetch_sst(start=START, end=END, dest=tmp_path, base_url=jma.base_url, config=FAST)
    manifest = (tmp_path / "SHA256SUMS").read_text()
    jma.requests.clear()
    again = fetch_sst(start=START, end=END, dest=tmp_path, base_url=jma.base_url, config=FAST)
    assert jma.requests == []  # neither GET nor HEAD
    assert again.downloaded == () and again.skipped == first.downloaded and again.exit_code == 0
    assert (tmp_path / "SHA256SUMS").read_text() == manifest

    path, name, _ = _months(jma)[4]
    (tmp_path / name).unlink()
    result = _invoke("fetch", "sst", "--start", START, "--end", END, "--dest", tmp_path, "--base-url", jma.base_url, *FAST_CLI)
    assert result.exit_code == 0, result.output
    assert jma.all_gets() == [path]
    assert "1 downloaded, 5 already complete, 0 failed" in result.stdout
    assert (tmp_path / "SHA256SUMS").read_text() == manifest


def test_a_killed_runs_temporary_file_is_never_taken_for_complete(jma: FakeJma, tmp_path: Path) -> None:
    months = _months(jma)
    (full_path, full_name, _), (half_path, half_name, _) = months[0], months[2]
    full, half = tmp_path / f".{full_name}.1-1.tmp", tmp_path / f".{half_name}.1-1.tmp"  # pid 1: not us
    full.write_bytes(jma.files[full_path])  # even a full-length one
    half.write_bytes(jma.files[half_path][:1000])
    report = fetch_sst(start=START, end=END, dest=tmp_path, base_url=jma.base_url, config=FAST)
    assert report.exit_code == 0 and len(report.downloaded) == 6
    assert jma.gets(full_path) == 1 and jma.gets(half_path) == 1
    assert (tmp_path / half_name).read_bytes() == jma.files[half_path]
    assert sorted(_leftovers(tmp_path)) == sorted([full, half])  # another process's files: not ours to delete


def test_a_changed_local_copy_is_reported_not_hidden(jma: FakeJma, tmp_path: Path) -> None:
    fetch_sst(start=START, end=END, dest=tmp_path, base_url=jma.base_url, config=FAST)
    manifest = (tmp_path / "SHA256SUMS").read_text()
    _, name, _ = _months(jma)[1]
    (tmp_path / name).write_bytes(b"edited")
    report = fetch_sst(start=START, end=END, dest=tmp_path, base_url=jma.base_url, config=FAST)
    assert report.exit_code == 1 and len(report.skipped) == 5
    (failure,) = report.failures
    assert "SHA256SUMS says" in str(failure) and "delete it and fetch again" in str(failure)
    assert (tmp_path / "SHA256SUMS").read_text() == manifest  # the recorded sha256 stays


def test_manifest_keeps_other_entries_and_a_broken_one_stops_early(jma: FakeJma, tmp_path: Path) -> None:
    other = f"{'ab' * 32}  notes.txt\n"
    (tmp_path / "SHA256SUMS").write_text(other)
    fetch_sst(start=START, end=START, dest=tmp_path, base_url=jma.base_url, config=FAST)
    lines = (tmp_path / "SHA256SUMS").read_text().splitlines(keepends=True)
    assert lines[0] == other and lines[1].endswith("  sst189910.grb\n")

    (tmp_path / "SHA256SUMS").write_text("not a manifest\n")
    jma.requests.clear()
    with pytest.raises(DownloadError, match=r"SHA256SUMS:1: expected '<sha256>  <name>'"):
        fetch_sst(start=START, end=END, dest=tmp_path, base_url=jma.base_url, config=FAST)
    assert jma.requests == []


# --- the generic API -----------------------------------------------------------------


def test_download_api_edges(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="destination given twice"):
        download([("http://127.0.0.1:9/a", tmp_path / "a"), ("http://127.0.0.1:9/b", tmp_path / "a")], config=FAST)
    with pytest.raises(DownloadError, match="DownloadConfig.timeout = 0"):
        DownloadConfig(timeout=0)
    assert download([], config=FAST) == DownloadReport()
    failure = DownloadFailure(url="u", path="p", problem="x", fix="y")
    assert [DownloadReport().exit_code, DownloadReport(failures=(failure,)).exit_code] == [0, 2]


def test_cli_all_ok_and_import_stays_light(jma: FakeJma, tmp_path: Path) -> None:
    result = _invoke("fetch", "sst", "--start", START, "--end", END, "--dest", tmp_path, "--base-url", jma.base_url, *FAST_CLI)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert "6 downloaded, 0 already complete, 0 failed" in result.stdout
    check = "import shoal.cli, sys; assert not {'httpx', 'tenacity'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", check], check=True, timeout=scaled(60))


# --- shoal fetch speech: one big archive, resumed -----------------------------------------


def _speech(jma: FakeJma, tmp_path: Path, **kwargs) -> DownloadReport:  # noqa: ANN003
    return fetch_file(jma.root_url + ARCHIVE_PATH, tmp_path, config=FAST, **kwargs)


def test_speech_archive_downloaded_with_manifest_then_skipped(jma: FakeJma, tmp_path: Path) -> None:
    body = jma.files[ARCHIVE_PATH]
    result = _invoke("fetch", "speech", "--dest", tmp_path, "--url", jma.root_url + ARCHIVE_PATH, *FAST_CLI)
    assert result.exit_code == 0, result.output
    assert "1 downloaded, 0 already complete, 0 failed" in result.stdout
    assert (tmp_path / ARCHIVE).read_bytes() == body
    assert (tmp_path / "SHA256SUMS").read_text() == f"{hashlib.sha256(body).hexdigest()}  {ARCHIVE}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SHA256SUMS", ARCHIVE]  # no .part left
    assert jma.range_headers(ARCHIVE_PATH) == [None]

    jma.requests.clear()
    again = _speech(jma, tmp_path)
    assert jma.requests == [] and again.exit_code == 0 and again.downloaded == ()
    (skipped,) = again.skipped
    assert skipped.sha256 == hashlib.sha256(body).hexdigest() and skipped.bytes == len(body)

    (tmp_path / ARCHIVE).write_bytes(body[:-1] + b"x")
    changed = _speech(jma, tmp_path)
    assert changed.exit_code == 2 and "SHA256SUMS says" in str(changed.failures[0])


@pytest.mark.parametrize("status", ["503", "429"])
def test_speech_transient_status_is_retried(jma: FakeJma, tmp_path: Path, status: str) -> None:
    jma.script[ARCHIVE_PATH] = [status]
    report = _speech(jma, tmp_path)
    assert report.exit_code == 0 and jma.gets(ARCHIVE_PATH) == 2
    assert (tmp_path / ARCHIVE).read_bytes() == jma.files[ARCHIVE_PATH]


def test_speech_retry_after_a_dropped_connection_continues_the_part(jma: FakeJma, tmp_path: Path) -> None:
    jma.script[ARCHIVE_PATH] = ["truncate"]
    report = _speech(jma, tmp_path)
    assert report.exit_code == 0
    first, second = jma.range_headers(ARCHIVE_PATH)
    assert first is None and second is not None
    assert 0 < int(second.removeprefix("bytes=").rstrip("-")) <= len(jma.files[ARCHIVE_PATH]) // 2
    assert (tmp_path / ARCHIVE).read_bytes() == jma.files[ARCHIVE_PATH]
    assert report.downloaded[0].sha256 == hashlib.sha256(jma.files[ARCHIVE_PATH]).hexdigest()
    assert not _leftovers(tmp_path)


@pytest.mark.parametrize(("have", "honour_range"), [
    pytest.param(100_000, True, id="206: the rest is appended"),
    pytest.param(100_000, False, id="200: Range ignored, the whole file replaces the part"),
    pytest.param(300_000, True, id="416: the part was complete (killed before the rename)"),
])
def test_speech_resumes_a_part_left_by_a_killed_run(jma: FakeJma, tmp_path: Path, have: int, honour_range: bool) -> None:
    body = jma.files[ARCHIVE_PATH]
    jma.honour_range = honour_range
    part = part_name(tmp_path / ARCHIVE)
    part.write_bytes(body[:have] if honour_range else b"\0" * have)  # junk: it must be thrown away
    report = _speech(jma, tmp_path)
    assert report.exit_code == 0, report.failures
    assert jma.range_headers(ARCHIVE_PATH) == [f"bytes={have}-"]
    assert (tmp_path / ARCHIVE).read_bytes() == body and not part.exists()
    (done,) = report.downloaded
    assert done.sha256 == hashlib.sha256(body).hexdigest() and done.bytes == len(body)
    assert (tmp_path / "SHA256SUMS").read_text() == f"{done.sha256}  {ARCHIVE}\n"


def test_speech_failed_run_keeps_the_part_and_the_next_run_finishes_it(jma: FakeJma, tmp_path: Path) -> None:
    body = jma.files[ARCHIVE_PATH]
    jma.always[ARCHIVE_PATH] = "truncate"  # each attempt gets half of what is still missing
    url = jma.root_url + ARCHIVE_PATH
    result = _invoke("fetch", "speech", "--dest", tmp_path, "--url", url, *FAST_CLI)
    assert result.exit_code == 2
    (line,) = _error_lines(result)
    assert url in line and "(3 attempts)" in line
    assert "0 downloaded, 0 already complete, 1 failed" in result.stdout
    part = part_name(tmp_path / ARCHIVE)
    assert len(body) // 2 < part.stat().st_size < len(body) and not (tmp_path / ARCHIVE).exists()
    assert ARCHIVE not in (tmp_path / "SHA256SUMS").read_text()

    del jma.always[ARCHIVE_PATH]
    jma.ranges.clear()
    have = part.stat().st_size
    result = _invoke("fetch", "speech", "--dest", tmp_path, "--url", url, *FAST_CLI)
    assert result.exit_code == 0, result.output
    assert jma.range_headers(ARCHIVE_PATH) == [f"bytes={have}-"]
    assert (tmp_path / ARCHIVE).read_bytes() == body and not part.exists()


def test_speech_part_locked_by_another_fetch_is_left_alone(jma: FakeJma, tmp_path: Path) -> None:
    fcntl = pytest.importorskip("fcntl")
    part = part_name(tmp_path / ARCHIVE)
    part.write_bytes(jma.files[ARCHIVE_PATH][:1000])
    with part.open("rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        report = _speech(jma, tmp_path)
    (failure,) = report.failures
    assert "locked by another process" in str(failure) and "wait for it" in str(failure)
    assert jma.gets(ARCHIVE_PATH) == 0 and part.stat().st_size == 1000


def test_speech_known_sha256_is_checked(jma: FakeJma, tmp_path: Path) -> None:
    body = jma.files[ARCHIVE_PATH]
    right, other = hashlib.sha256(body).hexdigest(), hashlib.sha256(b"another archive").hexdigest()
    wrong = _speech(jma, tmp_path, sha256=other)
    assert wrong.exit_code == 2 and wrong.downloaded == ()
    (failure,) = wrong.failures
    line = str(failure)
    assert "\n" not in line and str(tmp_path / ARCHIVE) in line
    assert f"has sha256 {right}, expected {other}" in line and "check the URL and the expected sha256" in line
    assert (tmp_path / ARCHIVE).read_bytes() == body  # kept: a wrong expected sha256 costs no second download

    jma.requests.clear()
    again = _speech(jma, tmp_path, sha256=right.upper())
    assert jma.requests == [] and again.exit_code == 0 and [f.sha256 for f in again.skipped] == [right]
    assert _speech(jma, tmp_path, sha256=other).exit_code == 2  # a copy already there is checked too
    with pytest.raises(FetchArgumentError, match="is not 64 hex digits"):
        _speech(jma, tmp_path / "new", sha256="abc123")
    assert jma.requests == [] and not (tmp_path / "new").exists()


def test_speech_bad_url_exits_2_with_one_line(tmp_path: Path) -> None:
    for url, expected in (("ftp://mirror/speech.tar.gz", "is not http:// or https://"),
                          ("http://mirror/data/", "names a folder, not a file")):
        result = _invoke("fetch", "speech", "--dest", tmp_path / "speech", "--url", url)
        assert result.exit_code == 2
        (line,) = _error_lines(result)
        assert expected in line and SPEECH_COMMANDS_URL in line
    assert not (tmp_path / "speech").exists()
    assert _invoke("fetch", "speech", "--dest", tmp_path, "--retries", "-1").exit_code == 2


# --- shoal fetch higgs: the same one-file download, UCI's higgs.zip ----------------------------

HIGGS_PATH = "/static/public/280/higgs.zip"  # UCI's path


def test_higgs_zip_downloaded_with_manifest_then_skipped(jma: FakeJma, tmp_path: Path) -> None:
    body = write_sample(tmp_path / "upstream", rows=200, compression="zip").read_bytes()  # a real-format zip
    jma.files[HIGGS_PATH] = body
    dest = tmp_path / "higgs"
    result = _invoke("fetch", "higgs", "--dest", dest, "--url", jma.root_url + HIGGS_PATH, *FAST_CLI)
    assert result.exit_code == 0, result.output
    assert result.stderr == "" and "1 downloaded, 0 already complete, 0 failed" in result.stdout
    assert (dest / "higgs.zip").read_bytes() == body
    assert (dest / "SHA256SUMS").read_text() == f"{hashlib.sha256(body).hexdigest()}  higgs.zip\n"
    assert sorted(p.name for p in dest.iterdir()) == ["SHA256SUMS", "higgs.zip"]

    jma.requests.clear()
    again = fetch_file(jma.root_url + HIGGS_PATH, dest, config=FAST)
    assert jma.requests == [] and again.exit_code == 0 and again.downloaded == ()
    assert [f.sha256 for f in again.skipped] == [hashlib.sha256(body).hexdigest()]


def test_higgs_bad_url_exits_2_with_one_line(jma: FakeJma, tmp_path: Path) -> None:
    dest = tmp_path / "higgs"
    for url, expected in (("ftp://archive.ics.uci.edu/higgs.zip", "is not http:// or https://"),
                          ("https://archive.ics.uci.edu/static/public/280/", "names a folder, not a file")):
        result = _invoke("fetch", "higgs", "--dest", dest, "--url", url)
        assert result.exit_code == 2
        (line,) = _error_lines(result)
        assert expected in line and HIGGS_URL in line
    assert not dest.exists()
    missing = jma.root_url + "/static/public/280/HIGGS.csv.gz"  # not served
    result = _invoke("fetch", "higgs", "--dest", dest, "--url", missing, *FAST_CLI)
    assert result.exit_code == 2
    (line,) = _error_lines(result)
    assert line.startswith(f"error: {missing}: HTTP 404") and "(1 attempt)" in line
    assert not (dest / "HIGGS.csv.gz").exists() and not _leftovers(dest)


# --- the scheduled refresh fetches before it ingests -----------------------------------

FEATURES = {"coarsen": 8, "valid_start": "2026-07", "test_start": "2026-08", "leads": "1"}


def test_the_scheduled_refresh_fetches_the_months_after_the_stored_ones_then_ingests_them(
        jma: FakeJma, home: Path, tmp_path: Path, prefect_harness: None) -> None:
    from shoal.catalog import Catalog
    from shoal.datasets.cobe_sst_sample import write_sample as write_grib_sample
    from shoal.flows.deployments import refresh_sst

    published = write_grib_sample(tmp_path / "jma", start="2026-05", end="2026-09")
    for path, name, _ in _months(jma, "2026-05", "2026-09"):
        jma.files[path] = (tmp_path / "jma" / name).read_bytes()
    source = tmp_path / "cobe"
    source.mkdir()
    del jma.files[_months(jma, "2026-09", "2026-09")[0][0]]  # not published yet on the first run
    refresh_sst(source=source, home=str(home), start="2026-05", fetch=jma.base_url, features=FEATURES)
    assert Catalog(home).open_array("sst").sizes["time"] == 4 and len(list(source.glob("sst*.grb"))) == 4
    jma.files[_months(jma, "2026-09", "2026-09")[0][0]] = published[-1].read_bytes()  # published since
    jma.requests.clear()
    refresh_sst(source=source, home=str(home), fetch=jma.base_url, features=FEATURES)
    assert Catalog(home).open_array("sst").sizes["time"] == 5
    assert not {path for path, *_ in _months(jma, "2026-05", "2026-08")} & set(jma.all_gets())  # stored: not asked

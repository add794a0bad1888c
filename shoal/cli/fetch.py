"""`shoal fetch sst|speech|higgs`: download source files with retries, resume and sha256 (SHA256SUMS)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from shoal.cli.output import _console, _reporter
from shoal.cli.root import PlainFlagsGroup, _fail, _State, app
from shoal.errors import ShoalError

fetch_app = typer.Typer(cls=PlainFlagsGroup, help="Download source files: retries, resume, sha256 (SHA256SUMS).", no_args_is_help=True)
app.add_typer(fetch_app, name="fetch")

RetriesOpt = Annotated[int, typer.Option(help="Retries per file after the first attempt (transient errors only).")]
TimeoutOpt = Annotated[float, typer.Option(help="Seconds to connect, and between two reads.")]
BackoffOpt = Annotated[float, typer.Option(help="Seconds before the first retry; doubles each retry.")]


def _fetch(name: str, dest: Path, plan: Any, fetch: Any, *, retries: int, timeout: float, backoff: float,
           workers: int = 4) -> None:
    """Run one fetch under a progress bar; one line per failure, then the summary and the exit code.

    `plan()` validates the arguments and returns the number of files (before any output);
    `fetch(config, progress)` downloads them and returns the `DownloadReport`.
    """
    from shoal.download import DownloadConfig
    from shoal.manifest import MANIFEST

    try:
        config = DownloadConfig(retries=retries, timeout=timeout, backoff=backoff, workers=workers)
        total = plan()
        with _reporter() as reporter:
            reporter.start(f"fetch {name}", total=total)
            report = fetch(config, lambda _url, _outcome: reporter.advance())
    except ShoalError as error:  # caught here too, so that in-process callers get the exit code
        if _State.debug:
            raise
        _fail(f"{error}")
    for failure in report.failures:
        typer.echo(f"error: {failure}", err=True)
    _console().print(f"{dest}: {len(report.downloaded)} downloaded, {len(report.skipped)} already complete, "
                     f"{len(report.failures)} failed; sha256 in {dest / MANIFEST}", markup=False, highlight=False)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


@fetch_app.command("sst")
def fetch_sst_command(
    start: Annotated[str, typer.Option(help="First month, YYYY-MM (1891-01 or later).")],
    end: Annotated[str, typer.Option(help="Last month, YYYY-MM, inclusive.")],
    dest: Annotated[Path, typer.Option(help="Folder for sstYYYYMM.grb and SHA256SUMS; created when missing.")],
    base_url: Annotated[str | None, typer.Option(help="URL of the decade folders; default JMA/TCC's COBE-SST gpvdata.")] = None,
    retries: RetriesOpt = 4,
    timeout: TimeoutOpt = 60.0,
    backoff: BackoffOpt = 1.0,
    workers: Annotated[int, typer.Option(help="Files downloaded at once.")] = 4,
) -> None:
    """Download COBE-SST monthly GRIB files sstYYYYMM.grb; files already there are skipped."""
    from shoal.datasets.cobe_sst_fetch import COBE_SST_BASE_URL, fetch_sst, month_urls

    url = base_url or COBE_SST_BASE_URL
    _fetch("sst", dest, lambda: len(month_urls(start, end, url)),
           lambda config, progress: fetch_sst(start=start, end=end, dest=dest, base_url=url, config=config,
                                              progress=progress),
           retries=retries, timeout=timeout, backoff=backoff, workers=workers)


def _fetch_file(name: str, dest: Path, url: str | None, *, default_url: str, retries: int, timeout: float,
                backoff: float) -> None:
    """`shoal fetch NAME` of a single-file source: `url` (else `default_url`) into `dest`, resumed."""
    from shoal.download import fetch_file, file_items

    url = url or default_url
    _fetch(name, dest, lambda: len(file_items(url, default=default_url)),
           lambda config, progress: fetch_file(url, dest, config=config, progress=progress),
           retries=retries, timeout=timeout, backoff=backoff)


@fetch_app.command("speech")
def fetch_speech_command(
    dest: Annotated[Path, typer.Option(help="Folder for speech_commands_v0.01.tar.gz and SHA256SUMS; created when missing.")],
    url: Annotated[str | None, typer.Option(help="URL of the archive; default Google's speech_commands_v0.01.tar.gz.")] = None,
    retries: RetriesOpt = 4,
    timeout: TimeoutOpt = 60.0,
    backoff: BackoffOpt = 1.0,
) -> None:
    """Download the Speech Commands v0.01 archive (~1.4 GB); resumes a partial download, skips a complete one."""
    from shoal.datasets.speech_commands import SPEECH_COMMANDS_URL

    _fetch_file("speech", dest, url, default_url=SPEECH_COMMANDS_URL, retries=retries, timeout=timeout, backoff=backoff)


@fetch_app.command("higgs")
def fetch_higgs_command(
    dest: Annotated[Path, typer.Option(help="Folder for higgs.zip and SHA256SUMS; created when missing.")],
    url: Annotated[str | None, typer.Option(help="URL of higgs.zip or HIGGS.csv.gz; default UCI's higgs.zip.")] = None,
    retries: RetriesOpt = 4,
    timeout: TimeoutOpt = 60.0,
    backoff: BackoffOpt = 1.0,
) -> None:
    """Download the UCI HIGGS table (~2.6 GB); resumes a partial download, skips a complete one."""
    from shoal.datasets.higgs import HIGGS_URL

    _fetch_file("higgs", dest, url, default_url=HIGGS_URL, retries=retries, timeout=timeout, backoff=backoff)

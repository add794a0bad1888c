"""Backfills of COBE-SST months: the plan, chunks written into one session, one commit, failures per month, reruns."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shoal.catalog import Catalog
from shoal.datasets import cobe_sst, cobe_sst_backfill
from shoal.datasets.cobe_sst_backfill import Backfill, plan
from shoal.datasets.cobe_sst_sample import write_sample
from shoal.download import FetchArgumentError

START, END = "1990-01", "1991-12"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 months of sample COBE GRIB."""
    folder = tmp_path_factory.mktemp("cobe")
    write_sample(folder, start=START, end=END)
    return folder


@pytest.fixture
def gappy(source: Path, tmp_path: Path) -> Path:
    """The 24 months with 1990-05 missing and 1991-02 corrupt."""
    folder = tmp_path / "gappy"
    folder.mkdir()
    for path in source.glob("*.grb"):
        if path.name != "sst199005.grb":
            (folder / path.name).write_bytes(path.read_bytes())
    (folder / "sst199102.grb").write_bytes(b"GRIB" + b"\0" * 60)
    return folder


def _backfill(catalog: Catalog, folder: Path, *, chunk: int = 5, force: bool = False):  # noqa: ANN202
    found = plan(catalog, folder, START, END, force=force)
    backfill = Backfill(catalog, found)
    for months in found.chunks(chunk):
        backfill.add(backfill.decode_chunk(months))
    return backfill.commit()


@pytest.mark.parametrize("max_run", [120, 7])  # 7: the buffered fields are written in several runs
def test_a_backfill_in_chunks_stores_the_same_bytes_as_one_ingest_in_one_commit(source: Path, tmp_path: Path,
                                                                               monkeypatch, max_run: int) -> None:  # noqa: ANN001
    monkeypatch.setattr(cobe_sst_backfill, "MAX_RUN", max_run)
    chunked, whole = Catalog(tmp_path / "chunked"), Catalog(tmp_path / "whole")
    report = _backfill(chunked, source)
    cobe_sst.ingest(whole, [source])
    assert report.exit_code == 0 and len(report.committed) == 24 and len(chunked.history("sst")) == 1
    ours, theirs = chunked.open_array("sst"), whole.open_array("sst")
    np.testing.assert_array_equal(ours.sst.values, theirs.sst.values)
    np.testing.assert_array_equal(ours.source_sha256.values, theirs.source_sha256.values)
    assert chunked.lineage("sst").sources == whole.lineage("sst").sources


def test_missing_and_corrupt_months_fail_alone_and_a_rerun_retries_only_them(source: Path, gappy: Path,
                                                                            catalog: Catalog) -> None:
    report = _backfill(catalog, gappy)
    assert len(report.committed) == 22 and report.exit_code == 1
    missing, corrupt = report.failures
    assert missing.startswith(f"{gappy / 'sst199005.grb'}: no file for 1990-05") and "shoal fetch sst" in missing
    assert corrupt.startswith(str(gappy / "sst199102.grb"))
    for name in ("sst199005.grb", "sst199102.grb"):
        (gappy / name).write_bytes((source / name).read_bytes())
    again = plan(catalog, gappy, START, END)
    assert sorted(again.pending) == [np.datetime64("1990-05"), np.datetime64("1991-02")]
    assert len(again.unchanged) == 22 and not again.failures
    assert _backfill(catalog, gappy).committed == (str(gappy / "sst199005.grb"), str(gappy / "sst199102.grb"))
    assert not plan(catalog, gappy, START, END).pending
    assert len(plan(catalog, gappy, START, END, force=True).pending) == 24


@pytest.mark.parametrize(("start", "end", "problem"), [
    ("1990-13", "1991-01", "start '1990-13' is not a month"), ("1991-01", "1990-01", "--end 1990-01 is before --start")])
def test_a_bad_month_range_is_refused_in_one_line(catalog: Catalog, source: Path, start: str, end: str,
                                                  problem: str) -> None:
    with pytest.raises(FetchArgumentError, match=problem):
        plan(catalog, source, start, end)


def test_the_flow_runs_chunks_as_tasks_at_most_n_at_once_and_lists_every_failed_month(
        prefect_harness: None, gappy: Path, catalog: Catalog) -> None:
    from shoal.flows.backfill import backfill_sst

    report = backfill_sst(source=gappy, start=START, end=END, home=str(catalog.home), chunk=4, concurrency=2)
    assert len(report.committed) == 22 and len(report.failures) == 2 and len(catalog.history("sst")) == 1
    again = backfill_sst(source=gappy, start=START, end=END, home=str(catalog.home))
    assert len(again.unchanged) == 22 and not again.committed and len(catalog.history("sst")) == 1


def test_the_flow_builds_the_features_once_at_the_end_and_not_again_when_nothing_is_new(
        prefect_harness: None, source: Path, catalog: Catalog) -> None:
    from shoal.datasets import oni
    from shoal.flows.backfill import backfill_sst

    oni.ingest(catalog, [oni.SAMPLE])
    settings = {"coarsen": 10, "valid_start": "1991-01", "test_start": "1991-07"}
    backfill_sst(source=source, start=START, end=END, home=str(catalog.home), features=settings)
    assert len(catalog.history("enso_features")) == 1
    backfill_sst(source=source, start=START, end=END, home=str(catalog.home), features=settings)
    assert len(catalog.history("enso_features")) == 1 and len(catalog.history("sst")) == 1


def test_the_cli_lists_the_failed_months_and_exits_1(prefect_harness: None, gappy: Path, home: Path) -> None:
    from typer.testing import CliRunner

    from shoal.cli import app

    result = CliRunner().invoke(app, ["--home", str(home), "backfill", "sst", "--source", str(gappy),
                                      "--start", START, "--end", END, "--chunk", "6"])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and "sst199005.grb" in errors[0] and "sst199102.grb" in errors[1]
    assert "sst: version 0; 22 committed, 0 unchanged, 2 failed" in result.stdout


def _without_make(home: Path, *args: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m shoal --home HOME ARGS` as a user runs it without make: none of Prefect's settings that the
    Makefile exports (and shoal sets when they are missing), plus `env`."""
    from shoal.flows import PREFECT_DEFAULTS

    plain = {key: value for key, value in os.environ.items() if key not in PREFECT_DEFAULTS and key != "PREFECT_API_URL"}
    return subprocess.run([sys.executable, "-m", "shoal", "--home", str(home), *map(str, args)],
                          env=plain | {"NO_COLOR": "1"} | env, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize(("start", "end", "folder", "expected"), [
    ("2001-12", "2000-01", None, "--end 2000-01 is before --start 2001-12"),
    ("1990-01", "1990-02", "/no/such", "/no/such: no such folder"),
])
def test_a_bad_range_or_folder_is_refused_before_any_prefect_server_starts(
        source: Path, tmp_path: Path, start: str, end: str, folder: str | None, expected: str) -> None:
    done = _without_make(tmp_path / "home", "backfill", "sst", "--source", folder or source, "--start", start,
                         "--end", end)
    assert done.returncode == 2 and expected in " ".join(done.stderr.split()), done.stderr
    assert "prefect" not in (done.stdout + done.stderr).lower() and "Traceback" not in done.stderr


def test_without_make_prefect_sends_no_telemetry_and_a_server_that_cannot_start_is_one_line(
        source: Path, tmp_path: Path) -> None:
    months = ("--source", source, "--start", "1990-01", "--end", "1990-02")
    done = _without_make(tmp_path / "home", "backfill", "sst", *months)
    assert done.returncode == 0 and "telemetry" not in (done.stdout + done.stderr).lower(), done.stdout + done.stderr
    late = _without_make(tmp_path / "late", "backfill", "sst", *months, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="1")
    (line,) = [line for line in late.stderr.splitlines() if line.startswith("error: ")]
    assert late.returncode == 2 and "Traceback" not in late.stderr
    assert "did not answer within PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS (1 s)" in line
    assert "PREFECT_API_URL=http://127.0.0.1:4200/api" in line


def test_the_cli_prints_each_failed_month_once_and_its_summary_once(gappy: Path, tmp_path: Path) -> None:
    done = _without_make(tmp_path / "home", "backfill", "sst", "--source", gappy, "--start", START, "--end", END)
    output = (done.stdout + done.stderr).splitlines()
    assert done.returncode == 1, done.stdout + done.stderr
    for month in ("sst199005.grb", "sst199102.grb"):
        assert sum(month in line for line in output) == 1, "\n".join(output)  # the summary's `error:` line
    assert sum("22 committed" in line for line in output) == 1, "\n".join(output)

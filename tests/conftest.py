"""Shared fixtures: a fresh catalog per test, one quiet Prefect server per session; nothing outlives the run.

Deadlines bound hangs, not speed: every subprocess timeout and wait-until deadline in the tests,
and the per-test pytest-timeout (pyproject's `timeout`, unless `--timeout` or PYTEST_TIMEOUT is
given), goes through `tests.timeouts.scaled`: set SHOAL_TEST_TIMEOUT_SCALE (default 3) higher on a
slow or loaded machine.

At the end of the session, any child process of pytest still running after a grace period (a
server, a cluster worker, a subprocess a test forgot) fails the run: it is named, then killed. On
Linux pytest is a child subreaper (PR_SET_CHILD_SUBREAPER), so the orphans of a process a test
killed (say, the Prefect server of a SIGKILLed `shoal run`) become its children and are counted.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.timeouts import scaled

# Quiet, reliable Prefect; set before prefect is first imported.
_PREFECT_HOME = tempfile.mkdtemp(prefix="shoal-prefect-")
os.environ.update(
    PREFECT_HOME=_PREFECT_HOME,
    PREFECT_SERVER_ANALYTICS_ENABLED="false",
    PREFECT_LOGGING_TO_API_ENABLED="false",
    PREFECT_SERVER_UI_ENABLED="false",
    DO_NOT_TRACK="1",
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="90",
)
os.environ.pop("SHOAL_HOME", None)

if sys.platform.startswith("linux"):  # adopt orphaned descendants, so that the end-of-session check sees them
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty catalog home."""
    return tmp_path / "home"


@pytest.fixture
def catalog(home: Path):  # noqa: ANN201
    """A `Catalog` on an empty home."""
    from shoal.catalog import Catalog

    return Catalog(home)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One ephemeral Prefect server for every flow test of the session (~15 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    from shoal.flows.server import supervise_ephemeral_server

    supervise_ephemeral_server()  # a killed pytest takes the server with it
    with prefect_test_harness(server_startup_timeout=None):
        yield


@pytest.hookimpl(tryfirst=True)  # before pytest-timeout reads the setting
def pytest_configure(config: pytest.Config) -> None:
    ini = config.getini("timeout")
    if ini and config.getoption("timeout", None) is None and "PYTEST_TIMEOUT" not in os.environ:
        config.option.timeout = scaled(float(ini))


# multiprocessing's resource tracker lives as long as pytest by design, and ends with it (its pipe closes)
_ENDS_WITH_PYTEST = ("from multiprocessing.resource_tracker import main",)


def _running_children() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                if child.ppid() == os.getpid():
                    os.waitpid(child.pid, os.WNOHANG)  # ended; adopted orphans have no Popen to reap them
            elif not any(mark in " ".join(child.cmdline()) for mark in _ENDS_WITH_PYTEST):
                found.append(child)
        except (psutil.Error, ChildProcessError):  # ended or reaped meanwhile
            pass
    return found


@pytest.hookimpl(trylast=True)  # after the session fixtures' teardown (the Prefect server, clusters)
def pytest_sessionfinish(session: pytest.Session) -> None:
    survivors = _running_children()
    if not survivors:
        return
    _, survivors = psutil.wait_procs(survivors, timeout=scaled(5))
    survivors = [child for child in survivors if child in _running_children()]
    if not survivors:
        return
    named = []
    for child in survivors:
        try:
            named.append(f"  pid {child.pid} (parent {child.ppid()}): {' '.join(child.cmdline())[:200]}")
            child.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(survivors, timeout=scaled(5))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = f"{len(survivors)} child process(es) outlived the tests (killed now):\n" + "\n".join(named)
    if reporter is not None:
        reporter.line("")
        reporter.write_sep("=", "processes left behind", red=True)
        reporter.write_line(message)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED

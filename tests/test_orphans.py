"""Nothing outlives shoal: a SIGKILLed `shoal backfill` takes Prefect's ephemeral server (and its workers) with it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.timeouts import scaled

SST = Path(__file__).parent / "data" / "cobe_sst" / "good"
SERVER = "prefect.server.api.server:create_app"


def _alive(processes: list[psutil.Process], within: float) -> list[psutil.Process]:
    """Those of `processes` still running after `within` seconds (a zombie has ended: nobody reaps it here)."""
    deadline = time.monotonic() + within
    while True:
        alive = []
        for process in processes:
            try:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _server(shoal: subprocess.Popen, deadline: float) -> psutil.Process:
    """The ephemeral server `shoal` started, once it answers /api/health; `shoal` is stopped (SIGSTOP) meanwhile,
    so that it cannot finish its command (and stop the server) first.

    A server that exits first (its port was taken between Prefect's check and uvicorn's bind: Prefect then starts
    another on a new port) lets `shoal` go on (SIGCONT) to start the next one.
    """
    while time.monotonic() < deadline:
        assert shoal.poll() is None, f"shoal exited ({shoal.returncode}) before it started a server"
        for child in psutil.Process(shoal.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if SERVER in (command := child.cmdline()):
                    shoal.send_signal(signal.SIGSTOP)
                    port = command[command.index("--port") + 1]
                    while time.monotonic() < deadline and _alive([child], 0):
                        with contextlib.suppress(httpx.HTTPError):
                            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code == 200:
                                return child
                        time.sleep(0.2)
                    shoal.send_signal(signal.SIGCONT)
        time.sleep(0.05)
    pytest.fail("no ephemeral Prefect server answered")


def _command_line(process: psutil.Process) -> str:
    """A process's command line; "" for one that has ended (a short-lived helper of uvicorn's, a zombie)."""
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def _tree(server: psutil.Process, workers: int, deadline: float) -> list[psutil.Process]:
    """The server and its descendants, once its `workers` worker processes have all started."""
    while True:
        tree = [server, *server.children(recursive=True)]
        started = sum("--multiprocessing-fork" in _command_line(process) for process in tree[1:])
        if started >= workers:
            return tree
        assert time.monotonic() < deadline, f"{started} of {workers} uvicorn workers started: {tree}"
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [None, "2"], ids=["one-process", "uvicorn-workers"])
def test_a_sigkilled_shoal_leaves_no_prefect_server_behind(workers: str | None, tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key not in {"PREFECT_API_URL", "UVICORN_WORKERS"}}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), NO_COLOR="1")
    if workers:  # uvicorn reads its options from UVICORN_* too: a supervisor and worker processes
        env["UVICORN_WORKERS"] = workers
        # Each worker migrates the database at start-up; on a new one they race (duplicate column, alembic_version
        # mismatch) and uvicorn stops them all. Migrated first, as Prefect's own multi-worker server expects.
        subprocess.run([sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"], env=env,
                       capture_output=True, check=True, timeout=scaled(120))
    shoal = subprocess.Popen([sys.executable, "-m", "shoal", "--home", str(tmp_path / "home"), "backfill", "sst",
                              "--source", str(SST), "--start", "1982-01", "--end", "1982-03"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tree: list[psutil.Process] = []
    try:
        server = _server(shoal, time.monotonic() + scaled(120))
        tree = _tree(server, int(workers or 0), time.monotonic() + scaled(30))
        shoal.kill()  # SIGKILL (stopped or not): no atexit, no finally
        shoal.wait(timeout=scaled(30))
        alive = _alive(tree, 10)  # what is promised (the watch polls every 0.5 s), not a hang bound: not scaled
        assert not alive, f"outlived shoal: {[(p.pid, ' '.join(p.cmdline())[:100]) for p in alive]}"
    finally:  # leave nothing behind, even when the test fails
        for process in _alive(tree, 0):
            with contextlib.suppress(psutil.Error):
                process.send_signal(signal.SIGKILL)
        if shoal.poll() is None:
            shoal.kill()
        shoal.wait(timeout=scaled(30))



_PARENT = """
import os, subprocess, sys, threading, time
from shoal.flows.server import watched

def armed(pid):  # the watch's SIGUSR2 handler is installed (or, later, the program ignores SIGUSR2)
    status = open(f"/proc/{pid}/status").read()
    return any(int(status.split(f"{field}:")[1].split()[0], 16) >> (12 - 1) & 1 for field in ("SigCgt", "SigIgn"))

def start():
    started.append(subprocess.Popen(watched([sys.executable, "-m", "timeit", "-n1", "-r1", sys.argv[1]]),
                                    process_group=0))
    while not armed(started[0].pid):
        time.sleep(0.1)

started = []
thread = threading.Thread(target=start)
thread.start()
thread.join()  # the thread that started the child ends: PR_SET_PDEATHSIG fires, this process lives on
time.sleep(2)
print(started[0].pid, started[0].poll(), flush=True)
time.sleep(600)
"""
SLEEP = "__import__('time').sleep(600)"
DEAF = "import signal, time; signal.signal(signal.SIGUSR2, signal.SIG_IGN); time.sleep(600)"  # only the watchdog


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's")
@pytest.mark.parametrize("program", [SLEEP, DEAF], ids=["death-signal", "watchdog-only"])
def test_the_watch_outlives_the_thread_that_started_the_server_but_not_its_process(program: str) -> None:
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, program], stdout=subprocess.PIPE, text=True)
    child = None
    try:
        pid, code = parent.stdout.readline().split()  # bounded by pytest-timeout
        with contextlib.suppress(psutil.NoSuchProcess):
            child = psutil.Process(int(pid))
        assert code == "None" and child is not None and _alive([child], 0), "the end of the starting thread ended it"
        parent.kill()
        parent.wait(timeout=scaled(30))
        assert not _alive([child], 10), "the child outlived its parent process"
    finally:
        if child is not None:
            with contextlib.suppress(psutil.Error):
                child.kill()
        if parent.poll() is None:
            parent.kill()
        parent.wait(timeout=scaled(30))

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


def _descendants(process: psutil.Process, at_least: int, deadline: float) -> list[psutil.Process]:
    """The descendants of `process`, once there are `at_least` of them."""
    while len(found := process.children(recursive=True)) < at_least:
        assert time.monotonic() < deadline, f"{process.pid} started {len(found)} of {at_least} processes"
        time.sleep(0.1)
    return found


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


# The server's own children (uvicorn's worker processes with UVICORN_WORKERS) end with its process group: the
# watched program that starts a child below checks that. Not through uvicorn workers: Prefect refuses them on
# SQLite (`prefect server start --workers 2`: "not supported with SQLite database"), and an ephemeral server's
# workers race at start-up on its one SQLite file (duplicate columns, locked rows) until uvicorn stops them all.
@pytest.mark.slow
def test_a_sigkilled_shoal_leaves_no_prefect_server_behind(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key not in {"PREFECT_API_URL", "UVICORN_WORKERS"}}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), NO_COLOR="1")
    shoal = subprocess.Popen([sys.executable, "-m", "shoal", "--home", str(tmp_path / "home"), "backfill", "sst",
                              "--source", str(SST), "--start", "1982-01", "--end", "1982-03"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tree: list[psutil.Process] = []
    try:
        server = _server(shoal, time.monotonic() + scaled(120))
        tree = [server, *server.children(recursive=True)]
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
# A server with a worker process, as uvicorn's supervisor has: the whole process group ends.
SPAWNS = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', \"__import__('time').sleep(600)\"]); "
          "time.sleep(600)")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's")
@pytest.mark.parametrize("program", [SLEEP, DEAF, SPAWNS], ids=["death-signal", "watchdog-only", "with-a-child"])
def test_the_watch_outlives_the_thread_that_started_the_server_but_not_its_process(program: str) -> None:
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, program], stdout=subprocess.PIPE, text=True)
    child = None
    try:
        pid, code = parent.stdout.readline().split()  # bounded by pytest-timeout
        with contextlib.suppress(psutil.NoSuchProcess):
            child = psutil.Process(int(pid))
        assert code == "None" and child is not None and _alive([child], 0), "the end of the starting thread ended it"
        tree = [child, *_descendants(child, 1 if program == SPAWNS else 0, time.monotonic() + scaled(30))]
        parent.kill()
        parent.wait(timeout=scaled(30))
        assert not _alive(tree, 10), "the child (or its own child) outlived its parent process"
    finally:
        if child is not None:
            with contextlib.suppress(psutil.Error):
                child.kill()
        if parent.poll() is None:
            parent.kill()
        parent.wait(timeout=scaled(30))

"""Prefect's ephemeral server dies with the shoal process that started it, even by SIGKILL.

With no PREFECT_API_URL, Prefect 3's first API client calls `SubprocessASGIServer().start()`
(`prefect.server.api.server`): `subprocess.Popen([python, "-m", "uvicorn", ...,
"prefect.server.api.server:create_app"])`, stopped by an `atexit` hook. A SIGKILL runs no
`atexit` hook, so the server (and its uvicorn workers when UVICORN_WORKERS is set) lived on
with parent 1.

After `supervise_ephemeral_server()` (called when `shoal.flows` is imported, and by the tests'
Prefect harness), Prefect starts that same command, with its own arguments and environment, in
a process group of its own and through `python -c "...shoal.flows.server.main..." --parent PID
-- -m uvicorn ...`, which in the server process:

- on Linux asks the kernel for a signal when its parent dies (`prctl(PR_SET_PDEATHSIG)`);
- everywhere runs a watchdog thread that notices its parent pid changing (reparenting);

and on either ends the whole process group: the server and every process it started.
This module imports prefect only in `supervise_ephemeral_server`.
"""

from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Sequence
from typing import Any

POLL_S = 0.5  # the watchdog's period: how long an orphan can outlive its parent where no signal comes
_DEATH_SIGNAL = signal.SIGUSR2  # not SIGKILL: the handler must end the server's children too; no uvicorn use
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_MAIN = "import sys; from shoal.flows.server import main; main(sys.argv[1:])"  # not -m: shoal.flows imports it first
_supervised = False


def watched(command: Sequence[str]) -> list[str]:
    """`command` (`python -m MODULE ...`) run under this module's watch of the calling process.

    Start it in a process group of its own (`process_group=0`): that group is what ends.
    """
    python, *rest = command
    return [python, "-c", _MAIN, "--parent", str(os.getpid()), "--", *rest]


class _SupervisedPopen(subprocess.Popen):
    """`subprocess.Popen` that runs `python -m uvicorn ...` watched, in its own process group."""

    def __init__(self, args: Sequence[str], *rest: Any, **options: Any) -> None:
        if list(args[1:3]) == ["-m", "uvicorn"]:
            args = watched(args)
            options.setdefault("process_group", 0)  # killpg ends workers too; Ctrl-C reaches shoal, which stops it
        super().__init__(args, *rest, **options)


def supervise_ephemeral_server() -> None:
    """Make every ephemeral server this process starts die with it, however it dies. Idempotent.

    No-op when PREFECT_API_URL names a server (no ephemeral one is started) or off POSIX.
    """
    global _supervised
    from prefect.settings import get_current_settings

    if _supervised or os.name != "posix" or get_current_settings().api.url:
        return
    import prefect.server.api.server as prefect_server

    # Why a patch: Prefect has no setting or hook for how it spawns the server, and its Popen call
    # must gain a process group and a parent watch while keeping Prefect's own arguments and
    # environment (which change between versions). So its module, and only it, sees a copy of
    # `subprocess` whose Popen does that; tests/test_orphans.py fails if this stops working.
    patched = types.ModuleType("subprocess", "subprocess, as prefect.server.api.server sees it under shoal")
    patched.__dict__.update(vars(subprocess), Popen=_SupervisedPopen)
    prefect_server.subprocess = patched
    _supervised = True


def _end_group() -> None:
    """SIGKILL this process group (the server and what it started); just this process if it leads none."""
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def watch(parent: int) -> None:
    """In the server process: end the process group as soon as `parent` is no longer our parent."""

    def orphaned(*_: object) -> None:
        # The death signal also comes when the parent's spawning thread ends while its process lives
        # (PR_SET_PDEATHSIG is per thread): then the parent pid is unchanged and nothing happens.
        if os.getppid() != parent:
            _end_group()

    if sys.platform.startswith("linux"):
        import ctypes

        signal.signal(_DEATH_SIGNAL, orphaned)
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(_DEATH_SIGNAL), 0, 0, 0)  # failing: the watchdog

    def watchdog() -> None:
        while True:
            orphaned()
            time.sleep(POLL_S)

    orphaned()  # the parent may have died before the watch began
    threading.Thread(target=watchdog, name="shoal-parent-watchdog", daemon=True).start()


def main(argv: Sequence[str]) -> None:
    """Arguments `--parent PID -- -m MODULE ARGS...`: watch PID, then run MODULE as `python -m` would."""
    argv = list(argv)
    if len(argv) < 5 or argv[0] != "--parent" or argv[2:4] != ["--", "-m"]:
        raise SystemExit("usage: --parent PID -- -m MODULE [ARGS...]")
    watch(int(argv[1]))
    module = argv[4]
    sys.argv = [module, *argv[5:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)

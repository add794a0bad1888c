"""How many threads shoal's compute uses: torch intra-op, BLAS and OpenMP; decided once per process.

On a machine shared with other jobs, torch's default (one intra-op thread per core) collapses:
its OpenMP threads wait for each other at every operation, and each waits for a core the other
jobs hold. The default rule therefore counts the cores this process may use that the other jobs
leave free (`default_threads`), at least one. BENCHMARKS.md (`demo`) measures it against torch's
default. The other jobs are counted by the run queue now (`other_load`), not by the load average:
that lags a minute behind a job that ended or started, and picked 1 thread right after another
command on an idle machine, where 2 were faster; `--threads` overrides the rule.

What overrides the rule, strongest first: the global option `--threads N`, then `SHOAL_THREADS`,
then an `OMP_NUM_THREADS` the user set (respected as it is, per process). The decision is
exported (`SHOAL_THREADS`, `OMP_NUM_THREADS`, `MKL_NUM_THREADS` and `OPENBLAS_NUM_THREADS`, unless the user's
OMP_NUM_THREADS decided) so that the processes shoal starts (Prefect's server, Dask workers, torchrun ranks)
inherit it instead of measuring a load that their parent makes; distributed ranks divide it among themselves
(`shoal.models.distributed.session`).

Not decided here: torch's inter-op pool only serves `torch.jit.fork`, which shoal never calls;
DataLoader workers stay 0 (`TrainConfig.num_workers`), as training data are in-memory tensors
that a worker process would only copy, and each extra process competes for the same cores.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shoal.errors import ShoalError

log = logging.getLogger(__name__)

ENV = "SHOAL_THREADS"
LOADAVG = Path("/proc/loadavg")  # Linux; its 4th field is "runnable/total" scheduling entities now
QUEUE_SAMPLES, QUEUE_INTERVAL_S = 5, 0.01
OPENMP = "OMP_NUM_THREADS"
# Read by OpenBLAS and MKL when they load; OpenMP (torch's libgomp) reads OPENMP.
_LIBRARY_ENV = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class ThreadsError(ShoalError):
    """A thread count that is not a whole number >= 1."""


@dataclass(frozen=True)
class Threads:
    """The decided thread count and where it came from.

    Attributes:
        count: intra-op threads of torch, BLAS and OpenMP.
        source: "--threads", "SHOAL_THREADS", "OMP_NUM_THREADS", or "rule" (`default_threads`).
    """

    count: int
    source: str


def default_threads(*, cores: int, load: float) -> int:
    """The rule: the cores this process may use minus the other jobs' load, at least 1.

    Args:
        cores: CPUs this process may run on (`os.sched_getaffinity`).
        load: the other jobs' runnable tasks (`other_load`).

    Returns:
        `cores - round(load)`, at least 1: 2 threads on 2 idle cores, 1 under any load above 0.5 there.
    """
    return max(1, cores - math.floor(load + 0.5))


def other_load(path: Path = LOADAVG) -> float:
    """The other jobs' runnable tasks now: the run queue of `path` less this process, averaged over a few samples.

    A job that holds a core is runnable in every sample; a short burst is in few. Where the run queue cannot be
    read (not Linux), the 1-minute load average.
    """
    try:
        queue = []
        for _ in range(QUEUE_SAMPLES):
            queue.append(int(path.read_text().split()[3].split("/")[0]) - 1)  # this process is runnable too
            time.sleep(QUEUE_INTERVAL_S)
    except (OSError, IndexError, ValueError):
        return os.getloadavg()[0]
    return max(0.0, sum(queue) / len(queue))


def parse_count(text: str, *, name: str) -> int:
    """A thread count given as text.

    Raises:
        ThreadsError: not a whole number >= 1; the message names `name` (the option or variable).
    """
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise ThreadsError(f"{name} {text!r}: expected a whole number of threads >= 1, e.g. {name} 1")
    return count


def _omp_count(text: str) -> int | None:
    """The outer level of OMP_NUM_THREADS ("4" or a nested "4,2"), or None when OpenMP would not accept it either."""
    first = text.split(",", 1)[0].strip()
    return int(first) if first.isdigit() and int(first) > 0 else None


def decide(*, option: int | None, environ: Mapping[str, str], cores: int, load: float) -> Threads:
    """The thread count from the option, the environment, or the rule (in that order).

    Args:
        option: `--threads`, or None.
        environ: the environment (`SHOAL_THREADS`, `OMP_NUM_THREADS`).
        cores: CPUs this process may use.
        load: the other jobs' runnable tasks (`other_load`).

    Raises:
        ThreadsError: `--threads` or `SHOAL_THREADS` is not a whole number >= 1.
    """
    if option is not None:
        if option < 1:
            raise ThreadsError(f"--threads {option}: expected a whole number of threads >= 1, e.g. --threads 1")
        return Threads(option, "--threads")
    if ENV in environ:
        return Threads(parse_count(environ[ENV], name=ENV), ENV)
    if OPENMP in environ and (count := _omp_count(environ[OPENMP])) is not None:
        return Threads(count, OPENMP)
    return Threads(default_threads(cores=cores, load=load), "rule")


def user_fixed_openmp(environ: Mapping[str, str]) -> bool:
    """Whether OMP_NUM_THREADS is the user's per-process setting rather than shoal's exported decision."""
    return OPENMP in environ and ENV not in environ


_applied: Threads | None = None


def apply_threads(option: int | None = None) -> Threads:
    """Decide the thread count (once per process, unless `option` is given) and apply it.

    Torch and the BLAS/OpenMP libraries already loaded are set now; those loaded later read
    the exported environment when they load. Called by the CLI at start-up and by the flows and
    `train_model`, so a Python user gets the same threads as the command line.

    Args:
        option: `--threads`; None decides from the environment and the rule.

    Returns:
        The decision.

    Raises:
        ThreadsError: `--threads` or `SHOAL_THREADS` is not a whole number >= 1.
    """
    global _applied  # noqa: PLW0603 - a process has one thread setting; a second call must not re-measure
    if _applied is not None and option is None:
        return _applied
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    decided = decide(option=option, environ=os.environ, cores=cores, load=other_load())
    if decided.source != OPENMP:
        os.environ[ENV] = os.environ[OPENMP] = str(decided.count)
        for name in _LIBRARY_ENV:  # overwritten, not defaulted: a parent shoal's export must not outvote --threads
            os.environ[name] = str(decided.count)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(decided.count)
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=decided.count)  # the libraries loaded so far; it stays until restored
    log.debug("%d compute threads (%s)", decided.count, decided.source)
    _applied = decided
    return decided

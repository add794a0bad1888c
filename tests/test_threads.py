"""Compute threads: the default rule, its overrides, and that the decision reaches torch."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shoal.threads import LOADAVG, ThreadsError, decide, default_threads, other_load, user_fixed_openmp
from tests.test_cli import _one_error_line
from tests.timeouts import scaled

IDLE = {"cores": 2, "load": 0.1}


@pytest.mark.parametrize(("cores", "load", "threads"), [
    (2, 0.0, 2), (2, 0.4, 2),  # an idle machine: every core
    (2, 0.6, 1), (2, 9.5, 1),  # another job on 2 cores: one thread, never 0
    (16, 3.4, 13), (16, 3.6, 12), (1, 0.0, 1),
])
def test_the_rule_leaves_the_cores_that_other_jobs_hold(cores: int, load: float, threads: int) -> None:
    assert default_threads(cores=cores, load=load) == threads


def test_the_other_jobs_are_the_run_queue_less_this_process(tmp_path: Path) -> None:
    """The run queue, not the load average: a job that ended a second ago (a 1-minute average of 3.2) is not counted."""
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("3.20 2.10 1.00 1/412 31337\n")
    assert other_load(loadavg) == 0.0
    loadavg.write_text("0.10 0.30 0.20 3/412 31337\n")
    assert other_load(loadavg) == 2.0


def test_without_a_run_queue_the_load_average_counts_the_other_jobs(tmp_path: Path) -> None:
    assert other_load(tmp_path / "missing") == os.getloadavg()[0]


@pytest.mark.skipif(not LOADAVG.exists(), reason="the run queue is Linux's /proc/loadavg")
def test_busy_jobs_are_counted_as_soon_as_they_run() -> None:
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(0.5)
        assert other_load() >= 1.5
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def test_the_option_beats_shoal_threads_which_beats_omp_num_threads_which_beats_the_rule() -> None:
    both = {"SHOAL_THREADS": "3", "OMP_NUM_THREADS": "5"}
    assert decide(option=4, environ=both, **IDLE) == decide(option=4, environ={}, **IDLE)
    assert (decide(option=4, environ=both, **IDLE).count, decide(option=None, environ=both, **IDLE).count) == (4, 3)
    assert decide(option=None, environ={"OMP_NUM_THREADS": "5,2"}, **IDLE).count == 5
    assert decide(option=None, environ={}, cores=2, load=7.0).source == "rule"
    assert decide(option=None, environ={"OMP_NUM_THREADS": "lots"}, cores=2, load=7.0).count == 1  # OpenMP ignores it too


def test_only_an_omp_num_threads_without_shoal_threads_is_the_users_per_process_setting() -> None:
    # shoal exports SHOAL_THREADS beside its own OMP_NUM_THREADS; distributed ranks divide that one
    assert user_fixed_openmp({"OMP_NUM_THREADS": "1"})
    assert not user_fixed_openmp({"OMP_NUM_THREADS": "2", "SHOAL_THREADS": "2"})
    assert not user_fixed_openmp({})


@pytest.mark.parametrize("given", [0, -1])
def test_a_count_below_one_names_the_option(given: int) -> None:
    with pytest.raises(ThreadsError, match=r"^--threads -?\d: expected a whole number of threads >= 1"):
        decide(option=given, environ={}, **IDLE)


# The command line, then torch imported after it (a command's lazy import) or before it (a Python session).
PROBE = """
import sys
if sys.argv[1] == "torch-first":
    import torch
from shoal.cli.root import run
sys.argv = ["shoal", *sys.argv[2:]]
try:
    run()
except SystemExit as done:
    assert not done.code, done.code
import os, torch
print(f"{torch.get_num_threads()} threads, SHOAL_THREADS={os.environ.get('SHOAL_THREADS')} "
      f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
"""


def _probe(order: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROBE, order, *args], env=env, capture_output=True, text=True,
                          timeout=scaled(120), check=False)


# What a shoal process exports: the suite's own in-process commands export them too, so each probe starts without.
EXPORTED = ("SHOAL_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in EXPORTED}
    return env | {"NO_COLOR": "1"} | extra


# torch caps the OMP_NUM_THREADS it reads at the cores (2 here), so each case asks for 1 where what it overrides says 2.
@pytest.mark.parametrize(("order", "args", "env"), [
    ("torch-after", ("--threads", "1", "catalog", "list"), {"SHOAL_THREADS": "2"}),
    ("torch-first", ("catalog", "list", "--threads", "1"), {"SHOAL_THREADS": "2"}),  # after the subcommand, like --home
    ("torch-after", ("catalog", "list"), {"SHOAL_THREADS": "1", "OMP_NUM_THREADS": "2"}),
    ("torch-first", ("--threads", "1", "catalog", "list"), {"OMP_NUM_THREADS": "2"}),
    # a parent shoal's export: torch's MKL build sizes its pool by MKL_NUM_THREADS
    ("torch-after", ("--threads", "1", "catalog", "list"), dict.fromkeys(EXPORTED, "2")),
])
def test_the_threads_option_and_shoal_threads_reach_torch(order: str, args: tuple[str, ...], env: dict[str, str],
                                                          tmp_path: Path) -> None:
    result = _probe(order, "--home", str(tmp_path), *args, env=_env(**env))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "1 threads, SHOAL_THREADS=1 OMP_NUM_THREADS=1"  # what the ranks inherit


def test_an_explicit_omp_num_threads_is_left_as_the_user_set_it(tmp_path: Path) -> None:
    result = _probe("torch-after", "--home", str(tmp_path), "catalog", "list", env=_env(OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "1 threads, SHOAL_THREADS=None OMP_NUM_THREADS=1"


@pytest.mark.parametrize(("args", "env", "named"), [
    (("--threads", "0"), {}, "--threads '0'"),
    (("--threads", "two"), {}, "--threads 'two'"),
    ((), {"SHOAL_THREADS": "-2"}, "SHOAL_THREADS '-2'"),
])
def test_an_invalid_thread_count_is_a_one_line_error_naming_where_it_came_from(
        args: tuple[str, ...], env: dict[str, str], named: str, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "shoal", "--home", str(tmp_path), "catalog", "list", *args]
    result = subprocess.run(command, env=_env(**env), capture_output=True, text=True, timeout=scaled(60), check=False)
    assert result.returncode == 2
    assert named in _one_error_line(result)

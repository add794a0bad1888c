"""The demo's wall time after install, idle and under a competing load: shoal's thread rule against torch's default.

Ours: `shoal --home H demo` as a user runs it (`make demo`), a fresh interpreter and home per run,
with shoal's default threads (`shoal.threads.default_threads`: the cores this process may use
minus the other jobs' runnable tasks at its start, at least 1). Baseline: the same command with
`--threads C`, C = those cores, which is what torch chose before shoal decided (one intra-op thread
per core). Idle: the machine as it is; its load average when each run started is in the notes,
as other jobs may share it. Under load: 2 x C busy-looping processes, started 45 s before the
first run. The whole demo with torch's default
under such a load took 31 min in issue 22, so under load each side runs the demo's ENSO training
instead, the step that collapsed there (`shoal train enso --retrain` at the demo's settings, one
epoch of 40 batches of 4, on the home an idle run left), in interleaved repeats (ours, baseline,
ours, ...); times are medians with their spread (min..max). The idle demo runs once each: a run
is minutes, and on a machine that other jobs share a repeat measures their load as much as ours.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.run import Comparison, Result, interleaved
from shoal.cli.demo import DEMO_ENSO

DEMO_REPEATS, STEP_REPEATS, WARM_UP_S, TARGET_S = 1, 2, 45, 240
CORES = len(os.sched_getaffinity(0))
# The features are the demo's (coarsened); training takes the rest of its settings.
ENSO_STEP = ("train", "enso", "--retrain", "--epochs", "1", *(f"--{key.replace('_', '-')}={value}"
                                                              for key, value in DEMO_ENSO.items()
                                                              if key not in ("epochs", "coarsen")))


def _shoal(home: Path, *args: str, threads: int | None, loads: list[float]) -> float:
    """Seconds of one `shoal` command in a fresh interpreter; its start's load average is appended to `loads`."""
    env = {key: value for key, value in os.environ.items() if key not in ("SHOAL_THREADS", "OMP_NUM_THREADS")}
    chosen = () if threads is None else ("--threads", str(threads))
    loads.append(os.getloadavg()[0])
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "shoal", "--home", str(home), *chosen, *args], env=env | {"NO_COLOR": "1"},
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


@contextmanager
def competing_load(processes: int) -> Iterator[None]:
    """`processes` busy loops for the duration, started `WARM_UP_S` before it begins."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        time.sleep(WARM_UP_S)
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def _demo(scratch: Path, threads: int | None, loads: list[float]) -> Callable[[], float]:
    def demo() -> float:
        return _shoal(Path(tempfile.mkdtemp(dir=scratch)), "demo", threads=threads, loads=loads)

    return demo


def _loads(values: list[float]) -> str:
    return ", ".join(f"{value:.1f}" for value in values)


def _result(name: str, comparison: Comparison, *, target: str, passed: bool, notes: str) -> Result:
    repeated = len(comparison.ours.seconds) > 1
    speed_up = f"{len(comparison.ours.seconds)} interleaved repeats: speed-up {comparison.summary}" if repeated \
        else "one run each"
    return Result(name=name, ours_label="shoal's rule", ours_seconds=comparison.ours.median,
                  ours_spread=comparison.ours.spread if repeated else None,
                  baseline_label=f"torch's default ({CORES} threads)", baseline_seconds=comparison.baseline.median,
                  baseline_spread=comparison.baseline.spread if repeated else None,
                  target=target, passed=passed, notes=f"{speed_up}; {notes}")


def run() -> list[Result]:
    """Time the demo idle, and its ENSO training under 2 x cores busy loops, each with both thread settings."""
    with tempfile.TemporaryDirectory() as scratch:
        ours_loads: list[float] = []
        base_loads: list[float] = []
        idle = interleaved(_demo(Path(scratch), None, ours_loads), _demo(Path(scratch), CORES, base_loads),
                           repeats=DEMO_REPEATS)
        idle_notes = f"load average at the starts: ours {_loads(ours_loads)}; baseline {_loads(base_loads)}"
        home = next(Path(scratch).iterdir())  # a demo home: its ENSO features are built
        ours_loads, base_loads = [], []
        with competing_load(2 * CORES):
            loaded = interleaved(lambda: _shoal(home, *ENSO_STEP, threads=None, loads=ours_loads),
                                 lambda: _shoal(home, *ENSO_STEP, threads=CORES, loads=base_loads),
                                 repeats=STEP_REPEATS)
    loaded_notes = (f"{2 * CORES} busy loops; load average at the starts: ours {_loads(ours_loads)}; baseline "
                    f"{_loads(base_loads)}; `shoal {' '.join(ENSO_STEP)}`")
    return [
        _result(f"shoal demo, {CORES} cores, no added load", idle, target=f"ours <= {TARGET_S} s",
                passed=idle.ours.median <= TARGET_S, notes=idle_notes),
        _result(f"demo's ENSO training, {CORES} cores, {2 * CORES} busy loops", loaded, target=">= 1x",
                passed=loaded.ratio >= 1.0, notes=loaded_notes),
    ]

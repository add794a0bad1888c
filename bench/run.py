"""Run the benchmarks side by side with their baselines and rewrite BENCHMARKS.md.

Usage, from the repository root::

    python -m bench.run            # every bench/bench_*.py module
    python -m bench.run stats      # only bench/bench_stats.py; other sections are kept

Each benchmark module exposes `run() -> list[Result]` (or, for a measurement that is not a
timing, `report() -> (markdown, goal met)`) and a module docstring that says what is compared; the docstring becomes the text of its section. Sections live between
`<!-- bench:NAME -->` and `<!-- /bench:NAME -->` markers, so a partial run rewrites only
its own sections. README.md and docs/*.md show measured numbers only between `<!-- generated: bench NAME -->`
and `<!-- /generated -->`; every rewrite of BENCHMARKS.md regenerates those blocks from its
sections (`generated_readme`). The exit status is 1 when a result misses its target.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import inspect
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

BENCH_DIR = Path(__file__).resolve().parent
REPORT = BENCH_DIR.parent / "BENCHMARKS.md"
README = BENCH_DIR.parent / "README.md"
# The pages whose measured numbers are generated blocks: the README and every page of docs/.
DOCUMENTS = (README, *sorted((BENCH_DIR.parent / "docs").glob("*.md")))
_SECTION = re.compile(r"<!-- bench:(?P<name>[\w-]+) -->\n.*?<!-- /bench:(?P=name) -->\n", re.DOTALL)
# A README block made from one section; the markers stay, what lies between them is regenerated.
GENERATED = re.compile(r"(?P<open><!-- generated: bench (?P<name>[\w-]+) -->\n).*?(?P<close><!-- /generated -->)", re.DOTALL)
# The README shows a section's verdicts; the times and the notes stay in BENCHMARKS.md.
_HEADLINE_COLUMNS = ("benchmark", "baseline", "speed-up", "target", "passed")
# `Comparison.summary` inside a result's notes: a bare ratio would hide "no measurable difference".
_SUMMARY = re.compile(r"\d+\.\d+x \(\d+\.\d+\.\.\d+\.\d+x\): [a-z ]+[a-z]")

T = TypeVar("T")


@dataclass(frozen=True)
class Timing:
    """The wall times of repeated calls of one function.

    Attributes:
        seconds: one wall time per call, in call order.
    """

    seconds: tuple[float, ...]

    @property
    def median(self) -> float:
        """The median of the times."""
        return statistics.median(self.seconds)

    @property
    def spread(self) -> tuple[float, float]:
        """The fastest and the slowest time: (min, max)."""
        return min(self.seconds), max(self.seconds)


@dataclass(frozen=True)
class Comparison:
    """Ours against a baseline, timed in interleaved repeats (see `interleaved`).

    Attributes:
        ours: our times.
        baseline: the baseline's times.
    """

    ours: Timing
    baseline: Timing

    @property
    def ratio(self) -> float:
        """Speed-up of ours: baseline median / ours median (> 1: ours faster)."""
        return self.baseline.median / self.ours.median

    @property
    def ratio_spread(self) -> tuple[float, float]:
        """The ratios the spreads allow: (baseline min / ours max, baseline max / ours min)."""
        (ours_min, ours_max), (baseline_min, baseline_max) = self.ours.spread, self.baseline.spread
        return baseline_min / ours_max, baseline_max / ours_min

    @property
    def verdict(self) -> str:
        """The ratio spread above 1: "ours faster"; below 1: "ours slower"; holding 1: "no measurable difference"."""
        low, high = self.ratio_spread
        if low > 1.0:
            return "ours faster"
        if high < 1.0:
            return "ours slower"
        return "no measurable difference"

    @property
    def summary(self) -> str:
        """The speed-up, its spread and the verdict, e.g. "1.07x (0.950..1.200x): no measurable difference".

        The spread has three decimals: a bound of 0.999 must not read as 1.00.
        """
        low, high = self.ratio_spread
        return f"{self.ratio:.2f}x ({low:.3f}..{high:.3f}x): {self.verdict}"


def timed(function: Callable[[], object]) -> Callable[[], float]:
    """`function` as a call that runs it once and returns its wall time (for `interleaved`)."""

    def call() -> float:
        start = time.perf_counter()
        function()
        return time.perf_counter() - start

    return call


def interleaved(ours: Callable[[], float], baseline: Callable[[], float], *, repeats: int = 3) -> Comparison:
    """Call ours, baseline, ours, baseline, ... `repeats` times each, so drift hits both alike.

    Args:
        ours: runs our loop once and returns its seconds.
        baseline: runs the baseline once and returns its seconds.
        repeats: calls of each.

    Returns:
        Both series of times, in call order.
    """
    ours_seconds, baseline_seconds = [], []
    for _ in range(repeats):
        ours_seconds.append(ours())
        baseline_seconds.append(baseline())
    return Comparison(ours=Timing(tuple(ours_seconds)), baseline=Timing(tuple(baseline_seconds)))


@dataclass(frozen=True)
class Result:
    """One measurement: ours against a baseline, timed in the same run.

    Attributes:
        name: what was measured, e.g. "RunningStats 10M x 28 float32".
        ours_label: our implementation.
        ours_seconds: its best time, or its median when `ours_spread` is given.
        baseline_label: the baseline.
        baseline_seconds: its best time, or its median when `baseline_spread` is given.
        target: the goal in words, e.g. ">= 0.5x, max rel diff <= 1e-12".
        passed: whether the target was met.
        notes: further measurements (throughput, accuracy).
        ours_spread: (min, max) of our repeated times, when `ours_seconds` is their median.
        baseline_spread: the same for the baseline.
    """

    name: str
    ours_label: str
    ours_seconds: float
    baseline_label: str
    baseline_seconds: float
    target: str
    passed: bool
    notes: str = ""
    ours_spread: tuple[float, float] | None = None
    baseline_spread: tuple[float, float] | None = None

    @property
    def ratio(self) -> float:
        """Speed-up of ours over the baseline: baseline_seconds / ours_seconds (> 1: ours faster)."""
        return self.baseline_seconds / self.ours_seconds


def seconds(value: float, spread: tuple[float, float] | None = None) -> str:
    """A time for the table: "1.234", or "1.234 (1.200..1.300)" with its spread."""
    return f"{value:.3f}" if spread is None else f"{value:.3f} ({spread[0]:.3f}..{spread[1]:.3f})"


def best_of(function: Callable[[], T], *, repeats: int = 3) -> tuple[float, T]:
    """The best wall time of `repeats` calls (time.perf_counter) and the last call's value."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        value = function()
        best = min(best, time.perf_counter() - start)
    return best, value


def available() -> list[str]:
    """Names of the benchmark modules: bench/bench_NAME.py -> NAME."""
    return sorted(path.stem.removeprefix("bench_") for path in BENCH_DIR.glob("bench_*.py"))


def machine() -> str:
    """One Markdown line describing this machine and the numeric stack."""
    import numpy as np

    cpu = platform.processor() or platform.machine()
    ram = "?"
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        cpu = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE).group(1)  # type: ignore[union-attr]
        kib = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
        ram = f"{int(kib.group(1)) / 2**20:.1f} GiB" if kib else "?"
    except (OSError, AttributeError):
        pass  # not Linux: fall back to what platform knows
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{platform.platform()}; CPU {cpu}; {cores} cores; RAM {ram}; "
        f"Python {platform.python_version()}; numpy {np.__version__}"
    )


def section(name: str, doc: str, results: list[Result], *, when: str, command: str) -> str:
    """The Markdown section of one benchmark module, markers included."""
    lines = [
        f"<!-- bench:{name} -->",
        f"## {name}",
        "",
        inspect.cleandoc(doc),
        "",
        f"Measured {when} with `{command}`.",
        "",
        "| benchmark | ours | ours s | baseline | baseline s | speed-up | target | passed | notes |",
        "|---|---|--:|---|--:|--:|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.ours_label} | {seconds(r.ours_seconds, r.ours_spread)} | {r.baseline_label} | "
            f"{seconds(r.baseline_seconds, r.baseline_spread)} | {r.ratio:.2f}x | {r.target} | {'yes' if r.passed else 'NO'} | {r.notes} |"
        )
    lines.append(f"<!-- /bench:{name} -->")
    return "\n".join(lines) + "\n"


def report_section(name: str, doc: str, body: str, *, when: str, command: str) -> str:
    """The Markdown section of a benchmark module that reports its own table (`report()`)."""
    lines = [f"<!-- bench:{name} -->", f"## {name}", "", inspect.cleandoc(doc), "",
             f"Measured {when} with `{command}`.", "", body.rstrip(), f"<!-- /bench:{name} -->"]
    return "\n".join(lines) + "\n"


def sections(report: str) -> dict[str, str]:
    """The sections of a BENCHMARKS.md text by benchmark name, markers included."""
    return {m.group("name"): m.group(0) for m in _SECTION.finditer(report)}


def headline(name: str, section: str) -> str:
    """What README.md shows of one BENCHMARKS.md section: when it was measured and its results table.

    The table keeps the columns of `_HEADLINE_COLUMNS`; a speed-up is shown with its spread and
    verdict when the result's notes hold them (interleaved repeats).

    Args:
        name: the benchmark.
        section: its section of BENCHMARKS.md, as `section` writes it.

    Returns:
        Markdown: a "Measured ..." line, then the table.

    Raises:
        ValueError: the section has no results table (a `report()` benchmark such as `enso_skill`).
    """
    when = re.search(r"^Measured (.+?) with ", section, re.MULTILINE).group(1)  # type: ignore[union-attr]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("| ")]
    if not rows or not set(_HEADLINE_COLUMNS) <= set(rows[0]):
        raise ValueError(f"BENCHMARKS.md section {name!r} has no results table to show in README.md")
    header, *results = rows
    lines = [f"Measured {when} (BENCHMARKS.md, `{name}`):", "",
             f"| {' | '.join(_HEADLINE_COLUMNS)} |", "|---" * len(_HEADLINE_COLUMNS) + "|"]
    for row in results:
        cells = dict(zip(header, row, strict=True))
        summary = _SUMMARY.search(cells["notes"])
        cells["speed-up"] = summary.group(0) if summary else cells["speed-up"]
        lines.append(f"| {' | '.join(cells[column] for column in _HEADLINE_COLUMNS)} |")
    return "\n".join(lines) + "\n\n"


def generated_readme(readme: str, report: str) -> str:
    """`readme` with every generated block rewritten from the `report` (BENCHMARKS.md) section it names.

    Raises:
        KeyError: a block names a benchmark that has no section in `report`.
    """
    by_name = sections(report)
    return GENERATED.sub(lambda m: m["open"] + headline(m["name"], by_name[m["name"]]) + m["close"], readme)


def write_report(new_sections: dict[str, str], *, when: str, command: str) -> None:
    """Rewrite BENCHMARKS.md (a fresh header, new sections, the old ones not rerun), then the pages' generated blocks."""
    by_name = sections(REPORT.read_text() if REPORT.exists() else "")
    by_name.update(new_sections)
    order = [n for n in available() if n in by_name] + sorted(set(by_name) - set(available()))
    header = (
        "# Benchmarks\n\n"
        "Each benchmark runs ours and its baseline in the same process, one after the other; "
        "times are the best of several runs, or, where a spread (min..max) follows, the median of "
        "interleaved repeats (ours, baseline, ours, baseline, ...). "
        "Speed-up = baseline seconds / ours seconds.\n\n"
        f"Machine: {machine()}.\n\n"
        f"Last run {when}: `{command}`.\n"
    )
    report = header + "".join("\n" + by_name[n] for n in order)
    REPORT.write_text(report)
    for page in DOCUMENTS:
        page.write_text(generated_readme(page.read_text(), report))


def main(argv: list[str]) -> int:
    """Run the named benchmarks (all by default); print a table; rewrite BENCHMARKS.md."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all): {', '.join(available())}")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(available()))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(available())}")
    names = args.names or available()
    command = " ".join(["python -m bench.run", *argv])
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections: dict[str, str] = {}
    failed = 0
    print(f"{'benchmark':<34} {'ours s':>9} {'baseline s':>11} {'speed-up':>9}  passed")
    for name in names:
        module = importlib.import_module(f"bench.bench_{name}")
        if hasattr(module, "report"):  # a measurement that is not a timing (e.g. skill): its own table
            body, passed = module.report()
            print(f"{name}: {'goal met' if passed else 'goal NOT met'}\n{body}")
            failed += not passed
            sections[name] = report_section(name, module.__doc__ or "", body, when=when, command=command)
            continue
        results = module.run()
        for r in results:
            print(f"{r.name:<34} {seconds(r.ours_seconds, r.ours_spread):>9} "
                  f"{seconds(r.baseline_seconds, r.baseline_spread):>11} {r.ratio:>8.2f}x  "
                  f"{'yes' if r.passed else 'NO'}  {r.notes}")
            failed += not r.passed
        sections[name] = section(name, module.__doc__ or "", results, when=when, command=command)
    write_report(sections, when=when, command=command)
    print(f"wrote {REPORT}")
    return 1 if failed else 0


if __name__ == "__main__":
    # Re-import under the package name so bench modules share this Result class.
    from bench.run import main as _main

    raise SystemExit(_main(sys.argv[1:]))

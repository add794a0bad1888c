"""The documentation cannot go stale: every fenced block of README.md and docs/*.md is run or checked as
written — Python against homes the pipelines built, `shoal` command lines through the real CLI parser, synopses
against each command's options, config files through the config loader — and the measured numbers in them are only
those `bench/run.py` generates from BENCHMARKS.md."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.run import DOCUMENTS, GENERATED, REPORT, generated_readme

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
HIGGS = ROOT / "tests" / "data" / "higgs" / "higgs_real_test.csv"
_TIME = r"(?:µs|ms|s|min|minutes?|h|hours?)\b"
# How a measured number reads in prose. Typed, it drifts from BENCHMARKS.md: it belongs in a
# generated block. Facts of formats and settings (360 x 180, 16 kHz, default 2 s) do not match.
MEASURED = {
    "throughput": r"\d[\d,.]*\s?(?:[kMG] )?(?:[a-z]+|[KMG]i?B|GFLOP)/s\b",
    "speed ratio": r"\b\d+(?:\.\d+)?x\b|\d+(?:\.\d+)? times (?:faster|slower)",
    "skill": r"(?:accuracy|AUC|correlation|RMSE|loss|scores?)\b.{0,20}?\d\.\d{2,}"
             r"|\d\.\d{2,} (?:\w+ )?(?:accuracy|AUC|correlation|RMSE|loss)\b"
             r"|\d+(?:\.\d+)? ?%(?: \w+)? (?:accuracy|AUC)",
    "timing": rf"(?i:~|about |took |takes |costs? |in )\d[\d,.]*(?:-\d[\d,.]*)? ?{_TIME}"
              rf"|\d[\d,.]*(?:-\d[\d,.]*)? ?(?:µs|ms)\b"
              rf"|\d[\d,.]* ?{_TIME} (?:against|instead of|vs|over|per|to start|on \d+ cores)",
    "relative change": r"[+-]\d+(?:\.\d+)? ?%|\d+(?:\.\d+)? ?% (?:faster|slower|smaller|larger|more|less)",
    "peak memory": r"RSS\b.{0,25}?\d[\d,.]* ?[KMG]i?B|\d[\d,.]* ?[KMG]i?B (?:RSS|instead of|against)",
}
# Numbers that read like measurements but are not ours, with the reason each may stay.
ALLOWED = {
    "whose published result is 87.7 % validation accuracy": "the Speech analysis' published result, labelled so",
    "The paper reports 78.25 % test accuracy for TabNet-S and 78.84 % for TabNet-M": "TabNet's published numbers, labelled so",
    "TabNet comes within 0.01 AUC of gradient boosting": "the learnability test's threshold, not a measurement",
}


@dataclass(frozen=True)
class Block:
    """A fenced block of a page and the test marker on the line before it (`<!-- test: KIND ... -->`)."""

    page: str
    line: int
    language: str
    marker: str
    text: str

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


FENCE = re.compile(r"^(?P<indent> *)```(?P<language>\w*)\n(?P<text>.*?)^(?P=indent)```", re.DOTALL | re.MULTILINE)
MARKER = re.compile(r"<!-- test: (?P<marker>[^>]*?) -->\s*$")
KINDS = ("python", "commands", "synopsis", "run", "config", "layout")  # layout: tests/test_layout.py


def _blocks() -> Iterator[Block]:
    for path in DOCUMENTS:
        text = path.read_text()
        for fence in FENCE.finditer(text):
            before = text[:fence.start()].rstrip("\n").rsplit("\n", 1)[-1]
            marker = MARKER.search(before)
            yield Block(str(path.relative_to(ROOT)), text.count("\n", 0, fence.start()) + 1, fence["language"],
                        marker["marker"] if marker else "", "\n".join(
                            line[len(fence["indent"]):] for line in fence["text"].splitlines()))


BLOCKS = list(_blocks())


def _kind(block: Block) -> str:
    return block.marker.split()[0] if block.marker else ""


def _of(kind: str) -> list[Block]:
    return [pytest.param(block, id=str(block)) for block in BLOCKS if _kind(block) == kind]


def test_every_fenced_block_says_how_it_is_tested() -> None:
    untested = [f"{block} ({block.language or 'no language'})" for block in BLOCKS if _kind(block) not in KINDS]
    assert not untested, f"blocks without a `<!-- test: {'|'.join(KINDS)} -->` marker on the line before: {untested}"


def test_every_page_of_docs_is_linked_from_the_readme() -> None:
    linked = set(re.findall(r"\(docs/([\w-]+\.md)\)", README.read_text()))
    assert linked == {path.name for path in (ROOT / "docs").glob("*.md")}


def test_no_page_points_outside_the_repository() -> None:
    for path in DOCUMENTS:
        for name in ("SOURCES.md", "DESIGN.md", "../shared"):
            assert name not in path.read_text(), f"{path.name} names {name}, which is not in the repository"


def _shoal_lines(text: str) -> Iterator[list[str]]:
    """Each `shoal ...` command of a shell block as argv (after `shoal`; `&&` chains split, comments dropped)."""
    for line in text.splitlines():
        for command in line.split("#", 1)[0].split("&&"):
            words = shlex.split(command)
            if "-m" in words and "shoal" in words:  # torchrun ... -m shoal ARGS
                words = words[words.index("-m") + 1:]
            if words[:1] == ["shoal"]:
                yield words[1:]


def _parses(argv: list[str]) -> None:
    """The real CLI accepts the command and every option name of `argv` (`--help` stops it before running)."""
    from typer.testing import CliRunner

    from shoal.cli import app
    from shoal.cli.root import globals_first

    result = CliRunner().invoke(app, [*globals_first(argv), "--help"])
    assert result.exit_code == 0, f"shoal {shlex.join(argv)}: {result.output}"


def _prefect_parses(argv: list[str]) -> None:
    """Prefect's own CLI accepts the command and its option names (`--help` stops it before it runs)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "prefect", *argv, "--help"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, f"prefect {shlex.join(argv)}: {done.stdout}{done.stderr}"


@pytest.mark.parametrize("block", _of("commands"))
def test_the_shell_commands_parse_as_written(block: Block) -> None:
    makefile = (ROOT / "Makefile").read_text()
    for line in block.text.splitlines():
        if line.startswith("make "):
            assert re.search(rf"^{line.split()[1]}:", makefile, re.MULTILINE), f"{block}: no make target in {line!r}"
    prefect = [shlex.split(line.split("#", 1)[0]) for line in block.text.splitlines() if line.startswith("prefect ")]
    for argv in prefect:
        _prefect_parses(argv[1:])
    commands = list(_shoal_lines(block.text))
    for argv in commands:
        _parses(argv)
    assert commands or prefect or "make " in block.text, f"{block}: no shoal, prefect or make command to check"


GLOBAL_OPTIONS = re.compile(r"\[--home H\] |\[--threads N\] |\[--debug\] |\[--quiet\] ")


def _synopsis_commands(text: str) -> Iterator[str]:
    """Each command of a synopsis with its options: `shoal ...` lines, `  sub ...` lines under a `shoal [...]
    COMMAND` heading, and their `[--option]` continuation lines; descriptions (after two spaces or `#`) dropped."""
    command = ""
    for line in text.splitlines():
        words = re.split(r" {2,}|#", line.strip())[0]
        if line.startswith("shoal "):
            tail = ""
        elif re.match(r"  [a-z]", line) and text.startswith("shoal ["):
            tail, words = "", f"shoal {words}"
        elif line.strip().startswith("[") and command:
            tail, words = command, words
        else:
            continue
        if tail:
            command = f"{tail} {words}"
        else:
            if command:
                yield command
            command = GLOBAL_OPTIONS.sub("", words)
    if command:
        yield command


def _synopsis_paths(words: list[str]) -> list[list[str]]:
    """The command paths a synopsis names: `fetch sst|speech|higgs`, `train TASK` (every task)."""
    from shoal.contract import tasks
    from shoal.sources import sources

    placeholders = {"TASK": sorted(tasks()), "SOURCE": sorted(sources())}
    paths: list[list[str]] = [[]]
    for word in words:
        parts = word.split("|")
        if word.startswith(("-", "[")) or any(p.isupper() and p not in placeholders for p in parts):
            break
        choices = [c for part in parts for c in placeholders.get(part, [part]) if c != "all"]
        paths = [[*path, choice] for path in paths for choice in choices]
    return paths


@pytest.mark.parametrize("block", _of("synopsis"))
def test_the_synopses_name_real_commands_and_options(block: Block) -> None:
    from typer.testing import CliRunner

    from shoal.cli import app

    commands = list(_synopsis_commands(block.text))
    assert commands, f"{block}: no shoal command in the synopsis"
    for command in commands:
        for path in _synopsis_paths(command.split()[1:]):
            shown = CliRunner().invoke(app, [*path, "--help"], terminal_width=200)
            assert shown.exit_code == 0, f"{block}: shoal {' '.join(path)}: {shown.output}"
            for option in re.findall(r"--[a-z][a-z0-9-]*", command):
                assert option in shown.output, f"{block}: `shoal {' '.join(path)}` has no option {option}"


@pytest.mark.parametrize("block", _of("config"))
def test_the_config_files_load(block: Block, tmp_path: Path) -> None:
    from shoal.config import load_config

    (tmp_path / "shoal.toml").write_text(block.text)
    load_config(tmp_path / "shoal.toml")


@pytest.fixture(scope="module")
def built(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A home where `pipeline(task_name="enso")` ingested, built features, trained and predicted, and HIGGS's
    real test rows were ingested and got features."""
    from typer.testing import CliRunner

    from shoal.catalog import Catalog
    from shoal.cli import app
    from shoal.datasets.cobe_sst_sample import write_sample
    from shoal.flows.pipelines import pipeline
    from tests.test_flows import QUICK

    root = tmp_path_factory.mktemp("docs")
    write_sample(root / "sst", start="1985-01", end="1990-06")
    pipeline(task_name="enso", paths=[root / "sst"], home=str(root / "home"), settings=QUICK)
    for args in (["ingest", "higgs", str(HIGGS)], ["features", "higgs"]):
        done = CliRunner().invoke(app, ["--home", str(root / "home"), "--quiet", *args])
        assert done.exit_code == 0, done.output
    return Catalog(root / "home").home


def _on(home: str, text: str) -> str:
    return text.replace(".demo-home", home).replace("<home>", home)


@pytest.mark.parametrize("block", _of("run"))
def test_the_commands_to_try_run_on_a_built_home(block: Block, built: str) -> None:
    from typer.testing import CliRunner

    from shoal.cli import app
    from shoal.cli.root import globals_first

    for argv in _shoal_lines(_on(built, block.text)):
        result = CliRunner().invoke(app, globals_first(argv))
        assert result.exit_code == 0, f"{block}: shoal {shlex.join(argv)}: {result.output}"


def _duckdb_offline() -> None:
    """The test extra installs DuckDB's delta extension as a wheel (duckdb-ext-delta): no download."""
    import importlib.util

    import duckdb

    (folder,) = importlib.util.find_spec("duckdb_ext").submodule_search_locations
    duckdb.sql(f"SET extension_directory = '{Path(folder, 'extensions')}'")


@pytest.mark.parametrize("block", _of("python"))
def test_the_python_snippets_run_as_written(block: Block, built: str) -> None:
    if "duckdb" in block.text:
        _duckdb_offline()
    namespace: dict = {}
    exec(compile(_on(built, block.text), str(block), "exec"), namespace)  # noqa: S102


def test_the_duckdb_recipe_reads_the_table_as_polars_does(built: str) -> None:
    import polars as pl

    (block,) = [block for block in BLOCKS if _kind(block) == "python" and "duckdb" in block.text]
    _duckdb_offline()
    namespace: dict = {}
    exec(compile(_on(built, block.text), str(block), "exec"), namespace)  # noqa: S102
    expected = pl.read_delta(f"{built}/tables/nino34").group_by("phase").len().rows()
    assert sorted(namespace["counts"], key=str) == sorted(expected, key=str) and sum(n for _, n in expected) > 2000


def _measured(text: str) -> list[str]:
    """Every phrase of `text` that reads as a measured number, whitespace collapsed (a phrase may wrap)."""
    text = " ".join(text.split())
    return [m.group(0) for pattern in MEASURED.values() for m in re.finditer(pattern, text)]


def test_the_generated_blocks_are_what_bench_run_makes_of_benchmarks_md() -> None:
    pages = {path.name: path.read_text() for path in DOCUMENTS}
    opened = {name: len(re.findall(r"^<!-- generated: bench ", text, re.MULTILINE)) for name, text in pages.items()}
    assert sum(opened.values()), "no generated block in any page"
    for name, text in pages.items():
        assert len(GENERATED.findall(text)) == opened[name], f"{name}: a generated block without its end marker"
        assert generated_readme(text, REPORT.read_text()) == text, (
            f"a generated block of {name} was edited by hand or is stale: bench/run.py's generated_readme writes them")


def test_the_pages_type_no_measured_number() -> None:
    prose = " ".join(" ".join(GENERATED.sub("", path.read_text()).split()) for path in DOCUMENTS)
    for phrase in ALLOWED:
        assert phrase in prose, f"allowed phrase no longer in README.md or docs/, drop it from ALLOWED: {phrase!r}"
        prose = prose.replace(phrase, "")
    assert _measured(prose) == [], "measured numbers belong in BENCHMARKS.md and a generated block"


@pytest.mark.parametrize("typed", [
    "TabNet reaches 0.83 AUC", "runs at 30,127 rows/s", "ours 33.4 M rows/s", "~15x slower than cfgrib",
    "took 3.8 s against\n4.1 s", "a step takes ~31 s", "correlation 0.971 vs 0.956", "87.7 % validation accuracy",
    "+72% over the plain ingest", "~15% faster", "Peak RSS is flat: ~485 MB", "in 0.95 s", "370-550 µs a file",
    "11 minutes on 2 cores", "About 3 minutes in all",
])
def test_a_typed_measurement_is_caught(typed: str) -> None:
    assert _measured(typed)


@pytest.mark.parametrize("fact", [
    "a regular 1° 360 x 180 grid", "stored as 16 kHz mono int16", "11,000,000 rows", "(default 2 s; the published clips last 1 s)",
    "conv 5x5 pad 2", "1 s, 2 s, 4 s", "253 KB each: 400 MB for the whole series", "a 5 MB gzip of 1 GB of zeros",
    "10 s to answer", "< 10 % valid", "a UCI line is ~700 bytes", "jittered by 0.1 x the column's std", "(`0.753 [0.733, 0.773]`)",
])
def test_a_fact_of_a_format_or_setting_is_not(fact: str) -> None:
    assert _measured(fact) == []

"""What people read: `catalog describe` and `catalog lineage --all-sources` summaries, the progress of flows run
from the command line (training batches and validation on the CLI's bar, Prefect's log lines above it)."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from shoal.catalog import Catalog
from shoal.datasets import cobe_sst
from shoal.datasets.cobe_sst_sample import write_sample
from shoal.errors import CatalogError

COBE = Path(__file__).parent / "data" / "cobe_sst"


def shoal(home: Path, *args: str) -> str:
    """`shoal --home HOME ARGS` in this process; its stdout (exit 0 asserted)."""
    from shoal.cli import app

    result = CliRunner().invoke(app, ["--home", str(home), *args])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def sst(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """sst in three commits: eight sample months of 1990 (version 0), the three good 1982 files (1), a revised
    1982-02 (2)."""
    root = tmp_path_factory.mktemp("sst")
    long_folder = root / "a folder whose name makes the summary line of its files longer than 160 columns"
    sample = Path(write_sample(long_folder / "sample", start="1990-01", end="1990-08")[0]).parent
    catalog = Catalog(root / "home")
    for paths in ([sample], [COBE / "good"], [COBE / "revised" / "sst198202.grb"]):
        assert cobe_sst.ingest(catalog, paths).exit_code == 0
    return SimpleNamespace(home=root / "home", sample=sample, catalog=catalog)


# -- catalog describe ----------------------------------------------------------------------------


def test_describe_prints_no_python_reprs_and_nests_mappings_as_lines(sst: SimpleNamespace) -> None:
    text = shoal(sst.home, "catalog", "describe", "sst")
    for repr_mark in ("()", "None", "{", "}", "'", "[]"):
        assert repr_mark not in text, (repr_mark, text)
    assert "  sst: float32 (time, lat, lon)" in text.splitlines()
    assert "    replaced:" in text.splitlines() and "      1982-02:" in text.splitlines()  # a mapping: indented lines


def test_describe_summarizes_many_source_files_and_leaves_their_sha256_to_json(sst: SimpleNamespace) -> None:
    text = shoal(sst.home, "catalog", "describe", "sst", "--version", "0")
    assert f"source files: 8 (sst199001.grb .. sst199008.grb) in {sst.sample}" in text
    assert "months: 1990-01, 1990-02" not in text and "months: 8 values, 1990-01 .. 1990-08" in text
    facts = json.loads(shoal(sst.home, "catalog", "describe", "sst", "--version", "0", "--json"))
    assert len(facts["lineage"]["sources"]) == 8
    assert not any(source["sha256"] in text for source in facts["lineage"]["sources"])


def test_describe_cuts_no_line_at_the_console_width(sst: SimpleNamespace) -> None:
    text = shoal(sst.home, "catalog", "describe", "sst", "--version", "0")  # not a terminal: 160 columns
    line = next(line for line in text.splitlines() if line.startswith("  source files:"))
    assert len(line) > 160 and line.endswith("lists each with its sha256"), text


# -- catalog lineage --all-sources ---------------------------------------------------------------


def test_all_sources_of_a_version_are_the_files_of_every_commit_up_to_it_newest_per_month(sst: SimpleNamespace) -> None:
    node = json.loads(shoal(sst.home, "catalog", "lineage", "sst", "--version", "2", "--all-sources", "--json"))
    held = {Path(source["path"]).name: source["path"] for source in node["held_sources"]}
    assert sorted(held) == [f"sst1982{m:02}.grb" for m in (1, 2, 3)] + [f"sst1990{m:02}.grb" for m in range(1, 9)]
    assert held["sst198202.grb"] == str((COBE / "revised" / "sst198202.grb").resolve())  # the newest file of 1982-02
    assert len(node["lineage"]["sources"]) == 1  # its own commit read one file
    before = json.loads(shoal(sst.home, "catalog", "lineage", "sst", "--version", "1", "--all-sources", "--json"))
    assert {Path(s["path"]).parent.name for s in before["held_sources"] if "1982" in s["path"]} == {"good"}
    assert "held_sources" not in json.loads(shoal(sst.home, "catalog", "lineage", "sst", "--version", "2", "--json"))


def test_all_sources_are_summarized_for_people(sst: SimpleNamespace) -> None:
    text = " ".join(shoal(sst.home, "catalog", "lineage", "sst", "--all-sources").split())
    assert "source files held: 11 (sst198201.grb .. sst199008.grb) in 3 folders" in text
    assert "--all-sources --json` lists each with its sha256" in text


# -- flows run by a command: its bar, Prefect's lines, each line once -----------------------------


class Recorder:
    """A reporter that keeps what it is told, as (method, arguments)."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def start(self, description: str, total: int | None) -> None:
        self.events.append(("start", description, total))

    def advance(self, steps: int = 1, status: str = "") -> None:
        self.events.append(("advance", steps, status))

    def finish(self, message: str) -> None:
        self.events.append(("finish", message))


def _terminal() -> tuple[object, io.StringIO]:
    from rich.console import Console

    screen = io.StringIO()
    return Console(file=screen, force_terminal=True, width=100, color_system=None), screen


def _shown(raw: str) -> list[str]:
    """The lines a terminal shows for `raw`: a carriage return goes back to the line's start, ESC[2K erases it."""
    shown = []
    for line in re.sub(r"\x1b\[\?25[lh]", "", raw).split("\n"):
        last = re.split(r"\r|\x1b\[2K|\x1b\[1A", line)[-1]
        shown.append(re.sub(r"\x1b\[[0-9;]*m", "", last))
    return shown


@pytest.fixture(scope="module")
def higgs_features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shoal.contract import get_task
    from shoal.datasets import higgs

    catalog = Catalog(tmp_path_factory.mktemp("higgs") / "home")
    assert higgs.ingest(catalog, [Path(__file__).parent / "data" / "higgs" / "higgs_real_test.csv"]).exit_code == 0
    task = get_task("higgs")
    task.build_features(catalog, task.parse({}), Recorder())
    return catalog.home


TRAIN = {"epochs": 2, "batch_size": 64, "device": "cpu", "patience": 5}


def test_a_flow_run_by_a_command_moves_its_bar_through_each_batch_and_the_validation_phase(
        prefect_harness: None, higgs_features: Path) -> None:
    from shoal.flows.pipelines import train
    from shoal.flows.terminal import on_terminal

    bar, (console, screen) = Recorder(), _terminal()
    with on_terminal(bar, console):
        train(task_name="higgs", home=str(higgs_features), settings=TRAIN, retrain=True)
    starts = [event for event in bar.events if event[0] == "start"]
    assert starts == [("start", "epoch 1/2", 3), ("start", "epoch 2/2", 3)]
    first = bar.events[bar.events.index(starts[0]):bar.events.index(starts[1])]
    assert [e[0] for e in first] == ["start", "advance", "advance", "advance", "advance", "finish"]
    assert first[-2] == ("advance", 0, "validating") and first[-1][1].startswith("epoch 1/2: train loss")
    assert "Finished in state Completed" in screen.getvalue()  # Prefect's lines: through the bar's console
    assert "epoch 1/2: train loss" not in screen.getvalue()  # the run log's copy: for the API only
    assert "model higgs_tabnet version" not in screen.getvalue()  # the command prints it


def test_without_a_live_bar_the_flow_logs_one_line_per_epoch_as_before(
        prefect_harness: None, higgs_features: Path, caplog: pytest.LogCaptureFixture) -> None:
    from shoal.flows.pipelines import train
    from shoal.flows.terminal import on_terminal

    bar = Recorder()
    with on_terminal(bar, None), caplog.at_level("INFO"):
        train(task_name="higgs", home=str(higgs_features), settings=TRAIN, retrain=True)
    assert bar.events == []
    assert sum(record.getMessage().startswith("epoch 1/2: train loss") for record in caplog.records) == 1


def test_prefect_lines_print_above_a_live_bar_never_on_its_line_and_those_the_command_prints_not_at_all() -> None:
    from prefect.logging.handlers import PrefectConsoleHandler

    from shoal.flows.ingest import SHOWN
    from shoal.flows.terminal import _console_handlers, on_terminal
    from shoal.progress import RichReporter

    console, screen = _terminal()
    logger = logging.getLogger("prefect.shoal_test")
    assert _console_handlers(), "Prefect's console handler is configured on import"
    with RichReporter(console, terminal=True) as bar, on_terminal(bar, bar.live_console):
        bar.start("epoch 1/3", total=10)
        bar.advance(4)
        logger.warning("a line of the flow's log")
        logger.warning("a line the command prints itself", extra=SHOWN)
        try:
            raise CatalogError("a one-line error the command prints")
        except CatalogError:
            logger.exception("Task run failed with exception")  # as Prefect logs a task's error
        bar.advance(6, status="validating")
        bar.finish("epoch 1/3: train loss 0.5")
    lines = _shown(screen.getvalue())
    (logged,) = [line for line in lines if "a line of the flow's log" in line]
    assert "━" not in logged and "epoch 1/3" not in logged
    assert "a line the command prints itself" not in screen.getvalue()
    assert "Traceback" not in screen.getvalue() and "a one-line error" not in screen.getvalue()
    assert "epoch 1/3: train loss 0.5" in lines
    assert all(isinstance(h, PrefectConsoleHandler) and not h.filters and "AboveBar" not in type(h.console.file).__name__
               for h in _console_handlers())  # as they were

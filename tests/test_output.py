"""What people read: `catalog describe` and `catalog lineage --all-sources` summaries, the progress of flows run
from the command line (training batches and validation on the CLI's bar, Prefect's log lines above it)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from shoal.catalog import Catalog
from shoal.datasets import cobe_sst
from shoal.datasets.cobe_sst_sample import write_sample

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

"""Prefect flows run for real under one session-scoped ephemeral server."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from shoal.catalog import Catalog
from shoal.datasets.oni import SAMPLE

pytestmark = pytest.mark.usefixtures("prefect_harness")
NINO = Path(__file__).parent / "data" / "nino"


def test_ingest_oni_flow_commits_the_table_and_reingest_is_a_no_op(home: Path) -> None:
    from shoal.flows import ingest_oni

    first = ingest_oni(path=SAMPLE, home=str(home))
    assert first.committed and first.version == 0
    second = ingest_oni(path=SAMPLE, home=str(home))
    assert second.unchanged and second.version == 0
    assert Catalog(home).read_table("nino34").num_rows == 2004


def test_ingest_oni_flow_fails_on_bad_input_and_commits_nothing(home: Path) -> None:
    from shoal.flows import ingest_oni
    from shoal.flows.ingest import IngestFailed

    with pytest.raises(IngestFailed, match=r"bad_non_numeric\.txt:\d+"):
        ingest_oni(path=NINO / "bad_non_numeric.txt", home=str(home))
    assert not Catalog(home).exists("nino34")


def test_flow_parameters_are_validated_at_the_boundary(home: Path) -> None:
    from prefect.exceptions import ParameterTypeError

    from shoal.flows import ingest_oni

    with pytest.raises(ParameterTypeError, match="path"):
        ingest_oni(path=home / "does-not-exist.txt", home=str(home))


def test_demo_ingests_through_the_flow_and_reads_back_without_shoal(home: Path) -> None:
    from shoal.cli import app

    result = CliRunner().invoke(app, ["--home", str(home), "demo"])
    assert result.exit_code == 0, result.output
    assert "nino34" in result.output and "sha256" in result.output
    assert "pl.read_delta" in result.output and "2020-08-01" in result.output

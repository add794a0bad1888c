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


def test_ingest_sst_flow_commits_good_files_and_fails_naming_the_bad_ones(home: Path) -> None:
    from shoal.flows import ingest_sst
    from shoal.flows.ingest import IngestFailed

    sst = Path(__file__).parent / "data" / "cobe_sst"
    with pytest.raises(IngestFailed, match=r"sst199002\.grb:1: unreadable GRIB message"):
        ingest_sst(paths=[sst / "good", sst / "bad" / "sst199002.grb"], home=str(home))
    assert Catalog(home).open_array("sst").sizes["time"] == 3


def test_enso_pipeline_runs_every_step_and_a_rerun_reuses_the_features(home: Path, tmp_path: Path) -> None:
    from shoal.datasets.cobe_sst_sample import write_sample
    from shoal.flows import enso_pipeline
    from shoal.flows.enso import EnsoSettings

    samples = tmp_path / "sst"
    write_sample(samples, start="1987-01", end="1990-06")
    settings = EnsoSettings(coarsen=4, epochs=1, max_batches_per_epoch=2, device="cpu")
    first = enso_pipeline(sst_paths=[samples], home=str(home), settings=settings)
    assert first["model_version"] == 0 and first["predictions_version"] == 0 and Path(first["plot"]).exists()
    assert set(first["metrics"]) >= {"model", "persistence", "climatology"}
    second = enso_pipeline(sst_paths=[samples], home=str(home), settings=settings)
    assert second["feature_version"] == first["feature_version"] and second["model_version"] == 1
    catalog = Catalog(home)
    assert catalog.read_table("enso_predictions").num_rows == 2 * (6 + 1)


def test_enso_settings_are_validated_at_the_flow_boundary() -> None:
    from pydantic import ValidationError

    from shoal.flows.enso import EnsoSettings

    with pytest.raises(ValidationError, match="train_end"):
        EnsoSettings(train_end="1990-13")
    with pytest.raises(ValidationError, match="coarsen"):
        EnsoSettings(coarsen=0)


def test_shoal_run_enso_prints_the_metrics_beside_the_baselines(home: Path, tmp_path: Path) -> None:
    from shoal.cli import app
    from shoal.datasets.cobe_sst_sample import write_sample

    write_sample(tmp_path / "sst", start="1988-01", end="1990-04")
    result = CliRunner().invoke(app, ["--home", str(home), "run", "enso", str(tmp_path / "sst"), "--coarsen", "4",
                                      "--epochs", "1", "--max-batches", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for row in ("model", "persistence", "climatology", "RMSE °C", "enso_predictions version 0"):
        assert row in result.output

"""Prefect flows run for real under one session-scoped ephemeral server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shoal.catalog import Catalog
from shoal.datasets.oni import SAMPLE
from tests.timeouts import scaled

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


DEMO_LINES = 160  # what the demo prints itself (Prefect's run logs aside): a summary, not a line per input file


def test_demo_ingests_through_the_flow_reads_back_without_shoal_and_ends_with_next_steps(home: Path) -> None:
    from shoal.cli import app

    result = CliRunner().invoke(app, ["--home", str(home), "demo"])
    assert result.exit_code == 0, result.output
    assert "nino34" in result.output and "sha256" in result.output
    assert "pl.read_delta" in result.output and "2020-08-01" in result.output
    for text in ("word accuracy on test (official split)", "mean_spectrum_logistic", "speech_predictions version 0",
                 "_confusion.png", "enso_predictions version 0", "HIGGS signal vs background on the test rows",
                 "hist_gradient_boosting", "higgs_predictions version 0: 200000 rows", "_masks.png"):
        assert text in result.output
    next_steps = result.output[result.output.index("next steps"):].splitlines()[1:]
    assert next_steps == [
        f"the demo's home: {home}; try, in the environment shoal is installed in:",
        f"  shoal catalog list --home {home}",
        f"  shoal catalog lineage enso_predictions --home {home}",
        f"  python -c 'import shoal; f = shoal.open_features(\"higgs\", home=\"{home}\"); "
        "print({name: a.shape for name, a in f.arrays(\"train\").items()})'",
        f"plots: {home}/reports/*.png",
    ]
    assert len(result.output.splitlines()) <= DEMO_LINES, result.output
    assert len(list((home / "reports").glob("*.png"))) >= 5  # hindcast, seasons, skill, confusion, masks


def test_ingest_sst_flow_commits_good_files_and_fails_naming_the_bad_ones(home: Path) -> None:
    from shoal.flows import ingest_sst
    from shoal.flows.ingest import IngestFailed

    sst = Path(__file__).parent / "data" / "cobe_sst"
    with pytest.raises(IngestFailed, match=r"sst199002\.grb:1: unreadable GRIB message"):
        ingest_sst(paths=[sst / "good", sst / "bad" / "sst199002.grb"], home=str(home))
    assert Catalog(home).open_array("sst").sizes["time"] == 3


QUICK = {"coarsen": 8, "epochs": 1, "max_batches": 2, "batch_size": 2, "device": "cpu", "leads": "1,3",
         "valid_start": "1989-01", "test_start": "1990-01"}


def _artifact(key: str) -> str:
    """The markdown of the newest artifact with this key, through the Prefect API."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def newest() -> str:
        async with get_client() as client:
            found = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
        return max(found, key=lambda artifact: artifact.created).data

    return asyncio.run(newest())


def test_the_pipeline_runs_every_step_and_a_rerun_with_nothing_new_does_no_work(home: Path, tmp_path: Path) -> None:
    from shoal.datasets.cobe_sst_sample import write_sample
    from shoal.flows.pipelines import pipeline

    samples = tmp_path / "sst"
    write_sample(samples, start="1985-01", end="1990-06")
    first = pipeline(task_name="enso", paths=[samples], home=str(home), settings=QUICK)
    assert first.trained.entry.version == 0 and not first.trained.reused and first.predicted.version == 0
    assert all(plot.exists() for plot in first.predicted.plots) and not first.failures
    assert {row["method"] for row in first.trained.entry.metrics["skill"]} == {"model", "persistence", "climatology", "linear"}
    published = _artifact("enso-pipeline")  # the run's artifact: skill beside the baselines, versions, plots
    assert "| persistence |" in published and "| climatology |" in published and "| model |" in published
    assert f"| features | {first.features.snapshot} | new |" in published
    assert "| model enso_convlstm | 0 | new" in published and "| enso_predictions | 0 | new |" in published
    assert all(f"`{plot}`" in published for plot in first.predicted.plots)
    second = pipeline(task_name="enso", paths=[samples], home=str(home), settings=QUICK)
    assert all(not report.committed for report in second.ingests)
    assert second.features.reused and second.features.snapshot == first.features.snapshot
    assert second.trained.reused and second.trained.entry.version == 0
    assert second.predicted.reused and second.predicted.version == 0 and second.predicted.plots == first.predicted.plots
    assert len(Catalog(home).history("enso_predictions")) == 1
    assert "| enso_predictions | 0 | unchanged |" in _artifact("enso-pipeline")
    _the_catalog_commands_cover_the_registered_model(home)


def _the_catalog_commands_cover_the_registered_model(home: Path) -> None:
    import json

    from shoal.cli import app

    def catalog(*args: str) -> object:
        result = CliRunner().invoke(app, ["--home", str(home), "catalog", *args, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    listed = {(entry["name"], entry["kind"]) for entry in catalog("list")}
    assert {("enso_convlstm", "model"), ("enso_features", "array"), ("enso_predictions", "table"),
            ("model_registry", "table"), ("sst", "array"), ("nino34", "table")} <= listed
    facts = catalog("describe", "enso_convlstm")
    assert facts["kind"] == "model" and facts["version"] == 0 and facts["feature"].startswith("enso_features (array)")
    assert {row["method"] for row in facts["metrics"]["skill"]} >= {"model", "persistence"}
    assert [entry["version"] for entry in catalog("history", "enso_convlstm")] == [0]


def test_flow_settings_are_validated_at_the_flow_boundary(home: Path) -> None:
    from shoal.flows.pipelines import build_features
    from shoal.contract import SettingsError

    with pytest.raises(SettingsError, match=r"--valid-start: expected YYYY-MM, got '1990-13'"):
        build_features(task_name="enso", home=str(home), settings={"valid_start": "1990-13"})
    with pytest.raises(SettingsError, match=r"--coarsen: input should be greater than or equal to 1"):
        build_features(task_name="enso", home=str(home), settings={"coarsen": 0})


def test_shoal_run_enso_prints_the_skill_by_lead_and_exits_1_when_some_sst_files_failed(home: Path, tmp_path: Path) -> None:
    from shoal.cli import app
    from shoal.datasets.cobe_sst_sample import write_sample

    write_sample(tmp_path / "sst", start="1985-01", end="1990-06")
    bad = tmp_path / "bad" / "sst199007.grb"  # an unreadable GRIB file for a month after the sample
    bad.parent.mkdir()
    bad.write_bytes((Path(__file__).parent / "data" / "cobe_sst" / "bad" / "sst199002.grb").read_bytes())
    args = ["--home", str(home), "run", "enso", str(tmp_path / "sst"), str(bad)]
    for key, value in QUICK.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "sst199007.grb:1: unreadable GRIB message" in result.output
    for text in ("lead", "persistence", "climatology", "linear", "RMSE °C", "test period from 1990-01",
                 "enso_predictions version 0"):
        assert text in result.output


def test_the_feature_task_does_not_retry_a_shoal_error(home: Path) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client

    from shoal.flows.pipelines import features_task

    @flow
    def build_once() -> dict[str, object]:  # in a dict: a returned failed state would fail the flow
        return {"state": features_task(task_name="enso", home=str(home), settings={}, return_state=True)}

    state = build_once()["state"]
    assert state.is_failed() and "need 'sst'" in str(state.message)

    async def run_count() -> int:
        async with get_client() as client:
            return (await client.read_task_run(state.state_details.task_run_id)).run_count

    import asyncio

    assert asyncio.run(run_count()) == 1  # a retry (retries=1) would make it 2


def test_shoal_run_speech_prints_test_accuracy_beside_the_baselines_and_exits_1_on_a_bad_clip(
        home: Path, tmp_path: Path) -> None:
    import shutil

    from shoal.cli import app
    from shoal.flows import ingest_speech
    from shoal.flows.ingest import IngestFailed

    clips = Path(shutil.copytree(Path(__file__).parent / "data" / "speech_commands" / "v0.01", tmp_path / "clips"))
    (clips / "yes" / "ffff0001_nohash_0.wav").write_bytes(b"")
    args = ["--home", str(home), "run", "speech", str(clips), "--epochs", "1", "--max-batches", "1", "--batch-size", "2",
            "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "ffff0001_nohash_0.wav: the file is empty" in result.output
    for text in ("word accuracy on test (official split)", "majority", "mean_spectrum_logistic",
                 "speech_predictions version 0: 9 rows", "_confusion.png"):
        assert text in result.output
    with pytest.raises(IngestFailed, match="a file outside a word folder"):  # not the dataset layout: nothing lands
        ingest_speech(paths=[clips / "yes"], home=str(home))


def test_shoal_run_all_runs_every_configured_pipeline_and_a_rerun_skips_every_stage(home: Path, tmp_path: Path) -> None:
    from shoal.cli import app
    from shoal.datasets.cobe_sst_sample import write_sample

    write_sample(tmp_path / "sst", start="1985-01", end="1990-06")
    enso = ", ".join(f"{key} = {value!r}" for key, value in QUICK.items()).replace("'", '"')
    config = tmp_path / "shoal.toml"
    config.write_text(f"""
[pipelines.higgs]
paths = ["{Path(__file__).parent / "data" / "higgs" / "higgs_real_test.csv"}"]
settings = {{ epochs = 1, batch_size = 64, device = "cpu" }}

[pipelines.enso]
paths = ["sst"]
settings = {{ {enso} }}
""")
    args = ["--home", str(home), "run", "all", "--config", str(config)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.output.index("pipeline higgs") < result.output.index("pipeline enso")
    for text in ("HIGGS signal vs background on the test rows", "ROC AUC", "hist_gradient_boosting",
                 "higgs_predictions version 0: 500 rows from model", "_masks.png", "enso_predictions version 0: "):
        assert text in result.output
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert again.output.count("(unchanged: reused)") == 2 and again.output.count("reused model") == 2
    assert "higgs_predictions version 0: 500 rows unchanged, already written by model" in again.output


def test_a_pipeline_killed_midway_leaves_its_last_commits_and_the_rerun_finishes_the_job(home: Path,
                                                                                          tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    from shoal.cli import app
    from shoal.datasets.cobe_sst_sample import write_sample

    write_sample(tmp_path / "sst", start="1985-01", end="1990-06")

    def args(epochs: int) -> list[str]:
        found = ["--home", str(home), "run", "enso", str(tmp_path / "sst")]
        for key, value in {**QUICK, "epochs": epochs}.items():
            found += [f"--{key.replace('_', '-')}", str(value)]
        return found

    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    killed = subprocess.Popen([sys.executable, "-m", "shoal", *args(50)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    catalog = Catalog(home)

    def features_committed() -> bool:
        return catalog.exists("enso_features") and bool(catalog.history("enso_features"))

    deadline = time.monotonic() + scaled(120)
    while not features_committed() and time.monotonic() < deadline and killed.poll() is None:
        time.sleep(0.2)
    killed.send_signal(signal.SIGKILL)  # in the middle of training, 50 epochs to go
    killed.wait(timeout=scaled(30))
    assert features_committed() and not catalog.exists("model_registry")
    assert [entry.version for entry in catalog.history("sst")] == [0]
    rerun = CliRunner().invoke(app, args(2))
    assert rerun.exit_code == 0, rerun.output
    assert "sst: version 0; 0 committed" in rerun.output and "(unchanged: reused)" in rerun.output
    assert catalog.exists("enso_predictions") and len(catalog.history("sst")) == 1


def test_shoal_run_all_goes_on_past_a_pipeline_that_cannot_run_and_exits_1(home: Path, tmp_path: Path) -> None:
    from shoal.cli import app

    (tmp_path / "empty").mkdir()
    config = tmp_path / "shoal.toml"
    config.write_text(f"""
[pipelines.enso]
paths = ["empty"]

[pipelines.higgs]
paths = ["{Path(__file__).parent / "data" / "higgs" / "higgs_real_test.csv"}"]
settings = {{ epochs = 1, batch_size = 64, device = "cpu" }}
""")
    result = CliRunner().invoke(app, ["--home", str(home), "run", "all", "--config", str(config)])
    assert result.exit_code == 1, result.output
    assert "error: enso: " in result.stderr and "no sstYYYYMM.grb file in this folder" in result.stderr
    assert "higgs_predictions version 0: 500 rows from model" in result.stdout
    assert "failed: enso; the other pipelines ran" in result.stdout

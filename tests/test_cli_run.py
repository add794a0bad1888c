"""`shoal run TASK` takes the options of the steps it runs: --json, --run-id, --restart, --retrain, --force,
--feature-version, --params, --nproc; an option it leaves is one line saying why.

On the HIGGS fixture (500 real rows), the fastest pipeline: one run as a subprocess (the entry
point a user runs: its stdout is the JSON alone), the others in-process under the session's
Prefect server, each on the home the one before it left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from tests.test_cli import _one_error_line, shoal
from tests.timeouts import scaled

HIGGS = Path(__file__).parent / "data" / "higgs" / "higgs_real_test.csv"
QUICK = ("--epochs", "1", "--batch-size", "64", "--device", "cpu")
KEYS = {"task", "ingests", "features", "model", "predictions", "failures"}


def _run(home: Path, *options: str) -> dict:
    """`shoal run higgs HIGGS QUICK OPTIONS --json` in this process; its JSON."""
    from shoal.cli import app

    result = CliRunner().invoke(app, ["--home", str(home), "run", "higgs", str(HIGGS), *QUICK, *options, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A home where `shoal run higgs ... --json --run-id first` ran as a subprocess."""
    root = tmp_path_factory.mktemp("run")
    env = {**os.environ, "PREFECT_HOME": str(root / "prefect"), "NO_COLOR": "1"}
    command = [sys.executable, "-m", "shoal", "--home", str(root / "home"), "run", "higgs", str(HIGGS), *QUICK,
               "--json", "--run-id", "first"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=scaled(240), check=False)
    assert result.returncode == 0, result.stderr
    return SimpleNamespace(home=root / "home", result=result)


def test_json_is_the_whole_stdout_with_ingests_features_model_and_predictions(first: SimpleNamespace) -> None:
    facts = json.loads(first.result.stdout)  # nothing but the JSON: Prefect's logs are on stderr
    assert set(facts) == KEYS and facts["task"] == "higgs" and facts["failures"] == []
    assert [(report["dataset"], report["version"], report["committed"]) for report in facts["ingests"]] == [
        ("higgs", 0, [str(HIGGS)])]
    assert facts["features"] == {"version": 0, "snapshot": "0", "reused": False}
    model = facts["model"]
    assert (model["model"], model["version"], model["run_id"], model["reused"]) == ("higgs_tabnet", 0, "first", False)
    assert model["feature_version"] == "0" and {row["method"] for row in model["metrics"]["skill"]} >= {"model"}
    assert facts["predictions"]["table"] == "higgs_predictions" and facts["predictions"]["rows"] == 500
    assert facts["predictions"]["version"] == 0 and not facts["predictions"]["reused"]


def test_run_id_names_the_registered_run(first: SimpleNamespace) -> None:
    from shoal.catalog import Catalog
    from shoal.models.registry import model_versions

    assert [(entry.version, entry.run_id) for entry in model_versions(Catalog(first.home))] == [(0, "first")]
    assert (first.home / "models" / "higgs_tabnet" / "runs" / "first").is_dir()


@pytest.mark.usefixtures("prefect_harness")
def test_force_restart_and_retrain_reach_predict_and_train(first: SimpleNamespace) -> None:
    again = _run(first.home, "--run-id", "first")
    assert again["model"]["reused"] and again["model"]["version"] == 0
    assert again["predictions"]["reused"] and again["predictions"]["version"] == 0
    forced = _run(first.home, "--run-id", "first", "--force")  # predict again: the same model, a new version
    assert forced["model"]["reused"] and forced["model"]["version"] == 0
    assert not forced["predictions"]["reused"] and forced["predictions"]["version"] == 1
    restarted = _run(first.home, "--run-id", "first", "--restart")  # from epoch 0, registered anew
    assert not restarted["model"]["reused"] and restarted["model"]["version"] == 1
    assert restarted["model"]["run_id"] == "first" and restarted["predictions"]["version"] == 2
    retrained = _run(first.home, "--retrain")  # the run id derived from the inputs and settings
    assert not retrained["model"]["reused"] and retrained["model"]["version"] == 2
    assert retrained["model"]["run_id"] != "first"


@pytest.mark.usefixtures("prefect_harness")
def test_feature_version_is_what_train_reads(first: SimpleNamespace) -> None:
    from shoal.cli import app
    from shoal.errors import CatalogError

    result = CliRunner().invoke(app, ["--home", str(first.home), "run", "higgs", str(HIGGS), *QUICK,
                                      "--feature-version", "7"])
    assert isinstance(result.exception, CatalogError)  # the pipeline's own version 0 was not used
    assert "has no version 7" in str(result.exception)
    used = _run(first.home, "--feature-version", "0", "--run-id", "on-0")
    assert used["model"]["feature_version"] == "0" and used["model"]["run_id"] == "on-0"


@pytest.mark.usefixtures("prefect_harness")
def test_run_all_json_is_one_object_by_pipeline(first: SimpleNamespace, tmp_path: Path) -> None:
    from shoal.cli import app

    config = tmp_path / "shoal.toml"
    config.write_text(f'[pipelines.higgs]\npaths = ["{HIGGS}"]\nsettings = {{ epochs = 1, batch_size = 64, '
                      f'device = "cpu" }}\n')
    result = CliRunner().invoke(app, ["--home", str(first.home), "run", "all", "--config", str(config), "--json",
                                      "--run-id", "first"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert list(facts) == ["higgs"] and set(facts["higgs"]) == KEYS and facts["higgs"]["model"]["run_id"] == "first"


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_nproc_trains_the_pipelines_model_on_that_many_processes(first: SimpleNamespace) -> None:
    trained = _run(first.home, "--nproc", "2", "--run-id", "two")
    assert trained["model"]["metrics"]["world_size"] == 2 and trained["model"]["run_id"] == "two"


@pytest.mark.parametrize(("options", "message"), [
    (("--nproc", "2", "--batch-size", "63"), "error: batch_size 63 does not split evenly across 2 processes"),
    (("--params", "best"), "error: no finished trial of 'higgs'"),
    (("--params", "worst"), "error: --params: expected 'best'"),
    (("--model-version", "1"), "error: --model-version: not an option of `shoal run higgs`: the pipeline predicts "
                               "with the model it has just trained; `shoal predict higgs --model-version V`"),
    (("--trials", "3"), "error: --trials: not an option of `shoal run higgs`; it takes "),
])
def test_a_step_option_run_cannot_honour_now_is_one_line_before_prefect_starts(tmp_path: Path, options: tuple[str, ...],
                                                                               message: str) -> None:
    result = shoal("run", "higgs", HIGGS, "--epochs", "1", *options, home=tmp_path / "home")
    assert result.returncode == 2 and _one_error_line(result).startswith(message)
    assert not (tmp_path / "home" / "tables" / "higgs").exists()  # nothing ingested


def test_run_takes_every_option_of_the_steps_it_runs_but_those_it_leaves() -> None:
    from shoal.cli.steps import _STEPS

    inherited = {option for step in ("features", "train", "evaluate", "predict") for option in _STEPS[step].options}
    assert set(_STEPS["run"].options) == inherited - {"model_version"} | {"config"}
    assert set(_STEPS["run"].leaves) == {"model_version"}


def test_a_step_option_that_run_neither_takes_nor_leaves_fails_at_registration() -> None:
    from shoal.cli.steps import _step

    def takes_force_only(task_name: str, given: dict, *, force: bool) -> None: ...

    with pytest.raises(TypeError, match=r"takes the options \['force', 'model_version'\].*takes \['force'\]"):
        _step("test-run", options=(), inherits=("predict",))(takes_force_only)
    with pytest.raises(TypeError, match="register `tune-later` first"):
        _step("test-run", options=(), inherits=("tune-later",))(takes_force_only)


def test_run_help_names_the_config_table_rich_markup_does_not_eat_it() -> None:
    result = shoal("run", "--help")
    assert result.returncode == 0 and "(the table pipelines.TASK of shoal.toml)" in " ".join(result.stdout.split())
    assert "( in shoal.toml)" not in result.stdout

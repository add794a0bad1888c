"""The step commands `shoal features|train|evaluate|predict TASK`, run for real as subprocesses.

Without Prefect; one-line errors for bad options; a training process killed mid-epoch and
rerun with the same command ends with the weights of an uninterrupted run.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from shoal.catalog import Catalog
from tests.test_cli import _one_error_line, shoal
from tests.timeouts import scaled

FEATURES = ("--coarsen", "8", "--valid-start", "1996-01", "--test-start", "1998-01")
TRAIN = ("--epochs", "3", "--max-batches", "8", "--batch-size", "2", "--device", "cpu", "--leads", "1,2")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    from shoal.datasets.cobe_sst_sample import write_sample

    root = tmp_path_factory.mktemp("steps")
    home = root / "home"
    write_sample(root / "sst", start="1990-01", end="1999-12")
    assert shoal("ingest", "sst", root / "sst", home=home).returncode == 0
    from shoal.datasets.oni import SAMPLE

    assert shoal("ingest", "oni", SAMPLE, home=home).returncode == 0
    result = shoal("features", "enso", *FEATURES, home=home)
    assert result.returncode == 0, result.stderr
    assert re.search(r"enso_features version 0 \(snapshot \w+\): ", result.stdout), result.stdout
    return SimpleNamespace(home=home)


def test_features_again_reuses_the_version_and_says_so(built: SimpleNamespace) -> None:
    result = shoal("features", "enso", *FEATURES, home=built.home)
    assert result.returncode == 0
    assert re.search(r"version 0 \(snapshot \w+\): unchanged inputs and parameters, reused", result.stdout)


@pytest.mark.parametrize(("args", "message"), [
    (("features", "enso", "--valid-start", "1990-13"), "error: --valid-start: expected YYYY-MM, got '1990-13'"),
    (("features", "enso", "--test-start", "1980-01"), "error: --test-start: expected a month after --valid-start 1990-01"),
    (("train", "enso", "--leads", "3,1"), "error: --leads: expected distinct increasing leads"),
    (("train", "enso", "--device", "tpu"), "error: --device: expected auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    (("train", "enso", "--epochs", "0"), "error: --epochs: input should be greater than or equal to 1, got 0"),
    (("train", "nino", "--epochs", "1"), "error: unknown task 'nino'; known tasks: enso, higgs, speech"),
    (("train", "enso", "--run-id", "../x"), "error: run id '../x': expected 1-64 letters, digits"),
])
def test_a_bad_option_gives_one_line_naming_it(built: SimpleNamespace, args: tuple[str, ...], message: str) -> None:
    result = shoal(*args, home=built.home)
    assert result.returncode == 2 and _one_error_line(result).startswith(message)


def test_cuda_n_is_a_valid_device_and_an_absent_one_is_one_line(built: SimpleNamespace) -> None:
    import torch

    absent = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU, on any machine
    result = shoal("train", "enso", "--epochs", "1", "--device", absent, home=built.home)
    line = _one_error_line(result)
    assert "expected auto" not in line and f"device '{absent}' is not available" in line  # option ok, machine no
    assert result.returncode == 2


def _last_pt(home: Path) -> list[Path]:
    return sorted(Path(home, "models", "enso_convlstm", "runs").glob("*/last.pt"))


@pytest.mark.slow
def test_a_killed_training_rerun_with_the_same_command_ends_with_the_uninterrupted_weights(built: SimpleNamespace) -> None:
    import torch

    straight = shoal("train", "enso", *TRAIN, "--run-id", "straight", "--json", home=built.home)
    assert straight.returncode == 0, straight.stderr
    command = [sys.executable, "-m", "shoal", "--home", str(built.home), "train", "enso", *TRAIN]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + scaled(120)
        while not [p for p in _last_pt(built.home) if p.parent.name != "straight"]:
            assert process.poll() is None and time.monotonic() < deadline, "training ended before its first checkpoint"
            time.sleep(0.02)
        time.sleep(0.3)  # into the second epoch
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    (run,) = [p.parent for p in _last_pt(built.home) if p.parent.name != "straight"]
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] < 2  # it died before the end
    resumed = subprocess.run(command + ["--json"], capture_output=True, text=True, timeout=scaled(300), check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    report = json.loads(resumed.stdout[resumed.stdout.index("{"):])
    assert report["run_id"] == run.name and not report["reused"]
    a = torch.load(Path(built.home, "models", "enso_convlstm", "runs", "straight", "last.pt"), weights_only=True)
    b = torch.load(run / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2 and a["history"] == b["history"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    again = shoal("train", "enso", *TRAIN, "--json", home=built.home)
    assert json.loads(again.stdout)["reused"] and json.loads(again.stdout)["version"] == report["version"]
    text = shoal("train", "enso", *TRAIN, home=built.home).stdout
    assert f"reused model enso_convlstm version {report['version']}" in text and "--retrain" in text


def test_evaluate_json_and_predict_use_the_newest_model(built: SimpleNamespace) -> None:
    trained = shoal("train", "enso", "--epochs", "1", "--max-batches", "2", "--device", "cpu", "--run-id", "quick",
                    home=built.home)
    assert trained.returncode == 0, trained.stderr
    for row in ("model", "persistence", "climatology", "linear", "correlation", "test period from 1998-01"):
        assert row in trained.stdout
    newest = max(row["version"] for row in Catalog(built.home).read_table("model_registry").to_pylist())
    result = shoal("evaluate", "enso", "--device", "cpu", "--json", home=built.home)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["period"] == "test" and metrics["version"] == newest
    assert {row["method"] for row in metrics["skill"]} == {"model", "persistence", "climatology", "linear"}
    predicted = shoal("predict", "enso", "--device", "cpu", home=built.home)
    assert predicted.returncode == 0, predicted.stderr
    assert f"rows from model enso_convlstm version {newest};" in predicted.stdout


def test_the_best_epoch_and_the_feature_version_shown_are_the_registrys_counted_from_1(built: SimpleNamespace) -> None:
    import re

    from shoal.models.registry import load_model_entry

    trained = shoal("train", "enso", "--epochs", "3", "--max-batches", "2", "--device", "cpu", "--leads", "1,2",
                    "--run-id", "numbered", home=built.home)
    assert trained.returncode == 0, trained.stderr
    snapshot = Catalog(built.home).version_id("enso_features")
    line = re.search(r"registered model enso_convlstm version (\d+) on (.+) \(run numbered, best epoch (\d+), cpu\)",
                     trained.stdout)
    assert line is not None, trained.stdout
    version, features, best = int(line[1]), line[2], int(line[3])
    assert features == f"enso_features version 0 (snapshot {snapshot})"
    losses = [valid for _, valid in load_model_entry(Catalog(built.home), "enso_convlstm", version).metrics["history"]]
    assert best == losses.index(min(losses)) + 1 and f"epoch {best}/3: " in trained.stdout
    described = json.loads(shoal("catalog", "describe", "enso_convlstm", "--version", str(version), "--json",
                                 home=built.home).stdout)
    assert described["metrics"]["best_epoch_number"] == best and "best_epoch" not in described["metrics"]
    assert described["feature"] == f"enso_features (array) version 0 (snapshot {snapshot})"
    evaluated = shoal("evaluate", "enso", "--model-version", str(version), "--device", "cpu", home=built.home)
    shown = f"model enso_convlstm version {version} on enso_features version 0 (snapshot {snapshot})\n"
    assert shown in evaluated.stdout


def test_a_model_registered_with_the_best_epoch_counted_from_0_reads_counted_from_1(catalog: Catalog,
                                                                                    tmp_path: Path) -> None:
    from shoal.lineage import InputVersion
    from shoal.models.registry import load_model_entry, register_model

    (tmp_path / "best.pt").write_bytes(b"weights")
    register_model(catalog, name="old_model", architecture="convlstm", config={}, run_id="r",
                   feature=InputVersion("enso_features", "array", "S"), checkpoint=tmp_path / "best.pt",
                   metrics={"best_epoch": 2, "best_val_loss": 0.5})  # as runs registered them before 1-based numbers
    metrics = load_model_entry(catalog, "old_model").metrics
    assert metrics == {"best_epoch_number": 3, "best_val_loss": 0.5}

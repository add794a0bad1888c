"""Distributed training: `shoal train --nproc N` and torchrun, DistributedDataParallel on gloo, for real.

Two CPU processes train the ENSO task and end with one model: the same weights on both ranks,
one checkpoint written by rank 0 that a single-process `predict` loads; a run resumes only
with the number of processes it was started with; a global batch must split evenly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from shoal.catalog import Catalog
from tests.test_cli import _one_error_line
from tests.timeouts import scaled

pytestmark = pytest.mark.slow

SETTINGS = {"coarsen": 8, "valid_start": "1996-01", "test_start": "1998-01"}
TRAIN = {"epochs": 2, "max_batches": 2, "batch_size": 4, "device": "cpu", "leads": "1,2"}
OPTIONS = tuple(item for key, value in TRAIN.items() for item in (f"--{key.replace('_', '-')}", str(value)))


def _env() -> dict[str, str]:
    # One thread per rank: two ranks on this machine's two cores.
    env = {key: value for key, value in os.environ.items() if key not in ("SHOAL_HOME", "WORLD_SIZE", "RANK")}
    return env | {"NO_COLOR": "1", "OMP_NUM_THREADS": "1"}


def _shoal(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "shoal", "--home", str(home), *args]
    return subprocess.run(command, env=env or _env(), capture_output=True, text=True, timeout=scaled(180), check=False)


def _runs(home: Path) -> Path:
    return Path(home, "models", "enso_convlstm", "runs")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    from shoal.datasets import cobe_sst, oni
    from shoal.datasets.cobe_sst_sample import write_sample
    from shoal.progress import NULL
    from shoal.contract import get_task

    root = tmp_path_factory.mktemp("distributed")
    catalog = Catalog(root / "home")
    cobe_sst.ingest(catalog, [Path(write_sample(root / "sst", start="1990-01", end="1999-12")[0]).parent])
    oni.ingest(catalog, [oni.SAMPLE])
    task = get_task("enso")
    task.build_features(catalog, task.parse(SETTINGS), NULL)
    trained = _shoal(catalog.home, "train", "enso", *OPTIONS, "--nproc", "2", "--run-id", "two", "--json")
    assert trained.returncode == 0, trained.stderr
    return SimpleNamespace(home=Path(catalog.home), root=root, report=json.loads(trained.stdout[trained.stdout.index("{"):]))


def test_nproc_2_trains_on_gloo_and_registers_one_model_that_a_single_process_predict_loads(built: SimpleNamespace) -> None:
    report = built.report
    assert report["run_id"] == "two" and not report["reused"]
    assert report["metrics"]["world_size"] == 2 and report["metrics"]["device"] == "cpu"
    assert len(report["metrics"]["history"]) == 2
    last = torch.load(_runs(built.home) / "two" / "last.pt", weights_only=True)
    assert last["world_size"] == 2 and last["epoch"] == 1
    predicted = _shoal(built.home, "predict", "enso", "--device", "cpu", "--model-version", str(report["version"]))
    assert predicted.returncode == 0, predicted.stderr
    assert f"from model enso_convlstm version {report['version']}" in predicted.stdout


def _rank(rank: int, home: str, folder: str) -> None:
    """One gloo rank of `train` on the ENSO task, in a process group its caller (not shoal) set up."""
    import torch.distributed as dist

    from shoal.models.runs import train_config
    from shoal.models.train import seeded, train
    from shoal.contract import get_task

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)
    try:
        task = get_task("enso")
        settings = task.parse(SETTINGS | TRAIN)
        prepared = task.prepare(Catalog(home), settings, None)
        model = seeded(0, prepared.build)
        result = train(model, loss_fn=prepared.loss_fn, train_data=prepared.train_data, val_data=prepared.valid_data,
                       config=train_config(settings, len(prepared.train_data)), checkpoint_dir=Path(folder, "run"))
        torch.save({"model": model.state_dict(), "history": result.history, "best_epoch": result.best_epoch,
                    "samples": result.samples, "world_size": result.world_size}, Path(folder, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_end_with_identical_weights_and_the_same_losses_and_rank_0_checkpoints_them(
        built: SimpleNamespace, tmp_path: Path) -> None:
    torch.multiprocessing.spawn(_rank, args=(str(built.home), str(tmp_path)), nprocs=2)
    zero, one = (torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1))
    assert zero["model"].keys() == one["model"].keys() and any("running_mean" in key for key in zero["model"])
    for key, value in zero["model"].items():  # parameters and BatchNorm buffers alike
        assert torch.equal(value, one["model"][key]), key
    assert zero["history"] == one["history"] and zero["best_epoch"] == one["best_epoch"]
    assert zero["world_size"] == one["world_size"] == 2 and zero["samples"] == 2 * 2 * TRAIN["batch_size"]
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert all(torch.equal(value, last["model"][key]) for key, value in zero["model"].items())
    # The same inputs and settings through `shoal train --nproc 2`: the same training.
    assert [list(epoch) for epoch in zero["history"]] == built.report["metrics"]["history"]


def test_the_ranks_batches_together_are_the_single_process_batches() -> None:
    from shoal.models.batches import batches

    class Items(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 22

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"x": torch.tensor(i)}

    def shares(shard: tuple[int, int]) -> list[list[int]]:
        generator = torch.Generator().manual_seed(7)
        found = batches(Items(), batch_size=4, device=torch.device("cpu"), num_workers=0, generator=generator,
                         drop_last=True, shard=shard)
        return [batch["x"].tolist() for batch in found]

    alone, first, second = shares((0, 1)), shares((0, 2)), shares((1, 2))
    assert len(alone) == len(first) == len(second) == 5 and all(len(batch) == 2 for batch in first + second)
    assert [sorted(a + b) for a, b in zip(first, second, strict=True)] == [sorted(batch) for batch in alone]


def test_torchrun_runs_the_same_step_and_only_rank_0_reports(built: SimpleNamespace) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--nproc-per-node", "2", "-m", "shoal", "--home", str(built.home), "train", "enso",
               *OPTIONS, "--run-id", "torchrun"]
    result = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=scaled(180), check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("registered model enso_convlstm") == 1 and result.stdout.count("epoch 2/2") == 1
    a, b = (torch.load(_runs(built.home) / run / "last.pt", weights_only=True) for run in ("two", "torchrun"))
    assert a["history"] == b["history"] and all(torch.equal(value, b["model"][key]) for key, value in a["model"].items())


def test_resuming_with_another_number_of_processes_is_refused_with_the_fix(built: SimpleNamespace) -> None:
    # A run that stopped after its checkpoints, before registering: its folder without a registry row.
    shutil.copytree(_runs(built.home) / "two", _runs(built.home) / "stopped")
    result = _shoal(built.home, "train", "enso", *OPTIONS, "--epochs", "3", "--run-id", "stopped")
    line = _one_error_line(result)
    assert result.returncode == 2
    assert "last.pt was written by N=2 process(es) and this run has N=1" in line
    assert "resume with `--nproc 2`" in line and "`shoal train --restart`" in line
    restarted = _shoal(built.home, "train", "enso", *OPTIONS, "--epochs", "1", "--run-id", "stopped", "--restart")
    assert restarted.returncode == 0, restarted.stderr
    # Now a checkpoint of one process, resumed by two: the ranks refuse it, and the launcher says so on one line.
    shutil.copytree(_runs(built.home) / "stopped", _runs(built.home) / "stopped-alone")
    result = _shoal(built.home, "train", "enso", *OPTIONS, "--run-id", "stopped-alone", "--nproc", "2")
    line = _one_error_line(result)
    assert result.returncode == 2 and "failed: TrainingError:" in line
    assert "written by N=1 process(es) and this run has N=2" in line and "resume with `--nproc 1`" in line


@pytest.mark.parametrize(("args", "env", "message"), [
    (("--batch-size", "3", "--nproc", "2"), {}, "error: batch_size 3 does not split evenly across 2 processes"),
    (("--nproc", "2"), {"WORLD_SIZE": "2", "RANK": "0"}, "error: --nproc 2: this process is already one of the 2"),
])
def test_a_batch_that_does_not_split_or_nproc_under_torchrun_is_one_line(
        built: SimpleNamespace, args: tuple[str, ...], env: dict[str, str], message: str) -> None:
    result = _shoal(built.home, "train", "enso", "--device", "cpu", *args, env=_env() | env)
    assert result.returncode == 2 and _one_error_line(result).startswith(message)

"""SIGKILL at seeded random points of every step that writes, then: the home holds.

One victim home goes through the steps of the three pipelines as a user runs them
(`python -m shoal ...`). Each step is killed once, a seeded random moment after it starts
writing into the home; then every dataset opens, no version went backwards, `catalog check`
is clean after `--repair`, and rerunning the step gives the same content as the same step
run uninterrupted in a reference home.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from shoal.catalog import Catalog
from shoal.check import check
from tests.timeouts import scaled

DATA = Path(__file__).parent.parent / "data"
HIGGS = DATA / "higgs" / "higgs_real_test.csv"
SPEECH = DATA / "speech_commands" / "v0.01"
ENSO_FEATURES = ("--coarsen", "8", "--valid-start", "1996-01", "--test-start", "1998-01")
ENSO_TRAIN = ("--epochs", "2", "--max-batches", "6", "--batch-size", "4", "--device", "cpu", "--leads", "1,2")
HIGGS_TRAIN = ("--epochs", "2", "--batch-size", "64", "--device", "cpu")
SPEECH_TRAIN = ("--epochs", "2", "--batch-size", "2", "--max-batches", "2", "--device", "cpu")
SEED = 20261206


def _command(home: Path, *args: str | Path) -> list[str]:
    return [sys.executable, "-m", "shoal", "--home", str(home), "--quiet", *map(str, args)]


def _env(api: str) -> dict[str, str]:
    """This environment with the session's Prefect server (a backfill then starts none of its own)."""
    return {key: value for key, value in os.environ.items() if key != "SHOAL_HOME"} | {"PREFECT_API_URL": api}


def _run(home: Path, api: str, *args: str | Path) -> None:
    done = subprocess.run(_command(home, *args), capture_output=True, text=True, env=_env(api), timeout=scaled(300),
                          check=False)
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"


def _reference(home: Path, *args: str | Path) -> float:
    """The step uninterrupted, in this process (the same command line, without a second interpreter's start-up).

    Returns:
        Its writing window: seconds from its first change in the home to its end (0 when it changed nothing).
    """
    from typer.testing import CliRunner

    from shoal.cli import app

    started = time.time()
    done = CliRunner().invoke(app, ["--home", str(home), "--quiet", *map(str, args)])
    ended = time.time()
    assert done.exit_code == 0, f"{args}: {done.output} {done.exception!r}"
    changed = [p.stat().st_mtime for p in home.rglob("*") if p.is_file() and p.stat().st_mtime >= started]
    return ended - min(changed, default=ended)


def _newest_change(home: Path) -> float:
    return max((p.stat().st_mtime for p in home.rglob("*") if p.is_file()), default=0.0)


def _kill_while_writing(home: Path, api: str, window: float, rng: random.Random, *args: str | Path) -> bool:
    """Start a step, wait until it writes into the home, then SIGKILL it a seeded random moment later.

    The moment is drawn from the first 80% of the step's writing window as the reference run measured it, so the
    kill lands while the step writes on a fast machine and on a slow one alike.

    Returns:
        Whether the kill found the step still running (else it had finished first).
    """
    before = _newest_change(home)
    process = subprocess.Popen(_command(home, *args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=_env(api))
    deadline = time.monotonic() + scaled(120)
    try:
        while process.poll() is None and _newest_change(home) <= before and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.8) * window)
    finally:
        running = process.poll() is None
        process.send_signal(signal.SIGKILL)
        process.wait()
    return running


def _histories(catalog: Catalog) -> dict[str, list[tuple[object, str]]]:
    return {info.name: [(v.version, getattr(v, "snapshot", v.created_at)) for v in catalog.history(info.name)]
            for info in catalog.list()}


def _holds(catalog: Catalog, before: dict[str, list[tuple[object, str]]]) -> None:
    """Every dataset opens at every version; no version went missing or changed; check is clean after repair."""
    after = _histories(catalog)
    for name, versions in before.items():
        assert after[name][len(after[name]) - len(versions):] == versions, f"{name}: a version changed or went"
    for info in catalog.list():
        for entry in catalog.history(info.name):
            if info.kind == "table":
                catalog.read_table(info.name, version=entry.version)
            else:
                catalog.open_array(info.name, version=entry.snapshot)
    check(catalog, repair=True)
    report = check(catalog)
    assert report.clean, report.findings


def _table(name: str, *, drop: tuple[str, ...] = ()) -> Callable[[Catalog], object]:
    def read(catalog: Catalog) -> object:
        frame = catalog.read_table(name).to_pandas().drop(columns=list(drop))
        return frame.sort_values(list(frame.columns[:3])).reset_index(drop=True)

    return read


def _array(name: str, variable: str) -> Callable[[Catalog], object]:
    return lambda catalog: catalog.open_array(name)[variable].values


def _weights(task: str) -> Callable[[Catalog], object]:
    def read(catalog: Catalog) -> object:
        from shoal.models.runs import load_model
        from shoal.contract import get_task

        model, _ = load_model(catalog, get_task(task), None)
        return {key: value.numpy() for key, value in model.state_dict().items()}

    return read


PREDICTED = ("run_id", "feature_version")  # ids of the home's own versions: the rows are what must agree


def _steps(sst_first: Path, sst_rest: Path) -> list[tuple[tuple[str | Path, ...], Callable[[Catalog], object]]]:
    """Each pipeline's steps in order: the command, and the content it must leave."""
    from shoal.datasets.oni import SAMPLE

    return [
        (("ingest", "sst", sst_first), _array("sst", "sst")),
        (("backfill", "sst", "--source", sst_rest, "--start", "1995-01", "--end", "1999-12"), _array("sst", "sst")),
        (("ingest", "oni", SAMPLE), _table("nino34")),
        (("features", "enso", *ENSO_FEATURES), _array("enso_features", "sst")),
        (("train", "enso", *ENSO_TRAIN), _weights("enso")),
        (("predict", "enso", "--device", "cpu"), _table("enso_predictions", drop=PREDICTED)),
        (("ingest", "higgs", HIGGS), _table("higgs")),
        (("features", "higgs"), _table("higgs_features")),
        (("train", "higgs", *HIGGS_TRAIN), _weights("higgs")),
        (("predict", "higgs", "--device", "cpu"), _table("higgs_predictions", drop=PREDICTED)),
        (("ingest", "speech", SPEECH), _table("speech")),
        (("features", "speech"), _array("speech_features", "mean")),
        (("train", "speech", *SPEECH_TRAIN), _weights("speech")),
    ]


def _same(found: object, expected: object, what: tuple[str | Path, ...]) -> None:
    if isinstance(expected, dict):
        assert found.keys() == expected.keys(), what
        for key in expected:
            np.testing.assert_array_equal(found[key], expected[key], err_msg=f"{what} {key}")
    elif isinstance(expected, np.ndarray):
        np.testing.assert_array_equal(found, expected, err_msg=str(what))
    else:
        assert found.equals(expected), what


@pytest.mark.slow
def test_a_kill_at_a_random_point_of_any_step_leaves_a_home_that_a_rerun_finishes_identically(
        tmp_path: Path, prefect_harness: None) -> None:
    from prefect.settings import PREFECT_API_URL

    from shoal.datasets.cobe_sst_sample import write_sample

    api = PREFECT_API_URL.value()
    write_sample(tmp_path / "first", start="1990-01", end="1994-12")
    write_sample(tmp_path / "rest", start="1995-01", end="1999-12")
    reference, victim = tmp_path / "reference", tmp_path / "victim"
    rng = random.Random(SEED)
    steps = _steps(tmp_path / "first", tmp_path / "rest")
    interrupted, windows = 0, []
    for args, content in steps:
        window = _reference(reference, *args)
        windows.append(f"{args[0]} {args[1]} {window:.2f} s")
        catalog = Catalog(victim)
        before = _histories(catalog) if victim.exists() else {}
        interrupted += _kill_while_writing(victim, api, window, rng, *args)
        _holds(catalog, before)
        _run(victim, api, *args)
        _same(content(catalog), content(Catalog(reference)), args)
    assert interrupted >= len(steps) - 2, (
        f"only {interrupted} of {len(steps)} kills found their step running; writing windows: {windows}")

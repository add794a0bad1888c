"""`shoal tune higgs`: an Optuna study in the catalog home, scored on valid, resumable, and `--params best`."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.catalog import Catalog
from shoal.datasets.higgs import ingest
from shoal.errors import TrainingError
from shoal.lineage import InputVersion
from shoal.tasks.higgs import SEARCH_SPACE
from shoal.models.tune import best_params, tune
from shoal.contract import get_task
from tests.test_cli import _one_error_line, shoal

REAL = Path(__file__).parent / "data" / "higgs" / "higgs_real_test.csv"
QUICK = {"epochs": 2, "batch_size": 32, "device": "cpu"}


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    catalog = Catalog(tmp_path_factory.mktemp("tune") / "home")
    ingest(catalog, [REAL])
    task = get_task("higgs")
    task.build_features(catalog, task.parse(QUICK), reporter=None)
    tune(catalog, task, task.parse(QUICK), trials=3, sample_fraction=0.5)
    return catalog


def test_three_trials_land_in_a_sqlite_study_in_the_home_within_the_analysis_ranges(tuned: Catalog) -> None:
    import optuna

    assert Path(tuned.home, "tuning", "higgs.db").exists()
    storage = f"sqlite:///{tuned.home}/tuning/higgs.db"
    (study,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=study.study_name, storage=storage).trials
    assert len(trials) == 3 and all(t.value is not None for t in trials if t.state.name == "COMPLETE")
    for trial in trials:
        for name, (low, high) in SEARCH_SPACE.items():
            assert low <= trial.params[name] <= high


def test_an_interrupted_search_resumes_and_the_best_trial_trains_with_params_best(tuned: Catalog) -> None:
    task = get_task("higgs")
    assert len(tune(tuned, task, task.parse(QUICK), trials=1, sample_fraction=0.5)) == 4
    best = best_params(tuned, task, feature=task.prepare(tuned, task.parse(QUICK), None).feature).params
    result = shoal("train", "higgs", "--params", "best", "--epochs", "1", "--batch-size", "64", "--device", "cpu",
                   "--json", home=tuned.home)
    assert result.returncode == 0, result.stderr
    assert f"--params best: the best `shoal tune higgs` trial's n_d={best['n_d']}" in result.stderr  # says what it used
    from shoal.models.registry import load_model_entry

    entry = load_model_entry(tuned, "higgs_tabnet", None)
    assert (entry.config["model"]["n_d"], entry.config["model"]["n_steps"]) == (best["n_d"], best["n_steps"])
    assert entry.config["train"]["lr"] == pytest.approx(best["lr"])


def test_tuning_a_task_without_a_search_space_or_with_a_bad_fraction_fails_clearly(tuned: Catalog) -> None:
    with pytest.raises(TrainingError, match="task 'enso' has no search space to tune"):
        tune(tuned, get_task("enso"), get_task("enso").parse({}), trials=1)
    with pytest.raises(TrainingError, match=r"--sample-fraction must be in \(0, 1\], got 2"):
        tune(tuned, get_task("higgs"), get_task("higgs").parse(QUICK), trials=1, sample_fraction=2)
    with pytest.raises(TrainingError, match=r"--sample-fraction 0.05 leaves 12 of the 250 training items; a trial "
                                            r"needs at least 50 to be scored: pass --sample-fraction 0.2 or more"):
        tune(tuned, get_task("higgs"), get_task("higgs").parse(QUICK), trials=1, sample_fraction=0.05)
    assert shoal("tune", "higgs", "--trials", "0", home=tuned.home).returncode == 2  # not 8 trials
    result = shoal("train", "higgs", "--params", "worst", home=tuned.home)
    assert result.returncode == 2 and "--params: expected 'best'" in _one_error_line(result)


def test_params_best_without_a_study_says_to_tune_first_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="run `shoal tune higgs` first"):
        best_params(Catalog(tmp_path / "home"), get_task("higgs"), feature=InputVersion("higgs_features", "table", 0))
    assert not (tmp_path / "home").exists()


def _home_with_features(root: Path) -> Catalog:
    catalog = Catalog(root / "home")
    ingest(catalog, [REAL])
    task = get_task("higgs")
    task.build_features(catalog, task.parse(QUICK), reporter=None)
    return catalog


def _on_a_terminal(*args: str, home: Path) -> str:
    """What `python -m shoal --home HOME ARGS` writes to a terminal (a pseudo-terminal as its stdout)."""
    import os
    import pty
    import subprocess
    import sys
    import threading

    leader, follower = pty.openpty()
    env = {key: value for key, value in os.environ.items() if key != "SHOAL_HOME"} | {"NO_COLOR": "1",
                                                                                      "COLUMNS": "200"}
    chunks: list[bytes] = []

    def drain() -> None:  # read while it runs: a full terminal buffer would block the command
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the last writer closed the terminal
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    process = subprocess.run([sys.executable, "-m", "shoal", "--home", str(home), *args], stdout=follower,
                             stderr=subprocess.PIPE, env=env, timeout=300, check=False)
    os.close(follower)
    reader.join(timeout=30)
    os.close(leader)
    assert process.returncode == 0, process.stderr
    return b"".join(chunks).decode()


def test_tunes_on_other_sample_fractions_make_other_studies_and_params_best_picks_the_one_on_its_features(
        tmp_path: Path) -> None:
    import optuna

    catalog = _home_with_features(tmp_path)
    task = get_task("higgs")
    tune(catalog, task, task.parse(QUICK), trials=1, sample_fraction=0.5)
    tune(catalog, task, task.parse(QUICK), trials=1, sample_fraction=0.6)
    tune(catalog, task, task.parse({**QUICK, "epochs": 1}), trials=1, sample_fraction=0.5)
    storage = f"sqlite:///{catalog.home}/tuning/higgs.db"
    names = sorted(one.study_name for one in optuna.get_all_study_summaries(storage))
    assert names == ["higgs_features version 0, sample fraction 0.5, seed 0, epochs 1, max batches all",
                     "higgs_features version 0, sample fraction 0.5, seed 0, epochs 2, max batches all",
                     "higgs_features version 0, sample fraction 0.6, seed 0, epochs 2, max batches all"]
    first = task.prepare(catalog, task.parse(QUICK), None).feature
    assert best_params(catalog, task, feature=first).key.sample_fraction == 0.6  # the most rows seen
    picked = best_params(catalog, task, feature=first, given={"epochs": 1}).key
    assert (picked.sample_fraction, picked.epochs) == (0.5, 1)  # the study of the epochs given
    task.build_features(catalog, task.parse({**QUICK, "split": "random"}), reporter=None)  # version 1
    result = shoal("train", "higgs", "--params", "best", "--epochs", "1", "--device", "cpu", home=catalog.home)
    assert result.returncode == 2
    assert _one_error_line(result) == (
        "error: --params best: no `shoal tune higgs` study scored its trials on higgs_features version 1; "
        f"{catalog.home}/tuning/higgs.db has '{names[1]}' (1 trial); '{names[2]}' (1 trial); '{names[0]}' "
        "(1 trial); make one with `shoal tune higgs --sample-fraction 0.6 --seed 0 --epochs 2` (it tunes on the "
        "newest feature version)")
    result = shoal("train", "higgs", "--params", "best", "--feature-version", "0", "--epochs", "1", "--device", "cpu",
                   "--json", home=catalog.home)
    assert result.returncode == 0, result.stderr
    assert f"of the study '{names[0]}'" in result.stderr  # on the features trained on, with the --epochs given


def test_tune_shows_each_trial_as_it_finishes_on_a_terminal_unless_quiet(tmp_path: Path) -> None:
    catalog = _home_with_features(tmp_path)
    options = ("tune", "higgs", "--trials", "2", "--sample-fraction", "0.5", "--epochs", "2", "--batch-size", "32",
               "--device", "cpu")
    shown = _on_a_terminal(*options, home=catalog.home)
    lines = [line for line in shown.splitlines() if line.startswith("trial ")]
    assert len(lines) == 2, shown
    assert lines[0].startswith("trial 0: n_d=") and "validation loss " in lines[0], shown
    assert lines[0].endswith("; best so far: trial 0, " + lines[0].split("validation loss ")[1][:6]), shown
    assert lines[1].startswith("trial 1: n_d=") and "; best so far: trial " in lines[1], shown
    quiet = _on_a_terminal("--quiet", *options[:3], "1", *options[4:], home=catalog.home)
    assert not [line for line in quiet.splitlines() if line.startswith("trial ")], quiet
    assert "shoal tune higgs" in quiet  # the table still


def test_a_study_from_before_keyed_studies_stays_readable_until_a_keyed_one_is_on_the_features(tmp_path: Path) -> None:
    import optuna
    from optuna.distributions import FloatDistribution, IntDistribution

    catalog = _home_with_features(tmp_path)
    task = get_task("higgs")
    storage = f"sqlite:///{Path(catalog.home, 'tuning')}/higgs.db"
    Path(catalog.home, "tuning").mkdir()
    legacy = optuna.create_study(study_name="higgs", storage=storage)  # as `shoal tune` named every study before
    legacy.add_trial(optuna.trial.create_trial(
        params={"n_d": 24, "n_a": 24, "n_steps": 4, "lr": 0.01}, value=0.5,
        distributions={"n_d": IntDistribution(20, 40), "n_a": IntDistribution(20, 40), "n_steps": IntDistribution(4, 6),
                       "lr": FloatDistribution(10**-2.5, 10**-1, log=True)}))
    feature = task.prepare(catalog, task.parse(QUICK), None).feature
    old = best_params(catalog, task, feature=feature)
    assert (old.key, old.study, old.params["n_d"]) == (None, "higgs", 24)
    tune(catalog, task, task.parse(QUICK), trials=1, sample_fraction=0.5)
    new = best_params(catalog, task, feature=feature)
    assert new.key is not None and new.study.startswith("higgs_features version 0, sample fraction 0.5")
    assert len(optuna.get_all_study_summaries(storage)) == 2  # the same database holds both

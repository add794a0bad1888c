"""`shoal tune higgs`: an Optuna study in the catalog home, scored on valid, resumable, and `--params best`."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.catalog import Catalog
from shoal.datasets.higgs import ingest
from shoal.errors import TrainingError
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
    trials = optuna.load_study(study_name="higgs", storage=f"sqlite:///{tuned.home}/tuning/higgs.db").trials
    assert len(trials) == 3 and all(t.value is not None for t in trials if t.state.name == "COMPLETE")
    for trial in trials:
        for name, (low, high) in SEARCH_SPACE.items():
            assert low <= trial.params[name] <= high


def test_an_interrupted_search_resumes_and_the_best_trial_trains_with_params_best(tuned: Catalog) -> None:
    task = get_task("higgs")
    assert len(tune(tuned, task, task.parse(QUICK), trials=1, sample_fraction=0.5)) == 4
    best = best_params(tuned, task)
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
        best_params(Catalog(tmp_path / "home"), get_task("higgs"))
    assert not (tmp_path / "home").exists()

"""The Speech task on real clips: train on train, pick on valid, score on test beside the baselines, predict."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest

from shoal.catalog import Catalog
from shoal.datasets.speech_commands import WORDS, ingest
from shoal.contract import SettingsError, get_task
from tests.test_cli import _one_error_line, shoal

FIXTURES = Path(__file__).parent / "data" / "speech_commands" / "v0.01"
SAMPLE = Path(__file__).parents[1] / "datasets" / "sample_data" / "speech_commands"
TRAIN = {"epochs": 2, "batch_size": 2, "max_batches": 2, "device": "cpu"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    from shoal.models.runs import predict_model, train_model

    home = tmp_path_factory.mktemp("speech") / "home"
    catalog = Catalog(home)
    assert ingest(catalog, [FIXTURES]).exit_code == 0
    task = get_task("speech")
    settings = task.parse(TRAIN)
    task.build_features(catalog, settings, reporter=None)
    result = train_model(catalog, task, settings)
    entry, predicted = predict_model(catalog, task, device="cpu")
    return SimpleNamespace(catalog=catalog, task=task, settings=settings, trained=result, entry=entry, predicted=predicted)


def test_the_defaults_are_the_analysis_adadelta_batch_128_for_20_epochs() -> None:
    settings = get_task("speech").parse({})
    assert (settings.optimizer, settings.lr, settings.batch_size, settings.epochs) == ("adadelta", 1.0, 128, 20)
    assert settings.split == "official" and not settings.materialize
    with pytest.raises(SettingsError, match="--valid-start: not an option of this task"):
        get_task("speech").parse({"valid_start": "1990-01"})
    with pytest.raises(SettingsError, match="--split: input should be 'official' or 'random'"):
        get_task("speech").parse({"split": "speaker"})


def test_training_registers_test_skill_beside_the_baselines(trained: SimpleNamespace) -> None:
    metrics = trained.trained.entry.metrics
    assert [row["method"] for row in metrics["skill"]] == ["model", "majority", "mean_spectrum_logistic"]
    assert all(row["clips"] == 3 for row in metrics["skill"])  # the 3 clips of testing_list.txt
    confusion = np.array(metrics["confusion"])
    assert confusion.shape == (30, 30) and confusion.sum() == 3
    assert metrics["labels"] == list(WORDS[:30]) and metrics["split"] == "official"
    model_accuracy = metrics["skill"][0]["accuracy"]
    assert model_accuracy == pytest.approx(np.trace(confusion) / 3)
    assert set(metrics["per_class_accuracy"]) == {"no", "up", "yes"}
    assert trained.trained.entry.config["train"]["optimizer"] == "adadelta"


def test_the_majority_baseline_is_the_most_frequent_training_word(trained: SimpleNamespace) -> None:
    from shoal.tasks.speech import _features, baselines

    features = _features(trained.catalog, None)
    guesses = baselines(features, device="cpu")
    train_labels = features.label[features.split == 0].numpy()
    assert (guesses["majority"] == np.bincount(train_labels).argmax()).all()
    assert guesses["mean_spectrum_logistic"].shape == (3,)


def test_predictions_hold_every_clip_with_its_top_3_words_and_a_confusion_png(trained: SimpleNamespace) -> None:
    rows = pl.read_delta(trained.catalog.uri("table", "speech_predictions"))
    assert len(rows) == 9 and trained.predicted.rows == 9
    assert sorted(rows["split"].to_list()) == ["test"] * 3 + ["train"] * 3 + ["valid"] * 3
    for row in rows.iter_rows(named=True):
        assert row["predicted_label"] == row["top3_labels"][0] and row["probability"] == row["top3_probabilities"][0]
        assert row["top3_probabilities"] == sorted(row["top3_probabilities"], reverse=True)
        assert 0.0 < sum(row["top3_probabilities"]) <= 1.0 + 1e-6
        assert row["run_id"] == trained.entry.run_id and row["model"] == "speech_cnn" and row["model_version"] == trained.entry.version
    (plot,) = trained.predicted.plots
    assert plot.name.endswith("_confusion.png") and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_verdict_on_a_few_clips_says_the_model_is_not_distinguishable_from_the_baseline() -> None:
    from shoal.evaluation import score, verdict
    from shoal.tasks.speech import SCORING

    truth = np.arange(51) % 10  # 51 test clips, as in the demo
    model, linear = truth.copy(), truth.copy()
    model[:10] = (model[:10] + 1) % 10  # 41 right
    linear[5:17] = (linear[5:17] + 1) % 10  # 39 right
    rows = score(SCORING, {"label": truth}, {"model": {"label": model}, "majority": {"label": np.zeros(51, int)},
                                             "mean_spectrum_logistic": {"label": linear}})
    assert verdict(SCORING, rows).startswith("The model is not distinguishable from mean_spectrum_logistic at this "
                                             "test size (accuracy 0.80 vs 0.76")
    many = np.arange(2000) % 10
    clear = score(SCORING, {"label": many}, {"model": {"label": many}, "majority": {"label": np.zeros(2000, int)},
                                             "mean_spectrum_logistic": {"label": (many + (np.arange(2000) % 3 == 0)) % 10}})
    assert verdict(SCORING, clear).startswith("The model is better than mean_spectrum_logistic (accuracy 1.0")


def test_evaluate_and_predict_through_the_cli_after_training(trained: SimpleNamespace) -> None:
    home = trained.catalog.home
    evaluated = shoal("evaluate", "speech", "--device", "cpu", home=home)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "Speech Commands word accuracy on test (official split)" in evaluated.stdout
    assert "mean_spectrum_logistic" in evaluated.stdout
    bad = shoal("features", "speech", "--split", "speakers", home=home)
    assert bad.returncode == 2 and "--split: input should be 'official' or 'random'" in _one_error_line(bad)


def test_a_catalog_without_speech_features_says_to_build_them(tmp_path: Path) -> None:
    result = shoal("train", "speech", "--epochs", "1", home=tmp_path / "home")
    assert result.returncode == 2 and "run `shoal features speech` first" in _one_error_line(result)

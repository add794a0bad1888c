"""`shoal reproduce TASK`: the results file beside the published numbers.

HIGGS end to end through the CLI in this process (one Prefect flow under the session's server)
on a sample written by `datasets/higgs_sample.py`, with a quick-check override; ENSO and Speech
through the results writer, on skill rows scored as their `evaluate` scores them.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

QUICK = ("--epochs", "1", "--max-batches", "1")


@pytest.fixture(scope="module")
def reproduced(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """`shoal reproduce higgs --source SAMPLE --epochs 1 --max-batches 1` on a fresh home: the result and the files."""
    from shoal.cli import app
    from shoal.datasets.higgs_sample import write_sample

    root = tmp_path_factory.mktemp("reproduce")
    source = write_sample(root / "source", rows=4000)
    result = CliRunner().invoke(app, ["--home", str(root / "home"), "reproduce", "higgs", "--source", str(source),
                                      *QUICK])
    folder = root / "home" / "reproduce"
    data = json.loads((folder / "higgs.json").read_text()) if (folder / "higgs.json").exists() else None
    return SimpleNamespace(result=result, home=root / "home", source=source, folder=folder, data=data)


def test_reproduce_exits_0_and_says_where_the_results_are(reproduced: SimpleNamespace) -> None:
    assert reproduced.result.exit_code == 0, reproduced.result.output
    assert f"results: {reproduced.folder / 'higgs.json'} and {reproduced.folder / 'higgs.md'}" in \
        reproduced.result.stdout


def test_the_results_name_preset_paper_and_the_overrides_as_not_the_papers(reproduced: SimpleNamespace) -> None:
    data = reproduced.data
    assert data["preset"] == "paper" and data["settings"]["preset"] == "paper"
    assert data["settings"]["split"] == "official" and data["settings"]["batch_size"] == 16_384  # TabNet-S's
    assert data["paper_settings"] is False and data["overrides"] == {"epochs": 1, "max_batches": 1}
    assert data["command"] == f"shoal reproduce higgs --source {reproduced.source} --epochs 1 --max-batches 1"
    assert data["sources"] == [str(reproduced.source)] and data["fetched"] is False
    text = (reproduced.folder / "higgs.md").read_text()
    assert "**NOT the paper's settings**: preset `paper` with --epochs 1, --max-batches 1" in text
    assert data["training"]["batch_size"] == 16_384 and data["training"]["patience"] is None  # the paper: every epoch
    line = next(line for line in text.splitlines() if line.startswith("- training as run"))
    assert "batch_size=16384" in line and "epochs=1" in line and "patience=None" in line


def test_the_results_hold_the_registered_models_skill_with_intervals(reproduced: SimpleNamespace) -> None:
    from shoal.catalog import Catalog
    from shoal.models.registry import model_versions

    data = reproduced.data
    (entry,) = model_versions(Catalog(reproduced.home))
    assert (data["model"]["name"], data["model"]["version"], data["model"]["run_id"]) == (
        entry.name, entry.version, entry.run_id)
    assert data["skill"] == json.loads(json.dumps(entry.metrics["skill"]))  # generated from the registry, not typed
    (ours,) = data["beside"]
    model_row = next(row for row in data["skill"] if row["method"] == "model")
    assert ours["ours"] == model_row["accuracy"] and ours["interval"] == model_row["interval"]["accuracy"]
    low, high = ours["interval"]
    assert low < ours["ours"] < high and ours["items"] == 1000  # the last quarter of 4,000 rows
    assert data["verdict"].startswith("The model is ") and "hist_gradient_boosting" in data["verdict"]
    text = (reproduced.folder / "higgs.md").read_text()
    assert f"| ours: higgs_tabnet version {entry.version} | {ours['ours']:.3f} [{low:.3f}, {high:.3f}] |" in text
    assert data["verdict"] in text


def test_the_results_hold_the_published_number_with_its_source(reproduced: SimpleNamespace) -> None:
    data = reproduced.data
    assert data["published"]["value"] == 0.7825 and data["published"]["metric"] == "accuracy"
    assert "TabNet" in data["published"]["source"] and "Table 5" in data["published"]["source"]
    (ours,) = data["beside"]
    assert ours["published"] == 0.7825 and ours["published_is"] == "above our interval"  # one step of a sample
    text = (reproduced.folder / "higgs.md").read_text()
    assert "| published | 0.7825 |" in text and data["published"]["source"] in text


def test_an_unknown_task_is_one_error_line_and_exit_2(tmp_path: Path) -> None:
    from shoal.cli import app

    result = CliRunner().invoke(app, ["--home", str(tmp_path / "home"), "reproduce", "mnist"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == ["error: no published number to reproduce for 'mnist'; expected one of "
                                          "enso, higgs, speech"]
    assert not (tmp_path / "home").exists()


def test_a_missing_source_is_one_error_line_before_anything_runs(tmp_path: Path) -> None:
    from shoal.cli import app

    result = CliRunner().invoke(app, ["--home", str(tmp_path / "home"), "reproduce", "speech", "--source",
                                      str(tmp_path / "absent")])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"error: --source {tmp_path / 'absent'}: no such file or folder"]


def test_every_reproduction_has_a_published_entry_and_settings_its_task_accepts() -> None:
    from shoal.cli.reproduce import PLANS, PUBLISHED
    from shoal.contract import get_task

    assert set(PLANS) == set(PUBLISHED) == {"enso", "higgs", "speech"}
    for name, plan in PLANS.items():
        task, published = get_task(name), PUBLISHED[name]
        settings = task.parse(plan.settings)
        assert settings.preset == "paper" and published.source
        assert published.metric in {metric.key for metric in task.scoring.metrics}
        assert (published.value is None) == (published.beside is not None)
    assert get_task("enso").parse(PLANS["enso"].settings).leads == (1, 3, 6, 9, 12)


def test_a_fetched_single_file_source_is_ingested_under_its_urls_last_part() -> None:
    from shoal.cli.reproduce import _fetched
    from shoal.datasets.higgs import HIGGS_URL
    from shoal.datasets.speech_commands import SPEECH_COMMANDS_URL

    assert _fetched(Path("/d"), HIGGS_URL) == Path("/d/higgs.zip")
    assert _fetched(Path("/d"), SPEECH_COMMANDS_URL) == Path("/d/speech_commands_v0.01.tar.gz")


# -- the writer, on skill rows scored as each task's evaluate scores them ------------------------


def _trained(name: str, skill: list[dict], **metrics: object) -> dict:
    return {"model": name, "version": 3, "run_id": "r1", "feature_version": "7", "reused": False,
            "training": {"epochs": 20, "patience": None}, "metrics": {"skill": skill, "device": "cpu", "best_epoch_number": 5, **metrics}}


def _enso_skill() -> list[dict]:
    """Lead 1: the model is noise, persistence follows the truth; lead 3: the model follows the truth roughly,
    persistence is noise, and the linear baseline follows it closely (better than the model, so the best baseline
    is not the one shown beside ours)."""
    from shoal.evaluation import score
    from shoal.tasks.enso import SCORING, threshold_phase

    rng = np.random.default_rng(0)
    truth = rng.normal(size=120)
    near = {scale: truth + scale * rng.normal(size=120) for scale in (0.05, 0.5)}
    skill = []
    for lead, model, persistence, linear in ((1, rng.normal(size=120), near[0.05], rng.normal(size=120)),
                                             (3, near[0.5], rng.normal(size=120), near[0.05])):
        forecasts = {"model": model, "persistence": persistence, "climatology": np.zeros(120), "linear": linear}
        skill += score(SCORING, {"anomaly": truth, "phase": threshold_phase(truth)},
                       {name: {"anomaly": value, "phase": threshold_phase(value)} for name, value in forecasts.items()},
                       group=lead)
    return skill


def test_enso_results_show_ours_by_lead_beside_persistence(tmp_path: Path) -> None:
    from shoal.cli.reproduce import PLANS, results, write_results
    from shoal.contract import get_task

    settings = get_task("enso").parse(PLANS["enso"].settings).model_dump(mode="json")
    data = results("enso", settings=settings, overrides={}, sources=["/data/cobe"], fetched=True,
                   trained=_trained("enso_convlstm", _enso_skill(), test_start="2005-01"),
                   command="shoal reproduce enso")
    json_path, md_path = write_results(tmp_path / "reproduce", data)
    assert (json_path, md_path) == (tmp_path / "reproduce" / "enso.json", tmp_path / "reproduce" / "enso.md")
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(data))
    assert data["paper_settings"] is True and data["settings"]["coarsen"] == 1 and data["published"]["value"] is None
    by_lead = {row["group"]: row for row in data["beside"]}
    assert list(by_lead) == [1, 3]
    assert by_lead[1]["outcome"] == "worse" and by_lead[3]["outcome"] == "better"  # against persistence
    assert by_lead[3]["ours"] > 0.8 and abs(by_lead[3]["persistence"]) < 0.3 and by_lead[1]["persistence"] > 0.99
    low, high = by_lead[3]["difference_interval"]
    assert low <= by_lead[3]["difference"] <= high and low > 0
    assert "at lead 3 the model is worse than linear" in data["verdict"]  # the verdict still names the best baseline
    text = md_path.read_text()
    assert "preset `paper`: the paper's settings, nothing overridden." in text and "NOT the paper's" not in text
    assert "| lead | ours: correlation [95% interval] | persistence [95% interval] |" in text
    assert "Niño 3.4 anomaly, test period from 2005-01" in text and data["published"]["source"] in text
    assert text.count("| 1 | model |") == 1 and "| 3 | persistence |" in text  # the whole skill table


def test_speech_results_say_the_analysis_split_clips_and_ours_is_not_one_for_one(tmp_path: Path) -> None:
    from shoal.cli.reproduce import PLANS, results, write_results
    from shoal.contract import get_task
    from shoal.evaluation import score
    from shoal.tasks.speech import SCORING

    rng = np.random.default_rng(1)
    label = rng.integers(0, 30, 400)
    model = np.where(rng.random(400) < 0.6, label, rng.integers(0, 30, 400))
    skill = score(SCORING, {"label": label}, {"model": {"label": model}, "majority": {"label": np.zeros(400, int)},
                                              "mean_spectrum_logistic": {"label": rng.integers(0, 30, 400)}})
    settings = get_task("speech").parse({**PLANS["speech"].settings, "epochs": 2}).model_dump(mode="json")
    data = results("speech", settings=settings, overrides={"epochs": 2}, sources=["/data/speech.tar.gz"],
                   fetched=False, trained=_trained("speech_cnn", skill, split="official"),
                   command="shoal reproduce speech --epochs 2")
    _, md_path = write_results(tmp_path, data)
    (ours,) = data["beside"]
    assert ours["published"] == 0.877 and ours["published_is"] == "above our interval"
    assert ours["interval"][0] < ours["ours"] < ours["interval"][1] and ours["items"] == 400
    assert "CLIPS" in data["published"]["measured_on"] and "validation" in data["published"]["measured_on"]
    assert data["published"]["comparable"].startswith("not one-for-one")
    text = md_path.read_text()
    assert "**NOT the paper's settings**: preset `paper` with --epochs 2" in text
    assert "| published | 0.877 |" in text and "test, 400 clips" in text and "Comparable: not one-for-one" in text
    assert data["verdict"] in text and "Speech Commands word accuracy on test (official split)" in text

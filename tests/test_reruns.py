"""Re-running a step never duplicates data or reuses stale work.

Predictions of a model version are written once (`--force` replaces them); run ids and
feature keys carry a fingerprint of the code, so changed code never reuses an old model or
feature version, and an unchanged tree always does.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from shoal.catalog import Catalog
from shoal.datasets.higgs import ingest
from shoal.lineage import source_fingerprint
from shoal.contract import get_task
from tests.test_cli import shoal

REAL = Path(__file__).parent / "data" / "higgs" / "higgs_real_test.csv"
SETTINGS = {"epochs": 1, "batch_size": 64, "device": "cpu"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    from shoal.models.runs import train_model

    catalog = Catalog(tmp_path_factory.mktemp("reruns") / "home")
    assert ingest(catalog, [REAL]).exit_code == 0
    task = get_task("higgs")
    task.build_features(catalog, task.parse(SETTINGS), reporter=None)
    return SimpleNamespace(catalog=catalog, task=task, trained=train_model(catalog, task, task.parse(SETTINGS)))


def test_predict_twice_writes_once_and_force_replaces_the_model_versions_rows(trained: SimpleNamespace) -> None:
    catalog, home = trained.catalog, trained.catalog.home
    first = shoal("predict", "higgs", "--device", "cpu", home=home)
    assert first.returncode == 0, first.stderr
    rows = catalog.read_table("higgs_predictions").num_rows
    versions = len(catalog.history("higgs_predictions"))
    again = shoal("predict", "higgs", "--device", "cpu", home=home)
    assert again.returncode == 0 and "unchanged, already written by" in again.stdout, again.stdout
    assert len(catalog.history("higgs_predictions")) == versions
    forced = shoal("predict", "higgs", "--device", "cpu", "--force", home=home)
    assert forced.returncode == 0, forced.stderr
    assert len(catalog.history("higgs_predictions")) == versions + 1
    table = catalog.read_table("higgs_predictions").to_pandas()
    assert len(table) == rows and not table.duplicated(["row_id", "model", "model_version"]).any()
    assert set(table.run_id) == {trained.trained.entry.run_id}
    explanations = catalog.read_table("higgs_explanations").to_pandas()
    assert not explanations.duplicated(["kind", "row_id", "feature", "model_version"]).any()


def test_an_unchanged_tree_reuses_the_model_and_changed_code_trains_anew(trained: SimpleNamespace,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from shoal.models import runs

    catalog, task = trained.catalog, trained.task
    same = runs.train_model(catalog, task, task.parse(SETTINGS))
    assert same.reused and same.run_id == trained.trained.run_id
    monkeypatch.setattr(runs, "code_fingerprint", lambda: "an edited model or loss")
    edited = runs.train_model(catalog, task, task.parse(SETTINGS))
    assert not edited.reused and edited.run_id != trained.trained.run_id
    assert edited.entry.version == trained.trained.entry.version + 1


def test_changed_code_builds_a_new_feature_version(trained: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    from shoal.features import higgs

    catalog, task = trained.catalog, trained.task
    assert task.build_features(catalog, task.parse(SETTINGS), reporter=None).reused
    monkeypatch.setattr(higgs, "code_fingerprint", lambda: "an edited feature set")
    assert not task.build_features(catalog, task.parse(SETTINGS), reporter=None).reused


def test_the_source_fingerprint_changes_with_any_file_and_only_then(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text("LAYERS = 2\n")
    (tmp_path / "loss.py").write_text("def loss(): ...\n")
    (tmp_path / "notes.txt").write_text("not code")
    folders = [("shoal.models", tmp_path)]
    before = source_fingerprint(folders)
    assert source_fingerprint(folders) == before
    (tmp_path / "notes.txt").write_text("still not code")
    assert source_fingerprint(folders) == before
    (tmp_path / "model.py").write_text("LAYERS = 3\n")
    assert source_fingerprint(folders) != before

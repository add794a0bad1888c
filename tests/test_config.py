"""shoal.toml: pipelines' paths relative to the file, settings, and one-line errors for every bad file."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.config import ConfigError, load_config
from shoal.errors import ShoalError


def test_paths_are_taken_from_the_config_folder_urls_kept_and_settings_kept(tmp_path: Path) -> None:
    path = tmp_path / "shoal.toml"
    path.write_text('[pipelines.enso]\npaths = ["cobe", "/abs/oni.txt", "s3://bucket/cobe/"]\n'
                    'settings = { coarsen = 4 }\n[pipelines.higgs]\npaths = ["HIGGS.csv.gz"]\n')
    config = load_config(path)
    assert list(config.pipelines) == ["enso", "higgs"]
    assert config.pipelines["enso"].paths == [str(tmp_path / "cobe"), "/abs/oni.txt", "s3://bucket/cobe/"]
    assert config.pipelines["enso"].settings == {"coarsen": 4} and config.pipelines["higgs"].settings == {}


@pytest.mark.parametrize(("text", "problem"), [
    (None, "no such config file"),
    ("[pipelines.enso\n", "not TOML"),
    ('[pipelines.enso]\nsettings = {}\n', "pipelines.enso.paths: field required"),
    ('[pipelines.enso]\npaths = []\ncron = "0 0 * * *"\n', "pipelines.enso.cron: not a key of this table"),
    ('[pipelines.enso]\npaths = []\nsettings = { epochs = "x" }\n',
     "pipelines.enso.settings: --epochs: input should be a valid integer"),
    ('[pipelines.higgs]\npaths = []\nsettings = { coarsen = 4 }\n',
     "pipelines.higgs.settings: --coarsen: not an option of this task"),
])
def test_a_bad_config_file_is_one_line_naming_the_file_and_the_place(tmp_path: Path, text: str | None,
                                                                     problem: str) -> None:
    path = tmp_path / "shoal.toml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=problem) as raised:
        load_config(path)
    assert str(raised.value).startswith(str(path)) and "\n" not in str(raised.value)


def test_an_unknown_task_in_the_config_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "shoal.toml"
    path.write_text('[pipelines.weather]\npaths = ["x"]\n')
    with pytest.raises(ShoalError, match="weather"):
        load_config(path)


def test_shoal_run_without_paths_or_config_says_what_to_pass_in_one_line(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from tests.test_cli import _one_error_line, shoal

    monkeypatch.chdir(tmp_path)
    result = shoal("run", "enso", home=tmp_path / "home")
    assert result.returncode == 2
    assert _one_error_line(result) == ("error: shoal.toml: no such config file; write one (see `[pipelines.enso] "
                                       "paths = [...]` in the README's \"Scheduling and backfills\") or pass --config")

"""The `shoal` command line, run for real as a subprocess: exit codes, one-line errors, JSON."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.timeouts import scaled

NINO = Path(__file__).parent / "data" / "nino"
SMALL = NINO / "oni_small.txt"
CHANGED = NINO / "oni_small_changed.txt"
BAD = NINO / "bad_non_numeric.txt"  # '26.x1' on line 14
COLUMNS = ["month", "nino34_mean", "nino34_clim", "nino34_anom", "oni", "phase"]
HEAVY = {"deltalake", "icechunk", "xarray", "polars", "pyarrow", "prefect", "torch", "pandas", "zarr"}


def shoal(*args: str | Path, home: Path | None = None, env_home: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m shoal [--home HOME] ARGS...`; SHOAL_HOME is set only when `env_home` is given."""
    env = {key: value for key, value in os.environ.items() if key != "SHOAL_HOME"}
    env["NO_COLOR"] = "1"
    if env_home is not None:
        env["SHOAL_HOME"] = str(env_home)
    command = [sys.executable, "-m", "shoal", *(["--home", str(home)] if home is not None else []), *map(str, args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=scaled(120), check=False)


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single `error: ...` line a failed command must print, and nothing else on stderr."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- cheap to start --------------------------------------------------------------------------


def _imported_after(code: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", f"{code}; import sys; print(' '.join(sys.modules))"],
        capture_output=True, text=True, timeout=scaled(60), check=True,
    )
    return {name.split(".")[0] for name in result.stdout.split()}


def test_the_global_options_work_before_or_after_the_subcommand(tmp_path: Path) -> None:
    from shoal.cli.root import globals_first

    assert globals_first(["train", "enso", "--epochs", "2", "--debug", "--home", "H", "-q"]) == [
        "--debug", "--home", "H", "-q", "train", "enso", "--epochs", "2"]
    assert globals_first(["catalog", "list", "--home=H"]) == ["--home=H", "catalog", "list"]
    assert globals_first(["run", "enso", "--", "--debug"]) == ["run", "enso", "--", "--debug"]
    (tmp_path / "home").mkdir()
    after = shoal("train", "enso", "--home", tmp_path / "home", "--debug")
    assert after.returncode != 0 and "Traceback" in after.stderr and "run `shoal features enso` first" in after.stderr


@pytest.mark.parametrize("code", ["import shoal", "import shoal.cli"])
def test_importing_shoal_and_its_cli_loads_no_heavy_library(code: str) -> None:
    assert _imported_after(code) & HEAVY == set()


def test_importing_the_ingest_flows_and_the_task_registry_loads_no_torch() -> None:
    assert "torch" not in _imported_after("import shoal.flows.ingest; from shoal.contract import tasks; tasks()")


def test_help_exits_0_without_importing_any_heavy_library() -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "shoal", "--help"],
        capture_output=True, text=True, timeout=scaled(60), check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "ingest" in result.stdout and "catalog" in result.stdout
    # -X importtime writes 'import time: self | cumulative | <indented module>' per import
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    assert "shoal" in imported and "typer" in imported  # the parse found real imports
    assert imported & HEAVY == set()


# -- ingest ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One home where the small file, the same again, a bad file and the changed file were ingested."""
    home = tmp_path_factory.mktemp("cli") / "home"
    return SimpleNamespace(
        home=home,
        first=shoal("ingest", "oni", SMALL, home=home),
        again=shoal("ingest", "oni", SMALL, home=home),
        bad=shoal("ingest", "oni", BAD, home=home),
        changed=shoal("ingest", "oni", CHANGED, home=home),
    )


def test_ingest_commits_then_the_same_file_is_unchanged(ingested: SimpleNamespace) -> None:
    assert ingested.first.returncode == 0, ingested.first.stderr
    assert "committed" in ingested.first.stdout and "version 0" in ingested.first.stdout
    assert ingested.first.stderr == ""
    assert ingested.again.returncode == 0, ingested.again.stderr
    assert "unchanged" in ingested.again.stdout and "version 0" in ingested.again.stdout
    assert "committed " not in ingested.again.stdout
    assert ingested.changed.returncode == 0, ingested.changed.stderr
    assert "committed" in ingested.changed.stdout and "version 1" in ingested.changed.stdout


def test_ingest_of_a_bad_file_exits_2_with_one_error_line_naming_file_and_line(ingested: SimpleNamespace) -> None:
    assert ingested.bad.returncode == 2
    line = _one_error_line(ingested.bad)
    assert line.startswith(f"error: {BAD}:14: ")
    assert "'26.x1'" in line and "expected the ONI table format" in line
    assert "version 0" in ingested.bad.stdout  # the good version is still the latest


def test_ingest_of_a_bad_file_into_an_empty_home_commits_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = shoal("ingest", "oni", NINO / "bad_phase.txt", home=home)
    assert result.returncode == 2
    assert _one_error_line(result).startswith(f"error: {NINO / 'bad_phase.txt'}:25: ")
    assert not (home / "tables" / "nino34").exists()


def test_debug_shows_the_traceback_of_a_bad_file(tmp_path: Path) -> None:
    result = shoal("--debug", "ingest", "oni", BAD, home=tmp_path / "home")
    assert result.returncode == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert "SchemaError" in result.stderr
    assert f"error: {BAD}:14: " in result.stderr


def test_ingest_of_a_missing_path_exits_2_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    result = shoal("ingest", "oni", missing, home=tmp_path / "home")
    assert result.returncode == 2
    line = _one_error_line(result)
    assert line.startswith(f"error: {missing}: ") and "No such file" in line and "check the path" in line


def test_ingest_of_an_unknown_source_exits_2_naming_the_known_sources(tmp_path: Path) -> None:
    result = shoal("ingest", "nope", SMALL, home=tmp_path / "home")
    assert result.returncode == 2
    line = _one_error_line(result)
    assert "unknown source 'nope'" in line and "known sources: higgs, oni, speech, sst" in line


# -- catalog -----------------------------------------------------------------------------------


def _json(result: subprocess.CompletedProcess[str]) -> object:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_catalog_ls_json_lists_nino34_at_version_1(ingested: SimpleNamespace) -> None:
    [info] = _json(shoal("catalog", "list", "--json", home=ingested.home))
    assert (info["name"], info["kind"], info["version"]) == ("nino34", "table", 1)
    assert info["updated_at"]


def test_catalog_show_json_has_kind_schema_rows_and_lineage(ingested: SimpleNamespace) -> None:
    facts = _json(shoal("catalog", "describe", "nino34", "--json", home=ingested.home))
    assert (facts["name"], facts["kind"], facts["version"], facts["rows"]) == ("nino34", "table", 1, 24)
    assert list(facts["schema"]) == COLUMNS
    assert facts["schema"]["month"].startswith("date32") and facts["schema"]["oni"] == "double"
    [source] = facts["lineage"]["sources"]
    assert source["sha256"] == _sha256(CHANGED) and source["bytes"] == CHANGED.stat().st_size
    assert facts["lineage"]["dataset"] == "nino34" and facts["lineage"]["rows"] == 24


def test_catalog_show_version_0_json_is_the_first_file(ingested: SimpleNamespace) -> None:
    facts = _json(shoal("catalog", "show", "nino34", "--version", "0", "--json", home=ingested.home))
    assert facts["version"] == 0 and facts["rows"] == 24
    assert facts["lineage"]["sources"][0]["sha256"] == _sha256(SMALL)


def test_catalog_history_json_lists_both_versions_newest_first(ingested: SimpleNamespace) -> None:
    history = _json(shoal("catalog", "history", "nino34", "--json", home=ingested.home))
    assert [entry["version"] for entry in history] == [1, 0]
    assert [entry["lineage"]["sources"][0]["sha256"] for entry in history] == [_sha256(CHANGED), _sha256(SMALL)]


def test_catalog_lineage_json_walks_to_the_source_file(ingested: SimpleNamespace) -> None:
    node = _json(shoal("catalog", "lineage", "nino34", "--json", home=ingested.home))
    assert (node["name"], node["kind"], node["version"], node["parents"]) == ("nino34", "table", 1, [])
    assert node["lineage"]["sources"][0]["sha256"] == _sha256(CHANGED)
    assert node["lineage"]["sources"][0]["path"] == str(CHANGED.resolve())


@pytest.mark.parametrize(
    "args",
    [("ls",), ("show", "nino34"), ("show", "nino34", "--version", "0"), ("history", "nino34"), ("lineage", "nino34")],
    ids=["ls", "show", "show-v0", "history", "lineage"],
)
def test_catalog_commands_without_json_exit_0_and_name_the_dataset(ingested: SimpleNamespace, args: tuple[str, ...]) -> None:
    result = shoal("catalog", *args, home=ingested.home)
    assert result.returncode == 0, result.stderr
    assert "nino34" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("name", ["../etc", "Bad-Name"])
def test_catalog_show_of_an_invalid_name_exits_2(ingested: SimpleNamespace, name: str) -> None:
    result = shoal("catalog", "show", name, home=ingested.home)
    assert result.returncode == 2
    assert _one_error_line(result).startswith(f"error: invalid dataset name {name!r}")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("show", "missing"), "no dataset named 'missing'"),
        (("show", "nino34", "--version", "99"), "has no version 99"),
    ],
    ids=["missing", "version-99"],
)
def test_catalog_show_of_what_does_not_exist_exits_2(ingested: SimpleNamespace, args: tuple[str, ...], message: str) -> None:
    result = shoal("catalog", *args, home=ingested.home)
    assert result.returncode == 2
    assert message in _one_error_line(result)


# -- where the catalog lives --------------------------------------------------------------------


def test_shoal_home_env_is_used_without_home_option(tmp_path: Path) -> None:
    env_home = tmp_path / "env_home"
    assert shoal("ingest", "oni", SMALL, env_home=env_home).returncode == 0
    assert (env_home / "tables" / "nino34" / "_delta_log").is_dir()
    [info] = _json(shoal("catalog", "ls", "--json", env_home=env_home))
    assert info["name"] == "nino34"


def test_home_option_beats_shoal_home_env(tmp_path: Path) -> None:
    option_home, env_home = tmp_path / "option_home", tmp_path / "env_home"
    result = shoal("ingest", "oni", SMALL, home=option_home, env_home=env_home)
    assert result.returncode == 0, result.stderr
    assert (option_home / "tables" / "nino34" / "_delta_log").is_dir()
    assert not env_home.exists()


# -- step options, generated from each task's settings ----------------------------------------


def test_a_tasks_help_lists_its_own_options_with_defaults_and_another_tasks_option_is_one_line() -> None:
    enso = shoal("train", "enso", "--help")
    assert enso.returncode == 0 and "--leads" in enso.stdout and "--n-d" not in enso.stdout
    assert "Training epochs. (default 10;" in enso.stdout  # --epochs: its default (and bound), from the settings field
    features = shoal("features", "enso", "--help").stdout
    assert "--coarsen" in features and "--epochs" not in features
    line = _one_error_line(shoal("train", "enso", "--n-d", "8"))
    assert line.startswith("error: --n-d: not an option of `shoal train enso`; it takes --amp-dtype, --batch-size")
    assert _one_error_line(shoal("train", "tabnet")) == "error: unknown task 'tabnet'; known tasks: enso, higgs, speech"
    assert "--n-d" in shoal("train", "higgs", "--help").stdout


def _every_command() -> list[list[str]]:
    """Every command path of the app, groups included: `[]`, `["catalog"]`, `["catalog", "list"]`, `["train", "enso"]`."""
    import typer

    from shoal.cli import app

    root = typer.main.get_command(app)
    found, pending = [], [([], root)]
    while pending:
        path, command = pending.pop()
        found.append(path)
        if hasattr(command, "list_commands"):
            context = typer.Context(command)
            pending += [([*path, name], command.get_command(context, name)) for name in command.list_commands(context)]
    return found


def test_no_command_shows_a_bool_placeholder_beside_a_flag() -> None:
    from typer.testing import CliRunner

    from shoal.cli import app

    commands = _every_command()
    assert ["catalog", "describe"] in commands and ["train", "enso"] in commands and ["run", "all"] in commands
    for command in commands:
        result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
        assert result.exit_code == 0, (command, result.output)
        assert "--help" in result.output and "<bool>" not in result.output, (command, result.output)
    flags = CliRunner().invoke(app, ["features", "speech", "--help"], env={"COLUMNS": "200"}).output
    assert "--materialize   " in flags and "(default False)" not in flags  # a plain flag: given means on

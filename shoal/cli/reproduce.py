"""`shoal reproduce enso|higgs|speech`: fetch -> ingest -> features -> train (--preset paper) -> evaluate, and a
results file of our test skill beside the published number.

The published numbers live here, once, as data (`PUBLISHED`), each with its source. The results
(`HOME/reproduce/TASK.json` and `TASK.md`) are written by the command from the registered model's
metrics, never typed; a run with a quick-check override (`--epochs`, `--max-batches`) says in both
that its settings are NOT the paper's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from shoal.cli.output import _console
from shoal.cli.root import _catalog, _fail, app

if TYPE_CHECKING:
    from shoal.evaluation import Scoring

SST_MONTHS = ("1891-01", "2020-12")  # the analysis' COBE-SST series: 1,560 monthly files


@dataclass(frozen=True)
class Published:
    """A published number that a reproduction shows our test skill beside.

    Attributes:
        task: the shoal task.
        metric: the key of the metric of our skill rows it compares with.
        value: the published value as a fraction (0.7825 for 78.25 %), or None where no external number exists.
        measured_on: what the published number was measured on.
        source: where it was published.
        comparable: how far ours compares one-for-one with it, and why not where it does not.
        beside: the baseline shown beside ours in each group where there is no published value (ENSO: persistence).
    """

    task: str
    metric: str
    value: float | None
    measured_on: str
    source: str
    comparable: str
    beside: str | None = None


PUBLISHED = {one.task: one for one in (
    Published(
        task="higgs", metric="accuracy", value=0.7825,
        measured_on="test accuracy on the last 500,000 rows of the UCI HIGGS file",
        source="Arik & Pfister, \"TabNet: Attentive Interpretable Tabular Learning\" (AAAI 2021, arXiv:1908.07442), "
               "Table 5: TabNet-S",
        comparable="one-for-one: the same rows (--split official: test = the last 500,000 rows) and TabNet-S's "
                   "settings (--preset paper), in shoal's torch TabNet (models/tabnet.py), not the paper's "
                   "TensorFlow code; ours carries a 95% bootstrap interval, the paper's none"),
    Published(
        task="speech", metric="accuracy", value=0.877,
        measured_on="validation accuracy after 20 epochs on a random 70/30 split of the CLIPS of Speech Commands "
                    "v0.01",
        source="the Speech analysis this task reproduces (spectrogram CNN, Adadelta, batch 128, 20 epochs; "
               "README, Speech section)",
        comparable="not one-for-one: the analysis split clips at random, so the same speakers' voices sat in "
                   "training and validation and its number is optimistic; shoal does not offer that leak, and "
                   "ours is the TEST accuracy on the official lists' held-out speakers (--split official)"),
    Published(
        task="enso", metric="correlation", value=None,
        measured_on="no external published number in this project",
        source="none: this project holds no external published skill for ENSO; the analysis it follows (Keydana "
               "2021, \"Convolutional LSTM for spatial forecasting\") is reproduced in method",
        comparable="ours is shown by lead beside persistence on the same test months (from --test-start), with "
                   "the paired 95% interval of the difference",
        beside="persistence"),
)}


@dataclass(frozen=True)
class _Plan:
    """How a task is reproduced: the analysis' settings over the paper preset, and the download of its sources."""

    settings: Mapping[str, Any]
    fetch: Callable[[Path], list[Path]]  # dest -> the paths the pipeline ingests


def _fetch_sst(dest: Path) -> list[Path]:
    from shoal.cli.fetch import fetch_sst_command

    fetch_sst_command(start=SST_MONTHS[0], end=SST_MONTHS[1], dest=dest)
    return [dest]  # the pipeline ingests the folder, and the embedded real Niño 3.4 table beside it


def _fetch_higgs(dest: Path) -> list[Path]:
    from shoal.cli.fetch import fetch_higgs_command
    from shoal.datasets.higgs import HIGGS_URL

    fetch_higgs_command(dest=dest)
    return [_fetched(dest, HIGGS_URL)]


def _fetch_speech(dest: Path) -> list[Path]:
    from shoal.cli.fetch import fetch_speech_command
    from shoal.datasets.speech_commands import SPEECH_COMMANDS_URL

    fetch_speech_command(dest=dest)
    return [_fetched(dest, SPEECH_COMMANDS_URL)]


def _fetched(dest: Path, url: str) -> Path:
    """Where `shoal fetch` put the one file of `url`: under the URL's last part."""
    from shoal.download import file_items

    return dest / file_items(url)[0][1]


PLANS = {
    # Lead 1 is the analysis'; 3 to 12 show how skill falls with the lead. Coarsen 1: the analysis' 1° grid.
    "enso": _Plan({"preset": "paper", "leads": "1,3,6,9,12", "coarsen": 1}, _fetch_sst),
    "higgs": _Plan({"preset": "paper", "split": "official"}, _fetch_higgs),
    "speech": _Plan({"preset": "paper", "split": "official"}, _fetch_speech),
}


def _placed(value: float, interval: Sequence[float]) -> str:
    """Where a published value lies against our 95% interval."""
    if not all(map(math.isfinite, interval)):
        return "not comparable: our value has no interval"
    low, high = interval
    if value > high:
        return "above our interval"
    return "below our interval" if value < low else "inside our interval"


def beside(published: Published, scoring: Scoring, skill: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Our model's value of the published metric (per group), with its interval, beside the published number.

    Where the published value is None, beside `published.beside`: that baseline's value and the
    paired difference, judged as `shoal.evaluation.comparisons` judges it.
    """
    from shoal.evaluation import MODEL, comparisons

    key, group = published.metric, scoring.group
    judged = {}
    if published.beside is not None:
        pair = [row for row in skill if row["method"] in (MODEL, published.beside)]
        judged = {one.group: one for one in comparisons(scoring, pair)}
    rows = []
    for row in (row for row in skill if row["method"] == MODEL):
        at = row[group] if group else None
        entry = {"group": at, "ours": row[key], "interval": row["interval"][key], "items": row[scoring.count]}
        if published.value is not None:
            entry["published"], entry["published_is"] = published.value, _placed(published.value, entry["interval"])
        else:
            other = next(r for r in skill if r["method"] == published.beside and (group is None or r[group] == at))
            one = judged[at]
            entry[published.beside] = other[key]
            entry[f"{published.beside}_interval"] = other["interval"][key]
            entry["difference"], entry["difference_interval"] = one.difference, one.interval
            entry["outcome"] = one.outcome
        rows.append(entry)
    return rows


def results(task_name: str, *, settings: Mapping[str, Any], overrides: Mapping[str, Any], sources: Sequence[str],
            fetched: bool, trained: Mapping[str, Any], command: str) -> dict[str, Any]:
    """The results of a reproduction as JSON data: settings, provenance, our skill, the published number beside it.

    Args:
        task_name: the task.
        settings: every setting the run used (the task's parsed settings).
        overrides: the quick-check options given, which are NOT the paper's settings ({} for a faithful run).
        sources: the paths ingested.
        fetched: whether the command downloaded them.
        trained: the trained model as `shoal run --json` gives it ("model", "version", "run_id", "metrics", ...).
        command: the command line that produced the results.
    """
    from datetime import UTC, datetime

    import shoal
    from shoal.contract import get_task
    from shoal.lineage import git_sha

    task, published = get_task(task_name), PUBLISHED[task_name]
    metrics = trained["metrics"]
    table = task.skill_table(metrics)
    return {
        "task": task_name, "command": command, "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "shoal_version": shoal.__version__, "git_sha": git_sha(),
        "preset": settings["preset"], "paper_settings": not overrides, "overrides": dict(overrides),
        "settings": dict(settings), "training": dict(trained["training"]), "sources": list(sources), "fetched": fetched,
        "model": {"name": trained["model"], "version": trained["version"], "run_id": trained["run_id"],
                  "feature_version": trained["feature_version"], "reused": trained["reused"],
                  "device": metrics.get("device"), "best_epoch_number": metrics.get("best_epoch_number")},
        "skill_title": table.title, "skill": metrics["skill"], "verdict": table.verdict,
        "published": asdict(published), "group_by": task.scoring.group, "counted": task.scoring.count,
        "beside": beside(published, task.scoring, metrics["skill"]),
    }


def _table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
            *("| " + " | ".join(row) + " |" for row in rows)]


def _beside_lines(data: Mapping[str, Any]) -> list[str]:
    from shoal.evaluation import _cell  # a value with the digits its interval supports, as the skill tables show it

    published, model = data["published"], data["model"]
    metric, ours = published["metric"], f"ours: {model['name']} version {model['version']}"
    if published["value"] is not None:
        (row,) = data["beside"]
        lines = _table(["", f"{metric} [95% interval]", "measured on"], [
            ["published", f"{published['value']:g}", published["measured_on"]],
            [ours, _cell(row["ours"], row["interval"], 3), f"test, {row['items']} {data['counted']}"]])
        return [*lines, "", f"The published {metric} is {row['published_is']}."]
    baseline = published["beside"]
    return _table([data["group_by"], f"ours: {metric} [95% interval]", f"{baseline} [95% interval]",
                   "difference [95% interval]", "outcome", data["counted"]],
                  [[str(row["group"]), _cell(row["ours"], row["interval"], 3),
                    _cell(row[baseline], row[f"{baseline}_interval"], 3),
                    _cell(row["difference"], row["difference_interval"], 3), row["outcome"], str(row["items"])]
                   for row in data["beside"]])


def markdown(data: Mapping[str, Any]) -> str:
    """The results file for people, made from the JSON data `results` returned (nothing in it is typed)."""
    from dataclasses import replace

    from shoal.contract import get_task
    from shoal.evaluation import skill_table

    published, model = data["published"], data["model"]
    skill = skill_table(replace(get_task(data["task"]).scoring, title=data["skill_title"]), {"skill": data["skill"]})
    if data["paper_settings"]:
        preset = f"preset `{data['preset']}`: the paper's settings, nothing overridden."
    else:
        given = ", ".join(f"--{key.replace('_', '-')} {value}" for key, value in data["overrides"].items())
        preset = (f"**NOT the paper's settings**: preset `{data['preset']}` with {given} (a quick check run). "
                  "These numbers test the code path; they say nothing about the published number.")
    lines = [
        f"# shoal reproduce {data['task']}", "",
        f"Generated by `{data['command']}` at {data['created_at']} (shoal {data['shoal_version']}, git "
        f"{data['git_sha'] or 'unknown'}); every number here is written by the command, none is typed.", "",
        preset, "",
        "## Ours beside the published number", "",
        *_beside_lines(data), "",
        f"Published: {published['measured_on']}. Source: {published['source']}.", "",
        f"Comparable: {published['comparable']}.", "",
        "## Test skill beside the baselines", "",
        f"{skill.title}", "",
        *_table(skill.columns, skill.rows), "",
        skill.verdict, "",
        "## Run", "",
        f"- model {model['name']} version {model['version']}, run {model['run_id']}"
        f"{' (reused: an identical run had finished)' if model['reused'] else ''}, feature version "
        f"{model['feature_version']}, device {model['device']}, best epoch "
        f"{'' if model['best_epoch_number'] is None else model['best_epoch_number']}",
        f"- sources ({'fetched by the command' if data['fetched'] else 'given with --source'}): "
        f"{', '.join(data['sources'])}",
        "- settings: " + ", ".join(f"{key}={value}" for key, value in data["settings"].items()),
        "- training as run (what the settings gave on this data): "
        + ", ".join(f"{key}={value}" for key, value in data["training"].items()), "",
    ]
    return "\n".join(lines)


def write_results(folder: Path, data: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write `TASK.json` and `TASK.md` into `folder` (created), each whole or not at all; their paths."""
    from shoal.files import atomic_write

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, text in ((".json", json.dumps(data, indent=2) + "\n"), (".md", markdown(data))):
        path = folder / f"{data['task']}{suffix}"
        with atomic_write(path) as f:
            f.write(text.encode())
        written.append(path)
    return written[0], written[1]


def _command(task_name: str, source: Sequence[Path] | None, dest: Path | None, overrides: Mapping[str, Any]) -> str:
    parts = ["shoal reproduce", task_name, *(f"--source {path}" for path in source or ())]
    parts += [f"--dest {dest}"] if dest is not None else []
    parts += [f"--{key.replace('_', '-')} {value}" for key, value in overrides.items()]
    return " ".join(parts)


@app.command("reproduce")
def reproduce_command(
    task_name: Annotated[str, typer.Argument(metavar="TASK", help="enso, higgs or speech.")],
    source: Annotated[list[Path] | None, typer.Option(
        help="Source files or folders already downloaded (repeatable): skip the fetch. ENSO: COBE-SST "
             "sstYYYYMM.grb files or their folder (and a Niño 3.4 .txt table; default the embedded one); HIGGS: "
             "the UCI file; Speech: the v0.01 archive or folder.")] = None,
    dest: Annotated[Path | None, typer.Option(
        help="Folder for the fetched files; default HOME/sources/TASK (a complete file there is not fetched "
             "again).")] = None,
    epochs: Annotated[int | None, typer.Option(
        min=1, help="Quick check: train N epochs. NOT the paper's settings; the results say so.")] = None,
    max_batches: Annotated[int | None, typer.Option(
        min=1, help="Quick check: stop each epoch after N batches. NOT the paper's settings; the results say so.")]
        = None,
) -> None:
    """Reproduce a published number: fetch -> ingest -> features -> train (--preset paper) -> evaluate on test.

    Writes HOME/reproduce/TASK.json and TASK.md: the settings, shoal's version and git commit,
    the model version, our test skill with 95% intervals and the verdict against the baselines,
    and the published number beside ours with its source. A full run needs the network, disk
    and a GPU (docs/reproduce.md).
    """
    from shoal.cli.pipeline import _run
    from shoal.contract import get_task

    if task_name not in PLANS:
        _fail(f"no published number to reproduce for {task_name!r}; expected one of {', '.join(PLANS)}")
    for path in source or ():
        if not path.exists():
            _fail(f"--source {path}: no such file or folder")
    task, plan, catalog = get_task(task_name), PLANS[task_name], _catalog()
    overrides = {key: value for key, value in (("epochs", epochs), ("max_batches", max_batches)) if value is not None}
    given = {**plan.settings, **overrides}
    settings = task.parse(given)  # one line on a bad setting, before anything is downloaded
    paths = list(source) if source else plan.fetch(dest or catalog.local / "sources" / task_name)
    facts = _run(task_name, paths, given)
    if facts["failures"]:
        _fail(f"{len(facts['failures'])} source file(s) failed to ingest; no results written: a reproduction needs "
              "every file (fetch them again, or fix --source)", code=1)
    data = results(task_name, settings=settings.model_dump(mode="json"), overrides=overrides,
                   sources=[str(path) for path in paths], fetched=not source, trained=facts["model"],
                   command=_command(task_name, source, dest, overrides))
    written = write_results(catalog.local / "reproduce", data)
    _console().print(f"results: {written[0]} and {written[1]}", markup=False, highlight=False)

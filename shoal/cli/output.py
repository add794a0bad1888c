"""What the commands print: the console, JSON, progress bars, ingest reports, skill tables, models, predictions."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import typer

from shoal.cli.root import _catalog, _State

if TYPE_CHECKING:
    from shoal.sources import IngestReport


def _console():  # noqa: ANN202 (rich is imported lazily)
    from rich.console import Console

    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _reporter(*, enabled: bool = True):  # noqa: ANN202 (rich is imported lazily)
    """A progress bar on the console: off with `enabled=False`, `--quiet`, or stdout not a terminal."""
    from shoal.progress import RichReporter

    return RichReporter(_console(), enabled=enabled and not _State.quiet)


def _report(report: IngestReport, *, exit_on_failure: bool = True) -> None:
    from shoal.staging import shown

    console = _console()
    for label, paths in (("[green]committed[/]", report.committed), ("[dim]unchanged[/]", report.unchanged)):
        for path in paths[:5]:
            console.print(f"{label} {shown(str(path))}")
        if len(paths) > 5:
            console.print(f"{label} … and {len(paths) - 5} more")
    for failure in report.failures:
        typer.echo(f"error: {shown(failure)}", err=True)
    state = f"version {report.version}" if report.version is not None else "no version yet"
    console.print(f"{report.dataset}: {state}; {len(report.committed)} committed, "
                  f"{len(report.unchanged)} unchanged, {len(report.failures)} failed")
    if report.exit_code and exit_on_failure:
        raise typer.Exit(report.exit_code)


def _print_skill(task: Any, metrics: dict[str, Any]) -> None:
    from rich.table import Table

    skill = task.skill_table(metrics)
    table = Table(*skill.columns, title=skill.title)
    for row, model in zip(skill.rows, skill.model_rows or (False,) * len(skill.rows), strict=True):
        table.add_row(*row, style="bold" if model else None)
    console = _console()
    console.print(table)
    console.print(skill.verdict, markup=False, highlight=False)


def _print_trained(task: Any, trained: Any) -> None:
    from shoal.lineage import version_label

    entry = trained.entry
    console = _console()
    features = f"{entry.feature_dataset} {version_label(_catalog(), entry.feature)}"
    if trained.reused:
        console.print(f"reused model {entry.name} version {entry.version} on {features}: run {trained.run_id} already "
                      "finished with these inputs and settings (--retrain trains a new version)",
                      markup=False, highlight=False)
    else:
        console.print(f"registered model {entry.name} version {entry.version} on {features} (run {trained.run_id}, "
                      f"best epoch {entry.metrics['best_epoch_number']}, {entry.metrics['device']})",
                      markup=False, highlight=False)
    _print_skill(task, dict(entry.metrics))


def _print_predicted(entry: Any, predicted: Any) -> None:
    done = "unchanged, already written by" if predicted.reused else "from"
    _console().print(f"{predicted.table} version {predicted.version}: {predicted.rows} rows {done} model {entry.name} "
                     f"version {entry.version}; plots: {', '.join(map(str, predicted.plots))}",
                     markup=False, highlight=False)


def _trained_facts(trained: Any) -> dict[str, Any]:
    """A trained (or reused) model as `--json` prints it."""
    entry = trained.entry
    return {"model": entry.name, "version": entry.version, "run_id": trained.run_id, "reused": trained.reused,
            "feature_version": entry.feature_version, "training": entry.config.get("train", {}), "metrics": entry.metrics}

"""`shoal drift TASK`: the data ingested after a feature version's training period against its training data."""

from __future__ import annotations

from typing import Annotated

import typer

from shoal.cli.output import _console, _print_json
from shoal.cli.root import _catalog, app


@app.command("drift")
def drift_command(
    task: Annotated[str, typer.Argument(help="The task whose features to check: enso, higgs or speech.")],
    since: Annotated[str | None, typer.Option(
        help="First month of new data, YYYY-MM (grids; default: the month after the training period).")] = None,
    version: Annotated[str | None, typer.Option(
        help="The feature version whose training data is the reference (default: the newest).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Compare new data with a feature version's training data per variable and region; exit 1 on drift."""
    from shoal.drift import drift

    chosen = int(version) if version is not None and version.isdigit() else version
    report = drift(_catalog().must_exist(), task, version=chosen, since=since)
    if as_json:
        _print_json(report.to_dict())
    else:
        _console().print(report.markdown(), markup=False, highlight=False)
    if report.drifted:
        raise typer.Exit(1)

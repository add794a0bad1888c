"""`shoal run TASK|all`: the whole pipeline of a task as the Prefect flow `pipeline`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from shoal.cli.output import _console, _print_predicted, _print_trained, _report
from shoal.cli.root import _catalog
from shoal.cli.steps import _step

if TYPE_CHECKING:
    from distributed import Client


@_step("run", options=("retrain", "config", "cluster"), paths=True)
def run_command(task_name: str, given: dict[str, Any], *, paths: list[str] | None, retrain: bool,
                config: Path | None, cluster: str | None) -> None:
    """The whole pipeline as a Prefect flow: ingest -> features -> train -> predict; TASK 'all': every configured one.

    Paths and settings not given come from the config file ([pipelines.TASK] in shoal.toml);
    a stage whose inputs and settings are unchanged is skipped, and the output says so.
    With --cluster the flow runs on a DaskTaskRunner and its ingest stages decode on the workers.
    """
    from shoal.cluster import connect, parse
    from shoal.config import DEFAULT, load_config
    from shoal.errors import ShoalError
    from shoal.contract import get_task

    spec = parse(cluster) if cluster else None
    if task_name == "all" and paths:
        raise typer.BadParameter("`run all` takes each pipeline's paths from the config; pass no PATH",
                                 param_hint="PATHS")
    pipelines = load_config(config or DEFAULT).pipelines if (config or task_name == "all" or not paths) else {}
    names = list(pipelines) if task_name == "all" else [task_name]
    if not names:
        raise typer.BadParameter(f"{config or DEFAULT} configures no pipeline; add a [pipelines.TASK] table",
                                 param_hint="--config")
    failed = []
    with connect(spec) as client:
        for name in names:
            configured = pipelines.get(name)
            if not paths and configured is None:
                raise typer.BadParameter(f"no source paths for {name}: pass them, or configure [pipelines.{name}] "
                                         "paths", param_hint="PATHS")
            known = get_task(name).settings.model_fields
            settings = {**(configured.settings if configured else {}),
                        **{key: value for key, value in given.items() if task_name != "all" or key in known}}
            if len(names) > 1:
                _console().rule(f"pipeline {name}")
            try:
                _run(name, paths or configured.paths, settings, retrain=retrain, client=client)
            except typer.Exit as stop:
                if stop.exit_code:
                    failed.append(name)
            except ShoalError as error:  # with `all`, a pipeline that cannot run does not stop the others
                if len(names) == 1:
                    raise
                typer.echo(f"error: {name}: {error}", err=True)
                failed.append(name)
    if failed:
        if len(names) > 1:
            _console().print(f"failed: {', '.join(failed)}; the other pipelines ran", markup=False, highlight=False)
        raise typer.Exit(1)


def _run(task_name: str, paths: list[str | Path], given: dict[str, Any], *, retrain: bool = False,
         client: Client | None = None) -> None:
    """The pipeline flow of one task; with a Dask `client`, on a DaskTaskRunner to its cluster."""
    from shoal.flows.ingest import on_cluster
    from shoal.flows.pipelines import pipeline
    from shoal.staging import staged
    from shoal.contract import get_task

    task = get_task(task_name)
    task.parse(given)  # one-line errors before Prefect starts
    flow = on_cluster(pipeline, client)
    with staged(paths) as local:
        result = flow(task_name=task_name, paths=local, home=_catalog().home, settings=given, retrain=retrain)
        for report in result.ingests:
            _report(report, exit_on_failure=False)
    features = result.features
    _console().print(f"features: version {features.snapshot} ({'unchanged: reused' if features.reused else 'new'})",
                     markup=False, highlight=False)
    _print_trained(task, result.trained)
    _print_predicted(result.trained.entry, result.predicted)
    if result.failures:
        raise typer.Exit(1)

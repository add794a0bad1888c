"""`shoal run TASK|all`: the whole pipeline of a task as the Prefect flow `pipeline`.

`run` takes the options of the steps it runs (features, train, evaluate, predict), declared
once in their `@_step`s, less those it leaves, each with the reason a user who gives it reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from shoal.cli.operations import _cluster
from shoal.cli.output import (_console, _print_json, _print_predicted, _print_trained, _report, _reporter,
                              _trained_facts)
from shoal.cli.root import _catalog
from shoal.cli.step_commands import _check_nproc, _with_params
from shoal.cli.steps import _step

if TYPE_CHECKING:
    from distributed import Client


@_step("run", options=("config",), paths=True, inherits=("features", "train", "evaluate", "predict"),
       leaves={"model_version": "the pipeline predicts with the model it has just trained; `shoal predict {task} "
                                "--model-version V` predicts with another"})
def run_command(task_name: str, given: dict[str, Any], *, paths: list[str] | None, config: Path | None,
                cluster: str | None, feature_version: str | None, run_id: str | None, restart: bool, retrain: bool,
                params: str | None, nproc: int | None, as_json: bool, force: bool) -> None:
    """The whole pipeline as a Prefect flow: ingest -> features -> train -> predict; TASK 'all': every configured one.

    Paths and settings not given come from the config file (the table pipelines.TASK of shoal.toml);
    a stage whose inputs and settings are unchanged is skipped, and the output says so.
    With --cluster the flow runs on a DaskTaskRunner and its ingest stages decode on the workers.
    The options of train and predict mean what they mean there, for every pipeline of `all`
    (--params best: options given here or in the config win); --feature-version trains on that
    version, not on the one the features stage built.
    With --json, one JSON object: the pipeline's (with `all`, one per pipeline, by name).
    """
    from shoal.cluster import connect
    from shoal.config import DEFAULT, load_config
    from shoal.contract import get_task
    from shoal.errors import ShoalError

    spec = _cluster(cluster, True, f"run {task_name}")
    if task_name == "all" and paths:
        raise typer.BadParameter("`run all` takes each pipeline's paths from the config; pass no PATH",
                                 param_hint="PATHS")
    pipelines = load_config(config or DEFAULT).pipelines if (config or task_name == "all" or not paths) else {}
    names = list(pipelines) if task_name == "all" else [task_name]
    if not names:
        raise typer.BadParameter(f"{config or DEFAULT} configures no pipeline; add a [pipelines.TASK] table",
                                 param_hint="--config")
    failed, done = [], {}
    with connect(spec) as client:
        for name in names:
            configured = pipelines.get(name)
            if not paths and configured is None:
                raise typer.BadParameter(f"no source paths for {name}: pass them, or configure [pipelines.{name}] "
                                         "paths", param_hint="PATHS")
            task = get_task(name)
            if len(names) > 1 and not as_json:
                _console().rule(f"pipeline {name}")
            try:
                settings = _with_params(task, configured.settings if configured else {}, params, feature_version)
                settings |= {key: value for key, value in given.items()
                             if task_name != "all" or key in task.settings.model_fields}
                done[name] = _run(name, paths or configured.paths, settings, client=client, as_json=as_json,
                                  feature_version=feature_version, run_id=run_id, restart=restart, retrain=retrain,
                                  nproc=nproc, force=force)
                if done[name]["failures"]:
                    failed.append(name)
            except ShoalError as error:  # with `all`, a pipeline that cannot run does not stop the others
                if len(names) == 1:
                    raise
                typer.echo(f"error: {name}: {error}", err=True)
                done[name] = {"task": name, "error": str(error)}
                failed.append(name)
    if as_json:
        _print_json(done if task_name == "all" else done[task_name])
    if failed:
        if len(names) > 1 and not as_json:
            _console().print(f"failed: {', '.join(failed)}; the other pipelines ran", markup=False, highlight=False)
        raise typer.Exit(1)


def _run(task_name: str, paths: list[str | Path], given: dict[str, Any], *, client: Client | None = None,
         as_json: bool = False, feature_version: str | None = None, run_id: str | None = None, restart: bool = False,
         retrain: bool = False, nproc: int | None = None, force: bool = False) -> dict[str, Any]:
    """Run the pipeline flow of one task and print what it did (nothing with `as_json`); return that as JSON data.

    With a Dask `client`, on a DaskTaskRunner to its cluster. Input files that failed are in
    the result's "failures" (and on stderr); a pipeline that cannot run raises.
    """
    from dataclasses import asdict

    from shoal.contract import get_task
    from shoal.flows.ingest import on_cluster
    from shoal.flows.pipelines import pipeline
    from shoal.flows.terminal import on_terminal
    from shoal.staging import shown, shown_in, staged

    task = get_task(task_name)
    settings = task.parse(given)  # one-line errors before Prefect starts
    if nproc is not None and nproc > 1:
        _check_nproc(settings, nproc)
    flow = on_cluster(pipeline, client)
    with staged(paths) as local:
        with _reporter(enabled=not as_json) as bar, on_terminal(bar, bar.live_console):  # `shoal train`'s bar
            result = flow(task_name=task_name, paths=local, home=_catalog().home, settings=given, retrain=retrain,
                          feature_version=feature_version, run_id=run_id, restart=restart, nproc=nproc, force=force)
        for report in result.ingests:
            if as_json:
                for failure in report.failures:
                    typer.echo(f"error: {shown(failure)}", err=True)
            else:
                _report(report, exit_on_failure=False)
        facts = shown_in({"task": task_name, "ingests": [asdict(report) for report in result.ingests],
                          "features": asdict(result.features), "model": _trained_facts(result.trained),
                          "predictions": asdict(result.predicted), "failures": list(result.failures)})
    if not as_json:
        features = result.features
        trained_on = (f"; the model trained on version {feature_version} (--feature-version)"
                      if feature_version is not None else "")
        snapshot = "" if features.snapshot == str(features.version) else f" (snapshot {features.snapshot})"
        _console().print(f"features: version {features.version}{snapshot} "
                         f"({'unchanged: reused' if features.reused else 'new'})"
                         f"{trained_on}", markup=False, highlight=False)
        _print_trained(task, result.trained)
        _print_predicted(result.trained.entry, result.predicted)
    return facts

"""The step commands' machinery: `shoal STEP TASK ...`, one command per registered task, made when asked for.

A step (`features`, `train`, ...) is a function registered with `@_step`; each task's options
come from its settings class (`shoal.task_options`), the step's own from `_STEP_OPTIONS` by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core
import typer.main

from shoal.cli.root import app

# Options of the step itself, not of the task.
_STEP_OPTIONS: dict[str, tuple[Any, Any]] = {
    "feature_version": (str | None, typer.Option(help="Feature version (number or snapshot id); default the newest.")),
    "model_version": (int | None, typer.Option(help="Registered model version; default the newest.")),
    "run_id": (str | None, typer.Option(help="Training run id; default derived from the inputs and settings.")),
    "restart": (bool, typer.Option("--restart", help="Discard the run's checkpoints and start from epoch 0.")),
    "retrain": (bool, typer.Option("--retrain", help="Train and register anew even if an identical run finished.")),
    "force": (bool, typer.Option("--force", help="Predict again: a new version replaces this model version's rows.")),
    "as_json": (bool, typer.Option("--json", help="Print JSON instead of a table.")),
    "params": (str | None, typer.Option(help="'best': the settings of the best `shoal tune` trial (options given win).")),
    "trials": (int, typer.Option(help="Trials to run (added to an interrupted study).")),
    "sample_fraction": (float, typer.Option(help="Fraction of the train and valid rows each trial sees.")),
    "timeout": (float | None, typer.Option(help="Stop starting trials after this many seconds.")),
    "config": (Path | None, typer.Option(help="The pipelines' config file (default ./shoal.toml).")),
    "nproc": (int | None, typer.Option(min=1, help="Train on N processes of this machine (DistributedDataParallel: "
                                                   "NCCL on GPUs, gloo on the CPU); --batch-size is their sum.")),
    "cluster": (str | None, typer.Option(help="Spread over a Dask cluster: local[:N] or tcp://HOST:PORT (the SST "
                                              "ingest and the ENSO features; training and predictions run here).")),
}


_STEPS: dict[str, tuple[Any, tuple[str, ...], bool]] = {}  # step -> (fn, its own options, takes PATHS)


class _StepGroup(typer.core.TyperGroup):
    """`shoal STEP TASK ...`: one command per registered task (and `all` for `run`), made when asked for.

    `shoal --help` loads no task; `shoal STEP --help` lists them; `shoal STEP TASK --help`
    shows that task's options only (`shoal.task_options`).
    """

    def list_commands(self, ctx: Any) -> list[str]:
        from shoal.contract import tasks

        return sorted(tasks()) + (["all"] if self.name == "run" else [])

    def get_command(self, ctx: Any, name: str) -> Any:
        from shoal.contract import get_task, tasks
        from shoal.task_options import fields

        if name == "all" and self.name == "run":  # every task's options; each pipeline takes those it knows
            settings: dict[str, Any] = {}
            for task in tasks().values():
                settings |= {key: info for key, info in fields(task, "run").items() if key not in settings}
        else:
            settings = fields(get_task(name), self.name)  # an unknown task is one line naming the known ones
        return _task_command(self.name, name, settings)


class _TaskCommand(typer.core.TyperCommand):
    """One step of one task: an option it does not take is one line naming those it does."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        from shoal.contract import SettingsError

        known = {option for param in self.get_params(ctx) for option in getattr(param, "opts", ())}
        for arg in args:
            if arg == "--":
                break
            if arg.startswith("--") and arg.split("=")[0] not in known:
                taken = ", ".join(sorted(option for option in known if option.startswith("--") and option != "--help"))
                raise SettingsError(f"{arg.split('=')[0]}: not an option of `shoal {ctx.parent.info_name} "
                                    f"{self.name}`; it takes {taken}")
        return super().parse_args(ctx, args)


def _task_command(step: str, task_name: str, settings: dict[str, Any]) -> Any:
    """The command `shoal STEP TASK`: the task's options from its settings, then the step's own."""
    import inspect

    from shoal.task_options import annotation

    fn, options, paths = _STEPS[step]
    parameters = []
    if paths:
        parameters.append(inspect.Parameter(
            "paths", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=Annotated[
                list[str] | None, typer.Argument(help="Source files or folders (local paths or URLs); default "
                                                      "the config's.")]))
    for key, info in settings.items():
        parameters.append(inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, annotation=annotation(key, info),
                                            default=False if info.annotation is bool else None))
    for option in options:
        kind, info = _STEP_OPTIONS[option]
        parameters.append(inspect.Parameter(option, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[kind, info],
                                            default=False if kind is bool else None))

    def command(**values: Any) -> None:
        given = {key: values.pop(key) for key in settings}
        fn(task_name, {key: value for key, value in given.items() if value is not None and value is not False},
           **values)

    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    one = typer.Typer(add_completion=False)
    one.command(task_name, cls=_TaskCommand, help=fn.__doc__)(command)
    return typer.main.get_command(one)


def _step(name: str, *, options: tuple[str, ...], paths: bool = False) -> Any:
    """Register `fn(task, given, **step_options)` as `shoal NAME TASK [PATHS] [OPTIONS]`, a command per task.

    The task's options come from its settings class; the step's own from `_STEP_OPTIONS` by
    name, so that every step spells an option the same way. Task options the user gave reach
    `fn` as the dict `given`.
    """

    def decorate(fn: Any) -> Any:
        _STEPS[name] = (fn, options, paths)
        app.add_typer(typer.Typer(cls=_StepGroup, help=fn.__doc__, no_args_is_help=True), name=name)
        return fn

    return decorate

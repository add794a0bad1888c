"""The step commands' machinery: `shoal STEP TASK ...`, one command per registered task, made when asked for.

A step (`features`, `train`, ...) is a function registered with `@_step`; each task's options
come from its settings class (`shoal.task_options`), the step's own from `_STEP_OPTIONS` by name.
A step that runs others (`run`) inherits their options, less those it declares it leaves.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core
import typer.main

from shoal.cli.root import PlainFlagsGroup, app, plain_flags

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
    "trials": (int | None, typer.Option(min=1, help="Trials to run (default 8; added to an interrupted study).")),
    "sample_fraction": (float | None, typer.Option(min=0.0, max=1.0, help=(
        "Fraction of the train and valid rows each trial sees, in (0, 1] (default 0.001)."))),
    "timeout": (float | None, typer.Option(min=0.0, help="Stop starting trials after this many seconds.")),
    "config": (Path | None, typer.Option(help="The pipelines' config file (default ./shoal.toml).")),
    "nproc": (int | None, typer.Option(min=1, help="Train on N processes of this machine (DistributedDataParallel: "
                                                   "NCCL on GPUs, gloo on the CPU); --batch-size is their sum.")),
    "cluster": (str | None, typer.Option(help="Spread over a Dask cluster: local[:N] or tcp://HOST:PORT (the SST "
                                              "ingest and the ENSO features; training and predictions run here).")),
}


@dataclass(frozen=True)
class _Step:
    fn: Callable[..., None]
    options: tuple[str, ...]  # its own, then those it inherits: names in _STEP_OPTIONS
    paths: bool  # takes PATHS
    leaves: dict[str, str]  # options of the steps it inherits that it does not take -> why


_STEPS: dict[str, _Step] = {}


class _StepGroup(PlainFlagsGroup):
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

    def get_params(self, ctx: Any) -> list[Any]:
        return plain_flags(super().get_params(ctx))

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        from shoal.contract import SettingsError

        known = {option for param in self.get_params(ctx) for option in getattr(param, "opts", ())}
        step = ctx.parent.info_name
        left = {_flag(option): why for option, why in _STEPS[step].leaves.items()} if step in _STEPS else {}
        for arg in args:
            if arg == "--":
                break
            if arg.startswith("--") and (given := arg.split("=")[0]) not in known:
                if given in left:
                    raise SettingsError(f"{given}: not an option of `shoal {step} {self.name}`: "
                                        f"{left[given].format(task=self.name)}")
                taken = ", ".join(sorted(option for option in known if option.startswith("--") and option != "--help"))
                raise SettingsError(f"{given}: not an option of `shoal {step} {self.name}`; it takes {taken}")
        return super().parse_args(ctx, args)


def _task_command(step: str, task_name: str, settings: dict[str, Any]) -> Any:
    """The command `shoal STEP TASK`: the task's options from its settings, then the step's own."""
    from shoal.task_options import annotation

    fn, options, paths = _STEPS[step].fn, _STEPS[step].options, _STEPS[step].paths
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


def _flag(option: str) -> str:
    """How a step option is spelled: its declared flag (`as_json` -> `--json`), else `--model-version`."""
    info = _STEP_OPTIONS[option][1]  # in an Annotated option, typer reads a first argument "--x" as its flag
    declared = [text for text in (info.default, *info.param_decls) if isinstance(text, str) and text.startswith("--")]
    return declared[0] if declared else "--" + option.replace("_", "-")


def _step(name: str, *, options: tuple[str, ...], paths: bool = False, inherits: tuple[str, ...] = (),
          leaves: dict[str, str] | None = None) -> Any:
    """Register `fn(task, given, **step_options)` as `shoal NAME TASK [PATHS] [OPTIONS]`, a command per task.

    The task's options come from its settings class; the step's own from `_STEP_OPTIONS` by
    name, so that every step spells an option the same way. Task options the user gave reach
    `fn` as the dict `given`.

    A step that runs the steps `inherits` (registered before it) takes their options too, but
    those in `leaves` (option -> why: the one line a user who gives it reads; `{task}` is the
    task's name). `fn`'s keyword arguments must be exactly the options: an option added to an
    inherited step fails here, at import, until `fn` takes it or leaves it with a reason.
    """
    leaves = leaves or {}

    def decorate(fn: Any) -> Any:
        taken = list(options)
        for other in inherits:
            if other not in _STEPS:
                raise TypeError(f"`shoal {name}` inherits the options of `{other}`: register `{other}` first")
            taken += [option for option in _STEPS[other].options if option not in taken and option not in leaves]
        inherited = {option for other in inherits for option in _STEPS[other].options}
        keywords = {parameter.name for parameter in inspect.signature(fn).parameters.values()
                    if parameter.kind is parameter.KEYWORD_ONLY} - ({"paths"} if paths else set())
        if keywords != set(taken) or not set(leaves) <= inherited:
            raise TypeError(f"`shoal {name}` takes the options {sorted(taken)} (leaving {sorted(leaves)}, of the steps "
                            f"it inherits {sorted(inherited)}); {fn.__name__} takes {sorted(keywords)}")
        _STEPS[name] = _Step(fn=fn, options=tuple(taken), paths=paths, leaves=leaves)
        app.add_typer(typer.Typer(cls=_StepGroup, help=fn.__doc__, no_args_is_help=True), name=name)
        return fn

    return decorate

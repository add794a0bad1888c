"""Command-line options generated from a task's settings class: which fields a step takes, and how.

`shoal STEP TASK` takes: `features` the task's `feature_fields`; `train` and `tune` the other
fields (and the shared ones, e.g. `--seed`); `evaluate` and `predict` the device; `run` every
field. Each option has the field's type, default, bounds and description, so a task added
later brings its options with it and `shoal train TASK --help` shows only that task's.
"""

from __future__ import annotations

import typing
from typing import TYPE_CHECKING, Annotated, Any

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

    from shoal.contract import Task


def fields(task: Task, step: str) -> dict[str, FieldInfo]:
    """The settings fields of `task` that `step` takes as options, by name."""
    from shoal.contract import TaskSettings

    every, features = task.settings.model_fields, task.settings.feature_fields
    if step == "features":
        names = list(features)
    elif step in ("train", "tune"):
        names = [name for name in every if name not in features or name in TaskSettings.model_fields]
    elif step in ("evaluate", "predict"):
        names = ["device"]
    else:
        names = list(every)
    return {name: every[name] for name in names}


def flag(name: str) -> str:
    """The option a field is spelled as: `batch_size` -> `--batch-size`."""
    return "--" + name.replace("_", "-")


def annotation(name: str, info: FieldInfo) -> Any:
    """The typer annotation of a field's option. Not given (None, or False for a flag) = the task's default;
    the value is validated by the settings class, so a bad one is one line naming the option."""
    import typer

    limits = [f"{symbol} {getattr(item, attr)}" for item in info.metadata
              for attr, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if hasattr(item, attr)]
    default = ",".join(map(str, info.default)) if isinstance(info.default, tuple) else info.default
    text = f"{info.description or ''} (default {default}{'; ' if limits else ''}{', '.join(limits)})".strip()
    if info.annotation is bool:  # a plain flag: given is on, so "(default False)" would say nothing
        return Annotated[bool, typer.Option(flag(name), help=info.description or "", show_default=False)]
    union = typing.get_origin(info.annotation) in (typing.Union, __import__("types").UnionType)
    plain = [kind for kind in (typing.get_args(info.annotation) if union else (info.annotation,)) if kind in (int, float)]
    return Annotated[(plain[0] if plain else str) | None, typer.Option(flag(name), help=text, show_default=False)]

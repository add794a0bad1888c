"""`shoal.toml`: which pipelines `shoal run all` runs, on which files and settings; what `shoal serve` schedules.

```toml
[pipelines.enso]
paths = ["data/cobe", "data/oni.txt"]     # relative to this file
settings = { coarsen = 4, epochs = 10 }   # the step options, spelled as in the CLI (with _)

[pipelines.higgs]
paths = ["data/higgs/HIGGS.csv.gz"]

[serve.sst]                               # `shoal serve`: the newest SST months, monthly
source = "data/cobe"
cron = "0 6 5 * *"

[serve.train]                             # train + predict: weekly, and on every NEW feature version
tasks = ["enso"]
cron = "0 3 * * 1"
work_pool = "gpu"                         # optional: run them on that pool's workers, not in `shoal serve`
```

Pipelines run in the file's order. Settings given on the command line win over the file's.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from shoal.errors import ShoalError
from shoal.settings import is_url

DEFAULT = Path("shoal.toml")


class ConfigError(ShoalError):
    """The config file is missing, not TOML, or not what shoal expects."""


class PipelineConfig(BaseModel):
    """One task's pipeline: its source files or folders and its settings."""

    model_config = ConfigDict(extra="forbid")
    paths: list[str]  # local (relative to the config file's folder) or URLs such as s3://bucket/cobe/
    settings: dict[str, Any] = {}


class SstSchedule(BaseModel):
    """`shoal serve`: the newest SST months (and the Niño 3.4 table) from a folder, on a cron schedule."""

    model_config = ConfigDict(extra="forbid")
    source: Path  # a folder of sstYYYYMM.grb, e.g. kept up to date by `shoal fetch sst`
    oni: Path | None = None  # the Niño 3.4 table file; default the embedded real one
    start: str | None = None  # the first month when nothing is stored yet; default the folder's oldest file
    cron: str = "0 6 5 * *"  # 06:00 UTC on the 5th of each month
    fetch: bool = False  # download the months after the newest stored into `source` first (`shoal fetch sst`'s way)
    base_url: str | None = None  # where to download them from; default JMA/TCC's COBE-SST folders


class TrainSchedule(BaseModel):
    """`shoal serve`: train + predict for each task, weekly, and whenever a NEW feature version is built."""

    model_config = ConfigDict(extra="forbid")
    tasks: list[str] = ["enso"]
    cron: str = "0 3 * * 1"  # Mondays 03:00 UTC
    work_pool: str | None = None  # a Prefect work pool (e.g. of GPU workers): deploy there instead of serving here


class ServeConfig(BaseModel):
    """The `[serve]` tables."""

    model_config = ConfigDict(extra="forbid")
    sst: SstSchedule | None = None
    train: TrainSchedule = TrainSchedule()


class ShoalConfig(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid")
    pipelines: dict[str, PipelineConfig] = {}
    serve: ServeConfig = ServeConfig()


def load_config(path: Path = DEFAULT) -> ShoalConfig:
    """Read and check a config file; relative paths are taken from its folder.

    Raises:
        ConfigError: one line naming the file, the place and the fix.
    """
    path = Path(path)
    example = "see `[pipelines.enso] paths = [...]` in the README's \"Scheduling and backfills\""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file; write one ({example}) or pass --config") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not TOML: {error}; fix the file") from None
    try:
        config = ShoalConfig.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        place = ".".join(str(part) for part in first["loc"])
        message = "not a key of this table" if first["type"] == "extra_forbidden" else first["msg"].lower()
        raise ConfigError(f"{path}: {place}: {message}; {example}") from None
    from shoal.contract import SettingsError, get_task

    for name in [*config.pipelines, *config.serve.train.tasks]:
        get_task(name)  # an unknown task fails here, with the registry's one-line hint
    for name, pipeline in config.pipelines.items():
        try:
            get_task(name).parse(pipeline.settings)
        except SettingsError as error:  # the file and the table, then the option as the CLI spells it
            raise ConfigError(f"{path}: pipelines.{name}.settings: {error}") from None

    def near(p: Path) -> Path:
        return p if p.is_absolute() else path.parent / p

    sst = config.serve.sst
    if sst is not None:
        sst = sst.model_copy(update={"source": near(sst.source), "oni": near(sst.oni) if sst.oni else None})
    return config.model_copy(update={
        "pipelines": {name: PipelineConfig(paths=[p if is_url(p) else str(near(Path(p))) for p in pipeline.paths],
                                           settings=pipeline.settings)
                      for name, pipeline in config.pipelines.items()},
        "serve": config.serve.model_copy(update={"sst": sst})})

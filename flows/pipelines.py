"""Generic Prefect flows over the task registry: features, train, predict, and the whole pipeline.

Each flow takes the task's name and its settings as a plain dict (the same names as the
command-line options, e.g. {"coarsen": 4, "leads": "1,3,6"}), validated by the task's
pydantic settings at the flow boundary; each Prefect task is one call into the generic run
functions of `shoal.models.runs`. No flow knows a task by name.

Run by a command on a terminal (`on_terminal`), the tasks move the command's progress bar (every
batch, the validation phase, as `shoal train` shows them) and Prefect's log lines print above it.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event
from prefect.logging.handlers import PrefectConsoleHandler

from shoal import cluster
from shoal.catalog import Catalog
from shoal.errors import ShoalError
from shoal.flows.ingest import SHOWN, IngestFailed, _transient, flow_dask_client, ingest_source
from shoal.models.runs import Trained, predict_model, train_model
from shoal.progress import NullReporter, Reporter
from shoal.sources import IngestReport
from shoal.threads import apply_threads
from shoal.contract import FeatureBuild, Predicted, Task, get_task

if TYPE_CHECKING:
    from rich.console import Console


# A command's terminal while it runs a flow in its own process (`shoal run`, `shoal backfill`, the demo): the
# command wraps the flow call in `on_terminal(bar, console)`. While its bar is live on `console`, the tasks
# report their steps to it (`cli_bar`), and Prefect's console handler prints through that console, so that a
# log line lands above the bar, never on the bar's own line. Records that the command prints itself afterwards
# (its summary, its `error:` lines) are logged with `extra=SHOWN`: they still reach the Prefect API (the UI's
# flow-run log), not this console a second time. A flow run started elsewhere (a deployment, the UI) has no bar
# and hides nothing.

_bar: ContextVar[Reporter | None] = ContextVar("shoal_cli_bar", default=None)


def cli_bar() -> Reporter | None:
    """The live progress bar of the command running this flow; None without one (not a terminal, `--quiet`,
    a run started elsewhere).

    A function, not the ContextVar itself: a DaskTaskRunner pickles a flow with every global it names, and a
    ContextVar does not pickle (a function of this module does, by name).
    """
    return _bar.get()


class _AboveBar(io.TextIOBase):
    """A stream whose whole lines print through `console`, so above its live bar, in the colours written to it.

    Not rich's own FileProxy: a Console given one writes to the file behind it (rich unwraps it).
    """

    def __init__(self, console: Console, file: IO[str]) -> None:
        self.console, self.file, self.partial = console, file, ""

    def write(self, text: str) -> int:
        from rich.text import Text

        *lines, self.partial = (self.partial + text).split("\n")
        for line in lines:
            self.console.print(Text.from_ansi(line), soft_wrap=True)
        return len(text)

    def isatty(self) -> bool:
        return self.file.isatty()


class _HideShown(logging.Filter):
    """Hides what the command prints itself: records marked SHOWN, and the tracebacks Prefect logs for a
    ShoalError (the command prints its one line; `--debug` its traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (getattr(record, "shoal_shown", False) or isinstance(error, ShoalError))


def _console_handlers() -> list[PrefectConsoleHandler]:
    loggers = [logging.getLogger(), *(found for found in logging.Logger.manager.loggerDict.values()
                                      if isinstance(found, logging.Logger))]
    handlers = {id(h): h for logger in loggers for h in logger.handlers if isinstance(h, PrefectConsoleHandler)}
    return list(handlers.values())


@contextmanager
def on_terminal(bar: Reporter, console: Console | None) -> Iterator[None]:
    """While a command runs a flow here: records logged with `extra=SHOWN` and Prefect's tracebacks of a
    ShoalError stay off the console (the command prints them); when `bar` is live on `console` (None: no live bar), the tasks report to it and Prefect's
    console lines print above it."""
    handlers, hide = _console_handlers(), _HideShown()
    files = [handler.console.file for handler in handlers]
    token = _bar.set(None if console is None else bar)
    try:
        for handler in handlers:
            handler.addFilter(hide)
            if console is not None:  # the handler's own colours and format, written out through the bar's console
                handler.console.file = _AboveBar(console, handler.console.file)
        yield
    finally:
        for handler, file in zip(handlers, files, strict=True):
            handler.removeFilter(hide)
            handler.console.file = file
        _bar.reset(token)


class RunLogReporter(NullReporter):
    """Progress for the Prefect UI: one run-log line per finished stage (an epoch, a feature build).

    Nothing per batch: a log line per batch would flood the UI.
    """

    def finish(self, message: str) -> None:
        """Log the stage's closing line."""
        get_run_logger().info(message)


class BarAndRunLog(RunLogReporter):
    """The bar of the command running the flow (`shoal run` on a terminal): every step and phase, and each
    stage's closing line where the bar was, as `shoal train` shows them; the run log still gets that line,
    for the Prefect API (not for the console again: the bar printed it)."""

    def __init__(self, bar: Reporter) -> None:
        self.bar = bar

    def start(self, description: str, total: int | None) -> None:
        """Start the bar's stage."""
        self.bar.start(description, total)

    def advance(self, steps: int = 1, status: str = "") -> None:
        """Move the bar."""
        self.bar.advance(steps, status)

    def finish(self, message: str) -> None:
        """The closing line on the bar's console; the run log's copy for the API only."""
        self.bar.finish(message)
        get_run_logger().info(message, extra=SHOWN)


def stage_reporter() -> Reporter:
    """Where a task's stages report: the command's bar when it has a live one, else the run log."""
    bar = cli_bar()
    return RunLogReporter() if bar is None else BarAndRunLog(bar)


# The event a feature build emits when it made a NEW version: `shoal serve`'s train + predict
# deployments are triggered by it (a build skipped as unchanged emits nothing).
NEW_FEATURES = "shoal.features.new"


@task(retries=1, retry_delay_seconds=1, retry_condition_fn=_transient)
def features_task(task_name: str, home: str | None, settings: dict[str, Any]) -> FeatureBuild:
    """Build or reuse the task's feature version of the newest inputs; a new one is announced as an event."""
    apply_threads()
    chosen = get_task(task_name)
    catalog = Catalog(home)
    build = cluster.on(flow_dask_client(), chosen.build_features, spreads=chosen.spreads)(catalog, chosen.parse(settings), stage_reporter())
    if not build.reused:
        emit_event(event=NEW_FEATURES, resource={"prefect.resource.id": f"shoal.features.{task_name}",
                                                 "shoal.home": catalog.home},
                   payload={"task": task_name, "version": build.version, "snapshot": build.snapshot})
    return build


@task
def train_task(task_name: str, home: str | None, settings: dict[str, Any], feature_version: str | None,
               retrain: bool, run_id: str | None = None, restart: bool = False, nproc: int | None = None) -> Trained:
    """Train (or resume, or reuse) and register the task's model; with `nproc` > 1 on that many processes (DDP).

    The arguments mean what `shoal train`'s options of the same names do.
    """
    if nproc is not None and nproc > 1:
        from shoal.models.distributed import launch

        trained = launch(nproc, train_rank, task_name, home, settings, feature_version, run_id, restart, retrain)
    else:
        chosen = get_task(task_name)
        trained = train_model(Catalog(home), chosen, chosen.parse(settings), feature_version=feature_version,
                              run_id=run_id, restart=restart, retrain=retrain, reporter=stage_reporter())
    entry = trained.entry
    get_run_logger().info("model %s version %s (%s), run %s", entry.name, entry.version,
                          "reused" if trained.reused else "new", trained.run_id, extra=SHOWN)
    return trained


def train_rank(task_name: str, home: str | None, settings: dict[str, Any], feature_version: str | None,
               run_id: str | None, restart: bool, retrain: bool) -> Trained | None:
    """`train_model` in one of the processes `train_task` launches; rank 0 returns the registered model.

    Module-level with positional arguments, as torch's launcher starts it in each process. The
    processes are not the flow run's, so their epochs are not in its log (the model line is).
    """
    chosen = get_task(task_name)
    return train_model(Catalog(home), chosen, chosen.parse(settings), feature_version=feature_version, run_id=run_id,
                       restart=restart, retrain=retrain, reporter=NullReporter())


@task
def predict_task(task_name: str, home: str | None, model_version: int | None, device: str,
                 force: bool = False) -> Predicted:
    """Write the predictions of a registered model (not again for a model version that has them, unless `force`)."""
    apply_threads()
    _, predicted = predict_model(Catalog(home), get_task(task_name), model_version=model_version, device=device,
                                 force=force)
    get_run_logger().info("%s version %s (%s): %d rows; plots %s", predicted.table, predicted.version,
                          "unchanged: skipped" if predicted.reused else "new", predicted.rows,
                          [str(p) for p in predicted.plots], extra=SHOWN)
    return predicted


@flow(name="build-features", flow_run_name="{task_name}-features")
def build_features(task_name: str, home: str | None = None, settings: dict[str, Any] | None = None) -> FeatureBuild:
    """Build (or reuse) a task's features from the newest inputs."""
    get_task(task_name).parse(settings or {})
    return features_task(task_name, home, settings or {})


@flow(name="train-model", flow_run_name="{task_name}-train")
def train(task_name: str, home: str | None = None, settings: dict[str, Any] | None = None,
          feature_version: str | None = None, retrain: bool = False) -> Trained:
    """Train a task's model on a feature version (default the newest)."""
    get_task(task_name).parse(settings or {})
    return train_task(task_name, home, settings or {}, feature_version, retrain)


@flow(name="predict", flow_run_name="{task_name}-predict")
def predict(task_name: str, home: str | None = None, model_version: int | None = None,
            device: str = "auto") -> Predicted:
    """Write the predictions of a task's registered model (default the newest)."""
    return predict_task(task_name, home, model_version, device)


@dataclass(frozen=True)
class PipelineResult:
    """What `pipeline` did: every ingest report, the features, the model, the predictions."""

    ingests: tuple[IngestReport, ...]
    features: FeatureBuild
    trained: Trained
    predicted: Predicted

    @property
    def failures(self) -> tuple[str, ...]:
        """One line per input that failed to ingest (the rest were committed and used)."""
        return tuple(failure for report in self.ingests for failure in report.failures)


@flow(name="pipeline", flow_run_name="{task_name}-pipeline")
def pipeline(task_name: str, paths: list[Path], home: str | None = None, settings: dict[str, Any] | None = None,
             retrain: bool = False, feature_version: str | None = None, run_id: str | None = None,
             restart: bool = False, nproc: int | None = None, force: bool = False) -> PipelineResult:
    """Ingest -> features -> train -> predict for one task, each step a Prefect task.

    Bad input files are reported and the good ones used: the pipeline stops only when a
    source committed nothing at all (nor had anything unchanged). On a `DaskTaskRunner`
    (`shoal run TASK --cluster ...`) the ingests of sources that spread decode on its workers,
    and a feature build that spreads (ENSO) reads its inputs there; the training and the
    predictions run in this process either way (on `nproc` processes of this machine, the training).

    `retrain`, `run_id`, `restart` and `nproc` are `shoal train`'s; `force` is `shoal predict`'s.
    `feature_version` trains on that version instead of the one the features stage built (which
    still runs, so the store holds the features of the newest inputs).
    """
    settings = settings or {}
    chosen = get_task(task_name)
    parsed = chosen.parse(settings)
    reports = []
    for source, source_paths in chosen.sources(paths):
        report = ingest_source(source=source, paths=source_paths, home=home)
        if report.exit_code == 2:
            raise IngestFailed("; ".join(report.failures) or f"{source}: nothing to ingest in {source_paths}")
        reports.append(report)
    features = features_task(task_name, home, settings)
    trained = train_task(task_name, home, settings, feature_version or features.snapshot, retrain, run_id, restart,
                         nproc)
    predicted = predict_task(task_name, home, trained.entry.version, parsed.device, force)
    result = PipelineResult(ingests=tuple(reports), features=features, trained=trained, predicted=predicted)
    create_markdown_artifact(key=f"{task_name}-pipeline", markdown=summary(chosen, result),
                             description=f"{task_name}: test skill beside the baselines, versions, plots")
    return result


def summary(chosen: Task, result: PipelineResult) -> str:
    """The run's artifact: the test skill table with its baselines, every version it used or made, its plots."""
    entry, skill = result.trained.entry, chosen.skill_table(dict(result.trained.entry.metrics))
    lines = [f"### {skill.title}", "", "| " + " | ".join(skill.columns) + " |", "|" + "---|" * len(skill.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in skill.rows]
    lines += ["", skill.verdict, "", "| stage | version | |", "|---|---|---|"]
    lines += [f"| ingest {r.dataset} | {r.version} | {len(r.committed)} committed, {len(r.unchanged)} unchanged, "
              f"{len(r.failures)} failed |" for r in result.ingests]
    lines += [f"| features | {result.features.snapshot} | {'unchanged' if result.features.reused else 'new'} |",
              f"| model {entry.name} | {entry.version} | {'unchanged' if result.trained.reused else 'new'} "
              f"(run {result.trained.run_id}) |",
              f"| {result.predicted.table} | {result.predicted.version} | "
              f"{'unchanged' if result.predicted.reused else 'new'} |", "", "Plots:", ""]
    lines += [f"- `{path}`" for path in result.predicted.plots]
    return "\n".join(lines)

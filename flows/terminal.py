"""A command's terminal while it runs a flow in its own process (`shoal run`, `shoal backfill`, the demo).

The command wraps the flow call in `on_terminal(bar, console)`. While its bar is live on `console`, the tasks
report their steps to it (`cli_bar`, `stage_reporter`), and Prefect's console handler prints through that
console, so that a log line lands above the bar, never on the bar's own line. Records that the command prints
itself afterwards (its summary, its `error:` lines) are logged with `extra=SHOWN`: they still reach the Prefect
API (the UI's flow-run log), not this console a second time. A flow run started elsewhere (a deployment, the UI)
has no bar, hides nothing, and logs one run-log line per stage (`RunLogReporter`).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import IO, TYPE_CHECKING

from prefect import get_run_logger
from prefect.logging.handlers import PrefectConsoleHandler

from shoal.errors import ShoalError
from shoal.flows.ingest import SHOWN
from shoal.progress import NullReporter, Reporter

if TYPE_CHECKING:
    from rich.console import Console

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

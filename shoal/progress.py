"""Progress of long work: core code reports through a `Reporter`, the caller decides how it shows.

The CLI shows a rich progress bar (off when stdout is not a terminal, or with `--quiet`);
flows send one log line per finished stage or epoch to the Prefect run logger, and, run by
a command on a terminal, move that command's bar too (`shoal.flows.terminal.on_terminal`); library
callers get nothing unless they pass a reporter. A stage may name its current phase as
`advance(0, status=...)` (the training: "validating" once an epoch's batches are done).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID


class Reporter(Protocol):
    """What long-running core functions call; every method must be cheap."""

    def start(self, description: str, total: int | None) -> None:
        """A new stage of `total` steps (None: unknown) begins."""

    def advance(self, steps: int = 1, status: str = "") -> None:
        """`steps` more steps of the current stage are done; `status` is a short live note."""

    def finish(self, message: str) -> None:
        """The current stage is over; `message` says how it ended (an epoch's losses, a version)."""


class NullReporter:
    """Reports nothing."""

    def start(self, description: str, total: int | None) -> None:
        """Ignore."""

    def advance(self, steps: int = 1, status: str = "") -> None:
        """Ignore."""

    def finish(self, message: str) -> None:
        """Ignore."""


NULL = NullReporter()


class RichReporter:
    """A rich progress bar per stage; each stage's closing message stays printed where its bar was.

    Use as a context manager. `enabled=False` (or no terminal) prints only the closing messages.
    `terminal`: whether `console` writes to a terminal the bar may draw on (None: whether stdout is one).
    """

    def __init__(self, console: Console, *, enabled: bool = True, terminal: bool | None = None) -> None:
        self.console = console
        self.enabled = enabled and (sys.stdout.isatty() if terminal is None else terminal)
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> RichReporter:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TextColumn("{task.fields[status]}"), console=self.console,
                                      transient=True)
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    @property
    def live_console(self) -> Console | None:
        """The console the bar draws on; None when it draws none (what else prints meanwhile must go through it)."""
        return self.console if self.enabled else None

    def start(self, description: str, total: int | None) -> None:
        """Replace the bar with a new one."""
        if self._progress is not None:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(description, total=total, status="")

    def advance(self, steps: int = 1, status: str = "") -> None:
        """Move the bar."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=steps, status=status)

    def finish(self, message: str) -> None:
        """Print the stage's closing line in place of its bar (no finished bar lingers over the next work)."""
        if self._progress is not None and self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None
        self.console.print(message, markup=False, highlight=False)

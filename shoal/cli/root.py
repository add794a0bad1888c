"""The root command `shoal`: its global options (--home, --threads, --debug, --quiet), one-line errors, the entry point.

The command groups register themselves on `app` (`shoal/cli/__init__.py` imports them).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from shoal.errors import ShoalError

if TYPE_CHECKING:
    from shoal.catalog import Catalog

PREFECT_NO_SERVER = "Timed out while attempting to connect to ephemeral Prefect API server"  # prefect's RuntimeError

def plain_flags(params: list[Any]) -> list[Any]:
    """Flags without a type column: typer's rich help shows `<bool>` beside each, as if it took a value."""
    for param in params:
        if getattr(param, "is_flag", False):
            param.metavar = ""  # rich help shows the metavar instead of the type
    return params


class PlainFlagsGroup(typer.core.TyperGroup):
    """A command group whose help, and the help of every command it holds, shows flags as plain flags."""

    def get_params(self, ctx: Any) -> list[Any]:
        return plain_flags(super().get_params(ctx))

    def get_command(self, ctx: Any, name: str) -> Any:
        command = super().get_command(ctx, name)
        if command is not None:
            plain_flags([*command.params, command.get_help_option(ctx)])
        return command


app = typer.Typer(
    cls=PlainFlagsGroup,
    help="shoal: a data pipeline and feature store for scientific ML.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


class _State:
    home: str | None = None
    debug: bool = False
    quiet: bool = False


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    if not _State.debug:
        # A storage error inside Zarr's event loop (a full disk, say) leaves coroutines that
        # are reported at exit, one traceback each: the line above says what happened.
        import warnings

        warnings.simplefilter("ignore")
        sys.unraisablehook = lambda _: None
    sys.exit(code)


def _catalog() -> Catalog:
    from shoal.catalog import Catalog

    return Catalog(_State.home)


@app.callback()
def main(
    home: Annotated[str | None, typer.Option(help="Catalog home (path or URL); default $SHOAL_HOME, else ~/.local/share/shoal.")] = None,
    threads: Annotated[str | None, typer.Option(
        metavar="N", help="Compute threads (torch, BLAS, OpenMP); default $SHOAL_THREADS, else $OMP_NUM_THREADS, else "
                          "the cores that other jobs leave free (at least 1).")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars (they are off anyway when stdout is not a terminal).")] = False,
) -> None:
    """shoal: a data pipeline and feature store for scientific ML."""
    from shoal.threads import apply_threads, parse_count

    _State.home, _State.debug, _State.quiet = home, debug, quiet
    if debug:  # an ingest turns a bad file into a report line; its traceback is logged here
        import logging

        logging.getLogger("asyncio").setLevel(logging.NOTSET)
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("shoal").setLevel(logging.DEBUG)
    apply_threads(None if threads is None else parse_count(threads, name="--threads"))


GLOBAL_FLAGS, GLOBAL_VALUED = ("--debug", "--quiet", "-q"), ("--home", "--threads")


def globals_first(args: list[str]) -> list[str]:
    """`args` with the root's options moved before the subcommand, so `shoal train enso --debug` means
    `shoal --debug train enso` (nothing after a `--` moves)."""
    moved, rest, i = [], [], 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        if arg in GLOBAL_FLAGS or ("=" in arg and arg.split("=", 1)[0] in GLOBAL_VALUED):
            moved.append(arg)
        elif arg in GLOBAL_VALUED and i + 1 < len(args):
            moved += args[i:i + 2]
            i += 1
        else:
            rest.append(arg)
        i += 1
    return moved + rest


def run() -> None:
    """Console entry point: one-line errors, exit code 2 when nothing was done.

    A failed command ends without the interpreter's finalization, after the exit handlers (a Prefect
    server started for the command is stopped): a thread of a Rust runtime (Delta's and Icechunk's
    tokio) that a storage error left busy can call into Python while it finalizes and abort the
    process, so a full disk ended in SIGABRT instead of its exit code, about one run in three.
    """
    try:
        _run_app()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
        if code and not _State.debug:
            import atexit

            sys.stdout.flush()
            sys.stderr.flush()
            atexit._run_exitfuncs()  # noqa: SLF001 - what a normal exit runs first, without what follows it
            os._exit(code)
        raise


def _run_app() -> None:
    import logging

    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # the pending tasks of such an error (see _fail)
    try:
        app(args=globals_first(sys.argv[1:]), prog_name="shoal")  # click handles usage errors (exit 2) and typer.Exit
    except ShoalError as error:
        if _State.debug:
            raise
        _fail(f"{error}")
    except Exception as error:
        if _State.debug:
            raise
        from shoal.errors import home_failure
        from shoal.settings import resolve_home

        if str(error).startswith(PREFECT_NO_SERVER):  # the server started through shoal.flows, which set the timeout
            _fail(f"Prefect's temporary API server did not answer within PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
                  f" ({os.environ['PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS']} s): on a busy machine "
                  "raise it (export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=300), or start one (`prefect server "
                  "start`) and export PREFECT_API_URL=http://127.0.0.1:4200/api")
        failure = home_failure(error, resolve_home(_State.home))  # e.g. a checkpoint that did not fit on the disk
        _fail(f"{failure}" if failure else f"unexpected {type(error).__name__}: {error} (rerun with --debug for the "
                                           "traceback)")

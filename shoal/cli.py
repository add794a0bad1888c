"""The `shoal` command line: ingest, inspect the catalog, run the demo.

Exit codes: 0 success; 1 some inputs failed and the rest were committed; 2 nothing done.
Errors print one line (no traceback unless --debug). Heavy imports live inside commands.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.core
import typer.main

from shoal.errors import ShoalError

if TYPE_CHECKING:
    from distributed import Client

    from shoal.catalog import Catalog, LineageNode
    from shoal.sources import IngestReport

app = typer.Typer(
    help="shoal: a data pipeline and feature store for scientific ML.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
catalog_app = typer.Typer(help="Inspect datasets, versions and lineage.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
VersionOpt = Annotated[str | None, typer.Option("--version", "-v", help="A version number or snapshot id.")]
ClusterOpt = Annotated[str | None, typer.Option(
    help="Decode on a Dask cluster: local[:N] (a LocalCluster of N worker processes, default one per core) or "
         "tcp://HOST:PORT (a running scheduler whose workers reach the home); still one commit.")]


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


def _console():  # noqa: ANN202 (rich is imported lazily)
    from rich.console import Console

    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@app.callback()
def main(
    home: Annotated[str | None, typer.Option(help="Catalog home (path or URL); default $SHOAL_HOME, else ~/.local/share/shoal.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars (they are off anyway when stdout is not a terminal).")] = False,
) -> None:
    """shoal: a data pipeline and feature store for scientific ML."""
    _State.home, _State.debug, _State.quiet = home, debug, quiet
    if debug:  # an ingest turns a bad file into a report line; its traceback is logged here
        import logging

        logging.getLogger("asyncio").setLevel(logging.NOTSET)
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("shoal").setLevel(logging.DEBUG)


def _report(report: IngestReport, *, exit_on_failure: bool = True) -> None:
    from shoal.staging import shown

    console = _console()
    for label, paths in (("[green]committed[/]", report.committed), ("[dim]unchanged[/]", report.unchanged)):
        for path in paths[:5]:
            console.print(f"{label} {shown(str(path))}")
        if len(paths) > 5:
            console.print(f"{label} … and {len(paths) - 5} more")
    for failure in report.failures:
        typer.echo(f"error: {shown(failure)}", err=True)
    state = f"version {report.version}" if report.version is not None else "no version yet"
    console.print(f"{report.dataset}: {state}; {len(report.committed)} committed, "
                  f"{len(report.unchanged)} unchanged, {len(report.failures)} failed")
    if report.exit_code and exit_on_failure:
        raise typer.Exit(report.exit_code)


@app.command()
def ingest(
    source: Annotated[str, typer.Argument(help="A registered source, e.g. 'oni'.")],
    paths: Annotated[list[str], typer.Argument(
        help="Files or folders to ingest: local paths, or URLs (s3://bucket/cobe/, gs://..., https://...).")],
    cluster: ClusterOpt = None,
    follow_links: Annotated[bool, typer.Option(
        "--follow-links", help="Read what symbolic links inside source folders point to (default: refuse each link, "
                               "one line each).")] = False,
) -> None:
    """Ingest source files into the catalog (one commit per call)."""
    from shoal.cluster import connect, on
    from shoal.sources import get_source
    from shoal.staging import staged

    chosen = get_source(source)
    spec = _cluster(cluster, chosen.spreads, f"ingest {source}")
    catalog = _catalog()
    with staged(paths) as local, connect(spec) as client:
        with _reporter() as reporter:
            reporter.start(f"ingest {source}", total=len(chosen.expand(local, follow_links=follow_links)))
            report = on(client, chosen.ingest, spreads=chosen.spreads)(catalog, local, progress=lambda _path: reporter.advance(),
                                               follow_links=follow_links)
        _report(report)


@app.command()
def backfill(
    source: Annotated[str, typer.Argument(help="What to backfill: 'sst' (COBE-SST months).")],
    folder: Annotated[Path, typer.Option("--source", help="The folder of sstYYYYMM.grb files.")],
    start: Annotated[str, typer.Option(help="First month, YYYY-MM.")],
    end: Annotated[str, typer.Option(help="Last month, YYYY-MM.")],
    chunk: Annotated[int, typer.Option(min=1, help="Months per Prefect task.")] = 120,
    concurrency: Annotated[int | None, typer.Option(
        min=1, help="Tasks at a time; default 2, or the cluster's worker threads with --cluster.")] = None,
    force: Annotated[bool, typer.Option(help="Re-ingest months already stored from an identical file.")] = False,
    features: Annotated[bool, typer.Option(help="Build the ENSO features (default settings) once at the end.")] = False,
    cluster: ClusterOpt = None,
) -> None:
    """Backfill a range of months as the Prefect flow 'backfill-sst': chunks of months, one commit; exit 1 if any failed."""
    if source != "sst":
        raise typer.BadParameter(f"{source!r}: only 'sst' can be backfilled", param_hint="SOURCE")
    from shoal.cluster import connect, parse, workers

    spec = parse(cluster) if cluster else None
    from shoal.flows.backfill import backfill_sst, reporter  # (Prefect: ~2 s, after the one-line errors)
    from shoal.flows.ingest import on_cluster

    with connect(spec) as client, _reporter() as bar:
        flow = on_cluster(backfill_sst, client)
        token = reporter.set(bar)
        try:
            report = flow(source=folder, start=start, end=end, home=_catalog().home, chunk=chunk,
                          concurrency=concurrency or (workers(client) if client else 2), force=force,
                          features={} if features else None)
        finally:
            reporter.reset(token)
    _report(report, exit_on_failure=False)
    if report.failures:
        raise typer.Exit(1)


@app.command()
def serve(
    config: Annotated[Path, typer.Option(help="The config file: its serve.sst, serve.train and pipelines tables.")] = Path(
        "shoal.toml"),
    insecure: Annotated[bool, typer.Option(help="Serve against a non-loopback Prefect API without authentication.")] = False,
) -> None:
    """Serve the pipelines as Prefect deployments (schedules and triggers from the config) until Ctrl-C."""
    from shoal.config import load_config
    from shoal.flows.deployments import serve_pipelines

    serve_pipelines(load_config(config), _catalog().home, insecure=insecure,
                    started=lambda line: _console().print(line, markup=False, highlight=False))


@app.command("backfill-slots")
def backfill_slots(
    deployment: Annotated[str, typer.Argument(help="FLOW/DEPLOYMENT, e.g. refresh-sst/newest-sst.")],
    since: Annotated[str, typer.Option(help="First instant, ISO 8601 (UTC when no offset), e.g. 2026-01-01.")],
    until: Annotated[str | None, typer.Option(help="End instant, excluded; default now.")] = None,
) -> None:
    """Create the flow runs a deployment's cron schedule missed between two instants (a rerun creates none)."""
    import datetime as dt

    from shoal.flows.deployments import backfill_slots as create

    def instant(text: str, name: str) -> dt.datetime:
        try:
            value = dt.datetime.fromisoformat(text)
        except ValueError:
            raise typer.BadParameter(f"{text!r} is not an ISO 8601 instant, e.g. 2026-01-01T06:00", param_hint=name) from None
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)

    runs = create(deployment, instant(since, "--since"), instant(until, "--until") if until else dt.datetime.now(dt.UTC))
    for slot, run_id in runs:
        _console().print(f"{slot.isoformat()}  flow run {run_id}", markup=False, highlight=False)
    _console().print(f"{deployment}: {len(runs)} slot(s)", markup=False, highlight=False)


@catalog_app.command("list")
@catalog_app.command("ls", hidden=True)
def catalog_ls(as_json: JsonFlag = False) -> None:
    """List every dataset with its kind and latest version."""
    from dataclasses import asdict

    from rich.table import Table

    from shoal.catalog import DatasetInfo
    from shoal.models.registry import model_versions

    catalog = _catalog().must_exist()
    latest = {entry.name: entry for entry in model_versions(catalog)}  # sorted by version: the last one stays
    found = [*catalog.list(), *(DatasetInfo(name=e.name, kind="model", version=e.version, updated_at=e.created_at)
                                for e in latest.values())]
    if as_json:
        _print_json([asdict(info) for info in found])
        return
    table = Table("name", "kind", "version", "updated")
    for info in found:
        table.add_row(info.name, info.kind, str(info.version), info.updated_at)
    _console().print(table)


def _model(name: str) -> list[Any]:
    """The registered versions of `name` when it names a model and no dataset, else []."""
    from shoal.models.registry import model_versions

    catalog = _catalog().must_exist()
    return [] if catalog.exists(name) else model_versions(catalog, name)


def _model_facts(entry: Any) -> dict[str, Any]:
    return {"name": entry.name, "kind": "model", "version": entry.version, "architecture": entry.architecture,
            "feature": f"{entry.feature_dataset} ({entry.feature_kind}) version {entry.feature_version}",
            "run_id": entry.run_id, "created_at": entry.created_at, "checkpoint": str(entry.checkpoint),
            "checkpoint_sha256": entry.checkpoint_sha256, "config": entry.config,
            "metrics": {k: v for k, v in entry.metrics.items() if k != "history"},
            "lineage": {"inputs": [{"name": "model_registry", "kind": "table", "version": entry.registry_version},
                                   {"name": entry.feature_dataset, "kind": entry.feature_kind,
                                    "version": entry.feature_version}]}}


@catalog_app.command("describe")
@catalog_app.command("show", hidden=True)
def catalog_show(name: str, version: VersionOpt = None, as_json: JsonFlag = False) -> None:
    """Kind, schema or dims, rows or shape, and lineage of one version (of a dataset or a registered model)."""
    if models := _model(name):
        chosen = [m for m in models if version is None or str(m.version) == version]
        if not chosen:
            raise typer.BadParameter(f"model {name} has no version {version}; it has "
                                     f"{', '.join(str(m.version) for m in models)}", param_hint="--version")
        facts = _model_facts(chosen[-1])
    else:
        facts = _catalog().must_exist().describe(name, version=version)
    if as_json:
        _print_json(facts)
        return
    console = _console()
    lineage = facts.pop("lineage")
    for key, value in facts.items():
        if isinstance(value, dict):
            console.print(f"[bold]{key}[/]:")
            for inner_key, inner in value.items():
                console.print(f"  {inner_key}: {inner}")
        else:
            console.print(f"[bold]{key}[/]: {value}")
    if lineage:
        console.print("[bold]lineage[/]:")
        for key, value in lineage.items():
            if key in ("sources", "inputs") and value:
                console.print(f"  {key}:")
                for item in value:
                    console.print("    " + " ".join(f"{k}={v}" for k, v in item.items()))
            else:
                console.print(f"  {key}: {value}")


@catalog_app.command("history")
def catalog_history(name: str, as_json: JsonFlag = False) -> None:
    """Every version of a dataset (or of a registered model), newest first."""
    from dataclasses import asdict

    from rich.table import Table

    if models := _model(name):
        if as_json:
            _print_json([_model_facts(m) for m in reversed(models)])
            return
        table = Table("version", "created", "run", "trained on", title=f"{name}: registered versions, newest first")
        for m in reversed(models):
            table.add_row(str(m.version), m.created_at, m.run_id, f"{m.feature_dataset} version {m.feature_version}")
        _console().print(table)
        return
    versions = _catalog().must_exist().history(name)
    if as_json:
        _print_json([asdict(v) for v in versions])
        return
    table = Table("version", "created", "what", "rows / shape", "sources", title=f"{name}: versions, newest first")
    for entry in versions:
        lineage = entry.lineage
        size = "" if lineage is None else str(lineage.rows if lineage.rows is not None else lineage.shape)
        names = [] if lineage is None else [Path(s.path).name for s in lineage.sources]
        sources = ", ".join(names) if len(names) <= 3 else f"{names[0]} … {names[-1]} ({len(names)} files)"
        what = (lineage.message if lineage and lineage.message else getattr(entry, "operation", ""))
        table.add_row(str(entry.version), entry.created_at, what, size, sources)
    _console().print(table)


@catalog_app.command("check")
def catalog_check(
    repair: Annotated[bool, typer.Option("--repair", help="Remove files no commit references (never a committed "
                                                            "version's).")] = False,
    grace: Annotated[float, typer.Option(min=0, help="Object-store homes: leave unreferenced files younger than this "
                                                     "many seconds (a write may be in progress).")] = 3600.0,
) -> None:
    """Open every table and array, check each version's lineage and inputs, list files no commit references; exit 1 on findings."""
    from shoal.check import check

    catalog = _catalog().must_exist()
    report = check(catalog, repair=repair, grace=grace)
    for line in report.repaired:
        typer.echo(f"repaired: {line}")
    for line in report.notes:
        typer.echo(f"note: {line}")
    for line in report.findings:
        typer.echo(line)
    if not report.clean:
        raise typer.Exit(1)
    typer.echo(f"{catalog.home}: clean")


def _tree(node: LineageNode, branch: Any) -> None:
    label = f"[bold]{node.name}[/] ({node.kind}) version {node.version}"
    if node.lineage is not None:
        label += f" — {node.lineage.created_at}, shoal {node.lineage.shoal_version}"
    child = branch.add(label)
    if node.lineage is not None:
        sources = node.lineage.sources
        for source in sources[:3]:
            child.add(f"file {source.path} sha256 {source.sha256[:16]}… {source.bytes} bytes")
        if len(sources) > 3:
            child.add(f"… and {len(sources) - 3} more files (`shoal catalog describe {node.name} --json` lists them)")
    for parent in node.parents:
        _tree(parent, child)


@catalog_app.command("lineage")
def catalog_lineage(name: str, version: VersionOpt = None, as_json: JsonFlag = False) -> None:
    """Walk a version's inputs back to its source files."""
    from dataclasses import asdict

    from rich.tree import Tree

    node = _catalog().must_exist().lineage_tree(name, version=version)
    if as_json:
        _print_json(asdict(node))
        return
    root = Tree("lineage")
    _tree(node, root)
    _console().print(root)


# -- task step commands: generic over the task registry (shoal.contract) ----------------------

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


def _reporter():  # noqa: ANN202 (rich is imported lazily)
    from shoal.progress import RichReporter

    return RichReporter(_console(), enabled=not _State.quiet)


def _print_skill(task: Any, metrics: dict[str, Any]) -> None:
    from rich.table import Table

    skill = task.skill_table(metrics)
    table = Table(*skill.columns, title=skill.title)
    for row, model in zip(skill.rows, skill.model_rows or (False,) * len(skill.rows), strict=True):
        table.add_row(*row, style="bold" if model else None)
    console = _console()
    console.print(table)
    console.print(skill.verdict, markup=False, highlight=False)


def _cluster(value: str | None, spreads: bool, what: str) -> Any:
    """The parsed `--cluster` value; None, with a one-line note, where the step does not spread (runs here anyway)."""
    from shoal.cluster import parse

    spec = parse(value) if value else None
    if spec is not None and not spreads:
        typer.echo(f"note: {what} runs in this process (it does not spread over a cluster); no cluster started",
                   err=True)
        return None
    return spec


@_step("features", options=("cluster",))
def features_command(task_name: str, given: dict[str, Any], *, cluster: str | None) -> None:
    """Build (or reuse) the task's feature version from the newest inputs (ENSO: the SST read on --cluster's workers)."""
    from shoal.cluster import connect, on
    from shoal.contract import get_task

    task = get_task(task_name)
    settings = task.parse(given)
    spec = _cluster(cluster, task.spreads, f"features {task_name}")
    with connect(spec) as client, _reporter() as reporter:
        on(client, task.build_features, spreads=task.spreads)(_catalog(), settings, reporter)


@_step("train", options=("feature_version", "run_id", "restart", "retrain", "params", "nproc",
                         "as_json"))
def train_command(task_name: str, given: dict[str, Any], *, feature_version: str | None, run_id: str | None,
                  restart: bool, retrain: bool, params: str | None, nproc: int | None, as_json: bool) -> None:
    """Train the task's model (resuming an interrupted identical run), evaluate it on test, register it.

    With --nproc N on N processes; `torchrun --nproc-per-node N -m shoal train ...` works too.
    """
    from shoal.contract import get_task

    task = get_task(task_name)
    if params not in (None, "best"):
        _fail(f"--params: expected 'best' (the best `shoal tune {task_name}` trial), got {params!r}")
    if params == "best":
        from shoal.models.tune import best_params

        given = {**best_params(_catalog(), task), **given}
    settings = task.parse(given)
    arguments = (task_name, given, _catalog().home, _State.quiet, feature_version, run_id, restart, retrain)
    if nproc is not None and nproc > 1:
        from shoal.models.distributed import check_batch, env_world, launch

        if env_world()[1] > 1:
            _fail(f"--nproc {nproc}: this process is already one of the {env_world()[1]} that torchrun started; "
                  "pass --nproc to shoal or --nproc-per-node to torchrun, not both")
        check_batch(settings.batch_size, nproc)  # one line now rather than from every rank
        trained = launch(nproc, _train_rank, *arguments)
    else:
        trained = _train_rank(*arguments)
    if trained is None:  # another rank of a torchrun launch: rank 0 reports
        return
    entry = trained.entry
    if as_json:
        _print_json({"model": entry.name, "version": entry.version, "run_id": trained.run_id, "reused": trained.reused,
                     "feature_version": entry.feature_version, "metrics": entry.metrics})
        return
    _print_trained(task, trained)


@_step("tune", options=("trials", "sample_fraction", "timeout"))
def tune_command(task_name: str, given: dict[str, Any], *, trials: int, sample_fraction: float,
                 timeout: float | None) -> None:
    """Search the task's hyperparameters with Optuna on a sample, scored on valid; resumable."""
    from rich.table import Table

    from shoal.models.tune import tune
    from shoal.contract import get_task

    task = get_task(task_name)
    found = tune(_catalog(), task, task.parse(given), trials=trials or 8, sample_fraction=sample_fraction or 1e-3,
                 timeout=timeout)
    table = Table("trial", "state", "validation loss", "settings", title=f"shoal tune {task_name}")
    for trial in found:
        value = "" if trial.value is None else f"{trial.value:.4f}"
        table.add_row(str(trial.number), trial.state, value, ", ".join(f"{k}={v:.4g}" for k, v in trial.params.items()))
    console = _console()
    console.print(table)
    done = [t for t in found if t.value is not None and t.state == "COMPLETE"]
    if done:
        best = min(done, key=lambda t: t.value)
        console.print(f"best: trial {best.number}, validation loss {best.value:.4f}; train it with "
                      f"`shoal train {task_name} --params best`", markup=False, highlight=False)


def _train_rank(task_name: str, given: dict[str, Any], home: str, quiet: bool, feature_version: str | None,
                run_id: str | None, restart: bool, retrain: bool) -> Any:
    """`train_model` in this process: all of the training, or one rank's part.

    Module-level with positional arguments, as torch's launcher needs to start it in each rank.
    """
    from shoal.catalog import Catalog
    from shoal.models.distributed import env_world
    from shoal.models.runs import train_model
    from shoal.progress import RichReporter
    from shoal.contract import get_task

    task = get_task(task_name)
    with RichReporter(_console(), enabled=not quiet and env_world()[0] == 0) as reporter:
        return train_model(Catalog(home), task, task.parse(given), feature_version=feature_version, run_id=run_id,
                           restart=restart, retrain=retrain, reporter=reporter)


def _print_trained(task: Any, trained: Any) -> None:
    entry = trained.entry
    console = _console()
    if trained.reused:
        console.print(f"reused model {entry.name} version {entry.version}: run {trained.run_id} already finished with "
                      "these inputs and settings (--retrain trains a new version)", markup=False, highlight=False)
    else:
        console.print(f"registered model {entry.name} version {entry.version} (run {trained.run_id}, best epoch "
                      f"{entry.metrics['best_epoch'] + 1}, {entry.metrics['device']})", markup=False, highlight=False)
    _print_skill(task, dict(entry.metrics))


@_step("evaluate", options=("model_version", "as_json"))
def evaluate_command(task_name: str, given: dict[str, Any], *, model_version: int | None, as_json: bool) -> None:
    """Skill of a registered model on the task's test split, beside the baselines."""
    from shoal.models.runs import evaluate_model
    from shoal.contract import get_task

    task = get_task(task_name)
    settings = task.parse(given)
    entry, metrics = evaluate_model(_catalog(), task, model_version=model_version, device=settings.device)
    if as_json:
        _print_json({"model": entry.name, "version": entry.version, **metrics})
        return
    _console().print(f"model {entry.name} version {entry.version} on {entry.feature_dataset} version "
                     f"{entry.feature_version}", markup=False, highlight=False)
    _print_skill(task, metrics)


@_step("predict", options=("model_version", "force"))
def predict_command(task_name: str, given: dict[str, Any], *, model_version: int | None, force: bool) -> None:
    """Write the task's predictions of a registered model, once per model version (--force replaces them)."""
    from shoal.models.runs import predict_model
    from shoal.contract import get_task

    task = get_task(task_name)
    settings = task.parse(given)
    entry, predicted = predict_model(_catalog(), task, model_version=model_version, device=settings.device, force=force)
    _print_predicted(entry, predicted)


def _print_predicted(entry: Any, predicted: Any) -> None:
    done = "unchanged, already written by" if predicted.reused else "from"
    _console().print(f"{predicted.table} version {predicted.version}: {predicted.rows} rows {done} model {entry.name} "
                     f"version {entry.version}; plots: {', '.join(map(str, predicted.plots))}",
                     markup=False, highlight=False)


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


DEMO_SST = ("1960-01", "2020-12")
DEMO_ENSO = {"coarsen": 8, "epochs": 3, "max_batches": 40, "leads": "1,3,6"}  # ~1.5 min on 2 CPU cores
DEMO_SPEECH = {"epochs": 3, "max_batches": 8, "batch_size": 32}  # ~1.5 min on 2 CPU cores
DEMO_HIGGS_ROWS, DEMO_HIGGS = 200_000, {"epochs": 4, "batch_size": 2048}  # ~1 min on 2 CPU cores


@app.command()
def demo() -> None:
    """Run the whole pipeline on the embedded sample data (a Prefect flow per step)."""
    import polars as pl

    from shoal.datasets.cobe_sst_sample import write_sample
    from shoal.datasets.higgs_sample import write_sample as write_higgs_sample
    from shoal.datasets.speech_commands_sample import write_sample as write_speech_sample
    from shoal.flows import ingest_oni

    catalog = _catalog()
    console = _console()
    console.rule("1. ingest the real Niño 3.4 table through the Prefect flow 'ingest-oni'")
    _report(ingest_oni(home=catalog.home))
    console.rule("2. read it back without shoal: polars.read_delta")
    path = catalog.uri("table", "nino34")
    console.print(f'pl.read_delta("{path}")')
    console.print(pl.read_delta(path).filter(pl.col("phase").is_not_null()).tail(4))
    start, end = DEMO_SST
    samples = Path(catalog.local, "samples", "cobe_sst")
    console.rule(f"3. ENSO: {start} .. {end} of sample COBE-SST GRIB -> features -> ConvLSTM -> predictions")
    files = write_sample(samples, start=start, end=end)
    console.print(f"wrote {len(files)} COBE-format GRIB files to {samples} (Niño 3.4 box = the real series)")
    _run("enso", [samples], DEMO_ENSO)
    clips = Path(catalog.local, "samples", "speech_commands")
    console.rule("4. Speech: 300 real Speech Commands clips + augmentations -> spectrograms -> CNN -> predictions")
    write_speech_sample(clips)
    console.print(f"wrote the 300 real clips and augmented copies of the training clips to {clips} (real users "
                  "ingest the full archive: `shoal fetch speech`)", markup=False, highlight=False)
    _run("speech", [clips], DEMO_SPEECH)
    console.rule(f"5. HIGGS: {DEMO_HIGGS_ROWS:,} rows bootstrapped from real ones -> standardized features -> TabNet")
    table = write_higgs_sample(Path(catalog.local, "samples", "higgs"), rows=DEMO_HIGGS_ROWS)
    console.print(f"wrote {table}: a smoothed bootstrap of 7,500 real HIGGS rows (real users ingest the UCI file: "
                  "`shoal fetch higgs`)", markup=False, highlight=False)
    _run("higgs", [table], DEMO_HIGGS)
    console.rule(f"6. the catalog at {catalog.home}")
    catalog_ls()
    console.rule("7. lineage of the predictions, down to the source files")
    catalog_lineage("enso_predictions")


fetch_app = typer.Typer(help="Download source files: retries, resume, sha256 (SHA256SUMS).", no_args_is_help=True)
app.add_typer(fetch_app, name="fetch")

RetriesOpt = Annotated[int, typer.Option(help="Retries per file after the first attempt (transient errors only).")]
TimeoutOpt = Annotated[float, typer.Option(help="Seconds to connect, and between two reads.")]
BackoffOpt = Annotated[float, typer.Option(help="Seconds before the first retry; doubles each retry.")]


def _fetch(name: str, dest: Path, plan: Any, fetch: Any, *, retries: int, timeout: float, backoff: float,
           workers: int = 4) -> None:
    """Run one fetch under a progress bar; one line per failure, then the summary and the exit code.

    `plan()` validates the arguments and returns the number of files (before any output);
    `fetch(config, progress)` downloads them and returns the `DownloadReport`.
    """
    from shoal.download import DownloadConfig
    from shoal.manifest import MANIFEST

    try:
        config = DownloadConfig(retries=retries, timeout=timeout, backoff=backoff, workers=workers)
        total = plan()
        with _reporter() as reporter:
            reporter.start(f"fetch {name}", total=total)
            report = fetch(config, lambda _url, _outcome: reporter.advance())
    except ShoalError as error:  # caught here too, so that in-process callers get the exit code
        if _State.debug:
            raise
        _fail(f"{error}")
    for failure in report.failures:
        typer.echo(f"error: {failure}", err=True)
    _console().print(f"{dest}: {len(report.downloaded)} downloaded, {len(report.skipped)} already complete, "
                     f"{len(report.failures)} failed; sha256 in {dest / MANIFEST}", markup=False, highlight=False)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


@fetch_app.command("sst")
def fetch_sst_command(
    start: Annotated[str, typer.Option(help="First month, YYYY-MM (1891-01 or later).")],
    end: Annotated[str, typer.Option(help="Last month, YYYY-MM, inclusive.")],
    dest: Annotated[Path, typer.Option(help="Folder for sstYYYYMM.grb and SHA256SUMS; created when missing.")],
    base_url: Annotated[str | None, typer.Option(help="URL of the decade folders; default JMA/TCC's COBE-SST gpvdata.")] = None,
    retries: RetriesOpt = 4,
    timeout: TimeoutOpt = 60.0,
    backoff: BackoffOpt = 1.0,
    workers: Annotated[int, typer.Option(help="Files downloaded at once.")] = 4,
) -> None:
    """Download COBE-SST monthly GRIB files sstYYYYMM.grb; files already there are skipped."""
    from shoal.datasets.cobe_sst_fetch import COBE_SST_BASE_URL, fetch_sst, month_urls

    url = base_url or COBE_SST_BASE_URL
    _fetch("sst", dest, lambda: len(month_urls(start, end, url)),
           lambda config, progress: fetch_sst(start=start, end=end, dest=dest, base_url=url, config=config,
                                              progress=progress),
           retries=retries, timeout=timeout, backoff=backoff, workers=workers)


def _fetch_file(name: str, dest: Path, url: str | None, *, default_url: str, retries: int, timeout: float,
                backoff: float) -> None:
    """`shoal fetch NAME` of a single-file source: `url` (else `default_url`) into `dest`, resumed."""
    from shoal.download import fetch_file, file_items

    url = url or default_url
    _fetch(name, dest, lambda: len(file_items(url, default=default_url)),
           lambda config, progress: fetch_file(url, dest, config=config, progress=progress),
           retries=retries, timeout=timeout, backoff=backoff)


@fetch_app.command("speech")
def fetch_speech_command(
    dest: Annotated[Path, typer.Option(help="Folder for speech_commands_v0.01.tar.gz and SHA256SUMS; created when missing.")],
    url: Annotated[str | None, typer.Option(help="URL of the archive; default Google's speech_commands_v0.01.tar.gz.")] = None,
    retries: RetriesOpt = 4,
    timeout: TimeoutOpt = 60.0,
    backoff: BackoffOpt = 1.0,
) -> None:
    """Download the Speech Commands v0.01 archive (~1.4 GB); resumes a partial download, skips a complete one."""
    from shoal.datasets.speech_commands import SPEECH_COMMANDS_URL

    _fetch_file("speech", dest, url, default_url=SPEECH_COMMANDS_URL, retries=retries, timeout=timeout, backoff=backoff)


@fetch_app.command("higgs")
def fetch_higgs_command(
    dest: Annotated[Path, typer.Option(help="Folder for higgs.zip and SHA256SUMS; created when missing.")],
    url: Annotated[str | None, typer.Option(help="URL of higgs.zip or HIGGS.csv.gz; default UCI's higgs.zip.")] = None,
    retries: RetriesOpt = 4,
    timeout: TimeoutOpt = 60.0,
    backoff: BackoffOpt = 1.0,
) -> None:
    """Download the UCI HIGGS table (~2.6 GB); resumes a partial download, skips a complete one."""
    from shoal.datasets.higgs import HIGGS_URL

    _fetch_file("higgs", dest, url, default_url=HIGGS_URL, retries=retries, timeout=timeout, backoff=backoff)


def run() -> None:
    """Console entry point: one-line errors, exit code 2 when nothing was done."""
    import logging

    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # the pending tasks of such an error (see _fail)
    try:
        app(prog_name="shoal")  # click handles usage errors (exit 2) and typer.Exit itself
    except ShoalError as error:
        if _State.debug:
            raise
        _fail(f"{error}")
    except Exception as error:
        if _State.debug:
            raise
        from shoal.errors import home_failure
        from shoal.settings import resolve_home

        failure = home_failure(error, resolve_home(_State.home))  # e.g. a checkpoint that did not fit on the disk
        _fail(f"{failure}" if failure else f"unexpected {type(error).__name__}: {error} (rerun with --debug for the "
                                           "traceback)")

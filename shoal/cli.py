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

from shoal.errors import ShoalError

if TYPE_CHECKING:
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


class _State:
    home: str | None = None
    debug: bool = False


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
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
) -> None:
    """shoal: a data pipeline and feature store for scientific ML."""
    _State.home, _State.debug = home, debug
    if debug:  # an ingest turns a bad file into a report line; its traceback is logged here
        import logging

        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("shoal").setLevel(logging.DEBUG)


def _report(report: IngestReport) -> None:
    console = _console()
    for label, paths in (("[green]committed[/]", report.committed), ("[dim]unchanged[/]", report.unchanged)):
        for path in paths[:5]:
            console.print(f"{label} {path}")
        if len(paths) > 5:
            console.print(f"{label} … and {len(paths) - 5} more")
    for failure in report.failures:
        typer.echo(f"error: {failure}", err=True)
    console.print(f"{report.dataset}: version {report.version}; {len(report.committed)} committed, "
                  f"{len(report.unchanged)} unchanged, {len(report.failures)} failed")
    if report.exit_code:
        raise typer.Exit(report.exit_code)


@app.command()
def ingest(
    source: Annotated[str, typer.Argument(help="A registered source, e.g. 'oni'.")],
    paths: Annotated[list[Path], typer.Argument(help="Files to ingest.")],
) -> None:
    """Ingest source files into the catalog (one commit per call)."""
    from shoal.sources import get_source

    _report(get_source(source).ingest(_catalog(), paths))


@catalog_app.command("ls")
def catalog_ls(as_json: JsonFlag = False) -> None:
    """List every dataset with its kind and latest version."""
    from dataclasses import asdict

    from rich.table import Table

    found = _catalog().list()
    if as_json:
        _print_json([asdict(info) for info in found])
        return
    table = Table("name", "kind", "version", "updated")
    for info in found:
        table.add_row(info.name, info.kind, str(info.version), info.updated_at)
    _console().print(table)


@catalog_app.command("show")
def catalog_show(name: str, version: VersionOpt = None, as_json: JsonFlag = False) -> None:
    """Kind, schema or dims, rows or shape, and lineage of one version."""
    facts = _catalog().describe(name, version=version)
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
    """Every version of a dataset, newest first."""
    from dataclasses import asdict

    from rich.table import Table

    versions = _catalog().history(name)
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
            child.add(f"… and {len(sources) - 3} more files (`shoal catalog show {node.name} --json` lists them)")
    for parent in node.parents:
        _tree(parent, child)


@catalog_app.command("lineage")
def catalog_lineage(name: str, version: VersionOpt = None, as_json: JsonFlag = False) -> None:
    """Walk a version's inputs back to its source files."""
    from dataclasses import asdict

    from rich.tree import Tree

    node = _catalog().lineage_tree(name, version=version)
    if as_json:
        _print_json(asdict(node))
        return
    root = Tree("lineage")
    _tree(node, root)
    _console().print(root)


run_app = typer.Typer(help="Run a whole pipeline as a Prefect flow.", no_args_is_help=True)
app.add_typer(run_app, name="run")


def _metrics_table(metrics: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table("validation", "RMSE °C", "correlation", "phase accuracy",
                  title=f"next-month Niño 3.4, {metrics['windows']} validation windows")
    for name in ("model", "persistence", "climatology"):
        row = metrics[name]
        table.add_row(name, f"{row['rmse_c']:.3f}", f"{row['correlation']:.3f}", f"{row['phase_accuracy']:.3f}")
    _console().print(table)


def _run_enso(sst: list[Path], oni: Path | None, settings: dict[str, Any]) -> dict[str, Any]:
    from shoal.datasets.oni import SAMPLE
    from shoal.flows.enso import EnsoSettings, enso_pipeline

    catalog = _catalog()
    result = enso_pipeline(sst_paths=sst, oni_path=oni or SAMPLE, home=catalog.home, settings=EnsoSettings(**settings))
    _metrics_table(result["metrics"])
    console = _console()
    console.print(f"model enso_convlstm version {result['model_version']} on enso_features version "
                  f"{result['feature_version']}; predictions: table enso_predictions version "
                  f"{result['predictions_version']}; plot: {result['plot']}")
    return result


@run_app.command("enso")
def run_enso(
    sst: Annotated[list[Path], typer.Argument(help="COBE-SST files sstYYYYMM.grb or folders of them.")],
    oni: Annotated[Path | None, typer.Option(help="The ONI table; default the embedded real one.")] = None,
    train_end: Annotated[str, typer.Option(help="First validation month; training is before it.")] = "1990-01",
    coarsen: Annotated[int, typer.Option(help="Average blocks of N x N 1° cells (1 = the analysis' grid).")] = 1,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 10,
    batch_size: Annotated[int, typer.Option(help="Windows per step.")] = 4,
    max_batches: Annotated[int | None, typer.Option(help="Stop each epoch after N batches.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of weights and shuffles.")] = 0,
    device: Annotated[str, typer.Option(help="auto (cuda > mps > cpu), cpu, cuda or mps.")] = "auto",
) -> None:
    """Ingest SST + Niño 3.4, build features, train the ConvLSTM, persist predictions."""
    _run_enso(sst, oni, {"train_end": train_end, "coarsen": coarsen, "epochs": epochs, "batch_size": batch_size,
                         "max_batches_per_epoch": max_batches, "seed": seed, "device": device})


DEMO_SST = ("1960-01", "1999-12")
DEMO_ENSO = {"coarsen": 4, "epochs": 3, "max_batches_per_epoch": 60}  # ~1 min on 2 CPU cores


@app.command()
def demo() -> None:
    """Run the whole pipeline on the embedded sample data (a Prefect flow per step)."""
    import polars as pl

    from shoal.datasets.cobe_sst_sample import write_sample
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
    samples = Path(catalog.home, "samples", "cobe_sst")
    console.rule(f"3. ENSO: {start} .. {end} of sample COBE-SST GRIB -> features -> ConvLSTM -> predictions")
    files = write_sample(samples, start=start, end=end)
    console.print(f"wrote {len(files)} COBE-format GRIB files to {samples} (Niño 3.4 box = the real series)")
    _run_enso([samples], None, DEMO_ENSO)
    console.rule(f"4. the catalog at {catalog.home}")
    catalog_ls()
    console.rule("5. lineage of the predictions, down to the source files")
    catalog_lineage("enso_predictions")


fetch_app = typer.Typer(help="Download source files: retries, resume, sha256 (SHA256SUMS).", no_args_is_help=True)
app.add_typer(fetch_app, name="fetch")


@fetch_app.command("sst")
def fetch_sst_command(
    start: Annotated[str, typer.Option(help="First month, YYYY-MM (1891-01 or later).")],
    end: Annotated[str, typer.Option(help="Last month, YYYY-MM, inclusive.")],
    dest: Annotated[Path, typer.Option(help="Folder for sstYYYYMM.grb and SHA256SUMS; created when missing.")],
    base_url: Annotated[str | None, typer.Option(help="URL of the decade folders; default JMA/TCC's COBE-SST gpvdata.")] = None,
    retries: Annotated[int, typer.Option(help="Retries per file after the first attempt (transient errors only).")] = 4,
    timeout: Annotated[float, typer.Option(help="Seconds to connect, and between two reads.")] = 60.0,
    backoff: Annotated[float, typer.Option(help="Seconds before the first retry; doubles each retry.")] = 1.0,
    workers: Annotated[int, typer.Option(help="Files downloaded at once.")] = 4,
) -> None:
    """Download COBE-SST monthly GRIB files sstYYYYMM.grb; files already there are skipped."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from shoal.datasets.cobe_sst_fetch import COBE_SST_BASE_URL, MANIFEST, fetch_sst, month_urls
    from shoal.download import DownloadConfig

    console = _console()
    try:
        config = DownloadConfig(retries=retries, timeout=timeout, backoff=backoff, workers=workers)
        total = len(month_urls(start, end, base_url or COBE_SST_BASE_URL))  # validates before any output
        columns = (TextColumn("fetch sst"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("sst", total=total)
            report = fetch_sst(start=start, end=end, dest=dest, base_url=base_url or COBE_SST_BASE_URL,
                               config=config, progress=lambda _url, _outcome: progress.advance(task))
    except ShoalError as error:  # caught here too, so that in-process callers get the exit code
        if _State.debug:
            raise
        _fail(f"{error}")
    for failure in report.failures:
        typer.echo(f"error: {failure}", err=True)
    console.print(f"{dest}: {len(report.downloaded)} downloaded, {len(report.skipped)} already complete, "
                  f"{len(report.failures)} failed; sha256 in {dest / MANIFEST}", markup=False, highlight=False)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def run() -> None:
    """Console entry point: one-line errors, exit code 2 when nothing was done."""
    try:
        app(prog_name="shoal")  # click handles usage errors (exit 2) and typer.Exit itself
    except ShoalError as error:
        if _State.debug:
            raise
        _fail(f"{error}")
    except Exception as error:
        if _State.debug:
            raise
        _fail(f"unexpected {type(error).__name__}: {error} (rerun with --debug for the traceback)")

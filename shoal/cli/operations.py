"""Operating the pipelines: `shoal ingest`, `backfill`, `serve` and `backfill-slots`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from shoal.cli.output import _console, _report, _reporter
from shoal.cli.root import _catalog, app

ClusterOpt = Annotated[str | None, typer.Option(
    help="Decode on a Dask cluster: local[:N] (a LocalCluster of N worker processes, default one per core) or "
         "tcp://HOST:PORT (a running scheduler whose workers reach the home); still one commit.")]


def _cluster(value: str | None, spreads: bool, what: str) -> Any:
    """The parsed `--cluster` value; None, with a one-line note, where the step does not spread (runs here anyway)."""
    from shoal.cluster import parse

    spec = parse(value) if value else None
    if spec is not None and not spreads:
        typer.echo(f"note: {what} runs in this process (it does not spread over a cluster); no cluster started",
                   err=True)
        return None
    return spec


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
    from shoal.cluster import connect, workers

    from shoal.datasets.cobe_sst_fetch import month_urls

    month_urls(start, end)  # a bad month or range is one line before Prefect starts
    if not folder.is_dir():
        raise typer.BadParameter(f"{folder}: no such folder; pass the folder of sstYYYYMM.grb files",
                                 param_hint="--source")
    spec = _cluster(cluster, True, "backfill sst")
    from shoal.flows.backfill import backfill_sst  # (Prefect: ~2 s, after the one-line errors)
    from shoal.flows.ingest import on_cluster
    from shoal.flows.terminal import on_terminal

    with connect(spec) as client, _reporter() as bar, on_terminal(bar, bar.live_console):
        report = on_cluster(backfill_sst, client)(
            source=folder, start=start, end=end, home=_catalog().home, chunk=chunk,
            concurrency=concurrency or (workers(client) if client else 2), force=force,
            features={} if features else None)
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

"""Ingest flows: thin Prefect wrappers over the registered sources of `shoal.datasets`.

A flow run on a prefect-dask `DaskTaskRunner` (`on_cluster`) ingests on its
cluster: a source that can spread (sst, higgs, speech) decodes on the workers through the task
runner's client, and the ingest still commits once, from this process.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from prefect import Flow, Task, flow, get_run_logger, task
from prefect.context import FlowRunContext
from prefect.tasks import exponential_backoff
from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from pydantic import FilePath

from shoal import cluster
from shoal.catalog import Catalog
from shoal.datasets.oni import SAMPLE
from shoal.errors import ShoalError
from shoal.sources import IngestReport, get_source

if TYPE_CHECKING:
    from distributed import Client

F = TypeVar("F", bound=Flow)
# `extra=` of a record that the command running the flow prints itself: not on its console again (terminal.on_terminal)
SHOWN = {"shoal_shown": True}


class IngestFailed(ShoalError):
    """Some inputs of an ingest flow failed; the good ones were committed."""


def _transient(task: Task, task_run: TaskRun, state: State) -> bool:
    """Retry I/O hiccups, never bad input: a ShoalError will fail the same way again."""
    try:
        state.result()
    except ShoalError:
        return False
    except Exception:  # noqa: BLE001 (anything else may be transient: retry it)
        return True
    return False


# Retries with backoff (1 s, 2 s, 4 s) for I/O; the tag lets an operator cap how many run at
# once: `prefect concurrency-limit create ingest 2`.
@task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=1), retry_jitter_factor=0.5,
      retry_condition_fn=_transient, tags=["ingest"])
def ingest_source(source: str, paths: list[Path], home: str | None) -> IngestReport:
    """Run one registered source's ingest against the catalog at `home` (on the flow's Dask cluster, if it has one)."""
    chosen = get_source(source)
    report = cluster.on(flow_dask_client(), chosen.ingest, spreads=chosen.spreads)(Catalog(home), paths)
    logger = get_run_logger()
    logger.info(
        "%s -> %s version %s: %d committed, %d unchanged, %d failed",
        source, report.dataset, report.version, len(report.committed), len(report.unchanged), len(report.failures),
        extra=SHOWN,
    )
    for failure in report.failures:
        logger.error(failure, extra=SHOWN)
    return report


def flow_dask_client() -> Client | None:
    """The client of this flow run's `DaskTaskRunner`, or None under any other task runner (or outside a flow).

    A task called in the flow (not submitted) runs in the flow's process, so the task runner's
    client is the one to hand the core functions.
    """
    runners = sys.modules.get("prefect_dask")  # not imported: not a DaskTaskRunner (and no 0.4 s import to ask)
    context = FlowRunContext.get()
    if runners is None or context is None or not isinstance(context.task_runner, runners.DaskTaskRunner):
        return None
    return context.task_runner.client


def on_cluster(flow: F, client: Client | None) -> F:
    """`flow` with its tasks on `client`'s cluster (prefect-dask's `DaskTaskRunner`); unchanged without a client."""
    if client is None:
        return flow
    from prefect_dask import DaskTaskRunner

    # By address, not by cluster object: a flow run duplicates its task runner, and the copy keeps only the address.
    return flow.with_options(task_runner=DaskTaskRunner(address=client.scheduler.address))


def finish(report: IngestReport) -> IngestReport:
    """Fail the flow run when any input failed (after the good ones were committed)."""
    if report.failures:
        raise IngestFailed("; ".join(report.failures))
    return report


@flow(name="ingest-oni", log_prints=False)
def ingest_oni(path: FilePath = SAMPLE, home: str | None = None) -> IngestReport:
    """Ingest the Niño 3.4 / ONI table into the `nino34` Delta table."""
    return finish(ingest_source(source="oni", paths=[path], home=home))


@flow(name="ingest-sst")
def ingest_sst(paths: list[Path], home: str | None = None) -> IngestReport:
    """Ingest COBE-SST GRIB files (or folders of them) into the array `sst`."""
    return finish(ingest_source(source="sst", paths=paths, home=home))


@flow(name="ingest-speech")
def ingest_speech(paths: list[Path], home: str | None = None) -> IngestReport:
    """Ingest Speech Commands folders or .tar.gz archives into the `speech` and `speech_noise` tables."""
    return finish(ingest_source(source="speech", paths=paths, home=home))

"""`shoal serve`: the pipelines as Prefect deployments, scheduled from shoal.toml and chained by events.

- `refresh-sst/newest-sst` (cron `[serve.sst] cron`): the Niño 3.4 table, then (with `fetch = true`)
  the months after the newest stored downloaded into the source folder, then every SST month
  from the one after the newest stored (or `start`) to the newest file of the source folder,
  as one `backfill-sst` subflow, then the ENSO features once, then the drift of the new months
  against the features' training months (`shoal drift enso`): the artifact `enso-drift`, and on a
  drift the event DRIFT_DETECTED.
- `train-predict/TASK` for each `[serve.train] tasks` (cron `[serve.train] cron`): train (or
  reuse) and predict. It is also TRIGGERED by the event NEW_FEATURES, which the feature task
  emits only when it built a new version (never when the build was skipped as unchanged), so
  ingest -> features -> train -> predict runs by events. With `[serve.train] work_pool`, these
  are applied to that Prefect work pool (e.g. a GPU machine's `prefect worker start --pool gpu`),
  found by module path, instead of being served by this process.

`serve` refuses a Prefect API that is not on this machine unless it has authentication
(`PREFECT_API_AUTH_STRING` or `PREFECT_API_KEY`) or the caller says `insecure`.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.deployments.runner import EntrypointType
from prefect.events import DeploymentEventTrigger, emit_event
from pydantic import DirectoryPath, FilePath

from shoal.catalog import Catalog
from shoal.config import ShoalConfig
from shoal.datasets.cobe_sst import DATASET as SST
from shoal.datasets.cobe_sst import month_of_name
from shoal.datasets.cobe_sst_fetch import COBE_SST_BASE_URL, FIRST_MONTH, fetch_sst
from shoal.datasets.oni import SAMPLE
from shoal.download import DownloadReport
from shoal.drift import drift
from shoal.errors import CatalogError, ShoalError
from shoal.features.enso import DATASET as ENSO_FEATURES
from shoal.flows.backfill import backfill_sst
from shoal.flows.ingest import finish, ingest_source
from shoal.flows.pipelines import NEW_FEATURES, predict_task, train_task
from shoal.sources import IngestReport
from shoal.contract import Predicted, get_task


# The event the refresh emits when the new SST months drift from the ENSO features' training months
# (`shoal drift enso`); its payload is the report's drifts. docs/operations.md has an automation on it.
DRIFT_DETECTED = "shoal.drift.detected"


class ServeRefused(ShoalError):
    """`shoal serve` will not run against this Prefect API as configured."""


@task(tags=["ingest"])
def fetch_newest(source: Path, start: str, base_url: str) -> DownloadReport:
    """Download the months from `start` to this month into `source` (the downloader retries with backoff)."""
    end = f"{datetime.now(UTC):%Y-%m}"
    report = fetch_sst(start=start, end=end, dest=source, base_url=base_url)
    there = [month_of_name(Path(file.path)) for file in (*report.downloaded, *report.skipped)]
    newest = max(there, default=None)
    missing = [failure for failure in report.failures if newest is None or month_of_name(Path(failure.path)) > newest]
    logger = get_run_logger()
    logger.info("sst: %d months downloaded into %s, %d already there; %d after %s not published yet",
                len(report.downloaded), source, len(report.skipped), len(missing), newest or start)
    for failure in report.failures:
        if failure not in missing:
            logger.error(failure)  # a gap: the backfill below names the month as missing
    return report


@flow(name="refresh-sst")
def refresh_sst(source: DirectoryPath, home: str | None = None, oni: FilePath = SAMPLE, start: str | None = None,
                features: dict[str, Any] | None = None, fetch: str | None = None) -> IngestReport | None:
    """Ingest the Niño 3.4 table and the SST months newer than the stored ones, then build the ENSO features once.

    With nothing stored yet, the months start at `start` (default: the folder's oldest file, or
    COBE-SST's first month when fetching into an empty folder). With `fetch` (a base URL, e.g.
    COBE_SST_BASE_URL) the months from there to this month are downloaded into `source` first.
    """
    logger = get_run_logger()
    finish(ingest_source(source="oni", paths=[oni], home=home))
    catalog = Catalog(home)

    def months() -> list[np.datetime64]:
        return [month_of_name(path) for path in Path(source).glob("sst*.grb")]

    first = (catalog.open_array(SST).time.values.max().astype("datetime64[M]") + 1 if catalog.exists(SST)
             else np.datetime64(start, "M") if start else min(months(), default=np.datetime64(FIRST_MONTH, "M")))
    if fetch:
        fetch_newest(Path(source), str(first), fetch)
    if not (found := months()):
        raise ServeRefused(f"{source}: no sstYYYYMM.grb file; fetch them (`shoal fetch sst --dest {source}`)")
    if first > max(found):
        logger.info("sst: nothing newer than %s in %s", first - 1, source)
        return None
    report = backfill_sst(source=source, start=str(first), end=str(max(found)), home=home, features=features or {})
    if report.committed:
        drift_task(home, str(first))
    return report


@task
def drift_task(home: str | None, since: str) -> dict[str, Any] | None:
    """Compare the SST months from `since` with the newest ENSO features' training months (`shoal drift enso`).

    The report becomes the markdown artifact `enso-drift`; a drift is also the event DRIFT_DETECTED,
    whose payload is the report without the comparisons that are not drifts. New months inside
    the features' training period are left out (they are the reference); a home whose features
    drift cannot compare (too short a training period) is one warning, not a failed refresh.
    """
    logger = get_run_logger()
    catalog = Catalog(home)
    if not catalog.exists(ENSO_FEATURES):
        return None
    valid_start = catalog.lineage(ENSO_FEATURES).parameters["config"]["valid_start"]
    start = max(since, valid_start)  # 'YYYY-MM' strings order as months
    try:
        report = drift(catalog, "enso", since=start)
    except CatalogError as error:
        logger.warning("drift: not checked: %s", error)
        return None
    create_markdown_artifact(key="enso-drift", markdown=report.markdown(),
                             description=f"Drift of the SST months from {start} against the training months")
    facts = {key: value for key, value in report.to_dict().items() if key != "findings"}
    if report.drifted:
        logger.warning("drift: %d of %d comparisons over a threshold, the largest %s %s (shift %.2f)",
                       len(report.drifted), len(report.findings), report.drifted[0].variable,
                       report.drifted[0].region, report.drifted[0].shift)
        emit_event(event=DRIFT_DETECTED, resource={"prefect.resource.id": "shoal.drift.enso", "shoal.home": catalog.home},
                   payload=facts)
    else:
        logger.info("drift: none in %d comparisons of %s", len(report.findings), report.new)
    return facts


@flow(name="train-predict", flow_run_name="{task_name}-train-predict")
def train_predict(task_name: str, home: str | None = None, settings: dict[str, Any] | None = None) -> Predicted:
    """Train (or reuse) the task's model on its newest features, then write its predictions (unless it has them)."""
    parsed = get_task(task_name).parse(settings or {})
    trained = train_task(task_name, home, settings or {}, None, False)
    return predict_task(task_name, home, trained.entry.version, parsed.device)


def deployments(config: ShoalConfig, home: str) -> list[Any]:
    """The RunnerDeployments `shoal serve` serves for this config and catalog home."""
    found = []
    enso = config.pipelines["enso"].settings if "enso" in config.pipelines else {}
    if (sst := config.serve.sst) is not None:
        found.append(refresh_sst.to_deployment(
            name="newest-sst", cron=sst.cron, tags=["ingest"], description="The newest SST months and Niño 3.4",
            parameters={"source": str(sst.source), "home": home, "oni": str(sst.oni or SAMPLE), "start": sst.start,
                        "features": enso, "fetch": (sst.base_url or COBE_SST_BASE_URL) if sst.fetch else None}))  # the feature build reads only its own settings from these
    train = config.serve.train
    for name in train.tasks:
        settings = config.pipelines[name].settings if name in config.pipelines else {}
        found.append(train_predict.to_deployment(
            name=name, cron=train.cron, tags=["train"], description=f"Train + predict {name}, weekly and on new features",
            parameters={"task_name": name, "home": home, "settings": settings}, work_pool_name=train.work_pool,
            entrypoint_type=EntrypointType.MODULE_PATH if train.work_pool else EntrypointType.FILE_PATH,
            triggers=[DeploymentEventTrigger(name=f"{name}: new features", expect={NEW_FEATURES},
                                             match={"prefect.resource.id": f"shoal.features.{name}"})]))
    return found


def check_api(url: str | None, *, authenticated: bool, insecure: bool) -> None:
    """Refuse no API (serving needs a real server) and a non-loopback one without authentication.

    Raises:
        ServeRefused: one line saying what to set.
    """
    if not url:
        raise ServeRefused("no Prefect server: start one (`prefect server start --host 127.0.0.1`) and set "
                           "PREFECT_API_URL=http://127.0.0.1:4200/api")
    host = urlparse(url).hostname or ""
    try:
        loopback = all(ipaddress.ip_address(info[4][0]).is_loopback
                       for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP))
    except (OSError, ValueError):
        loopback = False
    if not (loopback or authenticated or insecure):
        raise ServeRefused(f"PREFECT_API_URL {url} is not on this machine and has no authentication: set "
                           "PREFECT_API_AUTH_STRING (the server's PREFECT_SERVER_API_AUTH_STRING), or pass --insecure")


def backfill_slots(deployment: str, since: datetime, until: datetime) -> list[tuple[datetime, str]]:
    """One flow run per cron slot of `deployment` ("flow/deployment") in [since, until), scheduled at the slot.

    Each run's idempotency key is the deployment and the slot, so calling again (a rerun of
    a backfill) creates nothing new: it returns the same runs. Slots in the past run as soon
    as a worker or `shoal serve` picks them up. Returns (slot, flow run id) in time order.
    """
    from cronsim import CronSim
    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    with get_client(sync_client=True) as client:
        found = client.read_deployment_by_name(deployment)
        slots = set()
        for entry in found.schedules:
            cron = getattr(entry.schedule, "cron", None)
            for slot in CronSim(cron, since - timedelta(microseconds=1)) if cron else ():
                if slot >= until:
                    break
                slots.add(slot)
        runs = []
        for slot in sorted(slots):
            run = client.create_flow_run_from_deployment(
                found.id, state=Scheduled(scheduled_time=slot), name=f"{found.name}-slot-{slot:%Y%m%dT%H%M}",
                idempotency_key=f"shoal-slot:{found.id}:{slot.isoformat()}")
            runs.append((slot, str(run.id)))
    return runs


def serve_pipelines(config: ShoalConfig, home: str, *, insecure: bool, started: Callable[[str], None]) -> None:
    """Check the API, apply the work-pool deployments, serve the others until interrupted (Ctrl-C stops within seconds).

    Raises:
        ServeRefused: the API is not safe to serve against, or the configured work pool does not exist.
    """
    from prefect import serve
    from prefect.settings import get_current_settings

    api = get_current_settings().api
    check_api(api.url, authenticated=bool(api.auth_string or api.key), insecure=insecure)
    found = deployments(config, home)
    served = [d for d in found if not d.work_pool_name]
    if pooled := [d for d in found if d.work_pool_name]:
        pool = _existing_pool(pooled[0].work_pool_name)
        for deployment in pooled:
            deployment.apply()
        started(f"applied {', '.join(d.name for d in pooled)} to work pool {pool}: its workers run them "
                f"(`prefect worker start --pool {pool}` where the GPU is)")
    if served:
        started(f"serving {', '.join(d.name for d in served)} against {api.url} (Ctrl-C stops)")
        serve(*served, print_starting_message=False)


def _existing_pool(name: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            raise ServeRefused(f"[serve.train] work_pool {name!r} does not exist on the Prefect server: create it "
                               f"(`prefect work-pool create {name} --type process`) or drop work_pool") from None
    return name

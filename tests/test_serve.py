"""`shoal serve` against a real `prefect server start` on 127.0.0.1: deployments, a run through the API, the
event-triggered train + predict (and none without new features), missed slots backfilled through the API,
Ctrl-C; training deployments on a work pool run by a real `prefect worker`; and the refusal of a remote API
without authentication."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from shoal.catalog import Catalog
from tests.test_flows import QUICK
from tests.timeouts import scaled


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait(what: str, check, timeout: float, process: subprocess.Popen | None = None) -> None:  # noqa: ANN001
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            pytest.fail(f"{what}: the process {process.args[1:4]} exited with {process.returncode}")
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(1)
    pytest.fail(f"{what}: not within {scaled(timeout):.0f} s")


@pytest.fixture
def server(tmp_path: Path):  # noqa: ANN201
    """A real Prefect server on a free loopback port, its own database; the env that points at it."""
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_UI_ENABLED": "false", "DO_NOT_TRACK": "1",
           "PREFECT_LOGGING_TO_API_ENABLED": "false", "NO_COLOR": "1"}
    log = (tmp_path / "server.log").open("w")  # a file, not a pipe: a full pipe would block the server
    process = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                                str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait("prefect server start", lambda: httpx.get(f"{env['PREFECT_API_URL']}/health").status_code == 200, 120,
              process)
        yield env
    finally:
        process.terminate()
        process.wait(timeout=scaled(30))


def _api(env: dict[str, str], method: str, path: str, **body: object) -> object:
    """One REST call; a 503 (the server's database busy under load, as Prefect's own client knows) is retried."""
    from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

    def busy(error: BaseException) -> bool:
        return isinstance(error, httpx.HTTPStatusError) and error.response.status_code == 503

    def call() -> object:
        response = httpx.request(method, f"{env['PREFECT_API_URL']}{path}", json=body if method == "POST" else None,
                                 timeout=scaled(30))
        response.raise_for_status()
        return response.json()

    return Retrying(retry=retry_if_exception(busy), stop=stop_after_attempt(6), wait=wait_exponential(0.5, max=8),
                    reraise=True)(call)


def test_serve_runs_the_deployments_and_new_features_trigger_training(server: dict[str, str], tmp_path: Path) -> None:
    from shoal.datasets.cobe_sst_sample import write_sample

    write_sample(tmp_path / "sst", start="1985-01", end="1990-06")
    settings = ", ".join(f"{key} = {value!r}" for key, value in QUICK.items()).replace("'", '"')
    config = tmp_path / "shoal.toml"
    config.write_text(f"""
[pipelines.enso]
paths = ["sst"]
settings = {{ {settings} }}

[serve.sst]
source = "sst"
cron = "0 6 5 1 *"

[serve.train]
tasks = ["enso"]
cron = "0 3 1 1 *"
""")
    home = tmp_path / "home"
    log = tmp_path / "serve.log"
    serving = subprocess.Popen([sys.executable, "-m", "shoal", "--home", str(home), "serve", "--config", str(config)],
                               env=server, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        names = {"refresh-sst/newest-sst", "train-predict/enso"}
        _wait("the deployments", lambda: {f"{d['flow_name']}/{d['name']}" for d in _deployments(server)} >= names, 90,
              serving)
        (refresh,) = [d for d in _deployments(server) if d["name"] == "newest-sst"]
        run = _api(server, "POST", f"/deployments/{refresh['id']}/create_flow_run")
        _wait("the refresh run", lambda: _state(server, run["id"]) == "COMPLETED", 180, serving)
        catalog = Catalog(home)
        assert catalog.open_array("sst").sizes["time"] == 66 and catalog.exists("enso_features")
        # the NEW feature version's event triggers train + predict; nothing else starts it (its cron is in January)
        _wait("the triggered train-predict run", lambda: catalog.exists("enso_predictions"), 240, serving)
        _wait("the triggered run's end", lambda: _state(server, _train_runs(server)[0]["id"]) == "COMPLETED", 60,
              serving)
        again = _api(server, "POST", f"/deployments/{refresh['id']}/create_flow_run")  # nothing new this time
        _wait("the second refresh run", lambda: _state(server, again["id"]) == "COMPLETED", 120, serving)
        time.sleep(10)  # room for a trigger that should not fire: the features were not rebuilt
        assert len(_train_runs(server)) == 1 and len(catalog.history("enso_features")) == 1
        _backfill_the_missed_slots(server, serving)
    finally:
        serving.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            stopped = serving.wait(timeout=scaled(30))
        except subprocess.TimeoutExpired:
            serving.kill()
            stopped = None
    assert stopped is not None, f"Ctrl-C did not stop `shoal serve` within {scaled(30):.0f} s: {log.read_text()[-2000:]}"


def test_train_deployments_on_a_work_pool_are_run_by_its_worker(server: dict[str, str], tmp_path: Path) -> None:
    from shoal.datasets import cobe_sst, oni
    from shoal.datasets.cobe_sst_sample import write_sample
    from shoal.progress import NULL
    from shoal.contract import get_task

    home = Catalog(tmp_path / "home")
    write_sample(tmp_path / "sst", start="1985-01", end="1990-06")
    assert cobe_sst.ingest(home, [tmp_path / "sst"]).exit_code == 0 and oni.ingest(home, [oni.SAMPLE]).exit_code == 0
    task = get_task("enso")
    task.build_features(home, task.parse(QUICK), NULL)
    settings = ", ".join(f"{key} = {value!r}" for key, value in QUICK.items()).replace("'", '"')
    config = tmp_path / "shoal.toml"
    config.write_text(f'[pipelines.enso]\npaths = ["sst"]\nsettings = {{ {settings} }}\n\n'
                      '[serve.train]\ntasks = ["enso"]\ncron = "0 3 1 1 *"\nwork_pool = "gpu"\n')
    shoal = [sys.executable, "-m", "shoal", "--home", home.home, "serve", "--config", str(config)]
    refused = subprocess.run(shoal, env=server, capture_output=True, text=True, timeout=scaled(120))
    assert refused.returncode == 2 and "work_pool 'gpu' does not exist" in refused.stderr
    prefect = [sys.executable, "-m", "prefect"]
    subprocess.run([*prefect, "work-pool", "create", "gpu", "--type", "process"], env=server, check=True,
                   capture_output=True, timeout=scaled(120))
    applied = subprocess.run(shoal, env=server, capture_output=True, text=True, timeout=scaled(120))
    assert applied.returncode == 0 and "applied enso to work pool gpu" in applied.stdout, applied.stderr
    (deployment,) = _deployments(server)
    assert deployment["work_pool_name"] == "gpu" and deployment["entrypoint"] == "shoal.flows.deployments.train_predict"
    run = _api(server, "POST", f"/deployments/{deployment['id']}/create_flow_run")
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen([*prefect, "worker", "start", "--pool", "gpu"], cwd=tmp_path, stdout=log,
                              stderr=subprocess.STDOUT, env={**server, "PREFECT_WORKER_QUERY_SECONDS": "1"})
    try:
        _wait("the worker's train-predict run", lambda: _state(server, run["id"]) == "COMPLETED", 240, worker)
    finally:
        worker.terminate()
        worker.wait(timeout=scaled(30))
    assert home.exists("enso_predictions") and home.history("enso_predictions")


def _backfill_the_missed_slots(env: dict[str, str], serving: subprocess.Popen) -> None:
    """newest-sst runs on January 5th (its cron): 2024 and 2025 are missed slots; a rerun creates no more."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from shoal.flows.deployments import backfill_slots

    window = (datetime(2024, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC))
    with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}):
        slots = backfill_slots("refresh-sst/newest-sst", *window)
        assert [slot.date().isoformat() for slot, _ in slots] == ["2024-01-05", "2025-01-05"]
        assert backfill_slots("refresh-sst/newest-sst", *window) == slots
    for _, run_id in slots:
        _wait("a backfilled slot's run", lambda run_id=run_id: _state(env, run_id) == "COMPLETED", 120, serving)


def _deployments(env: dict[str, str]) -> list[dict]:
    found = _api(env, "POST", "/deployments/filter")
    flows = {f["id"]: f["name"] for f in _api(env, "POST", "/flows/filter")}
    return [{**d, "flow_name": flows.get(d["flow_id"], "")} for d in found]


def _train_runs(env: dict[str, str]) -> list[dict]:
    return [r for r in _api(env, "POST", "/flow_runs/filter") if r["name"].startswith("enso-train-predict")]


def _state(env: dict[str, str], run_id: str) -> str:
    state = _api(env, "GET", f"/flow_runs/{run_id}")["state"]["type"]
    if state in ("FAILED", "CRASHED", "CANCELLED"):
        pytest.fail(f"flow run {run_id} ended {state}")
    return state


def test_serve_refuses_a_remote_api_without_authentication_unless_insecure() -> None:
    from shoal.flows.deployments import ServeRefused, check_api

    with pytest.raises(ServeRefused, match="not on this machine and has no authentication"):
        check_api("http://192.0.2.10:4200/api", authenticated=False, insecure=False)
    check_api("http://192.0.2.10:4200/api", authenticated=True, insecure=False)
    check_api("http://192.0.2.10:4200/api", authenticated=False, insecure=True)
    check_api("http://127.0.0.1:4200/api", authenticated=False, insecure=False)
    with pytest.raises(ServeRefused, match="no Prefect server"):
        check_api(None, authenticated=False, insecure=False)

"""An object-store home: the catalog on a real S3-compatible server (moto's server mode) on 127.0.0.1.

Ingest through the CLI, read back with plain polars and xarray + icechunk from the URL and
storage options alone, time travel, lineage, and 4 concurrent writers per kind. The server
runs in its own process: deltalake holds the GIL while it waits on the network, so a server
thread in the test process would never answer it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from shoal.catalog import Catalog
from shoal.datasets.cobe_sst_sample import write_sample
from shoal.datasets.oni import SAMPLE
from tests import writer

BUCKET = "shoal-test"
WRITER = Path(__file__).parent / "writer.py"


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """A moto S3 server on a free loopback port with one bucket; the AWS variables that point at it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ALLOW_HTTP": "true"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.put(f"{env['AWS_ENDPOINT_URL']}/{BUCKET}", timeout=5).raise_for_status()
                break
            except httpx.HTTPError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto's S3 server did not start on 127.0.0.1:{port} (exit {server.poll()})")
                time.sleep(0.2)
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def home(s3: dict[str, str]) -> str:
    """A fresh prefix of the bucket as the catalog home."""
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"


def _shoal(home: str, *args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shoal", "--home", home, *map(str, args)], capture_output=True,
                          text=True, timeout=240, env=os.environ.copy())


def _storage_options(s3: dict[str, str]) -> dict[str, str]:
    return {"aws_access_key_id": s3["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": s3["AWS_SECRET_ACCESS_KEY"],
            "aws_region": s3["AWS_REGION"], "aws_endpoint_url": s3["AWS_ENDPOINT_URL"], "aws_allow_http": "true"}


def _icechunk_store(s3: dict[str, str], url: str, snapshot: str | None = None):  # noqa: ANN202
    import icechunk

    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    storage = icechunk.s3_storage(bucket=bucket, prefix=prefix, endpoint_url=s3["AWS_ENDPOINT_URL"], allow_http=True,
                                  region=s3["AWS_REGION"], access_key_id=s3["AWS_ACCESS_KEY_ID"],
                                  secret_access_key=s3["AWS_SECRET_ACCESS_KEY"], force_path_style=True)
    repo = icechunk.Repository.open(storage)
    session = repo.readonly_session(snapshot_id=snapshot) if snapshot else repo.readonly_session("main")
    return session.store


def test_ingest_into_an_s3_home_reads_back_with_plain_polars_and_xarray_with_time_travel_and_lineage(
        s3: dict[str, str], home: str, tmp_path: Path) -> None:
    import polars as pl
    import xarray as xr

    files = write_sample(tmp_path / "sst", start="1990-01", end="1991-12")
    first, later = tmp_path / "first", tmp_path / "later"
    first.mkdir(), later.mkdir()
    for path in files:
        path.rename((first if path.name < "sst199101" else later) / path.name)
    for args in (("oni", SAMPLE), ("sst", first), ("sst", later)):
        done = _shoal(home, "ingest", *args)
        assert done.returncode == 0, done.stderr
    assert _shoal(home, "ingest", "sst", later).returncode == 0  # identical files: nothing new

    url = f"{home}/tables/nino34"
    table = pl.read_delta(url, storage_options=_storage_options(s3))
    assert table.height == Catalog(home).read_table("nino34").num_rows > 500
    catalog = Catalog(home)
    history = catalog.history("sst")
    assert [v.version for v in history] == [1, 0]
    sst = xr.open_zarr(_icechunk_store(s3, f"{home}/arrays/sst"), consolidated=False)
    old = xr.open_zarr(_icechunk_store(s3, f"{home}/arrays/sst", history[-1].snapshot), consolidated=False)
    assert sst.sizes["time"] == 24 and old.sizes["time"] == 12
    np.testing.assert_array_equal(sst.sst.isel(time=slice(0, 12)).values, old.sst.values)
    lineage = catalog.lineage("sst")
    assert {Path(s.path).name for s in lineage.sources} == {p.name for p in later.iterdir()}
    listed = _shoal(home, "catalog", "lineage", "sst", "--json")
    assert listed.returncode == 0 and "sst199112.grb" in listed.stdout, listed.stderr


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["table", "array"])
def test_four_concurrent_writers_against_an_s3_home_lose_nothing(s3: dict[str, str], home: str, kind: str) -> None:
    catalog = Catalog(home)
    if kind == "array":
        writer.make_grid(catalog)
    processes = [subprocess.Popen([sys.executable, str(WRITER), kind, home, str(i)], stderr=subprocess.PIPE,
                                  text=True, env=os.environ.copy()) for i in range(4)]
    for process in processes:
        assert process.wait(timeout=180) == 0, process.stderr.read()
    if kind == "table":
        table = catalog.read_table("shared")
        assert table.num_rows == 400 and sorted(set(table.column("writer").to_pylist())) == [0, 1, 2, 3]
        assert sorted(v.version for v in catalog.history("shared")) == [0, 1, 2, 3]
    else:
        values = catalog.open_array("grid").v.values
        for slot in range(4):
            assert (values[slot] == slot).all(), f"slot {slot} lost"
        assert np.isnan(values[4:]).all() and len(catalog.history("grid")) == 5


def test_streamed_tables_higgs_and_speech_ingest_into_an_s3_home(s3: dict[str, str], home: str) -> None:
    import polars as pl

    data = Path(__file__).parent / "data"
    for source, path in (("higgs", data / "higgs" / "higgs_real_test.csv"), ("speech", data / "speech_commands" / "v0.01")):
        done = _shoal(home, "ingest", source, path)
        assert done.returncode == 0, done.stderr
    catalog = Catalog(home)
    for name in ("higgs", "speech"):
        rows = pl.read_delta(f"{home}/tables/{name}", storage_options=_storage_options(s3))
        assert rows.height == catalog.read_table(name).num_rows > 0 and catalog.history(name)[0].lineage.sources

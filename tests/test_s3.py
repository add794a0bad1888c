"""An object-store home: the catalog on a real S3-compatible server (moto's server mode) on 127.0.0.1.

Ingest through the CLI, read back with plain polars and xarray + icechunk from the URL and
storage options alone, time travel, lineage, 4 concurrent writers per kind, and source files
read from the bucket.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from shoal.catalog import Catalog
from shoal.datasets.cobe_sst_sample import write_sample
from shoal.datasets.oni import SAMPLE
from tests import writer
from tests.s3server import moto_s3
from tests.timeouts import scaled

BUCKET = "shoal-test"
WRITER = Path(__file__).parent / "writer.py"


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """A moto S3 server on a free loopback port with one bucket; the AWS variables that point at it."""
    with moto_s3(BUCKET) as env:
        yield env


@pytest.fixture
def home(s3: dict[str, str]) -> str:
    """A fresh prefix of the bucket as the catalog home."""
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"


def _shoal(home: str, *args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shoal", "--home", home, *map(str, args)], capture_output=True,
                          text=True, timeout=scaled(240), env=os.environ.copy())


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
        assert process.wait(timeout=scaled(180)) == 0, process.stderr.read()
    if kind == "table":
        table = catalog.read_table("shared")
        assert table.num_rows == 400 and sorted(set(table.column("writer").to_pylist())) == [0, 1, 2, 3]
        assert sorted(v.version for v in catalog.history("shared")) == [0, 1, 2, 3]
    else:
        values = catalog.open_array("grid").v.values
        for slot in range(4):
            assert (values[slot] == slot).all(), f"slot {slot} lost"
        assert np.isnan(values[4:]).all() and len(catalog.history("grid")) == 5


@pytest.mark.slow
def test_concurrent_sst_ingests_of_disjoint_months_into_an_s3_home_all_land(home: str, tmp_path: Path) -> None:
    folders = [tmp_path / str(year) for year in (1990, 1991, 1992, 1993)]
    for folder, year in zip(folders, (1990, 1991, 1992, 1993), strict=True):
        write_sample(folder, start=f"{year}-01", end=f"{year}-06")
    processes = [subprocess.Popen([sys.executable, "-m", "shoal", "--home", home, "ingest", "sst", str(folder)],
                                  stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=os.environ.copy())
                 for folder in folders]
    for process in processes:
        assert process.wait(timeout=scaled(240)) == 0, process.stderr.read()
    catalog = Catalog(home)
    sst = catalog.open_array("sst").sst
    stored = sst.time.values[np.isfinite(sst.values).any(axis=(1, 2))].astype("datetime64[M]").astype(str)
    assert list(stored) == [f"{year}-{month:02d}" for year in (1990, 1991, 1992, 1993) for month in range(1, 7)]
    assert len(catalog.history("sst")) == 4


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


def test_shoal_run_from_sources_on_s3_into_an_s3_home_registers_the_checkpoint_as_an_object(
        s3: dict[str, str], home: str, tmp_path: Path) -> None:
    import obstore
    from obstore.store import from_url

    from tests.test_flows import QUICK

    sources = f"{home}-sources"
    _upload(sources.removeprefix(f"s3://{BUCKET}/") + "/sst", write_sample(tmp_path / "sst", start="1985-01", end="1990-06"))
    _upload(sources.removeprefix(f"s3://{BUCKET}/"), [SAMPLE])
    options = [f"--{key.replace('_', '-')}={value}" for key, value in QUICK.items()]
    env = {**os.environ, "SHOAL_WORK": str(tmp_path / "work")}
    done = subprocess.run([sys.executable, "-m", "shoal", "--home", home, "run", "enso", f"{sources}/sst/",
                           f"{sources}/{SAMPLE.name}", *options], capture_output=True, text=True, timeout=scaled(300), env=env)
    assert done.returncode == 0, done.stderr
    catalog = Catalog(home)
    assert {s.path for s in catalog.lineage("nino34").sources} == {f"{sources}/{SAMPLE.name}"}
    assert len(catalog.lineage("sst").sources) == 66
    assert obstore.head(from_url(home), "models/enso_convlstm/0.pt")["size"] > 0
    assert catalog.read_table("enso_predictions").num_rows > 0
    assert list((tmp_path / "work").rglob("best.pt")), "the training run's checkpoints stay in the work folder"

def _upload(prefix: str, files: list[Path]) -> None:
    import obstore
    from obstore.store import from_url

    store = from_url(f"s3://{BUCKET}/{prefix}")
    for path in files:
        obstore.put(store, path.name, path.read_bytes())


def test_source_files_on_s3_ingest_like_local_ones_with_the_urls_in_lineage_and_errors(
        s3: dict[str, str], tmp_path: Path) -> None:
    from shoal.lineage import SourceFile

    cobe = Path(__file__).parent / "data" / "cobe_sst"
    prefix = uuid.uuid4().hex[:8]
    good, bad = sorted((cobe / "good").glob("*.grb")), sorted((cobe / "bad").glob("*.grb"))
    _upload(f"{prefix}/cobe", good + bad[:2])
    _upload(prefix, [SAMPLE])
    local, remote = Catalog(tmp_path / "local"), Catalog(tmp_path / "remote")
    _shoal(str(local.home), "ingest", "sst", *good, *bad[:2])
    done = _shoal(str(remote.home), "ingest", "sst", f"s3://{BUCKET}/{prefix}/cobe/")
    assert done.returncode == 1 and f"s3://{BUCKET}/{prefix}/cobe/{bad[0].name}" in done.stderr, done.stderr
    assert "shoal-sources-" not in done.stdout + done.stderr
    assert remote.open_array("sst").sst.equals(local.open_array("sst").sst)
    sources = remote.lineage("sst").sources
    assert [s.path for s in sources] == [f"s3://{BUCKET}/{prefix}/cobe/{p.name}" for p in good]
    assert [(s.sha256, s.bytes) for s in sources] == [(f.sha256, f.bytes) for f in map(SourceFile.of, good)]
    one = _shoal(str(remote.home), "ingest", "oni", f"s3://{BUCKET}/{prefix}/{SAMPLE.name}")
    assert one.returncode == 0, one.stderr
    assert remote.lineage("nino34").sources[0].path == f"s3://{BUCKET}/{prefix}/{SAMPLE.name}"
    missing = _shoal(str(remote.home), "ingest", "sst", f"s3://{BUCKET}/{prefix}/nothing/")
    assert missing.returncode == 2 and missing.stderr.splitlines() == [
        f"error: s3://{BUCKET}/{prefix}/nothing/: no objects there; check the bucket and prefix"], missing.stderr
    unreadable = _shoal(str(remote.home), "ingest", "sst", "s3://no-such-bucket/cobe/")
    assert unreadable.returncode == 2 and len(unreadable.stderr.splitlines()) == 1, unreadable.stderr
    assert unreadable.stderr.startswith("error: s3://no-such-bucket/cobe/: cannot read it (") and "AWS_ENDPOINT_URL" in \
        unreadable.stderr and len(remote.history("sst")) == 1


def test_array_homes_take_s3_gs_and_az_and_refuse_other_schemes_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from shoal.arrays import _storage
    from shoal.errors import CatalogError

    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_NAME", raising=False)
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT", raising=False)
    with pytest.raises(CatalogError, match=r"^array home 'az://box/shoal': no Azure storage account; set AZURE_STORAGE_"):
        _storage("az://box/shoal")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "someaccount")
    assert "azure" in repr(_storage("az://box/shoal")).lower()
    with pytest.raises(CatalogError, match=r"unsupported scheme 'ftp'; use a local path, s3://, gs:// or az://$"):
        _storage("ftp://host/shoal")

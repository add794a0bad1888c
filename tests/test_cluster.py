"""Ingest and backfills on a real 2-worker Dask LocalCluster: the same bytes and lineage as in one process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shoal import cluster
from shoal.catalog import Catalog
from shoal.datasets import cobe_sst
from shoal.datasets.cobe_sst_sample import write_sample
from tests.timeouts import scaled

DATA = Path(__file__).parent / "data" / "cobe_sst"
FORMS = "expected local, local:N"


@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    """Two worker processes of one thread each, for the whole module."""
    with cluster.connect(cluster.ClusterSpec(workers=2)) as started:
        yield started


@pytest.fixture(scope="module")
def months(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Sample COBE months in three folders: a year and a half, the half year before it, the half year after it."""
    root = tmp_path_factory.mktemp("cobe")
    spans = {"middle": ("1990-01", "1991-06"), "before": ("1989-07", "1989-12"), "after": ("1991-07", "1991-12")}
    for name, (start, end) in spans.items():
        write_sample(root / name, start=start, end=end)
    return {name: root / name for name in spans}


def _stored(catalog: Catalog, name: str = "sst") -> dict[str, bytes]:
    """Every key of an array (Zarr metadata, coordinates, chunks: of `sst`, its fields and sha256) with its bytes."""
    from zarr.core.buffer import default_buffer_prototype

    store = catalog.array_session(name).store

    async def read() -> dict[str, bytes]:
        keys = sorted([key async for key in store.list()])
        return {key: (await store.get(key, prototype=default_buffer_prototype())).to_bytes() for key in keys}

    return asyncio.run(read())


def _assert_same_array(ours: Catalog, theirs: Catalog) -> None:
    stored = _stored(ours)
    assert any("/c/" in key for key in stored) and stored == _stored(theirs)
    ours_history, theirs_history = ours.history("sst"), theirs.history("sst")
    assert [v.lineage.sources for v in ours_history] == [v.lineage.sources for v in theirs_history]
    assert [v.lineage.parameters for v in ours_history] == [v.lineage.parameters for v in theirs_history]
    assert [v.lineage.message for v in ours_history] == [v.lineage.message for v in theirs_history]


def _ran(client: object, run: Callable[[], object]) -> tuple[object, set[str]]:
    """What `run()` returned, and the names of the functions the cluster's workers ran meanwhile."""
    from dask.utils import key_split
    from distributed import get_task_stream

    with get_task_stream(client=client) as stream:
        result = run()
    return result, {key_split(task["key"]) for task in stream.data}


def test_an_sst_ingest_on_the_cluster_stores_the_same_bytes_and_lineage_as_one_process(
        client: object, months: dict[str, Path], tmp_path: Path) -> None:
    local, spread = Catalog(tmp_path / "local"), Catalog(tmp_path / "spread")
    for name in ("middle", "before", "after"):  # create the axis, rebuild it for earlier months, append to it
        cobe_sst.ingest(local, [months[name]])
        _, ran = _ran(client, lambda name=name: cobe_sst.ingest(spread, [months[name]], client=client))
        assert {"decode_months", "write_part"} <= ran  # (dask's key names drop the leading underscore)
    assert len(spread.history("sst")) == 3 and spread.open_array("sst").sizes["time"] == 30
    _assert_same_array(spread, local)
    again = cobe_sst.ingest(spread, [months["middle"]], client=client)
    assert len(again.unchanged) == 18 and not again.committed and len(spread.history("sst")) == 3


def test_bad_grib_files_on_the_cluster_are_reported_in_the_same_lines_and_the_good_months_committed(
        client: object, tmp_path: Path) -> None:
    local, spread = Catalog(tmp_path / "local"), Catalog(tmp_path / "spread")
    paths = [DATA / "good", DATA / "bad"]
    expected = cobe_sst.ingest(local, paths)
    report = cobe_sst.ingest(spread, paths, client=client)
    assert report.exit_code == 1 and len(report.committed) == 3 and len(report.failures) == 9
    assert report.failures == expected.failures and report.committed == expected.committed
    _assert_same_array(spread, local)


def test_the_backfill_flow_on_a_dask_task_runner_equals_the_local_flow(
        prefect_harness: None, client: object, months: dict[str, Path], tmp_path: Path) -> None:
    from shoal.flows.backfill import backfill_sst
    from shoal.flows.ingest import on_cluster

    gappy = tmp_path / "gappy"
    gappy.mkdir()
    for path in months["middle"].glob("*.grb"):
        (gappy / path.name).write_bytes(path.read_bytes())
    (gappy / "sst199102.grb").write_bytes(b"GRIB" + b"\0" * 60)  # corrupt: fails its month alone
    local, spread = Catalog(tmp_path / "local"), Catalog(tmp_path / "spread")
    arguments = {"source": gappy, "start": "1990-01", "end": "1991-06", "chunk": 5, "concurrency": 2}
    expected = backfill_sst(home=str(local.home), **arguments)
    flow = on_cluster(backfill_sst, client)
    report, ran = _ran(client, lambda: flow(home=str(spread.home), **arguments))
    assert "write_chunk_task" in ran
    assert len(report.committed) == 17 and report.failures == expected.failures and len(spread.history("sst")) == 1
    _assert_same_array(spread, local)


def test_the_ingest_flow_on_a_dask_task_runner_decodes_on_the_workers(
        prefect_harness: None, client: object, months: dict[str, Path], tmp_path: Path) -> None:
    from shoal.flows import ingest_sst
    from shoal.flows.ingest import on_cluster

    local, spread = Catalog(tmp_path / "local"), Catalog(tmp_path / "spread")
    ingest_sst(paths=[months["after"]], home=str(local.home))
    flow = on_cluster(ingest_sst, client)
    assert "decode_months" in _ran(client, lambda: flow(paths=[months["after"]], home=str(spread.home)))[1]
    _assert_same_array(spread, local)


def _enso_inputs(months: dict[str, Path], *catalogs: Catalog) -> None:
    from shoal.datasets import oni
    from shoal.datasets.oni import SAMPLE

    for catalog in catalogs:
        cobe_sst.ingest(catalog, list(months.values()))
        oni.ingest(catalog, [SAMPLE])


def _assert_same_features(ours: Catalog, theirs: Catalog) -> None:
    from shoal.features import enso

    stored = _stored(ours, enso.DATASET)
    assert any("/c/" in key for key in stored) and stored == _stored(theirs, enso.DATASET)
    # The content keys differ: they hold the inputs' snapshot ids, which are two repositories' own.
    mine, other = ours.lineage(enso.DATASET).parameters, theirs.lineage(enso.DATASET).parameters
    assert (mine["config"], mine["statistics"]) == (other["config"], other["statistics"])


def test_the_enso_features_built_on_the_cluster_are_the_bytes_of_a_local_build(
        client: object, months: dict[str, Path], tmp_path: Path) -> None:
    from shoal.features import enso

    local, spread = Catalog(tmp_path / "local"), Catalog(tmp_path / "spread")
    _enso_inputs(months, local, spread)
    config = enso.EnsoFeatureConfig(valid_start="1991-01", test_start="1991-07", coarsen=4)
    enso.build(local, config=config)
    built, ran = _ran(client, lambda: enso.build(spread, config=config, client=client))
    assert ran and not built.reused  # the SST blocks were read on the workers
    _assert_same_features(spread, local)


def test_the_feature_flow_on_a_dask_task_runner_reads_the_sst_on_the_workers(
        prefect_harness: None, client: object, months: dict[str, Path], tmp_path: Path) -> None:
    from shoal.flows.ingest import on_cluster
    from shoal.flows.pipelines import build_features

    local, spread = Catalog(tmp_path / "local"), Catalog(tmp_path / "spread")
    _enso_inputs(months, local, spread)
    settings = {"valid_start": "1991-01", "test_start": "1991-07", "coarsen": 4}
    build_features(task_name="enso", home=str(local.home), settings=settings)
    flow = on_cluster(build_features, client)
    assert _ran(client, lambda: flow(task_name="enso", home=str(spread.home), settings=settings))[1]
    _assert_same_features(spread, local)


HIGGS = Path(__file__).parent / "data" / "higgs" / "higgs_real_test.csv"


def _rows(catalog: Catalog) -> object:
    return catalog.read_table("higgs").sort_by("row_id")


def test_a_plain_higgs_csv_parsed_in_spans_on_the_cluster_gives_the_rows_of_one_process(
        client: object, tmp_path: Path) -> None:
    from shoal.datasets import higgs

    local, spread = Catalog(tmp_path / "local"), Catalog(tmp_path / "spread")
    higgs.ingest(local, [HIGGS])
    report, ran = _ran(client, lambda: higgs.ingest(spread, [HIGGS], client=client))
    assert report.exit_code == 0 and {"count_lines", "write_span"} <= ran, report.failures  # (no leading _)
    assert _rows(spread).equals(_rows(local)) and _rows(spread).num_rows == 500
    assert spread.lineage("higgs").sources == local.lineage("higgs").sources
    assert spread.lineage("higgs").parameters == local.lineage("higgs").parameters


def test_a_bad_higgs_line_on_the_cluster_is_named_as_in_one_process_and_nothing_is_committed(
        client: object, tmp_path: Path) -> None:
    from shoal.datasets import higgs

    lines = HIGGS.read_text().splitlines(keepends=True)
    lines[400] = lines[400].replace(",", ",x", 1)  # line 401, in one of the last spans
    bad = tmp_path / "HIGGS.csv"
    bad.write_text("".join(lines))
    local, spread = Catalog(tmp_path / "local"), Catalog(tmp_path / "spread")
    expected = higgs.ingest(local, [bad])
    report = higgs.ingest(spread, [bad], client=client)
    assert report.exit_code == 2 and report.failures == expected.failures and ":401: column" in report.failures[0]
    assert not spread.exists("higgs") and not list((tmp_path / "spread").rglob("*.parquet"))


def test_speech_folders_decoded_in_shards_on_the_cluster_give_the_rows_and_lines_of_one_process(
        client: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    import numpy as np
    import soundfile as sf

    from shoal.datasets import speech_commands

    folder = tmp_path / "v0.01"
    shutil.copytree(Path(__file__).parent / "data" / "speech_commands" / "v0.01", folder)
    (folder / "no" / "00000000_nohash_0.wav").write_bytes(b"RIFF not really")  # fails on a worker
    (folder / "up" / "ffffffff_nohash_0.wav").write_bytes(b"")  # fails on a worker
    (folder / "up" / "notes.txt").write_text("x")  # fails in this process, listed after those two
    (folder / "_background_noise_").mkdir()
    sf.write(folder / "_background_noise_" / "hum.wav", np.zeros(16_000, np.int16), 16_000, subtype="PCM_16")
    monkeypatch.setattr(speech_commands, "BATCH", 4)  # several shards
    local, spread = Catalog(tmp_path / "local"), Catalog(tmp_path / "spread")
    expected = speech_commands.ingest(local, [folder])
    report, ran = _ran(client, lambda: speech_commands.ingest(spread, [folder], client=client))
    assert "write_shard" in ran and report.exit_code == 1 and len(report.failures) == 3
    assert (report.committed, report.failures) == (expected.committed, expected.failures)
    for name, key in (("speech", "clip_id"), ("speech_noise", "name")):
        assert spread.read_table(name).sort_by(key).equals(local.read_table(name).sort_by(key))
    assert spread.lineage("speech").sources == local.lineage("speech").sources


def test_a_running_scheduler_is_used_by_its_address(client: object, months: dict[str, Path], tmp_path: Path) -> None:
    local, spread = Catalog(tmp_path / "local"), Catalog(tmp_path / "spread")
    cobe_sst.ingest(local, [months["after"]])
    with cluster.connect(cluster.parse(client.scheduler.address)) as remote:
        _, ran = _ran(client, lambda: cobe_sst.ingest(spread, [months["after"]], client=remote))
    assert "decode_months" in ran
    _assert_same_array(spread, local)


def test_a_scheduler_that_does_not_answer_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", "2s")
    with socket.socket() as probe:  # a free port: nothing listens there
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(cluster.ClusterError, match=re.escape(f"cannot reach the Dask scheduler at {address}")), \
            cluster.connect(cluster.parse(address)):
        pass


def test_a_step_that_does_not_spread_says_so_and_starts_no_cluster(home: Path) -> None:
    from shoal.datasets.oni import SAMPLE

    result = _shoal("--home", home, "ingest", "oni", SAMPLE, "--cluster", "local:2")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "note: ingest oni runs in this process (it does not spread over a cluster); no cluster started"]


@pytest.mark.parametrize(("value", "expected"), [
    ("local", cluster.ClusterSpec(workers=os.cpu_count())), ("local:3", cluster.ClusterSpec(workers=3)),
    ("tcp://10.0.0.5:8786", cluster.ClusterSpec(address="tcp://10.0.0.5:8786"))])
def test_the_cluster_forms_parse(value: str, expected: cluster.ClusterSpec) -> None:
    assert cluster.parse(value) == expected


@pytest.mark.parametrize("value", ["local:0", "local:two", "lokal", "tcp://host", "10.0.0.5:8786", "tcp://h:1/x"])
def test_a_bad_cluster_value_is_refused_naming_the_accepted_forms(value: str) -> None:
    with pytest.raises(cluster.ClusterError, match=re.escape(f"--cluster '{value}': {FORMS}")):
        cluster.parse(value)


def _shoal(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "SHOAL_HOME"} | {"NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "shoal", *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=scaled(120), check=False)


@pytest.mark.parametrize("command", [["ingest", "sst", "DIR"], ["run", "enso", "DIR"], ["features", "enso"],
                                     ["backfill", "sst", "--source", "DIR", "--start", "1990-01", "--end", "1990-02"]])
def test_the_cli_refuses_a_bad_cluster_in_one_line_before_any_work(command: list[str], months: dict[str, Path],
                                                                   home: Path) -> None:
    result = _shoal("--home", home, *[str(months["after"]) if arg == "DIR" else arg for arg in command],
                    "--cluster", "local:0")
    assert result.returncode == 2 and result.stderr.splitlines() == [
        f"error: --cluster 'local:0': expected {cluster.FORMS}"], result.stderr
    assert not home.exists()


def test_shoal_ingest_sst_with_a_local_cluster_commits_what_one_process_would(months: dict[str, Path],
                                                                               tmp_path: Path) -> None:
    local, spread = Catalog(tmp_path / "local"), Catalog(tmp_path / "spread")
    cobe_sst.ingest(local, [months["after"]])
    result = _shoal("--home", spread.home, "ingest", "sst", months["after"], "--cluster", "local:2")
    assert result.returncode == 0, result.stderr
    assert "sst: version 0; 6 committed, 0 unchanged, 0 failed" in result.stdout
    _assert_same_array(spread, local)

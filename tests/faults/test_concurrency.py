"""Concurrent writers of different data always land; identical builds give one version.

Real processes (`python -m shoal`), as a scheduled flow, a backfill and a user would start them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from shoal.catalog import Catalog
from tests.test_cli import shoal
from tests.timeouts import scaled

# The reproduction: disjoint month sets whose union grows one time axis.
MONTH_SETS = (("1990-01", "1992-12"), ("1993-01", "1994-12"), ("1995-01", "1997-12"), ("1998-01", "1999-12"))
FEATURES = ("--coarsen", "8", "--valid-start", "1996-01", "--test-start", "1998-01")


def _start(*args: str | Path, home: Path) -> subprocess.Popen[str]:
    env = {key: value for key, value in os.environ.items() if key != "SHOAL_HOME"} | {"NO_COLOR": "1"}
    return subprocess.Popen([sys.executable, "-m", "shoal", "--home", str(home), *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    out, err = process.communicate(timeout=scaled(300))
    return process.returncode, out + err


@pytest.fixture(scope="module")
def months(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """One folder of sample GRIB files per month set."""
    from shoal.datasets.cobe_sst_sample import write_sample

    root = tmp_path_factory.mktemp("months")
    write_sample(root / "all", start="1990-01", end="1999-12")
    folders = []
    for index, (start, end) in enumerate(MONTH_SETS):
        folder = root / f"set{index}"
        folder.mkdir()
        for path in sorted((root / "all").glob("sst*.grb")):
            month = f"{path.stem[3:7]}-{path.stem[7:9]}"
            if start <= month <= end:
                shutil.copy(path, folder / path.name)
        folders.append(folder)
    return folders


def test_four_concurrent_ingests_of_disjoint_months_all_land_while_a_reader_reads_every_version(
        months: list[Path], tmp_path: Path) -> None:
    home = tmp_path / "home"
    catalog = Catalog(home)
    seen: list[int] = []
    done = threading.Event()

    def read_every_version() -> None:  # a consumer during the writes: every version opens, versions only grow
        while not done.is_set():
            if catalog.exists("sst"):
                for entry in catalog.history("sst"):
                    assert catalog.open_array("sst", version=entry.snapshot).sizes["time"] > 0
                seen.append(len(catalog.history("sst")))

    reader = threading.Thread(target=read_every_version)
    reader.start()
    try:
        results = [_finish(p) for p in [_start("ingest", "sst", folder, home=home) for folder in months]]
    finally:
        done.set()
        reader.join()
    assert [code for code, _ in results] == [0, 0, 0, 0], [text for _, text in results]
    assert len(catalog.history("sst")) == 4 and seen == sorted(seen)

    alone = Catalog(tmp_path / "alone")
    assert shoal("ingest", "sst", *months, home=Path(alone.home)).returncode == 0
    together, reference = catalog.open_array("sst"), alone.open_array("sst")
    assert together.sizes["time"] == 120
    np.testing.assert_array_equal(together.time.values, reference.time.values)
    np.testing.assert_array_equal(together.sst.values, reference.sst.values)


def test_two_identical_feature_builds_at_once_give_one_version(months: list[Path], tmp_path: Path) -> None:
    from shoal.datasets.oni import SAMPLE

    home = tmp_path / "home"
    assert shoal("ingest", "sst", *months, home=home).returncode == 0
    assert shoal("ingest", "oni", SAMPLE, home=home).returncode == 0
    results = [_finish(p) for p in [_start("features", "enso", *FEATURES, home=home) for _ in range(2)]]
    assert [code for code, _ in results] == [0, 0], results
    assert len(Catalog(home).history("enso_features")) == 1
    assert sum("unchanged inputs and parameters, reused" in text for _, text in results) == 1


def test_two_writers_of_the_same_month_both_land_and_the_later_ones_content_is_stored(tmp_path: Path) -> None:
    good = Path(__file__).parent.parent / "data" / "cobe_sst"
    home = tmp_path / "home"
    results = [_finish(p) for p in [_start("ingest", "sst", good / "good" / "sst198202.grb", home=home),
                                    _start("ingest", "sst", good / "revised" / "sst198202.grb", home=home)]]
    assert [code for code, _ in results] == [0, 0], results
    history = Catalog(home).history("sst")
    assert len(history) == 2 and history[0].lineage.message == "ingest 1 month(s), replacing 1982-02"
    later = history[0].lineage.sources[0].sha256
    stored = Catalog(home).open_array("sst").source_sha256.values[0].tobytes().hex()
    assert stored == later

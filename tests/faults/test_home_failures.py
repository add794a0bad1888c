"""The home's own failures (full disk, read-only, a file, missing) are one line naming the home, exit 2.

The source is never blamed, and every dataset stays readable at its last version. A small
disk is a tmpfs where this process may mount one (root), else a size-limited loop file
system, else the tests say why they skip.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.catalog import Catalog
from tests.test_cli import shoal

NINO = Path(__file__).parent.parent / "data" / "nino" / "oni_small.txt"


def _mount(target: Path, size: str) -> str | None:
    """Mount a file system of `size` at `target`; None when it worked, else why not."""
    target.mkdir(parents=True)
    tmpfs = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)], capture_output=True,
                           text=True, check=False)
    if tmpfs.returncode == 0:
        return None
    image = target.with_suffix(".img")
    steps = [["truncate", "-s", size, str(image)], ["mkfs.ext4", "-q", str(image)],
             ["mount", "-o", "loop", str(image), str(target)]]
    for step in steps:
        if shutil.which(step[0]) is None:
            return f"no tmpfs ({tmpfs.stderr.strip()}) and no {step[0]} for a loop file system"
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode:
            return f"no tmpfs ({tmpfs.stderr.strip()}) nor loop file system ({done.stderr.strip()}): needs root"
    return None


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB file system, unmounted afterwards."""
    target = tmp_path / "disk"
    why = _mount(target, "2m")
    if why:
        pytest.skip(f"a small disk cannot be made here: {why}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    return lines[0]


def _higgs_csv(path: Path, rows: int) -> Path:
    """A UCI-format HIGGS CSV of real rows repeated: ~0.4 MB per 1,000 rows."""
    real = (Path(__file__).parent.parent / "data" / "higgs" / "higgs_real_test.csv").read_text().splitlines()
    path.write_text("\n".join(real[i % len(real)] for i in range(rows)) + "\n")
    return path


def test_a_full_disk_is_the_homes_fault_not_the_sources_and_the_last_versions_stay(disk: Path, tmp_path: Path) -> None:
    from shoal.datasets.cobe_sst_sample import write_sample

    home = disk / "home"
    assert shoal("ingest", "oni", NINO, home=home).returncode == 0
    write_sample(tmp_path / "sst", start="1990-01", end="1995-12")
    big = _higgs_csv(tmp_path / "HIGGS.csv", 12_000)
    for source, path in (("sst", tmp_path / "sst"), ("higgs", big)):
        line = _one_line(shoal("ingest", source, path, home=home))
        assert line.startswith(f"error: the home {home} is full (no space left on device); free space there"), line
        assert str(path) not in line and "Task was destroyed" not in line
    assert [info.name for info in Catalog(home).list()] == ["nino34"]
    assert Catalog(home).read_table("nino34").num_rows > 0
    assert shoal("catalog", "check", "--repair", home=home).returncode == 0
    assert shoal("catalog", "check", home=home).returncode == 0


def test_a_read_only_home_is_one_line_and_reads_still_work(disk: Path) -> None:
    home = disk / "home"
    assert shoal("ingest", "oni", NINO, home=home).returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    line = _one_line(shoal("ingest", "oni", NINO.with_name("oni_small_changed.txt"), home=home))
    assert line.startswith(f"error: the home {home} is on a read-only file system; remount it writable"), line
    assert shoal("catalog", "list", home=home).returncode == 0


def test_a_home_that_is_a_file_or_missing_is_one_line(tmp_path: Path) -> None:
    file = tmp_path / "home.txt"
    file.write_text("not a home")
    for args in (("catalog", "list"), ("ingest", "oni", NINO)):
        line = _one_line(shoal(*args, home=file))
        assert line == (f"error: the home {file} is a file, not a folder; pass --home a folder (it is created when "
                        "missing)"), line
    line = _one_line(shoal("catalog", "list", home=tmp_path / "nowhere"))
    assert line.startswith(f"error: the home {tmp_path / 'nowhere'} does not exist"), line

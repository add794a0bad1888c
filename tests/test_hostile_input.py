"""Hostile and odd input is refused early, one line each, with bounded memory (bombs, links, huge clips, odd paths)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from shoal.datasets import cobe_sst, higgs, higgs_text, speech_commands
from shoal.datasets.higgs import HiggsLimits
from shoal.datasets.speech_commands import SpeechLimits
from shoal.errors import SourceError
from tests.test_cli import _one_error_line, shoal
from tests.timeouts import scaled

DATA = Path(__file__).parent / "data"
FIRST5 = DATA / "higgs" / "higgs_first5.csv"
SPEECH = DATA / "speech_commands" / "v0.01"
GOOD_SST = sorted((DATA / "cobe_sst" / "good").glob("*.grb"))
CLIP = SPEECH / "yes" / "988e2f9a_nohash_0.wav"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A writable copy of the 9 real fixture clips with their list files."""
    return Path(shutil.copytree(SPEECH, tmp_path / "speech_commands_v0.01"))


def _gzip_of_zeros(path: Path, size: int) -> Path:
    """`head -c SIZE /dev/zero | gzip -1`, written a MiB at a time."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    with path.open("wb") as file:
        for _ in range(size >> 20):
            file.write(packer.compress(zeros))
        file.write(packer.flush())
    return path


# -- HIGGS: bombs and endless lines -----------------------------------------------------------


def test_a_gzip_bomb_is_refused_within_a_few_hundred_mb(tmp_path: Path) -> None:
    bomb = _gzip_of_zeros(tmp_path / "HIGGS.csv.gz", 200 << 20)  # 200 MiB of zeros in ~200 KB
    # The peak of this process's own memory: VmHWM (ru_maxrss keeps the parent's peak across
    # exec on Linux, and pytest's own process may have grown past 1 GB by now).
    code = (
        "import json, sys\n"
        "from shoal.catalog import Catalog\n"
        "from shoal.datasets.higgs import ingest\n"
        "report = ingest(Catalog(sys.argv[1]), [sys.argv[2]])\n"
        "peak = next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM:'))\n"
        "print(json.dumps({'failures': report.failures, 'rss_mb': peak / 1024}))\n"
    )
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "home"), str(bomb)], capture_output=True,
                         text=True, timeout=scaled(120), check=True)
    measured = json.loads(run.stdout.splitlines()[-1])
    assert len(measured["failures"]) == 1 and "HiggsLimits.max_ratio" in measured["failures"][0]
    assert measured["failures"][0].startswith(f"{bomb}: ") and "decompression bomb" in measured["failures"][0]
    assert measured["rss_mb"] < 400, measured  # before: a line of 200 MB in polars (1.3 GB); the time is a benchmark's
    assert not (tmp_path / "home" / "higgs").exists()


def test_a_zip_member_that_declares_a_bomb_is_refused_before_it_is_inflated(catalog, tmp_path: Path) -> None:  # noqa: ANN001
    wrapped = tmp_path / "higgs.zip"
    with zipfile.ZipFile(wrapped, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("HIGGS.csv", bytes(32 << 20))
    report = higgs.ingest(catalog, [wrapped])
    assert report.exit_code == 2 and len(report.failures) == 1
    assert f"{32 << 20:,} bytes of text from" in report.failures[0] and "HiggsLimits.max_ratio" in report.failures[0]


def _with_long_line(path: Path, at: int, length: int) -> Path:
    lines = FIRST5.read_bytes().splitlines(keepends=True) * 4
    lines.insert(at - 1, b"1" * length + b"\n")
    path.write_bytes(b"".join(lines))
    return path


@pytest.mark.parametrize("compress", [None, "gzip"])
def test_a_line_longer_than_the_cap_is_refused_with_its_line_number(catalog, tmp_path: Path,  # noqa: ANN001
                                                                     compress: str | None) -> None:
    path = _with_long_line(tmp_path / "HIGGS.csv", at=7, length=10_000)
    if compress:
        path = tmp_path / "HIGGS.csv.gz"
        path.write_bytes(zlib.compress((tmp_path / "HIGGS.csv").read_bytes(), wbits=31))
    report = higgs.ingest(catalog, [path])
    assert report.exit_code == 2
    expected = (f"{path}:7: a line longer than 4,096 bytes (a HIGGS line is under 1 KB); expected the UCI HIGGS text; "
                "fetch the file again (`shoal fetch higgs`), or raise HiggsLimits.max_line_bytes")
    assert report.failures == (expected,)
    assert not catalog.exists(higgs.DATASET)


@pytest.mark.parametrize(("block", "at"), [(700, 3), (1000, 12), (4096, 20), (64, 21)])
def test_the_long_line_is_named_by_its_number_wherever_the_blocks_cut_the_text(catalog, tmp_path: Path, monkeypatch,  # noqa: ANN001
                                                                               block: int, at: int) -> None:
    monkeypatch.setattr(higgs_text, "BLOCK", block)
    path = _with_long_line(tmp_path / "HIGGS.csv", at=at, length=1_001)
    report = higgs.ingest(catalog, [path], limits=HiggsLimits(max_line_bytes=1_000))
    assert len(report.failures) == 1 and report.failures[0].startswith(f"{path}:{at}: a line longer than 1,000 bytes")


def test_lines_as_long_as_the_cap_are_ingested(catalog) -> None:  # noqa: ANN001
    longest = max(len(line) for line in FIRST5.read_bytes().splitlines())
    report = higgs.ingest(catalog, [FIRST5], limits=HiggsLimits(max_line_bytes=longest))
    assert report.exit_code == 0 and report.version == 0


# -- Speech: what a source folder holds ---------------------------------------------------------


def _lines_about(report, name: str) -> list[str]:  # noqa: ANN001
    return [line for line in report.failures if line.split(": ")[0].endswith(name)]


def test_links_devices_and_pipes_in_a_speech_folder_are_refused_one_line_each_and_the_clips_land(
        catalog, folder: Path, tmp_path: Path) -> None:  # noqa: ANN001
    outside = tmp_path / "outside"
    shutil.copytree(SPEECH / "up", outside / "left")
    shutil.copyfile(CLIP, outside / "eeee0001_nohash_0.wav")
    (folder / "yes" / "eeee0001_nohash_0.wav").symlink_to(outside / "eeee0001_nohash_0.wav")
    (folder / "no" / "eeee0002_nohash_0.wav").symlink_to("/etc/passwd")
    (folder / "left").symlink_to(outside / "left", target_is_directory=True)
    os.mkfifo(folder / "up" / "eeee0003_nohash_0.wav")
    report = speech_commands.ingest(catalog, [folder])
    assert report.exit_code == 1 and len(report.committed) == 9 and len(report.failures) == 4
    for name in ("yes/eeee0001_nohash_0.wav", "no/eeee0002_nohash_0.wav", "left"):
        [line] = _lines_about(report, name)
        assert line.startswith(f"{folder / name}: a symbolic link (to ") and "not followed" in line
        assert "--follow-links" in line and "\n" not in line
    assert "(to /etc/passwd)" in _lines_about(report, "eeee0002_nohash_0.wav")[0]
    [fifo] = _lines_about(report, "eeee0003_nohash_0.wav")
    assert fifo.startswith(f"{folder / 'up' / 'eeee0003_nohash_0.wav'}: a device, pipe or socket")
    assert not any("eeee" in clip or clip.startswith("left/") for clip in _clip_ids(catalog))


def _clip_ids(catalog) -> list[str]:  # noqa: ANN001
    return catalog.scan_table(speech_commands.DATASET).select("clip_id").collect()["clip_id"].to_list()


def test_follow_links_reads_linked_clips_and_folders_under_the_links_names(catalog, folder: Path,  # noqa: ANN001
                                                                          tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    shutil.copytree(SPEECH / "up", outside / "left")
    shutil.copyfile(CLIP, outside / "eeee0001_nohash_0.wav")
    (folder / "yes" / "eeee0001_nohash_0.wav").symlink_to(outside / "eeee0001_nohash_0.wav")
    (folder / "left").symlink_to(outside / "left", target_is_directory=True)
    (folder / "yes" / "loop").symlink_to(folder, target_is_directory=True)  # walked once, not forever
    os.mkfifo(folder / "up" / "eeee0003_nohash_0.wav")
    expected = speech_commands.expand([folder], follow_links=True)
    seen: list[str] = []
    report = speech_commands.ingest(catalog, [folder], follow_links=True, progress=seen.append)
    assert len(report.committed) == 9 + 1 + 3
    assert {"yes/eeee0001_nohash_0.wav", "left/439c84f4_nohash_1.wav"} <= set(_clip_ids(catalog))
    problems = [line.split(": ", 1)[1].split(";")[0] for line in report.failures]
    assert problems == ["a device, pipe or socket, not a file"]
    assert sorted(seen) == sorted(map(str, expected)) and len(seen) == 9 + 1 + 3


def test_the_cli_refuses_a_link_by_default_and_follows_it_with_follow_links(tmp_path: Path, folder: Path) -> None:
    shutil.copyfile(CLIP, tmp_path / "eeee0001_nohash_0.wav")
    link = folder / "yes" / "eeee0001_nohash_0.wav"
    link.symlink_to(tmp_path / "eeee0001_nohash_0.wav")
    refused = shoal("ingest", "speech", folder, home=tmp_path / "refused")
    assert refused.returncode == 1 and _one_error_line(refused).startswith(f"error: {link}: a symbolic link")
    followed = shoal("ingest", "speech", "--follow-links", folder, home=tmp_path / "followed")
    assert followed.returncode == 0 and followed.stderr == ""
    assert "speech: version 0; 10 committed, 0 unchanged, 0 failed" in followed.stdout


def test_a_ten_minute_wav_is_refused_from_its_header_without_decoding_its_samples(catalog, folder: Path,  # noqa: ANN001
                                                                                 monkeypatch) -> None:  # noqa: ANN001
    long = folder / "yes" / "ffff0001_nohash_0.wav"
    sf.write(long, np.zeros(10 * 60 * 16_000, np.int16), 16_000, subtype="PCM_16")
    read = sf.SoundFile.read
    frames_read: list[int] = []

    def counted(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        frames_read.append(self.frames)
        return read(self, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", counted)
    report = speech_commands.ingest(catalog, [folder])
    assert report.exit_code == 1 and len(report.committed) == 9
    expected = (f"{long}: 600.0 s long, more than the 2 s allowed (SpeechLimits: cut the recording, or raise the "
                "limit); replace it with a 16 kHz mono 16-bit PCM WAV, or remove it")
    assert report.failures == (expected,)
    assert len(frames_read) == 9 and max(frames_read) <= 16_000


def test_a_file_over_the_byte_cap_is_refused_unread_and_the_rest_land(catalog, folder: Path) -> None:  # noqa: ANN001
    big = folder / "no" / "ffff0002_nohash_0.wav"
    sf.write(big, np.zeros(2 * 16_000, np.int16), 16_000, subtype="PCM_16")  # 64 KB: 2 s, within the clip limit
    report = speech_commands.ingest(catalog, [folder], limits=SpeechLimits(max_file_bytes=48_000))
    assert len(report.committed) == 9 and len(report.failures) == 1
    assert report.failures[0].startswith(f"{big}: 64,044 bytes, more than the 48,000")
    assert "not read" in report.failures[0]


# -- COBE-SST -----------------------------------------------------------------------------------


def test_a_grib2_file_is_named_as_grib_edition_2_not_as_a_parameter(tmp_path: Path) -> None:
    import eccodes

    handle = eccodes.codes_grib_new_from_samples("GRIB2")
    eccodes.codes_set_string(handle, "shortName", "sst")
    eccodes.codes_set(handle, "dataDate", 19900101)
    path = tmp_path / "sst199001.grb"
    with path.open("wb") as file:
        eccodes.codes_write(handle, file)
    eccodes.codes_release(handle)
    with pytest.raises(SourceError) as raised:
        cobe_sst.decode(path)
    assert str(raised.value) == (f"{path}:1: GRIB edition 2; COBE-SST files are GRIB edition 1; pass the files as JMA "
                                 "publishes them (`shoal fetch sst`), not a conversion")


def test_a_link_in_an_sst_folder_is_refused_unless_followed(tmp_path: Path) -> None:
    from shoal.catalog import Catalog

    months = tmp_path / "cobe"
    months.mkdir()
    shutil.copy(GOOD_SST[0], months)
    (months / GOOD_SST[1].name).symlink_to(GOOD_SST[1])
    refused = cobe_sst.ingest(Catalog(tmp_path / "refused"), [months])
    assert refused.exit_code == 1 and len(refused.committed) == 1
    assert len(refused.failures) == 1
    assert refused.failures[0].startswith(f"{months / GOOD_SST[1].name}: a symbolic link")
    followed = cobe_sst.ingest(Catalog(tmp_path / "followed"), [months], follow_links=True)
    assert followed.exit_code == 0 and len(followed.committed) == 2


# -- odd paths: one line each, exit 2, never "version None" ------------------------------------------


@pytest.mark.parametrize(("source", "given", "problem"), [
    ("sst", "no/such/sst199001.grb", "No such file or folder; check the path"),
    ("sst", "no/such/path", "No such file or folder; check the path"),
    ("higgs", "a_folder", "is a folder, not a file; pass the file itself"),
    ("speech", "a_folder", "holds no clips"),
])
def test_a_missing_path_a_folder_for_a_file_or_an_empty_folder_is_one_line_and_exit_2(
        tmp_path: Path, source: str, given: str, problem: str) -> None:
    (tmp_path / "a_folder").mkdir()
    result = shoal("ingest", source, tmp_path / given, home=tmp_path / "home")
    assert result.returncode == 2
    assert _one_error_line(result).startswith(f"error: {tmp_path / given}: {problem}")
    assert "version None" not in result.stdout
    assert f"{source}: no version yet; 0 committed, 0 unchanged, 1 failed" in result.stdout

"""Speech Commands ingest: real clips from a folder and a streamed archive, splits, bad and hostile input."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import soundfile as sf

from shoal.datasets.speech_commands import (DATASET, NOISE, RULES, WORDS, decode, hash_split, ingest,
                                           read_split_lists)
from tests.timeouts import scaled

FIXTURES = Path(__file__).parent / "data" / "speech_commands" / "v0.01"
SAMPLE = Path(__file__).parents[1] / "datasets" / "sample_data" / "speech_commands"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A writable copy of the 9 real fixture clips with their list files."""
    return Path(shutil.copytree(FIXTURES, tmp_path / "speech_commands_v0.01"))


def _tar(folder: Path, archive: Path, *, extra: list[tuple[tarfile.TarInfo, bytes | None]] = ()) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=f"./{path.relative_to(folder).as_posix()}", recursive=False)
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return archive


def _wav(path: Path, samples: np.ndarray, rate: int = 16_000, subtype: str = "PCM_16", format: str = "WAV") -> Path:  # noqa: A002
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, rate, subtype=subtype, format=format)
    return path


def _rows(catalog) -> pl.DataFrame:  # noqa: ANN001
    return pl.read_delta(catalog.uri("table", DATASET)).sort("clip_id")


def test_the_hash_rule_gives_the_split_of_the_official_lists_on_all_300_real_clips() -> None:
    lists = read_split_lists(SAMPLE)
    clips = sorted(p.relative_to(SAMPLE).as_posix() for p in SAMPLE.glob("*/*.wav"))
    assert len(clips) == 300
    by_lists = {c: next((s for s, members in lists.items() if c in members), "train") for c in clips}
    assert {c: hash_split(c) for c in clips} == by_lists
    assert sum(s == "valid" for s in by_lists.values()) == 44
    assert sum(s == "test" for s in by_lists.values()) == 51


def test_folder_ingest_writes_one_row_per_clip_readable_with_plain_polars(catalog, folder: Path) -> None:
    report = ingest(catalog, [folder])
    assert report.exit_code == 0 and len(report.committed) == 9 and report.version == 0
    rows = _rows(catalog)
    assert rows.columns == ["clip_id", "label", "label_index", "speaker_id", "utterance", "split", "sample_rate",
                            "source_sample_rate", "source_channels", "n_samples", "sha256", "waveform"]
    first = rows.row(0, named=True)
    assert first["clip_id"] == "no/6a27a9bf_nohash_0.wav"
    assert (first["label"], first["label_index"], first["speaker_id"], first["utterance"]) == ("no", WORDS.index("no"), "6a27a9bf", 0)
    assert first["split"] == "valid" and first["sample_rate"] == 16_000 and first["source_channels"] == 1
    samples, rate = sf.read(folder / first["clip_id"], dtype="int16")
    assert rate == 16_000 and first["n_samples"] == len(samples)
    np.testing.assert_array_equal(np.array(first["waveform"], dtype=np.int16), samples)
    assert rows.group_by("split").len().sort("split").rows() == [("test", 3), ("train", 3), ("valid", 3)]
    lineage = catalog.lineage(DATASET)
    assert lineage.sources[0].path == str(folder.resolve()) and len(lineage.sources[0].sha256) == 64
    assert lineage.parameters["split_rule"] == {str(folder): "lists"}


def test_a_streamed_archive_gives_the_rows_of_the_folder_and_its_sha256_in_the_lineage(catalog, folder: Path, tmp_path: Path) -> None:
    from shoal.catalog import Catalog
    from shoal.lineage import SourceFile

    archive = _tar(folder, tmp_path / "speech_commands_v0.01.tar.gz")
    before = sorted(tmp_path.rglob("*"))
    report = ingest(catalog, [archive])
    assert report.exit_code == 0 and len(report.committed) == 9
    assert sorted(p for p in tmp_path.rglob("*") if catalog.home not in (str(p), *map(str, p.parents))) == before
    other = Catalog(tmp_path / "other")
    ingest(other, [folder])
    assert _rows(catalog).equals(_rows(other))
    assert catalog.lineage(DATASET).sources[0].sha256 == SourceFile.of(archive).sha256


def test_reingesting_the_same_source_is_a_no_op_and_new_clips_append(catalog, folder: Path) -> None:
    ingest(catalog, [folder])
    again = ingest(catalog, [folder])
    assert again.version == 0 and not again.committed and len(again.unchanged) == 9 and again.exit_code == 0
    (folder / "bed").mkdir()
    shutil.copyfile(SAMPLE / "bed" / "62581901_nohash_0.wav", folder / "bed" / "62581901_nohash_0.wav")
    more = ingest(catalog, [folder])
    assert more.version == 1 and more.committed == (str(folder / "bed" / "62581901_nohash_0.wav"),)
    assert len(_rows(catalog)) == 10 and catalog.history(DATASET)[0].lineage.rows == 1


def test_another_rate_is_resampled_with_soxr_and_stereo_is_downmixed_both_recorded(catalog, folder: Path) -> None:
    tone = np.sin(2 * np.pi * 440 * np.arange(8000) / 8000) * 0.5
    _wav(folder / "yes" / "aaaa0001_nohash_0.wav", tone, rate=8000)
    left, right = np.full(16_000, 0.25), np.full(16_000, -0.125)
    _wav(folder / "no" / "aaaa0002_nohash_0.wav", np.stack([left, right], axis=1))
    assert ingest(catalog, [folder]).exit_code == 0
    rows = {r["clip_id"]: r for r in _rows(catalog).iter_rows(named=True)}
    resampled = rows["yes/aaaa0001_nohash_0.wav"]
    assert (resampled["source_sample_rate"], resampled["sample_rate"], resampled["n_samples"]) == (8000, 16_000, 16_000)
    wave = np.array(resampled["waveform"]) / 32768
    spectrum = np.abs(np.fft.rfft(wave))
    assert np.argmax(spectrum) == 440  # 1 s at 16 kHz: bin = Hz
    mixed = rows["no/aaaa0002_nohash_0.wav"]
    assert mixed["source_channels"] == 2 and mixed["source_sample_rate"] == 16_000
    np.testing.assert_array_equal(np.array(mixed["waveform"]), np.full(16_000, round(0.0625 * 32768)))


def test_bad_clips_get_one_line_each_naming_them_and_the_good_clips_land(catalog, folder: Path) -> None:
    (folder / "yes" / "bbbb0001_nohash_0.wav").write_bytes(b"")
    (folder / "yes" / "bbbb0002_nohash_0.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    _wav(folder / "up" / "bbbb0003_nohash_0.wav", np.zeros(1600), format="FLAC")
    (folder / "up" / "notes.txt").write_text("not audio")
    shutil.copyfile(folder / "yes" / "988e2f9a_nohash_0.wav", folder / "stray.wav")
    for sub in ("hum", "yes/deeper"):
        (folder / sub).mkdir()
    shutil.copyfile(folder / "yes" / "988e2f9a_nohash_0.wav", folder / "hum" / "bbbb0004_nohash_0.wav")
    shutil.copyfile(folder / "yes" / "988e2f9a_nohash_0.wav", folder / "yes" / "deeper" / "bbbb0005_nohash_0.wav")
    report = ingest(catalog, [folder])
    assert report.exit_code == 1 and len(report.committed) == 9
    problems = {Path(line.split(": ")[0]).name: line for line in report.failures}
    assert len(report.failures) == 7 and all("\n" not in line for line in report.failures)
    assert "the file is empty" in problems["bbbb0001_nohash_0.wav"]
    assert "not a readable WAV file" in problems["bbbb0002_nohash_0.wav"]
    assert "not a WAV file (libsndfile reads it as FLAC)" in problems["bbbb0003_nohash_0.wav"]
    assert "not a .wav file" in problems["notes.txt"]
    assert "outside a word folder" in problems["stray.wav"] and "outside a word folder" in problems["bbbb0005_nohash_0.wav"]
    assert "unknown word folder 'hum'" in problems["bbbb0004_nohash_0.wav"]
    assert all(str(folder) in line and "; " in line for line in report.failures)  # where, then the fix
    assert len(_rows(catalog)) == 9


def test_the_cli_exits_1_with_a_summary_when_some_clips_fail_and_2_when_none_lands(tmp_path: Path, folder: Path) -> None:
    (folder / "yes" / "cccc0001_nohash_0.wav").write_bytes(b"")
    env = {**os.environ, "NO_COLOR": "1"}
    run = [sys.executable, "-m", "shoal", "--home", str(tmp_path / "home"), "ingest", "speech"]
    some = subprocess.run([*run, str(folder)], capture_output=True, text=True, env=env, timeout=scaled(120), check=False)
    assert some.returncode == 1, some.stderr
    assert some.stderr.count("error: ") == 1 and "cccc0001_nohash_0.wav: the file is empty" in some.stderr
    assert "speech: version 0; 9 committed, 0 unchanged, 1 failed" in some.stdout
    bad = tmp_path / "bad"
    _wav(bad / "stray.wav", np.zeros(160))
    none = subprocess.run([*run, str(bad)], capture_output=True, text=True, env=env, timeout=scaled(120), check=False)
    assert none.returncode == 2 and "outside a word folder" in none.stderr


def test_a_hostile_archive_has_its_unsafe_members_refused_and_nothing_written_outside_the_home(
        catalog, folder: Path, tmp_path: Path) -> None:
    payload = (folder / "yes" / "988e2f9a_nohash_0.wav").read_bytes()

    def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes | None = payload, link: str = "") -> tuple:
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.size = kind, link, len(data) if data is not None else 0
        return info, data if kind == tarfile.REGTYPE else None

    hostile = [member("/tmp/yes/dddd0001_nohash_0.wav"), member("./yes/../../escape/dddd0002_nohash_0.wav"),
               member("./yes/dddd0003_nohash_0.wav", tarfile.SYMTYPE, link="/etc/passwd"),
               member("./yes/dddd0004_nohash_0.wav", tarfile.LNKTYPE, link="./yes/988e2f9a_nohash_0.wav"),
               member("./yes/dddd0005_nohash_0.wav", tarfile.CHRTYPE), member("./yes/dddd0006_nohash_0.wav", tarfile.FIFOTYPE)]
    archive = _tar(folder, tmp_path / "hostile.tar.gz", extra=hostile)
    outside = set(tmp_path.rglob("*"))
    report = ingest(catalog, [archive])
    assert report.exit_code == 1 and len(report.committed) == 9
    assert len(report.failures) == 6 and all(line.startswith(f"{archive}!") for line in report.failures)
    reasons = [line.split("member refused: ")[1].split(";")[0] for line in report.failures]
    assert reasons == ["an absolute path", "a '..' component", "a link", "a link", "a device or pipe", "a device or pipe"]
    assert not (tmp_path / "escape").exists() and not Path("/tmp/yes/dddd0001_nohash_0.wav").exists()
    created = set(tmp_path.rglob("*")) - outside
    assert created and all(str(p).startswith(catalog.home) for p in created)
    assert not _rows(catalog)["clip_id"].str.contains("dddd").any()


def test_without_list_files_the_hash_rule_splits_and_the_lineage_says_so(catalog, folder: Path) -> None:
    for name in ("validation_list.txt", "testing_list.txt"):
        (folder / name).unlink()
    ingest(catalog, [folder])
    rows = _rows(catalog)
    assert rows["split"].to_list() == [hash_split(c) for c in rows["clip_id"]]
    assert catalog.lineage(DATASET).parameters["split_rule"] == {str(folder): "hash"}


def test_background_noise_goes_to_its_own_table_and_is_never_a_class(catalog, folder: Path) -> None:
    noise = np.random.default_rng(0).normal(0, 0.1, 32_000)
    _wav(folder / "_background_noise_" / "white_noise.wav", noise)
    (folder / "_background_noise_" / "README.md").write_text("noise")
    report = ingest(catalog, [folder])
    assert report.exit_code == 0
    assert "_background_noise_" not in set(_rows(catalog)["label"])
    recordings = pl.read_delta(catalog.uri("table", NOISE))
    assert recordings["name"].to_list() == ["_background_noise_/white_noise.wav"]
    assert recordings["n_samples"].to_list() == [32_000]
    assert ingest(catalog, [folder]).committed == () and catalog.latest_version(NOISE) == 0


def test_a_clip_that_changed_under_the_same_name_is_refused_and_the_stored_one_kept(catalog, folder: Path) -> None:
    ingest(catalog, [folder])
    _wav(folder / "yes" / "988e2f9a_nohash_0.wav", np.zeros(16_000))
    report = ingest(catalog, [folder])
    assert report.exit_code == 1 and len(report.failures) == 1 and "clips are immutable" in report.failures[0]
    assert catalog.latest_version(DATASET) == 0


def test_float_clips_beyond_minus_1_to_1_or_with_nan_break_the_rules_one_line_each_and_the_good_clips_land(
        catalog, folder: Path) -> None:  # noqa: ANN001
    loud = np.sin(np.linspace(0, 60, 8000)).astype(np.float32) * 1.5
    hole = np.zeros(8000, np.float32)
    hole[:800] = np.nan
    _wav(folder / "yes" / "cccc0001_nohash_0.wav", loud, subtype="FLOAT")
    _wav(folder / "up" / "cccc0002_nohash_0.wav", hole, subtype="FLOAT")
    _wav(folder / "up" / "cccc0003_nohash_0.wav", loud / 2, subtype="FLOAT")  # within the rules: lands
    report = ingest(catalog, [folder])
    low, high = float(loud.min()), float(loud.max())
    assert report.failures == (
        f"{folder / 'up' / 'cccc0002_nohash_0.wav'}: samples expected at most 0% NaN, found 10.0%; {RULES.fix}",
        f"{folder / 'yes' / 'cccc0001_nohash_0.wav'}: samples expected in -1 .. 1, found {low:g} .. {high:g}; "
        f"{RULES.fix}",
    )
    assert len(report.committed) == 10 and len(_rows(catalog)) == 10


def test_decode_keeps_16_khz_mono_int16_samples_exactly() -> None:
    data = (FIXTURES / "up" / "439c84f4_nohash_1.wav").read_bytes()
    samples, rate, channels = decode(data)
    expected, _ = sf.read(io.BytesIO(data), dtype="int16")
    assert (rate, channels, samples.dtype) == (16_000, 1, np.int16)
    np.testing.assert_array_equal(samples, expected)


def test_the_300_real_clips_land_with_the_official_split_and_no_speaker_on_two_sides(catalog) -> None:
    report = ingest(catalog, [SAMPLE])
    assert report.exit_code == 0 and len(report.committed) == 300
    rows = _rows(catalog)
    assert rows.group_by("split").len().sort("split").rows() == [("test", 51), ("train", 205), ("valid", 44)]
    assert rows["label"].n_unique() == 30 and rows["n_samples"].min() < 16_000 <= rows["n_samples"].max()
    speakers = rows.group_by("speaker_id").agg(pl.col("split").n_unique())
    assert speakers["split"].max() == 1  # no speaker on two sides

"""The Speech Commands sample generators: real clips kept byte for byte, deterministic
augmentations of training clips only, benchmark copies, and a deterministic tar.gz."""

from __future__ import annotations

import hashlib
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile

from shoal.datasets.speech_commands import hash_split
from shoal.datasets.speech_commands_sample import (
    MAX_SHIFT,
    SAMPLE_DIR,
    _clips,
    _listed,
    _noise,
    _rng,
    augment,
    write_bench_clips,
    write_sample,
    write_tar_gz,
)

NAME = re.compile(r"(?P<word>[a-z]+)/(?P<speaker>[0-9a-f]{8})_nohash_(?P<n>\d+)\.wav")
REAL = _clips(SAMPLE_DIR)
HELD_OUT = _listed(SAMPLE_DIR)
# sha256 over every file of write_sample(copies=1) (sorted "name sha256" lines): the same on
# every machine. A change here changes the demo's data: update it only on purpose.
GOLDEN_SHA256 = "a765a6696ab185d2b5243997414d64298ca04311d5b849f832a49353b1a0fe38"


def _digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample(tmp_path_factory.mktemp("speech") / "v0.01", copies=1)


def test_write_sample_is_deterministic(sample: Path, tmp_path: Path) -> None:
    again = _digests(write_sample(tmp_path / "again", copies=1))
    first = _digests(sample)
    assert again == first
    combined = hashlib.sha256("".join(f"{name} {digest}\n" for name, digest in first.items()).encode()).hexdigest()
    assert combined == GOLDEN_SHA256
    other = _digests(write_sample(tmp_path / "seed1", copies=0, noise_files=1, seed=1))
    assert other["_background_noise_/white_noise.wav"] != first["_background_noise_/white_noise.wav"]


def test_real_files_are_byte_identical(sample: Path) -> None:
    assert len(REAL) == 300
    for name in [*REAL, "validation_list.txt", "testing_list.txt", "LICENSE", "README.md"]:
        assert (sample / name).read_bytes() == (SAMPLE_DIR / name).read_bytes(), name


def test_copies_are_training_clips_only_and_valid_wavs(sample: Path) -> None:
    generated = sorted(set(_clips(sample)) - set(REAL))
    training = [name for name in REAL if name not in HELD_OUT]
    assert 0 < len(training) < len(REAL) and len(generated) == len(training)  # copies=1
    for name in generated:
        found = NAME.fullmatch(name)
        source = f"{found['word']}/{found['speaker']}_nohash_{int(found['n']) - 100}.wav"
        assert source in training  # never a copy of a validation or test clip
        assert name not in HELD_OUT and hash_split(name) == hash_split(source) == "train"
        info, original = soundfile.info(sample / name), soundfile.info(SAMPLE_DIR / source)
        assert (info.samplerate, info.channels, info.subtype, info.format) == (16_000, 1, "PCM_16", "WAV")
        assert info.frames == original.frames
    audio, _ = soundfile.read(sample / generated[0], dtype="int16")
    source, _ = soundfile.read(SAMPLE_DIR / generated[0].replace("_nohash_10", "_nohash_"), dtype="int16")
    assert not np.array_equal(audio, source)


def test_copies_are_prefix_stable_and_noise_is_generated(sample: Path, tmp_path: Path) -> None:
    two = write_sample(tmp_path / "two", copies=2)
    once, twice = _digests(sample), _digests(two)
    assert all(twice[name] == digest for name, digest in once.items())  # copy 1 does not depend on `copies`
    assert len(twice) - len(once) == len(set(_clips(sample)) - set(REAL))
    for name in ("white_noise.wav", "pink_noise.wav"):
        info = soundfile.info(sample / "_background_noise_" / name)
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (16_000, 1, "PCM_16", 160_000)
    assert "generated" in (sample / "_background_noise_" / "README.md").read_text()


def test_augment_shifts_with_zeros_scales_within_6_db_and_adds_noise_at_15_to_25_db() -> None:
    steady = np.full(16_000, 1000, dtype=np.int16)
    for index in range(20):
        moved = augment(steady, _rng(0, "steady", str(index)), [])
        zeros = int(np.sum(moved == 0))
        assert zeros <= MAX_SHIFT and (moved[:zeros] == 0).all() or (moved[len(moved) - zeros:] == 0).all()
        level = np.unique(moved[moved != 0])
        assert len(level) == 1 and 10 ** (-6 / 20) * 1000 - 1 <= level[0] <= 10 ** (6 / 20) * 1000 + 1
    noises = [_noise(kind, _rng(0, kind), 160_000) for kind in ("white", "pink")]
    for name in REAL[::15]:
        audio, _ = soundfile.read(SAMPLE_DIR / name, dtype="int16")
        clean = augment(audio, _rng(3, name), []).astype(np.float64)  # the same shift and gain: drawn first
        noisy = augment(audio, _rng(3, name), noises).astype(np.float64)
        snr = 10 * np.log10(np.mean(clean**2) / np.mean((noisy - clean) ** 2))
        assert 14.5 < snr < 25.5, (name, snr)


def test_bench_clips_are_real_bytes_under_new_names(tmp_path: Path) -> None:
    dest = write_bench_clips(tmp_path / "bench", clips=350)
    names = _clips(dest)
    assert len(names) == 350 and not set(names) & set(REAL)
    real_bytes = {hashlib.sha256((SAMPLE_DIR / name).read_bytes()).hexdigest() for name in REAL}
    assert {hashlib.sha256((dest / name).read_bytes()).hexdigest() for name in names} == real_bytes
    assert all(NAME.fullmatch(name) for name in names)
    listed = {split: set((dest / f"{split}_list.txt").read_text().split()) for split in ("validation", "testing")}
    for name in names:
        expected = hash_split(name)
        assert (name in listed["validation"], name in listed["testing"]) == (expected == "valid", expected == "test")
    assert _digests(write_bench_clips(tmp_path / "again", clips=350)) == _digests(dest)


def test_tar_gz_is_deterministic_with_relative_member_names(tmp_path: Path) -> None:
    folder = write_bench_clips(tmp_path / "bench", clips=40)
    (folder / ".bed.wav.123-4.tmp").write_bytes(b"a writer's leftover")
    first = write_tar_gz(folder, tmp_path / "a.tar.gz").read_bytes()
    assert write_tar_gz(folder, tmp_path / "b.tar.gz").read_bytes() == first
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names[0] == "." and names == sorted(names, key=lambda n: Path(n).parts)
        assert all(n == "." or n.startswith("./") for n in names)
        assert not any(n.startswith("/") or ".." in Path(n).parts for n in names)
        assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}
        tar.extractall(tmp_path / "out", filter="data")
    expected = {k: v for k, v in _digests(folder).items() if not k.startswith(".")}
    assert _digests(tmp_path / "out") == expected


def test_the_effective_number_of_real_test_clips_is_the_embedded_testing_list() -> None:
    from shoal.datasets.speech_commands_sample import REAL_TEST_CLIPS

    listed = (SAMPLE_DIR / "testing_list.txt").read_text().split()
    assert len(set(listed) & set(REAL)) == REAL_TEST_CLIPS  # the full list names 6,835; 51 of them are here

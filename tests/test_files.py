"""Atomic writes and sha256: a file is there whole, or as it was, and never half."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from shoal.files import atomic_write, copy_atomic, sha256_file, temporary_name


def test_atomic_write_replaces_the_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")
    with atomic_write(target) as f:
        f.write(b"new ")
        assert target.read_bytes() == b"old"  # not visible until the block ends
        assert temporary_name(target).read_bytes() == b""  # buffered: flushed at the end
        f.write(b"bytes")
    assert target.read_bytes() == b"new bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]


def test_an_error_inside_the_block_keeps_the_old_file_and_removes_the_temporary_one(tmp_path: Path) -> None:
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="half way"), atomic_write(target) as f:
        f.write(b"half")
        raise RuntimeError("half way")
    assert target.read_bytes() == b"old"
    with pytest.raises(RuntimeError), atomic_write(tmp_path / "fresh.bin") as f:
        raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]


def test_the_temporary_file_is_hidden_and_names_its_process(tmp_path: Path) -> None:
    import os

    name = temporary_name(tmp_path / "sst189101.grb").name
    assert name.startswith(f".sst189101.grb.{os.getpid()}-") and name.endswith(".tmp")
    assert not list(tmp_path.glob("sst*.grb"))


def test_sha256_file_reads_in_blocks_and_counts_bytes(tmp_path: Path) -> None:
    body = bytes(range(256)) * 9000  # 2.2 MiB: more than two blocks
    path = tmp_path / "big.bin"
    path.write_bytes(body)
    assert sha256_file(path) == (hashlib.sha256(body).hexdigest(), len(body))
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == (hashlib.sha256(b"").hexdigest(), 0)


def test_copy_atomic_copies_and_returns_the_sha256(tmp_path: Path) -> None:
    source = tmp_path / "best.pt"
    source.write_bytes(b"weights" * 1000)
    target = tmp_path / "models" / "0.pt"
    target.parent.mkdir()
    assert copy_atomic(source, target) == hashlib.sha256(source.read_bytes()).hexdigest()
    assert target.read_bytes() == source.read_bytes()
    with pytest.raises(FileNotFoundError):
        copy_atomic(tmp_path / "missing.pt", target)
    assert target.read_bytes() == source.read_bytes() and sorted(p.name for p in target.parent.iterdir()) == ["0.pt"]

"""The HIGGS sample writer: the exact UCI text, deterministic bytes, real rows kept real where
they are discrete, the label's relationship to the features, and the gzip / zip variants."""

from __future__ import annotations

import gzip
import hashlib
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from shoal.datasets.higgs import B_TAGS, FEATURES
from shoal.datasets.higgs_sample import (
    REAL_ROWS,
    format_rows,
    read_real_rows,
    sample_rows,
    write_sample,
)

DATA = Path(__file__).parent / "data" / "higgs"
REAL = read_real_rows()
TRAIN, TEST = REAL[:7_000], REAL[7_000:]
B_TAG_COLUMNS = [1 + FEATURES.index(name) for name in B_TAGS]
CONTINUOUS = [1 + i for i, name in enumerate(FEATURES) if name not in B_TAGS]
VALUE = re.compile(rb"-?[0-9]\.[0-9]{18}e[+-][0-9]{2}")
LABELS = {b"1.000000000000000000e+00", b"0.000000000000000000e+00"}
# sha256 of write_sample(rows=1_000, seed=0) as text: the same on every machine and numpy 2.x
PINNED_1000 = "295aed2cb5bfd33ad68617d7e703d5d33f1f14957dd03167324076641aa5717c"


def _python_text(values: np.ndarray) -> bytes:
    """What numpy.savetxt(fmt="%.18e", delimiter=",") writes: Python's float formatting."""
    line = ",".join(["%.18e"] * values.shape[1]) + "\n"
    return "".join(line % tuple(row) for row in values.astype(np.float64).tolist()).encode()


def _text(rows: int, seed: int = 0, real: np.ndarray | None = None) -> bytes:
    return b"".join(format_rows(chunk) for chunk in sample_rows(rows=rows, seed=seed, real=real))


# --- the UCI text ---------------------------------------------------------------------------


def test_format_rows_is_pythons_percent_18e_on_any_float32() -> None:
    rng = np.random.default_rng(280)
    bits = rng.integers(0, 2**32, size=29 * 4_000, dtype=np.uint64).astype(np.uint32)  # every exponent
    special = np.array([0.0, -0.0, 1.0, 10.0, 1e-9, 2e-9, 1e17, 5e17, 1e18, 3.4e38, 1e-45, 0.5], np.float32)
    powers = np.array([10.0**k for k in range(-12, 20)], np.float32)
    near = np.concatenate([np.nextafter(powers, np.float32(0)), powers, np.nextafter(powers, np.float32(np.inf))])
    values = np.concatenate([bits.view(np.float32), special, near, -near])
    values = values[np.isfinite(values)]
    values = np.concatenate([values, np.ones(-len(values) % 29, np.float32)]).reshape(-1, 29)
    # M * 2**-21 with M = 4 (mod 8): the 20th significant digit is an exact 5 (a tie, to even)
    ties = ((2**23 + 8 * rng.integers(0, 2**20, size=(400, 29)) + 4) * 2.0**-21).astype(np.float32)
    for block in (values, ties, rng.standard_normal((500, 29)).astype(np.float32)):
        assert format_rows(block) == _python_text(block)
    with pytest.raises(ValueError, match="NaN or infinity"):
        format_rows(np.array([[1.0, np.nan]], np.float32))


def test_format_rows_writes_the_real_uci_bytes() -> None:
    first5 = (DATA / "higgs_first5.csv").read_bytes()  # transcribed from the real HIGGS.csv
    assert format_rows(read_real_rows(DATA / "higgs_first5.csv")) == first5
    assert format_rows(TRAIN) == gzip.decompress((DATA / "higgs_real_train.csv.gz").read_bytes())
    assert format_rows(TEST) == (DATA / "higgs_real_test.csv").read_bytes()
    assert format_rows(TRAIN[:20]) == (DATA / "higgs_20.csv").read_bytes()
    assert gzip.decompress(REAL_ROWS.read_bytes()) == format_rows(REAL)
    assert REAL.shape == (7_500, 29) and REAL.dtype == np.float32


# --- the sample -----------------------------------------------------------------------------


def test_sample_is_deterministic_and_pinned(tmp_path: Path) -> None:
    first = write_sample(tmp_path / "a", rows=1_000)
    second = write_sample(tmp_path / "b", rows=1_000)
    assert first.name == "HIGGS.csv"
    text = first.read_bytes()
    assert second.read_bytes() == text
    assert hashlib.sha256(text).hexdigest() == PINNED_1000  # numpy's PCG64 stream + exact arithmetic
    assert _text(1_000, seed=1) != text


def test_the_splits_of_a_sample_draw_from_disjoint_random_pools_alike_in_their_labels() -> None:
    from shoal.datasets.higgs_sample import REAL_TEST_ROWS, pools, read_real_rows

    real = read_real_rows()
    train, valid, test = pools(real[:, 0])
    assert (len(train), len(valid), len(test)) == (4_500, 1_500, REAL_TEST_ROWS)
    assert sorted(np.concatenate([train, valid, test]).tolist()) == list(range(7_500))  # disjoint, all used
    shares = [real[pool, 0].mean() for pool in (train, valid, test)]
    assert max(shares) - min(shares) < 0.002  # stratified by label
    assert 0 < (test >= 7_000).sum() < 500 and (test < 6_000).sum() > 1_000  # drawn from the whole file, not its tail
    assert [pool.tolist() for pool in pools(real[:, 0])] == [pool.tolist() for pool in (train, valid, test)]


def test_sample_format_and_discrete_columns() -> None:
    text = _text(2_000)
    lines = text.split(b"\n")
    assert lines[-1] == b"" and len(lines) == 2_001
    fields = [line.split(b",") for line in lines[:-1]]
    assert {len(row) for row in fields} == {29}
    assert all(VALUE.fullmatch(value) for row in fields for value in row)
    assert {row[0] for row in fields} == LABELS
    sample = np.loadtxt(lines[:-1], delimiter=",", dtype=np.float64).astype(np.float32)
    assert format_rows(sample) == text  # float32 values, written exactly
    for column in B_TAG_COLUMNS:  # kept from the picked row: only real b-tag values
        assert set(np.unique(sample[:, column])) <= set(np.unique(REAL[:, column]))
    low, high = REAL[:, CONTINUOUS].min(axis=0), REAL[:, CONTINUOUS].max(axis=0)
    assert ((sample[:, CONTINUOUS] >= low) & (sample[:, CONTINUOUS] <= high)).all()  # reflected into range
    assert len(np.unique(sample[:, CONTINUOUS], axis=0)) == 2_000  # jittered: no row repeats
    assert abs(sample[:, 0].mean() - REAL[:, 0].mean()) < 0.03


def test_sample_keeps_the_label_feature_relationship() -> None:
    """Drawn from the 7,000 training rows only, so the 500 real test rows stay unseen."""
    sample = np.concatenate(list(sample_rows(rows=20_000, real=TRAIN)))

    def separation(rows: np.ndarray) -> np.ndarray:  # standardized signal - background mean
        signal, x = rows[:, 0] == 1, rows[:, 1:].astype(np.float64)
        return (x[signal].mean(axis=0) - x[~signal].mean(axis=0)) / x.std(axis=0)

    assert np.abs(separation(sample) - separation(TRAIN)).max() < 0.07  # the real values reach 0.32

    def auc(rows: np.ndarray) -> float:
        model = LogisticRegression(max_iter=500).fit(rows[:, 1:], rows[:, 0])
        return roc_auc_score(TEST[:, 0], model.predict_proba(TEST[:, 1:])[:, 1])

    on_sample, on_real = auc(sample), auc(TRAIN)
    assert on_real > 0.65 and abs(on_sample - on_real) < 0.02


def test_gzip_and_zip_hold_the_same_text(tmp_path: Path) -> None:
    plain = write_sample(tmp_path, rows=1_500).read_bytes()
    packed = write_sample(tmp_path, rows=1_500, compression="gzip")
    assert packed.name == "HIGGS.csv.gz"
    data = packed.read_bytes()
    assert data[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + data[8:10]  # no FNAME flag, mtime 0
    assert gzip.decompress(data) == plain
    assert write_sample(tmp_path / "again", rows=1_500, compression="gzip").read_bytes() == data

    wrapped = write_sample(tmp_path, rows=1_500, compression="zip")
    assert wrapped.name == "higgs.zip"
    with zipfile.ZipFile(wrapped) as archive:
        (member,) = archive.infolist()
        assert (member.filename, member.date_time, member.compress_type) == (
            "HIGGS.csv.gz", (1980, 1, 1, 0, 0, 0), zipfile.ZIP_STORED)
        assert gzip.decompress(archive.read(member)) == plain
    assert write_sample(tmp_path / "again", rows=1_500, compression="zip").read_bytes() == wrapped.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["HIGGS.csv", "HIGGS.csv.gz", "again", "higgs.zip"]


def test_bad_arguments_and_empty(tmp_path: Path) -> None:
    for arguments in ({"rows": -1}, {"rows": 10, "seed": -1}, {"rows": 1.5}, {"rows": 10, "compression": "bz2"}):
        with pytest.raises(ValueError, match="rows|compression"):
            write_sample(tmp_path / "bad", **arguments)
    assert write_sample(tmp_path, rows=0).read_bytes() == b""
    assert gzip.decompress(write_sample(tmp_path, rows=0, compression="gzip").read_bytes()) == b""

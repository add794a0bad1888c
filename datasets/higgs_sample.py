"""HIGGS-format files for the demo, the benchmarks and the tests.

The rows are grounded in real data: `sample_data/higgs_real_rows.csv.gz` holds 7,500 real
rows of the UCI HIGGS table (Baldi, Sadowski & Whiteson 2014, CC BY 4.0, UCI id 280): the
first 7,000 rows of HIGGS.csv and 500 more, from LightGBM's `examples/binary_classification`
copy (MIT); every value of all 7,500 is rounded to 3 decimals. `write_sample` draws from them a
SMOOTHED BOOTSTRAP of any length: each output row is a real row picked at random (its label
kept) whose 24 continuous features get Gaussian jitter of `JITTER` (0.1) x that column's
standard deviation over the real rows, reflected back into the column's real [min, max] (so
transverse momenta and masses stay positive, angles stay in range); the four b-tags are
discrete and are kept exactly. 0.1 x std is far below the spread of each class, so the
relationship between label and features survives (the tests compare it with the real rows),
while rows do not repeat. Each part of the file of the paper's split
(`shoal.datasets.higgs.official_split`) draws from its own disjoint pool of real rows
(`pools`): 60% / 20% / 20% of the 7,500, drawn at random (seeded, the same for every sample)
within each label, so that each pool is like the whole and a model that memorizes its
training rows gains nothing on test. The EFFECTIVE number of real test items is the test
pool's 1,500 rows (`REAL_TEST_ROWS`), however many jittered copies the test part holds: a
skill interval computed over the copies is narrower than the evidence supports. Values are rounded to float32, as every value of the
real file is one.

The file is the UCI text: no header, 29 comma-separated columns, the class first, every value
written as numpy's `%.18e` (`1.000000000000000000e+00`). `format_rows` writes that text
about 5x faster than `numpy.savetxt` (exact integer arithmetic, the same bytes; checked
against Python's formatting in the tests). Compressed as UCI publishes it: `HIGGS.csv.gz`,
or `higgs.zip` holding the one member `HIGGS.csv.gz`.

Determinism: the text depends only on the arguments. Each chunk of `CHUNK_ROWS` rows draws its
picks and its jitter from two generators seeded from `(seed, chunk number)`, and every step
after the draw is exact IEEE arithmetic. The gzip stream has mtime 0 and no file name; its bytes are those of the installed
ISA-L (`isal.igzip`), the same on every x86-64 with SSE4.2, but another build or CPU class
may compress differently: compare decompressed text across machines, not archives.
"""

from __future__ import annotations

import gzip
import math
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np

from shoal.datasets.higgs import official_split

from shoal.datasets.higgs import B_TAGS, FEATURES
from shoal.files import atomic_write

REAL_ROWS = Path(__file__).parent / "sample_data" / "higgs_real_rows.csv.gz"
COLUMNS = 1 + len(FEATURES)  # the class, then the 28 features
CHUNK_ROWS = 50_000  # ~37 MB of text a chunk: bounded memory (and faster than 100,000)
JITTER = 0.1  # jitter std / column std
POOL_SEED, POOL_SHARES = 280, (0.6, 0.2, 0.2)  # the real rows' draw into train / valid / test pools
REAL_TEST_ROWS = 1_500  # the test pool of the embedded 7,500: a sample's effective number of test items
GZIP_LEVEL = 2  # ISA-L's default: ~160 MB/s here (zlib level 1: ~55), ~0.4 of the text's size
FILE_NAMES = {None: "HIGGS.csv", "gzip": "HIGGS.csv.gz", "zip": "higgs.zip"}
ZIP_MEMBER = "HIGGS.csv.gz"  # UCI's higgs.zip wraps the .gz
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say: no clock in the bytes
Compression = Literal["gzip", "zip"] | None

_CONTINUOUS = np.array([1 + i for i, name in enumerate(FEATURES) if name not in B_TAGS])


def read_real_rows(path: str | Path = REAL_ROWS) -> np.ndarray:
    """The real rows of a HIGGS-format file (plain or .gz) as a `(rows, 29)` float32 array."""
    with gzip.open(path, "rt") if str(path).endswith(".gz") else open(path) as f:
        values = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
    if values.shape[1] != COLUMNS:
        raise ValueError(f"{path}: {values.shape[1]} columns, expected {COLUMNS}")
    return values.astype(np.float32)


def write_sample(dest: str | Path, *, rows: int, seed: int = 0, compression: Compression = None) -> Path:
    """Write a HIGGS-format file of `rows` rows, a smoothed bootstrap of the real rows.

    Args:
        dest: the folder (created); the file is `HIGGS.csv`, `HIGGS.csv.gz` or `higgs.zip`
            after `compression`, and replaces a file of that name.
        rows: rows to write (0 or more).
        seed: changes every row; the same arguments give the same text on any machine.
        compression: None (plain text), "gzip" or "zip" (a .zip holding `HIGGS.csv.gz`).

    Returns:
        The path of the file written.
    """
    if not isinstance(rows, int) or rows < 0 or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"rows = {rows!r}, seed = {seed!r}: use integers, 0 or more")
    if compression not in FILE_NAMES:
        raise ValueError(f"compression = {compression!r}: use None, 'gzip' or 'zip'")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / FILE_NAMES[compression]
    chunks = (format_rows(chunk) for chunk in sample_rows(rows=rows, seed=seed))
    with atomic_write(path) as f:
        if compression == "zip":
            member = zipfile.ZipInfo(ZIP_MEMBER, date_time=ZIP_DATE)
            member.create_system, member.external_attr = 3, 0o100644 << 16  # as on Linux, everywhere
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as archive, \
                    archive.open(member, "w", force_zip64=True) as inner:
                _write_gzip(inner, chunks)
        elif compression == "gzip":
            _write_gzip(f, chunks)
        else:
            for text in chunks:
                f.write(text)
    return path


def sample_rows(*, rows: int, seed: int = 0, real: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """The rows of `write_sample`, as float32 arrays of at most `CHUNK_ROWS` x 29.

    Args:
        rows: rows in all.
        seed: as in `write_sample`.
        real: the rows to draw from (default: the embedded real rows).
    """
    real = read_real_rows() if real is None else real
    base = real.astype(np.float64)
    scale = JITTER * np.array([_std(base[:, j]) for j in _CONTINUOUS])
    low, high = base[:, _CONTINUOUS].min(axis=0), base[:, _CONTINUOUS].max(axis=0)
    drawn = pools(real[:, 0])
    flat, sizes = np.concatenate(drawn), np.array([len(pool) for pool in drawn])
    starts = np.cumsum(sizes) - sizes  # where each pool starts in `flat`
    train, valid, _ = official_split(rows) if rows >= 3 else (rows, 0, 0)
    for index, start in enumerate(range(0, rows, CHUNK_ROWS)):
        count = min(CHUNK_ROWS, rows - start)
        picks, noise = (np.random.default_rng(s) for s in np.random.SeedSequence([seed, index]).spawn(2))
        position = np.arange(start, start + count)
        segment = (position >= train).astype(np.int64) + (position >= train + valid)  # the row's split in the file
        chosen = flat[starts[segment] + (picks.random(count) * sizes[segment]).astype(np.int64)]  # of its pool
        out = real[chosen]  # label and b-tags exactly as in the picked rows
        jittered = base[chosen][:, _CONTINUOUS] + scale * noise.standard_normal((count, len(_CONTINUOUS)))
        jittered = low + np.abs(jittered - low)  # reflect at the real minimum ...
        jittered = high - np.abs(high - jittered)  # ... and maximum (jitter << range: once is enough)
        out[:, _CONTINUOUS] = jittered.astype(np.float32)
        yield out


def pools(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The real rows (indices, sorted) each split of a sample draws from: train, valid, test.

    Disjoint, so that no real row has jittered copies on both sides of a split (a memorizing
    model would score its own training rows); POOL_SHARES of each label's rows, permuted by
    POOL_SEED, so that the pools are alike (the file's order is not random: LightGBM's 500
    come last).
    """
    rng = np.random.default_rng(POOL_SEED)
    parts: list[list[np.ndarray]] = [[], [], []]
    for value in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == value))
        valid, test = (round(len(rows) * share) for share in POOL_SHARES[1:])
        for part, piece in zip(parts, np.split(rows, [len(rows) - valid - test, len(rows) - test]), strict=True):
            part.append(piece)
    train, valid, test = (np.sort(np.concatenate(part)).astype(np.int64) for part in parts)
    return train, valid, test


def _std(column: np.ndarray) -> float:
    """Population std with `math.fsum`: exactly rounded sums, the same on every machine."""
    mean = math.fsum(column.tolist()) / len(column)
    return math.sqrt(math.fsum(((column - mean) ** 2).tolist()) / len(column))


def _write_gzip(f: BinaryIO, chunks: Iterator[bytes]) -> None:
    from isal import igzip  # ~3x zlib's speed at a similar ratio

    # filename="": without it the temporary file's name would land in the header
    with igzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=GZIP_LEVEL, mtime=0) as gz:
        for text in chunks:
            gz.write(text)


# --- the UCI text: "%.18e" of float32 values, vectorized ----------------------------------
#
# A finite float32 is M * 2**E exactly (M < 2**24). "%.18e" prints the 19 significant digits
# N = round(|v| * 10**p), p = 18 - e10, 10**18 <= N < 10**19, rounding half to even on the
# exact value (as Python's dtoa does). For 2e-9 <= |v| <= 5e17, p is in 0..27, so
# M * 5**p < 2**87 fits two uint64 limbs and N = (M * 5**p) * 2**(E + p) is a shift of them.
# Other values (zero aside) are rare and go through Python's own formatting.

_POW5 = np.array([5**p for p in range(28)], dtype=np.uint64)
_DIGITS4 = np.frombuffer(b"".join(b"%04d" % i for i in range(10_000)), "<u4")  # "0000".."9999"
_DIGITS2 = np.frombuffer(b"".join(b"%02d" % i for i in range(100)), "<u2")  # "00".."99"
# One value's bytes: sign, digit, '.', 18 digits, 'e', sign, 2 digits (float32: |e10| <= 45), separator.
_SLOT = np.dtype({
    "names": ["sign", "lead", "g0", "g1", "g2", "g3", "g4", "exp_sign", "exp", "sep"],
    "formats": ["u1", "u1", "<u4", "<u4", "<u4", "<u4", "<u2", "u1", "<u2", "u1"],
    "offsets": [0, 1, 3, 7, 11, 15, 19, 22, 23, 25],
    "itemsize": 26,
})
_TEMPLATE = np.frombuffer(b"-0.000000000000000000e+00,", np.uint8)
_LOW32 = np.uint64(0xFFFF_FFFF)
_E18, _E19 = np.uint64(10**18), np.uint64(10**19)


def format_rows(values: np.ndarray) -> bytes:
    """The UCI text of a `(rows, columns)` float32 array: `%.18e`, comma-separated, one line a row.

    The same bytes as `numpy.savetxt(f, values.astype(np.float64), fmt="%.18e", delimiter=",")`.

    Raises:
        ValueError: a value is NaN or infinite.
    """
    values = np.ascontiguousarray(values, dtype=np.float32)
    rows, columns = values.shape
    negative, digits, exponent = _decimal(values.reshape(-1))
    text = np.empty((values.size, _SLOT.itemsize), dtype=np.uint8)
    text[:] = _TEMPLATE
    slots = text.view(_SLOT).reshape(-1)
    lead = digits // _E18
    rest = digits - lead * _E18  # 18 digits: 4 + 4 | 4 + 4 + 2
    slots["lead"] += lead.astype(np.uint8)
    high = (rest // np.uint64(10**10)).astype(np.uint32)
    low = rest - high.astype(np.uint64) * np.uint64(10**10)
    g0 = high // np.uint32(10_000)
    g2 = (low // np.uint64(10**6)).astype(np.uint32)
    tail = (low - g2.astype(np.uint64) * np.uint64(10**6)).astype(np.uint32)
    g3 = tail // np.uint32(100)
    for name, group in (("g0", g0), ("g1", high - g0 * np.uint32(10_000)), ("g2", g2), ("g3", g3)):
        slots[name] = np.take(_DIGITS4, group.astype(np.intp))
    slots["g4"] = np.take(_DIGITS2, (tail - g3 * np.uint32(100)).astype(np.intp))
    slots["exp_sign"][exponent < 0] = ord("-")
    slots["exp"] = np.take(_DIGITS2, np.abs(exponent))
    slots.reshape(rows, columns)["sep"][:, -1] = ord("\n")
    keep = np.ones(text.shape, dtype=bool)
    keep[:, 0] = negative  # no byte where a positive value has no sign
    return text[keep].tobytes()


def _decimal(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sign, 19 significant digits (an integer) and decimal exponent of each float32 value."""
    if not np.isfinite(values).all():
        raise ValueError("the HIGGS text has no NaN or infinity; found one among the values")
    bits = values.view(np.uint32)
    negative = (bits >> 31).astype(bool)
    size = np.abs(values).astype(np.float64)
    fast = (size >= 2e-9) & (size <= 5e17)
    size = np.where(fast, size, 1.0)  # placeholders, replaced below
    bits = np.where(fast, bits, np.float32(1.0).view(np.uint32))
    biased = ((bits >> 23) & 0xFF).astype(np.int64)  # fast values are normal numbers
    mantissa = ((bits & 0x7F_FFFF) | 0x80_0000).astype(np.uint64)
    power2 = biased - 150
    exponent = np.floor(np.log10(size)).astype(np.int64)  # a guess, corrected exactly below
    digits, big, small = _digits(mantissa, power2, exponent)
    for _ in range(4):  # a wrong guess, then a rounding carry (9.99..95 -> 10): two fixes at most
        wrong = np.flatnonzero(big | small)
        if wrong.size == 0:
            break
        exponent[wrong] += big[wrong].astype(np.int64) - small[wrong].astype(np.int64)
        digits[wrong], big[wrong], small[wrong] = _digits(mantissa[wrong], power2[wrong], exponent[wrong])
    else:
        raise AssertionError("decimal exponent did not settle")  # cannot happen
    zero = ~fast & (values == 0)
    digits[zero], exponent[zero] = 0, 0
    for i in np.flatnonzero(~fast & (values != 0)):  # tiny or huge: Python's dtoa, one by one
        text = "%.18e" % abs(float(values[i]))
        digits[i], exponent[i] = int(text[0] + text[2:20]), int(text[21:])
    return negative, digits, exponent


def _digits(mantissa: np.ndarray, power2: np.ndarray, exponent: np.ndarray) -> tuple[np.ndarray, ...]:
    """round(mantissa * 2**power2 * 10**(18 - exponent)), and whether it is >= 10**19 or < 10**18."""
    p = 18 - exponent
    five = _POW5[p]
    low = mantissa * (five & _LOW32)  # < 2**56
    high = mantissa * (five >> np.uint64(32))  # < 2**55
    lo = low + (high << np.uint64(32))  # wraps: the carry goes into hi
    hi = (high >> np.uint64(32)) + (lo < low)
    shift = power2 + p  # N = (hi:lo) * 2**shift; < 0 unless |v| > ~200, rare in HIGGS
    right = np.clip(-shift, 1, 63).astype(np.uint64)
    n_lo = (lo >> right) | (hi << (np.uint64(64) - right))
    n_hi = hi >> right
    rest = lo & ((np.uint64(1) << right) - np.uint64(1))
    half = np.uint64(1) << (right - np.uint64(1))
    up = (rest > half) | ((rest == half) & ((n_lo & np.uint64(1)) == 1))  # half to even
    n_lo += up
    n_hi += up & (n_lo == 0)
    exact = np.flatnonzero(shift >= 0)  # a left shift: no rounding
    if exact.size:
        left = shift[exact].astype(np.uint64)
        lo, hi = lo[exact], hi[exact]
        n_lo[exact] = lo << left
        n_hi[exact] = (hi << left) | ((lo >> np.uint64(1)) >> (np.uint64(63) - left))  # lo >> (64 - left)
    return n_lo, (n_hi > 0) | (n_lo >= _E19), (n_hi == 0) & (n_lo < _E18)

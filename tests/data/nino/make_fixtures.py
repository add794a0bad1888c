"""Make the tiny ONI fixtures next to this script from the real upstream table.

Run from anywhere: `python tests/data/nino/make_fixtures.py`. The output is deterministic
(same bytes on every run), so the committed fixtures can be checked by re-running it.

Every fixture is cut from `datasets/sample_data/ONI_NINO34_1854-2020.txt` (byte-identical to
upstream; see README.md here for the attribution). `oni_small.txt` keeps the real bytes of
the 9 header lines, the header row and the 24 rows 1950-01 .. 1951-12; every other fixture
changes exactly one thing in it, on a known line (1-based line numbers below are what the
tests expect the error messages to name).
"""

from __future__ import annotations

import gzip
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parents[2] / "datasets" / "sample_data" / "ONI_NINO34_1854-2020.txt"

HEADER_LINES = 9  # free text, including a blank line 9; line 3 has a degree sign (UTF-8)
HEADER_ROW = 10  # 'YEAR  MON/MMM  NINO34_MEAN  NINO34_CLIM  NINO34_ANOM          ONI  PHASE'
FIRST, LAST = ("1950", "01"), ("1951", "12")

# The one line each broken fixture changes (1-based, in oni_small.txt's numbering).
CHANGED_LINE = 34  # 1951-12: ONI 0.81 -> 0.86 (an upstream revision)
NON_NUMERIC_LINE = 14  # 1950-04: NINO34_MEAN 26.29 -> 26.x1
FIELD_COUNT_LINE = 20  # 1950-10: an 8th field
PHASE_LINE = 25  # 1951-03: PHASE N -> Q
DUPLICATE_LINE = 16  # 1950-06 relabelled 1950-05, a second 1950-05


def _small(lines: list[bytes]) -> list[bytes]:
    keys = [tuple(field.decode("utf-8") for field in line.split()[:2]) for line in lines]
    start, stop = keys.index(FIRST), keys.index(LAST) + 1
    assert lines[HEADER_ROW - 1].split()[0] == b"YEAR", "the header row moved"
    return lines[:HEADER_ROW] + lines[start:stop]


def _replace(lines: list[bytes], number: int, old: bytes, new: bytes) -> list[bytes]:
    """A copy of `lines` with `old` replaced by `new` once, on 1-based line `number` only."""
    line = lines[number - 1]
    assert line.count(old) == 1, f"line {number} {line!r} does not contain {old!r} exactly once"
    changed = list(lines)
    changed[number - 1] = line.replace(old, new)
    return changed


def fixtures() -> dict[str, bytes]:
    """Every fixture by file name."""
    small = _small(SAMPLE.read_bytes().splitlines(keepends=True))
    assert len(small) == HEADER_ROW + 24
    text = b"".join(small)
    header = small[HEADER_ROW - 1]
    return {
        "oni_small.txt": text,
        "oni_small_changed.txt": b"".join(_replace(small, CHANGED_LINE, b" 0.81 ", b" 0.86 ")),
        "bad_missing_column.txt": b"".join(_replace(small, HEADER_ROW, b"          ONI", b"")),
        "bad_non_numeric.txt": b"".join(_replace(small, NON_NUMERIC_LINE, b"26.29", b"26.x1")),
        "bad_field_count.txt": b"".join(_replace(small, FIELD_COUNT_LINE, b"N\n", b"N     9.99\n")),
        "bad_phase.txt": b"".join(_replace(small, PHASE_LINE, b"N\n", b"Q\n")),
        "bad_duplicate_month.txt": b"".join(_replace(small, DUPLICATE_LINE, b"1950       06", b"1950       05")),
        "empty.txt": b"",
        "header_only.txt": b"".join(small[:HEADER_LINES]) + header,
        "not_text.bin": gzip.compress(text, mtime=0)[:64],
        "latin1.txt": text.decode("utf-8").encode("latin-1"),
    }


def main() -> None:
    for name, data in fixtures().items():
        (HERE / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()

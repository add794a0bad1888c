"""Make the HIGGS fixtures and the embedded real rows from the real LightGBM copy of HIGGS.csv.

Run from the repository root: `python tests/data/higgs/make_fixtures.py`. Deterministic: the
same text on every run (the .gz files have mtime 0 and no file name; their compressed bytes
are those of the installed zlib).

Input (see README.md here for the attribution): ../shared/data/higgs/, byte-identical copies
of LightGBM's `examples/binary_classification/binary.train` (the first 7,000 rows of
HIGGS.csv, TAB-separated, values rounded to 3 decimals) and `binary.test` (500 rows, same
format), and the first 5 rows of HIGGS.csv in the exact UCI format.

Output, all in the UCI format (no header, 29 comma-separated values, the class first, `%.18e`):
every value is read as float32, because every value of the real HIGGS.csv is a float32
written with `%.18e` (0.869 becomes 8.690000176429748535e-01).

- higgs_real_train.csv.gz   the 7,000 rows (5.1 MB as text, hence gzip)
- higgs_real_test.csv       the 500 rows
- higgs_20.csv              the first 20 rows
- higgs_first5.csv          the 5 transcribed full-precision rows, byte for byte
- datasets/sample_data/higgs_real_rows.csv.gz   the 7,000 + 500 rows, for shoal.datasets.higgs_sample
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[3] / "shared" / "data" / "higgs"
SAMPLE = HERE.parents[2] / "datasets" / "sample_data" / "higgs_real_rows.csv.gz"
COLUMNS = 29
TINY = 20


def read_lightgbm(path: Path) -> np.ndarray:
    """The TAB-separated rows of a LightGBM HIGGS file as float32 (label first)."""
    values = np.loadtxt(path, delimiter="\t", dtype=np.float64, ndmin=2)
    assert values.shape[1] == COLUMNS, f"{path}: {values.shape[1]} columns"
    assert set(np.unique(values[:, 0])) <= {0.0, 1.0}, f"{path}: a label other than 0 or 1"
    return values.astype(np.float32)


def uci_text(values: np.ndarray) -> bytes:
    """Python's own `%.18e` (what numpy.savetxt writes): the reference the sample writer is tested on."""
    line = ",".join(["%.18e"] * COLUMNS) + "\n"
    return "".join(line % tuple(row) for row in values.astype(np.float64).tolist()).encode("ascii")


def main() -> None:
    train = read_lightgbm(SHARED / "lightgbm_binary.train.tsv")
    test = read_lightgbm(SHARED / "lightgbm_binary.test.tsv")
    assert (len(train), len(test)) == (7_000, 500), (len(train), len(test))
    first5 = SHARED / "higgs_first5_fullprecision_transcribed.csv"
    # LightGBM's rows are HIGGS.csv's, rounded: check it on the 5 full-precision rows
    exact = np.loadtxt(first5, delimiter=",", dtype=np.float64)
    assert np.array_equal(np.round(exact, 3).astype(np.float32), train[:5]), "the first 5 rows differ"

    (HERE / "higgs_real_train.csv.gz").write_bytes(gzip.compress(uci_text(train), compresslevel=9, mtime=0))
    (HERE / "higgs_real_test.csv").write_bytes(uci_text(test))
    (HERE / f"higgs_{TINY}.csv").write_bytes(uci_text(train[:TINY]))
    (HERE / "higgs_first5.csv").write_bytes(first5.read_bytes())  # not copyfile: upstream is read-only
    SAMPLE.write_bytes(gzip.compress(uci_text(np.concatenate([train, test])), compresslevel=9, mtime=0))


if __name__ == "__main__":
    main()

"""HIGGS features: a split of the rows, and the 28 columns standardized with statistics of its training rows.

The split is the feature version's (`shoal.splits`): `official`, the paper's (test = the
last 500,000 rows of the file, valid = the 500,000 before; quarters of a small file), or
`random` (each row's id hashed with the seed; `valid_fraction` / `test_fraction`). The
mean and std of every feature are fitted on its `train` rows of a `higgs` version
(`RunningStats`, float64, merged over record batches) and applied to every split. A feature
version is a version of the Delta table `higgs_features` — row_id, label, split, and `x`, the
28 standardized float32 values of a row as ONE list column, so that a split's matrix is the
list's single contiguous values buffer: `HiggsFeatures.arrays` hands it to numpy and torch
without a copy. Versions are content-addressed: building again with the same `higgs` version,
parameters and code returns the existing version. Two passes over the table (statistics,
then standardize and write), each streamed by record batches: memory does not grow with it.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow as pa

from shoal.datasets.higgs import DATASET as INPUT
from shoal.contract import FeatureBuild, building
from shoal.feature_sets import take
from shoal.datasets.higgs import FEATURES, official_split
from shoal.errors import CatalogError
from shoal.lineage import InputVersion, Provenance, code_fingerprint
from shoal.splits import SPLITS, SplitRecord, codes_by_bounds, random_codes
from shoal.stats import RunningStats

if TYPE_CHECKING:
    import torch

    from shoal.catalog import Catalog
    from shoal.features.higgs_stream import HiggsStream
    from shoal.progress import Reporter

DATASET = "higgs_features"
FORMAT = 1  # bump when the feature computation changes: it is part of the content key
Split = Literal["train", "valid", "test"]
SCHEMA = pa.schema([("row_id", pa.int64()), ("label", pa.int8()), ("split", pa.string()),
                    ("x", pa.list_(pa.float32()))])  # 28 values a row (Delta has no fixed-size list)
SCAN_ROWS = 262_144  # rows per record batch read from `higgs`


@dataclass(frozen=True)
class HiggsSplit:
    """The split rule of a feature version.

    Attributes:
        rule: "official" (the paper's held-out tail of the file) or "random" (by row id, seeded).
        seed, valid_fraction, test_fraction: the random rule's; the official rule takes none.
    """

    rule: Literal["official", "random"] = "official"
    seed: int = 0
    valid_fraction: float = 0.1
    test_fraction: float = 0.1

    def given(self) -> dict[str, int | float]:
        """The rule's own parameters (the official rule takes none)."""
        return {} if self.rule == "official" else {key: value for key, value in asdict(self).items() if key != "rule"}

    def codes(self, row_id: np.ndarray, rows: int) -> np.ndarray:
        """Split codes (0 train, 1 valid, 2 test) of rows by their ids, in a table of `rows` rows."""
        if self.rule == "official":
            train, valid, _ = official_split(rows)
            return codes_by_bounds(row_id, (train, train + valid))
        return random_codes(row_id, seed=self.seed, valid_fraction=self.valid_fraction,
                            test_fraction=self.test_fraction)


def content_key(higgs: InputVersion, split: HiggsSplit) -> str:
    """sha256 of everything a feature version depends on, the code (format, source fingerprint) included."""
    payload = {"format": FORMAT, "code": code_fingerprint(), "higgs": [higgs.name, higgs.kind, higgs.version],
               "split": [split.rule, split.given()]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def scan_batches(catalog: Catalog, version: int) -> Iterator[pa.RecordBatch]:
    """Record batches of a `higgs` version, in row order, bounded memory."""
    for chunk in catalog.scan_table(INPUT, version=version).collect_batches(chunk_size=SCAN_ROWS):
        yield from chunk.to_arrow().to_batches()


def _split_codes(batch: pa.RecordBatch, split: HiggsSplit, rows: int) -> np.ndarray:
    return split.codes(batch.column("row_id").to_numpy(), rows)


def feature_matrix(batch: pa.RecordBatch) -> np.ndarray:
    """(N, 28) float32 of a `higgs` batch's feature columns."""
    return np.column_stack([batch.column(name).to_numpy() for name in FEATURES]).astype(np.float32, copy=False)


def fit(catalog: Catalog, version: int, split: HiggsSplit, rows: int) -> tuple[RunningStats, np.ndarray]:
    """Per-feature statistics of the training rows of a `higgs` version, and the rows per split code."""
    stats, sizes = RunningStats.identity((len(FEATURES),)), np.zeros(3, dtype=np.int64)
    for batch in scan_batches(catalog, version):
        codes = _split_codes(batch, split, rows)
        sizes += np.bincount(codes, minlength=3)
        stats = stats.merge(RunningStats.from_values(feature_matrix(batch)[codes == 0], axis=0))
    if int(stats.count.min()) == 0:
        raise CatalogError(f"higgs version {version} has no training row to fit the statistics on; ingest a HIGGS file")
    return stats, sizes


def standardize(batch: pa.RecordBatch, codes: np.ndarray, mean: np.ndarray, std: np.ndarray) -> pa.RecordBatch:
    """A `higgs` batch as a `higgs_features` batch with its rows' split codes: (x - mean) / std in float32."""
    x = ((feature_matrix(batch) - mean) / std).astype(np.float32)
    offsets = pa.array(np.arange(0, x.size + 1, len(FEATURES), dtype=np.int32))
    values = pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1)))
    split = pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(SPLITS)).cast(pa.string())
    return pa.RecordBatch.from_arrays([batch.column("row_id"), batch.column("label"), split, values], schema=SCHEMA)


def build(catalog: Catalog, *, split: HiggsSplit = HiggsSplit(), reporter: Reporter | None = None) -> FeatureBuild:
    """Build (or reuse) the feature version of the latest `higgs`, split by `split`."""
    from shoal.progress import NULL

    reporter = reporter or NULL
    if not catalog.exists(INPUT):
        raise CatalogError(f"HIGGS features need the table {INPUT!r} in {catalog.home}; run `shoal ingest higgs FILE` first")
    higgs = InputVersion(INPUT, "table", catalog.latest_version(INPUT))
    key = content_key(higgs, split)
    reporter.start("features higgs", total=3)
    # Under the feature set's lock: an identical build running now is found once it commits.
    with building(catalog, DATASET, key) as found:
        if found is not None:
            reporter.finish(f"{DATASET} version {found.version}: unchanged inputs and parameters, reused")
            return found
        rows = row_count(catalog, int(higgs.version))
        stats, sizes = fit(catalog, int(higgs.version), split, rows)
        record = SplitRecord(split.rule, split.given(), dict(zip(SPLITS, map(int, sizes), strict=True)))
        reporter.advance(status=f"fitted on train ({record})")
        std = np.where(stats.std > 0, stats.std, 1.0).astype(np.float32)  # a constant column is only shifted
        mean = stats.mean.astype(np.float32)
        batches = (standardize(batch, _split_codes(batch, split, rows), mean, std)
                   for batch in scan_batches(catalog, int(higgs.version)))
        version = catalog.write_streamed(DATASET, batches, schema=SCHEMA, mode="overwrite", provenance=lambda: Provenance(
            inputs=(higgs,), parameters={"content_key": key, "statistics": stats.to_dict(), "features": list(FEATURES),
                                         "split": record.to_dict()},
            message=f"HIGGS features standardized on the train rows of higgs version {higgs.version}; {record}"))
        if version is None:
            raise CatalogError(f"higgs version {higgs.version} has no rows; ingest a HIGGS file")
        reporter.advance(status="written")
        reporter.finish(f"{DATASET} version {version}: {len(FEATURES)} standardized features")
        return FeatureBuild(version=version, snapshot=str(version), reused=False)


def row_count(catalog: Catalog, version: int) -> int:
    """The rows of a `higgs` version, as its commit recorded them (counted when it did not)."""
    lineage = catalog.lineage(INPUT, version=version)
    if lineage is not None and lineage.rows is not None:
        return int(lineage.rows)
    return int(catalog.scan_table(INPUT, version=version).select("row_id").collect().height)


@dataclass(frozen=True)
class Arrays:
    """One split as numpy: x (N, 28) float32 standardized, label (N,) int8, row_id (N,) int64."""

    x: np.ndarray
    label: np.ndarray
    row_id: np.ndarray


class HiggsFeatures:
    """A feature version: its statistics, and its splits as arrays or as streamed batches.

    Args:
        catalog: the catalog.
        version: a `higgs_features` version; default the latest.
    """

    def __init__(self, catalog: Catalog, *, version: int | str | None = None) -> None:
        if not catalog.exists(DATASET):
            raise CatalogError(f"no {DATASET!r} in {catalog.home}; run `shoal features higgs` first")
        self.catalog = catalog
        self.version = int(version) if version is not None else catalog.latest_version(DATASET)
        lineage = catalog.lineage(DATASET, version=self.version)
        if lineage is None or "statistics" not in lineage.parameters:
            raise CatalogError(f"{DATASET} version {self.version} has no statistics; rebuild it with `shoal features higgs`")
        self.stats = RunningStats.from_dict(lineage.parameters["statistics"])
        self.split = (SplitRecord.from_dict(lineage.parameters["split"]) if "split" in lineage.parameters
                      else SplitRecord("official", {}, self._counts()))  # a version made before splits were recorded
        self.input = lineage.inputs[0]
        self._arrays: dict[str, Arrays] = {}  # a version never changes: each split is read once

    def _counts(self) -> dict[str, int]:
        import polars as pl

        found = self.catalog.scan_table(DATASET, version=self.version).group_by("split").agg(pl.len()).collect()
        return {name: dict(found.iter_rows()).get(name, 0) for name in SPLITS}

    def _split(self, split: Split):  # noqa: ANN202 (polars is lazy)
        import polars as pl

        if split not in SPLITS:
            raise CatalogError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        return self.catalog.scan_table(DATASET, version=self.version).filter(pl.col("split") == split)

    def arrays(self, split: Split) -> Arrays:
        """The whole split in memory, read once per split; `x` is a view of the one Arrow buffer of its values."""
        if split not in self._arrays:
            table = self._split(split).select("row_id", "label", "x").collect().to_arrow()
            x = table.column("x").combine_chunks().values.to_numpy(zero_copy_only=True).reshape(-1, len(FEATURES))
            self._arrays[split] = Arrays(x=x, label=table.column("label").to_numpy(),
                                         row_id=table.column("row_id").to_numpy())
        return self._arrays[split]

    def rows(self, split: Split) -> HiggsRows:
        """The split as a torch Dataset (tensors share the arrays' memory); it pickles as a reference to this split."""
        return HiggsRows(self.arrays(split), source=(self.catalog.home, self.version, split))

    def stream(self, split: Split, *, batch_size: int, shuffle: bool = False, seed: int = 0, drop_last: bool = False,
               buffer_rows: int | None = None) -> HiggsStream:
        """The split as a torch IterableDataset of batches read from the table's files (`shoal.features.higgs_stream`):
        memory holds a bounded number of rows, not the split; shuffled by row group order and a buffer of
        `buffer_rows` rows (default BUFFER_ROWS), not globally."""
        from shoal.features.higgs_stream import BUFFER_ROWS, HiggsStream

        if split not in SPLITS:
            raise CatalogError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        return HiggsStream(self.catalog.uri("table", DATASET), self.version, split, batch_size=batch_size,
                           shuffle=shuffle, seed=seed, drop_last=drop_last,
                           buffer_rows=BUFFER_ROWS if buffer_rows is None else buffer_rows)

    def batches(self, split: Split, batch_size: int, *, shuffle: bool = False, seed: int = 0) -> Iterator[Arrays]:
        """Batches of a split streamed from the table: memory holds one record batch, not the split.

        With `shuffle`, each record batch (up to SCAN_ROWS rows) is permuted with a generator
        seeded by (seed, its index): a shuffle buffer, not a global shuffle.
        """
        for index, chunk in enumerate(self._split(split).collect_batches(chunk_size=SCAN_ROWS)):
            table = chunk.to_arrow()
            x = table.column("x").combine_chunks().values.to_numpy().reshape(-1, len(FEATURES))
            label, row_id = table.column("label").to_numpy(), table.column("row_id").to_numpy()
            order = np.random.default_rng([seed, index]).permutation(len(x)) if shuffle else np.arange(len(x))
            for start in range(0, len(order), batch_size):
                take = order[start : start + batch_size]
                yield Arrays(x=x[take], label=label[take], row_id=row_id[take])


class HiggsRows:
    """torch Dataset over one split: items {"x": (28,) float32, "label": float32 0/1}.

    Offers the staging interface of the generic train loop: `to(device)` copies the split to
    the device once, and `gather(indices)` builds a batch there, with no per-row Python.

    Args:
        arrays: the split.
        source: (home, version, split) it was read from, if any. Then the dataset pickles as
            that reference, and unpickling reads the split again from the store (on the CPU):
            a DataLoader worker opens the store itself instead of receiving the rows.
    """

    def __init__(self, arrays: Arrays, *, source: tuple[str, int, str] | None = None) -> None:
        import torch

        self.source = source
        self.row_id = arrays.row_id
        with warnings.catch_warnings():  # Arrow's buffer is read-only, and nothing here writes to it
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            self.x = torch.from_numpy(arrays.x)  # (N, 28), shares memory with the Arrow buffer
        self.label = torch.from_numpy(arrays.label.astype(np.float32))  # (N,)

    def __len__(self) -> int:
        return len(self.row_id)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[item], "label": self.label[item]}

    def __getstate__(self) -> dict[str, object]:
        return {"source": self.source} if self.source is not None else self.__dict__

    def __setstate__(self, state: dict[str, object]) -> None:
        if set(state) == {"source"}:
            from shoal.catalog import Catalog

            home, version, split = state["source"]
            state = HiggsFeatures(Catalog(home), version=version).rows(split).__dict__
        self.__dict__.update(state)

    def to(self, device: torch.device) -> HiggsRows:
        """The same rows with their tensors on `device`."""
        moved = object.__new__(HiggsRows)
        moved.source, moved.row_id, moved.x, moved.label = self.source, self.row_id, self.x.to(device), self.label.to(device)
        return moved

    def gather(self, items: torch.Tensor) -> dict[str, torch.Tensor]:
        """The batch of `items` (B,), exactly as the default collation of `__getitem__` would give it."""
        return {"x": take(self.x, items), "label": take(self.label, items)}

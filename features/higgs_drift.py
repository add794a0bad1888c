"""Drift of the HIGGS features: the newest `higgs` table against a feature version's training rows (`shoal drift higgs`).

The reference is the `higgs` version the feature version names in its lineage, restricted to
its training rows by the split recorded there; the new data is every row of the newest `higgs`
version (an ingest replaces the table). Each of the 28 columns is one finding. Both tables are
streamed by record batches: the means and standard deviations are `RunningStats` merged over
them, the training deciles come from an evenly strided sample of at most SAMPLE_ROWS training
rows, and the new rows are counted into those bins, so memory does not grow with the table.
"""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING

import numpy as np

from shoal.datasets.higgs import DATASET as INPUT
from shoal.datasets.higgs import FEATURES
from shoal.drift import (DriftReport, Thresholds, edges, feature_lineage, fractions, judge, ordered, psi_of,
                         register_drift)
from shoal.errors import CatalogError
from shoal.features.higgs import DATASET, HiggsSplit, feature_matrix, row_count, scan_batches
from shoal.stats import RunningStats

SAMPLE_ROWS = 1_000_000  # training rows the deciles are taken from, at most: memory stays bounded

if TYPE_CHECKING:
    from shoal.catalog import Catalog


@register_drift("higgs")
def higgs_drift(catalog: Catalog, *, version: int | str | None = None, since: str | None = None,
                thresholds: Thresholds = Thresholds()) -> DriftReport:
    """The newest `higgs` table against the training rows of a HIGGS feature version's input, per column.

    Args:
        version: the `higgs_features` version (default: the newest).
        since: not taken: the HIGGS table has no time.

    Raises:
        CatalogError: no feature version, or no `higgs` version newer than the features' input.
    """
    if since is not None:
        raise CatalogError("--since: the HIGGS table has no time; drift compares the newest `higgs` version with the "
                           "features' training rows (pick the features with --version)")
    lineage = feature_lineage(catalog, DATASET, version, "higgs")
    (higgs_input,) = [item for item in lineage.inputs if item.name == INPUT]
    split = lineage.parameters["split"]
    rule = HiggsSplit(rule=split["rule"], **split.get("parameters", {}))
    newest = catalog.latest_version(INPUT)
    if newest == int(higgs_input.version):
        raise CatalogError(f"no `higgs` version after version {higgs_input.version}, the input of these features; "
                           "ingest the new rows (`shoal ingest higgs FILE`)")

    rows = row_count(catalog, int(higgs_input.version))
    stats, sample = RunningStats.identity((len(FEATURES),)), []
    stride = max(1, -(-rows // SAMPLE_ROWS))
    for batch in scan_batches(catalog, int(higgs_input.version)):
        row_id, values = batch.column("row_id").to_numpy(), feature_matrix(batch)
        train = rule.codes(row_id, rows) == 0
        stats = stats.merge(RunningStats.from_values(values[train], axis=0))
        sample.append(values[train & (row_id % stride == 0)])
    taken = np.concatenate(sample).astype(np.float64)  # (S, 28): a strided sample of the training rows
    inner = [edges(column[np.isfinite(column)]) for column in taken.T]
    p = [fractions(column[np.isfinite(column)], bins) for column, bins in zip(taken.T, inner, strict=True)]
    fresh, counts = RunningStats.identity((len(FEATURES),)), [np.zeros(len(bins) + 1) for bins in inner]
    for batch in scan_batches(catalog, newest):
        values = feature_matrix(batch).astype(np.float64)
        fresh = fresh.merge(RunningStats.from_values(values, axis=0))
        for i, bins in enumerate(inner):
            column = values[:, i][np.isfinite(values[:, i])]
            counts[i] += np.bincount(np.searchsorted(bins, column, side="right"), minlength=len(bins) + 1)
    findings = [judge(name, "all", reference=_column(stats, i), new=_column(fresh, i),
                      index=psi_of(p[i], counts[i] / max(counts[i].sum(), 1)), thresholds=thresholds)
                for i, name in enumerate(FEATURES)]
    return DriftReport(task="higgs", features=f"{DATASET} version {catalog.version_id(DATASET, version)}",
                       reference=f"{int(stats.count.min())} training rows of higgs version {higgs_input.version} "
                                 f"(deciles from {len(taken)} of them)",
                       new=f"{int(fresh.count.max())} rows of higgs version {newest}", thresholds=thresholds,
                       findings=ordered(findings))


def _column(stats: RunningStats, i: int) -> RunningStats:
    """The summary of column `i` of a per-column summary."""
    return RunningStats(*(np.asarray(getattr(stats, field.name)[i]) for field in fields(stats)))

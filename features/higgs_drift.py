"""Drift of the HIGGS features: the newest `higgs` table against a feature version's training rows (`shoal drift higgs`).

The reference is the `higgs` version the feature version names in its lineage, restricted to
its training rows by the split recorded there; the new data is every row of the newest `higgs`
version (an ingest replaces the table). Each of the 28 columns is one finding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from shoal.datasets.higgs import DATASET as INPUT
from shoal.datasets.higgs import FEATURES
from shoal.drift import DriftReport, Thresholds, compare, feature_lineage, ordered, register_drift
from shoal.errors import CatalogError
from shoal.features.higgs import DATASET, HiggsSplit

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

    def columns(table_version: int) -> tuple[np.ndarray, np.ndarray]:
        frame = catalog.scan_table(INPUT, version=table_version).select("row_id", *FEATURES).collect()
        return frame["row_id"].to_numpy(), frame.select(FEATURES).to_numpy().astype(np.float64)

    row_id, reference = columns(int(higgs_input.version))
    reference = reference[rule.codes(row_id, len(row_id)) == 0]
    _, fresh = columns(newest)
    findings = [compare(name, "all", reference[:, i][np.isfinite(reference[:, i])],
                        fresh[:, i][np.isfinite(fresh[:, i])], thresholds) for i, name in enumerate(FEATURES)]
    return DriftReport(task="higgs", features=f"{DATASET} version {catalog.version_id(DATASET, version)}",
                       reference=f"{len(reference)} training rows of higgs version {higgs_input.version}",
                       new=f"{len(fresh)} rows of higgs version {newest}", thresholds=thresholds,
                       findings=ordered(findings))

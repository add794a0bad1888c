"""shoal: a data pipeline and feature store for scientific ML.

Importing shoal is cheap: the catalog, Delta Lake, Icechunk and xarray load on first use.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("shoal")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0"


def open_features(task: str, version: int | str | None = None, home: str | None = None):  # noqa: ANN201 (lazy types)
    """A task's feature version (default the newest) for training elsewhere, without running a pipeline.

    Returns a `shoal.feature_sets.FeatureSet`: `arrays(split)` (numpy, views of the stored data where it
    can), `torch_dataset(split)`, `loader(split, batch_size=..., shuffle=..., seed=...)`, and the
    train-only `statistics` the features were normalized with. `home`: the catalog home
    (default `$SHOAL_HOME`, then `shoal.settings.DEFAULT_HOME`). Tasks: enso, speech, higgs.
    """
    from shoal.catalog import Catalog
    from shoal.contract import get_task

    return get_task(task).open_features(Catalog(home), version)

"""shoal: a data pipeline and feature store for scientific ML.

Importing shoal is cheap: the catalog, Delta Lake, Icechunk and xarray load on first use.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("shoal")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0"

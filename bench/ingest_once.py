"""One ingest in a fresh process, with shoal imported from a given source tree.

Usage: `python bench/ingest_once.py ROOT SOURCE HOME PATH...`. ROOT is a checkout (or an
archive) of shoal: its `shoal/` and the folders setuptools maps into it (`datasets/`,
`features/`, ...) are imported from there, not from the installed checkout, so that
`bench_stats_cost` runs this checkout and an older commit the same way. Prints one JSON line:
the ingest's wall time and CPU time (user + system, all threads) in seconds, imports
excluded, its counts, and the file the ingest came from (the caller checks it is ROOT's).
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import time
from pathlib import Path

# Imported before the clock starts: the time is the ingest's, not Python's imports.
LIBRARIES = ("numpy", "polars", "pyarrow.parquet", "deltalake", "xarray", "zarr", "icechunk", "eccodes", "dask.array")


def main(argv: list[str]) -> int:
    """Ingest PATH... into a new catalog at HOME with the source SOURCE of the shoal at ROOT."""
    root, name, home, *paths = argv
    sys.path.insert(0, root)
    import shoal

    # shoal.datasets, shoal.features, ... are ROOT's top-level folders (setuptools' package-dir).
    shoal.__path__.append(root)
    for library in LIBRARIES:
        importlib.import_module(library)
    from shoal.catalog import Catalog
    from shoal.sources import sources

    source = sources()[name]
    start, cpu = time.perf_counter(), time.process_time()
    report = source.ingest(Catalog(home), [Path(path) for path in paths])
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "committed": len(report.committed), "failures": list(report.failures),
                      "module": inspect.getsourcefile(source.ingest)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

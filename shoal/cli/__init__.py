"""The `shoal` command line: ingest, inspect the catalog, the steps of a task, the pipelines, the demo.

Exit codes: 0 success; 1 some inputs failed and the rest were committed; 2 nothing done.
Errors print one line (no traceback unless --debug). Heavy imports live inside commands.

`root` holds the app and its global options; each module imported below registers its
commands on it when imported.
"""

from shoal.cli.root import app, run

# In the order `shoal --help` lists them: catalog (and its site); ingest, backfill, serve, backfill-slots; features, train,
# tune, evaluate, predict; run; demo; fetch; reproduce; drift.
from shoal.cli import catalog, site, operations, step_commands, pipeline, demo, fetch, reproduce, drift  # noqa: F401, I001

__all__ = ["app", "run"]

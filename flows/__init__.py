"""Prefect flows: the only package that imports prefect (a test enforces it).

`shoal.flows.ingest` holds the ingest flows (no torch); `shoal.flows.backfill` the SST backfill;
`shoal.flows.pipelines` the generic task flows (importing it loads torch on first training
only, through shoal.models.runs). Importing any of them first makes the ephemeral Prefect server
die with this process, even by SIGKILL (`shoal.flows.server`), and sets Prefect's defaults for
shoal (`PREFECT_DEFAULTS`) where the environment has none.
"""

import os

# Prefect's settings for a user who runs `shoal` without make (a value already set wins), before prefect is
# imported: no telemetry (a banner, and an ERROR line each run where the network is closed), no UI on the
# ephemeral server, and a patient start of that server (a backfill on a loaded machine gave up after 50 s).
PREFECT_DEFAULTS = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "PREFECT_SERVER_UI_ENABLED": "false",
                    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90"}
for _name, _value in PREFECT_DEFAULTS.items():
    os.environ.setdefault(_name, _value)

from shoal.flows.ingest import ingest_oni, ingest_speech, ingest_sst  # noqa: E402
from shoal.flows.server import supervise_ephemeral_server  # noqa: E402

supervise_ephemeral_server()  # before any flow runs: the server starts with the first run, not on import

__all__ = ["ingest_oni", "ingest_speech", "ingest_sst"]

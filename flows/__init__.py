"""Prefect flows: the only package that imports prefect (a test enforces it).

`shoal.flows.ingest` holds the ingest flows (no torch); `shoal.flows.backfill` the SST backfill;
`shoal.flows.pipelines` the generic task flows (importing it loads torch on first training
only, through shoal.models.runs). Importing any of them first makes the ephemeral Prefect server
die with this process, even by SIGKILL (`shoal.flows.server`).
"""

from shoal.flows.ingest import ingest_oni, ingest_speech, ingest_sst
from shoal.flows.server import supervise_ephemeral_server

supervise_ephemeral_server()  # before any flow runs: the server starts with the first run, not on import

__all__ = ["ingest_oni", "ingest_speech", "ingest_sst"]

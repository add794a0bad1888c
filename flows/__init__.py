"""Prefect flows: the only package that imports prefect (a test enforces it).

`shoal.flows.ingest` holds the ingest flows (no torch); `shoal.flows.backfill` the SST backfill;
`shoal.flows.pipelines` the generic task flows (importing it loads torch on first training
only, through shoal.models.runs).
"""

from shoal.flows.ingest import ingest_oni, ingest_speech, ingest_sst

__all__ = ["ingest_oni", "ingest_speech", "ingest_sst"]

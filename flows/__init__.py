"""Prefect flows: the only package that imports prefect (a test enforces it)."""

from shoal.flows.enso import build_enso_features, enso_pipeline, ingest_sst, predict_enso, train_enso
from shoal.flows.ingest import ingest_oni

__all__ = ["build_enso_features", "enso_pipeline", "ingest_oni", "ingest_sst", "predict_enso", "train_enso"]

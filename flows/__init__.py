"""Prefect flows: the only package that imports prefect (a test enforces it)."""

from shoal.flows.ingest import ingest_oni

__all__ = ["ingest_oni"]

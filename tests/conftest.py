"""Shared fixtures: a fresh catalog per test, one quiet Prefect server per session."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Quiet, reliable Prefect; set before prefect is first imported.
_PREFECT_HOME = tempfile.mkdtemp(prefix="shoal-prefect-")
os.environ.update(
    PREFECT_HOME=_PREFECT_HOME,
    PREFECT_SERVER_ANALYTICS_ENABLED="false",
    PREFECT_LOGGING_TO_API_ENABLED="false",
    PREFECT_SERVER_UI_ENABLED="false",
    DO_NOT_TRACK="1",
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="90",
)
os.environ.pop("SHOAL_HOME", None)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty catalog home."""
    return tmp_path / "home"


@pytest.fixture
def catalog(home: Path):  # noqa: ANN201
    """A `Catalog` on an empty home."""
    from shoal.catalog import Catalog

    return Catalog(home)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One ephemeral Prefect server for every flow test of the session (~15 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=None):
        yield

"""Deadlines in the tests bound hangs, not speed: every one goes through `scaled`, so one setting moves them all.

SHOAL_TEST_TIMEOUT_SCALE (default 3, any positive number) multiplies every subprocess timeout,
wait-until deadline and the per-test pytest-timeout (tests/conftest.py), so a slow or loaded
machine still passes what an idle one passes; a hang still fails, only later.
"""

from __future__ import annotations

import os

VARIABLE = "SHOAL_TEST_TIMEOUT_SCALE"
DEFAULT = 3.0


def scale() -> float:
    """The factor from SHOAL_TEST_TIMEOUT_SCALE; a value that is not a positive number stops the run."""
    text = os.environ.get(VARIABLE, "").strip()
    if not text:
        return DEFAULT
    try:
        factor = float(text)
    except ValueError:
        factor = 0.0
    if not factor > 0 or factor == float("inf"):
        raise ValueError(f"{VARIABLE}={text!r}: expected a positive number of times the default deadlines, e.g. 3")
    return factor


def scaled(seconds: float) -> float:
    """`seconds`, a bound on a hang measured on an idle 2-core machine, times the scale."""
    return seconds * scale()

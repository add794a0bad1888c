"""The code itself: names that exist, imports that are used (pyflakes' rules, run by ruff)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_no_module_uses_an_undefined_name_or_imports_what_it_does_not_use() -> None:
    """An undefined name fails only when its line runs: a moved class once broke distributed training this way."""
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F", "--output-format", "concise",
                             "--no-cache", "shoal", "flows", "tests", "bench"],
                            cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr

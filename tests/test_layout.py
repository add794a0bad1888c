"""Project rules that keep the layout honest."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_only_flows_import_prefect() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("shoal", "datasets", "features", "models", "bench")
        for path in (ROOT / folder).rglob("*.py")
        if "prefect" in _imports(path)
    ]
    assert offenders == []


def test_the_five_code_folders_are_one_distribution() -> None:
    import shoal.datasets
    import shoal.features
    import shoal.flows
    import shoal.models

    for module, folder in [(shoal.datasets, "datasets"), (shoal.features, "features"), (shoal.models, "models"), (shoal.flows, "flows")]:
        assert Path(module.__file__).parent == ROOT / folder

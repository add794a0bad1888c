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
        for folder in ("shoal", "datasets", "features", "models", "tasks", "bench")
        for path in (ROOT / folder).rglob("*.py")
        if ".out" not in path.relative_to(ROOT).parts and "prefect" in _imports(path)  # bench/.out: its scratch
    ]
    assert offenders == []


def test_the_six_code_folders_are_one_distribution() -> None:
    import shoal.datasets
    import shoal.features
    import shoal.flows
    import shoal.models
    import shoal.tasks

    for module, folder in [(shoal.datasets, "datasets"), (shoal.features, "features"), (shoal.models, "models"),
                           (shoal.flows, "flows"), (shoal.tasks, "tasks")]:
        assert Path(module.__file__).parent == ROOT / folder


def _layout() -> dict[str, set[str]]:
    """The modules the layout section of docs/development.md names, by folder."""
    import re

    text = (ROOT / "docs" / "development.md").read_text()
    block = text[text.index("## Layout"):]
    block = block[block.index("```") + 3:]
    block = block[:block.index("```")]
    named: dict[str, set[str]] = {}
    folder = top = ""
    for line in block.splitlines():
        if match := re.match(r"(\w+)/\s", line):
            folder = top = match.group(1)
        elif match := re.match(r"\s+(\w+)/\s", line):  # an indented folder is inside the one above: shoal/cli
            folder = f"{top}/{match.group(1)}"
        named.setdefault(folder, set()).update(re.findall(r"(\w+\.py)\b", line))
    return named


def test_the_documented_layout_names_every_module_and_only_modules_that_exist() -> None:
    named = _layout()
    for folder in ("shoal", "shoal/cli", "datasets", "features", "models", "tasks", "flows"):
        present = {path.name for path in (ROOT / folder).glob("*.py") if path.name != "__init__.py"}
        assert named.get(folder, set()) == present, f"{folder}/: docs/development.md names {sorted(named.get(folder, set()))}"

"""`shoal catalog list|describe|history|check|lineage`: datasets, registered models, versions and lineage."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from shoal.cli.output import _console, _print_json
from shoal.cli.root import _catalog, app

if TYPE_CHECKING:
    from shoal.catalog import LineageNode

catalog_app = typer.Typer(help="Inspect datasets, versions and lineage.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
VersionOpt = Annotated[str | None, typer.Option("--version", "-v", help="A version number or snapshot id.")]


@catalog_app.command("list")
@catalog_app.command("ls", hidden=True)
def catalog_ls(as_json: JsonFlag = False) -> None:
    """List every dataset with its kind and latest version."""
    from dataclasses import asdict

    from rich.table import Table

    from shoal.catalog import DatasetInfo
    from shoal.models.registry import model_versions

    catalog = _catalog().must_exist()
    latest = {entry.name: entry for entry in model_versions(catalog)}  # sorted by version: the last one stays
    found = [*catalog.list(), *(DatasetInfo(name=e.name, kind="model", version=e.version, updated_at=e.created_at)
                                for e in latest.values())]
    if as_json:
        _print_json([asdict(info) for info in found])
        return
    table = Table("name", "kind", "version", "updated")
    for info in found:
        table.add_row(info.name, info.kind, str(info.version), info.updated_at)
    _console().print(table)


def _model(name: str) -> list[Any]:
    """The registered versions of `name` when it names a model and no dataset, else []."""
    from shoal.models.registry import model_versions

    catalog = _catalog().must_exist()
    return [] if catalog.exists(name) else model_versions(catalog, name)


def _model_facts(entry: Any) -> dict[str, Any]:
    return {"name": entry.name, "kind": "model", "version": entry.version, "architecture": entry.architecture,
            "feature": f"{entry.feature_dataset} ({entry.feature_kind}) version {entry.feature_version}",
            "run_id": entry.run_id, "created_at": entry.created_at, "checkpoint": str(entry.checkpoint),
            "checkpoint_sha256": entry.checkpoint_sha256, "config": entry.config,
            "metrics": {k: v for k, v in entry.metrics.items() if k != "history"},
            "lineage": {"inputs": [{"name": "model_registry", "kind": "table", "version": entry.registry_version},
                                   {"name": entry.feature_dataset, "kind": entry.feature_kind,
                                    "version": entry.feature_version}]}}


@catalog_app.command("describe")
@catalog_app.command("show", hidden=True)
def catalog_show(name: str, version: VersionOpt = None, as_json: JsonFlag = False) -> None:
    """Kind, schema or dims, rows or shape, and lineage of one version (of a dataset or a registered model)."""
    if models := _model(name):
        chosen = [m for m in models if version is None or str(m.version) == version]
        if not chosen:
            raise typer.BadParameter(f"model {name} has no version {version}; it has "
                                     f"{', '.join(str(m.version) for m in models)}", param_hint="--version")
        facts = _model_facts(chosen[-1])
    else:
        facts = _catalog().must_exist().describe(name, version=version)
    if as_json:
        _print_json(facts)
        return
    console = _console()
    lineage = facts.pop("lineage")
    for key, value in facts.items():
        if isinstance(value, dict):
            console.print(f"[bold]{key}[/]:")
            for inner_key, inner in value.items():
                console.print(f"  {inner_key}: {inner}")
        else:
            console.print(f"[bold]{key}[/]: {value}")
    if lineage:
        console.print("[bold]lineage[/]:")
        for key, value in lineage.items():
            if key in ("sources", "inputs") and value:
                console.print(f"  {key}:")
                for item in value:
                    console.print("    " + " ".join(f"{k}={v}" for k, v in item.items()))
            else:
                console.print(f"  {key}: {value}")


@catalog_app.command("history")
def catalog_history(name: str, as_json: JsonFlag = False) -> None:
    """Every version of a dataset (or of a registered model), newest first."""
    from dataclasses import asdict

    from rich.table import Table

    if models := _model(name):
        if as_json:
            _print_json([_model_facts(m) for m in reversed(models)])
            return
        table = Table("version", "created", "run", "trained on", title=f"{name}: registered versions, newest first")
        for m in reversed(models):
            table.add_row(str(m.version), m.created_at, m.run_id, f"{m.feature_dataset} version {m.feature_version}")
        _console().print(table)
        return
    versions = _catalog().must_exist().history(name)
    if as_json:
        _print_json([asdict(v) for v in versions])
        return
    table = Table("version", "created", "what", "rows / shape", "sources", title=f"{name}: versions, newest first")
    for entry in versions:
        lineage = entry.lineage
        size = "" if lineage is None else str(lineage.rows if lineage.rows is not None else lineage.shape)
        names = [] if lineage is None else [Path(s.path).name for s in lineage.sources]
        sources = ", ".join(names) if len(names) <= 3 else f"{names[0]} … {names[-1]} ({len(names)} files)"
        what = (lineage.message if lineage and lineage.message else getattr(entry, "operation", ""))
        table.add_row(str(entry.version), entry.created_at, what, size, sources)
    _console().print(table)


@catalog_app.command("check")
def catalog_check(
    repair: Annotated[bool, typer.Option("--repair", help="Remove files no commit references (never a committed "
                                                            "version's).")] = False,
    grace: Annotated[float, typer.Option(min=0, help="Object-store homes: leave unreferenced files younger than this "
                                                     "many seconds (a write may be in progress).")] = 3600.0,
) -> None:
    """Open every table and array, check each version's lineage and inputs, list files no commit references; exit 1 on findings."""
    from shoal.check import check

    catalog = _catalog().must_exist()
    report = check(catalog, repair=repair, grace=grace)
    for line in report.repaired:
        typer.echo(f"repaired: {line}")
    for line in report.notes:
        typer.echo(f"note: {line}")
    for line in report.findings:
        typer.echo(line)
    if not report.clean:
        raise typer.Exit(1)
    typer.echo(f"{catalog.home}: clean")


def _tree(node: LineageNode, branch: Any) -> None:
    label = f"[bold]{node.name}[/] ({node.kind}) version {node.version}"
    if node.lineage is not None:
        label += f" — {node.lineage.created_at}, shoal {node.lineage.shoal_version}"
    child = branch.add(label)
    if node.lineage is not None:
        sources = node.lineage.sources
        for source in sources[:3]:
            child.add(f"file {source.path} sha256 {source.sha256[:16]}… {source.bytes} bytes")
        if len(sources) > 3:
            child.add(f"… and {len(sources) - 3} more files (`shoal catalog describe {node.name} --json` lists them)")
    for parent in node.parents:
        _tree(parent, child)


@catalog_app.command("lineage")
def catalog_lineage(name: str, version: VersionOpt = None, as_json: JsonFlag = False) -> None:
    """Walk a version's inputs back to its source files."""
    from dataclasses import asdict

    from rich.tree import Tree

    node = _catalog().must_exist().lineage_tree(name, version=version)
    if as_json:
        _print_json(asdict(node))
        return
    root = Tree("lineage")
    _tree(node, root)
    _console().print(root)

"""`shoal catalog list|describe|history|stats|check|lineage`: datasets, registered models, versions and lineage."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from shoal.cli.output import _console, _print_json
from shoal.cli.root import PlainFlagsGroup, _catalog, app

if TYPE_CHECKING:
    from shoal.catalog import Catalog, LineageNode
    from shoal.lineage import SourceFile

catalog_app = typer.Typer(cls=PlainFlagsGroup, help="Inspect datasets, versions and lineage.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
VersionOpt = Annotated[str | None, typer.Option("--version", "-v", help="A version number or snapshot id.")]


@catalog_app.command("list")
@catalog_app.command("ls", hidden=True)
def catalog_ls(as_json: JsonFlag = False) -> None:
    """List every dataset with its kind and latest version."""
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
    from shoal.lineage import version_label

    return {"name": entry.name, "kind": "model", "version": entry.version, "architecture": entry.architecture,
            "feature": f"{entry.feature_dataset} ({entry.feature_kind}) {version_label(_catalog(), entry.feature)}",
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
    lineage = facts.pop("lineage") or {}
    if isinstance(facts.get("variables"), dict):  # "float32 ('time', 'lat')" as people write it: "float32 (time, lat)"
        facts["variables"] = {key: str(value).replace("'", "").replace(",)", ")")
                              for key, value in facts["variables"].items()}
    lines = [line for key, value in facts.items() for line in _readable(key, value, 0)]
    if lineage:
        same = {"dataset": facts.get("name"), "kind": facts.get("kind"), "rows": facts.get("rows"),
                "shape": facts.get("dims")}  # already said above
        lines.append("lineage:")
        for key, value in lineage.items():
            if key == "sources":
                lines += [f"  {line}" for line in _sources_text(value, label="source files",
                                                               listed_by=f"shoal catalog describe {name} --json")]
            elif key == "inputs" and value:
                lines += ["  inputs:", *(f"    {i['name']} ({i['kind']}) version {i['version']}" for i in value)]
            elif value != same.get(key):
                lines += _readable(key, value, 1)
    console = _console()
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


@catalog_app.command("stats")
def catalog_stats(name: str, version: VersionOpt = None, as_json: JsonFlag = False) -> None:
    """Count, NaN count, mean, std, min and max of every numeric column or variable the version holds."""
    from rich.table import Table

    catalog = _catalog().must_exist()
    chosen = catalog.latest_version(name) if version is None else version
    columns = catalog.stats(name, version=chosen)
    if as_json:
        _print_json({"name": name, "version": chosen, "stats": {key: s.to_dict() for key, s in columns.items()}})
        return
    table = Table("column", "count", "NaN", "mean", "std", "min", "max", title=f"{name} version {chosen}: what it holds")
    for key, s in columns.items():
        table.add_row(key, f"{int(s.count):,}", f"{int(s.nan_count):,}",
                      *(f"{float(value):.6g}" for value in (s.mean, s.std, s.min, s.max)))
    _console().print(table)


MAX_LISTED = 6  # a longer list is shown as its length, first and last item


def _scalar(value: Any) -> str:
    """One value as people read it: no Python reprs (an item of a list that is itself a list or a mapping
    is written out in brackets)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | tuple):
        return f"[{', '.join(_scalar(item) for item in value)}]"
    if isinstance(value, dict):
        return f"[{', '.join(f'{k} {_scalar(v)}' for k, v in value.items())}]"
    return "none" if value is None else str(value)


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | tuple | dict) and not value)


def _readable(key: str, value: Any, depth: int) -> list[str]:
    """`key: value` as indented lines: mappings nested, lists summarized, nothing empty, no reprs."""
    pad = "  " * depth
    if _empty(value):
        return []
    if isinstance(value, dict):
        inner = [line for k, v in value.items() for line in _readable(str(k), v, depth + 1)]
        return [f"{pad}{key}:", *inner] if inner else []
    if isinstance(value, list | tuple):
        if all(isinstance(item, dict) for item in value):
            lines = [f"{pad}{key}:"]
            for item in value:  # each mapping a "- " block, its first line carrying the dash
                block = [line for k, v in item.items() for line in _readable(str(k), v, depth + 2)]
                if block:
                    lines += [f"{pad}  - {block[0].lstrip()}", *block[1:]]
            return lines
        items = [_scalar(item) for item in value]
        if len(items) > MAX_LISTED:
            return [f"{pad}{key}: {len(items)} values, {items[0]} .. {items[-1]}"]
        return [f"{pad}{key}: {', '.join(items)}"]
    return [f"{pad}{key}: {_scalar(value)}"]


def _sources_text(sources: list[dict[str, Any]], *, label: str, listed_by: str) -> list[str]:
    """Source files for people: each one when few, else how many, the first and last names, and where;
    `listed_by` is the command that lists each with its sha256."""
    if not sources:
        return []
    if len(sources) <= 3:
        return [f"{label}:"] + [f"  {s['path']} ({s['bytes']:,} bytes, sha256 {s['sha256'][:16]}…)" for s in sources]
    names = sorted(str(s["path"]).rsplit("/", 1)[-1] for s in sources)
    folders = {str(s["path"]).rsplit("/", 1)[0] for s in sources}
    where = f"in {folders.pop()}" if len(folders) == 1 else f"in {len(folders)} folders"
    total = sum(int(s["bytes"]) for s in sources)
    return [f"{label}: {len(sources)} ({names[0]} .. {names[-1]}) {where}, {total:,} bytes; `{listed_by}` lists "
            "each with its sha256"]


@catalog_app.command("history")
def catalog_history(name: str, as_json: JsonFlag = False) -> None:
    """Every version of a dataset (or of a registered model), newest first."""
    from rich.table import Table

    from shoal.lineage import version_label

    if models := _model(name):
        if as_json:
            _print_json([_model_facts(m) for m in reversed(models)])
            return
        table = Table("version", "created", "run", "trained on", title=f"{name}: registered versions, newest first")
        for m in reversed(models):
            table.add_row(str(m.version), m.created_at, m.run_id, f"{m.feature_dataset} {version_label(_catalog(), m.feature)}")
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


def _held_sources(catalog: Catalog, node: LineageNode) -> list[SourceFile]:
    """The source files of everything an array version holds: the union over the commits up to it of their
    files, the newest per file name (a later ingest of a month replaces its file), sorted by name."""
    newest: dict[str, SourceFile] = {}
    for entry in catalog.history(node.name):  # newest first: the first file of a name is the one held
        if entry.version <= int(node.version) and entry.lineage is not None:
            for source in entry.lineage.sources:
                newest.setdefault(source.path.rsplit("/", 1)[-1], source)
    return [newest[name] for name in sorted(newest)]


def _tree(node: LineageNode, branch: Any, held: dict[tuple[str, str], list[SourceFile]]) -> None:
    from rich.text import Text

    label = f"[bold]{node.name}[/] ({node.kind}) version {node.version}"
    if node.lineage is not None:
        label += f" — {node.lineage.created_at}, shoal {node.lineage.shoal_version}"
    child = branch.add(label)
    if (node.name, str(node.version)) in held:
        listed_by = f"shoal catalog lineage {node.name} --version {node.version} --all-sources --json"
        for line in _sources_text([asdict(s) for s in held[(node.name, str(node.version))]],
                                  label="source files held", listed_by=listed_by):
            child.add(Text(line))
    elif node.lineage is not None:
        sources = node.lineage.sources
        for source in sources[:3]:
            child.add(Text(f"file {source.path} sha256 {source.sha256[:16]}… {source.bytes} bytes"))
        if len(sources) > 3:
            child.add(Text(f"… and {len(sources) - 3} more files of this commit (`shoal catalog describe {node.name} "
                           "--json` lists them; with --all-sources, an array's line says what the version holds)"))
    for parent in node.parents:
        _tree(parent, child, held)


def _nodes(node: LineageNode) -> list[LineageNode]:
    return [node, *(found for parent in node.parents for found in _nodes(parent))]


def _with_held(data: dict[str, Any], held: dict[tuple[str, str], list[SourceFile]]) -> dict[str, Any]:
    """A lineage node's JSON with `held_sources` on each array version in it."""
    key = (data["name"], str(data["version"]))
    return {**data, **({"held_sources": [asdict(s) for s in held[key]]} if key in held else {}),
            "parents": [_with_held(parent, held) for parent in data["parents"]]}


@catalog_app.command("lineage")
def catalog_lineage(
    name: str,
    version: VersionOpt = None,
    as_json: JsonFlag = False,
    all_sources: Annotated[bool, typer.Option(
        "--all-sources", help="For each array version: the source files of everything it holds (the union over "
                              "the commits up to it, the newest file per name), not only its own commit's; in "
                              "--json as held_sources.")] = False,
) -> None:
    """Walk a version's inputs back to its source files."""
    from rich.tree import Tree

    catalog = _catalog().must_exist()
    node = catalog.lineage_tree(name, version=version)
    held = {(n.name, str(n.version)): _held_sources(catalog, n) for n in _nodes(node)
            if all_sources and n.kind == "array" and n.lineage is not None}
    if as_json:
        _print_json(_with_held(asdict(node), held) if all_sources else asdict(node))
        return
    root = Tree("lineage")
    _tree(node, root, held)
    _console().print(root, soft_wrap=False)  # long lines wrap inside the tree, none is cut

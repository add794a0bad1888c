"""A static HTML site of a catalog home: datasets, versions, statistics, lineage graphs, models, plots.

`build_site(catalog, out)` writes plain HTML + inline SVG (no script, no CDN: it opens from disk,
offline) through the Jinja templates in `shoal/site_templates/`, and copies `HOME/reports/*.png`
beside the pages. `site_server` serves such a folder read-only on 127.0.0.1.

Statistics: each column's stored summary with its histogram (`shoal.site_stats`). Drift:
`shoal.drift.drift` of every task, the newest feature version against its training data, as
`shoal drift TASK` reports it.
"""

from __future__ import annotations

import html
import logging
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoal.errors import ShoalError
from shoal.site_stats import array_statistics, stored_statistics, table_statistics

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

    from shoal.catalog import Catalog, LineageNode
    from shoal.models.registry import ModelVersion

log = logging.getLogger(__name__)

GROUPED_SOURCES = 4  # a commit with more source files is drawn as one node that links to their list
_NODE_WIDTH, _NODE_HEIGHT, _LAYER_GAP, _ROW_GAP = 230, 44, 70, 16


@dataclass(frozen=True)
class GraphNode:
    """A box of a lineage graph: a dataset version or source files, with where it links to."""

    key: str
    label: str
    detail: str
    href: str
    kind: str  # "table", "array", "model", "sources"
    x: int = 0
    y: int = 0


@dataclass(frozen=True)
class LineageGraph:
    """A layered lineage drawing: nodes placed by depth (the version itself at the top), edges child -> input."""

    nodes: tuple[GraphNode, ...]
    edges: tuple[tuple[GraphNode, GraphNode], ...]
    width: int
    height: int

    @property
    def paths(self) -> tuple[str, ...]:
        """Each edge as an SVG path from the bottom of a version's box to the top of its input's; an edge that
        skips a layer bends out to the right, so that it never runs behind the boxes between."""
        drawn = []
        for child, parent in self.edges:
            x1, y1 = child.x + _NODE_WIDTH // 2, child.y + _NODE_HEIGHT
            x2, y2 = parent.x + _NODE_WIDTH // 2, parent.y
            if parent.y - child.y > _NODE_HEIGHT + _LAYER_GAP:
                side = max(child.x, parent.x) + _NODE_WIDTH + _ROW_GAP // 2
                drawn.append(f"M{child.x + _NODE_WIDTH},{child.y + _NODE_HEIGHT // 2} "
                             f"C{side + 40},{child.y + _NODE_HEIGHT} "
                             f"{side + 40},{parent.y} {parent.x + _NODE_WIDTH},{parent.y + _NODE_HEIGHT // 2}")
            else:
                middle = (y1 + y2) // 2
                drawn.append(f"M{x1},{y1} C{x1},{middle} {x2},{middle} {x2},{y2}")
        return tuple(drawn)


@dataclass(frozen=True)
class SiteReport:
    """What `build_site` wrote."""

    out: Path
    index: Path
    pages: int
    datasets: int
    models: int
    images: int


@dataclass
class _Sources:
    """Every source file named by a lineage, by the page anchor of the commit that read it."""

    groups: dict[str, tuple[str, list[dict[str, Any]]]] = field(default_factory=dict)

    def add(self, name: str, version: int | str, files: Sequence[Mapping[str, Any]]) -> str:
        anchor = f"{name}-v{version}"
        self.groups.setdefault(anchor, (f"{name} version {version}", [dict(f) for f in files]))
        return f"sources.html#{anchor}"


def page_name(kind: str, name: str) -> str:
    """The file of a dataset's or model's page."""
    return f"{kind}-{name}.html"


def _environment() -> Any:
    import jinja2

    environment = jinja2.Environment(loader=jinja2.PackageLoader("shoal", "site_templates"),
                                     autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined,
                                     trim_blocks=True, lstrip_blocks=True)
    environment.filters["number"] = _number
    environment.filters["histogram_svg"] = histogram_svg
    return environment


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.6g}" if math.isfinite(value) else str(value)


def histogram_svg(histogram: tuple[Sequence[float], Sequence[int]] | None, width: int = 160,
                  height: int = 36) -> str:
    """A small bar chart of (edges, counts) as an inline SVG string (empty without a histogram)."""
    from markupsafe import Markup

    if not histogram or not histogram[1]:
        return ""
    edges, counts = histogram
    top = max(counts) or 1
    bar = width / len(counts)
    bars = "".join(
        f'<rect x="{i * bar:.1f}" y="{height - height * c / top:.1f}" width="{max(bar - 1, 1):.1f}" '
        f'height="{height * c / top:.1f}"><title>{html.escape(_number(edges[i]))} .. '
        f'{html.escape(_number(edges[i + 1]))}: {c:,}</title></rect>'
        for i, c in enumerate(counts))
    return Markup(f'<svg class="histogram" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
                  f'role="img" aria-label="histogram">{bars}</svg>')


@dataclass(frozen=True)
class DriftView:
    """One task's drift report for the site, or why there is none (`missing`)."""

    task: str
    report: Any = None  # a shoal.drift.DriftReport
    missing: str = ""


def drift_views(catalog: Catalog) -> list[DriftView]:
    """`shoal drift TASK` of every task: its newest feature version against its training data, or why not."""
    from shoal.contract import tasks
    from shoal.drift import drift
    from shoal.errors import CatalogError

    views = []
    for name in sorted(tasks()):
        try:
            views.append(DriftView(name, report=drift(catalog, name)))
        except CatalogError as error:
            views.append(DriftView(name, missing=str(error)))
    return views


# Dimensions as a geoscientist reads them (time, lat, lon); the lineage stores sizes by name, in no order.
_DIMENSION_ORDER = ("time", "lead", "lat", "y", "lon", "x")


def _shape(shape: Mapping[str, int] | None) -> str:
    """'time 66 × lat 180 × lon 360 × sha256_byte 32': the usual dimensions first, the others by name."""
    rank = {name: index for index, name in enumerate(_DIMENSION_ORDER)}
    ordered = sorted((shape or {}).items(), key=lambda item: (rank.get(item[0], len(rank)), item[0]))
    return " × ".join(f"{name} {size}" for name, size in ordered)


def _rows(count: int) -> str:
    return f"{count:,} row{'' if count == 1 else 's'}"


# -- lineage graph ------------------------------------------------------------------------------


def lineage_graph(root: LineageNode, sources: _Sources) -> LineageGraph:
    """Lay out a lineage tree in layers: the version at depth 0, each input one layer further, source files last.

    A dataset version reached by several paths is drawn once, at its deepest layer, so every
    edge points down.
    """
    depth: dict[str, int] = {}
    boxes: dict[str, GraphNode] = {}
    edges: set[tuple[str, str]] = set()

    def key(node: LineageNode) -> str:
        return f"{node.name}@{node.version}"

    def visit(node: LineageNode, level: int) -> None:
        here = key(node)
        depth[here] = max(depth.get(here, 0), level)
        if here not in boxes:
            lineage = node.lineage
            detail = ("not in the catalog" if lineage is None else
                      _rows(lineage.rows) if lineage.rows is not None else
                      _shape(lineage.shape))
            boxes[here] = GraphNode(here, f"{node.name} v{node.version}", detail,
                                    f"{page_name('dataset', node.name)}#v{node.version}" if lineage else "", node.kind)
        for parent in node.parents:
            edges.add((here, key(parent)))
            visit(parent, level + 1)
        files = node.lineage.sources if node.lineage is not None else ()
        if files:
            href = sources.add(node.name, node.version, [asdict(f) for f in files])
            group = files if len(files) <= GROUPED_SOURCES else ()
            for source in group:
                file_key = f"file:{source.sha256}"
                boxes[file_key] = GraphNode(file_key, Path(source.path).name, f"{source.bytes:,} bytes",
                                            f"{href}-{source.sha256[:16]}", "sources")
                depth[file_key] = max(depth.get(file_key, 0), level + 1)
                edges.add((here, file_key))
            if not group:
                many = f"files:{here}"
                boxes[many] = GraphNode(many, f"{len(files):,} source files",
                                        f"{sum(f.bytes for f in files):,} bytes", href, "sources")
                depth[many] = max(depth.get(many, 0), level + 1)
                edges.add((here, many))

    visit(root, 0)
    # Source files sit below every dataset: they are where each path ends.
    deepest = max((d for k, d in depth.items() if not boxes[k].kind == "sources"), default=0)
    for k in depth:
        if boxes[k].kind == "sources":
            depth[k] = deepest + 1
    layers: dict[int, list[str]] = {}
    for k in sorted(depth, key=lambda k: (depth[k], boxes[k].label)):
        layers.setdefault(depth[k], []).append(k)
    # Each layer in the order of its boxes' parents above (their mean position), which uncrosses most edges.
    position: dict[str, float] = {}
    for level in sorted(layers):
        row = layers[level]
        above = {k: [position[a] for a, b in edges if b == k and a in position] for k in row}
        row.sort(key=lambda k: (sum(above[k]) / len(above[k]) if above[k] else 0.0, boxes[k].label))
        position.update((k, float(i)) for i, k in enumerate(row))
    widest = max(len(row) for row in layers.values())
    width = widest * (_NODE_WIDTH + _ROW_GAP) + _ROW_GAP + 60  # room on the right for edges that skip a layer
    placed = {}
    for level, row in layers.items():
        offset = (width - 60 - len(row) * (_NODE_WIDTH + _ROW_GAP) + _ROW_GAP) // 2
        for i, k in enumerate(row):
            placed[k] = GraphNode(**{**asdict(boxes[k]), "x": offset + i * (_NODE_WIDTH + _ROW_GAP),
                                     "y": _ROW_GAP + level * (_NODE_HEIGHT + _LAYER_GAP)})
    height = (max(layers) + 1) * (_NODE_HEIGHT + _LAYER_GAP) - _LAYER_GAP + 2 * _ROW_GAP
    return LineageGraph(nodes=tuple(placed.values()),
                        edges=tuple((placed[a], placed[b]) for a, b in sorted(edges)), width=width, height=height)


# -- models -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelView:
    """One registered model version as its page shows it."""

    entry: ModelVersion
    trained_on: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    model_rows: tuple[bool, ...]
    title: str
    verdict: str
    other_metrics: dict[str, Any]
    plots: tuple[str, ...]


def _model_view(catalog: Catalog, entry: ModelVersion, reports: Sequence[str]) -> ModelView:
    from shoal.contract import tasks
    from shoal.lineage import version_label

    task = next((one for one in tasks().values() if one.model_name == entry.name), None)
    metrics = dict(entry.metrics)
    other = {k: v for k, v in metrics.items() if k not in ("skill", "history") and not isinstance(v, dict | list)}
    plots = tuple(r for r in reports if r.startswith(f"{entry.name}_v{entry.version}_"))
    trained_on = version_label(catalog, entry.feature)
    if task is None or "skill" not in metrics:
        return ModelView(entry, trained_on, (), (), (), "", "", other, plots)
    table = task.skill_table(metrics)
    return ModelView(entry, trained_on, table.columns, table.rows, table.model_rows, table.title, table.verdict, other,
                     plots)


# -- the site -----------------------------------------------------------------------------------


def build_site(catalog: Catalog, out: Path, *, with_drift: bool = True) -> SiteReport:
    """Write the static site of `catalog` into the folder `out` (created; its pages replaced, those of datasets and
    models no longer in the home removed; nothing else in it is touched).

    Args:
        catalog: the catalog home to show (it is only read).
        out: the site's folder; `out/index.html` is its first page.
        with_drift: compute each task's drift report (it reads the new data and the training data).

    Returns:
        What was written.

    Raises:
        ShoalError: `out` is a file, or cannot be written (the home is only read).
    """
    from shoal.models.registry import model_versions

    catalog.must_exist()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ShoalError(f"the site folder {out} is a file; pass `shoal catalog site` a folder (created when missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        images = _copy_reports(catalog, out)
    except OSError as error:
        raise ShoalError(f"cannot write the site into {out}: {error.strerror or error}; "
                         "pass a writable folder") from error
    environment = _environment()
    sources = _Sources()
    datasets = catalog.list()
    models = model_versions(catalog)
    pages: dict[str, str] = {}
    for info in datasets:
        pages[page_name("dataset", info.name)] = _dataset_page(environment, catalog, info, sources)
    by_model: dict[str, list[ModelVersion]] = {}
    for entry in models:
        by_model.setdefault(entry.name, []).append(entry)
    shown = set()
    for name, entries in by_model.items():
        views = [_model_view(catalog, entry, images) for entry in reversed(entries)]
        shown.update(plot for view in views for plot in view.plots)
        pages[page_name("model", name)] = environment.get_template("model.html").render(
            title=f"model {name}", name=name, views=views)
    drift = drift_views(catalog) if with_drift else []
    pages["index.html"] = environment.get_template("index.html").render(
        title="catalog", home=catalog.home, datasets=datasets, models=by_model, drift=drift, with_drift=with_drift,
        reports=[r for r in images if r not in shown], page_name=page_name)
    pages["sources.html"] = environment.get_template("sources.html").render(
        title="source files", groups=sources.groups)
    try:
        for file, text in pages.items():
            (out / file).write_text(text, encoding="utf-8")
    except OSError as error:
        raise ShoalError(f"cannot write the site into {out}: {error.strerror or error}; "
                         "pass a writable folder") from error
    # A dataset or model gone from the home since the last build leaves no page behind (only our own pages go).
    for stale in [*out.glob("dataset-*.html"), *out.glob("model-*.html")]:
        if stale.name not in pages:
            stale.unlink()
    log.info("site of %s: %d pages in %s", catalog.home, len(pages), out)
    return SiteReport(out=out, index=out / "index.html", pages=len(pages), datasets=len(datasets),
                      models=len(by_model), images=len(images))


def _copy_reports(catalog: Catalog, out: Path) -> list[str]:
    """Copy `HOME/reports/*.png` to `out/reports/`; their names, sorted."""
    found = sorted(Path(catalog.local, "reports").glob("*.png")) if Path(catalog.local, "reports").is_dir() else []
    if found:
        (out / "reports").mkdir(exist_ok=True)
    for path in found:
        shutil.copyfile(path, out / "reports" / path.name)
    return [path.name for path in found]


def _dataset_page(environment: Any, catalog: Catalog, info: Any, sources: _Sources) -> str:
    from shoal.lineage import version_label

    history = catalog.history(info.name)
    facts = catalog.describe(info.name)
    if isinstance(facts.get("variables"), dict):  # "float32 ('time', 'lat')" as people write it: "float32 (time, lat)"
        facts["variables"] = {key: str(value).replace("'", "").replace(",)", ")")
                              for key, value in facts["variables"].items()}
    stored = stored_statistics(catalog, info.name)
    statistics = (table_statistics(catalog, info.name, int(history[0].version), stored) if info.kind == "table"
                  else array_statistics(catalog, info.name, stored))
    graph = lineage_graph(catalog.lineage_tree(info.name), sources)
    versions = []
    for entry in history:
        lineage = entry.lineage
        files = lineage.sources if lineage is not None else ()
        href = sources.add(info.name, entry.version, [asdict(f) for f in files]) if files else ""
        versions.append({"version": entry.version, "created_at": entry.created_at,
                         "snapshot": getattr(entry, "snapshot", ""),
                         "what": (lineage.message if lineage and lineage.message else getattr(entry, "operation", "")),
                         "size": "" if lineage is None else (_rows(lineage.rows) if lineage.rows is not None
                                                             else _shape(lineage.shape)),
                         "inputs": [] if lineage is None else [(i.name, version_label(catalog, i))
                                                               for i in lineage.inputs],
                         "files": len(files), "sources_href": href})
    return environment.get_template("dataset.html").render(
        title=info.name, info=info, facts=facts, versions=versions, statistics=statistics, graph=graph,
        page_name=page_name)


# -- serving ------------------------------------------------------------------------------------


def site_server(folder: Path, *, port: int = 0) -> ThreadingHTTPServer:
    """A read-only HTTP server of `folder` on 127.0.0.1 (port 0: a free one); call `serve_forever()` on it.

    Only GET and HEAD are answered (http.server's static handler); nothing is written.
    """
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
            log.debug("site: " + format, *args)

    return ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Handler, directory=str(folder)))


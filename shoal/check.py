"""`shoal catalog check [--repair]`: every dataset opens, its lineage holds, and no stray file is left.

For every folder under `tables/` and `arrays/`:
- a folder without a commit is what an interrupted first write left (`--repair` removes it);
- each version's lineage must parse, and the input versions it names must exist;
- files that no commit references (a write killed before its commit) are listed: for a
  table, Delta's own vacuum in dry-run (`full=True`, every version kept: never a committed
  version's file); for an array, Icechunk's garbage collection in dry-run. `--repair`
  deletes exactly those (the table's files one by one, so Delta's log is not touched; the
  array's by Icechunk's garbage collection).

On a local home each dataset is checked under its lock, which every writer holds from its
first file to its commit: a file no commit references is never a write in progress. A
dataset whose lock is held is skipped with a note. Object stores have no lock: there only
files older than `grace` seconds count as stray.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shoal import arrays, tables
from shoal.errors import CatalogError
from shoal.lineage import LINEAGE_KEY, InputVersion, Lineage
from shoal.settings import is_url

if TYPE_CHECKING:
    from shoal.catalog import Catalog, Kind

GRACE = 3600.0  # seconds: on object storage, younger unreferenced files may belong to a write in progress


@dataclass
class Report:
    """What `check` found: one line per finding, and notes that are not findings."""

    findings: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Nothing is left to fix."""
        return not self.findings


def check(catalog: Catalog, *, repair: bool = False, grace: float = GRACE) -> Report:
    """Check every dataset of `catalog`; with `repair`, remove what interrupted writes left.

    Args:
        catalog: the catalog.
        repair: delete the files no commit references (never a committed version's).
        grace: on object storage, unreferenced files younger than this many seconds are left alone.
    """
    report = Report()
    versions = _Versions(catalog)
    for kind in ("table", "array"):
        for name in catalog._folders(kind):  # noqa: SLF001 (the catalog's own listing, leftovers included)
            where = f"{kind}s/{name}"
            with catalog.lock_if_free(name) as free:
                if free:
                    _check_one(catalog, kind, name, where, versions, report, repair=repair, grace=grace)
                else:
                    report.notes.append(f"{where}: a write is in progress (its lock is held); not checked, rerun later")
    return report


def _check_one(catalog: Catalog, kind: Kind, name: str, where: str, versions: _Versions, report: Report, *,
               repair: bool, grace: float) -> None:
    uri = catalog.uri(kind, name)
    if not catalog._committed(kind, name):  # noqa: SLF001
        line = f"{where}: an interrupted first write left files and no commit"
        if repair:
            (tables if kind == "table" else arrays).clear_leftover(uri)
            report.repaired.append(f"{line}; removed")
        else:
            report.findings.append(f"{line}; `shoal catalog check --repair` removes them")
        return
    for number, raw in _raw_lineages(kind, uri):
        report.findings += [f"{where}: version {number}: {problem}" for problem in versions.problems(raw)]
    stray = _stray_table_files(uri, grace) if kind == "table" else _stray_array_objects(uri, grace, repair=False)
    if not stray:
        return
    line = f"{where}: {stray} that no commit references (an interrupted write)"
    if not repair:
        report.findings.append(f"{line}; `shoal catalog check --repair` removes them")
        return
    if kind == "table":
        _delete_table_files(uri, grace)
    else:
        _stray_array_objects(uri, grace, repair=True)
    report.repaired.append(f"{line}; removed")


def _raw_lineages(kind: Kind, uri: str) -> Iterator[tuple[int, str | dict | None]]:
    """(version, the lineage as stored) of every version, newest first."""
    if kind == "table":
        from deltalake import DeltaTable

        for entry in DeltaTable(uri).history():
            yield entry["version"], entry.get(LINEAGE_KEY)
        return
    import icechunk

    snapshots = list(icechunk.Repository.open(arrays._storage(uri)).ancestry(branch="main"))[:-1]  # noqa: SLF001
    for number, snap in zip(range(len(snapshots) - 1, -1, -1), snapshots, strict=True):
        yield number, snap.metadata.get(LINEAGE_KEY)


class _Versions:
    """The versions of every dataset, read once, to check that lineage inputs exist."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._known: dict[str, set[str]] = {}

    def problems(self, raw: str | dict | None) -> list[str]:
        """What is wrong with one stored lineage: it does not parse, or an input version is missing."""
        if raw is None:  # a commit shoal did not make (another Delta writer): nothing to check
            return []
        try:
            lineage = Lineage.from_dict(json.loads(raw) if isinstance(raw, str) else raw)
        except (ValueError, TypeError, KeyError) as error:
            return [f"its lineage does not parse ({type(error).__name__}: {error})"]
        return [f"its input {item.name} version {item.version} does not exist (deleted, or vacuumed)"
                for item in lineage.inputs if not self._exists(item)]

    def _exists(self, item: InputVersion) -> bool:
        if item.name not in self._known:
            try:
                history = self.catalog.history(item.name)
            except CatalogError:
                history = []
            self._known[item.name] = {str(v.version) for v in history} | {getattr(v, "snapshot", "") for v in history}
        return str(item.version) in self._known[item.name]


def _unreferenced(uri: str, grace: float) -> list[str]:
    """The table's files (relative paths) that no version references; on object storage, only older than `grace`."""
    from deltalake import DeltaTable

    table = DeltaTable(uri)
    versions = [entry["version"] for entry in table.history()]
    paths = table.vacuum(retention_hours=0, dry_run=True, enforce_retention_duration=False, full=True,
                         keep_versions=versions)
    if not is_url(uri):
        return paths
    import pyarrow.fs as pafs

    filesystem, root = pafs.FileSystem.from_uri(uri)
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=grace)
    return [path for path in paths if filesystem.get_file_info(f"{root}/{path}").mtime < cutoff]


def _stray_table_files(uri: str, grace: float) -> str:
    count = len(_unreferenced(uri, grace))
    return f"{count} file(s)" if count else ""


def _delete_table_files(uri: str, grace: float) -> None:
    """Delete the unreferenced files one by one (Delta's own vacuum would also commit to the log)."""
    import pyarrow.fs as pafs

    filesystem, root = pafs.FileSystem.from_uri(uri if is_url(uri) else f"file://{uri}")
    folders = set()
    for path in _unreferenced(uri, grace):
        filesystem.delete_file(f"{root}/{path}")
        if "/" in path:
            folders.add(path.split("/")[0])
    for folder in folders:  # the emptied folders of streamed writes (files-<uuid>/)
        selector = pafs.FileSelector(f"{root}/{folder}", recursive=True, allow_not_found=True)
        if not any(info.type == pafs.FileType.File for info in filesystem.get_file_info(selector)):
            filesystem.delete_dir(f"{root}/{folder}")


def _stray_array_objects(uri: str, grace: float, *, repair: bool) -> str:
    """Icechunk's garbage collection of objects no snapshot reaches (dry run unless `repair`); what it found."""
    import icechunk

    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=grace if is_url(uri) else 0)
    repo = icechunk.Repository.open(arrays._storage(uri))  # noqa: SLF001
    summary = repo.garbage_collect(cutoff, dry_run=not repair)
    count = (summary.chunks_deleted + summary.manifests_deleted + summary.snapshots_deleted
             + summary.transaction_logs_deleted + summary.attributes_deleted)
    return f"{count} object(s) ({summary.bytes_deleted:,} bytes)" if count else ""

"""Lineage records shoal's own git commit, and never that of a repository shoal merely sits in."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from shoal.lineage import git_sha, git_sha_of

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")


def _git(repo: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false", *args]
    return subprocess.run(command, cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def _checkout(root: Path) -> Path:
    """A git repository whose `pkg/lineage.py` is committed; returns that file."""
    source = root / "pkg" / "lineage.py"
    source.parent.mkdir(parents=True)
    source.write_text("# shoal\n")
    _git(root, "init", "--quiet")
    _git(root, "add", ".")
    _git(root, "commit", "--quiet", "-m", "first")
    return source


def test_a_clean_checkout_records_its_head(tmp_path: Path) -> None:
    source = _checkout(tmp_path)
    assert git_sha_of(source) == _git(tmp_path, "rev-parse", "HEAD")


def test_a_checkout_with_changes_records_its_head_marked_dirty(tmp_path: Path) -> None:
    source = _checkout(tmp_path)
    source.write_text("# edited\n")
    assert git_sha_of(source) == _git(tmp_path, "rev-parse", "HEAD") + "-dirty"
    _git(tmp_path, "checkout", "--", ".")
    (tmp_path / "new_module.py").write_text("")  # an untracked file changes what runs, too
    assert git_sha_of(source) == _git(tmp_path, "rev-parse", "HEAD") + "-dirty"


def test_an_installed_copy_inside_another_users_repository_records_no_sha(tmp_path: Path) -> None:
    project = tmp_path / "their_project"
    project.mkdir()
    (project / "app.py").write_text("print('theirs')\n")
    _git(project, "init", "--quiet")
    _git(project, "add", "app.py")
    _git(project, "commit", "--quiet", "-m", "their commit")
    installed = project / ".venv" / "site-packages" / "shoal" / "lineage.py"  # not tracked by their repository
    installed.parent.mkdir(parents=True)
    installed.write_text("# shoal\n")
    assert git_sha_of(installed) is None


def test_a_copy_outside_any_repository_records_no_sha(tmp_path: Path) -> None:
    loose = tmp_path / "site-packages" / "shoal" / "lineage.py"
    loose.parent.mkdir(parents=True)
    loose.write_text("# shoal\n")
    assert git_sha_of(loose) is None


def test_git_sha_asks_about_shoals_own_source_file() -> None:
    import shoal.lineage

    git_sha.cache_clear()
    assert git_sha() == git_sha_of(Path(shoal.lineage.__file__))

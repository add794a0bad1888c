"""The lock file pins every dependency shoal declares, inside the declared ranges, and the set-up installed it."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parents[1]


def _locked() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pins = [line.split("==") for line in lines if line and not line.startswith("#")]
    assert all(len(pin) == 2 for pin in pins), "constraints.txt: every line is NAME==VERSION"
    return {canonicalize_name(name): version for name, version in pins}


def _declared(extras: tuple[str, ...] = ("test", "bench")) -> list[Requirement]:
    """The dependencies and those of `extras`."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    chosen = [spec for extra in extras for spec in project["optional-dependencies"][extra]]
    return [Requirement(spec) for spec in [*project["dependencies"], *chosen]]


@pytest.mark.parametrize("requirement", _declared(), ids=str)
def test_the_lock_pins_each_declared_dependency_inside_its_range(requirement: Requirement) -> None:
    locked = _locked().get(canonicalize_name(requirement.name))
    assert locked, f"constraints.txt does not pin {requirement.name}: run `make lock`"
    assert requirement.specifier.contains(locked, prereleases=True), (
        f"constraints.txt pins {requirement.name}=={locked}, outside pyproject.toml's {requirement}: run `make lock`")


@pytest.mark.parametrize("requirement", _declared(("test",)), ids=str)  # what `make test` installs
def test_the_set_up_installed_the_locked_version(requirement: Requirement) -> None:
    """`make` installs with `-c constraints.txt` (the bench extra only with `make bench`)."""
    installed = importlib.metadata.version(requirement.name).split("+")[0]
    assert installed == _locked()[canonicalize_name(requirement.name)], (
        f"{requirement.name} {installed} is installed, the lock says {_locked()[canonicalize_name(requirement.name)]}: "
        "`make setup` installs from constraints.txt")

"""The README's consumer recipes, run as written against a home the ENSO pipeline built: they cannot go stale."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"


def _block(marker: str) -> str:
    """The Python block that follows `<!-- marker ... -->` in the README."""
    found = re.search(rf"<!-- {re.escape(marker)}[^>]*-->\n```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert found, f"README has no block marked {marker!r}"
    return found.group(1)


@pytest.fixture(scope="module")
def built(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A home where `pipeline(task_name="enso")` ingested, built features, trained and predicted."""
    from shoal.catalog import Catalog
    from shoal.datasets.cobe_sst_sample import write_sample
    from shoal.flows.pipelines import pipeline
    from tests.test_flows import QUICK

    root = tmp_path_factory.mktemp("readme")
    write_sample(root / "sst", start="1985-01", end="1990-06")
    pipeline(task_name="enso", paths=[root / "sst"], home=str(root / "home"), settings=QUICK)
    return Catalog(root / "home").home


def test_the_consumer_recipes_run_as_written(built: str) -> None:
    namespace: dict = {}
    exec(compile(_block("recipes").replace("<home>", built), "README.md recipes", "exec"), namespace)  # noqa: S102
    assert namespace["ds"].sst.sizes["time"] == 66 and len(namespace["history"]) == 1


def test_the_duckdb_recipe_runs_where_its_delta_extension_can_be_loaded(built: str) -> None:
    duckdb = pytest.importorskip("duckdb")
    try:
        duckdb.sql("INSTALL delta; LOAD delta")
    except duckdb.Error as error:
        pytest.skip(f"DuckDB's delta extension is not installed and cannot be downloaded here: {error}".splitlines()[0])
    namespace: dict = {}
    exec(compile(_block("recipe: duckdb").replace("<home>", built), "README.md duckdb", "exec"), namespace)  # noqa: S102

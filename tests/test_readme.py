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


def test_the_duckdb_recipe_reads_the_table_as_polars_does(built: str) -> None:
    """Offline: the test extra installs DuckDB's delta extension as a wheel (duckdb-ext-delta)."""
    import importlib.util

    import duckdb
    import polars as pl

    (folder,) = importlib.util.find_spec("duckdb_ext").submodule_search_locations
    duckdb.sql(f"SET extension_directory = '{Path(folder, 'extensions')}'")
    namespace: dict = {}
    exec(compile(_block("recipe: duckdb").replace("<home>", built), "README.md duckdb", "exec"), namespace)  # noqa: S102
    expected = pl.read_delta(f"{built}/tables/nino34").group_by("phase").len().rows()
    assert sorted(namespace["counts"], key=str) == sorted(expected, key=str) and sum(n for _, n in expected) > 2000

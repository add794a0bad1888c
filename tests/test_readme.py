"""The README cannot go stale: its consumer recipes run as written against a home the ENSO pipeline
built, and its measured numbers are only those `bench/run.py` generates from BENCHMARKS.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.run import GENERATED, REPORT, generated_readme

README = Path(__file__).parents[1] / "README.md"

_TIME = r"(?:µs|ms|s|min|minutes?|h|hours?)\b"
# How a measured number reads in prose. Typed, it drifts from BENCHMARKS.md: it belongs in a
# generated block. Facts of formats and settings (360 x 180, 16 kHz, default 2 s) do not match.
MEASURED = {
    "throughput": r"\d[\d,.]*\s?(?:[kMG] )?(?:[a-z]+|[KMG]i?B|GFLOP)/s\b",
    "speed ratio": r"\b\d+(?:\.\d+)?x\b|\d+(?:\.\d+)? times (?:faster|slower)",
    "skill": r"(?:accuracy|AUC|correlation|RMSE|loss|scores?)\b.{0,20}?\d\.\d{2,}"
             r"|\d\.\d{2,} (?:\w+ )?(?:accuracy|AUC|correlation|RMSE|loss)\b"
             r"|\d+(?:\.\d+)? ?%(?: \w+)? (?:accuracy|AUC)",
    "timing": rf"(?i:~|about |took |takes |costs? |in )\d[\d,.]*(?:-\d[\d,.]*)? ?{_TIME}"
              rf"|\d[\d,.]*(?:-\d[\d,.]*)? ?(?:µs|ms)\b"
              rf"|\d[\d,.]* ?{_TIME} (?:against|instead of|vs|over|per|to start|on \d+ cores)",
    "relative change": r"[+-]\d+(?:\.\d+)? ?%|\d+(?:\.\d+)? ?% (?:faster|slower|smaller|larger|more|less)",
    "peak memory": r"RSS\b.{0,25}?\d[\d,.]* ?[KMG]i?B|\d[\d,.]* ?[KMG]i?B (?:RSS|instead of|against)",
}
# Numbers that read like measurements but are not ours, with the reason each may stay.
ALLOWED = {
    "whose published result is 87.7 % validation accuracy": "the Speech analysis' published result, labelled so",
    "The paper reports 78.25 % test accuracy for TabNet-S and 78.84 % for TabNet-M": "TabNet's published numbers, labelled so",
    "TabNet comes within 0.01 AUC of gradient boosting": "the learnability test's threshold, not a measurement",
}


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


def _measured(text: str) -> list[str]:
    """Every phrase of `text` that reads as a measured number, whitespace collapsed (a phrase may wrap)."""
    text = " ".join(text.split())
    return [m.group(0) for pattern in MEASURED.values() for m in re.finditer(pattern, text)]


def test_the_generated_blocks_are_what_bench_run_makes_of_benchmarks_md() -> None:
    readme = README.read_text()
    opened = re.findall(r"^<!-- generated: bench ", readme, re.MULTILINE)
    assert opened and len(GENERATED.findall(readme)) == len(opened), "a generated block without its end marker"
    assert generated_readme(readme, REPORT.read_text()) == readme, (
        "a generated block of README.md was edited by hand or is stale: bench/run.py's generated_readme writes them"
    )


def test_the_readme_types_no_measured_number() -> None:
    prose = " ".join(GENERATED.sub("", README.read_text()).split())
    for phrase in ALLOWED:
        assert phrase in prose, f"allowed phrase no longer in README.md, drop it from ALLOWED: {phrase!r}"
        prose = prose.replace(phrase, "")
    assert _measured(prose) == [], "measured numbers belong in BENCHMARKS.md and a generated block"


@pytest.mark.parametrize("typed", [
    "TabNet reaches 0.83 AUC", "runs at 30,127 rows/s", "ours 33.4 M rows/s", "~15x slower than cfgrib",
    "took 3.8 s against\n4.1 s", "a step takes ~31 s", "correlation 0.971 vs 0.956", "87.7 % validation accuracy",
    "+72% over the plain ingest", "~15% faster", "Peak RSS is flat: ~485 MB", "in 0.95 s", "370-550 µs a file",
    "11 minutes on 2 cores", "About 3 minutes in all",
])
def test_a_typed_measurement_is_caught(typed: str) -> None:
    assert _measured(typed)


@pytest.mark.parametrize("fact", [
    "a regular 1° 360 x 180 grid", "stored as 16 kHz mono int16", "11,000,000 rows", "(default 2 s; the published clips last 1 s)",
    "conv 5x5 pad 2", "1 s, 2 s, 4 s", "253 KB each: 400 MB for the whole series", "a 5 MB gzip of 1 GB of zeros",
    "10 s to answer", "< 10 % valid", "a UCI line is ~700 bytes", "jittered by 0.1 x the column's std", "(`0.753 [0.733, 0.773]`)",
])
def test_a_fact_of_a_format_or_setting_is_not(fact: str) -> None:
    assert _measured(fact) == []

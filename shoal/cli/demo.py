"""`shoal demo`: the whole pipeline of every task on the embedded sample data."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import typer

from shoal.cli.catalog import catalog_lineage, catalog_ls
from shoal.cli.output import _console, _report
from shoal.cli.pipeline import _run
from shoal.cli.root import _catalog, _State, app

DEMO_SST = ("1960-01", "2020-12")
DEMO_ENSO = {"coarsen": 8, "epochs": 3, "max_batches": 40, "leads": "1,3,6"}  # ~1.5 min on 2 CPU cores
DEMO_SPEECH = {"epochs": 3, "max_batches": 8, "batch_size": 32}  # ~1.5 min on 2 CPU cores
DEMO_HIGGS_ROWS, DEMO_HIGGS = 200_000, {"epochs": 4, "batch_size": 2048}  # ~1 min on 2 CPU cores


def _pipeline(task_name: str, paths: list[str | Path], settings: dict[str, Any]) -> None:
    if _run(task_name, paths, settings)["failures"]:  # not on the sample data: the demo stops there
        raise typer.Exit(1)


@app.command()
def demo() -> None:
    """Run the whole pipeline on the embedded sample data (a Prefect flow per step)."""
    import polars as pl

    from shoal.datasets.cobe_sst_sample import write_sample
    from shoal.datasets.higgs_sample import REAL_TEST_ROWS
    from shoal.datasets.higgs_sample import write_sample as write_higgs_sample
    from shoal.datasets.speech_commands_sample import REAL_TEST_CLIPS
    from shoal.datasets.speech_commands_sample import write_sample as write_speech_sample
    from shoal.flows import ingest_oni

    catalog = _catalog()
    console = _console()
    console.rule("1. ingest the real Niño 3.4 table through the Prefect flow 'ingest-oni'")
    _report(ingest_oni(home=catalog.home))
    console.rule("2. read it back without shoal: polars.read_delta")
    path = catalog.uri("table", "nino34")
    console.print(f'pl.read_delta("{path}")')
    console.print(pl.read_delta(path).filter(pl.col("phase").is_not_null()).tail(4))
    start, end = DEMO_SST
    samples = Path(catalog.local, "samples", "cobe_sst")
    console.rule(f"3. ENSO: {start} .. {end} of sample COBE-SST GRIB -> features -> ConvLSTM -> predictions")
    files = write_sample(samples, start=start, end=end)
    console.print(f"wrote {len(files)} COBE-format GRIB files to {samples} (Niño 3.4 box = the real series)")
    console.print("its test months are the REAL Niño 3.4 index (the sample's SST follows it): ~16 years of "
                  "evidence, scored in moving 12-month blocks", markup=False, highlight=False)
    _pipeline("enso", [samples], DEMO_ENSO)
    clips = Path(catalog.local, "samples", "speech_commands")
    console.rule("4. Speech: 300 real Speech Commands clips + augmentations -> spectrograms -> CNN -> predictions")
    write_speech_sample(clips)
    console.print(f"wrote the 300 real clips and augmented copies of the training clips to {clips} (real users "
                  "ingest the full archive: `shoal fetch speech`); its test set is the "
                  f"{REAL_TEST_CLIPS} real clips that testing_list.txt names", markup=False, highlight=False)
    _pipeline("speech", [clips], DEMO_SPEECH)
    console.rule(f"5. HIGGS: {DEMO_HIGGS_ROWS:,} rows bootstrapped from real ones -> standardized features -> TabNet")
    table = write_higgs_sample(Path(catalog.local, "samples", "higgs"), rows=DEMO_HIGGS_ROWS)
    console.print(f"wrote {table}: a smoothed bootstrap of 7,500 real HIGGS rows (real users ingest the UCI file: "
                  f"`shoal fetch higgs`); its {DEMO_HIGGS_ROWS // 4:,} test rows are jittered copies of "
                  f"{REAL_TEST_ROWS:,} real ones: the evidence of {REAL_TEST_ROWS:,} rows, so the intervals over "
                  "the copies are narrower than the truth", markup=False, highlight=False)
    _pipeline("higgs", [table], DEMO_HIGGS)
    console.rule(f"6. the catalog at {catalog.home}")
    catalog_ls()
    console.rule("7. lineage of the predictions, down to the source files")
    catalog_lineage("enso_predictions")
    console.rule("next steps")
    console.print(_next_steps(_State.home or catalog.home), markup=False, highlight=False)


def _next_steps(home: str) -> str:
    """Where the demo left its work and three commands to try on it, `home` as the user gave it."""
    shown = shlex.quote(home)
    opening = (f"import shoal; f = shoal.open_features(\"higgs\", home={json.dumps(home)}); "
               "print({name: a.shape for name, a in f.arrays(\"train\").items()})")
    return "\n".join([
        f"the demo's home: {home}; try, in the environment shoal is installed in:",
        f"  shoal catalog list --home {shown}",
        f"  shoal catalog lineage enso_predictions --home {shown}",
        f"  python -c '{opening}'" if "'" not in opening else f"  python -c {shlex.quote(opening)}",
        f"plots: {Path(home, 'reports')}/*.png",
    ])

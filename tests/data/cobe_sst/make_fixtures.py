"""Make the COBE-SST GRIB fixtures (deterministic): python tests/data/cobe_sst/make_fixtures.py

good/      sst198201..03.grb: COBE-format sample months (10-bit packing keeps them ~50 KB)
revised/   sst198202.grb: the same month from another seed (an upstream revision)
units/     sst198204.grb in Kelvin, sst198205.grb scanned south to north,
           sst198206.grb in GDAL-shifted °C (°C - 273.15)
bad/       one problem per month (see PROBLEMS); three are real third-party files copied
           byte for byte from ../shared/data/grib (see README.md)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from shoal.datasets.cobe_sst_sample import months_between, sample_fields, write_grib

HERE = Path(__file__).parent
SHARED = HERE.parents[3] / "shared" / "data" / "grib"
BITS = 10
PROBLEMS = {
    "sst199001.grb": "not GRIB: a text file",
    "sst199002.grb": "truncated message: ecmwf_cfgrib_era5-levels-corrupted.grib (real)",
    "sst199003.grb": "WMO bulletin header before the message: scitools_iris_bulletin_40bytes.grib (real)",
    "sst199004.grb": "another grid: regular 2°, 180 x 90",
    "sst199005.grb": "another parameter: table 128 parameter 167 (2t)",
    "sst199006.grb": "GRIB date 1990-07 in a file named for 1990-06",
    "sst199007.grb": "values 300..330: no plausible SST unit",
    "sst199008.grb": "two messages in one file",
}


def main() -> None:
    months = months_between("1982-01", "1982-06")
    fields = sample_fields(months, seed=0)
    for folder in ("good", "revised", "units", "bad"):
        (HERE / folder).mkdir(exist_ok=True)
    for month, field in zip(months[:3], fields[:3], strict=True):
        write_grib(HERE / "good" / f"sst{str(month).replace('-', '')}.grb", field, month, bits=BITS)
    write_grib(HERE / "revised" / "sst198202.grb", sample_fields(months[1:2], seed=1)[0], months[1], bits=BITS)
    write_grib(HERE / "units" / "sst198204.grb", fields[3], months[3], add=273.15, bits=BITS)
    write_grib(HERE / "units" / "sst198205.grb", fields[4], months[4], north_to_south=False, bits=BITS)
    write_grib(HERE / "units" / "sst198206.grb", fields[5], months[5], add=-273.15, bits=BITS)

    bad = HERE / "bad"
    (bad / "sst199001.grb").write_text("this is not a GRIB file\n")
    shutil.copyfile(SHARED / "ecmwf_cfgrib_era5-levels-corrupted.grib", bad / "sst199002.grb")
    shutil.copyfile(SHARED / "scitools_iris_bulletin_40bytes.grib", bad / "sst199003.grb")
    coarse = np.full((90, 180), 20.0)
    write_grib(bad / "sst199004.grb", coarse, np.datetime64("1990-04"), first_lat=89.0, first_lon=1.0, increment=2.0, bits=4)
    constant = np.full((180, 360), 15.0)
    write_grib(bad / "sst199005.grb", constant, np.datetime64("1990-05"), indicator_of_parameter=167, bits=4)
    write_grib(bad / "sst199006.grb", constant, np.datetime64("1990-07"), bits=4)
    write_grib(bad / "sst199007.grb", np.linspace(300, 330, 180 * 360).reshape(180, 360), np.datetime64("1990-07"), bits=4)
    two = write_grib(bad / "sst199008.grb", constant, np.datetime64("1990-08"), bits=4).read_bytes()
    (bad / "sst199008.grb").write_bytes(two + two)


if __name__ == "__main__":
    main()

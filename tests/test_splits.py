"""Split rules (`shoal.splits`): the random rule's hash is uniform, seeded and by item; records round-trip."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from shoal.splits import RandomSplitSettings, SplitRecord, codes_by_bounds, random_codes, text_keys, unit_hash


def test_the_hash_of_a_key_is_uniform_on_the_unit_interval_and_differs_by_seed() -> None:
    keys = np.arange(200_000)
    values = unit_hash(keys, 0)
    assert values.min() >= 0.0 and values.max() < 1.0
    histogram = np.histogram(values, bins=10, range=(0, 1))[0] / len(keys)
    np.testing.assert_allclose(histogram, 0.1, atol=0.003)  # 10 sigma of a binomial share is ~0.007
    assert np.corrcoef(values, unit_hash(keys, 1))[0, 1] == pytest.approx(0.0, abs=0.01)
    assert np.array_equal(values, unit_hash(keys, 0))


def test_random_codes_take_the_fractions_and_each_item_is_split_alone() -> None:
    keys = np.arange(100_000)
    codes = random_codes(keys, seed=3, valid_fraction=0.2, test_fraction=0.1)
    shares = np.bincount(codes, minlength=3) / len(keys)
    np.testing.assert_allclose(shares, [0.7, 0.2, 0.1], atol=0.01)
    part = random_codes(keys[5_000:6_000], seed=3, valid_fraction=0.2, test_fraction=0.1)
    assert np.array_equal(part, codes[5_000:6_000])  # what else is in the table changes nothing


def test_text_keys_are_stable_numbers_of_names() -> None:
    keys = text_keys(["0a7c2a8d", "0a7c2a8d", "c9b653a0"])
    assert keys.dtype == np.uint64 and keys[0] == keys[1] != keys[2]
    assert int(keys[0]) == 0xC26E63375C24D28E  # blake2b: the same on every machine and Python


def test_bounds_split_positions_in_order() -> None:
    months = np.arange("1989-11", "1990-03", dtype="datetime64[M]")
    codes = codes_by_bounds(months, (np.datetime64("1990-01", "M"), np.datetime64("1990-02", "M")))
    assert codes.tolist() == [0, 0, 1, 2]


def test_a_record_round_trips_and_reads_as_a_line() -> None:
    record = SplitRecord.of("random", {"seed": 1}, np.array([0, 0, 1, 2, 0], dtype=np.int8))
    assert record.counts == {"train": 3, "valid": 1, "test": 1}
    assert SplitRecord.from_dict(record.to_dict()) == record
    assert str(record) == "random split (seed 1): 3 train, 1 valid, 1 test"


def test_fractions_that_leave_no_training_items_are_refused_naming_both_options() -> None:
    with pytest.raises(ValidationError, match="--valid-fraction 0.5 and --test-fraction 0.5 leave no training"):
        RandomSplitSettings(valid_fraction=0.5, test_fraction=0.5)

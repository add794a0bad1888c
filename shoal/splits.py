"""Splits: which items of a feature version are train, valid and test.

A feature version owns its split; ingest records only facts of the source (row numbers,
the published split lists, dates). Each task's feature settings name a rule:

- `official`: the source's published split (HIGGS: the paper's held-out tail of the file;
  Speech Commands: the authors' list files), applied to what ingest recorded.
- `random`: seeded and by item: each item's key (a row id, a clip id) is hashed with the
  seed to a number in [0, 1), and the last `test_fraction` of that interval is test, the
  `valid_fraction` before it valid. An item's split depends on nothing but its key and the
  seed: data appended later never moves an item from one split to another, and a table of
  any size is split while it streams, batch by batch.
- `by_time`: boundaries in time (ENSO: train before `valid_start`, test from `test_start`).

The feature version stores every item's split code (0 train, 1 valid, 2 test) with its
data, and a `SplitRecord` (rule, parameters, counts) in its lineage; `open_features`
reports the record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, model_validator

SPLITS = ("train", "valid", "test")  # split codes 0, 1, 2


@dataclass(frozen=True)
class SplitRecord:
    """How a feature version was split, and how many items fell in each split.

    Attributes:
        rule: "official", "random" or "by_time".
        parameters: what the rule was given (seed and fractions, boundaries, the source's sizes).
        counts: items per split name.
    """

    rule: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    counts: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, rule: str, parameters: Mapping[str, Any], codes: np.ndarray) -> SplitRecord:
        """The record of split codes (0 train, 1 valid, 2 test) made by `rule`."""
        return cls(rule, dict(parameters), counts(codes))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, as stored in the feature version's lineage."""
        return {"rule": self.rule, "parameters": dict(self.parameters), "counts": dict(self.counts)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SplitRecord:
        """The record `to_dict` stored."""
        return cls(data["rule"], dict(data.get("parameters", {})),
                   {name: int(count) for name, count in data.get("counts", {}).items()})

    def __str__(self) -> str:
        given = ", ".join(f"{key} {value}" for key, value in self.parameters.items())
        sizes = ", ".join(f"{self.counts.get(name, 0)} {name}" for name in SPLITS)
        return f"{self.rule} split{f' ({given})' if given else ''}: {sizes}"


def counts(codes: np.ndarray) -> dict[str, int]:
    """Items per split name of split codes."""
    return dict(zip(SPLITS, (int(n) for n in np.bincount(np.asarray(codes, dtype=np.int64), minlength=3)[:3]),
                    strict=True))


def codes_by_bounds(positions: np.ndarray, bounds: tuple[Any, Any]) -> np.ndarray:
    """Split codes of positions (row numbers, months): train below bounds[0], valid below bounds[1], else test."""
    return ((positions >= bounds[0]).astype(np.int8) + (positions >= bounds[1]).astype(np.int8))


def _seed_word(seed: int) -> np.uint64:
    return np.uint64(int.from_bytes(hashlib.blake2b(str(seed).encode(), digest_size=8).digest(), "little"))


def unit_hash(keys: np.ndarray, seed: int) -> np.ndarray:
    """A number in [0, 1) per integer key, uniform and independent across keys and seeds (splitmix64's finalizer)."""
    with np.errstate(over="ignore"):
        z = keys.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + _seed_word(seed)  # arithmetic mod 2**64
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """An integer key per text (blake2b), for `random_codes` over clip ids or other names."""
    return np.array([int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
                     for text in texts], dtype=np.uint64)


def random_codes(keys: np.ndarray, *, seed: int, valid_fraction: float, test_fraction: float) -> np.ndarray:
    """Split codes of the `random` rule: the key's hash in [0, 1) against 1 - valid - test and 1 - test."""
    return codes_by_bounds(unit_hash(keys, seed), (1.0 - valid_fraction - test_fraction, 1.0 - test_fraction))


class RandomSplitSettings(BaseModel):
    """The fractions of the `random` rule, for the settings of a task that offers it."""

    valid_fraction: float = Field(0.1, gt=0, lt=1, description="With --split random: the share of items in valid.")
    test_fraction: float = Field(0.1, gt=0, lt=1, description="With --split random: the share of items in test.")

    @model_validator(mode="after")
    def _some_train(self) -> RandomSplitSettings:
        if self.valid_fraction + self.test_fraction >= 1:
            raise ValueError(f"--valid-fraction {self.valid_fraction} and --test-fraction {self.test_fraction} "
                             "leave no training items; their sum must be under 1")
        return self

"""Sliced stand-ins are cached by mask: a recent mask is not sliced again."""

from __future__ import annotations

import numpy as np

from legoc.scoring.standin import StandIn, StandIns, mask_key


def mask(*bits: int) -> dict[str, np.ndarray]:
    return {"fc": np.array(bits, dtype=bool)}


def cache(size: int = 2) -> tuple[StandIns, list]:
    built = []

    def build(kept):
        built.append(mask_key(kept))
        index = {name: np.flatnonzero(m) for name, m in kept.items()}
        return StandIn({k: v.copy() for k, v in kept.items()}, None, {}, index)

    return StandIns(build, size), built


def test_a_mask_that_removes_nothing_has_no_stand_in():
    stand_ins, built = cache()
    assert stand_ins.select(mask(1, 1, 1)) is None and stand_ins.active is None
    assert built == []


def test_a_recent_mask_is_answered_from_the_cache_and_the_oldest_is_dropped():
    stand_ins, built = cache(size=2)
    first = stand_ins.select(mask(1, 0, 1))
    assert stand_ins.select(mask(1, 0, 1)) is first and len(built) == 1
    second = stand_ins.select(mask(0, 0, 1))
    assert stand_ins.select(mask(1, 0, 1)) is first and len(built) == 2
    stand_ins.select(mask(1, 1, 0))  # a third mask: the least recently used (second) goes
    assert stand_ins.select(mask(0, 0, 1)) is not second and len(built) == 4
    assert first.covers(mask(0, 0, 1)) and not first.covers(mask(1, 1, 1))


def test_mask_keys_tell_masks_apart_by_space_bits_and_length():
    assert mask_key(mask(1, 0)) != mask_key(mask(1, 0, 0))
    assert mask_key(mask(1, 0)) != mask_key({"other": np.array([1, 0], dtype=bool)})
    assert mask_key(mask(1, 0)) == mask_key(mask(1, 0))

"""Extent arithmetic: merge, split, subtract."""

import random

from ansible_collections.xms.warm_migration.plugins.module_utils.copy.extents import (
    Extent,
    merge_extents,
    split_extents,
    subtract_extents,
    total_bytes,
)


def covered(extents):
    return {b for e in extents for b in range(e.offset, e.end)}


def test_merge_joins_overlapping_and_touching_and_drops_empty():
    got = merge_extents([Extent(10, 5), Extent(0, 10), Extent(30, 0), Extent(12, 10), Extent(40, 2)])
    assert got == [Extent(0, 22), Extent(40, 2)]


def test_split_cuts_into_bounded_pieces_in_order():
    assert split_extents([Extent(0, 10), Extent(20, 3)], 4) == [
        Extent(0, 4), Extent(4, 4), Extent(8, 2), Extent(20, 3),
    ]  # fmt: skip


def test_subtract_matches_set_arithmetic_on_random_cases():
    rng = random.Random(5)
    for _case in range(300):
        a = [Extent(rng.randrange(100), rng.randrange(1, 20)) for _i in range(rng.randrange(6))]
        b = [Extent(rng.randrange(100), rng.randrange(1, 20)) for _i in range(rng.randrange(6))]
        got = subtract_extents(a, b)
        assert covered(got) == covered(a) - covered(b)
        assert got == merge_extents(got)
        assert total_bytes(got) == len(covered(got))

"""The one temporary-row allocator (``compiler/codegen/rows.py``), on random cut graphs."""

import random

import pytest

from compiler.codegen.rows import allocate, last_uses


def random_pieces(seed: int):
    """A random DAG of 1..60 nodes (each reading up to two earlier ones) cut into pieces."""
    rng = random.Random(seed)
    n = rng.randint(1, 60)
    args = {i: [rng.randrange(i) for _ in range(rng.randint(0, 2))] if i else [] for i in range(n)}
    cuts = sorted(rng.sample(range(1, n), rng.randint(0, min(8, n - 1)))) if n > 1 else []
    bounds = [0, *cuts, n]
    pieces = [list(range(lo, hi)) for lo, hi in zip(bounds, bounds[1:])]
    return pieces, args


@pytest.mark.parametrize("seed", range(200))
def test_rows_never_overlap_and_are_as_few_as_the_most_live_at_once(seed):
    pieces, args = random_pieces(seed)
    where = {i: k for k, piece in enumerate(pieces) for i in piece}
    # the last uses, recomputed plainly: values read in a later piece than theirs
    readers: dict[int, int] = {}
    for i, reads in args.items():
        for a in reads:
            if where[a] < where[i]:
                readers[a] = max(readers.get(a, -1), where[i])
    last = last_uses(pieces, args)
    assert last == readers
    slot, rows = allocate(pieces, last)
    assert set(slot) == set(last)
    span = {v: (where[v], last[v]) for v in last}  # the pieces in which v's row is taken
    for u in last:
        for v in last:
            if u < v and slot[u] == slot[v]:
                (a0, a1), (b0, b1) = span[u], span[v]
                assert a1 < b0 or b1 < a0, (u, v, span[u], span[v])
    most = max((sum(lo <= k <= hi for lo, hi in span.values()) for k in range(len(pieces))),
               default=0)  # fmt: skip
    assert rows == most
    assert all(0 <= s < rows for s in slot.values())

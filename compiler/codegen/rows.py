"""Temporary rows: the one allocator of the rows that carry values between a kernel's pieces.

A kernel cut into pieces (the LLVM tier's chunk functions, Numba's segments) passes a value
computed in one piece and read in a later one through a row of temporaries. Rows are reused once
their value is dead: a row is free for the pieces after the one that reads its value last (that
piece reads it where it needs it, so it must not write the row itself).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def last_uses(pieces: Sequence[Sequence[int]], args: Mapping[int, Sequence[int]]) -> dict[int, int]:
    """For each value computed in one piece and read by a later one: the last piece reading it.
    ``args[i]`` are the values node ``i`` reads."""
    where = {i: k for k, piece in enumerate(pieces) for i in piece}
    last: dict[int, int] = {}
    for k, piece in enumerate(pieces):
        for i in piece:
            for a in args[i]:
                if a in where and where[a] < k:
                    last[a] = k
    return last


def allocate(
    pieces: Sequence[Sequence[int]], last_use: Mapping[int, int]
) -> tuple[dict[int, int], int]:
    """``(row of each value in last_use, number of rows)``: values in ``last_use`` (value -> the
    last piece reading it) get a row when computed, freed after that piece; lowest rows first."""
    frees: dict[int, list[int]] = {}
    for value, k in last_use.items():
        frees.setdefault(k, []).append(value)
    slot: dict[int, int] = {}
    free: list[int] = []
    rows = 0
    for k, piece in enumerate(pieces):
        for i in piece:
            if i in last_use:
                if free:
                    slot[i] = free.pop()
                else:
                    slot[i], rows = rows, rows + 1
        free += sorted((slot[v] for v in frees.get(k, ())), reverse=True)
    return slot, rows

"""Compilation flags shared by generated kernels, their serial twins, and the sums of a kernel
that adds a gradient up over the points (``numba_source.ModuleWriter.blocked_loop``)."""

import types

import numba
from numba import njit

#: No fastmath: nan and inf must survive, as NumPy computes them.
FLAGS = dict(cache=True, error_model="numpy")

#: Points per block of a summing kernel: its rows of terms (8 bytes a point and a sum) stay in
#: the core's caches, and the block's sums cost a few allocations per 10^5 points.
BLOCK = 512

#: Rows of terms, one set per thread a parallel loop may run on.
THREADS = numba.config.NUMBA_NUM_THREADS


@njit(**FLAGS)
def add_lanes(rows, m, sums):  # pragma: no cover - compiled
    """``sums[k] = Σ rows[k, :m]`` in eight lanes (point j in lane j % 8) and a fixed order, so
    LLVM vectorises it without reassociating and the bits are the same at any vector width."""
    for k in range(rows.shape[0]):
        row = rows[k]
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
        j = 0
        while j + 8 <= m:
            s0 += row[j]
            s1 += row[j + 1]
            s2 += row[j + 2]
            s3 += row[j + 3]
            s4 += row[j + 4]
            s5 += row[j + 5]
            s6 += row[j + 6]
            s7 += row[j + 7]
            j += 8
        total = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
        while j < m:
            total += row[j]
            j += 1
        sums[k] = total


@njit(**FLAGS)
def in_order(parts):  # pragma: no cover - compiled
    """The blocks' sums added one after the other (the same order however many threads ran)."""
    total = 0.0
    for p in parts:
        total += p
    return total


def serial(kernel):
    """The same loop compiled without threads, for calls too small to pay for them.

    It is a copy of the parallel kernel's Python function under another name, so Numba's on-disk
    cache keeps the two apart (``prange`` runs as ``range`` without ``parallel=True``).
    """
    py = kernel.py_func
    twin = types.FunctionType(
        py.__code__, py.__globals__, py.__name__ + "_serial", py.__defaults__, py.__closure__
    )
    twin.__qualname__ = py.__qualname__ + "_serial"
    twin.__module__ = py.__module__
    return njit(**FLAGS)(twin)

"""The driver of split kernels: blocks of elements, each run through the entry's segments.

A large entry is compiled as bounded Numba functions (``compiler.codegen.numba_source``), each a
loop over one block. They are called from Python rather than from a jitted entry on purpose: a
jitted caller links every callee's machine code into its own module and optimises it all again,
which brings back the super-linear compile this split exists to avoid. The segments release the
GIL, so a few threads run the blocks in parallel; per block the calls cost a few microseconds
against hundreds of nodes times the block length of arithmetic.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

import numpy as np

Block = Callable[[int, int, np.ndarray], tuple | None]
T = TypeVar("T")

_pool: list[ThreadPoolExecutor] = []
_pool_lock = threading.Lock()


def threads() -> int:
    """Worker threads: Numba's thread count (``NUMBA_NUM_THREADS``, else the CPUs this process
    may use, as Numba counts them), read without importing Numba (the LLVM tier never needs it)."""
    numba = sys.modules.get("numba")
    if numba is not None and hasattr(numba, "config"):
        return max(1, int(numba.config.NUMBA_NUM_THREADS))
    try:
        return max(1, int(os.environ["NUMBA_NUM_THREADS"]))
    except (KeyError, ValueError):
        pass
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _executor() -> ThreadPoolExecutor:
    with _pool_lock:
        if not _pool:
            _pool.append(ThreadPoolExecutor(threads(), thread_name_prefix="symgrad-blocks"))
        return _pool[0]


def in_parallel(count: int, work: Callable[[int, int], T], parallel: bool = True) -> list[T]:
    """``work(first, last)`` over contiguous ranges that cover ``range(count)``, one per thread
    (the calling thread takes the first), in order. ``work`` must release the GIL to gain."""
    workers = min(threads(), count) if parallel else 1
    if workers <= 1:
        return [work(0, count)]
    bounds = [count * k // workers for k in range(workers + 1)]
    others = [_executor().submit(work, lo, hi) for lo, hi in zip(bounds[1:-1], bounds[2:])]
    return [work(bounds[0], bounds[1]), *(future.result() for future in others)]


def over_blocks(
    n_blocks: int,
    temps: tuple[int, ...],
    sums: int,
    work: Callable[[int, int, np.ndarray, np.ndarray], None],
    parallel: bool = True,
) -> np.ndarray:
    """The block runner of every tier: ``work(first, last, temps, partial)`` runs the blocks
    ``[first, last)``, over contiguous ranges, one per thread (``in_parallel``).

    Each thread has its own ``temps`` (of that shape, contents undefined). ``work`` writes block
    ``b``'s ``sums`` partial sums (gradients of scalar inputs) into ``partial[b]``; the totals
    returned are added in block order, so they do not depend on the number of threads.
    """
    partial = np.zeros((n_blocks, sums))

    def part(first: int, last: int) -> None:
        work(first, last, np.empty(temps), partial)

    in_parallel(n_blocks, part, parallel)
    return partial.sum(axis=0)


def run_blocks(
    n: int, block: Block, rows: int, length: int, sums: int, parallel: bool = True
) -> tuple[float, ...]:
    """Call ``block(lo, m, temps)`` for every block ``[lo, lo + m)`` of ``range(n)``: a split
    Numba kernel's driver (``over_blocks``, with ``rows`` x ``length`` temps per thread).

    ``block`` returns the block's ``sums`` partial sums (gradients of scalar inputs).
    """

    def work(first: int, last: int, temps: np.ndarray, partial: np.ndarray) -> None:
        for b in range(first, last):
            block_sums = block(b * length, min(length, n - b * length), temps)
            if sums:
                partial[b] = block_sums

    n_blocks = -(-n // length)
    return tuple(over_blocks(n_blocks, (max(rows, 1), length), sums, work, parallel).tolist())


class EntryModule:
    """What a module of kernel entries looks like to the ``Kernel``: ``m.value_and_grad(n, ...)``
    and ``m.value_and_grad_serial(n, ...)`` call ``m.run(entry, n, ..., parallel=...)``, as a
    generated Numba module's functions would be called. Subclasses set ``_entries`` and ``run``."""

    def run(self, entry: str, n: int, *args, parallel: bool = True) -> None:
        raise NotImplementedError

    def __getattr__(self, name: str):
        entry, serial = (
            (name[: -len("_serial")], True) if name.endswith("_serial") else (name, False)
        )
        if entry in self.__dict__.get("_entries", {}):
            return partial(self.run, entry, parallel=not serial)
        raise AttributeError(name)

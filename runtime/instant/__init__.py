"""The instant tier: any elementwise graph runs at once on a virtual machine compiled only once.

A compiled kernel costs Numba seconds to minutes per expression; here a graph becomes data — an
instruction array per entry (``program``) — and one evaluator, generated from the op registry and
cached on disk like the kernels (``vm_source``), runs them all. ``InstantModule`` answers exactly
like a generated kernel module (same entries, same arguments, same ``USED``/``SAVED``/...), so the
``Kernel`` calls either tier the same way and a ``vjp``'s residuals from one feed the other.
"""

from __future__ import annotations

import threading
from types import ModuleType

import numpy as np

from compiler.codegen.entries import plan
from compiler.passes.adjoint import AdjointGraph
from runtime import cache
from runtime.blocks import EntryModule, in_parallel
from runtime.instant import vm_source
from runtime.instant.program import Program, compile_program

__all__ = ["InstantModule", "machine"]

_machine: list[ModuleType] = []
_machine_lock = threading.Lock()


def machine() -> ModuleType:
    """The virtual machine's module, loaded (and on first use anywhere, compiled) once."""
    with _machine_lock:
        if not _machine:
            key = cache.cache_key("instant-vm", vm_source.registry_key())
            module = cache.load_module(key, vm_source.generate, prefix="vm")
            _warm(module)
            _machine.append(module)
        return _machine[0]


def _warm(module: ModuleType) -> None:
    """Compile the machine (or load it from Numba's cache) now, on an empty program.

    Done before any background compile starts: Numba compiles under one global lock, and the
    instant tier must never wait for a kernel being compiled behind it.
    """
    code = np.zeros((0, module.WIDTH), dtype=np.int64)
    module.run(code, 1, 32, 0, 0, 0, np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros((0, 0)))


class InstantModule(EntryModule):
    """The four entries of one graph and one pattern of input kinds, run by the machine."""

    def __init__(self, adj: AdjointGraph, inputs: tuple[str, ...], kinds: str):
        layout, entries = plan(adj, inputs, kinds)
        self.INPUTS, self.USED, self.WRT = layout.inputs, layout.used, layout.wrt
        self.BACKWARD_READS, self.SAVED = layout.backward_reads, layout.saved
        self.SEEDED, self.KINDS = layout.seeded, kinds
        self.__name__ = f"instant:{kinds}"
        self._adj = adj
        self._entries = {e.name: e for e in entries}
        self._programs: dict[str, Program] = {}
        self._lock = threading.Lock()

    def program(self, entry: str) -> Program:
        """The entry's program, written on first use."""
        with self._lock:
            if entry not in self._programs:
                self._programs[entry] = compile_program(self._adj, self._entries[entry])
            return self._programs[entry]

    def run(self, entry: str, n: int, *args, parallel: bool = True) -> None:
        """Call an entry like the generated kernel's: given values, then output buffers.

        Contiguous ranges of blocks go to the threads of ``runtime.blocks`` (the machine releases
        the GIL); the blocks' partial sums are added in block order, whatever the threads.
        """
        p = self.program(entry)
        run = machine().run
        addresses = np.array([args[k].ctypes.data for k in p.arrays], dtype=np.int64)
        scalars = np.array([*(args[k] for k in p.scalars), *p.constants], dtype=np.float64)
        n_blocks = -(-n // p.block)
        partial = np.zeros((n_blocks, len(p.sums)))

        def work(first: int, last: int) -> None:
            run(p.code, p.n_regs, p.block, first, last, n, addresses, scalars, partial)

        in_parallel(n_blocks, work, parallel)
        for k, total in zip(p.sums, partial.sum(axis=0)):
            args[k][0] = total

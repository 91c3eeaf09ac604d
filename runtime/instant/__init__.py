"""The instant tier: any elementwise graph runs at once on a virtual machine compiled only once.

A compiled kernel costs seconds per expression; here a graph becomes data — an instruction array
per entry (``program``) — and one evaluator, written as LLVM IR from the op table
(``vm_source``) and cached on disk as object code, runs them all. It needs llvmlite only: a new
process answers without importing Numba. ``InstantModule`` answers exactly like a generated
kernel module (same entries, same arguments, same ``USED``/``SAVED``/...), so the ``Kernel`` calls
either tier the same way and a ``vjp``'s residuals from one feed the other.

``InstantModule(..., dtype="float32")`` runs on a second machine, at float width
(``machine(dtype="float32")``, compiled once and cached like the float64 one): its entries take
and give float32 arrays, scalar inputs as Python floats. The scalars and constants go to the
machine in that dtype (each rounded once to float32); the sums of scalar inputs' gradients are
accumulated in float64 and rounded to float32 once, into the caller's buffer.
"""

from __future__ import annotations

import ctypes
import hashlib
import threading
from typing import TYPE_CHECKING

import numpy as np

from compiler.codegen.entries import plan
from compiler.errors import CompileError
from runtime import cache, llvm_jit
from runtime.blocks import EntryModule, over_blocks
from runtime.instant import vm_source
from runtime.instant.program import Program, compile_program, constants_at

if TYPE_CHECKING:
    from compiler.passes.adjoint import AdjointGraph

__all__ = ["InstantModule", "machine"]

_I64, _PTR = ctypes.c_int64, ctypes.c_void_p
#: ``vm_source.ARGUMENTS``: code, n_code, block, first, last, n, addresses, scalars, partial,
#: n_sums, regs.
_RUN = ctypes.CFUNCTYPE(None, _PTR, _I64, _I64, _I64, _I64, _I64, _PTR, _PTR, _PTR, _I64, _PTR)

#: The element types a machine is built for.
DTYPES = ("float64", "float32")

#: Machines by the op table they implement (``vm_source.table_key``) and their dtype: the
#: built-in table's, and one more for each table an op registered at run time makes (kept:
#: programs written for it may still run).
_machines: dict[tuple[str, str], tuple[llvm_jit.Loaded, ctypes._CFuncPtr]] = {}
_machine_lock = threading.Lock()


def check_dtype(dtype: str) -> None:
    """``ValueError`` unless ``dtype`` is one a machine is built for."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be 'float64' or 'float32', not {dtype!r}")


def machine(table: str | None = None, dtype: str = "float64"):
    """The virtual machine's ``run`` for the op table ``table`` (default: as it is now; ctypes:
    the GIL is released while it runs) at ``dtype``, loaded from the disk cache or, on first use
    on this machine, compiled (a fraction of a second)."""
    check_dtype(dtype)
    with _machine_lock:
        now = vm_source.table_key()
        table = table or now
        if (table, dtype) not in _machines:
            if table != now:  # an op (un)registered since the program was written: retry
                raise CompileError("the op table changed during the call; call again")
            text = vm_source.generate(dtype)
            digest = hashlib.sha256(text.encode()).hexdigest()
            key = cache.cache_key("instant-vm", digest, *(() if dtype == "float64" else (dtype,)))
            found = llvm_jit.read(key)
            objects = found[1] if found else llvm_jit.compile_objects([text], optimise=True)
            code = llvm_jit.Loaded(objects)
            _machines[table, dtype] = (code, _RUN(code.address(vm_source.SYMBOL)))
            if not found:
                llvm_jit.store(key, {"symbol": vm_source.SYMBOL}, objects)
        return _machines[table, dtype][1]


class InstantModule(EntryModule):
    """The four entries of one graph and one pattern of input kinds, run by the machine."""

    def __init__(
        self, adj: AdjointGraph, inputs: tuple[str, ...], kinds: str, dtype: str = "float64"
    ):
        check_dtype(dtype)
        layout, entries = plan(adj, inputs, kinds)
        self.INPUTS, self.USED, self.WRT = layout.inputs, layout.used, layout.wrt
        self.BACKWARD_READS, self.SAVED = layout.backward_reads, layout.saved
        self.SEEDED, self.KINDS = layout.seeded, kinds
        self.__name__ = f"instant:{kinds}"
        self.dtype, self._dtype = dtype, np.dtype(dtype)
        self._adj = adj
        self._entries = {e.name: e for e in entries}
        self._programs: dict[tuple[str, str], tuple[Program, tuple[float, ...]]] = {}
        self._lock = threading.Lock()

    def program(self, entry: str) -> Program:
        """The entry's program for the op table as it is, written on first use."""
        return self._program(entry)[0]

    def _program(self, entry: str) -> tuple[Program, tuple[float, ...]]:
        """The program and its constants rounded once to this module's dtype."""
        key = (entry, vm_source.table_key())
        with self._lock:
            if key not in self._programs:
                p = compile_program(self._adj, self._entries[entry])
                self._programs[key] = (p, constants_at(p.constants, self.dtype))
            return self._programs[key]

    def run(self, entry: str, n: int, *args, parallel: bool = True) -> None:
        """Call an entry like the generated kernel's: given values, then output buffers.

        Contiguous ranges of blocks go to the threads of ``runtime.blocks`` (the machine releases
        the GIL); the blocks' partial sums are added in block order, whatever the threads.
        """
        p, constants = self._program(entry)
        run = machine(p.table, self.dtype)
        address, dtype = llvm_jit.address, self._dtype
        for k in p.arrays:
            if args[k].dtype != dtype:  # the machine would read the wrong width: never run it
                raise TypeError(f"argument {k} is {args[k].dtype}, this machine's are {dtype}")
        addresses = np.array([address(args[k]) for k in p.arrays], dtype=np.uint64)
        scalars = np.array([*(args[k] for k in p.scalars), *constants], dtype=dtype)
        code, arrays, values = address(p.code), address(addresses), address(scalars)
        n_code, n_sums = len(p.code), len(p.sums)

        def work(first: int, last: int, regs: np.ndarray, partial: np.ndarray) -> None:
            sums = address(partial)
            run(code, n_code, p.block, first, last, n, arrays, values, sums, n_sums, address(regs))

        totals = over_blocks(-(-n // p.block), (p.n_regs * p.block,), n_sums, work, parallel)
        for k, total in zip(p.sums, totals):
            args[k][0] = total

"""The compiled tier for large graphs: each entry's LLVM IR (``compiler.codegen.llvm_ir``) compiled
by llvmlite directly, without Numba's Python-side pipeline.

Numba costs milliseconds per generated line before LLVM starts (bytecode analysis, type inference,
lowering), so a 10,000-node graph's kernels took minutes. Here the IR text is written straight
from the entry's nodes and handed to LLVM (``runtime.llvm_jit``): LLVM's O3 pipeline for entries
of up to ``OPTIMISE_NODES`` nodes (it vectorises the loops: twice as fast per call), beyond that
code generation alone (the IR is already minimal SSA: the graph is hash-consed and constants are
folded; the pipeline would cost 3x the code generation), bounded chunk functions so it stays
linear, and the chunks split over ``COMPILE_THREADS`` modules compiled side by side (llvmlite
releases the GIL; each thread has its own LLVM context and target machine).

The object code is cached on disk beside the Numba kernels (``runtime.cache``), keyed like them
plus this backend's own code, sealed with a SHA-256: a second process loads it into an MCJIT engine
and runs at once. ``LLVMModule`` answers exactly like a generated Numba module (same entries,
arguments and ``USED``/``SAVED``/...), so the ``Kernel`` calls either the same way. A call runs
contiguous ranges of blocks on ``runtime.blocks``'s threads (a ctypes call releases the GIL).

``dtype="float32"`` makes a float32 module: its entries take and give float32 arrays (scalar
inputs as Python floats, passed to the code rounded to float32), the ops run at float width, and
the sums of scalar inputs' gradients accumulate in float64 (per point, per block and across
blocks) and are rounded to float32 once, into the caller's buffer.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import threading
from functools import lru_cache, partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compiler.codegen.entries import plan
from compiler.errors import CompileError
from runtime import background, cache, llvm_jit
from runtime.blocks import EntryModule, over_blocks
from runtime.llvm_jit import COMPILE_THREADS, compile_objects

if TYPE_CHECKING:
    from compiler.passes.adjoint import AdjointGraph

#: Entries of up to this many nodes are written with branch-free exp, sin and cos and go through
#: LLVM's O3 pipeline, which vectorises the chunks' loops. Measured on the sin/exp chain
#: (value_and_grad, 100,000 points, compile / steady call, a busy machine): 700 nodes 0.30 s /
#: 82 ms with the C library's functions and no pipeline, 1.3 s / 40 ms with both; 2,000 nodes
#: 2.1 s / 358 ms against 4.6 s / 148 ms; 28,000 nodes 9.6 s / 6.7 s against 32 s / 5.1 s. Beyond
#: this size the pipeline's cost outgrows what it saves a first result.
OPTIMISE_NODES = 1_500

#: The same limit for kernels that are called many times per point they are built for: a
#: Hessian-vector product inside an optimiser (Newton-CG asks for tens per iteration), where the
#: pipeline's compile (behind a stand-in in ``auto`` mode) is paid once and its faster code on
#: every call. Measured on H1's K = 32 H·v program (2,673 nodes, 20,000 events, a busy
#: machine): compile 2.4 s against 0.4 s, then 14 ms per call against 77 ms.
REUSED_OPTIMISE_NODES = 4_000

#: Chunk functions per module: a module's code generation is one native call that nothing can
#: interrupt, so modules are kept to about a second of work and compiled in waves; an exiting
#: interpreter waits for one wave, never for a whole large graph (C++ statics destroyed under a
#: thread still in LLVM abort the process).
CHUNKS_PER_MODULE = 32

_DRIVER = ctypes.CFUNCTYPE(
    None,
    ctypes.c_int64,
    ctypes.c_int64,
    ctypes.c_int64,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
)
#: The element types an entry's code may be written for (``compiler.codegen.llvm_ops.DTYPES``).
DTYPES = ("float64", "float32")
_META = ("symbol", "block", "rows", "arrays", "scalars", "sums", "dtype")


@lru_cache(maxsize=1)
def backend_key() -> str:
    """This file's and ``llvm_jit``'s text: part of every cache key (the IR writer is in the
    environment's)."""
    texts = (Path(__file__).read_bytes(), Path(llvm_jit.__file__).read_bytes())
    return hashlib.sha256(b"\0".join(texts)).hexdigest()[:16]


class CompiledEntry:
    """One entry's machine code, loaded in its own MCJIT engine, and how to call it."""

    def __init__(self, meta: dict, objects: list[bytes]):
        self.meta = meta
        self.symbol = meta["symbol"]
        self.block, self.rows = meta["block"], meta["rows"]
        self.arrays, self.scalars, self.sums = meta["arrays"], meta["scalars"], meta["sums"]
        self.dtype = np.dtype(meta.get("dtype", "float64"))
        self._code = llvm_jit.Loaded(objects)
        address = self._code.address(self.symbol)
        self.function = _DRIVER(address)

    def __call__(self, n: int, args: tuple, parallel: bool = True) -> None:
        address, dtype = llvm_jit.address, self.dtype
        for k in self.arrays:
            if args[k].dtype != dtype:  # the code would read the wrong width: never run it
                raise TypeError(f"argument {k} is {args[k].dtype}, this code's are {dtype}")
        addresses = np.array([address(args[k]) for k in self.arrays], dtype=np.uint64)
        scalars = np.array([args[k] for k in self.scalars], dtype=dtype).reshape(-1)
        function, arrays, values = self.function, address(addresses), address(scalars)

        def work(first: int, last: int, temps: np.ndarray, partial: np.ndarray) -> None:
            function(first, last, n, arrays, values, address(temps), address(partial))

        size = (max(self.rows * self.block, 1),)
        totals = over_blocks(-(-n // self.block), size, len(self.sums), work, parallel)
        for k, total in zip(self.sums, totals):
            args[k][0] = total


def check_dtype(dtype: str) -> None:
    """``ValueError`` unless ``dtype`` is one the code is written for."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be 'float64' or 'float32', not {dtype!r}")


# ------------------------------------------------------------------------------- disk cache
def load_cached(key: str) -> CompiledEntry | None:
    """The entry from the disk cache, or None (missing or damaged: it is compiled again)."""
    unpacked = llvm_jit.read(key)
    if unpacked is None:
        return None
    try:
        return CompiledEntry(*unpacked)
    except Exception:  # noqa: BLE001 - a damaged entry: compile again
        return None


def compile_entry(
    key: str, make_ir, stopping: threading.Event | None = None, optimise: bool = False
) -> CompiledEntry:
    """The entry for ``key``: from the disk cache, or compiled from ``make_ir()`` (through LLVM's
    O3 pipeline if ``optimise``) and cached."""
    found = load_cached(key)
    if found is not None:
        return found
    try:
        ir = make_ir()
        count = max(COMPILE_THREADS, -(-len(ir.functions) // CHUNKS_PER_MODULE))
        objects = compile_objects(ir.modules(count), stopping, optimise)
        meta = {name: getattr(ir, name) for name in _META}
        compiled = CompiledEntry(json.loads(json.dumps(meta)), objects)
    except CompileError:
        raise
    except Exception as e:
        raise CompileError(f"compiling the kernel with LLVM failed: {e}") from e
    llvm_jit.store(key, compiled.meta, objects)
    return compiled


# ------------------------------------------------------------------------------- the module
class LLVMModule(EntryModule):
    """The entries of one graph and one pattern of input kinds, compiled by LLVM on first use."""

    TIER = "compiled"

    def __init__(
        self,
        adj: AdjointGraph,
        inputs: tuple[str, ...],
        kinds: str,
        key: str,
        title: str = "",
        optimise: bool = True,
        dtype: str = "float64",
        optimise_nodes: int | None = None,
    ):
        """``optimise=False``: never LLVM's O3 pipeline, for a stand-in that answers while
        the compiled tier compiles (it must compile in milliseconds, not seconds). ``dtype``
        (``"float64"`` or ``"float32"``): the element type of the entries' arrays.
        ``optimise_nodes``: the largest entry O3 takes (default ``OPTIMISE_NODES``)."""
        check_dtype(dtype)
        layout, entries = plan(adj, inputs, kinds)
        self.INPUTS, self.USED, self.WRT = layout.inputs, layout.used, layout.wrt
        self.BACKWARD_READS, self.SAVED = layout.backward_reads, layout.saved
        self.SEEDED, self.KINDS = layout.seeded, kinds
        self.__name__ = f"llvm:{kinds}"
        self._adj, self._title, self._key, self._optimise = adj, title, key, optimise
        self.dtype = dtype
        self._optimise_nodes = optimise_nodes
        self._entries = {e.name: e for e in entries}
        self._compiled: dict[str, CompiledEntry] = {}
        # One lock per entry: a call of one entry never waits for another one's compile.
        self._locks = {name: threading.Lock() for name in self._entries}

    def key(self, entry: str) -> str:
        from compiler.codegen import llvm_ir

        chunk = repr((llvm_ir.CHUNK_INSTRUCTIONS, self.optimised(entry)))
        return cache.cache_key(self._key, "llvm", entry, chunk, self.dtype, backend_key())

    def ir(self, entry: str):
        """The entry's IR (``EntryIR``; ``.text`` reads it)."""
        from compiler.codegen.llvm_ir import generate_entry

        return generate_entry(
            self._adj,
            self._entries[entry],
            self._title,
            vector=self.optimised(entry),
            dtype=self.dtype,
        )

    def optimised(self, entry: str) -> bool:
        """Whether the entry goes through LLVM's O3 pipeline, written for it (vector exp/sin)."""
        limit = OPTIMISE_NODES if self._optimise_nodes is None else self._optimise_nodes
        return self._optimise and len(self._entries[entry].nodes) <= limit

    def compiled(self, entry: str, stopping: threading.Event | None = None) -> CompiledEntry:
        with self._locks[entry]:
            if entry not in self._compiled:
                self._compiled[entry] = compile_entry(
                    self.key(entry), partial(self.ir, entry), stopping, self.optimised(entry)
                )
            return self._compiled[entry]

    def cached(self, entry: str) -> bool:
        """Whether the entry is loaded, or could be loaded from the disk cache now."""
        with self._locks[entry]:
            if entry not in self._compiled:
                found = load_cached(self.key(entry))
                if found is None:
                    return False
                self._compiled[entry] = found
            return True

    def loaded(self, entry: str) -> bool:
        """Whether the entry is compiled or loaded already (no look at the disk)."""
        return entry in self._compiled

    def run(self, entry: str, n: int, *args, parallel: bool = True) -> None:
        self.compiled(entry)(n, args, parallel)

    @property
    def source(self) -> str:
        return "\n\n".join(self.ir(name).text for name in self._entries)


class Job(background.Job):
    """``mode="auto"``: one entry compiled by LLVM on the background thread."""

    def __init__(self, module: LLVMModule, entry: str):
        super().__init__(module.key(entry), str, entry)
        self.llvm = module

    def run(self, stopping: threading.Event) -> None:
        try:
            if not stopping.is_set():
                self.llvm.compiled(self.entry, stopping)
                self.module, self.state = self.llvm, "ready"
        except BaseException as e:  # noqa: BLE001 - reported to the user's thread, never raised here
            self.error, self.state = e, "failed"
        finally:
            self.done.set()

"""The tier policy: which engine answers a call now, and which one compiles behind it.

One pure function, ``choose``, for elementwise kernels (``runtime.kernel``) and tensor programs
(``runtime.tensor_kernel``), from what a call knows: the graph's size, the call's size, the mode
asked for, what is ready (loaded or on disk) and what the background thread is doing. Every
threshold a tier choice reads is here. The engines:

========== ============================================================ =====================
engine     what runs                                                    costs before answering
========== ============================================================ =====================
numba      the generated Numba kernel (a tensor program's fused loops)  ~1-3 s once, then disk
llvm-O3    the entry's LLVM IR through LLVM's O3 pipeline (vectorised)  ~0.03-0.3 s, then disk
llvm-O0    the same IR, code generation only                            ~0.02-0.1 s
vm         the instant tier's virtual machine (a graph as data)         nothing
numpy      a tensor program's steps as NumPy calls                      nothing
========== ============================================================ =====================

The tables below are what ``choose`` does (``tests/test_policy.py`` reads them and checks every
combination against it); they are the README's. A graph is one of four kinds, each with the
engine that answers once everything is compiled (``final``):

| graph  | what it is                                               | final engine |
|--------|----------------------------------------------------------|--------------|
| small  | elementwise, at most `LLVM_OPS` (128) ops, no sin or cos | numba        |
| trig   | elementwise, at most `LLVM_OPS` ops, with sin or cos     | llvm-O3      |
| large  | elementwise, more than `LLVM_OPS` ops                    | llvm-O3      |
| tensor | a tensor program (`shapes=`)                             | numba        |

A call is large when its work, points x forward ops, is at least `WAIT_WORK` (300,000). *ready*
is what answers without compiling (loaded, or on disk from any earlier run): the final engine,
LLVM's O3 code, or nothing; Numba's kernel counts only once Numba is imported (the import,
0.3-0.5 s, is the background thread's work). *background* is the final engine's compile for this
call pattern: idle (never started), pending, ready or failed. The first row that matches decides:

| mode     | graph              | call  | ready   | background      | answers | compiles behind |
|----------|--------------------|-------|---------|-----------------|---------|-----------------|
| instant  | small, trig, large | any   | any     | any             | vm      | nothing         |
| instant  | tensor             | any   | any     | any             | numpy   | nothing         |
| compiled | any                | any   | any     | any             | final   | nothing         |
| auto     | any                | any   | final   | any             | final   | nothing         |
| auto     | any                | any   | any     | ready           | final   | nothing         |
| auto     | tensor             | any   | any     | idle            | numpy   | final           |
| auto     | tensor             | any   | any     | pending, failed | numpy   | nothing         |
| auto     | small, trig, large | any   | llvm-O3 | any             | llvm-O3 | nothing         |
| auto     | small, trig        | large | any     | any             | llvm-O3 | nothing         |
| auto     | small, trig        | small | any     | idle            | llvm-O0 | final           |
| auto     | small, trig        | small | any     | pending, failed | llvm-O0 | nothing         |
| auto     | large              | any   | any     | idle            | vm      | final           |
| auto     | large              | any   | any     | pending, failed | vm      | nothing         |

Why: a large first call waits for LLVM's O3 code (a tenth of a second, about what a stand-in
would lose in a few calls of that size; then cached on disk), which runs about as fast as Numba's
kernel, so nothing compiles behind it. A small call answers at once from LLVM's unoptimised code
(the virtual machine beyond ``LLVM_OPS`` ops, whose O3 compile takes seconds) while the final
engine compiles on the background thread and then answers. A failed background compile is
reported once, as a warning, and the stand-in keeps answering. Whatever answers, a call of at
least ``PARALLEL_WORK`` work runs its blocks on threads (``parallel``).
"""

from __future__ import annotations

from dataclasses import dataclass

ENGINES = ("numba", "llvm-O3", "llvm-O0", "vm", "numpy")

#: From this much work (points x forward ops) an ``auto`` call of a graph with no ready kernel
#: waits for LLVM's O3 kernel instead of answering from a stand-in. Measured (10^6 points, a
#: busy 2-core machine): LLVM's unoptimised code costs ~15-20 ns per point and op, NumPy ~4,
#: the O3 kernel ~1-3, and the O3 compile 0.03-0.1 s for graphs of a few ops. A stand-in call of
#: this much work loses ~5 ms against the O3 kernel: a script of ~20 such calls repays the wait.
#: Below it, a stand-in answers within a few milliseconds and the wait would not be repaid.
WAIT_WORK = 300_000

#: Graphs of up to this many forward ops may wait for the O3 kernel (compiled in about 0.3 s at
#: most: a 120-op chain took 0.16 s); larger ones answer from the virtual machine.
WAIT_OPS = 128

#: The final engine is LLVM's (``runtime.llvm_tier``) for graphs of more than this many forward
#: ops, Numba's below. Measured (value_and_grad, 100,000 points, first call / steady call): a
#: 6-op expression Numba 0.7 s / 0.19 ms, LLVM 0.02 s / 0.49 ms (Numba's single loop is
#: vectorised); the neuron 2.3 s / 2.5 ms against 0.05 s / 3.0 ms; a 120-op chain 3.0 s / 111 ms
#: against 0.16 s / 96 ms; a 1,000-node chain 35 s / 531 ms against 1.4 s / 430 ms. Small kernels
#: stay Numba's (faster per call, compiled in a second or two); from about a hundred ops Numba
#: costs seconds more to compile and is no faster.
LLVM_OPS = 128

#: Graphs with sin or cos take LLVM's engine whatever their size: its optimised entries compute
#: them branch-free, four points at a time, where Numba's kernels call the C library for each
#: point. Measured (value_and_grad, 100,000 points): the chain g(u) = sin(u)·u + exp(-u·u)
#: composed 4 and 16 times, Numba 15.7 / 37.3 ms, LLVM 8.1 / 19.8 ms. A small call costs more
#: there (~80 µs against ~45 µs for 100 points: ctypes and the block driver).
LLVM_TRIG = True

#: Below this much work (elements x forward ops) a call runs the serial loop: waking threads
#: costs ~3 us here. Measured with the neuron (8 ops): threads win from about 1,000 elements.
PARALLEL_WORK = 8192


@dataclass(frozen=True)
class Stats:
    """What the policy needs to know of a graph."""

    ops: int  # forward ops
    trig: bool = False  # has sin or cos (LLVM's O3 code vectorises them, Numba's calls libm)
    tensor: bool = False  # a tensor program (TensorKernel)


@dataclass(frozen=True)
class Choice:
    """``now``: the engine answering this call; ``behind``: to compile in the background."""

    now: str
    behind: str | None = None


def final(stats: Stats) -> str:
    """The engine that answers once everything is compiled."""
    if stats.tensor:
        return "numba"
    if stats.ops > LLVM_OPS or (stats.trig and LLVM_TRIG):
        return "llvm-O3"
    return "numba"


def choose(stats: Stats, points: int, mode: str, ready: frozenset[str], background: str) -> Choice:
    """The engine for a call of ``points`` elements (the module docstring's table).

    ``ready``: engines that answer without compiling (loaded, or on disk); ``background``: the
    final engine's background compile, ``"idle"`` (none yet), ``"pending"``, ``"ready"`` or
    ``"failed"``.
    """
    if mode == "instant":
        return Choice("numpy" if stats.tensor else "vm")
    goal = final(stats)
    if mode == "compiled" or goal in ready or background == "ready":
        return Choice(goal)
    behind = goal if background == "idle" else None
    if stats.tensor:
        return Choice("numpy", behind)
    if "llvm-O3" in ready or (points * stats.ops >= WAIT_WORK and stats.ops <= WAIT_OPS):
        return Choice("llvm-O3")  # as fast as Numba's kernel: nothing more to compile
    return Choice("vm" if stats.ops > LLVM_OPS else "llvm-O0", behind)


def parallel(stats: Stats, points: int) -> bool:
    """Whether a call of ``points`` elements runs its blocks on threads."""
    return points * stats.ops >= PARALLEL_WORK

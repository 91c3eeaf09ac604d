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
numpy      a tensor program's steps one by one (NumPy, ops' own loops)  0.02 s a new op, once
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

A call is large when waiting for LLVM's O3 code costs less than answering from a stand-in (see
``large_call``): for a small or trig graph, when its work, points x forward ops, is at least
`WAIT_WORK` (300,000); for a large graph, when the virtual machine would take longer than the O3
compile, points x ops x `VM_NS` (6 ns) >= `O3_BASE_NS` (0.1 s) + ops x `O3_NS_PER_OP` (4 ms),
about 700,000 points or more. *ready*
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
| auto     | small, trig, large | large | any     | any             | llvm-O3 | nothing         |
| auto     | small, trig        | small | any     | idle            | llvm-O0 | final           |
| auto     | small, trig        | small | any     | pending, failed | llvm-O0 | nothing         |
| auto     | large              | small | any     | idle            | vm      | final           |
| auto     | large              | small | any     | pending, failed | vm      | nothing         |

Why: a large first call waits for LLVM's O3 code (then cached on disk), which runs about as fast
as Numba's kernel, so nothing compiles behind it. For a small graph the wait is a tenth of a
second, about what a stand-in would lose in a few calls of that size while Numba's kernel
compiles behind (seconds). A large graph's O3 compile takes about a second or more, and O3 is
what compiles behind its stand-in, so its call waits only when the virtual machine would take
longer than the compile (a 283-op expression's value at 10^6 points: vm 1.3-1.7 s a call, the
first call waiting for O3 0.9 s, then 0.09 s; NumPy 0.3 s). A small call answers at once from
LLVM's unoptimised code (the virtual machine beyond ``LLVM_OPS`` ops) while the final engine
compiles on the background thread and then answers. A failed background compile is
reported once, as a warning, and the stand-in keeps answering. Whatever answers, a call of at
least ``PARALLEL_WORK`` work runs its blocks on threads (``parallel``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

ENGINES = ("numba", "llvm-O3", "llvm-O0", "vm", "numpy")

#: From this much work (points x forward ops) an ``auto`` call of a graph with no ready kernel
#: waits for LLVM's O3 kernel instead of answering from a stand-in. Measured (10^6 points, a
#: busy 2-core machine): LLVM's unoptimised code costs ~15-20 ns per point and op, NumPy ~4,
#: the O3 kernel ~1-3, and the O3 compile 0.03-0.1 s for graphs of a few ops. A stand-in call of
#: this much work loses ~5 ms against the O3 kernel: a script of ~20 such calls repays the wait.
#: Below it, a stand-in answers within a few milliseconds and the wait would not be repaid.
WAIT_WORK = 300_000

#: A large graph's (more than ``LLVM_OPS`` ops) call waits for the O3 kernel when the virtual
#: machine would take longer than the compile: points x ops x ``VM_NS`` >= ``O3_BASE_NS`` + ops x
#: ``O3_NS_PER_OP`` (nanoseconds). Measured (a busy 2-core machine, a kernel's value at 2 x 10^5
#: points, graphs of 50/150/300/600 forward ops; compile = first call - steady call):
#:   tanh(x*c + y)*x terms: O3 compile 0.66/1.84/3.39/5.98 s (about 10 ms an op), vm 10.7/11.3/
#:     10.8/10.0 ns per point-op, NumPy 3.4/2.7/2.7/2.7, O3 kernel 1.6-1.9;
#:   (x*c + y)*x - y*c terms (57/177/357/717 ops): O3 compile 0.14/0.31/0.43/0.75 s (about 1 ms
#:     an op), vm 2.1/1.8/2.0/1.7 ns per point-op, NumPy 1.1/0.7/0.7/0.6;
#:   the first LLVM compile of a process costs ~0.3 s more (LLVM's set-up), once.
#: Costly ops cost more in both, so the break-even stays near 10^6 points; the constants are the
#: middle of the range (a 283-op expression in the audit: O3 0.9 s, vm 1.3-1.7 s at 10^6 points).
VM_NS = 6
O3_BASE_NS = 100_000_000
O3_NS_PER_OP = 4_000_000

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
    if "llvm-O3" in ready or large_call(stats, points):
        return Choice("llvm-O3")  # as fast as Numba's kernel: nothing more to compile
    return Choice("vm" if stats.ops > LLVM_OPS else "llvm-O0", behind)


def wait_work(stats: Stats) -> int:
    """The least work (points x forward ops) of a call that waits for LLVM's O3 kernel: for a
    large graph, where the virtual machine's time reaches the O3 compile's (its stand-in answers
    only while O3 compiles behind); for a smaller one ``WAIT_WORK`` (Numba compiles behind for
    seconds, so a wait of a tenth of a second is repaid over a few calls)."""
    if stats.ops <= LLVM_OPS:
        return WAIT_WORK
    return -(-(O3_BASE_NS + stats.ops * O3_NS_PER_OP) // VM_NS)


def large_call(stats: Stats, points: int) -> bool:
    """Whether a call of ``points`` elements waits for LLVM's O3 kernel (the tables' *large*)."""
    return points * stats.ops >= wait_work(stats)


def parallel(stats: Stats, points: int) -> bool:
    """Whether a call of ``points`` elements runs its blocks on threads (never inside
    ``serial()``)."""
    return points * stats.ops >= PARALLEL_WORK and not getattr(_LOCAL, "serial", False)


_LOCAL = threading.local()


@contextmanager
def serial() -> Iterator[None]:
    """Calls made by this thread inside run their serial loops: the thread is one of several
    already running at once (a Dask task: the scheduler's threads or worker processes are the
    parallelism, and a kernel's own threads on top would oversubscribe the cores)."""
    old = getattr(_LOCAL, "serial", False)
    _LOCAL.serial = True
    try:
        yield
    finally:
        _LOCAL.serial = old

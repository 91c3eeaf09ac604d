"""The tier policy: which engine answers a call now, and which one compiles behind it.

One pure function, ``choose``, for elementwise kernels (``runtime.kernel``) and tensor programs
(``runtime.tensor_kernel``), from what a call knows: the graph's size, the call's size, the mode
asked for, what is ready (loaded or on disk) and what the background thread is doing. The engines:

========== ============================================================ =====================
engine     what runs                                                    costs before answering
========== ============================================================ =====================
numba      the generated Numba kernel (a tensor program's fused loops)  ~1-3 s once, then disk
llvm-O3    the entry's LLVM IR through LLVM's O3 pipeline (vectorised)  ~0.03-0.3 s, then disk
llvm-O0    the same IR, code generation only                            ~0.02-0.1 s
vm         the instant tier's virtual machine (a graph as data)         nothing
numpy      a tensor program's steps as NumPy calls                      nothing
========== ============================================================ =====================

``auto``, for a new elementwise graph: a call of at least ``WAIT_WORK`` (points x ops) waits for
the O3 kernel, which costs about what the stand-in would lose in a few calls of that size, and
which is then cached on disk; once it is there (loaded, or on disk from an earlier run) it answers
every call, and nothing compiles behind it: per call it runs as fast as Numba's kernel (measured on
four small graphs at 10^5 and 10^6 points: within the noise of a busy machine, either way), and
Numba's compile would cost 1-3 s of a short script's life. A smaller call answers at once from
LLVM's unoptimised code (the virtual machine beyond ``llvm_tier.LLVM_OPS`` ops) while the final
engine (Numba's kernel, or O3 LLVM's for graphs with sin/cos or beyond ``LLVM_OPS``) compiles on
the background thread and then answers. Numba's kernel counts as ready only once Numba is
imported (0.3-0.5 s: the background thread's work).

================================  ============  =======  ==================================
state (auto, elementwise)         call work     answers  compiles behind
================================  ============  =======  ==================================
final engine loaded or on disk    any           final    nothing
LLVM's O3 code loaded or on disk  any           llvm-O3  nothing
neither, <= WAIT_OPS ops          >= WAIT_WORK  llvm-O3  nothing (O3 compiled now, cached)
neither, <= LLVM_OPS ops          < WAIT_WORK   llvm-O0  the final engine
neither, > LLVM_OPS ops           any           vm       the final engine (llvm-O3)
================================  ============  =======  ==================================

Tensor programs: the compiled module if loaded or on disk, else NumPy's steps while it compiles.
``mode="compiled"`` always answers with the final engine, ``mode="instant"`` with vm / numpy.
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
    from runtime import llvm_tier

    if stats.tensor:
        return "numba"
    if stats.ops > llvm_tier.LLVM_OPS or (stats.trig and llvm_tier.LLVM_TRIG):
        return "llvm-O3"
    return "numba"


def choose(stats: Stats, points: int, mode: str, ready: frozenset[str], background: str) -> Choice:
    """The engine for a call of ``points`` elements.

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
    from runtime import llvm_tier

    return Choice("vm" if stats.ops > llvm_tier.LLVM_OPS else "llvm-O0", behind)

"""The tier policy (``runtime.policy``) and what a kernel reports of it.

- ``choose`` is a pure function: its table, case by case;
- ``k.mode`` is the mode asked for, ``k.tier`` the engine that answered the latest call;
- in ``auto`` a large call waits for LLVM's O3 code (and compiles nothing behind it), a small one
  answers from a stand-in while the final engine compiles in the background — and that stand-in
  never queues behind a long background Numba compile;
- a script's first run leaves its kernels cached: the exiting interpreter finishes the compile;
  its later runs find the kernel whole on disk and do not wait for it at exit.

Expected numbers come from NumPy formulas of the derivatives.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import compiler
from runtime import background, blocks, cache, policy
from runtime.policy import Choice, Stats, choose

ROOT = Path(__file__).resolve().parent.parent
SMALL, TRIG, LARGE = Stats(7), Stats(7, trig=True), Stats(policy.LLVM_OPS + 1)
NONE = frozenset()
BIG = policy.WAIT_WORK  # points of a call that is large for a one-op graph


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "_loaded", {})
    return tmp_path / "cache"


# ------------------------------------------------------------------ the policy, a pure function
@pytest.mark.parametrize(
    "stats, points, mode, ready, state, want",
    [
        (SMALL, 10, "instant", NONE, "idle", Choice("vm")),
        (Stats(3, tensor=True), 10, "instant", NONE, "idle", Choice("numpy")),
        (SMALL, 10, "compiled", NONE, "idle", Choice("numba")),
        (TRIG, 10, "compiled", NONE, "idle", Choice("llvm-O3")),
        (LARGE, 10, "compiled", NONE, "idle", Choice("llvm-O3")),
        # auto, nothing ready: a small call answers at once, the final engine compiles behind
        (SMALL, 10, "auto", NONE, "idle", Choice("llvm-O0", "numba")),
        (TRIG, 10, "auto", NONE, "idle", Choice("llvm-O0", "llvm-O3")),
        (LARGE, 10, "auto", NONE, "idle", Choice("vm", "llvm-O3")),
        (SMALL, 10, "auto", NONE, "pending", Choice("llvm-O0")),  # compiling already
        (SMALL, 10, "auto", NONE, "failed", Choice("llvm-O0")),  # never again
        # auto, a call large enough to repay the O3 compile waits for it; nothing behind
        (SMALL, BIG, "auto", NONE, "idle", Choice("llvm-O3")),
        (TRIG, BIG, "auto", NONE, "pending", Choice("llvm-O3")),
        (LARGE, BIG, "auto", NONE, "idle", Choice("vm", "llvm-O3")),  # vm: faster than O3's compile
        (LARGE, 10**6, "auto", NONE, "idle", Choice("llvm-O3")),  # vm: slower than O3's compile
        (Stats(283), 10**6, "auto", NONE, "pending", Choice("llvm-O3")),
        # auto, something ready
        (SMALL, 10, "auto", frozenset({"numba"}), "idle", Choice("numba")),
        (SMALL, 10, "auto", NONE, "ready", Choice("numba")),
        (SMALL, 10, "auto", frozenset({"llvm-O3"}), "idle", Choice("llvm-O3")),
        (Stats(3, tensor=True), 10, "auto", NONE, "idle", Choice("numpy", "numba")),
        (Stats(3, tensor=True), 10, "auto", frozenset({"numba"}), "idle", Choice("numba")),
    ],
)
def test_the_policy_table(stats, points, mode, ready, state, want):
    assert choose(stats, points, mode, ready, state) == want


def test_the_wait_threshold_is_on_work_not_points():
    """points x ops: the same call size waits for a larger graph, not for a one-op one."""
    points = policy.WAIT_WORK // 7 + 1
    assert choose(Stats(7), points, "auto", NONE, "idle").now == "llvm-O3"
    assert choose(Stats(1), points, "auto", NONE, "idle").now == "llvm-O0"


def test_a_large_graph_waits_when_the_vm_would_outlast_the_compile():
    """Beyond ``LLVM_OPS`` ops the threshold grows with the O3 compile: a call waits when the
    virtual machine's estimated time (points x ops x ``VM_NS``) reaches the compile's."""
    for ops in (policy.LLVM_OPS + 1, 283, 600, 5000):
        stats = Stats(ops)
        compile_ns = policy.O3_BASE_NS + ops * policy.O3_NS_PER_OP
        edge = -(-compile_ns // (ops * policy.VM_NS))  # the fewest points the vm takes longer
        assert choose(stats, edge, "auto", NONE, "idle") == Choice("llvm-O3"), ops
        assert choose(stats, edge - 1, "auto", NONE, "idle") == Choice("vm", "llvm-O3"), ops
        assert 5 * 10**5 <= edge <= 10**6  # a 10^6-point call always waits, 10^5 never
    assert choose(Stats(7), 10**5, "auto", NONE, "idle").now == "llvm-O3"  # small: WAIT_WORK


# ------------------------------------------------------------------ mode and tier
EXPR = "x * tanh(y) + exp(-x * y)"


def want(x, y):
    t = np.tanh(y)
    e = np.exp(-x * y)
    return x * t + e, {"x": t - y * e, "y": x * (1 - t * t) - x * e}


def check(got, x, y):
    """A scalar input's gradient is summed over the points it was broadcast to."""
    value, grads = got
    v, g = want(x, y)
    np.testing.assert_allclose(value, v, rtol=1e-12)
    np.testing.assert_allclose(grads["x"], g["x"], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(grads["y"], np.sum(g["y"]), rtol=1e-11)


@pytest.mark.parametrize(
    "mode, tier", [("instant", "vm"), ("compiled", "numba"), ("auto", "llvm-O0")]
)
def test_mode_is_what_was_asked_and_tier_what_answered(private_cache, mode, tier):
    k = compiler.compile_gradient(EXPR, mode=mode)
    assert k.mode == k.requested_mode == mode and k.tier is None
    assert f"mode={mode!r}" in repr(k)
    x = np.linspace(-1, 1, 5)
    check(k.value_and_grad(x=x, y=0.25), x, 0.25)
    assert k.tier == tier and k.mode == mode


def test_a_large_call_waits_for_llvm_o3_and_compiles_nothing_behind(private_cache):
    k = compiler.compile_gradient(EXPR)
    x = np.linspace(-2, 2, policy.WAIT_WORK // k._ops + 1)
    check(k.value_and_grad(x=x, y=0.5), x, 0.5)
    assert k.tier == "llvm-O3" and not k._jobs
    assert list(private_cache.glob("llvm_*.bin"))  # cached: the next process loads it
    check(k.value_and_grad(x=x[:3], y=0.5), x[:3], 0.5)  # small calls too, from now on
    assert k.tier == "llvm-O3" and not k._jobs
    cache._loaded.clear()
    again = compiler.compile_gradient(EXPR)  # as in a new process: from the disk, at once
    check(again.value_and_grad(x=x[:3], y=0.5), x[:3], 0.5)
    assert again.tier == "llvm-O3" and not again._jobs


def chain(ops: int) -> tuple[str, Callable]:
    """A large graph of cheap ops (its O3 compile stays well under a second) and its NumPy value:
    terms (x*c + y)*x - y*d, four ops each, plus the adds between them."""
    cs = [(k / 7, k / 3) for k in range(1, ops // 5 + 2)]
    text = " + ".join(f"(x*{c!r} + y)*x - y*{d!r}" for c, d in cs)
    return text, lambda x, y: sum((x * c + y) * x - y * d for c, d in cs)


def test_a_large_graphs_big_first_call_waits_for_llvm_o3(private_cache):
    """More than ``LLVM_OPS`` ops, a call where the vm would outlast the O3 compile: it waits for
    O3 (never the vm, slower than NumPy on the same work) and compiles nothing behind."""
    text, value = chain(policy.LLVM_OPS + 20)
    k = compiler.compile_gradient(text)
    assert k._ops > policy.LLVM_OPS
    n = -(-policy.wait_work(k._tiers.stats) // k._ops)
    x, y = np.linspace(-1, 1, n), np.linspace(0.5, 1.5, n)
    np.testing.assert_allclose(k(x=x, y=y), value(x, y), rtol=1e-12, atol=1e-12)
    assert k.tier == "llvm-O3" and not k._jobs
    small = compiler.compile_gradient(chain(policy.LLVM_OPS + 24)[0])
    small(x=x[:1000], y=y[:1000])
    assert small.tier == "vm" and small._jobs  # a small call answers at once, O3 behind
    assert small.wait(timeout=300)


def test_a_small_call_answers_from_a_stand_in_then_the_final_engine(private_cache):
    k = compiler.compile_gradient(EXPR)
    x = np.linspace(-1, 1, 5)
    check(k.value_and_grad(x=x, y=0.25), x, 0.25)
    assert k.tier == "llvm-O0" and k._jobs
    assert k.wait(timeout=300)
    check(k.value_and_grad(x=x, y=0.25), x, 0.25)
    assert k.tier == "numba" and k.mode == "auto"


def test_a_cli_call_in_process_leaves_the_worker_compiling(private_cache):
    """The CLI abandons queued compiles *at exit*; a process that goes on (a test, a notebook
    calling ``cli.main``) still gets its later kernels compiled (CI saw one wait forever)."""
    from runtime import cli

    assert cli.main(["x * y", "--at", "x=2,y=3"]) == 0
    k = compiler.compile_gradient(EXPR)
    x = np.linspace(-1, 1, 5)
    check(k.value_and_grad(x=x, y=0.25), x, 0.25)
    assert k.wait(timeout=300)
    check(k.value_and_grad(x=x, y=0.25), x, 0.25)
    assert k.tier == "numba"


def test_a_tensor_kernel_reports_its_engine(private_cache):
    shapes = {"W": ("n", "n"), "x": ("n",)}
    k = compiler.compile_gradient("sum(tanh(W @ x) * x)", shapes=shapes)
    assert k.mode == k.requested_mode == "auto" and k.tier is None
    W, v = np.eye(3) * 0.5, np.array([0.1, -0.2, 0.3])
    k.value_and_grad(W=W, x=v)
    assert k.tier == "numpy"
    assert k.wait(timeout=300)
    _, grads = k.value_and_grad(W=W, x=v)
    assert k.tier == "numba" and k.mode == "auto"
    t = np.tanh(W @ v)
    np.testing.assert_allclose(grads["x"], t + W.T @ ((1 - t * t) * v), rtol=1e-12)


# ------------------------------------------------------------------ no queueing behind Numba
def test_a_stand_in_answers_while_a_numba_compile_holds_its_lock(private_cache, monkeypatch):
    """A background Numba compile holds Numba's compiler lock for seconds; a new kernel's
    stand-in (LLVM, in its own context) must answer meanwhile, not queue behind it."""
    from numba.core.compiler_lock import global_compiler_lock

    release, holding = threading.Event(), threading.Event()
    real = background.compile_signature

    def slow_compile(dispatcher, signature):
        with global_compiler_lock:  # as Numba's compile does, for its whole length
            holding.set()
            release.wait(120)
        real(dispatcher, signature)

    monkeypatch.setattr(background, "compile_signature", slow_compile)
    first = compiler.compile_gradient("x * tanh(y) - y")
    first.value_and_grad(x=np.arange(3.0), y=0.5)  # its Numba compile starts behind
    try:
        assert holding.wait(120)
        second = compiler.compile_gradient(EXPR)  # a new kernel: its stand-in must compile
        answers = []
        x = np.linspace(-1, 1, 5)
        caller = threading.Thread(target=lambda: answers.append(second.value_and_grad(x=x, y=0.2)))
        caller.start()
        caller.join(60)
        pending = next(iter(first._jobs.values())).state == "pending"
        assert answers and pending, "the stand-in waited for the background compile"
        assert second.tier == "llvm-O0"
        check(answers[0], x, 0.2)
    finally:
        release.set()
    assert first.wait(timeout=300)


# ------------------------------------------------------------------ exit: the cache is filled
SCRIPT = """
import numpy as np
import compiler
k = compiler.compile_gradient("x * tanh(y) + exp(-x * y) / (1 + y * y)")
k.value_and_grad(x=np.linspace(-1, 1, 5), y=0.5)
assert k.tier == "llvm-O0" and k._jobs  # exits while Numba compiles behind
"""

WARM = """
import numba  # imported: the Numba kernel on disk counts as ready at once
import numpy as np
import compiler
k = compiler.compile_gradient("x * tanh(y) + exp(-x * y) / (1 + y * y)")
k.value_and_grad(x=np.linspace(-1, 1, 5), y=0.5)
print(k.tier, bool(k._jobs))
"""


def run_script(code: str, cache_dir: Path) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (a new run of a user's script) with the kernel cache
    ``cache_dir``; it must succeed."""
    env = {**os.environ, "SYMGRAD_CACHE_DIR": str(cache_dir)}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_a_scripts_first_run_leaves_its_kernel_cached(tmp_path):
    run_script(SCRIPT, tmp_path / "cache")
    warm = run_script(WARM, tmp_path / "cache")
    assert warm.stdout.split() == ["numba", "False"]  # loaded, nothing compiled again


SMALL_CALLS = """
import atexit, time
import numpy as np
import compiler
atexit.register(lambda: print(f"exit {time.perf_counter() - END:.3f}"))  # runs after symgrad's
k = compiler.compile_gradient(SOURCE, **KW)
for _ in range(3):
    k.value_and_grad(**ARGS)
print(k.tier)
END = time.perf_counter()
"""
SCRIPTS = {
    "scalar": (
        'SOURCE = "x * tanh(y) + exp(-x * y) / (1 + y * y)"; KW = {}\n'
        "ARGS = dict(x=np.linspace(-1, 1, 5), y=0.5)\n",
        "llvm-O0",
        ("numba", "llvm-O0", "llvm-O3"),
    ),
    "tensor": (
        'SOURCE = "sum(tanh(W @ x))"; KW = dict(shapes={"W": ("n", "m"), "x": ("m",)})\n'
        "ARGS = dict(W=np.ones((3, 2)) / 4, x=np.arange(2.0))\n",
        "numpy",
        ("numba", "numpy"),
    ),
}


@pytest.mark.parametrize("kind", sorted(SCRIPTS))
def test_a_script_of_small_calls_waits_at_exit_only_on_its_first_run(tmp_path, kind):
    """Run 1 leaves Numba's kernel cached (it may wait at exit, with the note); runs 2 and 3 find
    it whole on disk: no exit wait for a compile, and no note claiming one. The same for a tensor
    program, whose background job warms its loops into Numba's cache."""
    setup, first, later = SCRIPTS[kind]
    script = SMALL_CALLS.replace("import compiler\n", "import compiler\n" + setup)
    runs = []
    for _ in range(3):
        done = run_script(script, tmp_path / "cache")
        tier, exit_line = done.stdout.split("\n")[:2]
        runs.append((tier, float(exit_line.split()[1]), done.stderr))
    assert runs[0][0] == first  # nothing cached: the stand-in answers, Numba compiles behind
    for tier, _, stderr in runs[1:]:
        assert tier in later, tier
        assert "finishing" not in stderr, stderr
    exits = [seconds for _, seconds, _ in runs]
    assert max(exits[1:]) < background.EXIT_NOTE + 1.0, exits  # at most the rest of an import


# ------------------------------------------------------------------ the one block runner
@pytest.mark.parametrize("parallel", [True, False])
def test_over_blocks_runs_each_block_once_with_its_own_temps(parallel):
    """Every block once, a private temp buffer per thread, the totals in block order (the same
    numbers whatever the threads: sums of 1/(b+1), which rounding would reorder)."""
    from runtime.blocks import over_blocks

    n_blocks, seen, buffers = 37, [], []

    def work(first, last, temps, partial):
        assert temps.shape == (4, 8)
        buffers.append(temps)  # kept alive: ids stay distinct
        for b in range(first, last):
            temps[:] = b  # a shared buffer would be overwritten by another thread
            seen.append(b)
            partial[b] = [1.0 / (b + 1), float(temps[3, 7])]

    totals = over_blocks(n_blocks, (4, 8), 2, work, parallel)
    assert sorted(seen) == list(range(n_blocks))
    harmonic = 0.0
    for b in range(n_blocks):
        harmonic += 1.0 / (b + 1)
    assert totals.tolist() == [harmonic, float(sum(range(n_blocks)))]
    assert len({id(t) for t in buffers}) == (min(n_blocks, blocks.threads()) if parallel else 1)

"""The instant tier (``mode="instant"``) and the switch between tiers (``mode="auto"``).

The instant tier runs a graph as data on one virtual machine; it must agree with the independent
oracles of ``test_oracle`` (SymPy's ``diff`` at 30 digits, central differences — the same random
expressions, drawn by the same generator) and with the compiled tier to rounding, through every
entry of the Kernel API: broadcasting, seeds, ``out=`` buffers, ``vjp``.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import test_oracle as oracle
from hypothesis import HealthCheck, assume, given, settings

import compiler
from compiler.codegen import numba_source
from runtime import background, cache, policy
from runtime.instant import program, vm_source
from runtime.llvm_tier import LLVMModule

RTOL_TIERS = (
    1e-12  # the tiers differ only by rounding (x**3 multiplies in one, calls pow in the other)
)

SETTINGS = dict(
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)


def close(a, b, rtol=RTOL_TIERS) -> bool:
    """Equal to rounding: same nan/inf pattern, finite values within ``rtol`` of their scale."""
    a, b = np.broadcast_arrays(np.asarray(a, float), np.asarray(b, float))
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    with np.errstate(invalid="ignore"):  # inf - inf
        scale = np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))
        near = np.isfinite(a) & np.isfinite(b) & (np.abs(a - b) <= rtol * scale)
    return bool(np.all(same | near))


def assert_same_results(got, want) -> None:
    value, grads = got
    assert close(value, want[0]), (value, want[0])
    assert set(grads) == set(want[1])
    for name, g in grads.items():
        assert np.shape(g) == np.shape(want[1][name]), name
        assert close(g, want[1][name]), (name, g, want[1][name])


# ------------------------------------------------------------------ oracles, on the instant tier
# The instant tier against exact values, sympy.diff and finite differences is tests/test_oracle.py
# (every op of the table, on every tier); here it is held to the compiled tier everywhere.
@settings(max_examples=25, **SETTINGS)
@given(e=oracle.expressions(), env=oracle.points)
def test_instant_and_compiled_tiers_agree_to_rounding(e, env):
    """Everywhere, not only where the function is smooth: same nan, inf and kink choices."""
    instant = compiler.compile_gradient(e.text, inputs=oracle.VARS, mode="instant")
    compiled = compiler.compile_gradient(e.text, inputs=oracle.VARS, mode="compiled")
    _, ok = oracle.numpy_value(e, env)
    got, want = instant.value_and_grad(**env), compiled.value_and_grad(**env)
    with np.errstate(all="ignore"):
        # Where values are huge, rounding differences of intermediates can be too.
        assume(np.all(np.abs(want[0][ok]) < oracle.BIG))
    assert close(got[0][ok], want[0][ok], 1e-9)
    for v in oracle.VARS:
        assert close(got[1][v][ok], want[1][v][ok], 1e-9), (e.text, v)


KINK_POINTS = {"x": np.array([0.0, -0.0, 1.0, -1.0, np.nan, np.inf]), "y": np.array([0.0] * 6)}


@pytest.mark.parametrize(
    "text",
    [
        "relu(x) + abs(x) + sign(x)",
        "maximum(x, y) + minimum(x, y)",
        "sqrt(abs(x)) + x ** y + pow(y, x)",
        "xlogy(x, y + 1) + heaviside(x, 0.5)",
        "1 / x + log(x) + exp(1000 * x)",
    ],
)
def test_kinks_nan_and_inf_follow_the_same_table(text):
    instant = compiler.compile_gradient(text, inputs=["x", "y"], mode="instant")
    compiled = compiler.compile_gradient(text, inputs=["x", "y"], mode="compiled")
    assert_same_results(
        instant.value_and_grad(**KINK_POINTS), compiled.value_and_grad(**KINK_POINTS)
    )


# ------------------------------------------------------------------ the Kernel API on the tier
NEURON = "1/(1+exp(-(w0*x0+w1*x1+w2))) + sin(x0) * maximum(w0, x1) + x0 ** 3"


@pytest.fixture(scope="module")
def neuron_tiers():
    return {m: compiler.compile_gradient(NEURON, mode=m) for m in ("instant", "compiled")}


def neuron_inputs(rng):
    return dict(
        w0=rng.standard_normal((3, 1)),  # broadcast along the last axis: gradient summed back
        x0=rng.standard_normal(4),
        w1=0.7,  # a scalar: its gradient is summed over every element
        x1=rng.standard_normal((3, 4)),
        w2=np.float64(-0.2),
    )


def test_broadcasting_and_scalar_gradients(neuron_tiers):
    args = neuron_inputs(np.random.default_rng(1))
    want = neuron_tiers["compiled"].value_and_grad(**args)
    got = neuron_tiers["instant"].value_and_grad(**args)
    assert got[0].shape == (3, 4) and np.shape(got[1]["w0"]) == (3, 1)
    assert isinstance(got[1]["w1"], float)
    assert_same_results(got, want)
    assert close(neuron_tiers["instant"](**args), want[0])


def test_seeds_out_buffers_and_vjp(neuron_tiers):
    rng = np.random.default_rng(2)
    args = neuron_inputs(rng)
    ki, kc = neuron_tiers["instant"], neuron_tiers["compiled"]
    for seed in (2.5, rng.standard_normal(4), rng.standard_normal((3, 4))):
        assert_same_results(
            ki.value_and_grad(**args, seed=seed), kc.value_and_grad(**args, seed=seed)
        )
        assert_same_results((0.0, ki.grad(**args, seed=seed)), (0.0, kc.grad(**args, seed=seed)))
    value = np.empty((3, 4))
    grads = {n: np.empty(np.shape(v)) for n, v in args.items()}
    got = ki.value_and_grad(**args, out=(value, grads))
    assert got[0] is value and all(got[1][n] is grads[n] for n in grads)
    assert_same_results(got, kc.value_and_grad(**args))
    v, pullback = ki.vjp(**args)
    cot = rng.standard_normal((3, 4))
    assert_same_results((v, pullback(cot)), kc.value_and_grad(**args, seed=cot))
    assert_same_results((v, pullback()), kc.value_and_grad(**args))


def test_large_calls_run_in_parallel_and_agree(neuron_tiers, monkeypatch):
    """Many blocks over several threads (and serially): the same numbers."""
    rng = np.random.default_rng(3)
    n = 20_000
    args = {name: rng.standard_normal(n) for name in ("w0", "x0", "w1", "x1")} | {"w2": 0.3}
    want = neuron_tiers["compiled"].value_and_grad(**args)
    for work in (0, 1 << 62):  # always threads, never threads
        monkeypatch.setattr(policy, "PARALLEL_WORK", work)
        assert_same_results(neuron_tiers["instant"].value_and_grad(**args), want)


def test_empty_and_scalar_calls():
    k = compiler.compile_gradient("x * sin(y) + 2", mode="instant")
    value, grads = k.value_and_grad(x=np.zeros(0), y=1.0)
    assert value.shape == (0,) and grads["y"] == 0.0
    assert k(x=1.5, y=0.3) == pytest.approx(1.5 * math.sin(0.3) + 2, rel=1e-15)


def test_constant_and_identity_functions():
    for text, inputs in (("3", ["x"]), ("x", ["x", "y"])):
        ki = compiler.compile_gradient(text, inputs=inputs, mode="instant")
        kc = compiler.compile_gradient(text, inputs=inputs, mode="compiled")
        args = {n: np.arange(3.0) for n in inputs}
        assert_same_results(ki.value_and_grad(**args), kc.value_and_grad(**args))


def test_a_users_gate_is_expanded_for_the_machine():
    """Gates registered at run time are not in the machine: the program spells them out."""
    name = "swish_instant_test"
    compiler.register_gate(name, "x * sigmoid(x)")
    try:
        text = f"{name}(x) * y"
        ki = compiler.compile_gradient(text, mode="instant")
        kc = compiler.compile_gradient(text, mode="compiled")
        assert name in str(ki.adjoint) and name not in vm_source.opcodes()
        args = {"x": np.linspace(-3, 3, 7), "y": 0.5}
        assert_same_results(ki.value_and_grad(**args), kc.value_and_grad(**args))
    finally:
        compiler.unregister_gate(name)


# ------------------------------------------------------------------ the machine and its programs
def test_the_machine_is_generated_from_the_registry():
    """Each built-in op is a case of the machine's switch: a call of its lowering's function,
    printed in the machine's module (the scalar form: ``vector=False``)."""
    from compiler.codegen import llvm_ops

    source = vm_source.generate()
    codes = vm_source.opcodes()
    for op in vm_source.builtin_ops():
        label = f"op{codes[op.name]}"
        assert f"i64 {codes[op.name]}, label %{label}" in source
        operands = ", ".join(f"double %{label}.{p}.v" for p in "abc"[: op.arity])
        function = llvm_ops.op_function(op.name, vector=False)
        assert f"%{label}.r = call double @{function.symbol}({operands})" in source
        assert function.text in source, op.name
    assert set(codes) == {op.name for op in vm_source.builtin_ops()} | set(vm_source.MACHINE)


def test_the_instant_tier_needs_no_numba():
    """A new process answers on the instant tier without importing Numba (its import and first
    use cost most of a second)."""
    import subprocess
    import sys

    script = (
        "import sys, compiler\n"
        "k = compiler.compile_gradient('1/(1+exp(-(w0*x0+w1*x1+w2)))', mode='instant')\n"
        "print(k.grad(w0=2.0, x0=-1.0, w1=-3.0, x1=-2.0, w2=-3.0)['x0'], 'numba' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    grad, numba = out.stdout.split()
    assert abs(float(grad) - 0.39322386648296376) < 1e-15 and numba == "False"


def test_registers_are_recycled():
    """A chain of 600 ops needs a handful of registers, not one per node."""
    k = compiler.compile_gradient(lambda x: chain(x, 100), mode="instant")
    module = k._instant_module("as")
    forward = module.program("forward")
    assert forward.n_regs <= 4 and forward.block == program.MAX_BLOCK
    both = module.program("value_and_grad")
    assert both.n_regs < len(k.adjoint.nodes) // 2


# ------------------------------------------------------------------ deep chains
def chain(u, k: int):
    """g(u) = sin(u) * u + exp(-u * u), composed k times."""
    for _ in range(k):
        u = compiler.ops.sin(u) * u + compiler.ops.exp(-u * u)
    return u


def chain_forward_mode(x: float, k: int) -> tuple[float, float]:
    u, du = x, 1.0
    for _ in range(k):
        s, e = math.sin(u), math.exp(-u * u)
        u, du = s * u + e, (math.cos(u) * u + s - 2 * u * e) * du
    return u, du


@pytest.mark.parametrize("steps", [1, 50, 5_000])
def test_deep_chain_on_the_instant_tier(steps):
    k = compiler.compile_gradient(lambda x: chain(x, steps), mode="instant")
    xs = np.array([0.1, 0.7, -1.3])
    value, grads = k.value_and_grad(x=xs)
    for j, x in enumerate(xs):
        v, d = chain_forward_mode(float(x), steps)
        assert value[j] == pytest.approx(v, rel=1e-9)
        assert grads["x"][j] == pytest.approx(d, rel=1e-7, abs=1e-12)


# ------------------------------------------------------------------ auto: instant first, then compiled
@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "_loaded", {})
    return tmp_path / "cache"


def test_auto_answers_with_llvm_then_switches_to_the_numba_kernel(private_cache):
    """A new small graph (no sin or cos: those stay LLVM's): LLVM's code answers the first call
    (compiled in milliseconds, no Numba), Numba's kernel compiles behind it and takes over; both
    on disk afterwards."""
    k = compiler.compile_gradient("x * tanh(y) + exp(-x * y)")
    assert k.requested_mode == "auto" == k.mode and k.tier is None
    args = {"x": np.linspace(-1, 1, 5), "y": 0.25}
    first = k.value_and_grad(**args)
    assert k._jobs and k.tier == "llvm-O0"  # a small call: answered at once
    assert k.wait(timeout=300)
    second = k.value_and_grad(**args)
    assert k.tier == "numba" and k.mode == "auto"
    assert_same_results(first, second)
    # The Numba kernel is now on disk: a new kernel (as in a new process) starts with it.
    cache._loaded.clear()
    again = compiler.compile_gradient("x * tanh(y) + exp(-x * y)")
    assert_same_results(again.value_and_grad(**args), second)
    assert again.tier == "numba" and not again._jobs


def test_graphs_with_sin_or_cos_take_llvm_whatever_their_size(private_cache):
    """Numba's kernels call the C library's sin and cos one point at a time; LLVM's optimised
    entries compute them four at a time: such a graph answers with LLVM's unoptimised code while
    its optimised code compiles, and stays LLVM's."""
    k = compiler.compile_gradient("x * sin(y) + cos(x)")
    args = {"x": np.linspace(-1, 1, 5), "y": 0.25}
    first = k.value_and_grad(**args)
    assert k._uses_llvm() and k.tier == "llvm-O0"
    assert k.wait(timeout=300)
    final = k._auto("ass", "value_and_grad", 5)
    assert isinstance(final, LLVMModule) and final.optimised("value_and_grad")
    assert_same_results(k.value_and_grad(**args), first)
    assert not compiler.compile_gradient("x * tanh(y)")._uses_llvm()


def test_small_graphs_answer_at_once_in_auto(private_cache):
    k = compiler.compile_gradient("x * y")
    assert k.value_and_grad(x=2.0, y=3.0) == (6.0, {"x": 3.0, "y": 2.0})
    assert k.tier in ("llvm-O0", "numba")


def test_a_failed_background_compile_warns_and_keeps_the_stand_in(private_cache, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("codegen exploded")

    monkeypatch.setattr(numba_source, "generate", broken)
    k = compiler.compile_gradient("x * tanh(y) - y")
    args = {"x": np.arange(4.0), "y": 0.5}
    first = k.value_and_grad(**args)
    assert not k.wait(timeout=300)
    with pytest.warns(RuntimeWarning, match="codegen exploded"):
        again = k.value_and_grad(**args)
    assert k.tier == "llvm-O0"  # LLVM's code goes on answering
    assert_same_results(again, first)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, not at every call
        k.value_and_grad(**args)
    assert not list(private_cache.glob("k_*.py"))  # nothing half-built stays cached


def test_a_background_compile_error_in_numba_discards_the_entry(private_cache, monkeypatch):
    real = numba_source.generate

    def untypable(*args, **kwargs):
        return real(*args, **kwargs).replace(" = tanh(", " = math.no_such_function(")

    monkeypatch.setattr(numba_source, "generate", untypable)
    k = compiler.compile_gradient("tanh(x) * y")
    k.value_and_grad(x=np.arange(3.0), y=2.0)
    assert not k.wait(timeout=300)
    with pytest.warns(RuntimeWarning, match="background"):
        value, grads = k.value_and_grad(x=np.arange(3.0), y=2.0)
    assert close(value, np.tanh(np.arange(3.0)) * 2.0)
    assert not list(private_cache.glob("k_*.py"))


def test_mode_is_checked():
    with pytest.raises(ValueError, match="mode"):
        compiler.compile_gradient("x", mode="fast")


def test_background_jobs_compile_the_signatures_calls_use(private_cache, monkeypatch):
    """The background compile and a call share one Numba signature: no second compile."""
    monkeypatch.setattr(numba_source, "SPLIT_LINES", 4)  # segments too
    k = compiler.compile_gradient("x * tanh(y) + exp(-x * y) / (1 + y * y)")
    args = {"x": np.linspace(-1, 1, 50), "y": 0.25}
    k.value_and_grad(**args)
    assert k.wait(timeout=300)
    k.value_and_grad(**args)
    module = next(iter(k._jobs.values())).module
    for name in module.SIGNATURES["value_and_grad"]:
        assert len(getattr(module, name).signatures) == 1, name
    assert background.load_cached(module, "value_and_grad")


# ------------------------------------------------------------------ a warm cache in a new process
WARM_CHILD = """
import json, sys
import numpy as np
import compiler, runtime.instant
from numba.core.dispatcher import Dispatcher
from runtime import cache

k = compiler.compile_gradient(sys.argv[1])
args = dict(x=np.linspace(-1, 1, 5), y=0.5)
value, _ = k.value_and_grad(**args)
first = k.tier
ready = k.wait(300)
k.value_and_grad(**args)
hits = misses = 0
for name, module in cache._loaded.items():
    for obj in vars(module).values():
        if isinstance(obj, Dispatcher) and module.__name__.startswith("_symgrad_k_"):
            hits += sum(obj.stats.cache_hits.values())
            misses += sum(obj.stats.cache_misses.values())
print(json.dumps({"first": first, "ready": ready, "last": k.tier, "hits": hits,
                  "misses": misses, "machine": bool(runtime.instant._machines),
                  "value": list(value)}))
"""
WIDE = " + ".join(f"tanh(x * {i} + y) * exp(-y * {i})" for i in range(1, 8))  # 62 ops


def test_a_warm_cache_makes_the_next_process_start_compiled(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "SYMGRAD_CACHE_DIR": str(tmp_path / "cache")}
    root = Path(__file__).resolve().parent.parent

    def child() -> dict:
        proc = subprocess.run(
            [sys.executable, "-c", WARM_CHILD, WIDE],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    cold = child()
    # cold: LLVM's code answers (no virtual machine needed), Numba's kernel takes over
    assert cold["first"] == "llvm-O0" and cold["ready"] and cold["last"] == "numba"
    assert not cold["machine"]
    assert cold["misses"] >= 1
    warm = child()
    assert warm["first"] == "numba" and warm["last"] == "numba"
    assert warm["misses"] == 0 and warm["hits"] >= 1
    assert not warm["machine"]  # only import and load: the instant tier was never needed
    assert close(warm["value"], cold["value"])


# ------------------------------------------------------------------ auto on tensor programs
NET = "sum((maximum(0, X @ W1) @ W2 - Y) ** 2) / B"
NET_SHAPES = {"X": ("B", "D"), "W1": ("D", "H"), "W2": ("H", "C"), "Y": ("B", "C")}


def _net_inputs():
    rng = np.random.default_rng(3)
    return {n: rng.standard_normal(s) for n, s in zip(NET_SHAPES, [(5, 4), (4, 3), (3, 2), (5, 2)])}


def test_tensor_auto_answers_with_numpy_then_switches_to_the_compiled_module(private_cache):
    k = compiler.compile_gradient(NET, shapes=NET_SHAPES)
    assert k.requested_mode == "auto" == k.mode
    args = _net_inputs()
    first = k.value_and_grad(**args)
    assert k.tier == "numpy"
    assert k.wait(timeout=300)
    second = k.value_and_grad(**args)
    assert k.tier == "numba"
    value, pullback = k.vjp(**args)
    assert_same_results(first, second)
    assert_same_results((value, pullback()), second)
    assert "def vg_loop0" in k.source  # the compiled tier's source, whichever tier answered
    # on disk now: a new kernel (as in a new process) starts compiled, nothing in the background
    cache._loaded.clear()
    again = compiler.compile_gradient(NET, shapes=NET_SHAPES)
    assert_same_results(again.value_and_grad(**args), second)
    assert again.tier == "numba" and again._job is None
    # loaded, it answers without looking at the disk again (a call's overhead counts)
    shutil.rmtree(private_cache)
    assert_same_results(again.value_and_grad(**args), second)
    assert again.tier == "numba"


def test_tensor_auto_failed_background_compile_warns_and_stays_instant(private_cache, monkeypatch):
    import compiler.codegen.tensor_source as tensor_source

    real = tensor_source.generate_tensor

    def broken(adj, title, fused):
        if fused:
            raise RuntimeError("codegen exploded")
        return real(adj, title, fused)

    monkeypatch.setattr(tensor_source, "generate_tensor", broken)
    k = compiler.compile_gradient(NET, shapes=NET_SHAPES)
    args = _net_inputs()
    first = k.value_and_grad(**args)
    assert not k.wait(timeout=300)
    with pytest.warns(RuntimeWarning, match="codegen exploded"):
        again = k.value_and_grad(**args)
    assert k.tier == "numpy"
    assert_same_results(again, first)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, not at every call
        k.value_and_grad(**args)
    assert len(list(private_cache.glob("t_*.py"))) == 1  # the instant module; nothing half-built


def test_an_entry_put_in_the_table_by_hand_gets_a_machine_of_its_own():
    """An entry added to the table past ``register`` (as a test's monkeypatch does) shifts the
    op codes of the machine's own instructions: the program must run on a machine built for that
    table, never on the one built before (which read its codes as other instructions and crashed
    the process). In a child, so a crash fails the test instead of ending the run."""
    script = (
        "import dataclasses, numpy as np, compiler\n"
        "from compiler.ir.registry import OPS\n"
        "X = np.linspace(0.1, 1, 5)\n"
        "print(compiler.compile_gradient('exp(x) * 2', mode='instant')(x=X).tolist())\n"
        "OPS['by_hand'] = dataclasses.replace(OPS['exp'], name='by_hand')\n"
        "k = compiler.compile_gradient(lambda x: x.apply('by_hand', x) * 2, mode='instant')\n"
        "print(k(x=X).tolist())\n"
        "del OPS['by_hand']\n"
        "print(compiler.compile_gradient('exp(x) * 3', mode='instant')(x=X).tolist())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    x = np.linspace(0.1, 1, 5)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    np.testing.assert_allclose(lines, [2 * np.exp(x), 2 * np.exp(x), 3 * np.exp(x)], rtol=1e-15)

"""The compiled tier's LLVM backend (``compiler/codegen/llvm_ir.py``, ``runtime/llvm_tier.py``).

Large graphs compile to LLVM IR instead of Numba source. The backend must give the numbers the
other tiers give — every builtin op at special values (±inf, nan, ±0, ties, kinks), gates, random
expressions through every entry of the Kernel API — and stay bounded: chunks, temporaries, sums of
scalar inputs' gradients across blocks and threads, the disk cache. Here the threshold is forced
to 0 so small graphs take the LLVM path; the instant tier (checked against the Numba tier and the
SymPy oracles by ``test_instant``) and NumPy are the references.
"""

from __future__ import annotations

import numpy as np
import pytest
import test_oracle as oracle
from hypothesis import given, settings
from test_instant import SETTINGS, assert_same_results, chain, close

import compiler
from compiler.codegen import llvm_ir, llvm_ops
from compiler.ir.registry import OPS
from runtime import llvm_tier, policy
from runtime.instant import vm_source


@pytest.fixture(autouse=True)
def llvm_everywhere(monkeypatch, tmp_path):
    """Every compiled kernel of these tests is LLVM's, cached in a fresh directory."""
    monkeypatch.setattr(policy, "LLVM_OPS", -1)
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path / "cache"))


def tiers(source, **kwargs):
    """The same function on the LLVM backend and on the instant tier."""
    k = compiler.compile_gradient(source, mode="compiled", **kwargs)
    assert k._uses_llvm() and "define void @value_and_grad(" in k.llvm_source
    return k, compiler.compile_gradient(source, mode="instant", **kwargs)


# ------------------------------------------------------------------ every builtin op
SPECIAL = np.array(
    [-np.inf, -1000.0, -37.5, -2.5, -1.0, -0.5, -0.0, 0.0, 1e-300, 0.5, 1.0, 2.0, 37.5, 1000.0]
    + [np.inf, np.nan]
)
UNARY = {
    "neg": "-x",
    "exp": "exp(x)",
    "log": "log(x)",
    "log1p": "log1p(x)",
    "expm1": "expm1(x)",
    "sqrt": "sqrt(x)",
    "sin": "sin(x)",
    "cos": "cos(x)",
    "tan": "tan(x)",
    "abs": "abs(x)",
    "sign": "sign(x)",
    "sigmoid": "sigmoid(x)",
    "tanh": "tanh(x)",
    "softplus": "softplus(x)",
    "logsigmoid": "logsigmoid(x)",
    "relu": "relu(x)",
}
BINARY = {
    "add": "x + y",
    "sub": "x - y",
    "mul": "x * y",
    "div": "x / y",
    "pow": "x ** y",
    "maximum": "maximum(x, y)",
    "minimum": "minimum(x, y)",
    "heaviside": "heaviside(x, y)",
    "xlogy": "xlogy(x, y)",
}


def test_every_builtin_op_has_native_code_and_the_cases_here_are_ops():
    builtin = {op.name for op in vm_source.builtin_ops()}
    for op in builtin:  # its lowering printed as a function, for both kinds of chunk
        for vector in (False, True):
            assert llvm_ops.op_function(op, vector).symbol == f"op.{op}.f64"
    assert set(UNARY) | set(BINARY) <= builtin


def _numpy(op, *args):
    with np.errstate(all="ignore"):
        return OPS[op].numpy(*args)


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary_ops_at_special_values(op):
    k, instant = tiers(UNARY[op])
    got = k.value_and_grad(x=SPECIAL)
    assert close(got[0], _numpy(op, SPECIAL), 1e-14), (op, got[0])
    assert_same_results(got, instant.value_and_grad(x=SPECIAL))
    assert close(k(x=SPECIAL), got[0], 0)


@pytest.mark.parametrize("op", sorted(BINARY))
def test_binary_ops_at_special_values(op):
    x, y = (a.ravel() for a in np.meshgrid(SPECIAL, SPECIAL))
    k, instant = tiers(BINARY[op])
    got = k.value_and_grad(x=x, y=y)
    assert close(got[0], _numpy(op, x, y), 1e-14), op
    assert_same_results(got, instant.value_and_grad(x=x, y=y))


def test_kinks_follow_the_table():
    k, _ = tiers("relu(x) + maximum(x, y) + sqrt(x) + abs(x)")
    value, grads = k.value_and_grad(x=np.array([0.0, 0.0]), y=np.array([0.0, 1.0]))
    # relu'(0) = 0, a tie gives each operand half, sqrt'(0) = inf, abs'(0) = 0
    assert grads["x"][0] == np.inf and grads["y"][0] == 0.5
    k, _ = tiers("relu(x) + maximum(x, y) + abs(x)")
    _, grads = k.value_and_grad(x=np.array([0.0, 0.0]), y=np.array([0.0, 1.0]))
    assert grads["x"].tolist() == [0.5, 0.0] and grads["y"].tolist() == [0.5, 1.0]


def test_nan_propagates_through_maximum_and_minimum_either_side():
    k, _ = tiers("maximum(x, y) + minimum(y, x)")
    value = k(x=np.array([np.nan, 1.0, np.nan]), y=np.array([1.0, np.nan, np.nan]))
    assert np.isnan(value).all()


def test_stable_gates_at_extremes():
    k, _ = tiers("sigmoid(x) + softplus(x) + logsigmoid(x)")
    x = np.array([-1000.0, 1000.0])
    value, grads = k.value_and_grad(x=x)
    assert value.tolist() == [-1000.0, 1001.0]  # 0 + 0 - 1000, 1 + 1000 + 0
    assert grads["x"].tolist() == [1.0, 1.0]  # sigmoid' 0 + sigma 0 + sigma(-x) 1, and 0 + 1 + 0


# ------------------------------------------------------------------ gates and random graphs
@pytest.fixture
def swish():
    compiler.register_gate("swish_llvm", "x * sigmoid(x)")
    compiler.register_gate("sq_llvm", "exp(2 * x)", grad_in_terms_of_output="2 * y")
    yield
    compiler.unregister_gate("sq_llvm")
    compiler.unregister_gate("swish_llvm")


def test_user_gates_are_expanded_like_the_instant_tier(swish):
    k, instant = tiers("swish_llvm(x) * sq_llvm(y) + swish_llvm(x * y)")
    assert "swish_llvm" in k.llvm_source  # the gate's line is named in a comment
    x, y = np.meshgrid(SPECIAL, SPECIAL[::3])
    assert_same_results(k.value_and_grad(x=x, y=y), instant.value_and_grad(x=x, y=y))


@settings(max_examples=30, **SETTINGS)
@given(e=oracle.expressions(), env=oracle.points)
def test_random_expressions_agree_with_numpy_and_the_instant_tier(e, env):
    k, instant = tiers(e.text, inputs=oracle.VARS)
    value_np, ok = oracle.numpy_value(e, env)
    got = k.value_and_grad(**env)
    assert close(got[0][ok], np.broadcast_to(value_np, ok.shape)[ok], 1e-12), e.text
    assert_same_results(got, instant.value_and_grad(**env))
    seed = np.linspace(-1.0, 2.0, oracle.N_POINTS)
    value, pullback = k.vjp(**env)
    assert_same_results((value, pullback(seed)), instant.value_and_grad(**env, seed=seed))


# ------------------------------------------------------------------ chunks, blocks, sums
MIXED = "1/(1+exp(-(w0*x0+w1*x1+w2))) + sin(x0) * maximum(w0, x1) - x1 ** 3 / (1 + w2 * w2)"


@pytest.mark.parametrize("n", [0, 1, 7, 1000, 40_000])
def test_small_chunks_scalar_inputs_threads_and_serial(n, monkeypatch):
    monkeypatch.setattr(llvm_ir, "CHUNK_INSTRUCTIONS", 5)
    k, instant = tiers(MIXED)
    assert k.llvm_source.count("define void @value_and_grad.") > 4
    rng = np.random.default_rng(n)
    args = dict(
        w0=rng.standard_normal(n),
        x0=0.3,  # scalar inputs: gradients summed over blocks
        w1=rng.standard_normal(n),
        x1=-1.2,
        w2=rng.standard_normal(n),
    )
    for work in (0, 1 << 62):  # threads over blocks, and serial
        monkeypatch.setattr(policy, "PARALLEL_WORK", work)
        seed = rng.standard_normal(n)
        want = instant.value_and_grad(**args, seed=seed)
        assert_same_results(k.value_and_grad(**args, seed=seed), want)
        assert_same_results((k(**args), {}), (want[0], {}))
        value, pullback = k.vjp(**args)
        assert_same_results((value, pullback(seed)), want)


def test_broadcasting_and_out_buffers():
    k, instant = tiers(MIXED)
    rng = np.random.default_rng(5)
    args = dict(
        w0=rng.standard_normal((3, 1)),
        x0=rng.standard_normal(4),
        w1=rng.standard_normal((3, 4)),
        x1=0.5,
        w2=rng.standard_normal((1, 4)),
    )
    value = np.empty((3, 4))
    grads = {n: np.empty(np.shape(v)) for n, v in args.items()}
    got = k.value_and_grad(**args, seed=2.0, out=(value, grads))
    assert got[0] is value
    assert_same_results(got, instant.value_and_grad(**args, seed=2.0))


def test_a_2000_node_graph_compiles_and_matches_the_instant_tier():
    k, instant = tiers(lambda x, y: chain(x * y, 333))
    assert len(k.graph) >= 2000
    x, y = np.linspace(-1.5, 1.5, 301), 0.7
    assert_same_results(k.value_and_grad(x=x, y=y), instant.value_and_grad(x=x, y=y))
    assert k.mode == "compiled" and k.tier == "llvm-O0"  # beyond OPTIMISE_NODES: no pipeline


def test_source_names_each_node():
    k = compiler.compile_gradient("(x + y) * z", mode="compiled")
    source = k.llvm_source
    calls = (
        "%t0 = call double @op.add.f64(double %x, double %y)",
        "%t1 = call double @op.mul.f64(double %t0, double %z)",
    )
    for line in calls:
        assert line in source
    for entry in ("forward", "value_and_grad", "forward_save", "backward"):
        assert f"define void @{entry}(" in source


def test_outputs_that_are_inputs_or_constants():
    k, instant = tiers("x * 2 + y", wrt=["x", "y"])
    args = dict(x=np.arange(5.0), y=1.5)
    assert_same_results(k.value_and_grad(**args), instant.value_and_grad(**args))


# ------------------------------------------------------------------ cache and tiers
def test_a_new_kernel_loads_the_object_code_from_disk(monkeypatch, tmp_path):
    f = lambda x: chain(x, 4)  # noqa: E731
    x = np.linspace(-1, 1, 9)
    want = compiler.compile_gradient(f, mode="compiled").value_and_grad(x=x)
    assert list((tmp_path / "cache").glob("llvm_*.bin"))

    def refuse(texts, stopping=None):
        raise AssertionError("compiled again despite the cache")

    with monkeypatch.context() as m:
        m.setattr(llvm_tier, "compile_objects", refuse)
        assert_same_results(compiler.compile_gradient(f, mode="compiled").value_and_grad(x=x), want)
    for path in (tmp_path / "cache").glob("llvm_*.bin"):  # a damaged entry is compiled again
        raw = bytearray(path.read_bytes())
        raw[-10] ^= 0xFF
        path.write_bytes(bytes(raw))
    assert_same_results(compiler.compile_gradient(f, mode="compiled").value_and_grad(x=x), want)


def test_auto_answers_with_the_instant_tier_then_switches():
    k = compiler.compile_gradient(lambda x: chain(x, 8), mode="auto")
    x = np.linspace(-1, 1, 50)
    first = k.value_and_grad(x=x)
    assert k.tier == "vm"
    assert k.wait(60)
    assert_same_results(k.value_and_grad(x=x), first)
    assert k.tier == "llvm-O3"
    again = compiler.compile_gradient(lambda x: chain(x, 8), mode="auto")
    again.value_and_grad(x=x)
    assert again.tier == "llvm-O3" and not again._jobs  # on disk: nothing in the background


EXIT_SCRIPT = """
import sys, time
import numpy as np
import compiler
from runtime import background, llvm_tier, policy
background.EXIT_WAIT = 1.0  # the exiting interpreter waits this long for the compile thread
policy.LLVM_OPS, llvm_tier.CHUNKS_PER_MODULE = -1, int(sys.argv[1])
def chain(u, k):
    for _ in range(k):
        u = compiler.ops.sin(u) * u + compiler.ops.exp(-u * u)
    return u
k = compiler.compile_gradient(lambda x: chain(x, int(sys.argv[2])), mode="auto")
value, grads = k.value_and_grad(x=np.linspace(-1, 1, 7))
assert k.tier == "vm" and np.isfinite(value).all()
"""


def test_exiting_during_a_background_llvm_compile_is_clean(tmp_path):
    """A script that ends while auto's LLVM compile runs exits at once and cleanly: the compile
    goes in waves of bounded modules and stops between two (C++ statics torn down under a thread
    still inside LLVM would abort the process), and nothing half-built is cached."""
    import os
    import subprocess
    import sys
    import time

    env = {**os.environ, "SYMGRAD_CACHE_DIR": str(tmp_path / "exit-cache")}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, "1", "1500"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Assertion" not in done.stderr
    assert time.perf_counter() - start < 60
    stored = list((tmp_path / "exit-cache").glob("llvm_*.bin"))
    assert all(path.stat().st_size > 0 for path in stored)

"""The gradient of a single-number input, summed over the points (a fit's parameters over its
events), in the Numba tier: blocks of terms summed in eight lanes (``runtime.jit.add_lanes``).

The oracle is SymPy's derivative of the same expression written here, evaluated point by point
by NumPy and added exactly (``math.fsum``); the kernel's sum must be that to rounding, give the
same bits serial and threaded, and its loop must be vectorised.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import sympy as sp

import compiler
from runtime import policy
from runtime.jit import BLOCK

x, a, b = sp.symbols("x a b", real=True)
CASES = [
    ("log(1 + exp(-x*(a*x + b)))", sp.log(1 + sp.exp(-x * (a * x + b)))),
    ("exp(x*a) * b", sp.exp(x * a) * b),
    ("logaddexp(a*x, b)", sp.log(sp.exp(a * x) + sp.exp(b))),
    ("0.5*((x - a)*exp(-b))**2 + b", ((x - a) * sp.exp(-b)) ** 2 / 2 + b),
]
POINT = {"a": 0.7, "b": -0.3}


def _exact(expr, xs: np.ndarray, wrt) -> float:
    """Σ_points ∂expr/∂wrt, each term from SymPy's derivative, added exactly."""
    term = sp.lambdify([x, a, b], sp.diff(expr, wrt), "numpy")
    return math.fsum(np.broadcast_to(term(xs, POINT["a"], POINT["b"]), xs.shape).tolist())


def _kernel(text: str):
    return compiler.compile_gradient(text, inputs=["x", "a", "b"], wrt=["a", "b"], mode="compiled")


@pytest.mark.parametrize("text, expr", CASES, ids=[t for t, _ in CASES])
def test_the_sum_is_the_exact_sum_to_rounding(text, expr):
    xs = np.random.default_rng(5).normal(0.0, 2.0, 100_003)
    k = _kernel(text)
    grads = k.grad(x=xs, **POINT)
    assert k.tier == "numba"
    for name, symbol in (("a", a), ("b", b)):
        want = _exact(expr, xs, symbol)
        scale = math.fsum(np.abs(np.broadcast_to(
            sp.lambdify([x, a, b], sp.diff(expr, symbol), "numpy")(xs, **POINT), xs.shape
        )).tolist())  # fmt: skip
        assert abs(float(grads[name]) - want) <= 1e-13 * scale, name


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, BLOCK - 1, BLOCK, BLOCK + 1, 8 * BLOCK + 5, 70_001])
def test_serial_and_threaded_sums_have_the_same_bits(n):
    """One partial sum per block, added in block order: the threads that ran do not change it."""
    text, expr = CASES[0]
    xs = np.random.default_rng(n).normal(0.0, 2.0, n)
    k = _kernel(text)
    threaded = k.grad(x=xs, **POINT)
    with policy.serial():
        serial = k.grad(x=xs, **POINT)
    for name in ("a", "b"):
        assert float(threaded[name]) == float(serial[name]), name
    assert float(threaded["a"]) == pytest.approx(_exact(expr, xs, a), rel=1e-12, abs=1e-300)


def test_float32_sums_accumulate_in_float64():
    text, expr = CASES[1]
    xs = np.random.default_rng(2).normal(0.0, 1.0, 50_000).astype(np.float32)
    grads = _kernel(text).grad(x=xs, a=np.float32(0.7), b=np.float32(-0.3))
    assert grads["a"].dtype == np.float32
    want = _exact(expr, xs.astype(np.float64), a)
    assert float(grads["a"]) == pytest.approx(want, rel=1e-5)  # the float32 terms' own rounding


#: A vector add of doubles, of any width: what the test means is "vectorised".
VECTOR_FADD = re.compile(r"fadd(?: [a-z]+)* <\d+ x double>")


def test_the_summing_loop_vectorises(tmp_path, monkeypatch):
    """The loop that sums a single-number input's gradient is vectorised: its terms go to a row
    per block, then to eight lanes (a running sum would keep the loop scalar: no fast-math)."""
    from runtime import background

    assert background.wait_idle()
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path))  # compiled here: its IR is kept
    k = _kernel("exp(x*a) * b")
    with policy.serial():
        k.grad(x=np.linspace(-1.0, 1.0, 4096), **POINT)
    module = k._engine("numba", ("asss", "float64"))
    ir = "\n".join(module.value_and_grad_serial.inspect_llvm().values())
    assert VECTOR_FADD.search(ir)
    assert "@exp(" not in ir and "@llvm.exp" not in ir  # the op's branch-free lowering


@pytest.mark.parametrize("mode", ["instant", "compiled", "auto"])
@pytest.mark.parametrize("text, expr", CASES[:3], ids=[t for t, _ in CASES[:3]])
def test_the_total_value_is_summed_in_the_loop(text, expr, mode):
    """``total_value_and_grad`` sums the value in the kernel's loop (the pattern's value kind
    "s"), never an array of the points' values: the exact sum to rounding on every engine, and
    the gradients those of ``grad``."""
    xs = np.random.default_rng(11).normal(0.0, 2.0, 50_001)
    k = compiler.compile_gradient(text, inputs=["x", "a", "b"], wrt=["a", "b"], mode=mode)
    k.grad(x=xs, **POINT)
    k.wait()
    total, grads = k.total_value_and_grad(x=xs, **POINT)
    f = sp.lambdify([x, a, b], expr, "numpy")
    terms = np.broadcast_to(f(xs, POINT["a"], POINT["b"]), xs.shape)
    want = math.fsum(terms.tolist())
    assert abs(float(total) - want) <= 1e-13 * math.fsum(np.abs(terms).tolist())
    assert grads == pytest.approx(k.grad(x=xs, **POINT), rel=1e-13)
    empty, zeros = k.total_value_and_grad(x=xs[:0], **POINT)
    assert empty == 0.0 and zeros == {"a": 0.0, "b": 0.0}

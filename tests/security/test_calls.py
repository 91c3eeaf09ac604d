"""Calls that must never answer wrongly or swallow the user's Ctrl-C (issue 19, runtime items).

- a ``vjp``'s pullback answers for the inputs given to ``vjp``, whatever the caller does to its
  arrays in between (every tier, tensor kernels too);
- ``out=`` buffers that share memory are refused by name (each would overwrite another's results),
  and a wrongly shaped ``out`` says the form it expects;
- Ctrl-C (KeyboardInterrupt) during a first compile reaches the caller as itself, and leaves
  nothing half-built in the cache;
- Numba imported from many threads at once (auto mode's tensor programs) never shows a thread a
  half-imported module.

Expected numbers come from NumPy formulas of the derivatives, written by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import compiler
from compiler.errors import InputError
from runtime import cache, llvm_jit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "_loaded", {})
    return tmp_path / "cache"


# ------------------------------------------------------------------ vjp keeps its inputs
EXPR = "x * x * y + exp(x)"


def want_grads(x, y, ct):
    return {"x": (2 * x * y + np.exp(x)) * ct, "y": x * x * ct}


@pytest.mark.parametrize("mode", ["compiled", "instant", "auto"])
@pytest.mark.parametrize("shape", [(7,), (3, 4)])
def test_a_pullback_uses_the_inputs_given_to_vjp(private_cache, mode, shape):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(shape), rng.standard_normal(shape)
    x, y = a.copy(), b.copy()
    k = compiler.compile_gradient(EXPR, mode=mode)
    value, pullback = k.vjp(x=a, y=b)
    a[...] = 0.0
    b[...] = 5.0
    got = pullback(2.0)
    for name, g in want_grads(x, y, 2.0).items():
        np.testing.assert_allclose(got[name], g, rtol=1e-12)
    np.testing.assert_allclose(value, x * x * y + np.exp(x), rtol=1e-12)


@pytest.mark.parametrize("mode", ["compiled", "instant", "auto"])
def test_a_tensor_pullback_uses_the_inputs_given_to_vjp(private_cache, mode):
    rng = np.random.default_rng(2)
    W, v = rng.standard_normal((4, 4)), rng.standard_normal(4)
    W0, v0 = W.copy(), v.copy()
    shapes = {"W": ("n", "n"), "x": ("n",)}
    k = compiler.compile_gradient("sum(tanh(W @ x) * x)", shapes=shapes, mode=mode)
    _, pullback = k.vjp(W=W, x=v)
    W[...] = 0.0
    v[...] = 3.0
    got = pullback()
    t = np.tanh(W0 @ v0)
    dt0 = (1 - t * t) * v0
    np.testing.assert_allclose(got["x"], t + W0.T @ dt0, rtol=1e-12)
    np.testing.assert_allclose(got["W"], np.outer(dt0, v0), rtol=1e-12)


# ------------------------------------------------------------------ out= buffers
def _args():
    rng = np.random.default_rng(3)
    return {"x": rng.standard_normal(6), "y": rng.standard_normal(6)}


@pytest.mark.parametrize("mode", ["compiled", "instant"])
def test_out_buffers_that_share_memory_are_refused(private_cache, mode):
    k = compiler.compile_gradient(EXPR, mode=mode)
    args = _args()
    v, gx, gy = np.empty(6), np.empty(6), np.empty(6)
    with pytest.raises(InputError, match=r"the value and the gradient of 'x' share memory"):
        k.value_and_grad(**args, out=(v, {"x": v, "y": gy}))
    with pytest.raises(InputError, match=r"gradient of 'x' and the gradient of 'y' share"):
        k.value_and_grad(**args, out=(v, {"x": gx, "y": gx}))
    with pytest.raises(InputError, match="share memory"):
        k.grad(**args, out={"x": gx, "y": gx})
    buf = np.empty(12)
    with pytest.raises(InputError, match="share memory"):  # overlapping views of one array
        k.value_and_grad(**args, out=(buf[:6], {"x": buf[5:11], "y": gy}))
    # disjoint views of one array are fine, and give NumPy's numbers
    value, grads = k.value_and_grad(**args, out=(buf[:6], {"x": buf[6:], "y": gy}))
    want = want_grads(args["x"], args["y"], 1.0)
    np.testing.assert_allclose(buf[:6], args["x"] ** 2 * args["y"] + np.exp(args["x"]))
    np.testing.assert_allclose(buf[6:], want["x"])
    np.testing.assert_allclose(gy, want["y"])


def test_gradients_out_as_a_list_says_the_form_expected():
    k = compiler.compile_gradient(EXPR, mode="instant")
    gx, gy = np.empty(6), np.empty(6)
    with pytest.raises(InputError, match=r"\(value_buffer, \{input: gradient_buffer\}\).*dict"):
        k.value_and_grad(**_args(), out=(np.empty(6), [gx, gy]))
    with pytest.raises(InputError, match="dict"):
        k.grad(**_args(), out=[gx, gy])


# ------------------------------------------------------------------ Ctrl-C during a compile
def test_ctrl_c_during_an_llvm_compile_propagates_and_caches_nothing(private_cache, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    k = compiler.compile_gradient("x * sin(y)", mode="compiled")  # sin: the LLVM tier
    with monkeypatch.context() as m:
        m.setattr(llvm_jit, "target_machine", interrupted)
        with pytest.raises(KeyboardInterrupt):
            k.value_and_grad(x=np.arange(3.0), y=0.5)
    assert not list(private_cache.glob("llvm_*.bin"))
    value, grads = k.value_and_grad(x=np.arange(3.0), y=0.5)  # and it compiles afterwards
    np.testing.assert_allclose(grads["x"], np.sin(0.5))


def test_ctrl_c_during_a_numba_compile_propagates(private_cache, monkeypatch):
    from numba.core.dispatcher import Dispatcher

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    k = compiler.compile_gradient("x * tanh(y)", mode="compiled")
    with monkeypatch.context() as m:
        m.setattr(Dispatcher, "_compile_for_args", interrupted)
        with pytest.raises(KeyboardInterrupt):
            k.value_and_grad(x=np.arange(3.0), y=0.5)
    value, grads = k.value_and_grad(x=np.arange(3.0), y=0.5)
    np.testing.assert_allclose(grads["x"], np.tanh(0.5))


# ------------------------------------------------------------------ Numba imported from threads
THREADS = """
import sys, threading
import numpy as np
import compiler

errors = []

def call(k, args):
    try:
        for _ in range(5):
            k.value_and_grad(**args)
    except BaseException as e:
        errors.append(repr(e))

for j in range(4):
    k = compiler.compile_gradient(
        f"sum(tanh(W @ x * {j + 1}) ** 2)", shapes={"W": ("n", "n"), "x": ("n",)}
    )
    args = dict(W=np.eye(3), x=np.ones(3))
    threads = [threading.Thread(target=call, args=(k, args)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
print(errors[:3])
sys.exit(1 if errors else 0)
"""


def test_many_threads_call_new_tensor_programs_in_auto_mode(tmp_path):
    """Each run is a fresh process (Numba not yet imported) with a fresh cache."""
    for run in range(3):
        env = {**os.environ, "SYMGRAD_CACHE_DIR": str(tmp_path / f"cache{run}")}
        done = subprocess.run(
            [sys.executable, "-c", THREADS],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


# ------------------------------------------------------------------ reused output arrays
@pytest.mark.parametrize("mode", ["compiled", "instant", "auto"])
def test_outputs_the_caller_still_holds_are_never_reused(private_cache, mode):
    """Large outputs come from a pool (``runtime.kernel.Pool``): an array, a view of it or a
    pullback's residuals that the caller still holds is never written by a later call."""
    n = (1 << 20) // 8 + 1  # large enough to be pooled
    rng = np.random.default_rng(4)
    k = compiler.compile_gradient(EXPR, mode=mode)
    xs = [rng.standard_normal(n) for _ in range(4)]
    y = rng.standard_normal(n)
    first = k.value_and_grad(x=xs[0], y=y)
    view = k(x=xs[1], y=y)[10:20]  # only a view of the value is kept
    value, pullback = k.vjp(x=xs[2], y=y)
    for _ in range(3):  # calls whose results are dropped at once: their arrays are reused
        k.value_and_grad(x=xs[3], y=y)
    grads = pullback()
    last = k.value_and_grad(x=xs[3], y=y)
    for x, (v, g) in zip((xs[0], xs[2], xs[3]), (first, (value, grads), last)):
        np.testing.assert_allclose(v, x * x * y + np.exp(x), rtol=1e-12, atol=1e-12)
        for name, want in want_grads(x, y, 1.0).items():
            np.testing.assert_allclose(g[name], want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(view, (xs[1] * xs[1] * y + np.exp(xs[1]))[10:20], rtol=1e-12)
    assert not np.shares_memory(first[0], last[0]) and not np.shares_memory(value, last[0])


# ------------------------------------------------------------------ Python's round() of a traced value
@pytest.mark.parametrize("mode", ["compiled", "instant"])
def test_round_of_a_traced_value_is_numpys_round(private_cache, mode):
    """``round(x)`` in a traced callable was a bare TypeError; it is the ``round`` op: NumPy's
    round half to even, gradient 0 (a step function)."""
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 0.49999999999999994, 3.7, -2.2])
    k = compiler.compile_gradient(lambda x, y: round(x) * y, mode=mode)
    value, grads = k.value_and_grad(x=x, y=np.full_like(x, 3.0))
    np.testing.assert_array_equal(value, np.round(x) * 3.0)
    np.testing.assert_array_equal(grads["x"], np.zeros_like(x))
    np.testing.assert_array_equal(grads["y"], np.round(x))

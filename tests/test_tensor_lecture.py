"""The lecture's vectorized examples 4 and 5 (shared/LECTURE.md) through tensor kernels.

Example 4, f(x, W) = ||W x||^2, must give the lecture's numbers to 1e-12 from text and from
callables. Example 5, the homework's 2-layer sigmoid network, must give the gradients of the
lecture's hand-written NumPy lines (copied below as written) to 1e-10 relative, and 2,000 steps of
gradient descent with the compiled kernel must follow the hand-written loop's loss to 1e-8
relative at every step. Expected numbers come from the lecture or from those NumPy lines, never
from symgrad itself.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

import compiler
from compiler import ops

TOL = 1e-12

# --------------------------------------------------------------------------- example 4
# f(x, W) = ||W x||^2 with W = [[0.1, 0.5], [-0.3, 0.8]], x = [0.2, 0.4].
EX4_W = np.array([[0.1, 0.5], [-0.3, 0.8]])
EX4_X = np.array([0.2, 0.4])
EX4_Q = np.array([0.22, 0.26])  # q = W x
EX4_VALUE = 0.116
EX4_DQ = np.array([0.44, 0.52])  # df/dq = 2q
EX4_GRADS = {
    "W": np.array([[0.088, 0.176], [0.104, 0.208]]),  # 2 q x^T
    "x": np.array([-0.112, 0.636]),  # 2 W^T q
}
EX4_SHAPES = {"W": ("n", "n"), "x": ("n",)}

EX4_SOURCES = {
    "text": "sum((W @ x)**2)",
    "text-dot": "sum(dot(W, x) * dot(W, x))",
    "callable": lambda W, x: ops.sum((W @ x) ** 2),
    "callable-numpy": lambda W, x: np.sum(ops.matmul(W, x) ** 2),
}


@cache
def ex4_kernel(frontend: str):
    return compiler.compile_gradient(EX4_SOURCES[frontend], shapes=EX4_SHAPES)


def _check_grads(grads, expected, tol=TOL):
    assert set(grads) == set(expected)
    for name, g in expected.items():
        got = np.asarray(grads[name])
        assert got.shape == g.shape, name  # a gradient has its variable's shape
        np.testing.assert_allclose(got, g, rtol=0, atol=tol, err_msg=name)


@pytest.mark.parametrize("frontend", sorted(EX4_SOURCES))
def test_example4_value_and_grad(frontend):
    k = ex4_kernel(frontend)
    assert k.inputs == ("W", "x")
    value, grads = k.value_and_grad(W=EX4_W, x=EX4_X)
    assert isinstance(value, float)
    assert value == pytest.approx(EX4_VALUE, abs=TOL, rel=0)
    _check_grads(grads, EX4_GRADS)
    assert list(grads) == ["W", "x"]  # input order


@pytest.mark.parametrize("frontend", ["text", "callable"])
def test_example4_call_grad_vjp_and_positional(frontend):
    k = ex4_kernel(frontend)
    assert k(W=EX4_W, x=EX4_X) == pytest.approx(EX4_VALUE, abs=TOL, rel=0)
    assert k(EX4_W, EX4_X) == pytest.approx(EX4_VALUE, abs=TOL, rel=0)
    _check_grads(k.grad(W=EX4_W, x=EX4_X), EX4_GRADS)
    value, grads = k.value_and_grad(EX4_W, EX4_X)
    assert value == pytest.approx(EX4_VALUE, abs=TOL, rel=0)
    _check_grads(grads, EX4_GRADS)
    value, pullback = k.vjp(W=EX4_W, x=EX4_X)
    assert value == pytest.approx(EX4_VALUE, abs=TOL, rel=0)
    _check_grads(pullback(1.0), EX4_GRADS)
    _check_grads(pullback(-2.0), {n: -2.0 * g for n, g in EX4_GRADS.items()})
    # the seed is the upstream gradient dL/df: it scales every gradient, not the value
    value, grads = k.value_and_grad(W=EX4_W, x=EX4_X, seed=0.5)
    assert value == pytest.approx(EX4_VALUE, abs=TOL, rel=0)
    _check_grads(grads, {n: 0.5 * g for n, g in EX4_GRADS.items()})


def test_example4_inputs_are_not_modified():
    W, x = EX4_W.copy(), EX4_X.copy()
    ex4_kernel("text").value_and_grad(W=W, x=x)
    assert np.array_equal(W, EX4_W) and np.array_equal(x, EX4_X)


def test_example4_wrt_subset():
    k = compiler.compile_gradient(EX4_SOURCES["text"], shapes=EX4_SHAPES, wrt=["W"])
    value, grads = k.value_and_grad(W=EX4_W, x=EX4_X)
    assert value == pytest.approx(EX4_VALUE, abs=TOL, rel=0)
    _check_grads(grads, {"W": EX4_GRADS["W"]})


def test_example4_gate_by_gate():
    """The lecture's intermediate steps: q = W x = [0.22, 0.26]; the ||.||^2 gate sends back
    2q = [0.44, 0.52]; the matmul gate turns that upstream gradient into 2 q x^T and 2 W^T q."""
    kq = compiler.compile_gradient("W @ x", shapes=EX4_SHAPES)
    q = kq(W=EX4_W, x=EX4_X)
    assert isinstance(q, np.ndarray) and q.shape == (2,)
    np.testing.assert_allclose(q, EX4_Q, rtol=0, atol=TOL)
    value, grads = kq.value_and_grad(W=EX4_W, x=EX4_X, seed=EX4_DQ)
    np.testing.assert_allclose(value, EX4_Q, rtol=0, atol=TOL)
    _check_grads(grads, EX4_GRADS)
    q_out, pullback = kq.vjp(W=EX4_W, x=EX4_X)
    np.testing.assert_allclose(q_out, EX4_Q, rtol=0, atol=TOL)
    _check_grads(pullback(EX4_DQ), EX4_GRADS)

    kn = compiler.compile_gradient("sum(q**2)", shapes={"q": ("n",)})
    value, grads = kn.value_and_grad(q=EX4_Q)
    assert value == pytest.approx(EX4_VALUE, abs=TOL, rel=0)
    _check_grads(grads, {"q": EX4_DQ})


# --------------------------------------------------------------------------- example 5
# The homework's 2-layer network: h = sigmoid(x w1), y_pred = h w2, loss = sum((y_pred - y)^2).
N, D_IN, H, D_OUT = 64, 1000, 100, 10
LEARNING_RATE = 1e-4
STEPS = 2000
EX5_TEXT = "sum((1/(1+exp(-(x @ w1))) @ w2 - y)**2)"
EX5_SHAPES = {"x": ("N", "D_in"), "w1": ("D_in", "H"), "w2": ("H", "D_out"), "y": ("N", "D_out")}


def _ex5_callable(x, w1, w2, y):
    return ops.sum((1 / (1 + ops.exp(-(x @ w1))) @ w2 - y) ** 2)


def ex5_data(seed: int = 0):
    """The homework's set-up: random data and weights, all standard normal (np.random.randn)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D_IN))
    y = rng.standard_normal((N, D_OUT))
    w1 = rng.standard_normal((D_IN, H))
    w2 = rng.standard_normal((H, D_OUT))
    return x, y, w1, w2


def lecture_step(x, y, w1, w2, all_inputs=True):
    """The lecture's hand-written forward and backward, line by line."""
    h = 1 / (1 + np.exp(-x.dot(w1)))
    y_pred = h.dot(w2)
    loss = np.square(y_pred - y).sum()
    grad_y_pred = 2.0 * (y_pred - y)
    grad_w2 = h.T.dot(grad_y_pred)
    grad_h = grad_y_pred.dot(w2.T)
    grad_w1 = x.T.dot(grad_h * h * (1 - h))
    if not all_inputs:
        return loss, {"w1": grad_w1, "w2": grad_w2}
    # the same chain rule, one step further, for the two inputs the homework does not train
    grad_x = (grad_h * h * (1 - h)).dot(w1.T)
    grad_y = -grad_y_pred
    return loss, {"x": grad_x, "w1": grad_w1, "w2": grad_w2, "y": grad_y}


@cache
def ex5_kernel(frontend: str, wrt: tuple[str, ...] | None = None):
    source = EX5_TEXT if frontend == "text" else _ex5_callable
    return compiler.compile_gradient(
        source, shapes=EX5_SHAPES, wrt=None if wrt is None else list(wrt)
    )


def _assert_close_to_max(got, expected, name, rtol=1e-10):
    """rtol element-wise, plus an atol of rtol * max|expected| (for entries that cancel)."""
    got = np.asarray(got)
    assert got.shape == expected.shape, name
    atol = rtol * float(np.max(np.abs(expected)))
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("frontend", ["text", "callable"])
def test_example5_gradients_equal_the_lecture_lines(frontend):
    x, y, w1, w2 = ex5_data()
    loss, expected = lecture_step(x, y, w1, w2)
    k = ex5_kernel(frontend)
    assert k.inputs == ("x", "w1", "w2", "y")
    value, grads = k.value_and_grad(x=x, w1=w1, w2=w2, y=y)
    assert isinstance(value, float)
    assert value == pytest.approx(loss, rel=1e-10, abs=0)
    assert set(grads) == set(expected)
    for name in ("w1", "w2", "x", "y"):
        _assert_close_to_max(grads[name], expected[name], name)
    assert k(x, w1, w2, y) == pytest.approx(loss, rel=1e-10, abs=0)


def test_example5_second_seed_and_unsaturated_weights():
    """Another draw, and small weights (sigmoid far from saturation): same agreement."""
    k = ex5_kernel("text", ("w1", "w2"))
    for seed, scale in ((1, 1.0), (2, 1e-2)):
        x, y, w1, w2 = ex5_data(seed)
        w1, w2 = scale * w1, scale * w2
        loss, expected = lecture_step(x, y, w1, w2)
        value, grads = k.value_and_grad(x=x, w1=w1, w2=w2, y=y)
        assert value == pytest.approx(loss, rel=1e-10, abs=0)
        assert set(grads) == {"w1", "w2"}
        for name in ("w1", "w2"):
            _assert_close_to_max(grads[name], expected[name], name)


def test_example5_training_follows_the_hand_written_loop():
    """2,000 steps of w -= 1e-4 * grad: the compiled kernel's loss trajectory stays within 1e-8
    (relative) of the hand-written loop's at every step."""
    x, y, w1, w2 = ex5_data()
    k = ex5_kernel("text", ("w1", "w2"))
    hand_w1, hand_w2 = w1.copy(), w2.copy()
    ours_w1, ours_w2 = w1.copy(), w2.copy()
    hand_losses = np.empty(STEPS)
    our_losses = np.empty(STEPS)
    for t in range(STEPS):
        loss, g = lecture_step(x, y, hand_w1, hand_w2, all_inputs=False)
        hand_losses[t] = loss
        hand_w1 -= LEARNING_RATE * g["w1"]
        hand_w2 -= LEARNING_RATE * g["w2"]

        value, grads = k.value_and_grad(x=x, w1=ours_w1, w2=ours_w2, y=y)
        assert set(grads) == {"w1", "w2"}
        our_losses[t] = value
        ours_w1 -= LEARNING_RATE * grads["w1"]
        ours_w2 -= LEARNING_RATE * grads["w2"]
    np.testing.assert_allclose(our_losses, hand_losses, rtol=1e-8, atol=0)
    assert hand_losses[-1] < 1e-2 * hand_losses[0]  # it did train

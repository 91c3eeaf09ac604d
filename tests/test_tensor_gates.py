"""Tensor gates (issue 4 on tensors): logsumexp, softmax, log_softmax (softmax cross-entropy's
core) and sumsq — found in the forms people write, stable where the written form overflows, and
equal to the unfused kernels wherever both are finite.

Expected values come from the issue's exact statements (logsumexp([1000, 1000]) = 1000 + log 2
with gradient (0.5, 0.5); logsumexp([-inf, -inf]) = -inf with gradient 0), from closed forms
(d/dS of softmax cross-entropy with one-hot labels is softmax(S) - Y) and from central differences.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest

import compiler

SC = {"S": ("B", "C"), "Y": ("B", "C")}
FORMS = {
    "logsumexp": ["log(sum(exp(S), axis=1))", "log(sum(exp(S), axis=-1, keepdims=True))",
                  "max(S, axis=1) + log(sum(exp(S - max(S, axis=1, keepdims=True)), axis=1))",
                  "log(sum(exp(S)))"],
    "softmax": ["exp(S) / sum(exp(S), axis=1, keepdims=True)",
                "exp(S) / sum(exp(S), axis=0, keepdims=True)", "exp(S) / sum(exp(S))"],
    "log_softmax": ["log(exp(S) / sum(exp(S), axis=1, keepdims=True))",
                    "S - log(sum(exp(S), axis=1, keepdims=True))"],
    "sumsq": ["sum(S ** 2)", "sum(S * S, axis=0)", "sum((S - Y) ** 2, axis=1)"],
}  # fmt: skip
ALL_FORMS = [(gate, form) for gate, forms in FORMS.items() for form in forms]


@cache
def kernel(text: str, fuse: bool = True, mode: str = "compiled"):
    return compiler.compile_gradient(text, shapes=SC, inputs=["S", "Y"], fuse=fuse, mode=mode)


def _point(seed: int, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    S = scale * rng.standard_normal((4, 3))
    Y = np.eye(3)[rng.integers(0, 3, size=4)]
    return S, Y


@pytest.mark.parametrize("gate, form", ALL_FORMS)
def test_each_written_form_becomes_its_gate(gate, form):
    k = kernel(form)
    assert any(k.graph.nodes[i].op == gate for i in k.graph.op_nodes()), str(k.graph)
    assert "# fused: " in k.source


@pytest.mark.parametrize("gate, form", ALL_FORMS)
def test_fused_and_unfused_agree_where_both_are_finite(gate, form):
    S, Y = _point(1)
    seed = np.random.default_rng(2).standard_normal(np.shape(kernel(form)(S=S, Y=Y)))
    v1, g1 = kernel(form).value_and_grad(S=S, Y=Y, seed=seed)
    v0, g0 = kernel(form, fuse=False).value_and_grad(S=S, Y=Y, seed=seed)
    np.testing.assert_allclose(v1, v0, rtol=1e-13, atol=1e-14)
    for name in ("S", "Y"):
        np.testing.assert_allclose(g1[name], g0[name], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("gate, form", ALL_FORMS)
def test_gate_gradients_match_central_differences(gate, form):
    S, Y = _point(3)
    k = kernel(form)
    seed = np.random.default_rng(4).standard_normal(np.shape(k(S=S, Y=Y)))
    grads = k.grad(S=S, Y=Y, seed=seed)
    h = 1e-6
    for idx in np.ndindex(S.shape):
        e = np.zeros_like(S)
        e[idx] = h
        up, down = k(S=S + e, Y=Y), k(S=S - e, Y=Y)
        fd = np.sum(seed * (np.asarray(up) - np.asarray(down))) / (2 * h)
        assert grads["S"][idx] == pytest.approx(fd, rel=1e-6, abs=1e-8)


def test_logsumexp_of_huge_and_of_minus_infinity():
    k = compiler.compile_gradient("log(sum(exp(x)))", shapes={"x": ("n",)})
    value, grads = k.value_and_grad(x=[1000.0, 1000.0])
    assert value == 1000.0 + math.log(2.0)
    np.testing.assert_array_equal(grads["x"], [0.5, 0.5])
    value, grads = k.value_and_grad(x=[-np.inf, -np.inf])
    assert value == -np.inf
    np.testing.assert_array_equal(grads["x"], [0.0, 0.0])


def test_unfused_logsumexp_overflows_and_the_report_says_so():
    k0 = compiler.compile_gradient("log(sum(exp(x)))", shapes={"x": ("n",)}, fuse=False)
    assert k0(x=[1000.0, 1000.0]) == np.inf
    k = compiler.compile_gradient("log(sum(exp(x)))", shapes={"x": ("n",)})
    assert "overflows" in str(k.fusion)


def test_softmax_cross_entropy_gradient_is_softmax_minus_labels():
    """-sum(Y * log softmax(S)) with one-hot Y: dS = softmax(S) - Y, also at logits of 1000."""
    k = kernel("-sum(Y * (S - log(sum(exp(S), axis=1, keepdims=True))))")
    for scale in (1.0, 1000.0):
        S, Y = _point(5, scale)
        shifted = S - S.max(axis=1, keepdims=True)
        p = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
        value, grads = k.value_and_grad(S=S, Y=Y)
        expected = -np.sum(Y * (shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))))
        assert value == pytest.approx(expected, rel=1e-13)
        np.testing.assert_allclose(grads["S"], p - Y, rtol=1e-12, atol=1e-15)


def test_fused_softmax_stays_finite_where_the_written_form_is_nan():
    S = np.array([[1000.0, 0.0, -1000.0]] * 2)
    Y = np.zeros_like(S)
    text = FORMS["softmax"][0]
    fused = kernel(text)(S=S, Y=Y)
    np.testing.assert_array_equal(fused, [[1.0, 0.0, 0.0]] * 2)
    assert np.isnan(kernel(text, fuse=False)(S=S, Y=Y)).any()


@pytest.mark.parametrize(
    "form, gate",
    [
        ("log(sum(2 * exp(S), axis=1))", "logsumexp"),  # not an exp under the sum
        ("exp(S) / sum(exp(Y), axis=1, keepdims=True)", "softmax"),  # another operand
        ("S - log(sum(exp(Y), axis=1, keepdims=True))", "log_softmax"),  # logsumexp(Y) is fine
        ("exp(S) / sum(exp(S), axis=1)", "softmax"),  # B vs C: shapes refuse it, below
        ("sum(S * Y)", "sumsq"),
    ],
)
def test_lookalikes_are_left_alone(form, gate):
    try:
        k = kernel(form)
    except compiler.ShapeError:
        return  # (B, C) / (B,) does not broadcast: nothing to fuse
    assert gate not in {k.graph.nodes[i].op for i in k.graph.op_nodes()}


def test_fuse_can_name_tensor_gates_alone():
    k = compiler.compile_gradient(
        FORMS["log_softmax"][1], shapes=SC, inputs=["S", "Y"], fuse=["logsumexp"]
    )
    ops = {k.graph.nodes[i].op for i in k.graph.op_nodes()}
    assert "logsumexp" in ops and "log_softmax" not in ops


@pytest.mark.parametrize("gate, form", ALL_FORMS[::3])
def test_instant_tier_gives_the_same_numbers(gate, form):
    S, Y = _point(6)
    v1, g1 = kernel(form).value_and_grad(S=S, Y=Y)
    v2, g2 = kernel(form, mode="instant").value_and_grad(S=S, Y=Y)
    np.testing.assert_allclose(v1, v2, rtol=1e-14)
    np.testing.assert_allclose(g1["S"], g2["S"], rtol=1e-13, atol=1e-15)


def test_network_pullback_only_multiplies_by_the_saved_local_gradient():
    """Example 5 fused: a vjp keeps the sigmoid gate's local gradient σ(x)σ(−x), not x, so the
    backward's loops hold no exp and no sigmoid; what it keeps pairs off shape for shape with the
    forward values it would otherwise keep (no more memory), and the pullback's gradients equal
    the lecture's hand-written lines."""
    shapes = {"x": ("N", "D_in"), "w1": ("D_in", "H"), "w2": ("H", "D_out"), "y": ("N", "D_out")}
    text = "sum((1/(1+exp(-(x @ w1))) @ w2 - y)**2)"
    k = compiler.compile_gradient(text, shapes=shapes, wrt=["w1", "w2"])
    src = k.source
    loops = [
        src[i : src.index("\n\n\n", i)] for i in range(len(src)) if src.startswith("def bwd_", i)
    ]
    assert loops and not any("exp" in body or "sigmoid" in body for body in loops)
    unfused = compiler.compile_gradient(text, shapes=shapes, wrt=["w1", "w2"], fuse=False)
    assert len(k.adjoint.saved) <= len(unfused.adjoint.saved)

    rng = np.random.default_rng(5)
    x, w1 = rng.standard_normal((6, 5)), rng.standard_normal((5, 4))
    w2, y = rng.standard_normal((4, 3)), rng.standard_normal((6, 3))
    value, pullback = k.vjp(x=x, w1=w1, w2=w2, y=y)
    grads = pullback()
    h = 1 / (1 + np.exp(-x.dot(w1)))
    grad_y_pred = 2.0 * (h.dot(w2) - y)
    grad_h = grad_y_pred.dot(w2.T)
    np.testing.assert_allclose(value, np.square(h.dot(w2) - y).sum(), rtol=1e-12)
    np.testing.assert_allclose(grads["w2"], h.T.dot(grad_y_pred), rtol=1e-12)
    np.testing.assert_allclose(grads["w1"], x.T.dot(grad_h * h * (1 - h)), rtol=1e-10)

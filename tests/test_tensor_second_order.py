"""Second derivatives of tensor programs (``shapes=``): ``TensorKernel.hvp`` and
``compile_hessian(..., shapes=...)``.

Expected numbers come from an oracle independent of the code under test: central finite
differences of the compiled first-order gradient, NumPy closed forms (``H = 2 WᵀW`` for
``sum((W x)²)`` in x, ``H = Xᵀ diag(p (1 - p)) X`` for the logistic NLL in w), or SymPy's
``hessian`` of a tiny program written out by hand element by element — never symgrad's own
second-order code.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import sympy as sp

import compiler
from compiler.errors import InputError, ShapeError

MODES = ("instant", "compiled")
TIER = {"instant": "numpy", "compiled": "numba"}
SIZES = {"m": 5, "n": 3, "h": 4, "k": 3}

#: (text, shapes): scalar-valued tensor programs, every op of the table's common path.
PROGRAMS = {
    "quadratic": ("sum((W @ x)**2)", {"W": ("m", "n"), "x": ("n",)}),
    "logistic": (
        "-sum(y * log(sigmoid(X @ w)) + (1 - y) * log(1 - sigmoid(X @ w)))",
        {"X": ("m", "n"), "w": ("n",), "y": ("m",)},
    ),
    "tanh_net": (
        "sum((tanh(X @ W1 + b1) @ W2 - Y)**2)",
        {"X": ("m", "n"), "W1": ("n", "h"), "b1": ("h",), "W2": ("h", "k"), "Y": ("m", "k")},
    ),
    "axis_broadcast": (
        "sum(sum(A * b, axis=1)**2) + sum(exp(A - c) * mean(A, axis=0)) + s * sum(b.T @ A.T)",
        {"A": ("m", "n"), "b": ("n",), "c": ("m", 1)},
    ),
    "logsumexp": (
        "sum(logsumexp(X @ W, axis=1)) - sum((X @ W) * T) + sum(max(X @ W, axis=0)**2)",
        {"X": ("m", "n"), "W": ("n", "k"), "T": ("m", "k")},
    ),
    "cross_entropy": (
        "-mean(take_along_axis(log_softmax(X @ W, axis=1), labels, axis=1)) + sum(W**2) / 10",
        {"X": ("m", "n"), "W": ("n", "k"), "labels": ("m", 1)},
    ),
}
#: Inputs held fixed (integer labels: a perturbed label is no label).
FIXED = {"labels"}


@cache
def _kernel(name: str, mode: str):
    text, shapes = PROGRAMS[name]
    wrt = [n for n in shapes if n not in FIXED] if FIXED & set(shapes) else None
    return compiler.compile_gradient(text, shapes=shapes, mode=mode, wrt=wrt)


def _point(kernel, seed: int = 0) -> dict:
    """Random inputs of the declared shapes (the logistic labels in (0, 1), the cross-entropy's
    class labels whole numbers in [0, k))."""
    rng = np.random.default_rng(seed)
    point = {}
    for name, shape in kernel.shapes.items():
        concrete = tuple(SIZES.get(d, d) for d in shape)
        if name == "labels":
            point[name] = rng.integers(0, SIZES["k"], concrete).astype(float)
        elif name == "y":
            point[name] = rng.uniform(0.05, 0.95, concrete)
        else:
            point[name] = rng.normal(size=concrete)
        point[name] = float(point[name]) if not concrete else point[name]
    return point


def _direction(kernel, point: dict, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    return {w: rng.normal(size=np.shape(point[w])) for w in kernel.wrt}


def _finite_difference(kernel, point: dict, v: dict, eps: float = 1e-5) -> dict:
    """``(∇f(p + εv) − ∇f(p − εv)) / 2ε`` from the compiled first-order gradient."""
    plus = kernel.grad(**{n: point[n] + eps * v.get(n, 0.0) for n in kernel.inputs})
    minus = kernel.grad(**{n: point[n] - eps * v.get(n, 0.0) for n in kernel.inputs})
    return {w: (plus[w] - minus[w]) / (2 * eps) for w in kernel.wrt}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(PROGRAMS))
def test_hvp_matches_finite_differences(name: str, mode: str) -> None:
    kernel = _kernel(name, mode)
    point = _point(kernel)
    v = _direction(kernel, point)
    _, _, hv = kernel.hvp(**point, v=v)
    assert kernel.hvp_kernel.tier == TIER[mode]
    expected = _finite_difference(kernel, point, v)
    for w in kernel.wrt:
        scale = 1.0 + np.max(np.abs(expected[w]))
        np.testing.assert_allclose(hv[w], expected[w], rtol=1e-6, atol=1e-6 * scale, err_msg=w)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(PROGRAMS))
def test_hvp_value_and_gradient_are_first_orders(name: str, mode: str) -> None:
    kernel = _kernel(name, mode)
    point = _point(kernel, seed=2)
    value, grad, _ = kernel.hvp(**point, v=_direction(kernel, point, seed=3))
    first_value, first_grad = kernel.value_and_grad(**point)
    assert value == pytest.approx(first_value, rel=1e-13)
    for w in kernel.wrt:
        np.testing.assert_allclose(grad[w], first_grad[w], rtol=1e-12, atol=1e-14, err_msg=w)


@pytest.mark.parametrize("mode", MODES)
def test_quadratic_form_closed_form(mode: str) -> None:
    """``sum((W x)²)``: H_xx = 2 WᵀW, and a direction left out is 0."""
    kernel = _kernel("quadratic", mode)
    point = _point(kernel, seed=4)
    vx = np.random.default_rng(5).normal(size=SIZES["n"])
    _, _, hv = kernel.hvp(**point, v={"x": vx})
    W, x = point["W"], point["x"]
    np.testing.assert_allclose(hv["x"], 2 * W.T @ W @ vx, rtol=1e-12)
    # ∂f/∂W = 2 (W x) xᵀ; its derivative in x along vx is 2 (W vx) xᵀ + 2 (W x) vxᵀ
    np.testing.assert_allclose(
        hv["W"], 2 * np.outer(W @ vx, x) + 2 * np.outer(W @ x, vx), rtol=1e-12
    )
    _, _, explicit = kernel.hvp(**point, v={"x": vx, "W": np.zeros_like(W)})
    np.testing.assert_array_equal(hv["W"], explicit["W"])


@pytest.mark.parametrize("mode", MODES)
def test_logistic_closed_form(mode: str) -> None:
    """The logistic NLL's Hessian in w is Xᵀ diag(p (1 − p)) X, p = σ(X w)."""
    kernel = _kernel("logistic", mode)
    point = _point(kernel, seed=6)
    vw = np.random.default_rng(7).normal(size=SIZES["n"])
    _, _, hv = kernel.hvp(**point, v={"w": vw})
    X = point["X"]
    p = 1 / (1 + np.exp(-(X @ point["w"])))
    np.testing.assert_allclose(hv["w"], X.T @ (p * (1 - p) * (X @ vw)), rtol=1e-10)


# ---- a 2 × 2 program written out by hand in SymPy, the oracle of H·v and of the dense H
TINY = "sum(log(1 + exp(W @ x))) + sum(sin(W) * x) + a * sum(W.T @ W)"
TINY_SHAPES = {"W": (2, 2), "x": (2,)}
TINY_POINT = {"W": np.array([[0.3, -1.2], [0.8, 0.5]]), "x": np.array([-0.7, 1.1]), "a": 0.4}


def _tiny_sympy() -> tuple[sp.Expr, list[sp.Symbol], dict]:
    """The tiny program element by element, its symbols in (W C-order, x, a) order."""
    W = sp.Matrix(2, 2, sp.symbols("w00 w01 w10 w11", real=True))
    x = sp.Matrix(sp.symbols("x0 x1", real=True))
    a = sp.Symbol("a", real=True)
    Wx = W * x
    f = sum(sp.log(1 + sp.exp(Wx[i])) for i in range(2))
    f += sum(sp.sin(W[i, j]) * x[j] for i in range(2) for j in range(2))
    f += a * sum((W.T * W)[i, j] for i in range(2) for j in range(2))
    symbols = [*W, *x, a]
    values = [*TINY_POINT["W"].ravel(), *TINY_POINT["x"], TINY_POINT["a"]]
    return f, symbols, {s: sp.Float(float(val), 30) for s, val in zip(symbols, values)}


@cache
def _tiny_oracle() -> tuple[float, np.ndarray, np.ndarray]:
    """SymPy's value, gradient and Hessian of the tiny program at its point, as floats."""
    f, symbols, subs = _tiny_sympy()
    value = float(f.subs(subs).evalf(30))
    grad = np.array([float(sp.diff(f, s).subs(subs).evalf(30)) for s in symbols])
    hess = np.array(sp.hessian(f, symbols).subs(subs).evalf(30).tolist(), dtype=float)
    return value, grad, hess


def _flat(parts: dict, names) -> np.ndarray:
    return np.concatenate([np.ravel(parts[n]) for n in names])


@pytest.mark.parametrize("mode", MODES)
def test_hvp_matches_sympy(mode: str) -> None:
    value, grad, hess = _tiny_oracle()
    kernel = compiler.compile_gradient(TINY, shapes=TINY_SHAPES, mode=mode)
    assert kernel.wrt == ("W", "x", "a")
    v = {"W": np.array([[1.0, -0.5], [0.25, 2.0]]), "x": np.array([0.3, -1.5]), "a": 0.7}
    got_value, got_grad, hv = kernel.hvp(**TINY_POINT, v=v)
    assert got_value == pytest.approx(value, rel=1e-13)
    np.testing.assert_allclose(_flat(got_grad, kernel.wrt), grad, rtol=1e-12)
    np.testing.assert_allclose(_flat(hv, kernel.wrt), hess @ _flat(v, kernel.wrt), rtol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_dense_hessian_matches_sympy(mode: str) -> None:
    """H over the flattened wrt inputs, in wrt order (x before W here), each in C order."""
    value, grad, hess = _tiny_oracle()
    h = compiler.compile_hessian(TINY, shapes=TINY_SHAPES, wrt=["x", "W"], mode=mode)
    got_value, got_grad, H = h(**TINY_POINT)
    order = [4, 5, 0, 1, 2, 3]  # x0, x1, then w00, w01, w10, w11 among the oracle's symbols
    assert got_value == pytest.approx(value, rel=1e-13)
    np.testing.assert_allclose(_flat(got_grad, ["x", "W"]), grad[order], rtol=1e-12)
    assert H.shape == (6, 6)
    np.testing.assert_array_equal(H, H.T)
    np.testing.assert_allclose(H, hess[np.ix_(order, order)], rtol=1e-12, atol=1e-14)
    assert h.tier == TIER[mode]


def test_dense_hessian_logistic_closed_form() -> None:
    text, shapes = PROGRAMS["logistic"]
    h = compiler.compile_hessian(text, shapes=shapes, wrt=["w"], mode="instant")
    point = _point(h.kernel, seed=8)
    _, _, H = h(**point)
    X = point["X"]
    p = 1 / (1 + np.exp(-(X @ point["w"])))
    np.testing.assert_allclose(H, X.T @ np.diag(p * (1 - p)) @ X, rtol=1e-10)


def test_float32_hvp() -> None:
    kernel = _kernel("quadratic", "instant")
    point = _point(kernel, seed=9)
    vx = np.random.default_rng(10).normal(size=SIZES["n"])
    single = {n: a.astype(np.float32) for n, a in point.items()}
    _, grad, hv = kernel.hvp(**single, v={"x": vx.astype(np.float32)})
    assert hv["x"].dtype == np.float32 and grad["W"].dtype == np.float32
    W = point["W"]
    np.testing.assert_allclose(hv["x"], 2 * W.T @ W @ vx, rtol=1e-5)


# ---- refusals
@pytest.mark.parametrize(
    "v, match",
    [
        ({"z": 1.0}, "'z', which is not a differentiated input"),
        ({"x": np.ones(4)}, r"v\['x'\] of shape \(4,\)"),
        ({"W": np.ones((3, 5))}, r"v\['W'\] of shape \(3, 5\)"),
        ([1.0, 2.0], "must map input names"),
    ],
)
def test_bad_directions_are_refused(v, match: str) -> None:
    kernel = _kernel("quadratic", "instant")
    with pytest.raises(InputError, match=match):
        kernel.hvp(**_point(kernel), v=v)


def test_direction_of_an_input_not_differentiated_is_refused() -> None:
    text, shapes = PROGRAMS["quadratic"]
    kernel = compiler.compile_gradient(text, shapes=shapes, wrt=["x"], mode="instant")
    with pytest.raises(InputError, match="'W', which is not a differentiated input"):
        kernel.hvp(**_point(kernel), v={"W": 1.0})


def test_non_scalar_output_is_refused() -> None:
    kernel = compiler.compile_gradient("(W @ x)**2", shapes=PROGRAMS["quadratic"][1])
    with pytest.raises(ShapeError, match=r"scalar output.*shape \(m,\)"):
        kernel.hvp(**_point(kernel), v={})


def test_dense_hessian_of_a_scalar_and_an_array_input() -> None:
    """A single-number input in wrt is one row and column, in its wrt place."""
    _, _, hess = _tiny_oracle()
    h = compiler.compile_hessian(TINY, shapes=TINY_SHAPES, wrt=["a", "x"], mode="instant")
    _, grad, H = h(**TINY_POINT)
    assert np.shape(grad["a"]) == ()
    order = [6, 4, 5]  # a, x0, x1 among the oracle's symbols
    np.testing.assert_allclose(H, hess[np.ix_(order, order)], rtol=1e-12, atol=1e-14)

"""Tensor kernels against central finite differences, SymPy's own ``diff`` and hand-written NumPy.

Every case is written twice, independently of symgrad's internals:

- the text symgrad compiles (``Case.text``);
- a function ``fn(ns, **inputs)`` in NumPy's notation, run on one of three namespaces: ``NP``
  (NumPy on float arrays: the value, and central finite differences of it), ``SYM`` (NumPy object
  arrays of SymPy symbols: the fully expanded scalar expression, differentiated by ``sympy.diff``)
  and, as a second and third frontend, ``compiler.ops`` / ``NP`` on traced values (the callable).

Shapes and values are random (seeded, and drawn by Hypothesis); points within ``MARGIN`` of a kink
(relu, max, abs, a hinge) are redrawn, so finite differences are meaningful. Kinks themselves are
tested separately with hand-computed expectations: the max/min reductions split the upstream
gradient equally among tied extrema (like JAX, and like ``maximum``'s 1/2-1/2 tie rule).
"""

from __future__ import annotations

import functools
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import compiler
from compiler import ops

MARGIN = 1e-3  # minimum distance of a kink's argument from the kink
RTOL_VALUE = 1e-10
RTOL_FD = 1e-6
RTOL_SYMPY = 1e-12


# --------------------------------------------------------------------------- namespaces
def _sum(a, axis=None, keepdims=False):
    return np.sum(a, axis=axis, keepdims=keepdims)


def _mean(a, axis=None, keepdims=False):
    return np.mean(a, axis=axis, keepdims=keepdims)


def _max(a, axis=None, keepdims=False):
    return np.max(a, axis=axis, keepdims=keepdims)


def _min(a, axis=None, keepdims=False):
    return np.min(a, axis=axis, keepdims=keepdims)


NP = SimpleNamespace(
    exp=np.exp,
    log=np.log,
    tanh=np.tanh,
    sin=np.sin,
    sqrt=np.sqrt,
    abs=np.abs,
    sigmoid=lambda a: 1 / (1 + np.exp(-a)),
    relu=lambda a: np.maximum(0, a),
    maximum=np.maximum,
    minimum=np.minimum,
    sum=_sum,
    mean=_mean,
    max=_max,
    min=_min,
    transpose=np.transpose,
    dot=np.dot,
    matmul=np.matmul,
)


def _elementwise(f, nargs=1):
    u = np.frompyfunc(f, nargs, 1)
    return lambda *args: u(*args)


def _axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = axis if isinstance(axis, tuple) else (axis,)
    return tuple(sorted(a % ndim for a in axes))


def _sym_reduce(f):
    """A max/min reduction of an object array, one axis at a time with SymPy's Max/Min."""
    u = np.frompyfunc(f, 2, 1)

    def reduce(a, axis=None, keepdims=False):
        a = np.asarray(a, dtype=object)
        axes = _axes(axis, a.ndim)
        for ax in axes:
            a = u.reduce(a, axis=ax, keepdims=True)
        if not keepdims:
            a = np.squeeze(a, axis=axes)
        return a

    return reduce


def _sym_mean(a, axis=None, keepdims=False):
    a = np.asarray(a, dtype=object)
    count = int(np.prod([a.shape[ax] for ax in _axes(axis, a.ndim)]))
    return np.sum(a, axis=axis, keepdims=keepdims) * sp.Rational(1, count)


SYM = SimpleNamespace(
    exp=_elementwise(sp.exp),
    log=_elementwise(sp.log),
    tanh=_elementwise(sp.tanh),
    sin=_elementwise(sp.sin),
    sqrt=_elementwise(sp.sqrt),
    abs=_elementwise(sp.Abs),
    sigmoid=lambda a: 1 / (1 + _elementwise(sp.exp)(-a)),
    relu=lambda a: _elementwise(sp.Max, 2)(0, a),
    maximum=_elementwise(sp.Max, 2),
    minimum=_elementwise(sp.Min, 2),
    sum=_sum,
    mean=_sym_mean,
    max=_sym_reduce(sp.Max),
    min=_sym_reduce(sp.Min),
    transpose=np.transpose,
    dot=np.dot,
    matmul=np.matmul,
)


# --------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    name: str
    text: str
    shapes: dict
    fn: Callable  # fn(ns, **inputs), NumPy notation
    margin: Callable | None = None  # inputs -> distance of the nearest kink (NumPy)
    prepare: Callable | None = None  # (inputs, rng) -> inputs, e.g. one-hot labels
    sympy: bool = True
    dims: tuple = field(default=())

    def __post_init__(self):
        names = sorted({d for s in self.shapes.values() for d in s if isinstance(d, str)})
        object.__setattr__(self, "dims", tuple(names))


def _gap(a, axis=None):
    """The smallest distance between the largest and second largest entry along ``axis``, and
    between the smallest and the second smallest (a max/min reduction's kink)."""
    a = np.asarray(a, dtype=float)
    a = a.reshape(1, -1) if axis is None else np.moveaxis(a, axis, -1)
    if a.shape[-1] < 2:
        return np.inf
    s = np.sort(a, axis=-1)
    return float(min(np.min(s[..., -1] - s[..., -2]), np.min(s[..., 1] - s[..., 0])))


def _minabs(*arrays):
    return float(min(np.min(np.abs(a)) for a in arrays))


def _one_hot(env, rng, key="Y"):
    b, c = env[key].shape
    y = np.zeros((b, c))
    y[np.arange(b), rng.integers(0, c, size=b)] = 1.0
    return {**env, key: y}


def _positive(key):
    def prepare(env, rng):
        return {**env, key: np.abs(env[key]) + 0.1}

    return prepare


def _svm(ns, X, W, Y, reg):
    S = X @ W
    margins = ns.maximum(0, S - ns.sum(S * Y, axis=1, keepdims=True) + 1)
    return ns.sum(margins * (1 - Y)) / 4 + 0.5 * reg * ns.sum(W * W)


def _svm_margin(env):
    S = env["X"] @ env["W"]
    m = S - np.sum(S * env["Y"], axis=1, keepdims=True) + 1
    return float(np.min(np.abs(m[env["Y"] == 0]), initial=np.inf))


def _svm_prepare(env, rng):
    return _positive("reg")(_one_hot(env, rng), rng)


def _softmax_ce(ns, X, W, Y, reg):
    S = X @ W
    shifted = S - ns.max(S, axis=1, keepdims=True)
    log_probs = shifted - ns.log(ns.sum(ns.exp(shifted), axis=1, keepdims=True))
    return -ns.mean(ns.sum(Y * log_probs, axis=1)) + 0.5 * reg * ns.sum(W * W)


SOFTMAX_TEXT = (
    "-mean(sum(Y * (X @ W - max(X @ W, axis=1, keepdims=True)"
    " - log(sum(exp(X @ W - max(X @ W, axis=1, keepdims=True)), axis=1, keepdims=True))),"
    " axis=1)) + 0.5 * reg * sum(W * W)"
)


def _net2(ns, W1, x, W2, t):
    return ns.sum((W2 @ ns.maximum(0, W1 @ x) - t) ** 2)


def _net3(ns, W1, x, W2, W3, t):
    return ns.sum((W3 @ ns.maximum(0, W2 @ ns.maximum(0, W1 @ x)) - t) ** 2)


def _net3_margin(env):
    a1 = env["W1"] @ env["x"]
    a2 = env["W2"] @ np.maximum(0, a1)
    return _minabs(a1, a2)


def _batched(ns, X, W1, W2, Y):
    return ns.mean(ns.sum((ns.maximum(0, X @ W1) @ W2 - Y) ** 2, axis=1))


def _batched_bias(ns, X, W1, b1, W2, b2, Y):
    return ns.sum((ns.relu(X @ W1 + b1) @ W2 + b2 - Y) ** 2)


def _elementwise_mix(ns, X, Y):
    return ns.sum(
        ns.sigmoid(X) * ns.tanh(Y)
        + ns.relu(X - Y)
        + ns.abs(Y)
        + ns.sqrt(1 + X * X)
        + ns.log(1 + ns.exp(X))
        + ns.maximum(X, Y) * ns.minimum(X, 0.5)
    )


CASES = [
    # matmul, all four 1-D/2-D combinations
    Case(
        "matmul_matrix_matrix",
        "sum(tanh(A @ B)) + sum(dot(A, B) * matmul(A, B))",
        {"A": ("n", "k"), "B": ("k", "m")},
        lambda ns, A, B: ns.sum(ns.tanh(A @ B)) + ns.sum(ns.dot(A, B) * ns.matmul(A, B)),
    ),
    Case(
        "matmul_matrix_vector",
        "sum(sin(A @ v) * u)",
        {"A": ("n", "k"), "v": ("k",), "u": ("n",)},
        lambda ns, A, v, u: ns.sum(ns.sin(A @ v) * u),
    ),
    Case(
        "matmul_vector_matrix",
        "sum((v @ A) ** 3)",
        {"v": ("k",), "A": ("k", "m")},
        lambda ns, v, A: ns.sum((v @ A) ** 3),
    ),
    Case(
        "matmul_vector_vector",
        "(u @ v) ** 2 + dot(u, u) * dot(v, w)",
        {"u": ("k",), "v": ("k",), "w": ("k",)},
        lambda ns, u, v, w: (u @ v) ** 2 + ns.dot(u, u) * ns.dot(v, w),
    ),
    Case(
        "bilinear",
        "u @ A @ v + dot(dot(u, A), v)",
        {"u": ("n",), "A": ("n", "m"), "v": ("m",)},
        lambda ns, u, A, v: u @ A @ v + ns.dot(ns.dot(u, A), v),
    ),
    Case(
        "matmul_fixed_dims",
        "sum(exp(A @ B) * C)",
        {"A": (2, "k"), "B": ("k", 3), "C": (2, 3)},
        lambda ns, A, B, C: ns.sum(ns.exp(A @ B) * C),
    ),
    # transpose
    Case(
        "transpose_attribute",
        "sum((A.T @ B) * C) + sum(((A.T @ B).T - D) ** 2)",
        {"A": ("k", "n"), "B": ("k", "m"), "C": ("n", "m"), "D": ("m", "n")},
        lambda ns, A, B, C, D: ns.sum((A.T @ B) * C) + ns.sum(((A.T @ B).T - D) ** 2),
    ),
    Case(
        "transpose_function",
        "sum(tanh(transpose(A) * B)) + sum(A.T.T * A) + sum(transpose(v) * v)",
        {"A": ("n", "m"), "B": ("m", "n"), "v": ("n",)},
        lambda ns, A, B, v: (
            ns.sum(ns.tanh(ns.transpose(A) * B)) + ns.sum(A.T.T * A) + ns.sum(ns.transpose(v) * v)
        ),
    ),
    # broadcasting
    Case(
        "bias_row",
        "sum(tanh(X + b) ** 2) + sum(sigmoid(b - X) * X)",
        {"X": ("B", "D"), "b": ("D",)},
        lambda ns, X, b: ns.sum(ns.tanh(X + b) ** 2) + ns.sum(ns.sigmoid(b - X) * X),
    ),
    Case(
        "bias_column",
        "sum(sigmoid(X * c) - c) + sum(X / (1 + c * c))",
        {"X": ("B", "D"), "c": ("B", 1)},
        lambda ns, X, c: ns.sum(ns.sigmoid(X * c) - c) + ns.sum(X / (1 + c * c)),
    ),
    Case(
        "outer_broadcast",
        "sum(sin(r * c) * r)",
        {"r": (1, "D"), "c": ("B", 1)},
        lambda ns, r, c: ns.sum(ns.sin(r * c) * r),
    ),
    Case(
        "scalar_times_matrix",
        "sum(log(1 + (a * X) ** 2)) + a * sum(X) + s * a",
        {"a": (), "X": ("n", "m")},  # s is omitted: a scalar
        lambda ns, a, X, s: ns.sum(ns.log(1 + (a * X) ** 2)) + a * ns.sum(X) + s * a,
    ),
    # reductions
    Case(
        "sum_each_axis",
        "sum(sum(X, axis=0) ** 2) + sum(sum(X ** 3, axis=1) * w)",
        {"X": ("B", "D"), "w": ("B",)},
        lambda ns, X, w: ns.sum(ns.sum(X, axis=0) ** 2) + ns.sum(ns.sum(X**3, axis=1) * w),
    ),
    Case(
        "sum_negative_axes_keepdims",
        "sum(sum(X, axis=-1, keepdims=True) * X) + sum(sum(X, axis=-2) * v)"
        " + sum(exp(sum(X, axis=0, keepdims=True)))",
        {"X": ("B", "D"), "v": ("D",)},
        lambda ns, X, v: (
            ns.sum(ns.sum(X, axis=-1, keepdims=True) * X)
            + ns.sum(ns.sum(X, axis=-2) * v)
            + ns.sum(ns.exp(ns.sum(X, axis=0, keepdims=True)))
        ),
    ),
    Case(
        "sum_axis_tuples",
        "sum(X ** 2, axis=(0, 1)) + sum(sin(X), axis=(-2, -1)) + sum(sum(X, axis=(0, 1), keepdims=True) * X)",
        {"X": ("B", "D")},
        lambda ns, X: (
            ns.sum(X**2, axis=(0, 1))
            + ns.sum(ns.sin(X), axis=(-2, -1))
            + ns.sum(ns.sum(X, axis=(0, 1), keepdims=True) * X)
        ),
    ),
    Case(
        "mean_axes",
        "mean(X ** 2) + sum(mean(X, axis=0) ** 3) + sum(mean(X, axis=-1, keepdims=True) * X)"
        " + mean(v * v) + mean(sin(X), axis=(0, 1))",
        {"X": ("B", "D"), "v": ("D",)},
        lambda ns, X, v: (
            ns.mean(X**2)
            + ns.sum(ns.mean(X, axis=0) ** 3)
            + ns.sum(ns.mean(X, axis=-1, keepdims=True) * X)
            + ns.mean(v * v)
            + ns.mean(ns.sin(X), axis=(0, 1))
        ),
    ),
    Case(
        "max_min_all",
        "max(X) * min(X) + max(v) - 2 * min(v)",
        {"X": ("B", "D"), "v": ("n",)},
        lambda ns, X, v: ns.max(X) * ns.min(X) + ns.max(v) - 2 * ns.min(v),
        margin=lambda e: min(_gap(e["X"]), _gap(e["v"])),
    ),
    Case(
        "max_axes",
        "sum(max(X, axis=0) ** 2) + sum(max(X, axis=1, keepdims=True) * X)"
        " + sum(max(X, axis=-1) * w)",
        {"X": ("B", "D"), "w": ("B",)},
        lambda ns, X, w: (
            ns.sum(ns.max(X, axis=0) ** 2)
            + ns.sum(ns.max(X, axis=1, keepdims=True) * X)
            + ns.sum(ns.max(X, axis=-1) * w)
        ),
        margin=lambda e: min(_gap(e["X"], 0), _gap(e["X"], 1)),
    ),
    Case(
        "min_axes",
        "sum(min(X, axis=-1) * w) + sum(exp(min(X, axis=-2, keepdims=True)))"
        " + sum(min(X, axis=0) * max(X, axis=0))",
        {"X": ("B", "D"), "w": ("B",)},
        lambda ns, X, w: (
            ns.sum(ns.min(X, axis=-1) * w)
            + ns.sum(ns.exp(ns.min(X, axis=-2, keepdims=True)))
            + ns.sum(ns.min(X, axis=0) * ns.max(X, axis=0))
        ),
        margin=lambda e: min(_gap(e["X"], 0), _gap(e["X"], 1)),
    ),
    # elementwise functions on matrices
    Case(
        "elementwise_functions",
        "sum(sigmoid(X) * tanh(Y) + relu(X - Y) + abs(Y) + sqrt(1 + X * X) + log(1 + exp(X))"
        " + maximum(X, Y) * minimum(X, 0.5))",
        {"X": ("B", "D"), "Y": ("B", "D")},
        _elementwise_mix,
        margin=lambda e: _minabs(e["X"] - e["Y"], e["Y"], e["X"] - 0.5),
    ),
    # the lecture's losses
    Case(
        "svm_hinge_l2",
        "sum(maximum(0, X @ W - sum((X @ W) * Y, axis=1, keepdims=True) + 1) * (1 - Y)) / 4"
        " + 0.5 * reg * sum(W * W)",
        {"X": (4, "D"), "W": ("D", "C"), "Y": (4, "C"), "reg": ()},
        _svm,
        margin=_svm_margin,
        prepare=_svm_prepare,
    ),
    Case(
        "softmax_cross_entropy_l2",
        SOFTMAX_TEXT,
        {"X": ("B", "D"), "W": ("D", "C"), "Y": ("B", "C"), "reg": ()},
        _softmax_ce,
        prepare=_svm_prepare,
    ),
    Case(
        "net_2_layer",
        "sum((W2 @ maximum(0, W1 @ x) - t) ** 2)",
        {"W1": ("H", "D"), "x": ("D",), "W2": ("C", "H"), "t": ("C",)},
        _net2,
        margin=lambda e: _minabs(e["W1"] @ e["x"]),
    ),
    Case(
        "net_3_layer",
        "sum((W3 @ maximum(0, W2 @ maximum(0, W1 @ x)) - t) ** 2)",
        {"W1": ("H", "D"), "x": ("D",), "W2": ("H2", "H"), "W3": ("C", "H2"), "t": ("C",)},
        _net3,
        margin=_net3_margin,
    ),
    Case(
        "net_2_layer_batched",
        "mean(sum((maximum(0, X @ W1) @ W2 - Y) ** 2, axis=1))",
        {"X": ("B", "D"), "W1": ("D", "H"), "W2": ("H", "C"), "Y": ("B", "C")},
        _batched,
        margin=lambda e: _minabs(e["X"] @ e["W1"]),
    ),
    Case(
        "net_2_layer_batched_bias",
        "sum((relu(X @ W1 + b1) @ W2 + b2 - Y) ** 2)",
        {
            "X": ("B", "D"),
            "W1": ("D", "H"),
            "b1": ("H",),
            "W2": ("H", "C"),
            "b2": ("C",),
            "Y": ("B", "C"),
        },
        _batched_bias,
        margin=lambda e: _minabs(e["X"] @ e["W1"] + e["b1"]),
    ),
]
BY_NAME = {c.name: c for c in CASES}
FRONTENDS = ("text", "ops", "numpy")


def _inputs(case: Case) -> list[str]:
    """The callable's parameters, in order (the text lists the same names)."""
    import inspect

    return list(inspect.signature(case.fn).parameters)[1:]


@functools.cache
def kernel(name: str, frontend: str):
    """One kernel per case and frontend, shared by every test and every size."""
    case = BY_NAME[name]
    if frontend == "text":
        return compiler.compile_gradient(case.text, shapes=case.shapes, inputs=_inputs(case))
    ns = ops if frontend == "ops" else NP
    return compiler.compile_gradient(functools.partial(case.fn, ns), shapes=case.shapes)


def draw_env(case: Case, sizes: dict, rng) -> dict:
    """Random inputs of the case's shapes, redrawn until every kink is at least MARGIN away."""
    for _ in range(200):
        env = {}
        for n in _inputs(case):
            shape = tuple(sizes[d] if isinstance(d, str) else d for d in case.shapes.get(n, ()))
            env[n] = rng.standard_normal(shape) if shape else float(rng.standard_normal())
        if case.prepare is not None:
            env = case.prepare(env, rng)
        if case.margin is None or case.margin(env) > MARGIN:
            return env
    raise AssertionError(f"{case.name}: no point away from the kinks at sizes {sizes}")


def central_difference(case: Case, env: dict, name: str):
    """d fn / d env[name], element by element: central differences with steps h and h/2,
    Richardson-extrapolated, and an estimate of their error."""
    base = np.asarray(env[name], dtype=float)
    grad = np.empty(base.shape)
    error = np.empty(base.shape)
    for idx in np.ndindex(base.shape):
        h = 1e-5 * max(1.0, abs(base[idx]))
        f = []
        for step in (h, -h, h / 2, -h / 2):
            shifted = base.copy()
            shifted[idx] += step
            f.append(float(case.fn(NP, **{**env, name: shifted if shifted.shape else shifted[()]})))
        d1 = (f[0] - f[1]) / (2 * h)
        d2 = (f[2] - f[3]) / h
        grad[idx] = (4 * d2 - d1) / 3
        error[idx] = abs(d2 - d1)
    return grad, error


def check_against_numpy(case: Case, frontend: str, sizes: dict, seed: int):
    """Value against NumPy, every gradient against central differences."""
    rng = np.random.default_rng(seed)
    env = draw_env(case, sizes, rng)
    k = kernel(case.name, frontend)
    assert list(k.inputs) == _inputs(case)
    value, grads = k.value_and_grad(**env)
    expected = float(case.fn(NP, **env))
    assert isinstance(value, float), type(value)
    assert value == pytest.approx(expected, rel=RTOL_VALUE, abs=RTOL_VALUE), (case.name, sizes)
    assert set(grads) == set(env)
    for n, x in env.items():
        g = np.asarray(grads[n], dtype=float)
        assert g.shape == np.shape(x), (case.name, n, g.shape, np.shape(x))
        fd, err = central_difference(case, env, n)
        tol = RTOL_FD * max(1.0, abs(expected), float(np.max(np.abs(fd), initial=0))) + 10 * err
        bad = np.abs(g - fd) > tol
        assert not bad.any(), (case.name, frontend, sizes, n, g, fd)


# --------------------------------------------------------------------------- random, seeded
SEEDED = [
    (c.name, f, seed)
    for c in CASES
    for f, seed in (("text", 1), ("text", 2), ("ops", 3), ("numpy", 4))
]


@pytest.mark.parametrize("name,frontend,seed", SEEDED)
def test_gradients_match_finite_differences(name, frontend, seed):
    case = BY_NAME[name]
    rng = np.random.default_rng(1000 + seed)
    sizes = {d: int(rng.integers(1, 6)) for d in case.dims}
    if seed == 2:  # every named dimension at least 2: no accidental broadcast of a 1
        sizes = {d: int(rng.integers(2, 6)) for d in case.dims}
    check_against_numpy(case, frontend, sizes, seed)


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_property_gradients_match_finite_differences(data):
    name = data.draw(st.sampled_from([c.name for c in CASES]), label="case")
    case = BY_NAME[name]
    frontend = data.draw(st.sampled_from(["text", "text", "ops"]), label="frontend")
    sizes = {d: data.draw(st.integers(1, 4), label=d) for d in case.dims}
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    check_against_numpy(case, frontend, sizes, seed)


# --------------------------------------------------------------------------- SymPy's diff
def _symbols(name: str, shape: tuple) -> np.ndarray:
    arr = np.empty(shape, dtype=object)
    for idx in np.ndindex(shape):
        arr[idx] = sp.Symbol(f"{name}_{'_'.join(map(str, idx))}", real=True)
    return arr


def _scalar(expr):
    return expr.item() if isinstance(expr, np.ndarray) else expr


def _at(expr, subs) -> float:
    value = sp.sympify(expr).xreplace(subs).evalf(30)
    assert value.is_number and value.is_real, (expr, value)
    return float(value)


@pytest.mark.parametrize("name", [c.name for c in CASES if c.sympy])
def test_gradients_match_sympy_on_small_shapes(name):
    """The fully expanded scalar expression, built entry by entry from SymPy symbols and
    differentiated by SymPy w.r.t. each entry, at sizes <= 3."""
    case = BY_NAME[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    sizes = {d: int(rng.integers(2, 4)) for d in case.dims}
    env = draw_env(case, sizes, rng)
    symbols = {n: _symbols(n, np.shape(x)) for n, x in env.items()}
    expr = sp.sympify(
        _scalar(case.fn(SYM, **{n: s if s.shape else s[()] for n, s in symbols.items()}))
    )
    subs = {}
    for n, x in env.items():
        for idx in np.ndindex(np.shape(x)):
            subs[symbols[n][idx]] = sp.Float(float(np.asarray(x)[idx]), 30)

    value, grads = kernel(name, "text").value_and_grad(**env)
    exact = _at(expr, subs)
    assert value == pytest.approx(exact, rel=RTOL_SYMPY, abs=RTOL_SYMPY)
    for n, x in env.items():
        g = np.asarray(grads[n], dtype=float)
        want = np.empty(np.shape(x))
        for idx in np.ndindex(np.shape(x)):
            want[idx] = _at(sp.diff(expr, symbols[n][idx]), subs)
        scale = max(1.0, float(np.max(np.abs(want), initial=0)))
        np.testing.assert_allclose(g, want, rtol=0, atol=RTOL_SYMPY * scale, err_msg=f"{name}.{n}")


def test_example_like_matrix_product_and_2_layer_net_with_sympy_matrices():
    """The same with sympy.Matrix algebra: f = ||W x||^2 and W2 max(0, W1 x) summed, 3x3."""
    rng = np.random.default_rng(33)
    Wm = sp.Matrix(3, 3, lambda i, j: sp.Symbol(f"W{i}{j}", real=True))
    xm = sp.Matrix(3, 1, lambda i, j: sp.Symbol(f"x{i}", real=True))
    q = Wm * xm
    f = sum(qi**2 for qi in q)
    W, x = rng.standard_normal((3, 3)), rng.standard_normal(3)
    subs = {Wm[i, j]: W[i, j] for i in range(3) for j in range(3)}
    subs.update({xm[i]: x[i] for i in range(3)})
    k = compiler.compile_gradient("sum((W @ x)**2)", shapes={"W": ("n", "n"), "x": ("n",)})
    value, grads = k.value_and_grad(W=W, x=x)
    assert value == pytest.approx(float(f.subs(subs)), rel=RTOL_SYMPY)
    for i in range(3):
        assert grads["x"][i] == pytest.approx(float(sp.diff(f, xm[i]).subs(subs)), rel=1e-12)
        for j in range(3):
            want = float(sp.diff(f, Wm[i, j]).subs(subs))
            assert grads["W"][i, j] == pytest.approx(want, rel=1e-12, abs=1e-14)

    W1m = sp.Matrix(3, 3, lambda i, j: sp.Symbol(f"A{i}{j}", real=True))
    W2m = sp.Matrix(2, 3, lambda i, j: sp.Symbol(f"B{i}{j}", real=True))
    out = W2m * (W1m * xm).applyfunc(lambda e: sp.Max(0, e))
    g = sum(out)
    while True:
        W1, W2 = rng.standard_normal((3, 3)), rng.standard_normal((2, 3))
        if np.min(np.abs(W1 @ x)) > MARGIN:
            break
    subs = {xm[i]: x[i] for i in range(3)}
    subs.update({W1m[i, j]: W1[i, j] for i in range(3) for j in range(3)})
    subs.update({W2m[i, j]: W2[i, j] for i in range(2) for j in range(3)})
    k2 = compiler.compile_gradient(
        "W2 @ maximum(0, W1 @ x)", shapes={"W1": ("H", "D"), "x": ("D",), "W2": ("C", "H")}
    )
    value, grads = k2.value_and_grad(W1=W1, x=x, W2=W2)  # default seed: ones, d sum(out)
    np.testing.assert_allclose(value, [float(o.subs(subs)) for o in out], rtol=1e-12)
    for name, sym, shape in (("W1", W1m, (3, 3)), ("W2", W2m, (2, 3)), ("x", xm, (3, 1))):
        want = np.array(
            [
                [float(sp.diff(g, sym[i, j]).subs(subs)) for j in range(shape[1])]
                for i in range(shape[0])
            ]
        ).reshape(np.shape(grads[name]))
        np.testing.assert_allclose(grads[name], want, rtol=1e-12, atol=1e-14, err_msg=name)


# --------------------------------------------------------------------------- kinks: ties
# Tie rule of the max/min reductions: the upstream gradient is split equally among the tied
# extrema (like JAX's max reduction, and like maximum's 1/2-1/2 rule at a tie).
@functools.cache
def reduction_kernel(text: str, shape: tuple):
    return compiler.compile_gradient(text, shapes={"x": shape})


def test_max_tie_splits_the_gradient_equally():
    k = reduction_kernel("max(x)", ("n",))
    value, grads = k.value_and_grad(x=np.array([1.0, 3.0, 3.0]))
    assert value == 3.0
    np.testing.assert_array_equal(grads["x"], [0.0, 0.5, 0.5])
    value, grads = k.value_and_grad(x=np.array([2.0, 2.0, 2.0, -1.0]), seed=3.0)
    assert value == 2.0
    np.testing.assert_allclose(grads["x"], [1.0, 1.0, 1.0, 0.0], rtol=1e-15)  # 3 * 1/3 each
    value, grads = k.value_and_grad(x=np.array([1.0, 5.0, 3.0]))
    np.testing.assert_array_equal(grads["x"], [0.0, 1.0, 0.0])  # no tie: all to the arg-max


def test_min_tie_splits_the_gradient_equally():
    k = reduction_kernel("min(x)", ("n",))
    value, grads = k.value_and_grad(x=np.array([2.0, -1.0, -1.0, 4.0]))
    assert value == -1.0
    np.testing.assert_array_equal(grads["x"], [0.0, 0.5, 0.5, 0.0])


def test_max_over_an_axis_splits_only_in_the_tied_row():
    k = reduction_kernel("sum(max(x, axis=1))", ("B", "D"))
    X = np.array([[1.0, 5.0, 5.0], [2.0, 7.0, 3.0], [4.0, 4.0, 4.0]])
    value, grads = k.value_and_grad(x=X)
    assert value == 5.0 + 7.0 + 4.0
    third = 1.0 / 3.0
    expected = [[0.0, 0.5, 0.5], [0.0, 1.0, 0.0], [third, third, third]]
    np.testing.assert_allclose(grads["x"], expected, rtol=1e-15, atol=0)


def test_max_over_axis_0_with_keepdims_and_a_seed():
    k = reduction_kernel("max(x, axis=0, keepdims=True)", ("B", "D"))
    X = np.array([[1.0, 6.0], [1.0, 2.0], [0.0, 3.0]])
    seed = np.array([[2.0, -4.0]])
    value, grads = k.value_and_grad(x=X, seed=seed)
    np.testing.assert_array_equal(value, [[1.0, 6.0]])
    np.testing.assert_array_equal(grads["x"], [[1.0, -4.0], [1.0, 0.0], [0.0, 0.0]])


# --------------------------------------------------------------------------- broadcasting
@functools.cache
def shaped_kernel(text: str, shapes: tuple):
    return compiler.compile_gradient(text, shapes=dict(shapes))


def test_bias_gradient_sums_over_the_batch():
    k = shaped_kernel("X + b", (("X", ("B", "D")), ("b", ("D",))))
    rng = np.random.default_rng(5)
    X, b, S = rng.standard_normal((4, 3)), rng.standard_normal(3), rng.standard_normal((4, 3))
    value, grads = k.value_and_grad(X=X, b=b, seed=S)
    np.testing.assert_allclose(value, X + b, rtol=1e-15)
    np.testing.assert_allclose(grads["X"], S, rtol=1e-15)
    np.testing.assert_allclose(grads["b"], S.sum(axis=0), rtol=1e-13)
    assert np.shape(grads["b"]) == (3,)
    value, grads = k.value_and_grad(X=X, b=b)  # default seed: ones of the output's shape
    np.testing.assert_allclose(grads["b"], [4.0, 4.0, 4.0], rtol=1e-15)
    np.testing.assert_allclose(grads["X"], np.ones((4, 3)), rtol=1e-15)


def test_column_gradient_keeps_its_dims():
    k = shaped_kernel("X * c", (("X", ("B", "D")), ("c", ("B", 1))))
    rng = np.random.default_rng(6)
    X, c, S = rng.standard_normal((4, 3)), rng.standard_normal((4, 1)), rng.standard_normal((4, 3))
    value, grads = k.value_and_grad(X=X, c=c, seed=S)
    np.testing.assert_allclose(value, X * c, rtol=1e-15)
    np.testing.assert_allclose(grads["X"], S * c, rtol=1e-15)
    np.testing.assert_allclose(grads["c"], (S * X).sum(axis=1, keepdims=True), rtol=1e-13)
    assert np.shape(grads["c"]) == (4, 1)


def test_scalar_times_matrix_gives_the_scalar_a_summed_gradient():
    k = shaped_kernel("a * X", (("X", ("n", "m")),))  # a: omitted, so a scalar
    rng = np.random.default_rng(7)
    X, S = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    value, grads = k.value_and_grad(a=1.5, X=X, seed=S)
    np.testing.assert_allclose(value, 1.5 * X, rtol=1e-15)
    np.testing.assert_allclose(grads["X"], 1.5 * S, rtol=1e-15)
    assert np.asarray(grads["a"]).shape == ()
    assert float(grads["a"]) == pytest.approx(float(np.sum(S * X)), rel=1e-13)
    value, grads = k.value_and_grad(a=1.5, X=X)
    assert float(grads["a"]) == pytest.approx(float(np.sum(X)), rel=1e-13)


@pytest.mark.parametrize("axis", [0, 1, -1, -2])
def test_sum_over_one_axis_broadcasts_the_seed_back(axis):
    k = shaped_kernel(f"sum(X, axis={axis})", (("X", ("B", "D")),))
    rng = np.random.default_rng(8)
    X = rng.standard_normal((4, 3))
    s = rng.standard_normal(3 if axis in (0, -2) else 4)
    value, grads = k.value_and_grad(X=X, seed=s)
    np.testing.assert_allclose(value, X.sum(axis=axis), rtol=1e-13)
    expected = np.broadcast_to(np.expand_dims(s, axis), X.shape)
    np.testing.assert_allclose(grads["X"], expected, rtol=1e-15)


def test_mean_over_an_axis_divides_the_seed():
    k = shaped_kernel("mean(X, axis=0)", (("X", ("B", "D")),))
    X = np.arange(12.0).reshape(4, 3)
    value, grads = k.value_and_grad(X=X, seed=np.array([4.0, 8.0, -2.0]))
    np.testing.assert_allclose(value, [4.5, 5.5, 6.5], rtol=1e-15)
    np.testing.assert_allclose(grads["X"], np.tile([1.0, 2.0, -0.5], (4, 1)), rtol=1e-15)


# --------------------------------------------------------------------------- VJPs with a seed
def test_matmul_vjp_with_a_seed():
    rng = np.random.default_rng(9)
    k = shaped_kernel("A @ B", (("A", ("n", "k")), ("B", ("k", "m"))))
    A, B, S = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal((3, 2))
    value, grads = k.value_and_grad(A=A, B=B, seed=S)
    np.testing.assert_allclose(value, A @ B, rtol=1e-13)
    np.testing.assert_allclose(grads["A"], S @ B.T, rtol=1e-12)
    np.testing.assert_allclose(grads["B"], A.T @ S, rtol=1e-12)
    value, pullback = k.vjp(A=A, B=B)
    np.testing.assert_allclose(value, A @ B, rtol=1e-13)
    g = pullback(S)
    np.testing.assert_allclose(g["A"], S @ B.T, rtol=1e-12)
    np.testing.assert_allclose(g["B"], A.T @ S, rtol=1e-12)
    g2 = pullback(2 * S)  # a pullback can be called again
    np.testing.assert_allclose(g2["A"], 2 * (S @ B.T), rtol=1e-12)


def test_vector_matrix_vjps_with_a_seed():
    rng = np.random.default_rng(10)
    A, u, v = rng.standard_normal((3, 4)), rng.standard_normal(3), rng.standard_normal(4)
    k = shaped_kernel("A @ v", (("A", ("n", "m")), ("v", ("m",))))
    s = rng.standard_normal(3)
    value, grads = k.value_and_grad(A=A, v=v, seed=s)
    np.testing.assert_allclose(value, A @ v, rtol=1e-13)
    np.testing.assert_allclose(grads["A"], np.outer(s, v), rtol=1e-13)
    np.testing.assert_allclose(grads["v"], A.T @ s, rtol=1e-12)
    k = shaped_kernel("u @ A", (("u", ("n",)), ("A", ("n", "m"))))
    s = rng.standard_normal(4)
    value, grads = k.value_and_grad(u=u, A=A, seed=s)
    np.testing.assert_allclose(value, u @ A, rtol=1e-13)
    np.testing.assert_allclose(grads["A"], np.outer(u, s), rtol=1e-13)
    np.testing.assert_allclose(grads["u"], A @ s, rtol=1e-12)
    k = shaped_kernel("u @ w", (("u", ("n",)), ("w", ("n",))))
    w = rng.standard_normal(3)
    value, grads = k.value_and_grad(u=u, w=w, seed=-2.0)
    assert value == pytest.approx(float(u @ w), rel=1e-13)
    np.testing.assert_allclose(grads["u"], -2.0 * w, rtol=1e-15)
    np.testing.assert_allclose(grads["w"], -2.0 * u, rtol=1e-15)


def test_2_layer_net_output_vjp_by_hand():
    """f = W2 max(0, W1 x) with an upstream gradient s, backward written out by hand."""
    rng = np.random.default_rng(11)
    k = shaped_kernel(
        "W2 @ maximum(0, W1 @ x)", (("W1", ("H", "D")), ("x", ("D",)), ("W2", ("C", "H")))
    )
    W1, x, W2 = rng.standard_normal((5, 4)), rng.standard_normal(4), rng.standard_normal((3, 5))
    s = rng.standard_normal(3)
    pre = W1 @ x
    h = np.maximum(0, pre)
    grad_h = W2.T @ s
    grad_pre = grad_h * (pre > 0)
    value, grads = k.value_and_grad(W1=W1, x=x, W2=W2, seed=s)
    np.testing.assert_allclose(value, W2 @ h, rtol=1e-13)
    np.testing.assert_allclose(grads["W2"], np.outer(s, h), rtol=1e-13)
    np.testing.assert_allclose(grads["W1"], np.outer(grad_pre, x), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(grads["x"], W1.T @ grad_pre, rtol=1e-12, atol=1e-15)


def test_wrt_restricts_the_gradients():
    k = compiler.compile_gradient(
        "sum((W2 @ maximum(0, W1 @ x) - t) ** 2)",
        shapes=dict(BY_NAME["net_2_layer"].shapes),
        wrt=["W1", "W2"],
    )
    rng = np.random.default_rng(12)
    env = draw_env(BY_NAME["net_2_layer"], {"H": 4, "D": 3, "C": 2}, rng)
    value, grads = k.value_and_grad(**env)
    assert set(grads) == {"W1", "W2"}
    assert value == pytest.approx(float(_net2(NP, **env)), rel=1e-12)
    for n in ("W1", "W2"):
        fd, err = central_difference(BY_NAME["net_2_layer"], env, n)
        np.testing.assert_allclose(grads[n], fd, rtol=1e-6, atol=1e-6 + 10 * float(err.max()))


# --------------------------------------------------------------------------- one kernel, sizes
def test_one_kernel_serves_every_size_of_its_dimensions():
    k = shaped_kernel("sum((W @ x)**2)", (("W", ("n", "n")), ("x", ("n",))))
    rng = np.random.default_rng(13)
    for n in (2, 5, 2, 1, 7):
        W, x = rng.standard_normal((n, n)), rng.standard_normal(n)
        q = W @ x
        value, grads = k.value_and_grad(W=W, x=x)
        assert value == pytest.approx(float(q @ q), rel=1e-12)
        np.testing.assert_allclose(grads["W"], 2 * np.outer(q, x), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(grads["x"], 2 * W.T @ q, rtol=1e-12, atol=1e-14)
    case = BY_NAME["net_2_layer_batched_bias"]
    for sizes in ({"B": 2, "D": 3, "H": 4, "C": 2}, {"B": 6, "D": 2, "H": 5, "C": 3}):
        check_against_numpy(case, "text", sizes, seed=sizes["B"])


# --------------------------------------------------------------------------- memory
def test_relu_backward_memory_is_linear_in_the_input():
    """The lecture's 4096-wide max(0, x) over a batch of 100: its Jacobian would be
    409,600 x 409,600 (1.3 TB). The backward must stay O(size of X)."""
    k = shaped_kernel("sum(maximum(0, X))", (("X", ("B", "D")),))
    rng = np.random.default_rng(14)
    X = rng.standard_normal((100, 4096))
    X[np.abs(X) < MARGIN] = 1.0  # no ties with 0
    k.value_and_grad(X=X)  # warm-up: compile, caches
    tracemalloc.start()
    try:
        value, grads = k.value_and_grad(X=X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * X.nbytes, (peak, X.nbytes)
    assert value == pytest.approx(float(np.maximum(0, X).sum()), rel=1e-12)
    np.testing.assert_array_equal(grads["X"], (X > 0).astype(float))

    # the gate alone, with the upstream gradient as a seed
    k = shaped_kernel("maximum(0, X)", (("X", ("B", "D")),))
    S = rng.standard_normal(X.shape)
    k.value_and_grad(X=X, seed=S)
    tracemalloc.start()
    try:
        value, grads = k.value_and_grad(X=X, seed=S)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * X.nbytes, (peak, X.nbytes)
    np.testing.assert_array_equal(value, np.maximum(0, X))
    np.testing.assert_array_equal(grads["X"], S * (X > 0))


def test_batched_network_backward_memory_is_linear():
    """The issue's benchmark network at B, D, H, C = 100, 4096, 100, 10: the backward's peak
    allocation stays a small multiple of the inputs."""
    k = shaped_kernel(
        "sum((maximum(0, X @ W1) @ W2 - Y) ** 2)",
        (("X", ("B", "D")), ("W1", ("D", "H")), ("W2", ("H", "C")), ("Y", ("B", "C"))),
    )
    rng = np.random.default_rng(15)
    X, W1 = rng.standard_normal((100, 4096)), 0.01 * rng.standard_normal((4096, 100))
    W2, Y = rng.standard_normal((100, 10)), rng.standard_normal((100, 10))
    k.value_and_grad(X=X, W1=W1, W2=W2, Y=Y)
    tracemalloc.start()
    try:
        value, grads = k.value_and_grad(X=X, W1=W1, W2=W2, Y=Y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * (X.nbytes + W1.nbytes), (peak, X.nbytes + W1.nbytes)
    pre = X @ W1
    h = np.maximum(0, pre)
    g = 2 * (h @ W2 - Y)
    assert value == pytest.approx(float(np.sum((h @ W2 - Y) ** 2)), rel=1e-12)
    np.testing.assert_allclose(grads["W2"], h.T @ g, rtol=1e-10, atol=1e-10)
    gpre = (g @ W2.T) * (pre > 0)
    np.testing.assert_allclose(grads["W1"], X.T @ gpre, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- kinks, layouts
def test_elementwise_kinks_on_matrices_follow_the_kink_table():
    """README's table: maximum/minimum at a tie give each operand 1/2, relu'(0) = 0 (maximum(0, x)
    is fused into relu), abs'(0) = 0; sqrt'(0) = inf."""
    shapes = (("X", ("B", "D")), ("Y", ("B", "D")))
    X = np.array([[0.0, 1.0], [2.0, -1.0]])
    Y = np.array([[0.0, 1.0], [3.0, -1.0]])
    _, g = shaped_kernel("sum(maximum(X, Y))", shapes).value_and_grad(X=X, Y=Y)
    np.testing.assert_array_equal(g["X"], [[0.5, 0.5], [0.0, 0.5]])
    np.testing.assert_array_equal(g["Y"], [[0.5, 0.5], [1.0, 0.5]])
    _, g = shaped_kernel("sum(minimum(X, Y))", shapes).value_and_grad(X=X, Y=Y)
    np.testing.assert_array_equal(g["X"], [[0.5, 0.5], [1.0, 0.5]])
    one = (("X", ("B", "D")),)
    _, g = shaped_kernel("sum(maximum(0, X))", one).value_and_grad(X=X)
    np.testing.assert_array_equal(g["X"], [[0.0, 1.0], [1.0, 0.0]])
    _, g = shaped_kernel("sum(abs(X))", one).value_and_grad(X=X)
    np.testing.assert_array_equal(g["X"], [[0.0, 1.0], [1.0, -1.0]])
    _, g = shaped_kernel("sum(sqrt(X))", one).value_and_grad(X=np.array([[0.0, 4.0]]))
    np.testing.assert_array_equal(g["X"], [[np.inf, 0.25]])


def test_fused_sigmoid_on_a_matrix_is_stable():
    """1/(1+exp(-x)) at x = +-1000 gives 0/1 with gradient 0 (the fused gate), not nan."""
    k = shaped_kernel("sum(1/(1+exp(-(X @ w))))", (("X", ("B", "D")), ("w", ("D",))))
    X = np.array([[1000.0, 0.0], [-1000.0, 0.0], [0.0, 0.0]])
    value, grads = k.value_and_grad(X=X, w=np.array([1.0, 2.0]))
    assert value == pytest.approx(1.5, abs=1e-15)
    np.testing.assert_array_equal(grads["X"], [[0.0, 0.0], [0.0, 0.0], [0.25, 0.5]])
    np.testing.assert_array_equal(grads["w"], [0.0, 0.0])


def test_inputs_in_any_layout_dtype_or_container():
    """Strided views, Fortran order, reversed, read-only, float32 and nested lists all give the
    same numbers; gradients are fresh arrays (not overwritten by the next call), and a pullback
    is unaffected by later calls."""
    case = BY_NAME["net_2_layer_batched_bias"]
    k = kernel(case.name, "text")
    rng = np.random.default_rng(16)
    base = draw_env(case, {"B": 5, "D": 4, "H": 3, "C": 2}, rng)
    base["Y"] = base["Y"].astype(np.float32).astype(np.float64)  # exact in float32
    wide = rng.standard_normal((5, 8))
    wide[:, ::2] = base["X"]
    readonly = base["W2"].copy()
    readonly.setflags(write=False)
    variants = {
        "strided": {**base, "X": wide[:, ::2]},
        "fortran": {n: np.asfortranarray(x) for n, x in base.items()},
        "reversed": {
            **base,
            "b1": base["b1"][::-1].copy()[::-1],
            "Y": base["Y"][::-1].copy()[::-1],
        },
        "readonly": {**base, "W2": readonly},
        "float32": {**base, "Y": base["Y"].astype(np.float32)},
        "lists": {**base, "W1": base["W1"].tolist(), "b2": base["b2"].tolist()},
    }
    expected_value, expected = k.value_and_grad(**base)
    expected = {n: np.array(g, copy=True) for n, g in expected.items()}
    ref = float(case.fn(NP, **base))
    assert expected_value == pytest.approx(ref, rel=1e-12)
    for label, env in variants.items():
        value, grads = k.value_and_grad(**env)
        assert value == pytest.approx(expected_value, rel=1e-12), label
        for n, g in grads.items():
            np.testing.assert_allclose(g, expected[n], rtol=1e-12, atol=1e-14, err_msg=label)
    first_value, first = k.value_and_grad(**base)
    snapshot = {n: g.copy() for n, g in first.items()}
    _, pullback = k.vjp(**base)
    k.value_and_grad(**{**base, "X": 2 * base["X"]})
    for n, g in first.items():
        np.testing.assert_array_equal(g, snapshot[n], err_msg=n)
    for n, g in pullback(1.0).items():
        np.testing.assert_allclose(g, snapshot[n], rtol=1e-12, atol=1e-14, err_msg=n)

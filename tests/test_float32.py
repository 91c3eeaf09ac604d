"""float32 kernels: the dtype follows the inputs (``runtime.inputs.call_dtype``).

- the dtype rule is NumPy's own promotion (Python numbers weak, NEP 50), checked against what
  NumPy's arithmetic gives for the same operands; float16 computes in float32, integers alone in
  float64;
- float32 inputs give float32 values and gradients on every tier and entry (``__call__``,
  ``value_and_grad``, ``grad``, ``vjp``, ``out=``), within a float32 tolerance of a float64
  oracle: hand-written NumPy float64 formulas, and central differences of them in float64 for
  gradients of the expression over many ops;
- mixed float32/float64 inputs give exactly the all-float64 results; a float32 call leaves the
  float64 module, its source and its cache key as they were;
- a single-number input's gradient (a sum over the elements) accumulates in float64 and is
  rounded once: within half a float32 ulp of the exact sum;
- out= buffers of the wrong dtype are an ``InputError``; the audit lets float32 constants of
  numbers only into a module.

Tolerance: float32's epsilon is 1.2e-7; each op's lowering is within a few ulps, and a result
is compared with ``rtol=RTOL`` plus ``atol=ATOL`` times the largest magnitude of the oracle's
result (cancellation in a sum of terms loses relative accuracy of the smaller ones).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import compiler
from compiler.codegen import numba_source
from compiler.codegen.audit import check_python
from compiler.errors import CompileError, InputError
from runtime import cache, policy
from runtime.inputs import call_dtype

RTOL, ATOL = 2e-5, 2e-6
F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
TIERS = ("instant", "compiled", "auto", "llvm")


@pytest.fixture
def tier(request, monkeypatch):
    """A tier forced: ``llvm`` is mode="compiled" with every graph beyond LLVM_OPS."""
    name = request.param
    if name == "llvm":
        monkeypatch.setattr(policy, "LLVM_OPS", -1)
        return "compiled"
    return name


def close(got, want, rtol=RTOL, atol=ATOL):
    want = np.asarray(want, dtype=np.float64)
    scale = float(np.max(np.abs(want))) if want.size else 1.0
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=rtol, atol=atol * scale)


# ------------------------------------------------------------------------------ the dtype rule
def _numpy_dtype(*values) -> np.dtype:
    """The oracle: the dtype NumPy's own arithmetic gives these operands, then float16 → float32
    and integers → float64 (symgrad's two stated departures)."""
    total = values[0]
    for v in values[1:]:
        total = np.add(total, v)
    dtype = np.asarray(total).dtype
    if dtype.kind != "f":
        return F64
    return F32 if dtype.itemsize <= 4 else F64


CASES = [
    (np.ones(3, np.float32), 0.5),  # a Python float is weak
    (np.ones(3, np.float32), 2),  # so is a Python int
    (np.ones(3, np.float32), np.float32(0.5)),
    (np.ones(3, np.float32), np.ones(3)),  # any float64 makes it float64
    (np.ones(3, np.float32), np.float64(0.5)),  # np.float64 is strong (though a Python float)
    (np.ones(3, np.float32), [0.5, 1.0, 2.0]),  # a list of floats is a float64 array
    (np.ones(3, np.int64), np.ones(3, np.float32)),  # int64 with float32: float64
    (np.ones(3, np.int16), np.ones(3, np.float32)),  # int16 with float32: float32
    (np.ones(3, np.float16), 0.5),  # float16: computed in float32
    (np.ones(3, np.float16), np.ones(3, np.float16)),
    (np.ones(3, np.int64), np.ones(3, np.int8)),  # integers alone: float64
    (0.5, 2),
    (np.float32(0.5), True),
]


@pytest.mark.parametrize("a, b", CASES)
def test_the_call_dtype_is_numpys_promotion(a, b):
    pairs = [(v, np.asarray(v)) for v in (a, b)]
    assert call_dtype(pairs) == _numpy_dtype(a, b)


@pytest.mark.parametrize("a, b", CASES)
def test_a_kernel_computes_in_the_call_dtype(a, b):
    k = compiler.compile_gradient("x * y + exp(x)", mode="compiled")
    value, grads = k.value_and_grad(x=a, y=b)
    want = _numpy_dtype(a, b)
    assert np.asarray(value).dtype == want
    assert all(np.asarray(g).dtype == want for g in grads.values())
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    close(value, x * y + np.exp(x))
    close(grads["y"], x * np.ones_like(y) if np.ndim(b) else np.sum(x * np.ones_like(y)))


# ------------------------------------------------------------------------------ expressions
def _neuron(w0, x0, w1, x1, w2):
    return 1 / (1 + np.exp(-(w0 * x0 + w1 * x1 + w2)))


def _rosenbrock(x, y):
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


_erf = np.vectorize(math.erf)
_lgamma = np.vectorize(math.lgamma)


def _many(x, y):
    return (
        np.where(x > 0.2, np.sqrt(np.abs(x)), 0.0)
        + np.clip(y, -0.5, 0.5) * _erf(x)
        + _lgamma(y + 3)
        + np.arctan2(x, y)
        + np.logaddexp(x, y)
        + np.sin(x) * np.cos(y)
        + np.tanh(x * y)
    )


EXPRESSIONS = {
    "neuron": ("1/(1 + exp(-(w0*x0 + w1*x1 + w2)))", _neuron),
    "rosenbrock": ("(1 - x)**2 + 100*(y - x**2)**2", _rosenbrock),
    "many": (
        "where(x > 0.2, sqrt(abs(x)), 0) + clip(y, -0.5, 0.5)*erf(x) + lgamma(y + 3)"
        " + atan2(x, y) + logaddexp(x, y) + sin(x)*cos(y) + tanh(x*y)",
        _many,
    ),
}


def _points(names, n=257, seed=0):
    """float32 points away from the kinks of where (0.2) and clip (+-0.5)."""
    rng = np.random.default_rng(seed)
    values = {}
    for name in names:
        v = rng.uniform(-1.5, 1.5, n)
        v = np.where(np.abs(np.abs(v) - 0.5) < 0.02, v + 0.05, v)
        v = np.where(np.abs(v - 0.2) < 0.02, v + 0.05, v)
        values[name] = v.astype(np.float32)
    return values


def _gradients(f, names, values):
    """Central differences of the float64 formula at the float32 points, in float64."""
    x64 = {n: values[n].astype(np.float64) for n in names}
    grads = {}
    for n in names:
        h = 1e-6 * np.maximum(1.0, np.abs(x64[n]))
        up, down = dict(x64), dict(x64)
        up[n], down[n] = x64[n] + h, x64[n] - h
        grads[n] = (f(**up) - f(**down)) / (2 * h)
    return grads


@pytest.mark.parametrize("tier", TIERS, indirect=True)
@pytest.mark.parametrize("name", list(EXPRESSIONS))
def test_float32_values_and_gradients_on_every_tier(name, tier):
    text, f = EXPRESSIONS[name]
    k = compiler.compile_gradient(text, mode=tier)
    values = _points(k.inputs)
    want_value = f(**{n: v.astype(np.float64) for n, v in values.items()})
    want = _gradients(f, k.inputs, values)
    value, grads = k.value_and_grad(**values)
    assert value.dtype == F32 and all(g.dtype == F32 for g in grads.values())
    if tier == "instant":
        assert k.tier == "vm"  # the VM itself answers, in float32
    close(value, want_value)
    for n in k.inputs:
        close(grads[n], want[n], rtol=1e-4, atol=2e-5)  # the oracle's differences: ~1e-8
    plain = k(**values)
    assert plain.dtype == F32
    close(plain, want_value)
    forward, pullback = k.vjp(**values)
    assert forward.dtype == F32
    seed = np.linspace(-1, 1, forward.size, dtype=np.float32)
    pulled = pullback(seed)
    for n in k.inputs:
        assert pulled[n].dtype == F32
        close(pulled[n], seed.astype(np.float64) * want[n], rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("tier", TIERS, indirect=True)
def test_the_neuron_at_the_lectures_point(tier):
    """The lecture's neuron, every input a np.float32 number: a np.float32 value and gradients."""
    k = compiler.compile_gradient(EXPRESSIONS["neuron"][0], mode=tier)
    at = dict(w0=2.0, x0=-1.0, w1=-3.0, x1=-2.0, w2=-3.0)
    value, grads = k.value_and_grad(**{n: np.float32(v) for n, v in at.items()})
    assert type(value) is np.float32 and all(type(g) is np.float32 for g in grads.values())
    s = 1 / (1 + math.exp(-(2 * -1 + -3 * -2 - 3)))  # 0.7311
    local = s * (1 - s)
    want = dict(w0=-local, x0=2 * local, w1=-2 * local, x1=-3 * local, w2=local)
    close(value, s)
    for n, w in want.items():
        close(grads[n], w)


@pytest.mark.parametrize("tier", TIERS, indirect=True)
def test_mixed_inputs_give_exactly_the_float64_results(tier):
    k = compiler.compile_gradient(EXPRESSIONS["many"][0], mode=tier)
    values = _points(k.inputs)
    x32, y64 = values["x"], values["y"].astype(np.float64)
    value, grads = k.value_and_grad(x=x32, y=y64)
    assert value.dtype == F64 and all(g.dtype == F64 for g in grads.values())
    value64, grads64 = k.value_and_grad(x=x32.astype(np.float64), y=y64)
    np.testing.assert_array_equal(value, value64)
    for n in k.inputs:
        np.testing.assert_array_equal(grads[n], grads64[n])


@pytest.mark.parametrize("tier", TIERS, indirect=True)
def test_python_floats_with_float32_arrays_stay_float32(tier):
    k = compiler.compile_gradient("x * a + b * exp(-x)", mode=tier)
    x = np.linspace(-1, 1, 101, dtype=np.float32)
    value, grads = k.value_and_grad(x=x, a=0.1, b=3)
    assert value.dtype == F32 and grads["x"].dtype == F32
    assert type(grads["a"]) is np.float32 and type(grads["b"]) is np.float32
    x64 = x.astype(np.float64)
    close(value, x64 * 0.1 + 3 * np.exp(-x64))
    close(grads["x"], 0.1 - 3 * np.exp(-x64))
    close(grads["a"], np.sum(x64))


def test_integer_arrays_follow_numpy():
    k = compiler.compile_gradient("x * y", mode="compiled")
    y = np.linspace(0, 1, 5, dtype=np.float32)
    assert k(x=np.arange(5), y=y).dtype == (np.arange(5) * y).dtype == F64
    small = np.arange(5, dtype=np.int16)
    assert k(x=small, y=y).dtype == (small * y).dtype == F32
    close(k(x=small, y=y), np.arange(5) * y.astype(np.float64))


# ------------------------------------------------------------------------------ sums
@pytest.mark.parametrize("tier", TIERS, indirect=True)
def test_a_single_numbers_gradient_is_summed_in_float64(tier):
    """d/dw sum(w * x) = sum(x): the exact sum rounded once (within half a float32 ulp, plus the
    float64 sum's own error, 10^-3 ulp here), where a float32 running sum (what a loop
    accumulating in float32 gives, ``np.cumsum``) is off by over 100 ulps."""
    k = compiler.compile_gradient("w * x", mode=tier)
    x = np.random.default_rng(1).uniform(0, 1, 1_000_000).astype(np.float32)
    grads = k.grad(w=np.float32(1.5), x=x)
    exact = math.fsum(x.astype(np.float64))
    assert type(grads["w"]) is np.float32
    ulp = float(np.spacing(np.float32(exact)))
    assert abs(float(grads["w"]) - exact) <= 0.501 * ulp
    assert abs(float(np.cumsum(x)[-1]) - exact) > 100 * ulp  # why float64: the test can fail


@pytest.mark.parametrize("tier", TIERS, indirect=True)
def test_partly_broadcast_inputs_sum_back_in_float32(tier):
    k = compiler.compile_gradient("a * sin(b) + b", mode=tier)
    a = np.random.default_rng(2).uniform(-1, 1, (3, 1)).astype(np.float32)
    b = np.random.default_rng(3).uniform(-1, 1, (3, 400)).astype(np.float32)
    value, grads = k.value_and_grad(a=a, b=b)
    assert value.dtype == grads["a"].dtype == grads["b"].dtype == F32
    assert grads["a"].shape == (3, 1)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    close(grads["a"], np.sin(b64).sum(axis=1, keepdims=True))
    close(grads["b"], a64 * np.cos(b64) + 1)


# ------------------------------------------------------------------------------ out=
def test_out_buffers_have_the_calls_dtype():
    k = compiler.compile_gradient("x * y", mode="compiled")
    x = np.linspace(0, 1, 7, dtype=np.float32)
    y = np.linspace(1, 2, 7, dtype=np.float32)
    value = np.empty(7, np.float32)
    grads = {"x": np.empty(7, np.float32), "y": np.empty(7, np.float32)}
    got, got_grads = k.value_and_grad(x=x, y=y, out=(value, grads))
    assert got is value and got_grads["x"] is grads["x"]
    close(value, x.astype(np.float64) * y)
    close(grads["x"], y)
    with pytest.raises(InputError, match="float32"):
        k(x=x, y=y, out=np.empty(7))
    with pytest.raises(InputError, match="gradient of 'y'.*float32"):
        k.grad(x=x, y=y, out={"x": np.empty(7, np.float32), "y": np.empty(7)})
    with pytest.raises(InputError, match="float64"):
        k(x=x.astype(np.float64), y=y, out=np.empty(7, np.float32))


# ------------------------------------------------------------------------------ float64 as before
def test_float64_is_untouched_by_float32_calls():
    """A float32 call builds a module of its own: the float64 results are bit for bit those of
    a kernel that never saw float32, its source has no float32, its cache key is as before."""
    text = EXPRESSIONS["many"][0]
    values = {n: v.astype(np.float64) for n, v in _points(("x", "y")).items()}
    fresh = compiler.compile_gradient(text, mode="compiled")
    value, grads = fresh.value_and_grad(**values)
    k = compiler.compile_gradient(text, mode="compiled")
    k.value_and_grad(**{n: v.astype(np.float32) for n, v in values.items()})
    again, grads_again = k.value_and_grad(**values)
    np.testing.assert_array_equal(again, value)
    for n in grads:
        np.testing.assert_array_equal(grads_again[n], grads[n])
    assert "float32" not in k.source and "float32" in k.source_for("float32")
    parts = (k.graph.key(), repr(k.inputs), repr(k.wrt), "aas", repr(numba_source.SPLIT_LINES))
    assert k._key(("aas", "float64")) == cache.cache_key(*parts)
    assert k._key(("aas", "float32")) != k._key(("aas", "float64"))


def test_a_split_float32_kernel(monkeypatch):
    """An entry long enough to be cut into segments: its temporaries are float64 rows, read
    back as float32, so every line stays float32."""
    monkeypatch.setattr(numba_source, "SPLIT_LINES", 4)
    text, f = EXPRESSIONS["rosenbrock"]
    k = compiler.compile_gradient(text, mode="compiled")
    assert "np.float32(temps[" in k.source_for("float32")
    values = _points(k.inputs)
    value, grads = k.value_and_grad(**values)
    assert value.dtype == F32 and all(g.dtype == F32 for g in grads.values())
    want = _gradients(f, k.inputs, values)
    close(value, f(**{n: v.astype(np.float64) for n, v in values.items()}))
    for n in k.inputs:
        close(grads[n], want[n], rtol=1e-4, atol=2e-5)


def test_float32_source_keeps_every_line_float32():
    """No float literal in a float32 module's functions: each constant is a float32 number."""
    k = compiler.compile_gradient("x * 0.1 + exp(-x) / 3.5 + x ** 2.5", mode="compiled")
    source = k.source_for("float32")
    functions = source[source.index("@njit") :]
    assert not any(c.isdigit() and "." in c for c in _float_tokens(functions))
    assert "np.float32(0.1)" in source and "np.float32(3.5)" in source


def _float_tokens(text: str) -> list[str]:
    import io
    import tokenize

    tokens = tokenize.generate_tokens(io.StringIO(text).readline)
    return [t.string for t in tokens if t.type == tokenize.NUMBER]


# ------------------------------------------------------------------------------ the audit
HEADER = '"""symgrad kernels (generated: edit the graph, not this file)."""\nimport math\n'
HEADER += "import numpy as np\n"


@pytest.mark.parametrize(
    "line",
    ["c1 = np.float32(0.1)", "c1 = np.float32(-2)", "c1 = np.float32(math.nan)"]
    + ["c1 = np.float32(-math.inf)"],
)
def test_the_audit_admits_float32_numbers(line):
    check_python(HEADER + line + "\n")


@pytest.mark.parametrize(
    "line",
    [
        "c1 = np.float32(x)",
        "c1 = np.float32('1')",
        "c1 = np.float32(math.pi.real)",
        "c1 = np.float32(open('f'))",
        "c1 = np.float32(1, 2)",
        "c1 = np.float64(0.1)",
        "c1 = np.float32(True)",
        "c1 = np.float32(math.e)",
    ],
)
def test_the_audit_refuses_anything_else_as_a_float32_constant(line):
    with pytest.raises(CompileError, match="audit"):
        check_python(HEADER + line + "\n")


# ------------------------------------------------------------------------------ tensors
SHAPES = {"W1": ("h", "d"), "b1": ("h",), "W2": ("o", "h"), "x": ("d",), "y": ("o",)}
NET = "sum((W2 @ tanh(W1 @ x + b1) - y)**2) + 0.01*sum(W1*W1)"


def _net(W1, b1, W2, x, y):
    """The two-layer net and its gradients, by hand in float64 (the oracle)."""
    a = W1 @ x + b1
    hidden = np.tanh(a)
    r = W2 @ hidden - y
    loss = np.sum(r**2) + 0.01 * np.sum(W1 * W1)
    d_hidden = W2.T @ (2 * r)
    d_a = d_hidden * (1 - hidden**2)
    return loss, {
        "W1": np.outer(d_a, x) + 0.02 * W1,
        "b1": d_a,
        "W2": np.outer(2 * r, hidden),
        "x": W1.T @ d_a,
        "y": -2 * r,
    }


@pytest.mark.parametrize("mode", ["instant", "compiled", "auto"])
def test_a_two_layer_net_in_float32(mode):
    k = compiler.compile_gradient(NET, shapes=SHAPES, mode=mode)
    rng = np.random.default_rng(4)
    sizes = {"h": 16, "d": 8, "o": 3}
    values = {
        n: rng.standard_normal(tuple(sizes[d] for d in shape)).astype(np.float32)
        for n, shape in SHAPES.items()
    }
    loss, want = _net(**{n: v.astype(np.float64) for n, v in values.items()})
    value, grads = k.value_and_grad(**values)
    assert type(value) is np.float32 and all(g.dtype == F32 for g in grads.values())
    close(value, loss)
    for n in want:
        close(grads[n], want[n])
    assert type(k(**values)) is np.float32
    forward, pullback = k.vjp(**values)
    pulled = pullback(np.float32(2.0))
    assert type(forward) is np.float32 and all(g.dtype == F32 for g in pulled.values())
    for n in want:
        close(pulled[n], 2 * want[n])
    mixed = dict(values, y=values["y"].astype(np.float64))
    value64, grads64 = k.value_and_grad(**mixed)
    assert type(value64) is float and all(g.dtype == F64 for g in grads64.values())
    exact, exact_grads = k.value_and_grad(**{n: v.astype(np.float64) for n, v in values.items()})
    assert value64 == exact
    for n in want:
        np.testing.assert_array_equal(grads64[n], exact_grads[n])


def _program(X, w):
    z = X * w + 0.5
    m = z.max(axis=1, keepdims=True)
    log_softmax = z - m - np.log(np.sum(np.exp(z - m), axis=1, keepdims=True))
    return np.sum(log_softmax) + np.max(np.exp(-X * X) * w) + np.sum(w / (1 + np.exp(-X)))


def _element_gradients(f, values):
    """Central differences of a scalar float64 formula, one element at a time."""
    x64 = {n: v.astype(np.float64) for n, v in values.items()}
    grads = {}
    for n, v in x64.items():
        g = np.empty_like(v)
        for index in np.ndindex(v.shape):
            h = 1e-6 * max(1.0, abs(v[index]))
            up, down = v.copy(), v.copy()
            up[index] += h
            down[index] -= h
            g[index] = (f(**dict(x64, **{n: up})) - f(**dict(x64, **{n: down}))) / (2 * h)
        grads[n] = g
    return grads


@pytest.mark.parametrize("mode", ["instant", "compiled"])
def test_a_tensor_program_of_elementwise_ops_and_reductions_in_float32(mode):
    shapes = {"X": ("b", "n"), "w": ("n",)}
    text = "sum(log_softmax(X * w + 0.5, axis=1)) + max(exp(-X*X) * w) + sum(sigmoid(X) * w)"
    k = compiler.compile_gradient(text, shapes=shapes, mode=mode)
    rng = np.random.default_rng(5)
    values = {"X": rng.standard_normal((6, 5)), "w": rng.standard_normal(5)}
    values = {n: v.astype(np.float32) for n, v in values.items()}
    value, grads = k.value_and_grad(**values)
    assert type(value) is np.float32 and all(g.dtype == F32 for g in grads.values())
    close(value, _program(**{n: v.astype(np.float64) for n, v in values.items()}))
    for n, g in _element_gradients(_program, values).items():
        close(grads[n], g, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize(
    "tier, engine",
    [("instant", "vm"), ("compiled", "numba"), ("llvm", "llvm-O3")],
    indirect=["tier"],
)
def test_each_tier_answers_float32_itself(tier, engine):
    """Each engine answers a float32 call itself: the VM, Numba and LLVM all compute in it."""
    k = compiler.compile_gradient("x * tanh(y) + exp(-x * y)", mode=tier)
    x = np.linspace(-1, 1, 9, dtype=np.float32)
    value, grads = k.value_and_grad(x=x, y=0.25)
    assert k.tier == engine
    assert value.dtype == grads["x"].dtype == F32 and type(grads["y"]) is np.float32
    x64 = x.astype(np.float64)
    close(value, x64 * np.tanh(0.25) + np.exp(-x64 * 0.25))
    close(grads["x"], np.tanh(0.25) - 0.25 * np.exp(-x64 * 0.25))


@pytest.mark.parametrize("mode", ["instant", "compiled"])
def test_cross_entropy_with_small_integer_labels_in_float32(mode):
    """int8 labels with float32 logits compute in float32 (NumPy: int8 + float32 is float32);
    take_along_axis and its adjoint (scatter_along_axis, float64 in NumPy) stay float32."""
    shapes = {"z": ("B", "C"), "y": ("B", 1)}
    text = "-mean(take_along_axis(log_softmax(z, axis=1), y, axis=1))"
    k = compiler.compile_gradient(text, shapes=shapes, wrt=["z"], mode=mode)
    rng = np.random.default_rng(7)
    z = (rng.normal(size=(6, 5)) * 3).astype(np.float32)
    labels = rng.integers(0, 5, size=6).astype(np.int8)
    value, grads = k.value_and_grad(z=z, y=labels[:, None])
    assert type(value) is np.float32 and grads["z"].dtype == F32
    z64 = z.astype(np.float64)
    p = np.exp(z64 - z64.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    rows = np.arange(6)
    close(value, -np.mean(np.log(p[rows, labels])))
    want = p.copy()
    want[rows, labels] -= 1
    close(grads["z"], want / 6)
    assert type(k(z=z, y=labels.astype(np.int64)[:, None])) is float  # int64: float64 (NumPy)

"""Second derivatives (issue 16's groundwork): ``Kernel.hvp`` and ``compile_hessian``.

Expected numbers come from SymPy's own ``hessian`` and ``diff`` of expressions written here in
SymPy (never converted from symgrad's graphs), evaluated at 30 digits, or from central finite
differences of the gradient — never from the code under test.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import compiler
from compiler.errors import InputError

MODES = ("instant", "compiled")
S = {name: sp.Symbol(name, real=True) for name in "x y z w0 w1 w2 x0 x1".split()}
x, y, z = S["x"], S["y"], S["z"]
w0, w1, w2, x0, x1 = S["w0"], S["w1"], S["w2"], S["x0"], S["x1"]
NEURON = "1/(1+exp(-(w0*x0+w1*x1+w2)))"
NEURON_POINT = {"w0": 2.0, "x0": -1.0, "w1": -3.0, "x1": -2.0, "w2": -3.0}

#: (text, the same function in SymPy, a point): the SymPy side is the oracle.
CASES = [
    (NEURON, 1 / (1 + sp.exp(-(w0 * x0 + w1 * x1 + w2))), NEURON_POINT),
    ("x*y + exp(x)*sin(y)", x * y + sp.exp(x) * sp.sin(y), {"x": 0.3, "y": 0.7}),
    ("log(1+x*x)*y", sp.log(1 + x * x) * y, {"x": -1.2, "y": 0.8}),
    ("tanh(x*y) + x", sp.tanh(x * y) + x, {"x": 0.4, "y": -1.1}),
    ("sqrt(x*x + y*y + 1)", sp.sqrt(x * x + y * y + 1), {"x": 0.5, "y": -2.0}),
    ("pow(x, y)", x**y, {"x": 1.3, "y": 0.7}),
    ("x**3 * y - y**2 / x", x**3 * y - y**2 / x, {"x": 1.7, "y": -0.4}),
    ("exp(-x*x/2) * cos(y) + z*x", sp.exp(-x * x / 2) * sp.cos(y) + z * x, {"x": 0.2, "y": 1.0, "z": 3.0}),
    ("atan(x*y) + erf(x)", sp.atan(x * y) + sp.erf(x), {"x": 0.6, "y": -0.9}),
    ("log(1 + exp(x - y)) + x/(1 + y*y)", sp.log(1 + sp.exp(x - y)) + x / (1 + y * y), {"x": 0.1, "y": 0.5}),
    ("sinh(x)*cosh(y) + x*y*z", sp.sinh(x) * sp.cosh(y) + x * y * z, {"x": -0.3, "y": 0.2, "z": 1.5}),
    ("tanh(sqrt(x*x + 1) * y)**2", sp.tanh(sp.sqrt(x * x + 1) * y) ** 2, {"x": 0.9, "y": 0.35}),
    ("pow(x*x + 1, 1.5) / y", (x * x + 1) ** sp.Rational(3, 2) / y, {"x": -0.7, "y": 2.5}),
]  # fmt: skip
IDS = [text for text, _, _ in CASES]


def _symbols(point: dict) -> list:
    return [S[name] for name in point]


def _oracle(expr, point: dict) -> tuple[float, np.ndarray, np.ndarray]:
    """SymPy's value, gradient and Hessian at ``point``, to 30 digits, as floats."""
    syms, subs = _symbols(point), {S[n]: sp.Float(v, 30) for n, v in point.items()}
    value = float(expr.subs(subs).evalf(30))
    grad = np.array([float(sp.diff(expr, s).subs(subs).evalf(30)) for s in syms])
    hess = sp.hessian(expr, syms).subs(subs).evalf(30)
    return value, grad, np.array(hess.tolist(), dtype=float)


@cache
def _kernel(text: str, mode: str, inputs: tuple[str, ...]):
    return compiler.compile_gradient(text, inputs=list(inputs), mode=mode)


@cache
def _hessian(text: str, mode: str, inputs: tuple[str, ...], wrt: tuple[str, ...] | None = None):
    wrt = list(wrt) if wrt is not None else None
    return compiler.compile_hessian(text, inputs=list(inputs), wrt=wrt, mode=mode)


def _close(got, want, rel=1e-10, abs_=1e-12):
    np.testing.assert_allclose(np.asarray(got, dtype=float), want, rtol=rel, atol=abs_)


# ------------------------------------------------------------------ against SymPy
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("text, expr, point", CASES, ids=IDS)
def test_hessian_matches_sympy(text, expr, point, mode):
    value, grad, hess = _oracle(expr, point)
    h = _hessian(text, mode, tuple(point))
    got_value, got_grad, got_hess = h(**point)
    assert got_hess.shape == (len(point), len(point))
    _close(got_value, value)
    _close([got_grad[n] for n in point], grad)
    _close(got_hess, hess)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("text, expr, point", CASES, ids=IDS)
def test_hvp_matches_sympy(text, expr, point, mode):
    value, grad, hess = _oracle(expr, point)
    v = dict(zip(point, np.random.default_rng(len(text)).normal(size=len(point))))
    got_value, got_grad, hv = _kernel(text, mode, tuple(point)).hvp(**point, v=v)
    _close(got_value, value)
    _close([got_grad[n] for n in point], grad)
    _close([hv[n] for n in point], hess @ np.array(list(v.values())))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("text, expr, point", CASES, ids=IDS)
def test_hessian_is_exactly_symmetric(text, expr, point, mode):
    h = _hessian(text, mode, tuple(point))(**point)[2]
    assert np.array_equal(h, h.T)


def test_the_tiers_answered():
    """The modes above ran on the engines they name (the HVP program is an ordinary kernel)."""
    k = compiler.compile_gradient("x*y + exp(x)*y", mode="instant")
    k.hvp(x=0.5, y=2.0, v={"x": 1.0})
    assert k.hvp_kernel.tier == "vm" and k.hvp_kernel.inputs == ("x", "y", "v_x", "v_y")
    h = compiler.compile_hessian("x*y + exp(x)*y", mode="compiled")
    h(x=0.5, y=2.0)
    assert h.tier == "numba"


def test_a_hessian_is_one_pass(monkeypatch):
    """Value, gradient and the whole triangle in one call of one kernel (one pass over the
    samples), each entry read out as a single number's gradient (summed in the loop)."""
    h = compiler.compile_hessian(NEURON, wrt=["w0", "w1", "w2"], mode="instant")
    calls = []
    run = h.kernel._value_and_grad_pass
    monkeypatch.setattr(h.kernel, "_value_and_grad_pass", lambda *a: calls.append(1) or run(*a))
    h(**NEURON_POINT)
    assert len(calls) == 1
    upper = ("h_0_0", "h_0_1", "h_0_2", "h_1_1", "h_1_2", "h_2_2")
    assert h.kernel.inputs[5:] == ("v_w0", "v_w1", "v_w2", *upper)


def test_hvp_value_and_grad_match_first_order():
    """hvp's value and gradient are the kernel's own (same ops, one pass)."""
    k = compiler.compile_gradient(NEURON, mode="instant")
    value, grad = k.value_and_grad(**NEURON_POINT)
    v_value, v_grad, _ = k.hvp(**NEURON_POINT, v={"w0": 1.0})
    _close(v_value, value, rel=1e-15)
    for name in k.inputs:
        _close(v_grad[name], grad[name], rel=1e-14)


def test_missing_directions_are_zero():
    _, _, hess = _oracle(CASES[1][1], CASES[1][2])
    k = _kernel(CASES[1][0], "instant", ("x", "y"))
    _, _, hv = k.hvp(**CASES[1][2], v={"y": 1.0})
    _close([hv["x"], hv["y"]], hess[:, 1])


@pytest.mark.parametrize("mode", MODES)
def test_fused_and_unfused_agree(mode):
    """The fused sigmoid's local gradient σ(x)σ(−x), differentiated again, gives the unfused
    graph's second derivatives."""
    fused = compiler.compile_hessian(NEURON, mode=mode)(**NEURON_POINT)[2]
    plain = compiler.compile_hessian(NEURON, mode=mode, fuse=False)(**NEURON_POINT)[2]
    _close(fused, plain, rel=1e-12)
    _close(fused, _oracle(CASES[0][1], NEURON_POINT)[2])


# ------------------------------------------------------------------ samples
def _samples(n: int = 6):
    rng = np.random.default_rng(16)
    return rng.normal(size=n), rng.normal(size=n)


@pytest.mark.parametrize("mode", MODES)
def test_hessian_over_samples_is_the_sum_of_per_sample_hessians(mode):
    xs0, xs1 = _samples()
    params = {"w0": 0.7, "w1": -1.3, "w2": 0.2}
    expr = CASES[0][1]
    want_grad, want_hess = np.zeros(3), np.zeros((3, 3))
    for a, b in zip(xs0, xs1):
        e = expr.subs({x0: a, x1: b})
        _, g, hs = _oracle(e, params)
        want_grad += g
        want_hess += hs
    h = compiler.compile_hessian(NEURON, wrt=["w0", "w1", "w2"], mode=mode)
    value, grad, hess = h(**params, x0=xs0, x1=xs1)
    assert np.shape(value) == xs0.shape
    _close([grad[n] for n in params], want_grad)
    _close(hess, want_hess)
    assert np.array_equal(hess, hess.T)


@pytest.mark.parametrize("mode", MODES)
def test_hvp_with_arrays_of_samples(mode):
    """A direction for an input of samples is per sample (a number broadcasts to each); a
    parameter's H·v is summed over the samples, as its gradient is."""
    xs0, xs1 = _samples(4)
    params = {"w0": 0.7, "w1": -1.3, "w2": 0.2}
    v = {"w0": 0.5, "w1": -1.0, "w2": 2.0, "x0": np.linspace(-1, 1, 4), "x1": 0.25}
    k = compiler.compile_gradient(NEURON, mode=mode)
    _, grad, hv = k.hvp(**params, x0=xs0, x1=xs1, v=v)
    order = ["w0", "x0", "w1", "x1", "w2"]
    want = {n: np.zeros(4) for n in order}
    for i, (a, b) in enumerate(zip(xs0, xs1)):
        point = {**params, "x0": a, "x1": b}
        point = {n: point[n] for n in order}
        _, _, hs = _oracle(CASES[0][1], point)
        vi = np.array([v["w0"], v["x0"][i], v["w1"], v["x1"], v["w2"]])
        for n, row in zip(order, hs @ vi):
            want[n][i] = row
    for n in ("w0", "w1", "w2"):
        _close(hv[n], want[n].sum())
        assert np.ndim(grad[n]) == 0
    for n in ("x0", "x1"):
        assert hv[n].shape == (4,) and grad[n].shape == (4,)
        _close(hv[n], want[n])


# ------------------------------------------------------------------ finite differences
FD_CASES = [c for c in CASES if c[0] != "pow(x, y)"]  # x**y: x > 0 only


@settings(max_examples=40, deadline=None)
@given(
    case=st.sampled_from(FD_CASES),
    data=st.data(),
)
def test_hvp_against_finite_differences_of_the_gradient(case, data):
    """H·v ≈ (∇f(x + h·v) − ∇f(x − h·v)) / 2h at random points and directions."""
    text, _, base = case
    names = tuple(base)
    point = {n: data.draw(st.floats(-1.5, 1.5), label=n) for n in names}
    v = {n: data.draw(st.floats(-1, 1), label=f"v_{n}") for n in names}
    if text.startswith("pow(x*x"):
        point["y"] = 1.0 + abs(point["y"])  # away from the pole at y = 0
    if "/ x" in text:
        point["x"] = 0.5 + abs(point["x"])
    k = _kernel(text, "instant", names)
    _, _, hv = k.hvp(**point, v=v)
    h = 1e-5
    plus = k.grad(**{n: point[n] + h * v[n] for n in names})
    minus = k.grad(**{n: point[n] - h * v[n] for n in names})
    for n in names:
        numeric = (plus[n] - minus[n]) / (2 * h)
        scale = max(1.0, abs(numeric), *(abs(g) for g in plus.values()))
        assert abs(hv[n] - numeric) <= 1e-6 * scale, (n, hv[n], numeric)


# ------------------------------------------------------------------ kinks
KINKS = [
    ("abs(x)*y + x*x", sp.Abs(x) * y + x * x),
    ("relu(x)**2 * y", sp.Max(0, x) ** 2 * y),
    ("maximum(x*x, y) + y", sp.Max(x * x, y) + y),
    ("minimum(x, y)*x", sp.Min(x, y) * x),
    ("abs(sin(x))*exp(y)", sp.Abs(sp.sin(x)) * sp.exp(y)),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("text, expr", KINKS, ids=[k for k, _ in KINKS])
@pytest.mark.parametrize("point", [{"x": 0.8, "y": 0.3}, {"x": -0.6, "y": 1.2}])
def test_second_derivatives_away_from_kinks(text, expr, point, mode):
    """Away from a kink the local gradient is piecewise constant: its derivative is 0, and the
    rest of the Hessian is SymPy's (DiracDelta terms vanish off the kink)."""
    _, _, hess = _oracle(expr, point)
    got = _hessian(text, mode, ("x", "y"))(**point)[2]
    _close(got, hess)


def test_at_a_kink_the_table_holds():
    """abs'(0) = sign(0) = 0 (the kink table) and sign' = 0: at x = 0, ∂²(abs(x)·y)/∂x∂y = 0
    and ∂²/∂x² = 0."""
    hess = _hessian("abs(x)*y", "instant", ("x", "y"))(x=0.0, y=2.0)[2]
    assert np.array_equal(hess, np.zeros((2, 2)))


# ------------------------------------------------------------------ float32
def test_float32_hvp():
    k = compiler.compile_gradient(CASES[1][0], mode="instant")
    point = {"x": np.float32(0.3), "y": np.float32(0.7)}
    value, grad, hv = k.hvp(**point, v={"x": 1.0, "y": 2.0})
    assert type(value) is np.float32 and hv["x"].dtype == np.float32
    _, _, hess = _oracle(CASES[1][1], {"x": 0.3, "y": 0.7})
    _close([hv["x"], hv["y"]], hess @ [1.0, 2.0], rel=1e-5, abs_=1e-6)


# ------------------------------------------------------------------ errors
def test_a_bad_direction_key_names_it():
    k = compiler.compile_gradient("x*y + exp(x)", mode="instant")
    with pytest.raises(InputError, match="'q'.*\\['x', 'y'\\]"):
        k.hvp(x=1.0, y=2.0, v={"q": 1.0})
    with pytest.raises(InputError, match="'x'"):
        compiler.compile_gradient("x*y", wrt=["y"], mode="instant").hvp(x=1, y=2, v={"x": 1})


def test_a_direction_of_the_wrong_shape_is_refused():
    k = compiler.compile_gradient("x*y", mode="instant")
    with pytest.raises(InputError, match="v\\['x'\\].*shape"):
        k.hvp(x=np.ones(3), y=2.0, v={"x": np.ones(4)})


def test_hessian_wrt_must_name_inputs():
    with pytest.raises(InputError, match="'q'"):
        compiler.compile_hessian("x*y", wrt=["x", "q"])


def test_hessian_wrt_inputs_must_be_single_numbers():
    h = compiler.compile_hessian("x*y", wrt=["x"], mode="instant")
    with pytest.raises(InputError, match="'x'.*single numbers|single numbers.*'x'"):
        h(x=np.ones(3), y=2.0)


def test_a_direction_name_taken_by_an_input_is_refused():
    k = compiler.compile_gradient("x*v_x", mode="instant")
    assert k.grad(x=2.0, v_x=3.0) == {"x": 3.0, "v_x": 2.0}  # first order is untouched
    with pytest.raises(InputError, match="v_x"):
        k.hvp(x=2.0, v_x=3.0, v={"x": 1.0})
    with pytest.raises(InputError, match="v_x"):
        compiler.compile_hessian("x*v_x")


def test_an_entry_name_taken_by_an_input_is_refused():
    with pytest.raises(InputError, match="h_0_1"):
        compiler.compile_hessian("x*y*h_0_1", wrt=["x", "y"])


def test_no_parameters_gives_an_empty_hessian():
    h = compiler.compile_hessian("x*y", wrt=[], mode="instant")
    value, grad, hess = h(x=2.0, y=3.0)
    assert value == 6.0 and grad == {} and hess.shape == (0, 0)


# ------------------------------------------------------------------ every op of the table
def _table_ops() -> list[str]:
    from compiler.ir import registry
    from compiler.ir.tensor_ops import TENSOR_OPS

    return sorted(
        name
        for name, spec in registry.OPS.items()
        if spec.origin == "builtin" and name not in TENSOR_OPS
    )


def _op_point(name: str) -> tuple[list[float], list[int]]:
    """Operands inside the op's domain and off its kinks (``OpDef.domain``, ``OpDef.kinks``),
    and the positions of the operands to differentiate (not an order, not a truth value)."""
    from compiler.ir import registry

    spec = registry.OPS[name]
    kinds = spec.domain or ("",) * spec.arity
    for shift in np.arange(0.0, 2.0, 0.13):
        point = [_inside(kind, k, shift) for k, kind in enumerate(kinds)]
        if _off_kinks(spec, point):
            return point, [k for k, kind in enumerate(kinds) if kind not in ("natural", "truth")]
    raise AssertionError(f"no smooth point found for {name}")


def _inside(kind: str, k: int, shift: float) -> float:
    if kind in ("natural", "truth"):
        return 1.0
    base = (0.37, -0.61, 0.83)[k] + shift
    if not kind:
        return base
    lo, hi = (float(t) for t in kind.strip("()").split(","))
    if np.isfinite(lo) and np.isfinite(hi):
        return lo + (hi - lo) * ((0.37 + 0.29 * k + shift) % 0.8 + 0.1)
    return lo + 0.7 + abs(base) if np.isfinite(lo) else hi - 0.7 - abs(base)


def _off_kinks(spec, point: list[float]) -> bool:
    names = {n: v for n, v in vars(np).items() if not n.startswith("_")}
    names.update(zip("abc", point))
    return all(abs(eval(text, names)) > 0.05 for text in spec.kinks)  # noqa: S307


def _definition_hessian(name: str, point: list[float], wrt: list[int]) -> np.ndarray:
    """∂²/∂p_j∂p_k of the op's SymPy definition (its entry's exact statement), at 30 digits:
    SymPy's derivative where it evaluates, else mpmath's numerical one of the definition."""
    import mpmath

    from compiler.ir import registry

    spec = registry.OPS[name]
    places = sp.symbols("a b c", real=True)[: spec.arity]
    expr = registry.sympy_definition(name)
    expr = expr.xreplace({s: places["abc".index(s.name)] for s in expr.free_symbols})
    f = sp.lambdify(places, expr, modules=["mpmath"])
    out = np.zeros((len(wrt), len(wrt)))
    for i, j in np.ndindex(out.shape):
        d = sp.diff(expr, places[wrt[i]], places[wrt[j]])
        d = sp.sympify(d).replace(sp.DiracDelta, lambda *a: sp.Integer(0))  # 0 off the kinks
        if d.has(sp.Derivative, sp.Subs):
            order = [0] * spec.arity
            order[wrt[i]] += 1
            order[wrt[j]] += 1
            with mpmath.workdps(30):
                out[i, j] = float(mpmath.diff(f, [mpmath.mpf(p) for p in point], tuple(order)))
        else:
            out[i, j] = float(d.subs(dict(zip(places, map(sp.Float, point)))).evalf(30))
    return out


@pytest.mark.parametrize("name", _table_ops())
def test_second_derivatives_of_every_op(name):
    """Each elementwise op of the table, differentiated twice by the adjoint pass (its local
    gradient template differentiated again), against its SymPy definition's Hessian."""
    from compiler.ir import registry

    spec = registry.OPS[name]
    point, wrt = _op_point(name)
    names = ["x", "y", "z"][: spec.arity]
    text = spec.text.format(**dict(zip("abc", names)))
    h = compiler.compile_hessian(
        text, inputs=names, wrt=[names[k] for k in wrt], mode="instant", fuse=False
    )
    got = h(**dict(zip(names, point)))[2]
    _close(got, _definition_hessian(name, point, wrt), rel=1e-8, abs_=1e-10)


# ------------------------------------------------------------------ ties and zeros
def _special_points(name: str) -> list[list[float]]:
    """A binary op's ties (a == b) and zero operands inside its domain, where a local gradient's
    guard (``where(a == b, ...)``, ``where(b == 0, ...)``) holds a constant."""
    from compiler.ir import registry

    spec = registry.OPS[name]
    kinds = spec.domain or ("", "")
    inside = [
        p for p in ([0.37, 0.37], [1.5, 1.5], [-0.6, -0.6], [0.0, 0.8], [0.8, 0.0], [2.0, 0.0],
                    [0.0, 1.7], [-0.7, 0.0], [0.0, -0.4])
        if all(_in_domain(kind, v) for kind, v in zip(kinds, p))
    ]  # fmt: skip
    return [p for p in inside if _off_kinks(spec, p)]


def _in_domain(kind: str, v: float) -> bool:
    if kind in ("natural", "truth"):
        return False
    if not kind:
        return True
    lo, hi = (float(t) for t in kind.strip("()").split(","))
    return lo < v < hi


def _binary_ops() -> list[str]:
    from compiler.ir import registry

    return [n for n in _table_ops() if registry.OPS[n].arity == 2 and _special_points(n)]


@pytest.mark.parametrize("name", _binary_ops())
def test_ties_and_zeros_second_derivatives_match_the_definition_in_either_order(name):
    """At a tie or a zero operand (``x**y`` at y = 0, ``xlogy`` at x = 0, logaddexp at a == b)
    the Hessian is the definition's, whichever input comes first in ``wrt``, and ``hvp`` gives
    its columns: a guard's constant branch has derivative 0, so second order differentiates
    each op's ``smooth_grads`` (hvp once differentiated the guarded ones: 0 at logaddexp's ties)."""
    from compiler.ir import registry

    text = registry.OPS[name].text.format(a="x", b="y")
    forward = compiler.compile_hessian(text, inputs=["x", "y"], wrt=["x", "y"], mode="instant")
    backward = compiler.compile_hessian(text, inputs=["x", "y"], wrt=["y", "x"], mode="instant")
    k = compiler.compile_gradient(text, inputs=["x", "y"], mode="instant", fuse=False)
    for point in _special_points(name):
        at = dict(zip("xy", point))
        want = _definition_hessian(name, point, [0, 1])
        _close(forward(**at)[2], want, rel=1e-8, abs_=1e-10)
        _close(backward(**at)[2][::-1, ::-1], want, rel=1e-8, abs_=1e-10)
        for j, n in enumerate("xy"):
            hv = k.hvp(**at, v={n: 1.0})[2]
            _close([hv["x"], hv["y"]], want[:, j], rel=1e-8, abs_=1e-10)


# ------------------------------------------------------------------ where, twice
WHERES = [
    ("where(x > 0, sqrt(x), 0) * y", sp.Piecewise((sp.sqrt(x), x > 0), (0, True)) * y),
    ("where(x > 0, log(x), 0) + x*y", sp.Piecewise((sp.log(x), x > 0), (0, True)) + x * y),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("text, expr", WHERES, ids=[w for w, _ in WHERES])
@pytest.mark.parametrize("at", [-1.0, 0.0, 0.25])
def test_where_keeps_the_unchosen_branch_out_of_second_derivatives(text, expr, at, mode):
    """The first adjoint's guards (the kink table's ``where`` row) are differentiated like any
    node: the unchosen branch's inf or nan (sqrt'' and log'' at 0) stays out of H too."""
    point = {"x": at, "y": 2.0}
    value, grad, hess = _oracle(expr, point)
    got_value, got_grad, got_hess = _hessian(text, mode, ("x", "y"))(**point)
    assert np.isfinite(got_hess).all()
    _close(got_value, value)
    _close([got_grad["x"], got_grad["y"]], grad)
    _close(got_hess, hess)


def test_sympy_and_callable_sources():
    """Every frontend gives the same Hessian (SymPy's own, here)."""
    from compiler import ops

    point = {"x": 0.3, "y": 0.7}
    want = _oracle(CASES[1][1], point)[2]
    a, b = sp.symbols("x y")
    from_sympy = compiler.compile_hessian(a * b + sp.exp(a) * sp.sin(b), mode="instant")
    traced = compiler.compile_hessian(lambda x, y: x * y + ops.exp(x) * ops.sin(y), mode="instant")
    _close(from_sympy(**point)[2], want)
    _close(traced(**point)[2], want)


# ------------------------------------------------------------------ logaddexp's smooth gradients
def _mixture_text(k: int) -> str:
    """H1's mixture NLL (fusion turns its sums of exps into logaddexp nests)."""
    terms = " + ".join(f"exp(a{i} - s{i} - 0.5*((x - m{i})*exp(-s{i}))**2)" for i in range(k))
    norm = " + ".join(f"exp(a{i})" for i in range(k))
    return f"-log({terms}) + log({norm})"


def _mixture_sympy(k: int):
    a, m, s = (sp.symbols(f"{p}0:{k}", real=True) for p in "ams")
    xs = sp.Symbol("x", real=True)
    terms = sum(sp.exp(a[i] - s[i] - ((xs - m[i]) * sp.exp(-s[i])) ** 2 / 2) for i in range(k))
    return -sp.log(terms) + sp.log(sum(sp.exp(ai) for ai in a)), [*a, *m, *s], xs


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "theta",
    [
        [0.3, -0.2, -1.0, 1.5, -0.4, 0.1],  # generic
        [0.5, 0.5, 0.2, 0.2, -0.3, -0.3],  # ties: logaddexp(a, a), its gradient 1/2 each
        [30.0, -12.0, -1.0, 1.0, 0.0, 0.2],  # far apart: the sigmoids saturate
    ],
    ids=["generic", "ties", "far"],
)
def test_mixture_hessian_matches_sympy(theta, mode):
    """The Hessian program differentiates logaddexp's ``smooth_grads`` (plain sigmoids); its
    entries are SymPy's Hessian of the un-fused sums of exps, summed over samples."""
    expr, params, xs = _mixture_sympy(2)
    samples = [-0.7, 0.4, 1.3]
    point = dict(zip([str(p) for p in params], theta))
    want = sum(
        np.array(
            sp.hessian(expr.subs(xs, sp.Float(xv, 30)), params)
            .subs({p: sp.Float(t, 30) for p, t in zip(params, theta)})
            .evalf(30)
            .tolist(),
            dtype=float,
        )
        for xv in samples
    )
    h = compiler.compile_hessian(_mixture_text(2), wrt=list(point), mode=mode)
    value, grad, got = h(**point, x=np.array(samples))
    _close(got, want, rel=1e-9, abs_=1e-11)
    k = _kernel(_mixture_text(2), mode, tuple(h.kernel.adjoint.inputs[: len(point) + 1]))
    _, first = k.value_and_grad(**point, x=np.array(samples))
    for name in point:  # the gradient a Hessian kernel returns is first order's own, bit for bit
        assert float(grad[name]) == float(np.sum(first[name])), name
    v = dict(zip(point, [1.0, -0.5, 0.25, 2.0, -1.5, 0.75]))
    _, hvp_grad, hv = k.hvp(**point, x=np.array(samples), v=v)  # the ties' H·v: 1/4 per a_k
    _close([hv[n] for n in point], want @ list(v.values()), rel=1e-9, abs_=1e-11)
    for name in point:  # and hvp's gradient too
        assert float(hvp_grad[name]) == float(np.sum(first[name])), name


def test_mixture_hessian_against_finite_differences_of_the_gradient():
    """K = 3 (nine parameters, logaddexp nests of two levels) on 200 samples: each row of H is
    the central difference of the compiled gradient."""
    rng = np.random.default_rng(3)
    names = [f"{p}{i}" for p in "ams" for i in range(3)]
    theta = dict(zip(names, rng.normal(0.0, 0.5, 9).tolist()))
    x = rng.normal(0.0, 1.5, 200)
    h = compiler.compile_hessian(_mixture_text(3), wrt=names, mode="instant")
    k = compiler.compile_gradient(_mixture_text(3), wrt=names, mode="instant")
    _, _, hess = h(**theta, x=x)
    step = 1e-5
    for j, n in enumerate(names):
        plus = k.grad(**{**theta, n: theta[n] + step}, x=x)
        minus = k.grad(**{**theta, n: theta[n] - step}, x=x)
        column = np.array([np.sum(plus[m] - minus[m]) / (2 * step) for m in names])
        np.testing.assert_allclose(hess[:, j], column, rtol=1e-6, atol=1e-6 * np.abs(hess).max())


def test_fold_negations_is_exact_and_removes_negations():
    from compiler.frontend.text import parse

    g = parse("(-x) * y + (-z) - (-(x / (-y))) + (-x) * (-z) - (-y) + (-x) + (-z)")
    folded = g.fold_negations()
    assert sp.simplify(g.to_sympy() - folded.to_sympy()) == 0
    live = folded.reachable(folded.outputs)
    negs = sum(1 for i, n in enumerate(folded.nodes) if live[i] and n.op == "neg")
    assert negs < sum(1 for n in g.nodes if n.op == "neg")
    assert negs <= 1


def test_fold_negations_cancels_power_of_two_scales_exactly():
    """``(0.5·x)·(2·y)`` is ``x·y`` and ``4·(0.25·x)`` is ``x``: a power of two scales without
    rounding, so the folded graph computes the same floats (checked at random points)."""
    from compiler.frontend.text import parse

    g = parse("(0.5*x)*(2*y) + 4*(0.25*z) - (2*x)*(-(0.5*y)) + (3*x)*(2*y)")
    folded = g.fold_negations()
    live = folded.reachable(folded.outputs)
    muls = sum(1 for i, n in enumerate(folded.nodes) if live[i] and n.op == "mul")
    assert muls < sum(1 for n in g.nodes if n.op == "mul")
    from compiler.ir.printing import evaluate  # NumPy, node by node

    rng = np.random.default_rng(0)
    point = {n: rng.normal(size=50) for n in "xyz"}
    want = evaluate(g, point)[g.outputs[0]]
    got = evaluate(folded, point)[folded.outputs[0]]
    np.testing.assert_array_equal(got, want)

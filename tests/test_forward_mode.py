"""Forward mode (issue 16): ``Kernel.jvp`` and ``compile_jacobian``.

Expected numbers come from SymPy's ``diff`` and ``jacobian`` of expressions written here in
SymPy, evaluated at 30 digits, or from central finite differences of the value — never from the
code under test.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import sympy as sp

import compiler
from compiler.errors import InputError
from compiler.passes.forward import jacobian, jvp

S = {name: sp.Symbol(name, real=True) for name in "x y z w0 w1 w2 x0 x1".split()}
x, y, z = S["x"], S["y"], S["z"]
w0, w1, w2, x0, x1 = S["w0"], S["w1"], S["w2"], S["x0"], S["x1"]

#: (text, the same function in SymPy, a point): the SymPy side is the oracle.
CASES = [
    ("1/(1+exp(-(w0*x0+w1*x1+w2)))", 1 / (1 + sp.exp(-(w0 * x0 + w1 * x1 + w2))),
     {"w0": 2.0, "x0": -1.0, "w1": -3.0, "x1": -2.0, "w2": -3.0}),
    ("x*y + exp(x)*sin(y)", x * y + sp.exp(x) * sp.sin(y), {"x": 0.3, "y": 0.7}),
    ("log(1+x*x)*y", sp.log(1 + x * x) * y, {"x": -1.2, "y": 0.8}),
    ("tanh(x*y) + x", sp.tanh(x * y) + x, {"x": 0.4, "y": -1.1}),
    ("sqrt(x*x + y*y + 1)", sp.sqrt(x * x + y * y + 1), {"x": 0.5, "y": -2.0}),
    ("pow(x, y)", x**y, {"x": 1.3, "y": 0.7}),
    ("x**3 * y - y**2 / x", x**3 * y - y**2 / x, {"x": 1.7, "y": -0.4}),
    ("exp(-x*x/2) * cos(y) + z*x", sp.exp(-x * x / 2) * sp.cos(y) + z * x, {"x": 0.2, "y": 1.0, "z": 3.0}),
    ("atan(x*y) + erf(x)", sp.atan(x * y) + sp.erf(x), {"x": 0.6, "y": -0.9}),
    ("abs(x - y) + maximum(x, 0.5*y)", sp.Abs(x - y) + sp.Max(x, y / 2), {"x": 0.3, "y": -0.8}),
]  # fmt: skip
IDS = [text for text, _, _ in CASES]
MODES = ("instant", "compiled", "auto")


def _tangent(point: dict) -> dict:
    return {name: 0.5 - 0.3 * i for i, name in enumerate(point)}


def _oracle(expr, point: dict, tangent: dict) -> tuple[float, float]:
    subs = {S[n]: sp.Float(v, 30) for n, v in point.items()}
    value = float(expr.subs(subs).evalf(30))
    slope = sum(sp.diff(expr, S[n]) * t for n, t in tangent.items())
    return value, float(slope.subs(subs).evalf(30))


@cache
def _kernel(text: str, mode: str, inputs: tuple[str, ...]):
    return compiler.compile_gradient(text, inputs=list(inputs), mode=mode)


# ------------------------------------------------------------------ jvp
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("text, expr, point", CASES, ids=IDS)
def test_jvp_matches_sympy(text, expr, point, mode):
    tangent = _tangent(point)
    value, slope = _oracle(expr, point, tangent)
    got_value, got_slope = _kernel(text, mode, tuple(point)).jvp(**point, tangent=tangent)
    assert got_value == pytest.approx(value, rel=1e-12, abs=1e-14)
    assert got_slope == pytest.approx(slope, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_jvp_every_tier_answered(mode):
    """A small graph (Numba), a trig one (LLVM's O3 code), the instant tier: each gives the
    same slope as the finite difference."""
    for text in ("x*x*y + exp(y)", "sin(x)*cos(y)"):
        k = compiler.compile_gradient(text, mode=mode)
        point, tangent = {"x": 0.7, "y": -0.2}, {"x": 1.0, "y": 0.5}
        _, slope = k.jvp(**point, tangent=tangent)
        k.wait()
        _, again = k.jvp(**point, tangent=tangent)
        h = 1e-6
        up = k(**{n: v + h * tangent[n] for n, v in point.items()})
        down = k(**{n: v - h * tangent[n] for n, v in point.items()})
        assert slope == pytest.approx((up - down) / (2 * h), rel=1e-7)
        assert again == pytest.approx(slope, rel=1e-13)
        assert k.jvp_kernel.tier in {"vm", "numba", "llvm-O3", "llvm-O0"}
        if mode == "instant":
            assert k.jvp_kernel.tier == "vm"
        if mode == "compiled":
            assert k.jvp_kernel.tier == ("numba" if text.startswith("x") else "llvm-O3")


@pytest.mark.parametrize("mode", ("instant", "compiled"))
def test_jvp_with_arrays_of_samples_is_per_sample(mode):
    k = compiler.compile_gradient("w*x*x + exp(w*x)", mode=mode)
    xs = np.linspace(-1.0, 1.0, 7)
    value, slope = k.jvp(w=0.4, x=xs, tangent={"w": 2.0, "x": 0.5 * xs})
    want = 2.0 * (xs * xs + xs * np.exp(0.4 * xs)) + 0.5 * xs * (
        2 * 0.4 * xs + 0.4 * np.exp(0.4 * xs)
    )
    assert value.shape == slope.shape == (7,)
    np.testing.assert_allclose(slope, want, rtol=1e-13)


def test_jvp_agrees_with_the_gradient_dotted_with_the_tangent():
    k = _kernel(*CASES[0][0:1], "instant", tuple(CASES[0][2]))
    point = CASES[0][2]
    tangent = _tangent(point)
    value, grad = k.value_and_grad(**point)
    got_value, slope = k.jvp(**point, tangent=tangent)
    assert got_value == value
    assert slope == pytest.approx(sum(grad[n] * t for n, t in tangent.items()), rel=1e-13)


def test_a_missing_tangent_is_zero_and_wrt_limits_it():
    k = compiler.compile_gradient("x*y*y", wrt=["x"])
    assert k.jvp(x=2.0, y=3.0, tangent={}) == (18.0, 0.0)
    assert k.jvp(x=2.0, y=3.0, tangent={"x": 1.0}) == (18.0, 9.0)
    with pytest.raises(InputError, match="tangent names 'y', which is not a differentiated"):
        k.jvp(x=2.0, y=3.0, tangent={"y": 1.0})


def test_an_unknown_tangent_name_is_refused_by_name():
    k = compiler.compile_gradient("x*y")
    with pytest.raises(InputError, match="tangent names 'q'"):
        k.jvp(x=1.0, y=2.0, tangent={"q": 1.0})
    with pytest.raises(InputError, match="tangent must map"):
        k.jvp(x=1.0, y=2.0, tangent=[1.0, 2.0])
    with pytest.raises(InputError, match=r"tangent\['x'\] of shape \(3,\)"):
        k.jvp(x=1.0, y=2.0, tangent={"x": np.ones(3)})


def test_a_tangent_name_taken_by_an_input_is_refused():
    with pytest.raises(InputError, match="t_x"):
        compiler.compile_gradient("x * t_x").jvp(x=1.0, t_x=2.0, tangent={"x": 1.0})


def test_where_keeps_the_unchosen_branch_out_of_the_tangent():
    """Forward mode routes where's tangent: log(x) at x = 0 is -inf, its tangent 1/x inf, and
    the chosen branch's slope stays finite."""
    k = compiler.compile_gradient("where(x > 0, log(x), x)", mode="instant")
    assert k.jvp(x=0.0, tangent={"x": 1.0}) == (0.0, 1.0)


def test_the_jvp_program_has_no_backward_pass_over_f():
    g = compiler.trace("exp(sin(x)*y)")
    program = jvp(g, ("x", "y"))
    backward = [
        program.nodes[i].op
        for i in program.backward_nodes()
        if program.reachable(program.outputs)[i]
    ]
    assert backward == ["seed", "mul"]  # seed × the slope, the one readout
    assert program.inputs == ("x", "y", "t_x", "t_y", "jvp_out")


# ------------------------------------------------------------------ Jacobians
JAC_OUTPUTS = ["x*y + exp(x)*sin(y)", "x/y", "sin(z)*x", "tanh(x*y*z)"]
JAC_SYMPY = [x * y + sp.exp(x) * sp.sin(y), x / y, sp.sin(z) * x, sp.tanh(x * y * z)]


def _sympy_jacobian(exprs, syms, point):
    subs = {s: sp.Float(v, 30) for s, v in zip(syms, point)}
    values = [float(e.subs(subs).evalf(30)) for e in exprs]
    jac = sp.Matrix(exprs).jacobian(syms).subs(subs).evalf(30)
    return np.array(values), np.array(jac.tolist(), dtype=float)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("by", ["rows", "columns", "auto"])
@pytest.mark.parametrize("outputs", [1, 2, 4])
def test_jacobian_matches_sympy(by, mode, outputs):
    j = compiler.compile_jacobian(JAC_OUTPUTS[:outputs], inputs=["x", "y", "z"], by=by, mode=mode)
    values, jac = j(x=0.3, y=0.7, z=-0.4)
    want_values, want_jac = _sympy_jacobian(JAC_SYMPY[:outputs], [x, y, z], (0.3, 0.7, -0.4))
    np.testing.assert_allclose(values, want_values, rtol=1e-13)
    np.testing.assert_allclose(jac, want_jac, rtol=1e-12, atol=1e-14)
    assert jac.shape == (outputs, 3)
    assert j.by == (by if by != "auto" else ("rows" if outputs < 3 else "columns"))


def test_jacobian_per_sample_and_wrt():
    j = compiler.compile_jacobian(["w*x", "w*w + x"], wrt=["w"])
    xs = np.array([1.0, 2.0, 3.0])
    values, jac = j(w=0.5, x=xs)
    assert values.shape == (3, 2) and jac.shape == (3, 2, 1)
    np.testing.assert_allclose(values, np.stack([0.5 * xs, 0.25 + xs], axis=-1))
    np.testing.assert_allclose(jac[:, :, 0], np.stack([xs, np.full(3, 1.0)], axis=-1))


def test_jacobian_of_sympy_matrix_and_callables():
    j = compiler.compile_jacobian(sp.Matrix([x * y, sp.exp(y)]))
    values, jac = j(x=2.0, y=0.0)
    np.testing.assert_allclose(values, [0.0, 1.0])
    np.testing.assert_allclose(jac, [[0.0, 2.0], [0.0, 1.0]])
    j = compiler.compile_jacobian([lambda a, b: a * b, lambda a, b: a - b], by="columns")
    np.testing.assert_allclose(j(a=3.0, b=4.0)[1], [[4.0, 3.0], [1.0, -1.0]])


def test_rows_are_reverse_sweeps_and_columns_forward_ones():
    """Both programs give the same entries; rows copy one gradient program per output."""
    g = compiler.api._merge([compiler.trace(t, inputs=["x", "y", "z"]) for t in JAC_OUTPUTS])
    rows, columns = jacobian(g, None, "rows"), jacobian(g, None, "columns")
    assert rows.wrt == columns.wrt
    assert rows.wrt[:4] == ("out_0", "out_1", "out_2", "out_3") and rows.wrt[4] == "jac_0_0"


def test_jacobian_errors():
    with pytest.raises(InputError, match="non-empty list"):
        compiler.compile_jacobian("x*y")
    with pytest.raises(InputError, match="does not declare"):
        compiler.compile_jacobian(["x*y", "z"], inputs=["x", "y"])
    with pytest.raises(InputError, match="jac_0_0"):
        compiler.compile_jacobian(["x*jac_0_0", "x"])
    with pytest.raises(ValueError, match="by must be"):
        compiler.compile_jacobian(["x", "x*x"], by="diagonal")

"""The lecture's worked examples 1-3 (shared/LECTURE.md), to 1e-12, through every frontend.

Each example is compiled from text, from a SymPy expression and from a Python callable using
``compiler.ops``; all three must reproduce the lecture's numbers. Expected values are the
lecture's, never symgrad's own output.
"""

from __future__ import annotations

from functools import cache

import pytest
import sympy as sp

import compiler
from compiler import ops

TOL = 1e-12

# --------------------------------------------------------------------------- example 1
# f(x, y, z) = (x + y) * z at x = -2, y = 5, z = -4.
EX1_POINT = {"x": -2.0, "y": 5.0, "z": -4.0}
EX1_VALUE = -12.0
EX1_GRADS = {"x": -4.0, "y": -4.0, "z": 3.0}

# --------------------------------------------------------------------------- example 2
# The neuron 1/(1 + exp(-(w0*x0 + w1*x1 + w2))) at w0 = 2, x0 = -1, w1 = -3, x1 = -2, w2 = -3.
EX2_POINT = {"w0": 2.0, "x0": -1.0, "w1": -3.0, "x1": -2.0, "w2": -3.0}
EX2_VALUE = 0.731058578630
EX2_GRADS = {
    "w0": -0.196611933241,
    "x0": 0.393223866483,
    "w1": -0.393223866483,
    "x1": -0.589835799724,
    "w2": 0.196611933241,
}
EX2_LOCAL_SIGMOID_GRADIENT = 0.196611933241  # sigma * (1 - sigma) at sigma = 0.73

# --------------------------------------------------------------------------- example 3
# The max gate: max(z, w) at z = 2, w = -1 with upstream gradient 2.
EX3_POINT = {"z": 2.0, "w": -1.0}
EX3_SEED = 2.0
EX3_VALUE = 2.0
EX3_GRADS = {"z": 2.0, "w": 0.0}


def _sympy_sources():
    x, y, z = sp.symbols("x y z")
    w0, x0, w1, x1, w2 = sp.symbols("w0 x0 w1 x1 w2")
    w = sp.Symbol("w")
    return {
        1: (x + y) * z,
        2: 1 / (1 + sp.exp(-(w0 * x0 + w1 * x1 + w2))),
        3: sp.Max(z, w),
    }


def _neuron(w0, x0, w1, x1, w2):
    return 1 / (1 + ops.exp(-(w0 * x0 + w1 * x1 + w2)))


def _neuron_gate(w0, x0, w1, x1, w2):
    return ops.sigmoid(w0 * x0 + w1 * x1 + w2)


SOURCES = {
    (1, "text"): "(x + y) * z",
    (1, "callable"): lambda x, y, z: (x + y) * z,
    (2, "text"): "1/(1+exp(-(w0*x0+w1*x1+w2)))",
    (2, "callable"): _neuron,
    (2, "text-sigmoid"): "sigmoid(w0*x0 + w1*x1 + w2)",
    (2, "callable-sigmoid"): _neuron_gate,
    (3, "text"): "maximum(z, w)",
    (3, "callable"): lambda z, w: ops.maximum(z, w),
}
FRONTENDS = ("text", "sympy", "callable")
EXPECTED = {
    1: (EX1_POINT, EX1_VALUE, EX1_GRADS, None),
    2: (EX2_POINT, EX2_VALUE, EX2_GRADS, None),
    3: (EX3_POINT, EX3_VALUE, EX3_GRADS, EX3_SEED),
}


@cache
def kernel(example: int, frontend: str):
    """One compiled kernel per (example, frontend), shared by every test in this module."""
    if frontend == "sympy":
        source = _sympy_sources()[example]
    else:
        source = SOURCES[(example, frontend)]
    return compiler.compile_gradient(source)


def _check(value, grads, expected_value, expected_grads):
    assert isinstance(value, float)
    assert value == pytest.approx(expected_value, abs=TOL, rel=0)
    assert set(grads) == set(expected_grads)
    for name, g in expected_grads.items():
        assert isinstance(grads[name], float), name
        assert grads[name] == pytest.approx(g, abs=TOL, rel=0), name


CASES = [(e, f) for e in (1, 2, 3) for f in FRONTENDS] + [
    (2, "text-sigmoid"),
    (2, "callable-sigmoid"),
]


@pytest.mark.parametrize("example,frontend", CASES)
def test_value_and_grad(example, frontend):
    point, value, grads, seed = EXPECTED[example]
    k = kernel(example, frontend)
    assert set(k.inputs) == set(point)
    v, g = k.value_and_grad(**point, seed=seed)
    _check(v, g, value, grads)


@pytest.mark.parametrize("example,frontend", CASES)
def test_call_and_grad_agree_with_value_and_grad(example, frontend):
    point, value, grads, seed = EXPECTED[example]
    k = kernel(example, frontend)
    assert k(**point) == pytest.approx(value, abs=TOL, rel=0)
    scale = 1.0 if seed is None else seed
    g = k.grad(**point)  # default seed 1
    for name, expected in grads.items():
        assert g[name] == pytest.approx(expected / scale, abs=TOL, rel=0), name


def test_example1_inputs_order_and_positional_arguments():
    k = kernel(1, "text")
    assert k.inputs == ("x", "y", "z")
    assert kernel(1, "callable").inputs == ("x", "y", "z")
    assert k(-2, 5, -4) == EX1_VALUE
    v, g = k.value_and_grad(-2, 5, -4)
    _check(v, g, EX1_VALUE, EX1_GRADS)
    assert list(g) == ["x", "y", "z"]  # gradients in input order


def test_example1_seed_scales_gradients_not_value():
    """The seed is the upstream gradient dL/df: every gradient is multiplied by it."""
    k = kernel(1, "text")
    for seed in (2.0, -0.5, 0.0):
        v, g = k.value_and_grad(**EX1_POINT, seed=seed)
        _check(v, g, EX1_VALUE, {n: seed * d for n, d in EX1_GRADS.items()})
    v, g = k.value_and_grad(**EX1_POINT, seed=None)
    _check(v, g, EX1_VALUE, EX1_GRADS)


def test_example1_lecture_intermediate_q():
    """q = x + y = 3 and df/dq = z = -4: the add gate routes df/dq to x and y unchanged."""
    kq = compiler.compile_gradient("q * z")
    v, g = kq.value_and_grad(q=3.0, z=-4.0)
    _check(v, g, EX1_VALUE, {"q": -4.0, "z": 3.0})


def test_sympy_inputs_follow_declared_order():
    x, y, z = sp.symbols("x y z")
    k = compiler.compile_gradient((x + y) * z, inputs=["x", "y", "z"])
    assert k.inputs == ("x", "y", "z")
    v, g = k.value_and_grad(-2, 5, -4)
    _check(v, g, EX1_VALUE, EX1_GRADS)


def test_example2_inputs_order():
    for frontend in ("text", "callable", "text-sigmoid", "callable-sigmoid"):
        assert kernel(2, frontend).inputs == ("w0", "x0", "w1", "x1", "w2"), frontend


def test_example2_sigmoid_gate_is_one_node_with_local_gradient_from_its_output():
    """With the sigmoid gate the graph has one sigmoid node, and the lecture's local gradient
    sigma * (1 - sigma) = 0.196611933241 at sigma = 0.73 is the gradient reaching w2."""
    k = kernel(2, "text-sigmoid")
    forward = str(k.graph)
    assert forward.count("sigmoid(") == 1
    assert "exp(" not in forward
    kg = compiler.compile_gradient("sigmoid(s)")
    v, g = kg.value_and_grad(s=1.0)  # the gate's input at the lecture's point is 1
    assert v == pytest.approx(EX2_VALUE, abs=TOL, rel=0)
    assert g["s"] == pytest.approx(EX2_LOCAL_SIGMOID_GRADIENT, abs=TOL, rel=0)
    assert v * (1 - v) == pytest.approx(g["s"], abs=TOL, rel=0)


def test_example2_gate_by_gate_numbers():
    """The lecture's forward gates, rounded to two places: sum 4, +w2 = 1, exp(-1) = 0.37,
    1.37, 1/x = 0.73; backward: 1/x -> -0.53, exp -> -0.20, x(-1) -> 0.20."""
    k = kernel(2, "text")
    value, grads = k.value_and_grad(**EX2_POINT)
    assert round(value, 2) == 0.73
    assert round(grads["w2"], 2) == 0.20  # what "the adds" receive
    # d(1/u)/du at u = 1.37, the first backward gate:
    ku = compiler.compile_gradient("1/u")
    _, gu = ku.value_and_grad(u=1.0 + 0.36787944117144233)
    assert round(gu["u"], 2) == -0.53
    # exp gate: -0.53 * exp(-1) = -0.20
    ke = compiler.compile_gradient("exp(t)")
    _, ge = ke.value_and_grad(t=-1.0, seed=gu["u"])
    assert round(ge["t"], 2) == -0.20


def test_example3_max_routes_to_the_larger_input_only():
    for frontend in FRONTENDS:
        k = kernel(3, frontend)
        v, g = k.value_and_grad(**EX3_POINT, seed=EX3_SEED)
        _check(v, g, EX3_VALUE, EX3_GRADS)
        # swapped roles: the gradient follows the larger value
        v, g = k.value_and_grad(z=-1.0, w=2.0, seed=EX3_SEED)
        _check(v, g, 2.0, {"z": 0.0, "w": 2.0})
    assert kernel(3, "text").inputs == ("z", "w")
    assert kernel(3, "callable").inputs == ("z", "w")


def test_wrt_subset():
    k = compiler.compile_gradient("(x + y) * z", wrt=["z", "x"])
    v, g = k.value_and_grad(**EX1_POINT)
    assert v == EX1_VALUE
    assert set(g) == {"x", "z"}
    assert g["x"] == EX1_GRADS["x"] and g["z"] == EX1_GRADS["z"]

"""NumPy float64 semantics: inf and nan instead of exceptions, exact integer powers, the kink table.

Expected values come from NumPy (evaluated here, independently) or from the README's kink table.
Every call runs with warnings turned into errors: a kernel must neither raise nor warn.
"""

from __future__ import annotations

import math
import warnings
from functools import cache

import numpy as np
import pytest

import compiler

INF, NAN = math.inf, math.nan


@cache
def K(source: str, wrt: tuple[str, ...] | None = None):
    return compiler.compile_gradient(source, wrt=wrt)


@pytest.fixture(autouse=True)
def _no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):  # a NumPy operation on the Python side must not trip either
            yield


def same(a, b) -> bool:
    """Equal as float64 values, with nan == nan and the sign of inf respected."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


# ----------------------------------------------------------------------------- values
@pytest.mark.parametrize(
    "source,point,expected",
    [
        ("x / y", {"x": 1.0, "y": 0.0}, INF),
        ("x / y", {"x": -1.0, "y": 0.0}, -INF),
        ("x / y", {"x": 0.0, "y": 0.0}, NAN),
        ("log(x)", {"x": -1.0}, NAN),
        ("log(x)", {"x": 0.0}, -INF),
        ("sqrt(x)", {"x": -1.0}, NAN),
        ("log1p(x)", {"x": -1.0}, -INF),
        ("log1p(x)", {"x": -2.0}, NAN),
        ("exp(x)", {"x": 1000.0}, INF),
        ("expm1(x)", {"x": 1000.0}, INF),
        ("x ** -2", {"x": 0.0}, INF),
        ("x ** -1", {"x": -0.0}, -INF),
        ("x ** y", {"x": 0.0, "y": -1.0}, INF),
        ("x ** 0.5", {"x": -1.0}, NAN),
        ("x ** 0", {"x": NAN}, 1.0),
        ("sin(x)", {"x": INF}, NAN),
        ("x - x", {"x": INF}, NAN),
        ("sigmoid(x)", {"x": -1000.0}, 0.0),
        ("sigmoid(x)", {"x": 1000.0}, 1.0),
    ],
)
def test_values_follow_numpy_without_exceptions(source, point, expected):
    k = K(source)
    value = k(**point)
    assert same(value, expected), (source, point, value)
    v, g = k.value_and_grad(**point)
    assert same(v, expected)
    assert set(g) == set(point)


@pytest.mark.parametrize("source", ["1/0", "0/0", "log(-1)", "-1/0"])
def test_constant_expressions_fold_like_numpy(source):
    with np.errstate(all="ignore"):
        expected = {"1/0": np.float64(1) / 0, "0/0": np.float64(0) / 0, "-1/0": -np.float64(1) / 0}
        expected["log(-1)"] = np.log(-1.0)
    k = K(source)
    assert k.inputs == ()
    assert same(k(), expected[source])


def test_values_match_numpy_elementwise_on_special_points():
    """One kernel, a column of special values: every op agrees with NumPy, nan for nan."""
    src = "log1p(x)+sin(x)+cos(x)+tan(x)+expm1(x)+sqrt(x)+log(x)+exp(x)+tanh(x)+abs(x)+sign(x)"
    x = np.array([-1.0, 0.0, -0.0, 1.0, INF, -INF, NAN, 1e308, -1e308, 800.0, -800.0, 1e-300])
    with np.errstate(all="ignore"):
        ref = (
            np.log1p(x)
            + np.sin(x)
            + np.cos(x)
            + np.tan(x)
            + np.expm1(x)
            + np.sqrt(x)
            + np.log(x)
            + np.exp(x)
            + np.tanh(x)
            + np.abs(x)
            + np.sign(x)
        )
    k = K(src)
    assert same(k(x=x), ref)
    v, _ = k.value_and_grad(x=x)
    assert same(v, ref)


# ----------------------------------------------------------------------------- powers
def test_integer_power_gradient_is_exact_n_x_to_the_n_minus_1():
    k = K("x**3")
    v, g = k.value_and_grad(x=-2.0)
    assert v == -8.0 and g["x"] == 12.0  # exactly: no exp/log detour (which is nan at x < 0)
    xs = np.array([-3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 2.0])
    v, g = k.value_and_grad(x=xs)
    assert np.array_equal(v, xs**3)
    assert np.array_equal(g["x"], 3 * xs**2)


@pytest.mark.parametrize("n", [2, 4, 5])
def test_integer_powers_of_negative_bases(n):
    k = K(f"x**{n}")
    v, g = k.value_and_grad(x=-1.5)
    assert v == pytest.approx((-1.5) ** n, rel=1e-15)
    assert g["x"] == pytest.approx(n * (-1.5) ** (n - 1), rel=1e-15)


def test_negative_integer_power_at_zero_is_inf_not_an_exception():
    k = K("x**-2")
    v, g = k.value_and_grad(x=np.array([0.0, -0.0, 2.0]))
    assert same(v, [INF, INF, 0.25])
    assert same(g["x"], [-INF, INF, -0.25])  # -2 * x**-3


def test_d_dy_of_x_to_the_y_at_zero_base_is_zero():
    k = K("x**y")
    for y in (0.5, 1.0, 2.0, 2.5, 3.0):
        v, g = k.value_and_grad(x=0.0, y=y)
        assert v == 0.0
        assert g["y"] == 0.0, y  # xlogy convention, not 0 * log(0) = nan
        assert g["x"] == (y * 0.0 ** (y - 1) if y != 0.5 else INF), y
    # away from zero: d/dy x**y = x**y * log(x)
    v, g = k.value_and_grad(x=2.0, y=3.0)
    assert v == 8.0
    assert g["x"] == pytest.approx(12.0, rel=1e-15)
    assert g["y"] == pytest.approx(8.0 * math.log(2.0), rel=1e-15)


def test_pow_function_is_the_power_operator():
    k = K("pow(x, 3)")
    v, g = k.value_and_grad(x=-2.0)
    assert v == -8.0 and g["x"] == 12.0


# ----------------------------------------------------------------------------- kinks
def test_relu_derivative_at_zero_is_zero():
    v, g = K("relu(x)").value_and_grad(x=np.array([-1.0, -0.0, 0.0, 1e-300, 2.0]))
    assert same(v, [0.0, 0.0, 0.0, 1e-300, 2.0])
    assert same(g["x"], [0.0, 0.0, 0.0, 1.0, 1.0])


def test_abs_derivative_at_zero_is_zero():
    v, g = K("abs(x)").value_and_grad(x=np.array([-3.0, -0.0, 0.0, 3.0]))
    assert same(v, [3.0, 0.0, 0.0, 3.0])
    assert same(g["x"], [-1.0, 0.0, 0.0, 1.0])
    assert same(K("sign(x)")(x=np.array([-3.0, -0.0, 0.0, 3.0])), [-1.0, 0.0, 0.0, 1.0])


@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_max_min_tie_splits_evenly(op):
    k = K(f"{op}(a, b)")
    v, g = k.value_and_grad(a=np.array([1.0, -2.0, 0.0]), b=np.array([1.0, -2.0, -0.0]))
    assert same(v, [1.0, -2.0, 0.0])
    assert same(g["a"], [0.5, 0.5, 0.5])
    assert same(g["b"], [0.5, 0.5, 0.5])
    assert same(g["a"] + g["b"], [1.0, 1.0, 1.0])
    # away from the tie the whole gradient goes to the selected operand
    v, g = k.value_and_grad(a=3.0, b=1.0, seed=2.0)
    expected = (2.0, 0.0) if op == "maximum" else (0.0, 2.0)
    assert (g["a"], g["b"]) == expected
    assert v == (3.0 if op == "maximum" else 1.0)


def test_tie_through_a_shared_operand():
    """maximum(x, x*1.0)-style ties from one input: the halves add back to the whole."""
    k = K("maximum(x, 2*x - 1)")
    v, g = k.value_and_grad(x=1.0)  # x = 2x - 1 = 1: a tie; 0.5*1 + 0.5*2
    assert v == 1.0
    assert g["x"] == 1.5


def test_sqrt_derivative_at_zero_is_inf():
    v, g = K("sqrt(x)").value_and_grad(x=np.array([0.0, 4.0]))
    assert same(v, [0.0, 2.0])
    assert same(g["x"], [INF, 0.25])


# ----------------------------------------------------------------------------- nan
@pytest.mark.parametrize(
    "op,fn",
    [
        ("maximum", np.maximum),
        ("minimum", np.minimum),
    ],
)
def test_nan_propagates_through_max_min_like_numpy(op, fn):
    a = np.array([NAN, 1.0, NAN, 2.0, INF, -INF])
    b = np.array([1.0, NAN, NAN, 3.0, NAN, 1.0])
    k = K(f"{op}(a, b)")
    assert same(k(a=a, b=b), fn(a, b))
    v, g = k.value_and_grad(a=a, b=b)
    assert same(v, fn(a, b))
    # where the value is nan its gradient is not a number either
    assert np.all(np.isnan(g["a"][:3])) and np.all(np.isnan(g["b"][:3]))


def test_nan_propagates_through_relu_like_numpy():
    x = np.array([NAN, -1.0, 1.0, -INF, INF])
    k = K("relu(x)")
    assert same(k(x=x), np.maximum(0.0, x))
    v, g = k.value_and_grad(x=x)
    assert same(v, np.maximum(0.0, x))
    assert np.isnan(g["x"][0])
    assert same(g["x"][1:], [0.0, 1.0, 0.0, 1.0])


def test_nan_propagates_through_arithmetic_and_functions():
    k = K("exp(x) * y + abs(x)")
    v, g = k.value_and_grad(x=NAN, y=1.0)
    assert math.isnan(v) and math.isnan(g["x"]) and math.isnan(g["y"])


def test_ignore_errors_is_errstate_ignore_and_restores_the_callers_state():
    """The kernels' fast ``np.errstate(all="ignore")``: quiet inside, the caller's state (here
    "raise", from the fixture) back afterwards, also after an exception and when nested."""
    from runtime.quiet import ignore_errors

    before = np.geterr()
    with ignore_errors():
        assert np.geterr() == {k: "ignore" for k in before}
        assert np.divide(1.0, 0.0) == INF and math.isnan(np.subtract(INF, INF))
        with ignore_errors():
            assert np.multiply(1e308, 10.0) == INF
        assert np.geterr() == {k: "ignore" for k in before}
    assert np.geterr() == before
    with pytest.raises(KeyError), ignore_errors():
        raise KeyError("inside")
    assert np.geterr() == before
    with pytest.raises(FloatingPointError):
        np.divide(1.0, 0.0)

"""Errors that teach: a newcomer's usual slips are refused with the fix in the message.

``x^2`` names ``**``; a misspelt function names the closest one and where the list is; ``max`` of
two values names ``maximum``; a ``shapes`` key that names no input is refused, naming both; ``e``
is Euler's number, like ``pi``. Columns are counted by hand; values come from ``math`` and SymPy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp

import compiler
import runtime
import symgrad


def parse_error(source, **kwargs) -> compiler.ParseError:
    with pytest.raises(compiler.ParseError) as info:
        compiler.trace(source, **kwargs)
    return info.value


# ------------------------------------------------------------------ ^ is not a power
@pytest.mark.parametrize("text, column", [("x^2", 1), ("exp(x) ^ 2", 7), ("(x + y)^ 3", 7)])
def test_caret_says_use_double_star(text, column):
    e = parse_error(text)
    assert (e.column, e.token) == (column, "^")
    assert "use ** for powers" in str(e) and f"column {column}" in str(e)


def test_caret_in_a_traced_callable_says_use_double_star():
    assert "use ** for powers" in str(parse_error(lambda x: x ^ 2))


# ------------------------------------------------------------------ misspelt functions
@pytest.mark.parametrize(
    "text, column, token, fix",
    [
        ("exq(x)", 0, "exq", "exp"),
        ("y + sigmiod(x)", 4, "sigmiod", "sigmoid"),
        ("Exp(x)", 0, "Exp", "exp"),
        ("maximun(x, y)", 0, "maximun", "maximum"),
        ("sqr(x)", 0, "sqr", "sqrt"),
    ],
)
def test_unknown_function_suggests_the_closest(text, column, token, fix):
    e = parse_error(text)
    assert (e.column, e.token) == (column, token)
    message = str(e)
    assert f"unknown function '{token}': did you mean {fix}?" in message
    assert "symgrad.ops.__all__" in message and "README" in message  # where the list is
    assert fix in symgrad.ops.__all__  # ... and the list there has it


def test_unknown_function_far_from_any_says_where_the_list_is():
    message = str(parse_error("frobnicate(x)"))
    assert "did you mean" not in message
    assert "symgrad.ops.__all__" in message


# ------------------------------------------------------------------ max of two values
@pytest.mark.parametrize(
    "text, token, fix",
    [
        ("max(x, y)", "max", "maximum(x, y)"),
        ("min(x, y)", "min", "minimum(x, y)"),
        ("max(x, 0)", "max", "maximum(x, y)"),
        ("1 + min(x, y, z)", "min", "minimum(x, minimum(y, z))"),
    ],
)
def test_max_of_scalars_suggests_maximum(text, token, fix):
    e = parse_error(text)
    assert e.token == token and e.column == text.index(token)
    assert fix in str(e)
    assert "shapes" not in str(e)  # not the advice to declare shapes


def test_max_of_one_scalar_still_asks_for_shapes():
    assert "shapes" in str(parse_error("max(x)"))


def test_max_of_two_arrays_suggests_maximum_but_an_axis_is_an_axis():
    shapes = {"x": ("n",), "y": ("n",)}
    assert "maximum(x, y)" in str(parse_error("sum(max(x, y))", shapes=shapes))
    k = compiler.compile_gradient("sum(max(W, 0))", shapes={"W": (2, 3)}, mode="instant")
    w = np.arange(6.0).reshape(2, 3)
    assert k(W=w) == pytest.approx(w.max(axis=0).sum())


def test_the_suggestion_works():
    k = compiler.compile_gradient("maximum(x, y)", mode="instant")
    assert k(x=1.0, y=2.0) == 2.0


# ------------------------------------------------------------------ shapes keys
@pytest.mark.parametrize(
    "source",
    ["sum(x * 2)", lambda x: (x * 2).sum(), sp.Symbol("x") * 2],
    ids=["text", "callable", "sympy"],
)
def test_a_shapes_key_naming_no_input_is_refused(source):
    with pytest.raises(runtime.InputError) as info:
        compiler.compile_gradient(source, shapes={"X": ("n",)}, mode="instant")
    message = str(info.value)
    assert "'X'" in message and "'x'" in message  # the key and the inputs
    assert "did you mean x?" in message


def test_a_shapes_key_far_from_any_input_names_both_without_a_guess():
    with pytest.raises(runtime.InputError) as info:
        compiler.trace("W @ v", shapes={"W": ("n", "m"), "v": ("m",), "bias": ("n",)})
    message = str(info.value)
    assert "'bias'" in message and "'W'" in message and "'v'" in message
    assert "did you mean" not in message


def test_a_declared_input_the_text_does_not_use_keeps_its_shape():
    graph = compiler.trace("sum(x)", inputs=["x", "unused"], shapes={"x": ("n",), "unused": (3,)})
    assert list(graph.inputs) == ["x", "unused"]


# ------------------------------------------------------------------ the constant e
def test_e_is_eulers_number_like_pi():
    k = compiler.compile_gradient("e**x", mode="instant")
    assert k.inputs == ("x",)
    x = sp.Symbol("x")
    assert sp.diff(sp.E**x, x) == sp.E**x  # the oracle: d/dx e**x = e**x
    value, grads = k.value_and_grad(x=1.5)
    assert value == pytest.approx(math.exp(1.5), rel=1e-15)
    assert grads["x"] == pytest.approx(math.exp(1.5), rel=1e-15)
    assert compiler.compile_gradient("e", mode="instant")() == math.e


def test_e_as_an_input_name_from_sympy_or_a_callable_is_still_an_input():
    # As with pi: only text reads the name as the constant; SymPy's own E is the constant there.
    for source in (sp.Symbol("e") * sp.Symbol("x"), lambda e, x: e * x):
        k = compiler.compile_gradient(source, mode="instant")
        assert k.inputs == ("e", "x")
        assert k.value_and_grad(e=3.0, x=2.0) == (6.0, {"e": 2.0, "x": 3.0})
    k = compiler.compile_gradient(sp.E ** sp.Symbol("x"), mode="instant")
    assert k.inputs == ("x",) and k(x=1.0) == pytest.approx(math.e, rel=1e-15)


def test_e_cannot_be_a_gate_name():
    with pytest.raises(compiler.GateError):
        compiler.register_gate("e", "x + 1")


def test_symgrad_help_offers_e_beside_pi():
    from runtime.cli import build_parser

    assert "the constants pi and e" in build_parser().format_help()

"""Every op's stated local gradient is SymPy's derivative of its definition (the registry's proof)."""

import math
import random

import numpy as np
import pytest
import sympy

from compiler.frontend.text import parse
from compiler.ir import registry
from compiler.ir.graph import operand_symbols
from compiler.ir.registry import OPS, sympy_definition
from compiler.passes import adjoint as adjoint_pass

# Kink selectors and sign have derivative 0 almost everywhere (SymPy says DiracDelta); SymPy
# leaves floor's derivative unevaluated (tests/test_where.py checks the integer-valued ops by
# exact difference quotients).
DISTRIBUTIONAL = {"sign", "heaviside", "floor", "ceil", "round", "trunc"}


def operands(op: str):
    """The definition's placeholders a, b, c (c: where's and clip's third operand)."""
    return operand_symbols(sympy_definition(op))


def stated_gradient(op: str, k: int):
    """The stated gradient as SymPy, with the output y replaced by the definition."""
    a, b, c = operands(op)
    expr = parse(OPS[op].grads[k]).to_sympy()
    symbols = {sympy.Symbol("a"): a, sympy.Symbol("b"): b, sympy.Symbol("c"): c}
    return expr.xreplace({**symbols, sympy.Symbol("y"): sympy_definition(op)})


def random_points(op: str, count: int = 20):
    rng = random.Random(op)
    for _ in range(count):
        a, b = rng.uniform(0.1, 3.0), rng.uniform(-3.0, 3.0)
        if OPS[op].arity == 2 and op in ("maximum", "minimum", "sub", "heaviside"):
            b = a + rng.choice((-1, 1)) * rng.uniform(0.1, 2.0)  # away from the tie
        if op == "xlogy":
            b = abs(b) + 0.1
        c = rng.uniform(-3.0, 3.0)
        if op == "clip":  # away from its kinks: a below, inside or above [b, c]
            b, c = -1.0, 1.0
            a = rng.choice((-1, 1)) * rng.uniform(1.1, 3.0) if rng.random() < 0.6 else a - 2
        yield a, b, c


@pytest.mark.parametrize("op", sorted(set(OPS) - DISTRIBUTIONAL))
def test_stated_gradient_is_sympy_derivative(op):
    symbols = operands(op)
    spec = OPS[op]
    assert spec.grads is not None and len(spec.grads) == spec.arity
    for k in range(spec.arity):
        truth = sympy.diff(sympy_definition(op), symbols[k])
        stated = stated_gradient(op, k)
        if sympy.simplify(truth - stated) == 0:
            continue
        # Piecewise forms (Heaviside vs its chosen value at the kink) are compared off the kink.
        for point in random_points(op):
            at = dict(zip(symbols, point))
            t = complex(truth.subs(at).evalf())
            s = complex(stated.subs(at).evalf())
            assert abs(t - s) <= 1e-12 * max(1.0, abs(t)), (op, k, point, t, s)


@pytest.mark.parametrize("op", sorted(OPS))
def test_numpy_implementation_matches_definition(op):
    symbols = operands(op)
    f = sympy_definition(op)
    for point in random_points(op, 5):
        if op == "heaviside":
            continue  # SymPy's Heaviside(a, b) with a != 0 is 0/1, checked in test_semantics
        expected = float(f.subs(dict(zip(symbols, point))).evalf())
        args = point[: OPS[op].arity]
        assert math.isclose(float(OPS[op].numpy(*args)), expected, rel_tol=1e-13, abs_tol=1e-300)


def test_an_op_without_stated_gradient_gets_sympys(monkeypatch):
    spec = OPS["sin"]
    unstated = registry.OpDef("sin", 1, "sin(a)", spec.text, spec.code, np.sin, "sin", None)
    monkeypatch.setitem(OPS, "sin", unstated)
    adjoint_pass.local_gradient_template.cache_clear()
    try:
        template = adjoint_pass.local_gradient_template("sin", 0)
        assert str(template.to_sympy()) == "cos(a)"
    finally:
        adjoint_pass.local_gradient_template.cache_clear()

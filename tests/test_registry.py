"""Every op's stated local gradient is SymPy's derivative of its definition (the registry's proof)."""

import math
import random

import numpy as np
import pytest
import sympy

from compiler.frontend.text import parse
from compiler.ir import registry
from compiler.ir.registry import OPS, placeholders, sympy_definition
from compiler.passes import adjoint as adjoint_pass

# Kink selectors and sign have derivative 0 almost everywhere (SymPy says DiracDelta).
DISTRIBUTIONAL = {"sign", "heaviside"}
# Operands that are integers (polygamma's order): gradient 0, as integer-valued ops (kink table).
INTEGER_ARGUMENTS = {("polygamma", 0)}


def stated_gradient(op: str, k: int):
    """The stated gradient as SymPy, with the output y replaced by the definition."""
    a, b, y = placeholders()
    expr = parse(OPS[op].grads[k]).to_sympy()
    symbols = {sympy.Symbol("a"): a, sympy.Symbol("b"): b, sympy.Symbol("y"): sympy_definition(op)}
    return expr.xreplace(symbols)


def random_points(op: str, count: int = 20):
    rng = random.Random(op)
    for _ in range(count):
        a, b = rng.uniform(0.1, 3.0), rng.uniform(-3.0, 3.0)
        if OPS[op].arity == 2 and op in ("maximum", "minimum", "sub", "heaviside"):
            b = a + rng.choice((-1, 1)) * rng.uniform(0.1, 2.0)  # away from the tie
        if op == "xlogy":
            b = abs(b) + 0.1
        a, b = _in_domain(op, rng, a, b)
        yield a, b


def _in_domain(op: str, rng: random.Random, a: float, b: float) -> tuple[float, float]:
    """Points where the new numeric ops (compiler/ir/ops/{special,hyperbolic,...}) are real."""
    if op in ("asin", "acos", "atanh"):
        a = rng.uniform(-0.95, 0.95)
    elif op == "acosh":
        a += 1.0
    elif op == "log1mexp":
        a = -a
    elif op == "xlog1py":
        b = abs(b)
    elif op == "polygamma":  # the order is a natural number
        a, b = float(rng.randint(0, 4)), abs(b) + 0.1
    return a, b


@pytest.mark.parametrize("op", sorted(set(OPS) - DISTRIBUTIONAL))
def test_stated_gradient_is_sympy_derivative(op):
    a, b, _ = placeholders()
    spec = OPS[op]
    assert spec.grads is not None and len(spec.grads) == spec.arity
    for k in range(spec.arity):
        if (op, k) in INTEGER_ARGUMENTS:
            assert spec.grads[k] == "0"
            continue
        truth = sympy.diff(sympy_definition(op), (a, b)[k])
        stated = stated_gradient(op, k)
        if sympy.simplify(truth - stated) == 0:
            continue
        # Piecewise forms (Heaviside vs its chosen value at the kink) are compared off the kink.
        for pa, pb in random_points(op):
            t = complex(truth.subs({a: pa, b: pb}).evalf())
            s = complex(stated.subs({a: pa, b: pb}).evalf())
            assert abs(t - s) <= 1e-12 * max(1.0, abs(t)), (op, k, pa, pb, t, s)


@pytest.mark.parametrize("op", sorted(OPS))
def test_numpy_implementation_matches_definition(op):
    a, b, _ = placeholders()
    f = sympy_definition(op)
    for pa, pb in random_points(op, 5):
        if op == "heaviside":
            continue  # SymPy's Heaviside(a, b) with a != 0 is 0/1, checked in test_semantics
        expected = float(f.subs({a: pa, b: pb}).evalf())
        args = (pa, pb)[: OPS[op].arity]
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

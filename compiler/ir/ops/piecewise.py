"""Piecewise ops: ``fcmp`` + ``select``, with NumPy's nan propagation and ties and the kink
table's choices (``compiler.ir.registry``), so loops over them vectorise."""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from compiler.ir.lowering import Lower
from compiler.ir.opdef import OpDef, entry


def lower_abs(L: Lower, x: ir.Value) -> ir.Value:
    return L.intrinsic("fabs", x)


def lower_sign(L: Lower, x: ir.Value) -> ir.Value:
    """x > 0 ? 1 : x < 0 ? -1 : x * 0 (±0 for ±0, nan for nan)."""
    zero = L.const(0.0)
    n = L.select(L.cmp("<", x, zero), L.const(-1.0), L.b.fmul(x, zero))
    return L.select(L.cmp(">", x, zero), L.const(1.0), n)


def lower_heaviside(L: Lower, x: ir.Value, h: ir.Value) -> ir.Value:
    """x > 0 ? 1 : x < 0 ? 0 : x == 0 ? h : x (nan)."""
    zero = L.const(0.0)
    at = L.select(L.cmp("==", x, zero), h, x)
    below = L.select(L.cmp("<", x, zero), zero, at)
    return L.select(L.cmp(">", x, zero), L.const(1.0), below)


def _extremum(name: str, order: str):
    def lower(L: Lower, a: ir.Value, b: ir.Value) -> ir.Value:
        """a + b (nan) if either is nan, else the first operand on a tie (np.maximum/minimum)."""
        picked = L.select(L.cmp(order, a, b), a, b)
        return L.select(L.cmp("uno", a, b), L.b.fadd(a, b), picked)

    lower.__name__ = lower.__qualname__ = f"lower_{name}"
    return lower


lower_maximum, lower_minimum = _extremum("maximum", ">="), _extremum("minimum", "<=")


def _call2(name: str, definition: str, numpy, symbol: str, grads, lower, commutative=False,
           **where):  # fmt: skip
    return entry(name, definition, arity=2, symbol=symbol, grads=grads, numpy=numpy, lower=lower,
                 commutative=commutative, **where)  # fmt: skip


# fmt: off
OPS: list[OpDef] = [
    entry("abs", "Abs(a)", grads=("sign(a)",), numpy=np.abs, lower=lower_abs, kinks=("a",)),
    entry("sign", "sign(a)", grads=("0",), numpy=np.sign, lower=lower_sign, kinks=("a",)),
    _call2("maximum", "Max(a, b)", np.maximum, "max",
           ("heaviside(a - b, 0.5)", "heaviside(b - a, 0.5)"), lower_maximum, commutative=True,
           kinks=("a - b",)),
    _call2("minimum", "Min(a, b)", np.minimum, "min",
           ("heaviside(b - a, 0.5)", "heaviside(a - b, 0.5)"), lower_minimum, commutative=True,
           kinks=("a - b",)),
    # heaviside(x, h): 0 below zero, h at zero, 1 above (np.heaviside); selects at kinks.
    _call2("heaviside", "Heaviside(a, b)", np.heaviside, "H", ("0", "0"), lower_heaviside,
           kinks=("a",)),
]
# fmt: on

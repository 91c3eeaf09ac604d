"""Arithmetic: the infix ops and negation, each one IEEE instruction (``pow``: the C library's,
through LLVM's intrinsic, as Numba's ``**`` on floats)."""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from compiler.ir.lowering import Lower
from compiler.ir.opdef import OpDef, entry


def _infix(name: str, sign: str, numpy, grads, lower, commutative: bool = False,
           **where) -> OpDef:  # fmt: skip
    text = f"{{a}} {sign} {{b}}"
    return entry(name, f"a {sign} b", arity=2, text=text, symbol=sign, grads=grads, numpy=numpy,
                 lower=lower, commutative=commutative, **where)  # fmt: skip


def lower_add(L: Lower, a: ir.Value, b: ir.Value) -> ir.Value:
    return L.b.fadd(a, b)


def lower_sub(L: Lower, a: ir.Value, b: ir.Value) -> ir.Value:
    return L.b.fsub(a, b)


def lower_mul(L: Lower, a: ir.Value, b: ir.Value) -> ir.Value:
    return L.b.fmul(a, b)


def lower_div(L: Lower, a: ir.Value, b: ir.Value) -> ir.Value:
    return L.b.fdiv(a, b)


def lower_pow(L: Lower, a: ir.Value, b: ir.Value) -> ir.Value:
    return L.intrinsic("pow", a, b)


def lower_neg(L: Lower, a: ir.Value) -> ir.Value:
    """``fneg`` flips the sign bit only: -0.0 for 0.0, nan stays nan."""
    return L.b.fneg(a)


# pow's d/da: b a**(b - 1) where b - 1 is exact (b >= 1/2 below 2**53, the integers), as libm's
# pow is then within an ulp; where b - 1 rounds (b < 1/2, |b| huge) the rounding is amplified by
# log a (1e6 ulp measured at a = 2**-149, b = 7 + 2**-50...), so y (b / a) there, and where
# b a**(b - 1) overflows though the gradient does not (|b| < 1). A constant b folds the choice
# (x**2's d/dx is 2 * x).
_P1, _P2 = "b * a ** (b - 1)", "y * (b / a)"
_OVER = f"where((abs({_P1}) == 1e999) & (abs({_P2}) < 1e999), {_P2}, {_P1})"
_POW_DA = f"where(b == 0, 0, where((b - 1) + 1 != b, {_P2}, where(abs(b) < 1, {_OVER}, {_P1})))"

# fmt: off
OPS: list[OpDef] = [
    # The lecture's gate patterns: add distributes the upstream gradient, mul swaps its inputs.
    _infix("add", "+", np.add, ("1", "1"), lower_add, commutative=True),
    _infix("sub", "-", np.subtract, ("1", "-1"), lower_sub),
    _infix("mul", "*", np.multiply, ("b", "a"), lower_mul, commutative=True),
    _infix("div", "/", np.divide, ("1 / b", "-y / b"), lower_div, kinks=("b",)),
    # d/da is 0 where b == 0 (a**0 is constant: PyTorch's rule; not 0 * 0**-1 = nan at a = 0);
    # d/db is 0 where a == 0 (the xlogy convention: not 1 * log(0) = -inf at b = 0), and where
    # y == 0 (xlogy: a = inf, b < 0).
    # To differentiate again: d/da as b * a**(b - 1), 0 at (0, 0) — equal values, but its
    # derivative in b at b = 0 is 1/a (the guard's constant branch gave 0: H depended on wrt's
    # order). Second derivatives at a = 0 are the kink's (stated in the kink table).
    _infix("pow", "**", np.power,
           (_POW_DA, "where(a == 0, 0, xlogy(y, a))"), lower_pow,
           domain=("(0, inf)", ""),
           smooth_grads=("b * where((a == 0) & (b == 0), 0, a ** (b - 1))",
                         "where(a == 0, 0, xlogy(y, a))")),
    entry("neg", "-a", text="-{a}", symbol="-x", grads=("-1",), numpy=np.negative,
          lower=lower_neg),
]
# fmt: on

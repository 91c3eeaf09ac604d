"""Inverse trigonometric functions and hypot, lowered to the C library.

Domains and kinks (NumPy's values; rows for the kink table):

- ``asin``, ``acos``: nan outside [-1, 1]; gradients ``±1/sqrt((1-a)(1+a))`` are inf at ±1.
- ``atan2(a, b)`` is NumPy's ``arctan2(y=a, x=b)``: its gradients ``b/h**2``, ``-a/h**2`` with
  ``h = hypot(a, b)`` (written with the ratio of the smaller to the larger, ``_atan2_grad``, so
  they neither overflow nor underflow) are nan at the origin, where atan2 is discontinuous.
- ``hypot``: the gradient at the origin is 0 (like ``abs'(0) = 0``): ``a / (y + heaviside(-y, 1))``
  divides by 1 exactly where ``y == 0``.
"""

from __future__ import annotations

import numpy as np

from compiler.ir import vecmath
from compiler.ir.opdef import OpDef, entry


def _libm(name: str):
    return lambda L, *args: L.libm(name, *args)


def _atan2_grad(b: str, a: str, sign: str) -> str:
    """b / (a**2 + b**2) (d/da atan2(a, b); d/db with a, b swapped and negated) without a
    square: 1 / (b + a (a/b)) where |a| <= |b|, (b/a) / (a + b (b/a)) elsewhere; the ratio is
    at most 1, so nothing overflows and the added term is at most half the sum: 1.5 ulp at most
    (b / hypot / hypot: 2.3 measured)."""
    near = f"1 / ({b} + {a} * ({a} / {b}))"
    far = f"({b} / {a}) / ({a} + {b} * ({b} / {a}))"
    return f"{sign}where(abs({a}) <= abs({b}), {near}, {far})"


def _hypot_grad(a: str, b: str) -> str:
    """d/da hypot(a, b) = a / y; where y is tiny (subnormal at either width: its rounding is
    absolute, 3.6 ulp and 4.9e6 at float32 measured) or overflows (a, b near the largest float),
    sign(a) / hypot(1, b / a) (b / a's rounding is damped by (b/a)**2 / (1 + (b/a)**2));
    0 at the origin (the kink table)."""
    alt = f"sign({a}) / hypot(1, {b} / {a})"
    return f"where(y == 0, 0, where((y < 1e-30) | (y == 1e999), {alt}, {a} / y))"


# fmt: off
OPS: list[OpDef] = [
    # Beyond |a| = 1, 1/a/(a + 1/a): no a*a to overflow (1/(1 + a*a) is 0 where the exact
    # value is still a subnormal number, from |a| = 1.3e154 on).
    entry("atan", "atan(a)", grads=("where(abs(a) > 1, 1 / a / (a + 1 / a), 1 / (1 + a * a))",),
          numpy=np.arctan, lower=vecmath.vectorised("atan")),
    entry("atan2", "atan2(a, b)", arity=2,
          grads=(_atan2_grad("b", "a", ""), _atan2_grad("a", "b", "-")),
          numpy=np.arctan2, lower=_libm("atan2"),
          kinks=("where(b > 0, 1, a)",)),  # the jump on the negative b axis, the origin
    entry("asin", "asin(a)", grads=("1 / sqrt((1 - a) * (1 + a))",), numpy=np.arcsin,
          lower=_libm("asin"), domain=("(-1, 1)",)),
    entry("acos", "acos(a)", grads=("-1 / sqrt((1 - a) * (1 + a))",), numpy=np.arccos,
          lower=_libm("acos"), domain=("(-1, 1)",)),
    entry("hypot", "sqrt(a**2 + b**2)", arity=2, commutative=True,
          grads=(_hypot_grad("a", "b"), _hypot_grad("b", "a")),
          numpy=np.hypot, lower=_libm("hypot"), kinks=("hypot(a, b)",),
          # a stabilisation: x * x overflows from |x| = 1.4e154
          patterns=("sqrt(x * x + y * y) -> hypot(x, y)", "sqrt(x ** 2 + y ** 2) -> hypot(x, y)",
                    "sqrt(x ** 2 + y * y) -> hypot(x, y)")),
]
# fmt: on

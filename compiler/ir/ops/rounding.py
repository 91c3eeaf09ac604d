"""Integer-valued ops and clipping: ``floor ceil round trunc clip``, as NumPy computes them.

``round`` is NumPy's round-half-even (``np.round``, ``np.rint``: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2),
not Python's ``round`` of a float nor SymPy's half-away-from-zero. The integer-valued ops have
gradient 0 everywhere (the kink table: 0 at their jumps too, where no derivative exists).
``clip(x, lo, hi)`` is ``minimum(maximum(x, lo), hi)`` (``np.clip``, nan from any operand); its
gradient goes to ``x`` on ``lo <= x <= hi`` (ends included, as PyTorch's ``clamp``), to ``lo``
below, to ``hi`` above and wherever ``lo > hi`` (the result is then ``hi``).
"""

from __future__ import annotations

import numpy as np

from compiler.ir.lowering import Lower
from compiler.ir.opdef import OpDef, entry


def _intrinsic(name: str):
    """A lowering by one LLVM intrinsic (``llvm.floor.f64``, ...): cheap and vectorising."""

    def lower(L: Lower, a):
        return L.intrinsic(name, a)

    lower.__name__ = f"lower_{name}"
    return lower


def _nan_or(L: Lower, a, b, picked):
    """``picked``, or nan if ``a`` or ``b`` is nan (``a + b`` is then that nan)."""
    return L.select(L.cmp("uno", a, b), L.b.fadd(a, b), picked)


def lower_clip(L: Lower, x, lo, hi):
    # NumPy's clip keeps the bound at a tie (clip(-0.0, 0.0, 1) is 0.0): strict comparisons.
    above = _nan_or(L, x, lo, L.select(L.cmp(">", x, lo), x, lo))
    return _nan_or(L, above, hi, L.select(L.cmp("<", above, hi), above, hi))


def _clip(x, lo, hi):
    with np.errstate(invalid="ignore"):
        return np.clip(x, lo, hi)


# Round half to even, exactly: at a tie (a - floor(a) = 1/2) the even one of floor(a) and
# floor(a) + 1 is 2 * floor(a / 2 + 1/4).
_ROUND = "Piecewise((2 * floor(a / 2 + 1/4), Eq(a - floor(a), 1/2)), (floor(a + 1/2), True))"

# fmt: off
OPS: list[OpDef] = [
    entry("floor", "floor(a)", grads=("0",), numpy=np.floor, lower=_intrinsic("floor"),
          kinks=("sin(pi * a)",)),
    entry("ceil", "ceiling(a)", grads=("0",), numpy=np.ceil, lower=_intrinsic("ceil"),
          kinks=("sin(pi * a)",)),
    entry("trunc", "Piecewise((ceiling(a), a < 0), (floor(a), True))", grads=("0",),
          numpy=np.trunc, lower=_intrinsic("trunc"), kinks=("sin(pi * a)",)),
    # rint rounds half to even in the default rounding mode, which LLVM assumes.
    entry("round", _ROUND, grads=("0",), numpy=np.rint, lower=_intrinsic("rint"),
          kinks=("cos(pi * a)",)),
    entry("clip", "Min(Max(a, b), c)", arity=3,
          grads=("where((a >= b) & (a <= c), 1, 0)", "where((a < b) & (b <= c), 1, 0)",
                 "where(c < maximum(a, b), 1, 0)"),
          numpy=_clip, lower=lower_clip, text="clip({a}, {b}, {c})",
          kinks=("a - b", "a - c", "b - c")),
]
# fmt: on

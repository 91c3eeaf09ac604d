"""Hyperbolic functions and their inverses, lowered to the C library (``sinh``, ``sinhf``, ...).

Domains (NumPy's values): ``acosh`` is nan below 1 and its gradient ``1/sqrt((a-1)(a+1))`` is
inf at 1; ``atanh`` is nan outside [-1, 1], ±inf at ±1, gradient ``1/((1-a)(1+a))``. sinh and
cosh overflow to ±inf past |a| ≈ 710.5 (float32: 89.4). The forms keep the gradients finite
where the exact value is: ``asinh' = 1/hypot(1, a)`` does not overflow for huge ``a``.
"""

from __future__ import annotations

import numpy as np

from compiler.ir.opdef import OpDef, entry


def _libm(name: str):
    return lambda L, a: L.libm(name, a)


# acosh' = 1/sqrt((a - 1)(a + 1)): one square root (a - 1 is exact from 1 to 2**53): 1.5 ulp at
# most, 2.5 measured for 1/(sqrt(a - 1) sqrt(a + 1)); from a = 1e18 on it is 1/a to 1e-36 (and the
# product would overflow float32 from 1.8e19).
# fmt: off
OPS: list[OpDef] = [
    entry("sinh", "sinh(a)", grads=("cosh(a)",), numpy=np.sinh, lower=_libm("sinh")),
    entry("cosh", "cosh(a)", grads=("sinh(a)",), numpy=np.cosh, lower=_libm("cosh")),
    entry("asinh", "asinh(a)", grads=("1 / hypot(1, a)",), numpy=np.arcsinh, lower=_libm("asinh")),
    entry("acosh", "acosh(a)", grads=("where(a < 1e18, 1 / sqrt((a - 1) * (a + 1)), 1 / a)",), numpy=np.arccosh,
          lower=_libm("acosh"), domain=("(1, inf)",)),
    entry("atanh", "atanh(a)", grads=("1 / ((1 - a) * (1 + a))",), numpy=np.arctanh,
          lower=_libm("atanh"), domain=("(-1, 1)",)),
]
# fmt: on

"""Scalar helpers that generated kernels call, with NumPy's semantics for nan, inf and ties.

Numba inlines them into the kernels; each follows the NumPy function of the same name.
"""

import math

from numba import njit

_FLAGS = dict(cache=True, error_model="numpy", inline="always")


@njit(**_FLAGS)
def sign(x):
    """np.sign: -1, 0 or 1; nan stays nan (so abs'(0) = 0)."""
    if x > 0:
        return 1.0
    if x < 0:
        return -1.0
    return x * 0.0  # 0.0 for ±0, nan for nan


@njit(**_FLAGS)
def heaviside(x, h):
    """np.heaviside: 0 below zero, ``h`` at zero, 1 above; nan for nan."""
    if x > 0:
        return 1.0
    if x < 0:
        return 0.0
    if x == 0:
        return h
    return x


@njit(**_FLAGS)
def maximum(a, b):
    """np.maximum: nan if either is nan."""
    if a != a or b != b:
        return a + b
    return a if a >= b else b


@njit(**_FLAGS)
def minimum(a, b):
    """np.minimum: nan if either is nan."""
    if a != a or b != b:
        return a + b
    return a if a <= b else b


@njit(**_FLAGS)
def relu(x):
    """np.maximum(0, x)."""
    return x if x > 0 or x != x else 0.0


# The gates' stable forward forms (the registry's ``stable`` texts): exp only ever sees -|x| <= 0,
# so nothing overflows at any x. Written without branches around exp and the division, so where a
# kernel also calls sigmoid(-x) (sigmoid's local gradient) LLVM computes both once for the two.
@njit(**_FLAGS)
def sigmoid(x):
    """1 / (1 + exp(-x)) as exp(min(x, 0)) / (1 + exp(-|x|)): 0 or 1 at x = -/+1000, no overflow."""
    e = math.exp(-abs(x))
    r = 1.0 / (1.0 + e)
    return r if x >= 0 else e * r


@njit(**_FLAGS)
def softplus(x):
    """log(1 + exp(x)) as max(x, 0) + log1p(exp(-|x|)): softplus(1000) = 1000, no overflow."""
    return (x if x > 0 else 0.0) + math.log1p(math.exp(-abs(x)))


@njit(**_FLAGS)
def logsigmoid(x):
    """log(sigmoid(x)) as min(x, 0) - log1p(exp(-|x|)): logsigmoid(-1000) = -1000."""
    return (x if x < 0 else 0.0) - math.log1p(math.exp(-abs(x)))


@njit(**_FLAGS)
def xlogy(x, y):
    """x * log(y), with 0 where x == 0 (unless y is nan), as scipy.special.xlogy."""
    if x == 0 and y == y:
        return 0.0
    return x * math.log(y)

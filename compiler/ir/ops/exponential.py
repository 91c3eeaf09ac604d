"""exp and log and their relatives.

``exp`` is written branch-free (fma, bit casts and selects: what ``runtime/scalar.py`` computed
for Numba and ``llvm_ir.VECTOR_OPS`` for the LLVM tier), so that loops using it vectorise: x =
k ln2 + r (Cody-Waite, r carried as r + t), e^r by its Taylor polynomial, times 2^k built in the
exponent field as 2^(k/2) 2^(k - k/2) so that overflow gives inf and subnormal results round
once. Within 0.75 ulp of the exact value at float64, an ulp at float32; exp(±0) = 1,
exp(inf) = inf, exp(-inf) = 0, nan stays nan. In scalar code (``L.vector`` false: the instant
tier's machine) the C library's exp is faster, and used. log, sqrt: LLVM's intrinsics; log1p,
expm1: the C library's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from compiler.ir import vecmath
from compiler.ir.lowering import Lower
from compiler.ir.opdef import OpDef, entry


@dataclass(frozen=True)
class Width:
    """What the bit-level algorithms need to know of a float type."""

    mantissa: int  # explicit mantissa bits: 52, 23
    bias: int  # exponent bias: 1023, 127

    @property
    def shift(self) -> float:
        """x + 1.5 * 2**mantissa rounds x to an integer k (ties to even) kept in the low bits:
        k without a float-to-int conversion (AVX2 has none for int64)."""
        return 1.5 * 2.0**self.mantissa


WIDTHS = {64: Width(52, 1023), 32: Width(23, 127)}


@dataclass(frozen=True)
class _ExpConstants:
    high: float  # beyond it exp overflows (k/2 still fits the exponent field): inf
    low: float  # below it exp rounds to 0
    inv_ln2: float
    ln2_hi: float  # ln 2 = ln2_hi + ln2_lo, to twice the precision
    ln2_lo: float
    taylor: tuple[float, ...]  # 1/n!, n = N .. 2: e^r - 1 - r - r^2 Q(r) below 0.05 ulp


def _taylor(n: int) -> tuple[float, ...]:
    return tuple(1 / math.factorial(k) for k in range(n, 1, -1))


_EXP = {
    64: _ExpConstants(709.8, -745.2, 1.4426950408889634, 0.6931471805599453,
                      2.3190468138462996e-17, _taylor(13)),
    32: _ExpConstants(88.8, -104.0, 1.4426950216293335, 0.6931471824645996,
                      -1.9046542121259336e-09, _taylor(8)),
}  # fmt: skip


def branch_free_exp(L: Lower, x: ir.Value) -> ir.Value:
    """e^x with fma, bit casts and selects only (see the module docstring)."""
    b, c, k_ = L.b, L.const, _EXP[L.bits]
    width = WIDTHS[L.bits]
    x = L.select(L.cmp(">", x, c(k_.high)), c(k_.high), x)  # the clamps keep nan
    x = L.select(L.cmp("<", x, c(k_.low)), c(k_.low), x)
    shift = c(width.shift)
    kd = L.fma(x, c(k_.inv_ln2), shift)
    k = b.fsub(kd, shift)
    nk = b.fneg(k)
    rh = L.fma(nk, c(k_.ln2_hi), x)  # exact
    lo = b.fmul(nk, c(k_.ln2_lo))
    r = b.fadd(rh, lo)  # r + t = rh + lo
    t = b.fadd(b.fsub(rh, r), lo)
    q = L.fma(r, c(k_.taylor[0]), c(k_.taylor[1]))
    for coefficient in k_.taylor[2:]:
        q = L.fma(q, r, c(coefficient))
    one = c(1.0)
    h1 = b.fadd(one, r)  # e^r = h1 + l + r^2 q + t, summed last so that it rounds once
    low = b.fadd(b.fadd(b.fsub(one, h1), r), t)
    y = b.fadd(h1, L.fma(b.fmul(r, r), q, low))
    # 2^k as 2^(k/2) 2^(k - k/2): k/2 in the low bits of h; << mantissa drops the shift's bits
    h = L.to_bits(b.fadd(b.fmul(k, c(0.5)), shift))
    bias, mantissa = L.int_const(width.bias), L.int_const(width.mantissa)
    s1 = L.from_bits(b.shl(b.add(h, bias), mantissa))
    s2 = L.from_bits(b.shl(b.add(b.sub(L.to_bits(kd), h), bias), mantissa))
    return b.fmul(b.fmul(y, s1), s2)


def lower_exp(L: Lower, x: ir.Value) -> ir.Value:
    """Branch-free where loops vectorise, the C library's (faster one at a time) elsewhere."""
    return branch_free_exp(L, x) if L.vector else L.intrinsic("exp", x)


def lower_log(L: Lower, x: ir.Value) -> ir.Value:
    """Branch-free where loops vectorise (compiler/ir/vecmath.py), the C library's elsewhere."""
    return vecmath.vector_log(L, x) if L.vector else L.intrinsic("log", x)


def lower_log1p(L: Lower, x: ir.Value) -> ir.Value:
    return vecmath.vector_log1p(L, x) if L.vector else L.libm("log1p", x)


def lower_expm1(L: Lower, x: ir.Value) -> ir.Value:
    return vecmath.vector_expm1(L, x) if L.vector else L.libm("expm1", x)


def lower_sqrt(L: Lower, x: ir.Value) -> ir.Value:
    return L.intrinsic("sqrt", x)


def lower_xlogy(L: Lower, x: ir.Value, y: ir.Value) -> ir.Value:
    """x * log(y), 0 where x == 0 unless y is nan (scipy.special.xlogy)."""
    zero = L.const(0.0)
    product = L.b.fmul(x, lower_log(L, y))
    zero_x = L.b.and_(L.cmp("==", x, zero), L.cmp("ord", y, zero))
    return L.select(zero_x, zero, product)


def _xlogy(x, y):
    with np.errstate(all="ignore"):
        return np.where((x == 0) & ~np.isnan(y), 0.0, x * np.log(y))


def _unary(name: str, definition: str, numpy, grads, lower, **where) -> OpDef:
    return entry(name, definition, grads=grads, numpy=numpy, lower=lower, **where)


# fmt: off
OPS: list[OpDef] = [
    # exp: a branch-free exp, which LLVM vectorises (the C library's exp keeps a loop scalar).
    _unary("exp", "exp(a)", np.exp, ("y",), lower_exp),
    _unary("log", "log(a)", np.log, ("1 / a",), lower_log, domain=("(0, inf)",)),
    # Stabilisations (compiler/passes/fusion/patterns.py): log(1 + x) loses x below 1e-16,
    # exp(x) - 1 all its digits near 0.
    _unary("log1p", "log(1 + a)", np.log1p, ("1 / (1 + a)",), lower_log1p,
           domain=("(-1, inf)",), patterns=("log(1 + x) -> log1p(x)",)),
    # expm1' = exp(a), not y + 1: that cancels for a << 0 (a = -40: 1.3e-17 exact, y + 1 is 0;
    # exp(a) - 1, which fusion rewrites into expm1, had the exact gradient).
    _unary("expm1", "exp(a) - 1", np.expm1, ("exp(a)",), lower_expm1,
           patterns=("exp(x) - 1 -> expm1(x)", "1 - exp(-x) -> -expm1(-x)")),
    _unary("sqrt", "sqrt(a)", np.sqrt, ("0.5 / y",), lower_sqrt, domain=("(0, inf)",)),
    # d/db is 0 where a == 0 (xlogy(0, b) = 0 for every b), not 0/0 at b = 0; nan b stays nan.
    # Differentiated again, a / b: its d/da is 1/b at a = 0 too (the guard's branch gave 0).
    entry("xlogy", "a * log(b)", arity=2, grads=("log(b)", "where((a == 0) & (b == b), 0, a / b)"),
          smooth_grads=("log(b)", "a / b"), numpy=_xlogy,
          lower=lower_xlogy, domain=("", "(0, inf)")),
]
# fmt: on

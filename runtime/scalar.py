"""The branch-free exp, sin and cos as plain Numba functions: no kernel imports them any more.

Generated kernels compute every op through its lowering (``runtime/numba_ops.py``, the entries in
``compiler/ir/ops/``), which writes these same algorithms once for every tier (bit for bit at
float64: tests/test_op_lowerings.py). What is left here serves ``benchmarks/vecmath_bench.py``
(libm against the branch-free forms, in Numba) and tests reading ``TRIG_MAX`` (trig.py's); it
can go with them.
"""

import math

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from compiler.ir.ops.trig import TRIG_MAX  # beyond it sin and cos call libm

_FLAGS = dict(cache=True, error_model="numpy", inline="always")


# ---------------------------------------------------------------- vectorisable exp, sin, cos
@intrinsic
def _bits(typingctx, x):
    """The float64's bit pattern as an int64."""
    if x != types.float64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _from_bits(typingctx, i):
    """The float64 with this bit pattern."""
    if i != types.int64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c rounded once (llvm.fma: one vfmadd instruction with FMA, libm's fma without)."""
    if not (a == b == c == types.float64):
        return None

    def codegen(context, builder, sig, args):
        return builder.fma(*args)

    return types.float64(types.float64, types.float64, types.float64), codegen


# x + 1.5 * 2**52 rounds x to an integer k (ties to even) kept in the low mantissa bits: the
# integer k without a float-to-int conversion (AVX2 has none for int64).
_SHIFT = 6755399441055744.0
_INV_LN2 = 1.4426950408889634
_LN2_HI = 0.6931471805599453  # ln 2 = _LN2_HI + _LN2_LO to 106 bits
_LN2_LO = 2.3190468138462996e-17
# Taylor coefficients 1/n!, n = 13 .. 2: e^r - 1 - r - r^2 Q(r) < 4e-18 on |r| <= ln(2) / 2.
_E13, _E12, _E11 = 1 / 6227020800, 1 / 479001600, 1 / 39916800
_E10, _E9, _E8, _E7 = 1 / 3628800, 1 / 362880, 1 / 40320, 1 / 5040
_E6, _E5, _E4, _E3 = 1 / 720, 1 / 120, 1 / 24, 1 / 6


@njit(**_FLAGS)
def exp(x):
    """np.exp within 0.75 ulp (0.5 is correctly rounded), branch-free so loops vectorise.

    x = k ln2 + r with |r| <= ln2 / 2 (Cody-Waite, r carried as r + t to 106 bits), e^r by its
    Taylor polynomial, times 2^k built in the exponent field as 2^(k/2) * 2^(k - k/2), so that
    overflow gives inf and subnormal results round once. exp(0) = 1, exp(inf) = inf,
    exp(-inf) = 0 and exp(nan) = nan exactly.
    """
    xc = 709.8 if x > 709.8 else x  # keeps nan; beyond +-709.8 / 745.2 the result is inf / 0
    xc = -745.2 if xc < -745.2 else xc
    kd = _fma(xc, _INV_LN2, _SHIFT)
    k = kd - _SHIFT
    rh = _fma(-k, _LN2_HI, xc)  # exact
    c = -k * _LN2_LO
    r = rh + c
    t = (rh - r) + c
    q = _fma(r, _E13, _E12)
    q = _fma(q, r, _E11)
    q = _fma(q, r, _E10)
    q = _fma(q, r, _E9)
    q = _fma(q, r, _E8)
    q = _fma(q, r, _E7)
    q = _fma(q, r, _E6)
    q = _fma(q, r, _E5)
    q = _fma(q, r, _E4)
    q = _fma(q, r, _E3)
    q = _fma(q, r, 0.5)
    hi = 1.0 + r  # e^r = hi + lo + r^2 Q + t, summed last so it rounds once
    lo = (1.0 - hi) + r
    y = hi + _fma(r * r, q, lo + t)
    h = _bits(k * 0.5 + _SHIFT)  # k / 2 in its low bits; << 52 drops the shift's own bits
    s1 = _from_bits((h + 1023) << 52)
    s2 = _from_bits((_bits(kd) - h + 1023) << 52)
    return y * s1 * s2


# pi / 2 in three doubles (to 159 bits), and fdlibm's minimax kernels for |r| <= pi / 4.
_TWO_OVER_PI = 0.6366197723675814
_PIO2_1 = 1.5707963267948966
_PIO2_2 = 6.123233995736766e-17
_PIO2_3 = -1.4973849048591698e-33
_S1, _S2, _S3 = -1.66666666666666324348e-01, 8.33333333332248946124e-03, -1.98412698298579493134e-04
_S4, _S5, _S6 = 2.75573137070700676789e-06, -2.50507602534068634195e-08, 1.58969099521155010221e-10
_C1, _C2, _C3 = 4.16666666666666019037e-02, -1.38888888888741095749e-03, 2.48015872894767294178e-05
_C4, _C5, _C6 = -2.75573143513906633035e-07, 2.08757232129817482790e-09, -1.13596475577881948265e-11


@njit(**_FLAGS)
def _sincos(x):
    """(sin r, cos r, k) with x = k pi/2 + r, |r| <~ pi/4; k's low bits as an integer.

    Shared by sin and cos: once both are inlined for the same x, LLVM computes this once.
    """
    kd = _fma(x, _TWO_OVER_PI, _SHIFT)
    k = kd - _SHIFT
    r1 = _fma(-k, _PIO2_1, x)  # exact for |k| < 2**51
    c = -k * _PIO2_2
    ce = _fma(-k, _PIO2_2, -c)  # c's rounding error, exactly
    r = r1 + c  # two-sum: r + t = r1 + c exactly
    b = r - r1
    t = (r1 - (r - b)) + (c - b)
    t = _fma(-k, _PIO2_3, t + ce)
    z = r * r
    w = z * z
    v = z * r
    # fdlibm's __kernel_sin(r, t) and __kernel_cos(r, t)
    sp = _fma(z, _fma(z, _S4, _S3), _S2) + z * w * _fma(z, _S6, _S5)
    s = r - ((z * (0.5 * t - v * sp) - t) - v * _S1)
    cp = z * _fma(z, _fma(z, _C3, _C2), _C1) + w * w * _fma(z, _fma(z, _C6, _C5), _C4)
    hz = 0.5 * z
    c1 = 1.0 - hz
    c = c1 + (((1.0 - c1) - hz) + (z * cp - r * t))
    return s, c, _bits(kd)


@njit(**_FLAGS)
def sin(x):
    """np.sin within 0.75 ulp; sin(+-0) = +-0, nan for +-inf and nan. libm beyond TRIG_MAX."""
    s, c, k = _sincos(x)
    v = c if k & 1 else s
    v = -v if k & 2 else v
    if abs(x) > TRIG_MAX:  # also +-inf
        v = math.sin(x)
    return v


@njit(**_FLAGS)
def cos(x):
    """np.cos within 0.75 ulp; nan for +-inf and nan. libm beyond TRIG_MAX."""
    s, c, k = _sincos(x)
    v = s if k & 1 else c
    v = -v if (k + 1) & 2 else v
    if abs(x) > TRIG_MAX:
        v = math.cos(x)
    return v

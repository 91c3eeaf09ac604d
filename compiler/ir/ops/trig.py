"""sin, cos and tan.

sin and cos are written branch-free for |x| <= ``TRIG_MAX`` (what ``runtime/scalar.py`` computed
for Numba and ``llvm_ir`` for the LLVM tier): x = k pi/2 + r with pi/2 in three parts (exact
below ``TRIG_MAX``), fdlibm's kernels for sin r and cos r, the quadrant k picking one and the sign.
Within 0.75 ulp at float64, an ulp at float32. Beyond ``TRIG_MAX`` and at ±inf the value is the
C library's (Payne-Hanek reduction): ``lower`` branches to it there, and ``fast`` returns the
branch-free value with a flag saying the point needs ``lower`` (the LLVM tier then runs the block
again through ``lower``: a call in a loop keeps it from vectorising). In scalar code (``L.vector``
false) the C library's sin and cos are faster, and used. tan: the C library's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from compiler.ir.lowering import Lower
from compiler.ir.opdef import OpDef, entry
from compiler.ir.ops.exponential import WIDTHS

#: Beyond this |x| (and at ±inf) sin and cos are the C library's, at float64 and at float32
#: (where k stays exact below 2**22; checked within an ulp at every float nearest k pi/2).
TRIG_MAX, TRIG_MAX32 = 2.0**40, 2.0**21

# fdlibm's minimax kernels for |r| <= pi/4: sin r = r + r^3 (S1 + S2 z + ...), z = r^2, and
# cos r = 1 - z/2 + z^2 (C1 + C2 z + ...). The float32 forms round the same coefficients.
_S = (-1.66666666666666324348e-01, 8.33333333332248946124e-03, -1.98412698298579493134e-04,
      2.75573137070700676789e-06, -2.50507602534068634195e-08, 1.58969099521155010221e-10)  # fmt: skip
_C = (4.16666666666666019037e-02, -1.38888888888741095749e-03, 2.48015872894767294178e-05,
      -2.75573143513906633035e-07, 2.08757232129817482790e-09, -1.13596475577881948265e-11)  # fmt: skip


@dataclass(frozen=True)
class _TrigConstants:
    two_over_pi: float
    pio2: tuple[float, float, float]  # pi/2 as three floats of the width (to ~3x the precision)
    max: float  # beyond it: the C library


_TRIG = {
    64: _TrigConstants(0.6366197723675814,
                       (1.5707963267948966, 6.123233995736766e-17, -1.4973849048591698e-33),
                       TRIG_MAX),
    32: _TrigConstants(0.6366197466850281,
                       (1.5707963705062866, -4.371138828673793e-08, -1.7151245100058819e-15),
                       TRIG_MAX32),
}  # fmt: skip


@dataclass
class _Reduced:
    s: ir.Value  # sin r
    c: ir.Value  # cos r
    k: ir.Value  # the integer k's low bits (x = k pi/2 + r)
    big: ir.Value  # |x| > the width's TRIG_MAX (or ±inf): the reduction is not exact there


def _reduce(L: Lower, x: ir.Value) -> _Reduced:
    """x = k pi/2 + r, r carried as r + t; sin r and cos r by fdlibm's __kernel_sin(r, t) and
    __kernel_cos(r, t). sin(x) and cos(x) lowered together compute it once (LLVM's CSE)."""
    b, c, k_ = L.b, L.const, _TRIG[L.bits]
    shift = c(WIDTHS[L.bits].shift)
    p1, p2, p3 = (c(p) for p in k_.pio2)
    kd = L.fma(x, c(k_.two_over_pi), shift)
    nk = b.fneg(b.fsub(kd, shift))
    r1 = L.fma(nk, p1, x)  # exact below TRIG_MAX
    c0 = b.fmul(nk, p2)
    ce = L.fma(nk, p2, b.fneg(c0))  # c0's rounding error, exactly
    r = b.fadd(r1, c0)  # two-sum: r + t = r1 + c0
    d = b.fsub(r, r1)
    t = b.fadd(b.fsub(r1, b.fsub(r, d)), b.fsub(c0, d))
    t = L.fma(nk, p3, b.fadd(t, ce))
    z = b.fmul(r, r)
    w = b.fmul(z, z)
    zr = b.fmul(z, r)
    # __kernel_sin: r - ((z (t/2 - zr sp) - t) - zr S1)
    sp = b.fadd(L.fma(z, L.fma(z, c(_S[3]), c(_S[2])), c(_S[1])),
                b.fmul(b.fmul(z, w), L.fma(z, c(_S[5]), c(_S[4]))))  # fmt: skip
    inner = b.fmul(z, b.fsub(b.fmul(t, c(0.5)), b.fmul(zr, sp)))
    s = b.fsub(r, b.fsub(b.fsub(inner, t), b.fmul(zr, c(_S[0]))))
    # __kernel_cos: c1 + (((1 - c1) - z/2) + (z cp - r t)), c1 = 1 - z/2
    cp = b.fadd(b.fmul(z, L.fma(z, L.fma(z, c(_C[2]), c(_C[1])), c(_C[0]))),
                b.fmul(b.fmul(w, w), L.fma(z, L.fma(z, c(_C[5]), c(_C[4])), c(_C[3]))))  # fmt: skip
    hz = b.fmul(z, c(0.5))
    one = c(1.0)
    c1 = b.fsub(one, hz)
    tail = b.fadd(b.fsub(b.fsub(one, c1), hz), b.fsub(b.fmul(z, cp), b.fmul(r, t)))
    cosine = b.fadd(c1, tail)
    big = L.cmp(">", L.intrinsic("fabs", x), c(k_.max))
    return _Reduced(s, cosine, L.to_bits(kd), big)


def _pick(L: Lower, name: str, p: _Reduced) -> ir.Value:
    """sin or cos of x from its reduction: k's parity picks sin r or cos r, k's second bit
    (of k + 1 for cos) the sign."""
    b = L.b
    first, second = (p.c, p.s) if name == "sin" else (p.s, p.c)
    odd = b.icmp_unsigned("!=", b.and_(p.k, L.int_const(1)), L.int_const(0))
    v = L.select(odd, first, second)
    k = p.k if name == "sin" else b.add(p.k, L.int_const(1))
    negative = b.icmp_unsigned("!=", b.and_(k, L.int_const(2)), L.int_const(0))
    return L.select(negative, b.fneg(v), v)


def _fast(name: str):
    def fast(L: Lower, x: ir.Value) -> tuple[ir.Value, ir.Value]:
        """The branch-free value and the i1 flag |x| > TRIG_MAX (the value is wrong there)."""
        p = _reduce(L, x)
        return _pick(L, name, p), p.big

    fast.__name__ = fast.__qualname__ = f"fast_{name}"
    return fast


fast_sin, fast_cos = _fast("sin"), _fast("cos")


def _lower(name: str, fast):
    def lower(L: Lower, x: ir.Value) -> ir.Value:
        """Branch-free, and the C library's value for |x| > TRIG_MAX on a branch taken only
        there; the C library's alone in scalar code. The branch calls the C function, not
        LLVM's intrinsic: LLVM would if-convert the intrinsic and call it for every lane of a
        vectorised loop (6x slower than the scalar loop it now stays)."""
        if not L.vector:
            return L.intrinsic(name, x)
        value, big = fast(L, x)
        before = L.b.block
        with L.b.if_then(big, likely=False):
            library = L.libm(name, x)
            beyond = L.b.block
        result = L.b.phi(L.ty)
        result.add_incoming(library, beyond)
        result.add_incoming(value, before)
        return result

    lower.__name__ = lower.__qualname__ = f"lower_{name}"
    return lower


lower_sin, lower_cos = _lower("sin", fast_sin), _lower("cos", fast_cos)


def lower_tan(L: Lower, x: ir.Value) -> ir.Value:
    return L.libm("tan", x)


def _unary(name: str, definition: str, numpy, grads, lower, fast=None, **where) -> OpDef:
    return entry(name, definition, grads=grads, numpy=numpy, lower=lower, fast=fast, **where)


OPS: list[OpDef] = [
    _unary("sin", "sin(a)", np.sin, ("cos(a)",), lower_sin, fast_sin),
    _unary("cos", "cos(a)", np.cos, ("-sin(a)",), lower_cos, fast_cos),
    _unary("tan", "tan(a)", np.tan, ("1 + y * y",), lower_tan, kinks=("cos(a)",)),
]

"""Powers and logarithms: log2 log10 exp2 cbrt square reciprocal, and the stable compositions
logaddexp, log1mexp and xlog1py.

Domains and kinks (NumPy's/SciPy's values, stated in the kink table):

- ``log2``, ``log10``: nan below 0, -inf at ±0; gradient ``1/(a log 2)`` (inf at 0).
- ``cbrt``: real cube root (``np.cbrt``, so ``cbrt(-8) = -2``; SymPy's ``cbrt`` is the complex
  principal root, hence the definition ``sign(a)*Abs(a)**(1/3)``); ``cbrt'(0) = inf``.
- ``reciprocal``: ``1/a``, ±inf at ±0.
- ``logaddexp``: NumPy's stable ``max + log1p(exp(-|a-b|))``; equal operands give ``a + log 2``
  exactly, so ``logaddexp(inf, inf) = inf`` and ``(-inf, -inf) = -inf``. Its gradients
  ``sigmoid(a - b)``, ``sigmoid(b - a)`` (corrected for ``a - b``'s rounding) are 1/2 each at
  ties and never overflow.
- ``log1mexp``: ``log(1 - exp(a))`` for ``a <= 0`` (nan above 0, -inf at 0), in Mächler's
  stable form: ``log(-expm1(a))`` above ``-log 2``, ``log1p(-exp(a))`` below.
- ``xlog1py``: ``a*log1p(b)`` with 0 where ``a == 0`` and ``b`` is not nan (SciPy's rule, like
  xlogy); its d/db is ``a/(1 + b)``, and 0 where ``a == 0`` (``b = -1`` included).
"""

from __future__ import annotations

import math

import numpy as np

from compiler.ir import vecmath
from compiler.ir.lowering import Lower
from compiler.ir.opdef import OpDef, entry

LN2 = math.log(2.0)


def _log1mexp(a):
    """Mächler's stable log(1 - exp(a)) (the oracle; the lowering computes the same)."""
    with np.errstate(all="ignore"):
        a = np.asarray(a)
        return np.where(a > -LN2, np.log(-np.expm1(a)), np.log1p(-np.exp(a)))


def _xlog1py(a, b):
    from scipy.special import xlog1py

    return xlog1py(a, b)


@vecmath._widened
def lower_logaddexp(L: Lower, a, b):
    """NumPy's npy_logaddexp: equal operands (infinities too) give a + log 2; else the larger
    plus log1p(exp(-|a - b|)); nan operands give nan. float32 computes in float64 and rounds
    once (0.5 ulp; its own exp and log1p gave 1.4). Where loops vectorise: ``_tail_sum``."""
    from compiler.ir.ops.exponential import lower_exp, lower_log1p

    d = L.b.fsub(a, b)
    top = L.select(L.cmp(">", d, L.const(0)), a, b)
    if L.vector:
        total = _tail_sum(L, a, b, d, top)
    else:  # the C library's exp and log1p, faster one point at a time
        total = L.b.fadd(top, lower_log1p(L, lower_exp(L, L.b.fneg(L.intrinsic("fabs", d)))))
    result = L.select(L.cmp("uno", d, d), d, total)
    return L.select(L.cmp("==", a, b), L.b.fadd(a, L.const(LN2)), result)


def _tail_sum(L: Lower, a, b, d, top):
    """top + log(1 + exp(-|d|)) rounded once, the tail from ``vecmath.log1p_exp_minus_abs``,
    whose exp and reciprocal the gradients' two sigmoids share (two divisions in all, not
    four: D1's mixture 9.5 -> 7.7 ns per event, serial, LLVM O3), corrected for d = a - b's
    rounding error e to first order: tail(d + e) = tail(d) - sign(d) sigma(-|d|) e. e matters
    where the result is much smaller than a and b: 0.49 ulp measured (the C library's exp and
    log1p without e: 1.49)."""
    f = L.b
    hi, lo, slope = vecmath.log1p_exp_minus_abs(L, d)
    bb = f.fsub(d, a)  # TwoSum's error of a + (-b)
    e = f.fadd(f.fsub(a, f.fsub(d, bb)), f.fsub(f.fneg(b), bb))
    e = L.select(L.cmp("<", L.intrinsic("fabs", d), L.const(math.inf)), e, L.const(0.0))
    signed = L.select(L.cmp(">", d, L.const(0.0)), e, f.fneg(e))  # sign(d) e; d != 0 here
    lo = L.fma(f.fneg(slope), signed, lo)
    s, err = vecmath._two_sum(L, top, hi)
    total = f.fadd(s, f.fadd(err, lo))
    return L.select(L.cmp("==", L.intrinsic("fabs", top), L.const(math.inf)), top, total)


@vecmath._widened
def lower_cbrt(L: Lower, a):
    """The C library's cbrt (2.7 ulp measured at float64) and one Newton step
    y - (y**3 - a) / (3 y**2) with y**3 - a from an exact y**2 (fma): 0.5 ulp. Tiny |a|
    (< 2**-500, where y**3's low part underflows) is scaled by 2**600 first, its root by
    2**-200 after (both exact); 0, ±inf and nan keep the C library's value. float32: the same at
    float64, rounded once."""
    f = L.b
    tiny = L.cmp("<", L.intrinsic("fabs", a), L.const(2.0**-500))
    s = L.select(tiny, f.fmul(a, L.const(2.0**600)), a)
    y = L.libm("cbrt", s)
    y2 = f.fmul(y, y)
    y2_lo = L.fma(y, y, f.fneg(y2))
    r = f.fadd(L.fma(y2, y, f.fneg(s)), f.fmul(y2_lo, y))  # y**3 - s, to ~2**-100 of s
    better = f.fsub(y, f.fdiv(r, f.fmul(L.const(3.0), y2)))
    better = L.select(tiny, f.fmul(better, L.const(2.0**-200)), better)
    finite = L.b.and_(
        L.cmp("!=", a, L.const(0.0)), L.cmp("<", L.intrinsic("fabs", a), L.const(math.inf))
    )
    return L.select(finite, better, L.libm("cbrt", a))


def lower_log1mexp(L: Lower, a):
    """log(-expm1(a)) above -log 2 (where 1 - exp(a) cancels), log1p(-exp(a)) below."""
    near = L.intrinsic("log", L.b.fneg(L.libm("expm1", a)))
    far = L.libm("log1p", L.b.fneg(L.intrinsic("exp", a)))
    return L.select(L.cmp(">", a, L.const(-LN2)), near, far)


def lower_xlog1py(L: Lower, a, b):
    """a * log1p(b), 0 where a == 0 and b is not nan."""
    product = L.b.fmul(a, L.libm("log1p", b))
    zero = L.b.and_(L.cmp("==", a, L.const(0)), L.cmp("ord", b, b))
    return L.select(zero, L.const(0), product)


# logaddexp's gradients: sigma(a - b) and sigma(b - a), not exp(a - y) (whose a - y cancels:
# 4.5e15 ulps measured), with d = a - b's rounding error e (two-sum) put back to first order,
# sigma(d + e) = sigma(d) + sigma(d) sigma(-d) e (2.2 ulp measured; 14 without e); 1/2 at ties.
_D = "(a - b)"
_BV = f"({_D} - a)"
_E = f"((a - ({_D} - {_BV})) + (-b - {_BV}))"
_FIX = f"where(abs({_D}) < 10000, sigmoid({_D}) * sigmoid(-{_D}) * {_E}, 0)"
_LOGADDEXP = (f"where(a == b, 0.5, sigmoid({_D}) + {_FIX})",
              f"where(a == b, 0.5, sigmoid(-{_D}) - {_FIX})")  # fmt: skip
# To differentiate again (Hessians): the plain sigmoids. The two-sum correction is a rounding
# error, piecewise constant (derivative 0), and sigmoid(0) is 1/2 already: differentiating the
# corrected form gave the same second derivatives from a Hessian program twice as long
# (benchmark H1 K = 8: 6,223 live nodes against 2,547 with this and Graph.fold_negations).
_LOGADDEXP_SMOOTH = ("sigmoid(a - b)", "sigmoid(-(a - b))")

# fmt: off
OPS: list[OpDef] = [
    # 1/log(2)/a, not 1/(a*log(2)): one rounding fewer (0.6 ulp measured, 1.3 before).
    entry("log2", "log(a, 2)", grads=("1 / log(2) / a",), numpy=np.log2,
          lower=lambda L, a: L.intrinsic("log2", a), domain=("(0, inf)",)),
    entry("log10", "log(a, 10)", grads=("1 / log(10) / a",), numpy=np.log10,
          lower=lambda L, a: L.intrinsic("log10", a), domain=("(0, inf)",)),
    # Above a = 100, exp2(a - 1) * 2 log 2 (a - 1 exact): y overflows from a = 1024 (float32: 128) on,
    # where the gradient 2**a log 2 is still finite.
    entry("exp2", "2**a", grads=("where(a > 100, exp2(a - 1) * (2 * log(2)), y * log(2))",),
          numpy=np.exp2,
          lower=lambda L, a: L.intrinsic("exp2", a)),
    # y/a/3 (1.5 ulp measured with cbrt's Newton step; 3.6 with the C library's 2.7 ulp cbrt)
    # rather than 1/(3y^2) (5.9); the latter where a is 0 or inf (inf, 0).
    entry("cbrt", "sign(a) * Abs(a)**(1/3)",
          grads=("where((a == 0) | (abs(a) == 1e999), 1 / (3 * y * y), y / a / 3)",),
          numpy=np.cbrt,
          lower=lower_cbrt, kinks=("a",)),
    entry("square", "a**2", grads=("2 * a",), numpy=np.square,
          lower=lambda L, a: L.b.fmul(a, a)),
    entry("reciprocal", "1 / a", grads=("-(y * y)",), numpy=lambda a: np.divide(1.0, a),
          lower=lambda L, a: L.b.fdiv(L.const(1), a), kinks=("a",)),
    # Stabilisations: log(exp(a) + exp(b) + ...) overflows at a = b = 710, even of many terms
    # (a balanced nest of logaddexp), and so do a softmax of numbers and its log (PyTensor's
    # log_softmax rewrite, written out; as sigma(x - lse(rest)) its gradient does not cancel
    # where 1 - softmax would: 212 ulp at (8, 0, 0) as x - lse(all)); log(1 - exp(a)) is -inf
    # at a = -2**-55, 0 at a = -500.
    entry("logaddexp", "log(exp(a) + exp(b))", arity=2, commutative=True,
          grads=_LOGADDEXP, smooth_grads=_LOGADDEXP_SMOOTH, numpy=np.logaddexp,
          lower=lower_logaddexp, nest_weight="exp(a - y)",
          patterns=("log(exp(x) + exp(y) + ...) -> logaddexp(x, y)",
                    # a softmax of numbers and its log: exp(x) / sum is nan from x = 710
                    "log(exp(x) / (exp(x) + exp(y) + ...)) -> logsigmoid(x - logaddexp(y, ...))",
                    "exp(x) / (exp(x) + exp(y) + ...) -> sigmoid(x - logaddexp(y, ...))")),
    entry("log1mexp", "log(1 - exp(a))", grads=("-1 / expm1(-a)",), numpy=_log1mexp,
          lower=lower_log1mexp, domain=("(-inf, 0)",),
          patterns=("log(1 - exp(x)) -> log1mexp(x)", "log1p(-exp(x)) -> log1mexp(x)")),
    # d/db is 0 where a == 0 (xlog1py(0, b) = 0 for every b), not 0/0 at b = -1; differentiated
    # again, a / (1 + b) (its d/da at a = 0 is 1/(1 + b); the guard's branch gave 0).
    entry("xlog1py", "a * log(1 + b)", arity=2,
          grads=("log1p(b)", "where((a == 0) & (b == b), 0, a / (1 + b))"),
          smooth_grads=("log1p(b)", "a / (1 + b)"),
          numpy=_xlog1py, lower=lower_xlog1py, domain=("", "(-1, inf)")),
]
# fmt: on

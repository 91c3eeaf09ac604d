"""Special functions: erf, erfc, lgamma, digamma and polygamma.

``lgamma`` is the C library's, ``erf`` vecmath's where loops vectorise (the C library's in
scalar code), ``erfc`` vecmath's on every tier; digamma and polygamma have no C function,
so they are written here: the recurrence ``psi(x) = psi(x + 1) - 1/x`` (trigamma: ``+ 1/x**2``)
shifts ``x`` up to at least 10, where the asymptotic series (Bernoulli numbers up to B14) is
accurate to double precision, negative ``x`` reflects to ``1 - x``, and near digamma's positive
zero a Taylor series keeps the error relative. ``polygamma(n, x)`` is digamma at n = 0, that
trigamma at n = 1, and ``(-1)**(n+1) n! zeta(n+1, x)`` above (Hurwitz zeta by Euler-Maclaurin
after a loop shifting x to n + 11; computed in double at float32 too). The recurrences' sums,
the series and ``n!`` are carried in double-double (issue 15: digamma was 16 ulp off at 1.88,
where 2.4 - 2.0 cancels). The chain of gradients
closes in the table: lgamma' = digamma, digamma' = polygamma(1, .), polygamma' =
polygamma(n + 1, .).

Values follow SciPy (``gammaln``, ``psi``, ``polygamma``); rows for the kink table:

- ``lgamma`` is ``log|Gamma(a)|``: +inf at 0 and the negative integers (its gradient, digamma,
  is nan there); ``lgamma(-inf) = -inf`` as in SciPy.
- ``digamma``: ``-inf`` at +0, ``+inf`` at -0, nan at the negative integers and -inf.
  Away from its positive zero its error is a few ulps of the terms that cancel (the
  recurrence's sum, the reflection's pi cot(pi x)), not of the result: absolute near its zeros.
- ``polygamma(n, x)``: the order's gradient is 0 (an integer operand, like integer-valued ops);
  nan for an order that is not a natural number, or is one from 2**53 on (where n + 1 rounds to
  n and the sign (-1)**(n+1) means nothing; inf included). Past order 170, n! is inf and the
  result is +-inf or nan, as SciPy's (the zeta loop stops at order ``ORDER_CAP``, so a huge
  order answers at once). n = 1 (trigamma): +inf at 0, at the negative integers and at -inf.
  n >= 2: ``(-1)**(n+1) inf`` at 0 and the negative integers, and
  **nan below 0 elsewhere** (the reflection needs the n-th derivative of cot; not lowered —
  SciPy's own loop there takes |x| steps). Accurate to a few ulps for orders up to about 20;
  past that x**-n and n! leave the float range before the result does.
"""

from __future__ import annotations

import math

import numpy as np

from compiler.ir import vecmath
from compiler.ir.lowering import DOUBLE, Lower
from compiler.ir.opdef import OpDef, entry

SHIFT = 10.0  # the recurrence raises x to at least this before the asymptotic series
#: polygamma's loop runs about n steps; past n = 170, n! is inf in double and the result is
#: +-inf or nan whatever zeta's accuracy (as SciPy's), so the loop stops at this order: a huge
#: order (1e30) answers at once instead of looping for ever.
ORDER_CAP = 200.0

# digamma(t) ~ log t - 1/(2t) - sum B_2k / (2k t**2k), k = 1..10 (coefficients of w = 1/t**2;
# to k = 7 the truncation is 4e-17 at t = 10: 1.6 ulp of digamma(1.75) = 0.25)
_PSI = (1 / 12, -1 / 120, 1 / 252, -1 / 240, 1 / 132, -691 / 32760, 1 / 12, -3617 / 8160,
        43867 / 14364, -174611 / 6600)  # fmt: skip
# trigamma(t) ~ 1/t + 1/(2t**2) + sum B_2k / t**(2k+1), k = 1..10 (coefficients of w, over t;
# to k = 7: 7e-17 at t = 10, 2.5 ulp of trigamma(6))
_PSI1 = (1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730, 7 / 6, -3617 / 510, 43867 / 798,
         -174611 / 330)  # fmt: skip
# Near digamma's positive zero x0 (as hi + lo), where the recurrence cancels: the Taylor series
# psi(x) = sum (-1)**(n+1) zeta(n+1, x0) (x - x0)**n, n = 1..24, for |x - x0| < 0.25 (SciPy's
# way; coefficients from mpmath at 50 digits; x0 = hi + lo split at each width).
# B_2j / (2j)!, j = 1..12: the Euler-Maclaurin coefficients of the Hurwitz zeta function
_BERNOULLI = (
    0.08333333333333333, -0.001388888888888889, 3.306878306878307e-05, -8.267195767195768e-07,
    2.08767569878681e-08, -5.284190138687493e-10, 1.3382536530684679e-11, -3.3896802963225827e-13,
    8.586062056277845e-15, -2.174868698558062e-16, 5.5090028283602295e-18, -1.3954464685812522e-19,
)  # fmt: skip
_ROOT = {64: (1.4616321449683622, 9.549995429965697e-17), 32: (1.4616321325302124, 1.243815e-08)}
_ROOT_C1_LO = -3.387874303038943e-17  # zeta(2, x0) - _ROOT_SERIES[0]
_ROOT_SERIES = (
    0.9676722454476212, -0.4427631689835921, 0.258499760955651, -0.16394270544240652,
    0.10782405069126237, -0.07219956125645471, 0.04880428816414311, -0.03316112647484736,
    0.022597648232218104, -0.01542476590494896, 0.010538791616612175, -0.007204534386356869,
    0.004926781395729853, -0.003369801655439328, 0.002305126326734928, -0.0015769367714301972,
    0.0010788252019162967, -0.0007380709389960052, 0.000504953265834602, -0.0003454680251063077,
    0.00023635601564027053, -0.00016170622091974803, 0.0001106337276874741, -7.569179582195066e-05,
)  # fmt: skip


def _scipy(name: str):
    def oracle(*args):
        import scipy.special

        return getattr(scipy.special, name)(*args)

    oracle.__name__ = name
    return oracle


def _trigamma(x):
    """SciPy's polygamma(1, x) for x >= 0 and the reflection below 0 (SciPy's own loop over
    |x| steps there never ends for x = -1e20)."""
    from scipy.special import polygamma

    x = np.asarray(x, dtype=np.float64)
    with np.errstate(all="ignore"):
        negative = x < 0
        r = x - np.round(x)
        reflected = (np.pi / np.sin(np.pi * r)) ** 2 - polygamma(1, np.where(negative, 1 - x, 0.5))
        value = np.where(negative, reflected, polygamma(1, np.where(negative, 0.5, x)))
        return np.where(x == -np.inf, np.inf, value)


def _horner(L: Lower, coefficients, w):
    """sum c_k w**k for k = 1..len(coefficients)."""
    acc = L.const(coefficients[-1])
    for c in reversed(coefficients[:-1]):
        acc = L.fma(acc, w, L.const(c))
    return L.b.fmul(acc, w)


def _dd_add(L: Lower, a, b):
    """(a_hi + a_lo) + (b_hi + b_lo) as hi + lo; an infinite sum is (±inf, 0), not nan."""
    s, e = vecmath._two_sum(L, a[0], b[0])
    hi, lo = vecmath._two_sum(L, s, L.b.fadd(e, L.b.fadd(a[1], b[1])))
    finite = L.cmp("<", L.intrinsic("fabs", s), L.const(math.inf))
    return L.select(finite, hi, s), L.select(finite, lo, L.const(0))


def _dd_recip(L: Lower, v):
    """1 / (v_hi + v_lo) as q + q_lo: q (1 + r), r = 1 - q v by fma."""
    f = L.b
    q = f.fdiv(L.const(1.0), v[0])
    r = f.fsub(L.fma(f.fneg(q), v[0], L.const(1.0)), f.fmul(q, v[1]))
    return q, f.fmul(q, r)


def _neg(L: Lower, a):
    return L.b.fneg(a[0]), L.b.fneg(a[1])


def _shift(L: Lower, t, term):
    """(t + n, sum of term(t + k) for k < n) in double-double (t = t_hi + t_lo > 0, each t + k
    exact as hi + lo), n the steps that bring t to at least SHIFT (nan stays nan). Unrolled with
    selects: no branches, at most SHIFT steps. Kept in double-double: the sum cancels against
    the series (digamma(1.88) = 0.35 from 2.4 - 2.0: 16 ulp measured in plain floats)."""
    zero, one, limit = L.const(0), L.const(1), L.const(SHIFT)
    total = (zero, zero)
    for _ in range(int(SHIFT)):
        small = L.cmp("<", t[0], limit)
        grown = _dd_add(L, total, term(t))
        total = tuple(L.select(small, g, h) for g, h in zip(grown, total))
        step = _dd_add(L, t, (one, zero))
        t = tuple(L.select(small, g, h) for g, h in zip(step, t))
    return t, total


def _sinpi_cospi(L: Lower, x):
    """sin(pi r) and cos(pi r) with r = x - round(x), exact, so huge x lose nothing; cos(pi r)
    as sin(pi (1/2 - |r|)), exactly 0 at the half-integers."""
    r = L.b.fsub(x, L.intrinsic("round", x))
    half = L.b.fsub(L.const(0.5), L.intrinsic("fabs", r))
    pi = L.const(math.pi)
    return L.intrinsic("sin", L.b.fmul(pi, r)), L.intrinsic("sin", L.b.fmul(pi, half))


def _digamma_positive(L: Lower, t, d):
    """psi(t), t = t_hi + t_lo > 0 (float64), with d = t - x0 computed exactly by the caller:
    the recurrence's sum and log t - 1/(2t) - series in double-double, rounded once."""
    f = L.b
    shifted, total = _shift(L, t, lambda v: _dd_recip(L, v))
    inverse = _dd_recip(L, shifted)
    w = f.fmul(inverse[0], inverse[0])
    log_hi, log_lo = vecmath.log_dd(L, shifted[0])
    log = (log_hi, f.fadd(log_lo, f.fmul(shifted[1], inverse[0])))  # + t_lo / t
    half = (f.fmul(L.const(0.5), inverse[0]), f.fmul(L.const(0.5), inverse[1]))
    series = _dd_add(L, log, _neg(L, half))
    series = _dd_add(L, series, (f.fneg(_horner(L, _PSI, w)), L.const(0)))
    value = _dd_add(L, series, _neg(L, total))
    near = L.cmp("<", L.intrinsic("fabs", d), L.const(0.25))
    # the series' first term d c1 with c1 as hi + lo, the rest (at most 0.11 of it) added by fma
    rest = _horner(L, _ROOT_SERIES[1:], d)  # c2 d + c3 d**2 + ...
    taylor = L.fma(d, L.const(_ROOT_SERIES[0]), f.fmul(d, f.fadd(L.const(_ROOT_C1_LO), rest)))
    return L.select(near, taylor, f.fadd(*value))


def _trigamma_positive(L: Lower, x):
    """psi'(x), x = hi + lo > 0 (float64): the recurrence's sum in double-double (10 roundings
    of a growing sum: 3.8 ulp measured in plain floats)."""
    f = L.b

    def term(v):
        q = _dd_recip(L, v)
        p = f.fmul(q[0], q[0])
        return p, f.fadd(L.fma(q[0], q[0], f.fneg(p)), f.fmul(L.const(2.0), f.fmul(q[0], q[1])))

    t, total = _shift(L, x, term)
    inverse = _dd_recip(L, t)
    w = f.fmul(inverse[0], inverse[0])
    tail = f.fadd(f.fmul(inverse[0], _horner(L, _PSI1, w)), f.fmul(L.const(0.5), w))
    value = _dd_add(L, _dd_add(L, inverse, (tail, L.const(0))), total)
    return f.fadd(*value)


@vecmath._widened
def lower_digamma(L: Lower, x):
    """psi(x); x < 0 reflects: psi(x) = psi(1 - x) - pi cot(pi x) (1 - x carried as hi + lo).
    float32: the float64 value rounded once."""
    negative = L.cmp("<", x, L.const(0))
    reflected_t = vecmath._two_sum(L, L.const(1), L.b.fneg(x))
    t = tuple(L.select(negative, r, p) for r, p in zip(reflected_t, (x, L.const(0))))
    # t - x0 without t's rounding: x - hi is exact near x0, and 1 - x - x0 = -(x + (hi - 1)) - lo
    hi, lo = _ROOT[L.bits]
    above = L.b.fsub(L.b.fsub(x, L.const(hi)), L.const(lo))
    below = L.b.fneg(L.b.fadd(L.b.fadd(x, L.const(hi - 1)), L.const(lo)))
    psi = _digamma_positive(L, t, L.select(negative, below, above))
    sin, cos = _sinpi_cospi(L, x)
    reflected = L.b.fsub(psi, L.b.fdiv(L.b.fmul(L.const(math.pi), cos), sin))
    pole = L.b.and_(negative, L.cmp("==", sin, L.const(0)))  # negative integers
    value = L.select(pole, L.const(math.nan), L.select(negative, reflected, psi))
    value = L.select(L.cmp("==", x, L.const(math.inf)), x, value)  # inf - inf in the sums
    value = _tiny_digamma(L, x, value)
    # psi(+0) = -inf, psi(-0) = +inf: -1/x
    return L.select(L.cmp("==", x, L.const(0)), L.b.fdiv(L.const(-1), x), value)


@vecmath._widened
def lower_trigamma(L: Lower, x):
    """psi'(x); x < 0 reflects: psi'(x) = pi**2 / sin(pi x)**2 - psi'(1 - x). float32: the
    float64 value rounded once."""
    negative = L.cmp("<", x, L.const(0))
    reflected_t = vecmath._two_sum(L, L.const(1), L.b.fneg(x))
    t = tuple(L.select(negative, r, p) for r, p in zip(reflected_t, (x, L.const(0))))
    psi1 = _trigamma_positive(L, t)
    sin, _ = _sinpi_cospi(L, x)
    reflected = L.b.fsub(L.b.fdiv(L.const(math.pi**2), L.b.fmul(sin, sin)), psi1)
    value = L.select(negative, reflected, psi1)
    value = L.select(L.cmp("==", x, L.const(math.inf)), L.const(0), value)
    # 1/x**2 + pi**2/6 + O(x) below |x| = 2**-30 (the sums' 1/x**2 overflow there)
    tiny = L.cmp("<", L.intrinsic("fabs", x), L.const(2.0**-30))
    near = L.b.fadd(L.b.fdiv(L.const(1), L.b.fmul(x, x)), L.const(math.pi**2 / 6))
    value = L.select(tiny, near, value)
    return L.select(L.cmp("==", x, L.const(-math.inf)), L.const(math.inf), value)


def lower_lgamma(L: Lower, x):
    """The C library's lgamma (log|Gamma|), with SciPy's lgamma(-inf) = -inf."""
    value = L.libm("lgamma", x)
    return L.select(L.cmp("==", x, L.const(-math.inf)), x, value)


def _shift_loop(L: Lower, x, s, limit):
    """(x + n as hi + lo, sum of (x + k)**-s for k < n as hi + lo), n the steps that bring x to
    at least ``limit``: a loop, since the orders' limits differ (at most limit steps; nan skips
    it). x + k is carried exactly (its rounding, times s, would reach the terms) and the sum in
    double-double (plain sums of up to 200 terms: 4 ulp measured)."""
    b = L.b
    start = b.block
    loop = b.append_basic_block("shift")
    done = b.append_basic_block("shifted")
    b.cbranch(L.cmp("<", x, limit), loop, done)
    b.position_at_end(loop)
    v, v_lo, total, total_lo = (b.phi(L.ty) for _ in range(4))
    for phi, first in ((v, x), (v_lo, L.const(0)), (total, L.const(0)), (total_lo, L.const(0))):
        phi.add_incoming(first, start)
    term = L.intrinsic("pow", v, b.fneg(s))
    term_lo = b.fmul(term, b.fdiv(b.fmul(b.fneg(s), v_lo), v))  # (v + lo)**-s to first order
    term_lo = L.select(
        L.cmp("<", L.intrinsic("fabs", term), L.const(math.inf)), term_lo, L.const(0)
    )
    total_next = _dd_add(L, (total, total_lo), (term, term_lo))
    v_next = _dd_add(L, (v, v_lo), (L.const(1), L.const(0)))
    for phi, value in zip((v, v_lo, total, total_lo), (*v_next, *total_next)):
        phi.add_incoming(value, loop)
    b.cbranch(L.cmp("<", v_next[0], limit), loop, done)
    b.position_at_end(done)
    out = []
    for first, value in ((x, v_next[0]), (L.const(0), v_next[1]), (L.const(0), total_next[0]),
                         (L.const(0), total_next[1])):  # fmt: skip
        phi = b.phi(L.ty)
        phi.add_incoming(first, start)
        phi.add_incoming(value, loop)
        out.append(phi)
    return (out[0], out[1]), (out[2], out[3])


def _factorial(L: Lower, n):
    """n! as hi + lo (each product's error kept: ~2**-100 relative; the C library's tgamma is
    2 ulp off from 12! on) for a natural n, inf from 171 on (nan: 171)."""
    b = L.b
    m = L.select(L.cmp("<", n, L.const(171)), n, L.const(171))
    start = b.block
    loop = b.append_basic_block("factorial")
    done = b.append_basic_block("factorial_done")
    b.cbranch(L.cmp(">=", m, L.const(2)), loop, done)
    b.position_at_end(loop)
    k, hi, lo = (b.phi(L.ty) for _ in range(3))
    for phi, first in ((k, L.const(2)), (hi, L.const(1)), (lo, L.const(0))):
        phi.add_incoming(first, start)
    p = b.fmul(hi, k)
    p_lo = b.fadd(L.fma(hi, k, b.fneg(p)), b.fmul(lo, k))
    k_next = b.fadd(k, L.const(1))
    for phi, value in ((k, k_next), (hi, p), (lo, p_lo)):
        phi.add_incoming(value, loop)
    b.cbranch(L.cmp("<=", k_next, m), loop, done)
    b.position_at_end(done)
    out = []
    for first, value in ((L.const(1), p), (L.const(0), p_lo)):
        phi = b.phi(L.ty)
        phi.add_incoming(first, start)
        phi.add_incoming(value, loop)
        out.append(phi)
    return out[0], out[1]


def _hurwitz(L: Lower, s, x, reach):
    """zeta(s, x) as hi + lo for x > 0, s >= 2: the sum up to x >= reach + SHIFT (with
    reach = s, 12 terms of the asymptotic series reach double precision for every s), then
    Euler-Maclaurin; the sum, 1/n and t's low part carried in double-double."""
    f = L.b
    (t, t_lo), total = _shift_loop(L, x, s, f.fadd(reach, L.const(SHIFT)))
    # zeta(s, t) ~ t**(1-s)/(s-1) + t**-s (1/2 + sum_j B_2j/(2j)! s(s+1)..(s+2j-2) t**(1-2j))
    q, tt = f.fdiv(s, t), f.fmul(t, t)
    series = L.const(0.5)
    for j, c in enumerate(_BERNOULLI, start=1):
        series = L.fma(L.const(c), q, series)
        grow = f.fmul(f.fadd(s, L.const(2 * j - 1)), f.fadd(s, L.const(2 * j)))
        q = f.fdiv(f.fmul(q, grow), tt)
    n = f.fsub(s, L.const(1))
    inner = _dd_add(L, _dd_recip(L, (n, L.const(0))), (f.fdiv(series, t), L.const(0)))
    power = L.intrinsic("pow", t, f.fneg(n))
    power_lo = f.fmul(power, f.fdiv(f.fmul(f.fneg(n), t_lo), t))  # (t + t_lo)**-n
    tail = f.fmul(power, inner[0])  # t**-n first: no underflow
    tail_lo = f.fadd(L.fma(power, inner[0], f.fneg(tail)),
                     f.fadd(f.fmul(power, inner[1]), f.fmul(power_lo, inner[0])))  # fmt: skip
    vanishes = f.or_(L.cmp("==", t, L.const(math.inf)), L.cmp("==", power, L.const(0)))
    # t**-n underflowed: the series is not needed
    tail = (L.select(vanishes, L.const(0), tail), L.select(vanishes, L.const(0), tail_lo))
    return _dd_add(L, total, tail)


def _tiny_digamma(L: Lower, x, value):
    """psi(x) = -1/x - gamma + O(x) below |x| = 2**-30 (the sums' 1/x overflow there)."""
    tiny = L.cmp("<", L.intrinsic("fabs", x), L.const(2.0**-30))
    near = L.b.fsub(L.b.fdiv(L.const(-1), x), L.const(0.5772156649015329))
    return L.select(tiny, near, value)


def lower_polygamma(L: Lower, n, x):
    """psi^(n)(x) for integer n >= 0: digamma at 0, trigamma's own form at 1 (both on the whole
    axis), and (-1)**(n+1) n! zeta(n+1, x) above (x > 0; poles ±inf; nan for x < 0)."""
    value = L.select(L.cmp("==", n, L.const(0)), lower_digamma(L, x),
                     L.select(L.cmp("==", n, L.const(1)), lower_trigamma(L, x),
                              _polygamma_general(L, n, x)))  # fmt: skip
    whole = L.b.and_(L.cmp("==", n, L.intrinsic("floor", n)), L.cmp("<", n, L.const(2.0**53)))
    integer = L.b.and_(L.cmp(">=", n, L.const(0)), whole)
    return L.select(integer, value, L.const(math.nan))


def _polygamma_general(L: Lower, n, x):
    """(-1)**(n+1) n! zeta(n+1, x), n >= 2, in double at float32 too (n! and x**-n leave
    float32's range long before the result does)."""
    if L.bits == 32:
        D = Lower(L.b, DOUBLE, L.vector)
        wide = _polygamma_general(D, L.b.fpext(n, DOUBLE), L.b.fpext(x, DOUBLE))
        return L.b.fptrunc(wide, L.ty)
    zero, one = L.const(0), L.const(1)
    odd = L.cmp(
        "==",
        L.b.fsub(n, L.b.fmul(L.const(2), L.intrinsic("floor", L.b.fmul(n, L.const(0.5))))),
        one,
    )
    sign = L.select(odd, one, L.const(-1))
    s = L.b.fadd(n, one)
    zeta = _hurwitz(
        L,
        s,
        L.intrinsic("fabs", x),
        L.select(L.cmp("<", s, L.const(ORDER_CAP)), s, L.const(ORDER_CAP)),
    )
    fact, fact_lo = _factorial(L, n)
    product = L.b.fmul(fact, zeta[0])
    low = L.b.fadd(L.fma(fact, zeta[0], L.b.fneg(product)),
                   L.b.fadd(L.b.fmul(fact, zeta[1]), L.b.fmul(fact_lo, zeta[0])))  # fmt: skip
    exact = L.cmp("<", L.intrinsic("fabs", product), L.const(math.inf))
    general = L.b.fmul(sign, L.select(exact, L.b.fadd(product, low), product))
    pole = L.b.and_(L.cmp("<=", x, zero), L.cmp("==", x, L.intrinsic("floor", x)))
    general = L.select(pole, L.b.fmul(sign, L.const(math.inf)), general)
    return L.select(L.b.and_(L.cmp("<", x, zero), L.b.not_(pole)), L.const(math.nan), general)


def _polygamma(n, x):
    """SciPy's polygamma for n >= 2 and x >= 0; digamma, the trigamma oracle below; nan for
    x < 0 at n >= 2 (not lowered) and for n not a natural number."""
    from scipy.special import polygamma, psi

    n, x = np.broadcast_arrays(np.asarray(n, dtype=np.float64), np.asarray(x, dtype=np.float64))
    with np.errstate(all="ignore"):
        natural = (n >= 0) & (n == np.floor(n)) & (n < 2.0**53)
        pole = (x <= 0) & (x == np.floor(x))
        safe = np.where(natural & (n >= 2) & ((x >= 0) | pole), x, 1.0)
        general = np.where(
            pole, polygamma(np.where(natural, n, 2), 0.0), polygamma(np.where(natural, n, 2), safe)
        )
        general = np.where(((x < 0) & ~pole) | np.isnan(x), np.nan, general)
        value = np.where(n == 0, psi(x), np.where(n == 1, _trigamma(x), general))
        return np.where(natural, value, np.nan)


# erf' = 2/sqrt(pi) exp(-a^2) with a^2 = h^2 + (a - h)(a + h), h = a rounded to 1/64 (|a| <= 64):
# h^2 is exact at both widths, so a^2's rounding (29 ulp at a = 26, 21 in float32) is not
# amplified by exp; 1.5 ulp measured (29 and 21 before). log(2/sqrt(pi)) = 0.1207... is added
# to the small exponent (rounding there costs 2**-27 of an ulp) rather than multiplied after:
# float32's 2/sqrt(pi) is 0.44 ulp off, which took erf' at float32 to 2.5 ulp.
_H = "(round(clip(a, -64, 64) * 64) / 64)"
_A = "clip(a, -64, 64)"
_C = "0.12078223763524522"  # log(2 / sqrt(pi))
_GAUSS = f"exp(-({_H} * {_H})) * exp({_C} - (({_A} - {_H}) * ({_A} + {_H})))"

# fmt: off
OPS: list[OpDef] = [
    entry("erf", "erf(a)", grads=(_GAUSS,), numpy=_scipy("erf"),
          lower=vecmath.vectorised("erf")),
    entry("erfc", "erfc(a)", grads=(f"-{_GAUSS}",), numpy=_scipy("erfc"),
          lower=vecmath.vector_erfc),  # every tier: the C library's is 2.1 ulp
    entry("lgamma", "log(Abs(gamma(a)))", grads=("digamma(a)",), numpy=_scipy("gammaln"),
          lower=lower_lgamma, domain=("(0, inf)",)),
    entry("digamma", "polygamma(0, a)", grads=("polygamma(1, a)",), numpy=_scipy("psi"),
          lower=lower_digamma, domain=("(0, inf)",)),
    entry("polygamma", "polygamma(a, b)", arity=2, grads=("0", "polygamma(a + 1, b)"),
          numpy=_polygamma, lower=lower_polygamma, domain=("natural", "(0, inf)")),
]
# fmt: on

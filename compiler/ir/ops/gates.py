"""The built-in gates: ops that the fusion pass also builds from the subgraphs in their
``patterns`` (text over ``x``), lowered by their ``stable`` forms (``compiler.ir.registry``'s
docstring). exp only ever sees -|x| <= 0, so nothing overflows at any x; the exp is the op exp's
lowering (branch-free where loops vectorise), log1p the C library's in scalar code; sigmoid and
tanh are ``compiler/ir/vecmath.py``'s on every tier (rounded once: issue 15).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from compiler.ir import vecmath
from compiler.ir.lowering import Lower
from compiler.ir.opdef import OpDef, entry
from compiler.ir.ops.exponential import lower_exp, lower_log1p


def _sigmoid(x):
    with np.errstate(all="ignore"):
        e = np.exp(-np.abs(x))
        r = 1.0 / (1.0 + e)
        return np.where(x >= 0, r, e * r)


def _softplus(x):
    with np.errstate(all="ignore"):
        return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def _logsigmoid(x):
    with np.errstate(all="ignore"):
        return np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x)))


def _exp_minus_abs(L: Lower, x: ir.Value) -> ir.Value:
    return lower_exp(L, L.b.fneg(L.intrinsic("fabs", x)))


def lower_sigmoid(L: Lower, x: ir.Value) -> ir.Value:
    """e = exp(-|x|), x >= 0 ? 1 / (1 + e) : e / (1 + e), in double-double on every tier
    (``vecmath.vector_sigmoid``: branch-free, so loops over it vectorise; 0.5 ulp where
    e r / (1 + e) in plain floats is 2.2)."""
    return vecmath.vector_sigmoid(L, x)


def lower_tanh(L: Lower, x: ir.Value) -> ir.Value:
    """vecmath's tanh on every tier (0.57 ulp; the C library's is 1.7 at float64, 1.9 at
    float32)."""
    return vecmath.vector_tanh(L, x)


def lower_softplus(L: Lower, x: ir.Value) -> ir.Value:
    """(x > 0 ? x : 0) + log1p(exp(-|x|)); at float64 where loops vectorise
    ``vecmath.vector_softplus``, whose exp and reciprocal its gradient sigmoid shares."""
    if L.vector and L.bits == 64:
        return vecmath.vector_softplus(L, x)
    zero = L.const(0.0)
    log = lower_log1p(L, _exp_minus_abs(L, x))
    return L.b.fadd(L.select(L.cmp(">", x, zero), x, zero), log)


def lower_logsigmoid(L: Lower, x: ir.Value) -> ir.Value:
    """(x < 0 ? x : 0) - log1p(exp(-|x|)): -softplus(-x) at float64 where loops vectorise."""
    if L.vector and L.bits == 64:
        return L.b.fneg(vecmath.vector_softplus(L, L.b.fneg(x)))
    zero = L.const(0.0)
    log = lower_log1p(L, _exp_minus_abs(L, x))
    return L.b.fsub(L.select(L.cmp("<", x, zero), x, zero), log)


def lower_relu(L: Lower, x: ir.Value) -> ir.Value:
    """x > 0 or x is nan ? x : 0 (relu'(0) = 0 is the gradient's choice)."""
    zero = L.const(0.0)
    return L.select(L.ucmp(">", x, zero), x, zero)


def _gate(name, definition, numpy, grads, stable, patterns, lower, **where) -> OpDef:
    return entry(name, definition, grads=grads, numpy=numpy, lower=lower, stable=stable,
                 patterns=patterns, **where)  # fmt: skip


# fmt: off
OPS: list[OpDef] = [
    # The lecture's sigmoid gate. Its local gradient sigma(x) * sigma(-x): from its own output
    # y like the lecture's y * (1 - y), but accurate where 1 - y rounds to 0 (x = 37.43). 1.6 ulp
    # measured with the double-double sigmoid (3.3 with the plain one); e/(1+e)^2 with
    # e = exp(-|x|) doubles the gate's backward ops, which the lecture's trade-off (and
    # tests/test_fusion.py) wants fewer than unfused.
    _gate("sigmoid", "1 / (1 + exp(-a))", _sigmoid, ("y * sigmoid(-a)",),
          stable="exp(minimum(a, 0)) / (1 + exp(-abs(a)))",
          patterns=("1 / (1 + exp(-x))", "exp(x) / (1 + exp(x))", "1 - 1 / (1 + exp(x))",
                    "0.5 + 0.5 * tanh(0.5 * x)",
                    "sigmoid(-x) * exp(x) -> sigmoid(x)"),  # 0 * inf = nan from x = 710
          lower=lower_sigmoid),
    # tanh is stable; fusion finds it in its exp forms. Its gradient is 4 sigma(2a) sigma(-2a)
    # (1.5 ulp measured, each sigmoid correctly rounded but for 2**-50; 4e/(1+e)^2 with
    # e = exp(-2|a|) gave 3.2; 1 - y*y is 0 from |a| = 19 on, 1e-8 off at 10).
    _gate("tanh", "tanh(a)", np.tanh,
          ("4 * sigmoid(2 * a) * sigmoid(-2 * a)",),
          stable="tanh(a)",
          patterns=("(exp(x) - exp(-x)) / (exp(x) + exp(-x))", "(exp(2 * x) - 1) / (exp(2 * x) + 1)",
                    "(1 - exp(-2 * x)) / (1 + exp(-2 * x))", "expm1(2 * x) / (exp(2 * x) + 1)",
                    "2 / (1 + exp(-2 * x)) - 1", "2 * sigmoid(2 * x) - 1"), lower=lower_tanh),
    # softplus' = sigma(x), not 1 - exp(-y) = -expm1(-y) from the output (1.67 ulp: y's rounding
    # and expm1's; sigma: 0.51): where loops vectorise it shares softplus' own exp(-|x|) and
    # 1 / (1 + e) (vecmath.vector_softplus), so costs a few fma where expm1 cost a second
    # exponential. With vector_softplus (two divisions, not three): D1's logistic loss 9.2 ->
    # 6.1 ns per event (serial, LLVM O3), the value 1.23 -> 0.63 ulp.
    _gate("softplus", "log(1 + exp(a))", _softplus, ("sigmoid(a)",),
          stable="maximum(a, 0) + log1p(exp(-abs(a)))",
          patterns=("log(1 + exp(x))", "log1p(exp(x))", "-log(sigmoid(-x))",
                    "-log(1 / (1 + exp(x)))", "-logsigmoid(-x)"), lower=lower_softplus),
    # log sigma(x) = -softplus(-x); its gradient sigma(-x) (= -expm1(y)), as softplus'.
    _gate("logsigmoid", "-log(1 + exp(-a))", _logsigmoid, ("sigmoid(-a)",),
          stable="minimum(a, 0) - log1p(exp(-abs(a)))",
          patterns=("log(sigmoid(x))", "-log(1 + exp(-x))", "-log1p(exp(-x))",
                    "log(1 / (1 + exp(-x)))", "-softplus(-x)",
                    # 1 - sigmoid(x) rounds to 0 from x = 37.5: -inf
                    "log(1 - sigmoid(x)) -> logsigmoid(-x)", "log1p(-sigmoid(x)) -> logsigmoid(-x)"),
          lower=lower_logsigmoid),
    # relu(x) = max(0, x); relu'(0) = 0 (the kink table), where maximum's tie rule gives 1/2.
    _gate("relu", "Max(0, a)", lambda a: np.maximum(0.0, a), ("heaviside(y, 0)",),
          stable="maximum(a, 0)", patterns=("maximum(0, x)", "(x + abs(x)) / 2",
                                            "0.5 * (x + abs(x))", "x / 2 + abs(x) / 2"),
          lower=lower_relu, kinks=("a",)),
]
# fmt: on

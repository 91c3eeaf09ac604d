"""Random expressions: symgrad's gradients against SymPy's own ``diff`` and central differences.

Hypothesis draws an expression tree (depth <= 6, every op of the text language) and a handful of
points. The same tree is written three ways, each built independently of symgrad's internals:

- the text symgrad compiles;
- a SymPy expression made from ``sympy`` functions directly (not symgrad's ``to_sympy``), whose
  ``sympy.diff`` is evaluated at 30 significant digits: the exact reference;
- a NumPy evaluator, used for the value and for central finite differences.

Points where the function is not smooth or not finite (near a kink of abs/sign/relu/max/min/
heaviside, a pole, outside log/sqrt/pow's domain, overflowing) are excluded per point; the kernel
still runs on them, and must not raise there. One kernel serves all of an expression's points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import sympy as sp
from hypothesis import HealthCheck, assume, example, given, reject, settings
from hypothesis import strategies as st

import compiler
from compiler.ir.registry import FUNCTIONS

VARS = ("x", "y", "z")
SYMBOLS = {v: sp.Symbol(v, real=True) for v in VARS}
N_POINTS = 6
MAX_DEPTH = 6
MARGIN = 1e-2  # minimum distance from a kink, pole or domain edge
BIG = 1e6  # intermediate values larger than this are excluded (overflow, cancellation)
RTOL_ORACLE = 1e-7
RTOL_FD = 1e-5

# Constants are dyadic (or pi), so text, SymPy and NumPy read the very same float64.
CONSTANTS = [
    ("2", sp.Integer(2), 2.0),
    ("0.5", sp.Rational(1, 2), 0.5),
    ("3", sp.Integer(3), 3.0),
    ("1.5", sp.Rational(3, 2), 1.5),
    ("0.25", sp.Rational(1, 4), 0.25),
    ("(-1)", sp.Integer(-1), -1.0),
    ("(-0.75)", sp.Rational(-3, 4), -0.75),
    ("pi", sp.pi, math.pi),
]
INT_EXPONENTS = [2, 3, -1, -2, 4]


def _far(v, edge=0.0):
    return np.abs(v - edge) > MARGIN


def _real(*args) -> bool:
    return all(a.is_extended_real for a in args)


# SymPy's own Abs, sign, Max and Min serve where SymPy knows the operands are real. Otherwise (say
# abs(x**x), real only for x > 0) SymPy leaves their derivatives unevaluated, and a Piecewise gets
# folded into branches that evaluate outside the domain; there these real-line functions stand in:
# each states its local derivative (``fdiff``), SymPy's ``diff`` applies the chain rule.
def _decided(a) -> bool:
    return a.is_number and a.is_comparable


class _Step(sp.Function):
    """H(a): 0 below zero, 1 above (the derivative of max/min/relu away from their kinks)."""

    @classmethod
    def eval(cls, a):
        if _decided(a):
            return sp.Integer(1) if a > 0 else sp.Integer(0) if a < 0 else sp.Rational(1, 2)

    def fdiff(self, argindex=1):
        return sp.Integer(0)


class _IsZero(sp.Function):
    @classmethod
    def eval(cls, a):
        if _decided(a):
            return sp.Integer(1) if a == 0 else sp.Integer(0)

    def fdiff(self, argindex=1):
        return sp.Integer(0)


class _Sign(sp.Function):
    @classmethod
    def eval(cls, a):
        if _decided(a):
            return sp.sign(a)

    def fdiff(self, argindex=1):
        return sp.Integer(0)


class _Abs(sp.Function):
    @classmethod
    def eval(cls, a):
        if _decided(a):
            return sp.Abs(a)

    def fdiff(self, argindex=1):
        return _Sign(self.args[0])


class _Max(sp.Function):
    @classmethod
    def eval(cls, a, b):
        if _decided(a) and _decided(b):
            return sp.Max(a, b)

    def fdiff(self, argindex=1):
        a, b = self.args
        return _Step(a - b) if argindex == 1 else _Step(b - a)


class _Min(sp.Function):
    @classmethod
    def eval(cls, a, b):
        if _decided(a) and _decided(b):
            return sp.Min(a, b)

    def fdiff(self, argindex=1):
        a, b = self.args
        return _Step(b - a) if argindex == 1 else _Step(a - b)


class _Heaviside(sp.Function):
    """np.heaviside(a, h); SymPy's Heaviside cannot be differentiated in h."""

    @classmethod
    def eval(cls, a, h):
        if _decided(a):
            return sp.Integer(1) if a > 0 else sp.Integer(0) if a < 0 else h

    def fdiff(self, argindex=1):
        return sp.Integer(0) if argindex == 1 else _IsZero(self.args[0])


def _sympy_abs(a):
    return sp.Abs(a) if _real(a) else _Abs(a)


def _sympy_sign(a):
    return sp.sign(a) if _real(a) else _Sign(a)


def _sympy_relu(a):
    return sp.Max(0, a) if _real(a) else _Max(0, a)


def _sympy_max(a, b):
    return sp.Max(a, b) if _real(a, b) else _Max(a, b)


def _sympy_min(a, b):
    return sp.Min(a, b) if _real(a, b) else _Min(a, b)


def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


def _special(name, *args):
    import scipy.special

    return getattr(scipy.special, name)(*args)


def _xlogy(a, b):
    return a * np.log(b)


# name: (text template, SymPy builder, NumPy function, which points are smooth and in the domain)
UNARY = {
    "neg": ("(-{a})", lambda a: -a, np.negative, None),
    "exp": ("exp({a})", sp.exp, np.exp, None),
    "log": ("log({a})", sp.log, np.log, lambda a: a > MARGIN),
    "log1p": ("log1p({a})", lambda a: sp.log(1 + a), np.log1p, lambda a: a > -1 + MARGIN),
    "expm1": ("expm1({a})", lambda a: sp.exp(a) - 1, np.expm1, None),
    "sqrt": ("sqrt({a})", sp.sqrt, np.sqrt, lambda a: a > MARGIN),
    "sin": ("sin({a})", sp.sin, np.sin, None),
    "cos": ("cos({a})", sp.cos, np.cos, None),
    "tan": ("tan({a})", sp.tan, np.tan, lambda a: np.abs(np.cos(a)) > 0.05),
    "tanh": ("tanh({a})", sp.tanh, np.tanh, None),
    "abs": ("abs({a})", _sympy_abs, np.abs, _far),
    "sign": ("sign({a})", _sympy_sign, np.sign, _far),
    "sigmoid": ("sigmoid({a})", lambda a: 1 / (1 + sp.exp(-a)), _sigmoid, None),
    "softplus": (
        "softplus({a})",
        lambda a: sp.log(1 + sp.exp(a)),
        lambda a: np.logaddexp(0.0, a),
        None,
    ),
    "logsigmoid": (
        "logsigmoid({a})",
        lambda a: -sp.log(1 + sp.exp(-a)),
        lambda a: -np.logaddexp(0.0, -a),
        None,
    ),
    "relu": ("relu({a})", _sympy_relu, lambda a: np.maximum(0.0, a), _far),
    # the new numeric ops (compiler/ir/ops/{special,hyperbolic,inverse_trig,powers}.py)
    "erf": ("erf({a})", sp.erf, lambda a: _special("erf", a), None),
    "erfc": ("erfc({a})", sp.erfc, lambda a: _special("erfc", a), None),
    "lgamma": ("lgamma({a})", sp.loggamma, lambda a: _special("gammaln", a), lambda a: a > MARGIN),
    "digamma": ("digamma({a})", lambda a: sp.polygamma(0, a), lambda a: _special("psi", a),
                lambda a: a > MARGIN),
    "polygamma": ("polygamma(1, {a})", lambda a: sp.polygamma(1, a),
                  lambda a: _special("polygamma", 1, a), lambda a: a > MARGIN),
    "sinh": ("sinh({a})", sp.sinh, np.sinh, None),
    "cosh": ("cosh({a})", sp.cosh, np.cosh, None),
    "asinh": ("asinh({a})", sp.asinh, np.arcsinh, None),
    "acosh": ("acosh({a})", sp.acosh, np.arccosh, lambda a: a > 1 + MARGIN),
    "atanh": ("atanh({a})", sp.atanh, np.arctanh, lambda a: np.abs(a) < 1 - MARGIN),
    "atan": ("atan({a})", sp.atan, np.arctan, None),
    "asin": ("asin({a})", sp.asin, np.arcsin, lambda a: np.abs(a) < 1 - MARGIN),
    "acos": ("acos({a})", sp.acos, np.arccos, lambda a: np.abs(a) < 1 - MARGIN),
    "log2": ("log2({a})", lambda a: sp.log(a, 2), np.log2, lambda a: a > MARGIN),
    "log10": ("log10({a})", lambda a: sp.log(a, 10), np.log10, lambda a: a > MARGIN),
    "exp2": ("exp2({a})", lambda a: 2**a, np.exp2, None),
    "cbrt": ("cbrt({a})", lambda a: a / _sympy_abs(a) ** sp.Rational(2, 3), np.cbrt, _far),
    "square": ("square({a})", lambda a: a**2, np.square, None),
    "reciprocal": ("reciprocal({a})", lambda a: 1 / a, lambda a: 1 / a, _far),
    "log1mexp": ("log1mexp({a})", lambda a: sp.log(1 - sp.exp(a)),
                 lambda a: np.log(-np.expm1(a)), lambda a: a < -MARGIN),
}  # fmt: skip
BINARY = {
    "add": ("({a} + {b})", lambda a, b: a + b, np.add, None),
    "sub": ("({a} - {b})", lambda a, b: a - b, np.subtract, None),
    "mul": ("({a} * {b})", lambda a, b: a * b, np.multiply, None),
    "div": ("({a} / {b})", lambda a, b: a / b, np.divide, lambda a, b: _far(b)),
    "**": ("({a} ** {b})", lambda a, b: a**b, np.power, lambda a, b: a > MARGIN),
    "pow": ("pow({a}, {b})", lambda a, b: a**b, np.power, lambda a, b: a > MARGIN),
    "maximum": ("maximum({a}, {b})", _sympy_max, np.maximum, lambda a, b: _far(a, b)),
    "minimum": ("minimum({a}, {b})", _sympy_min, np.minimum, lambda a, b: _far(a, b)),
    "heaviside": ("heaviside({a}, {b})", _Heaviside, np.heaviside, lambda a, b: _far(a)),
    "xlogy": ("xlogy({a}, {b})", lambda a, b: a * sp.log(b), _xlogy, lambda a, b: b > MARGIN),
    # atan2 jumps on the negative b axis; hypot has a kink at the origin
    "atan2": ("atan2({a}, {b})", sp.atan2, np.arctan2, lambda a, b: _far(a) | (b > MARGIN)),
    "hypot": ("hypot({a}, {b})", lambda a, b: sp.sqrt(a**2 + b**2), np.hypot,
              lambda a, b: np.hypot(a, b) > MARGIN),
    "logaddexp": ("logaddexp({a}, {b})", lambda a, b: sp.log(sp.exp(a) + sp.exp(b)),
                  np.logaddexp, None),
    "xlog1py": ("xlog1py({a}, {b})", lambda a, b: a * sp.log(1 + b), lambda a, b: a * np.log1p(b),
                lambda a, b: b > -1 + MARGIN),
}  # fmt: skip
# Piecewise-constant and selecting ops, whose derivative SymPy leaves unevaluated at the jumps:
# tests/test_where.py checks them on every tier against NumPy and exact difference quotients.
ELSEWHERE = {"floor", "ceil", "round", "trunc", "clip", "where"}
# Operands that must be positive can be guarded, so that most points stay in the domain.
POSITIVE_OPERAND = {"log": 0, "sqrt": 0, "**": 0, "pow": 0, "xlogy": 1, "div": 1}
GUARDS = ["none", "square", "abs", "exp"]


@dataclass(frozen=True)
class Expr:
    text: str
    sym: sp.Expr
    ev: object  # env -> (values, ok mask)
    ops: frozenset = field(default=frozenset())
    depth: int = 0


def _apply(name, fn, cond, args: list[Expr], text: str, build) -> Expr:
    """A node: ``build()`` makes its SymPy expression; ``fn``/``cond`` its NumPy value/domain."""
    try:
        sym = build()
    except (TypeError, ValueError):  # SymPy refuses e.g. Max(nan, 1) of a constant subtree
        reject()
    if not sym.free_symbols and not (sym.is_real and sym.is_finite):
        reject()  # a constant subtree outside the reals (log(-1) = I*pi) or infinite

    def ev(env, args=args):
        vals, oks = zip(*(a.ev(env) for a in args))
        with np.errstate(all="ignore"):
            v = fn(*vals)
            ok = np.logical_and.reduce(oks) & np.isfinite(v) & (np.abs(v) < BIG)
            if cond is not None:
                ok &= cond(*vals)
        return v, ok

    ops = frozenset().union(*(a.ops for a in args)) | {name}
    return Expr(text, sym, ev, ops, 1 + max(a.depth for a in args))


def leaf_var(name: str) -> Expr:
    return Expr(name, SYMBOLS[name], lambda env: (env[name], np.ones(env[name].shape, bool)))


def leaf_const(text, sym, value) -> Expr:
    return Expr(
        text, sym, lambda env: (np.full(env["x"].shape, value), np.ones(env["x"].shape, bool))
    )


def unary(name: str, a: Expr) -> Expr:
    template, sym, fn, cond = UNARY[name]
    return _apply(name, fn, cond, [a], template.format(a=a.text), lambda: sym(a.sym))


def binary(name: str, a: Expr, b: Expr) -> Expr:
    template, sym, fn, cond = BINARY[name]
    return _apply(
        name, fn, cond, [a, b], template.format(a=a.text, b=b.text), lambda: sym(a.sym, b.sym)
    )


def int_power(a: Expr, n: int, spelling: str) -> Expr:
    """a ** n for a constant integer n: defined for negative bases too (not for 0 if n < 0)."""
    lit = f"({n})" if n < 0 else str(n)
    text = f"({a.text} ** {lit})" if spelling == "**" else f"pow({a.text}, {lit})"
    cond = (lambda v: _far(v)) if n < 0 else None
    return _apply(spelling, lambda v: v**n, cond, [a], text, lambda: a.sym ** sp.Integer(n))


def guard(kind: str, a: Expr) -> Expr:
    """A positive expression built from ``a`` (its ops count towards the depth)."""
    if kind == "square":  # a*a + 0.5
        sq = binary("mul", a, a)
        return binary("add", sq, leaf_const("0.5", sp.Rational(1, 2), 0.5))
    if kind == "abs":  # abs(a) + 0.5
        return binary("add", unary("abs", a), leaf_const("0.5", sp.Rational(1, 2), 0.5))
    return unary("exp", a)


GUARD_DEPTH = {"none": 0, "square": 2, "abs": 2, "exp": 1}


@st.composite
def expressions(draw, depth: int = MAX_DEPTH) -> Expr:
    """A tree of depth <= ``depth``; the root (depth == MAX_DEPTH) is always an op."""
    if depth == 0:
        kind = draw(st.sampled_from(["var", "const"]))
    else:  # about 1 in 4 leaves below the root, then unary and binary ops
        roll = draw(st.integers(0 if depth < MAX_DEPTH else 3, 11))
        kind = (
            ("var", "var", "const", "unary", "unary", "unary", "unary")[roll]
            if roll < 7
            else "binary"
        )
    if kind == "var":
        return leaf_var(draw(st.sampled_from(VARS)))
    if kind == "const":
        return leaf_const(*draw(st.sampled_from(CONSTANTS)))
    if kind == "unary":
        name = draw(st.sampled_from(sorted(UNARY)))
        return unary(name, draw(_operand(name, 0, depth - 1)))
    name = draw(st.sampled_from(sorted(BINARY)))
    if name in ("**", "pow") and draw(st.booleans()):
        base = draw(expressions(depth - 1))
        return int_power(base, draw(st.sampled_from(INT_EXPONENTS)), name)
    a = draw(_operand(name, 0, depth - 1))
    b = draw(_operand(name, 1, depth - 1))
    if name in ("**", "pow"):  # keep general exponents small: a constant or a bounded tanh
        b = b if draw(st.booleans()) else unary("tanh", b) if b.depth < depth - 1 else b
    return binary(name, a, b)


@st.composite
def _operand(draw, op: str, position: int, depth: int) -> Expr:
    if POSITIVE_OPERAND.get(op) != position:
        return draw(expressions(depth))
    usable = [g for g in GUARDS if GUARD_DEPTH[g] <= depth]
    g = draw(st.sampled_from(usable))
    inner = draw(expressions(depth - GUARD_DEPTH[g]))
    return inner if g == "none" else guard(g, inner)


points = st.lists(
    st.floats(-2.5, 2.5, allow_nan=False, allow_infinity=False),
    min_size=len(VARS) * N_POINTS,
    max_size=len(VARS) * N_POINTS,
).map(lambda xs: {v: np.array(xs[k::3], dtype=float) for k, v in enumerate(VARS)})


def exact(expr: sp.Expr, point: dict[str, float]) -> float | None:
    """``expr`` at ``point``, computed by SymPy at 30 significant digits; None where mpmath
    itself overflows (SymPy's form of a derivative can hold a power the function's own
    intermediates, all checked below BIG, do not: then there is no exact reference here)."""
    subs = {SYMBOLS[v]: sp.Float(point[v], 30) for v in VARS}
    try:
        value = expr.xreplace(subs).evalf(30)
        if value.has(sp.DiracDelta):  # DiracDelta at a non-zero argument is 0
            value = value.replace(sp.DiracDelta, lambda *args: sp.Integer(0)).evalf(30)
        assert value.is_number and value.is_real, (str(expr), point, str(value))
        return float(value)
    except OverflowError:
        return None


def central_difference(e: Expr, env: dict, var: str, j: int) -> tuple[float, float] | None:
    """d e / d var at point j by central differences of the NumPy evaluator, Richardson-
    extrapolated from steps h and h/2, with an estimate of its own error (None off the domain,
    and None where the two steps disagree by more than a percent: there the function turns
    faster than the step, as cos(exp(exp(x))) at x = 2.5 does, and differences say nothing).
    """
    h = 1e-5 * max(1.0, abs(env[var][j]))
    steps = np.array([h, -h, h / 2, -h / 2])
    shifted = {v: np.full(4, env[v][j]) for v in VARS}
    shifted[var] = shifted[var] + steps
    f, ok = e.ev(shifted)
    if not ok.all():
        return None
    d1 = (f[0] - f[1]) / (2 * h)
    d2 = (f[2] - f[3]) / h
    if abs(d2 - d1) > 1e-2 * _scale(d1, d2, f[0]):
        return None
    return float((4 * d2 - d1) / 3), float(abs(d2 - d1))


def _scale(*xs: float) -> float:
    return max(1.0, *(abs(x) for x in xs))


def _explicit_examples() -> list[Expr]:
    """Hand-made trees that use every op between them, run before the random ones."""
    x, y, z = (leaf_var(v) for v in VARS)
    half = leaf_const("0.5", sp.Rational(1, 2), 0.5)
    u, b = unary, binary
    return [
        b(
            "add",
            u("log", guard("square", x)),
            b("mul", u("expm1", u("tanh", y)), u("sqrt", guard("exp", z))),
        ),
        b(
            "sub",
            b("div", u("sin", x), guard("abs", u("cos", y))),
            b("add", u("tan", z), u("neg", u("sigmoid", u("log1p", guard("exp", x))))),
        ),
        b(
            "add",
            b("mul", b("maximum", x, y), b("minimum", y, z)),
            b("add", u("relu", b("sub", x, z)), b("mul", u("sign", y), b("heaviside", z, half))),
        ),
        b(
            "add",
            b("pow", guard("square", x), u("tanh", y)),
            b(
                "add",
                int_power(b("sub", x, y), 3, "**"),
                b("add", b("xlogy", z, u("exp", y)), b("**", guard("abs", z), half)),
            ),
        ),
        int_power(b("add", b("mul", x, y), half), -2, "pow"),
    ]


EXPLICIT = _explicit_examples()
EXPLICIT_POINTS = {
    v: np.array(row) for v, row in zip(VARS, np.random.default_rng(7).uniform(-2, 2, (3, 6)))
}


SEEN: set[str] = set()
CHECKED = {"examples": 0, "points": 0}


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
@given(e=expressions(), env=points)
@example(e=EXPLICIT[0], env=EXPLICIT_POINTS)
@example(e=EXPLICIT[1], env=EXPLICIT_POINTS)
@example(e=EXPLICIT[2], env=EXPLICIT_POINTS)
@example(e=EXPLICIT[3], env=EXPLICIT_POINTS)
@example(e=EXPLICIT[4], env=EXPLICIT_POINTS)
def test_gradients_agree_with_sympy_and_finite_differences(e: Expr, env):
    assert e.depth <= MAX_DEPTH
    value_np, ok = e.ev(env)
    assume(ok.any())

    k = compiler.compile_gradient(e.text, inputs=VARS)
    value, grads = k.value_and_grad(**env)  # every point, smooth or not: nothing may raise
    assert value.shape == (N_POINTS,)
    assert all(grads[v].shape == (N_POINTS,) for v in VARS)

    derivatives = {v: sp.diff(e.sym, SYMBOLS[v]) for v in VARS}
    for j in np.flatnonzero(ok):
        point = {v: float(env[v][j]) for v in VARS}
        f_exact = exact(e.sym, point)
        if f_exact is None:
            continue
        scale_f = _scale(f_exact)
        assert abs(value[j] - f_exact) <= RTOL_ORACLE * scale_f, (e.text, point, value[j], f_exact)
        assert abs(value[j] - value_np[j]) <= RTOL_ORACLE * scale_f, (e.text, point)
        for v in VARS:
            g = float(grads[v][j])
            g_exact = exact(derivatives[v], point)
            assert math.isfinite(g), (e.text, point, v, g, g_exact)
            if g_exact is not None:
                tol = RTOL_ORACLE * _scale(g_exact, f_exact)
                assert abs(g - g_exact) <= tol, (e.text, point, v, g, g_exact)
            fd = central_difference(e, env, v, j)
            if fd is not None:
                numeric, error = fd
                tol = RTOL_FD * _scale(g, f_exact) + error
                assert abs(g - numeric) <= tol, (e.text, point, v, g, numeric, error)
        CHECKED["points"] += 1
    CHECKED["examples"] += 1
    SEEN.update(e.ops)


def test_the_generator_covers_the_whole_text_language():
    """Every function of the text language and every operator is in the generator's table."""
    functions = set(UNARY) | set(BINARY) | ELSEWHERE
    assert set(FUNCTIONS) <= functions, set(FUNCTIONS) - functions
    assert {"add", "sub", "mul", "div", "**", "neg"} <= functions


def test_the_oracle_run_used_every_op():
    """Runs after the property test (file order): its checked examples used every op."""
    if not CHECKED["examples"]:  # run alone (-k): run the property test first
        test_gradients_agree_with_sympy_and_finite_differences()
    assert CHECKED["examples"] >= 200
    expected = set(UNARY) | set(BINARY)
    assert expected <= SEEN, expected - SEEN

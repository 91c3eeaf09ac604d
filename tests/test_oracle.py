"""Random expressions over the whole op table: symgrad's values and gradients against oracles that
owe nothing to symgrad's code, on every tier, in float64 and float32.

The generator reads the op table (``compiler.ir.registry.OPS``) when it draws, so an op registered
tomorrow is drawn with no edit here. What it needs of an op is in the op's entry: its arity, its
text template (``OpDef.text``), its exact SymPy definition, its NumPy/SciPy oracle (``numpy``), and
where it is defined and smooth (``domain``, ``kinks``, ``truth``: ``compiler/ir/opdef.py``).
``test_every_op_states_what_the_generator_needs`` checks each entry has them.

An expression is a tree of op nodes over ``x``, ``y``, ``z`` and dyadic constants (and pi). Its
oracles:

- **value**: the ops' NumPy/SciPy oracles composed along the tree, ``sympy.lambdify`` of the tree's
  exact SymPy form (each op's definition with its operands substituted), and mpmath at 30 digits;
- **gradient**: ``sympy.diff`` of each op's exact definition, composed by the chain rule and
  evaluated by mpmath at 30 digits (differentiating the whole tree at once swells it, and SymPy
  leaves ``Abs``/``Max``/``sign`` of subexpressions it cannot prove real undifferentiated), and
  Richardson-extrapolated central differences of the composed NumPy oracles in float64.

Points near a kink, a pole or a domain's edge (``MARGIN``), or where an intermediate is not finite
or exceeds ``BIG``, are excluded per point; the kernel still runs on them, and must not raise.
Operands with a restricted domain are mostly drawn inside it: a constant there, or an expression
mapped into it (``lo + exp(e)``, ``lo + (hi - lo) * sigmoid(e)``), so that log, atanh, lgamma...
see points. Piecewise ops are checked off their kinks, where they are smooth.

Tiers (``runtime.policy``, patched as ``tests/test_where.py`` does): ``instant`` (the VM),
``numba`` (compiled, Numba's kernel: ``LLVM_OPS`` and ``LLVM_TRIG`` off), ``llvm`` (compiled, the
LLVM tier's O3 code: ``LLVM_OPS = -1``) and ``auto`` (a fresh cache: the first call answers from
LLVM's unoptimised code, then, the background compile waited for, from the final engine: both are
checked). ``test_every_op_on_every_tier`` runs a fixed sweep with every op of the table;
``test_random_expressions_on_every_tier`` runs hypothesis' trees.

float32 (``test_float32_*``): the same expressions with float32 inputs must give float32 values and
gradients, within a few hundred float32 ulps (times the scale) plus a bound on the error float32
rounding may cause, propagated along the tree from the exact local derivatives (first and second:
``float32_bound``); points where that bound says float32 cannot give the value to 1e-3 are skipped.
The reference is the exact value at the float32-rounded inputs.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import tempfile
from dataclasses import dataclass

import mpmath
import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import compiler
from compiler.ir import registry
from runtime import cache, policy

VARS = ("x", "y", "z")
SYMBOLS = {v: sp.Symbol(v, real=True) for v in VARS}
PLACEHOLDERS = ("a", "b", "c")
N_POINTS = 6
MAX_DEPTH = 5
MARGIN = 1e-2  # minimum distance from a kink, pole or domain edge
BIG = 1e6  # intermediate values larger than this are excluded (overflow, cancellation)
RTOL_ORACLE = 1e-7
RTOL_FD = 1e-5
EPS32 = float(np.finfo(np.float32).eps)
RTOL32 = 300 * EPS32  # float32: a few hundred ulps of the scale ...
ACC32 = 8 * EPS32  # ... plus the propagated error of 8 ulps per op result (float32_bound)
ILL32 = 1e-3  # float32 points whose propagated error bound exceeds this (relative) are skipped
mpmath.mp.dps = 30

# Constants are dyadic (or pi), so text, SymPy and NumPy read the very same float64 (and float32).
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
NATURALS = [("0", sp.Integer(0), 0.0), ("1", sp.Integer(1), 1.0), ("2", sp.Integer(2), 2.0)]
# The ops the generator maps an operand into an interval with (lo + exp(e), hi - exp(e),
# lo + (hi - lo) * sigmoid(e)); whatever else the table holds is drawn from it.
GUARD_OPS = ("add", "sub", "mul", "exp", "sigmoid")


# ------------------------------------------------------------------ what the table says of an op
def ops() -> list[str]:
    """Every op of the table, now (an op registered at run time included). Gates a user
    registers or fusion discovers are compositions of these ops, defined by their stable form
    (tests/test_gates.py checks them); earlier tests may leave some in the table."""
    return sorted(name for name, spec in registry.OPS.items() if spec.origin == "builtin")


def domain(name: str) -> tuple[str, ...]:
    """Per operand: "", "(lo, hi)", "natural" or "truth" (``OpDef.domain``; () is all "")."""
    spec = registry.OPS[name]
    return spec.domain or ("",) * spec.arity


def interval(kind: str) -> tuple[float, float] | None:
    """ "(lo, hi)" as floats; None for "" and the other kinds."""
    if not kind.startswith("("):
        return None
    lo, hi = (float(t) for t in kind.strip("()").split(","))
    return lo, hi


def kink_functions(name: str):
    """The entry's ``kinks`` as NumPy functions of the operands."""
    spec = registry.OPS[name]
    names = {k: v for k, v in vars(np).items() if not k.startswith("_")}
    return [_numpy_function(text, spec.arity, names) for text in spec.kinks]


@functools.cache
def _compiled(text: str):
    return compile(text, f"<kink {text}>", "eval")


def _numpy_function(text: str, arity: int, names: dict):
    code = _compiled(text)
    return lambda *args: eval(code, names, dict(zip(PLACEHOLDERS, args)))  # noqa: S307


def smooth_here(name: str, args) -> np.ndarray:
    """Where ``name``'s operands ``args`` (arrays) are in its domain, off its edges and kinks."""
    ok = np.ones(np.shape(args[0]), bool)
    with np.errstate(all="ignore"):
        for kind, v in zip(domain(name), args):
            bounds = interval(kind)
            if bounds is not None:
                lo, hi = bounds
                ok &= (v > lo + MARGIN) & (v < hi - MARGIN)
        for kink in kink_functions(name):
            ok &= np.abs(kink(*args)) > MARGIN
    return ok


# ------------------------------------------------------------------ the exact local forms
@functools.cache
def definition(name: str) -> tuple[sp.Expr, tuple[sp.Symbol, ...]]:
    """The op's exact SymPy definition over real placeholders a, b, c, and those placeholders."""
    places = tuple(sp.Symbol(p, real=True) for p in PLACEHOLDERS[: registry.OPS[name].arity])
    expr = registry.sympy_definition(name)
    by_name = {s.name: s for s in places}
    return expr.xreplace({s: by_name[s.name] for s in expr.free_symbols}), places


def _mpmath(expr: sp.Expr, places, name: str, order: tuple[int, ...]):
    """``expr`` as an mpmath function; where SymPy's derivative stays unevaluated (floor's,
    Heaviside's in its second operand) or lambdify cannot print it, mpmath differentiates the
    definition numerically at 30 digits instead (off the kinks: exact to those digits)."""
    expr = expr.replace(sp.DiracDelta, lambda *args: sp.Integer(0))  # zero off the kinks
    if not expr.has(sp.Derivative, sp.Subs):
        with contextlib.suppress(Exception):
            return sp.lambdify(places, expr, modules=["mpmath"])

    def numeric(*args):
        return mpmath.diff(mp_value(name), args, order)

    return numeric


@functools.cache
def mp_value(name: str):
    expr, places = definition(name)
    return sp.lambdify(places, expr, modules=["mpmath"])


@functools.cache
def local(name: str):
    """mpmath functions of the op at 30 digits: its value and its first partials [i], from
    ``sympy.diff`` of its exact definition (``second``: its second partials [i][j])."""
    expr, places = definition(name)
    n = len(places)
    value = mp_value(name)
    unit = [tuple(int(i == k) for k in range(n)) for i in range(n)]
    first = [_mpmath(sp.diff(expr, s), places, name, unit[i]) for i, s in enumerate(places)]
    return value, first, n


@functools.cache
def second(name: str):
    expr, places = definition(name)
    n = len(places)
    return [
        [
            _mpmath(sp.diff(expr, s, t), places, name, tuple((i == k) + (j == k) for k in range(n)))
            for j, t in enumerate(places)
        ]
        for i, s in enumerate(places)
    ]


# ------------------------------------------------------------------ expressions
@dataclass(frozen=True)
class Expr:
    """A tree: an op over ``args``, or a leaf (``var`` a variable's name, else ``value``)."""

    text: str
    sym: sp.Expr | None  # a leaf's SymPy value
    op: str | None = None
    args: tuple = ()
    var: str | None = None
    value: float = 0.0
    depth: int = 0

    def ops(self) -> set[str]:
        return ({self.op} if self.op else set()).union(*(a.ops() for a in self.args))

    def nodes(self) -> int:
        return 1 + sum(a.nodes() for a in self.args)


def var(name: str) -> Expr:
    return Expr(name, SYMBOLS[name], var=name)


def const(text: str, sym: sp.Expr, value: float) -> Expr:
    return Expr(text, sym, value=value)


def constant(value: float) -> Expr:
    """A small integer or dyadic constant (an interval's end)."""
    sym = sp.Rational(value)
    text = repr(float(value)) if value >= 0 else f"({value!r})"
    return const(text, sym, float(value))


def node(name: str, *args: Expr) -> Expr:
    """The op applied to ``args``: its text by its template, its SymPy by its definition."""
    spec = registry.OPS[name]
    assert len(args) == spec.arity, name
    text = "(" + spec.text.format(**{p: a.text for p, a in zip(PLACEHOLDERS, args)}) + ")"
    return Expr(text, None, name, args, depth=1 + max(a.depth for a in args))


def into(kind: str, e: Expr) -> Expr:
    """``e`` mapped into the interval ``kind`` by the table's own ops (values of e stay e's)."""
    lo, hi = interval(kind)
    if math.isinf(hi) and math.isinf(lo):
        return e
    if math.isinf(hi):
        grown = node("exp", e)
        return grown if lo == 0 else node("add", constant(lo), grown)
    if math.isinf(lo):
        return node("sub", constant(hi), node("exp", e))
    scaled = node("mul", constant(hi - lo), node("sigmoid", e))
    return scaled if lo == 0 else node("add", constant(lo), scaled)


# ------------------------------------------------------------------ the generator
def _leaf(draw) -> Expr:
    if draw(st.integers(0, 3)):
        return var(draw(st.sampled_from(VARS)))
    return const(*draw(st.sampled_from(CONSTANTS)))


@st.composite
def expressions(draw, depth: int = MAX_DEPTH) -> Expr:
    """A tree of at most ``depth`` levels of drawn ops (guards add a level or two); the root
    (depth == MAX_DEPTH) is always an op, leaves get likelier further down."""
    if depth == 0 or (depth < MAX_DEPTH and draw(st.integers(0, depth + 1)) == 0):
        return _leaf(draw)
    name = draw(st.sampled_from(ops()))
    return node(name, *(draw(operand(kind, depth - 1)) for kind in domain(name)))


@st.composite
def operand(draw, kind: str, depth: int) -> Expr:
    """An operand of the ``kind`` its op's entry asks for."""
    if kind == "natural":
        return const(*draw(st.sampled_from(NATURALS)))
    if kind == "truth":  # an op whose values are truth values (comparisons, logic)
        truths = [n for n in ops() if registry.OPS[n].truth]
        if depth < 2:  # no deeper chains of logic: comparisons of real operands
            truths = [n for n in truths if "truth" not in domain(n)] or truths
        name = draw(st.sampled_from(truths))
        inner = max(depth - 1, 0)
        return node(name, *(draw(operand(k, inner)) for k in domain(name)))
    if not kind:
        return draw(expressions(depth))
    lo, hi = interval(kind)
    inside = [c for c in CONSTANTS if lo + MARGIN < c[2] < hi - MARGIN]
    how = draw(st.sampled_from(["free", "map", "map"] + (["const"] if inside else [])))
    if how == "const":
        return const(*draw(st.sampled_from(inside)))
    e = draw(expressions(max(depth - 1, 0)))
    return e if how == "free" else into(kind, e)


points = st.lists(
    st.floats(-2.5, 2.5, allow_nan=False, allow_infinity=False),
    min_size=len(VARS) * N_POINTS,
    max_size=len(VARS) * N_POINTS,
).map(lambda xs: {v: np.array(xs[k::3], dtype=float) for k, v in enumerate(VARS)})


def sweep(terms: int = 12) -> list[Expr]:
    """Every op of the table, each applied to operands of the kinds it asks for (variables,
    mapped into intervals; a comparison for a truth operand), summed ``terms`` at a time."""
    names = ops()
    truth = next(n for n in names if registry.OPS[n].truth and set(domain(n)) == {""})
    arity = registry.OPS[truth].arity
    made = []
    for k, name in enumerate(names):
        args = []
        for i, kind in enumerate(domain(name)):
            v = var(VARS[(k + i) % 3])
            if kind == "natural":
                args.append(const(*NATURALS[1]))
            elif kind == "truth":
                args.append(node(truth, *(var(VARS[(k + i + j) % 3]) for j in range(arity))))
            else:
                args.append(into(kind, v) if kind else v)
        made.append(node(name, *args))
    chunks = [made[i : i + terms] for i in range(0, len(made), terms)]
    return [functools.reduce(lambda s, t: node("add", s, t), chunk) for chunk in chunks]


SWEEP_POINTS = {
    v: np.round(row, 3) + 1 / 1024
    for v, row in zip(VARS, np.random.default_rng(7).uniform(-2, 2, (3, 16)))
}


# ------------------------------------------------------------------ the oracles
def numpy_value(e: Expr, env: dict) -> tuple[np.ndarray, np.ndarray]:
    """The ops' NumPy/SciPy oracles composed along the tree, and where every node is smooth,
    finite and below ``BIG`` (float64 throughout)."""
    n = len(env["x"])
    if e.op is None:
        v = env[e.var] if e.var else np.full(n, e.value)
        return np.asarray(v, dtype=np.float64), np.ones(n, bool)
    vals, oks = zip(*(numpy_value(a, env) for a in e.args))
    with np.errstate(all="ignore"):
        v = np.asarray(registry.OPS[e.op].numpy(*vals), dtype=np.float64) * np.ones(n)
        ok = np.logical_and.reduce(oks) & np.isfinite(v) & (np.abs(v) < BIG)
        ok &= smooth_here(e.op, vals)
    return v, ok


@functools.cache
def sympy_numpy(name: str):
    """``sympy.lambdify`` of the op's exact definition (NumPy and SciPy)."""
    expr, places = definition(name)
    return sp.lambdify(places, expr, modules=["numpy", "scipy"])


def sympy_value(e: Expr, env: dict) -> np.ndarray:
    """The tree's exact SymPy form, lambdified: each op's, composed along the tree (SymPy's
    substituting subtrees into Piecewise simplifies them, for seconds to minutes)."""
    n = len(env["x"])
    if e.op is None:
        return np.asarray(env[e.var] if e.var else np.full(n, e.value), dtype=np.float64)
    args = [sympy_value(a, env) for a in e.args]
    with np.errstate(all="ignore"):
        return np.asarray(sympy_numpy(e.op)(*args), dtype=np.float64) * np.ones(n)


@dataclass
class Exact:
    """The tree at one point, at 30 digits: value, gradient, and (float32) the error bounds."""

    value: mpmath.mpf
    grad: dict
    bound: float = 0.0  # of the value
    grad_bound: dict | None = None  # of each partial


def exact(e: Expr, point: dict, bounds: bool = False) -> Exact:
    """Forward mode along the tree with each op's exact local derivatives (``local``). With
    ``bounds``, also how far float32 rounding may move the value and the gradient
    (``float32_bound``)."""
    if e.op is None:
        if e.var:
            return Exact(mpmath.mpf(point[e.var]), {v: int(v == e.var) for v in VARS}, 0.0, {})
        value = mpmath.pi if e.sym == sp.pi else mpmath.mpf(e.value)
        rounding = 0.0 if float(np.float32(e.value)) == e.value else EPS32 * abs(e.value)
        return Exact(value, dict.fromkeys(VARS, 0), rounding, {})
    args = [exact(a, point, bounds) for a in e.args]
    value_fn, first, _ = local(e.op)
    at = [a.value for a in args]
    value = value_fn(*at)
    partials = [first[i](*at) for i in range(len(at))]
    grad = {v: sum(p * a.grad[v] for p, a in zip(partials, args)) for v in VARS}
    out = Exact(value, grad)
    if bounds:
        float32_bound(e.op, at, partials, args, out)
    return out


def float32_bound(name: str, at, partials, args: list[Exact], out: Exact) -> None:
    """A first-order bound on float32's error: each op result carries ``ACC32`` relative error,
    its operands' errors go through its partials (for the value), and through its second
    partials into its partials (for the gradient): the running error analysis of forward mode."""
    hess = second(name)
    p = [abs(float(q)) for q in partials]
    e = [a.bound for a in args]
    out.bound = sum(pi * ei for pi, ei in zip(p, e)) + ACC32 * abs(float(out.value))
    dp = [
        sum(abs(float(hess[i][j](*at))) * e[j] for j in range(len(e))) + ACC32 * p[i]
        for i in range(len(p))
    ]
    out.grad_bound = {}
    for v in VARS:
        terms = [abs(float(q * a.grad[v])) for q, a in zip(partials, args)]
        out.grad_bound[v] = (
            sum(pi * (a.grad_bound or {}).get(v, 0.0) for pi, a in zip(p, args))
            + sum(abs(float(a.grad[v])) * dpi for a, dpi in zip(args, dp))
            + ACC32 * sum(terms)
        )


def central_difference(e: Expr, env: dict, var_: str, j: int) -> tuple[float, float] | None:
    """d e / d var at point j by central differences of the composed NumPy oracles, Richardson-
    extrapolated from steps h and h/2, with an estimate of its own error (None off the domain,
    and None where the two steps disagree by more than a percent: there the function turns
    faster than the step, as cos(exp(exp(x))) at x = 2.5 does, and differences say nothing)."""
    h = 1e-5 * max(1.0, abs(env[var_][j]))
    steps = np.array([h, -h, h / 2, -h / 2])
    shifted = {v: np.full(4, env[v][j]) for v in VARS}
    shifted[var_] = shifted[var_] + steps
    f, ok = numpy_value(e, shifted)
    if not ok.all():
        return None
    d1 = (f[0] - f[1]) / (2 * h)
    d2 = (f[2] - f[3]) / h
    if abs(d2 - d1) > 1e-2 * _scale(d1, d2, f[0]):
        return None
    return float((4 * d2 - d1) / 3), float(abs(d2 - d1))


def _scale(*xs: float) -> float:
    return max(1.0, *(abs(x) for x in xs))


# ------------------------------------------------------------------ tiers
TIERS = ("instant", "numba", "llvm", "auto")
ANSWERS = {"instant": "vm", "numba": "numba", "llvm": "llvm-O3", "auto": "llvm-O0"}


@contextlib.contextmanager
def on_tier(tier: str):
    """The policy patched so that a kernel compiled within answers from ``tier`` (auto: with
    a fresh cache, so that nothing is ready and its stand-in answers first)."""
    saved = (policy.LLVM_OPS, policy.LLVM_TRIG, os.environ.get("SYMGRAD_CACHE_DIR"), cache._loaded)
    with tempfile.TemporaryDirectory() as fresh:
        try:
            if tier == "numba":
                policy.LLVM_OPS, policy.LLVM_TRIG = 10**9, False
            elif tier == "llvm":
                policy.LLVM_OPS = -1
            elif tier == "auto":
                os.environ["SYMGRAD_CACHE_DIR"] = fresh
                cache._loaded = {}
            yield "compiled" if tier in ("numba", "llvm") else tier
        finally:
            policy.LLVM_OPS, policy.LLVM_TRIG, directory, cache._loaded = saved
            if directory is None:
                os.environ.pop("SYMGRAD_CACHE_DIR", None)
            else:
                os.environ["SYMGRAD_CACHE_DIR"] = directory


def run(e: Expr, env: dict, tier: str, dtype=np.float64) -> list[tuple[str, tuple]]:
    """The kernel of ``e`` on ``tier``, called at ``env`` in ``dtype``: [(engine, (value, grads))]
    — two answers in auto (its stand-in's, then the final engine's)."""
    args = {v: env[v].astype(dtype) for v in VARS}
    with on_tier(tier) as mode:
        k = compiler.compile_gradient(e.text, inputs=VARS, mode=mode)
        got = k.value_and_grad(**args)  # at every point: nothing may raise
        answers = [(k.tier, got)]
        assert answers[0][0] == ANSWERS[tier], (tier, answers[0][0], e.text)
        if tier == "auto":
            assert k.wait(timeout=600), e.text
            got = k.value_and_grad(**args)
            answers.append((k.tier, got))
            assert answers[1][0] in ("numba", "llvm-O3"), answers[1][0]
    return answers


# ------------------------------------------------------------------ the property
SEEN: dict[tuple[str, str], set] = {}
CHECKED: dict[tuple[str, str], int] = {}


def check(e: Expr, env: dict, tier: str) -> int:
    """float64: values and gradients of ``e`` on ``tier`` against every oracle; the number of
    points checked."""
    value_np, ok = numpy_value(e, env)
    if not ok.any():
        return 0
    value_sp = sympy_value(e, env)
    checked = 0
    for engine, (value, grads) in run(e, env, tier):
        assert value.dtype == np.float64 and value.shape == ok.shape, (engine, value.dtype)
        for j in np.flatnonzero(ok):
            point = {v: float(env[v][j]) for v in VARS}
            ref = exact(e, point)
            f = float(ref.value)
            where = (engine, e.text, point)
            tol = RTOL_ORACLE * _scale(f)
            assert abs(value[j] - f) <= tol, (*where, value[j], f)
            assert abs(value_np[j] - f) <= tol, (*where, "numpy oracle", value_np[j], f)
            if math.isfinite(value_sp[j]):  # lambdify's plain forms may overflow (lgamma's gamma)
                assert abs(value_sp[j] - f) <= tol, (*where, "sympy oracle", value_sp[j], f)
            for v in VARS:
                g, g_exact = float(grads[v][j]), float(ref.grad[v])
                assert math.isfinite(g), (*where, v, g, g_exact)
                assert abs(g - g_exact) <= RTOL_ORACLE * _scale(g_exact, f), (*where, v, g, g_exact)
                fd = central_difference(e, env, v, j)
                if fd is not None:
                    numeric, error = fd
                    tol = RTOL_FD * _scale(g, f) + error
                    assert abs(g - numeric) <= tol, (*where, v, g, numeric, error)
            checked += 1
    return checked


def check32(e: Expr, env: dict, tier: str) -> int:
    """float32: the same expression, float32 inputs; float32 values and gradients within the
    float32 tolerance of the exact ones at the float32-rounded inputs."""
    rounded = {v: env[v].astype(np.float32).astype(np.float64) for v in VARS}
    _, ok = numpy_value(e, rounded)
    if not ok.any():
        return 0
    checked = 0
    for engine, (value, grads) in run(e, rounded, tier, np.float32):
        where = (engine, e.text)
        assert value.dtype == np.float32, (*where, "float32 inputs gave", value.dtype)
        assert all(grads[v].dtype == np.float32 for v in VARS), (*where, "float32 gradients")
        for j in np.flatnonzero(ok):
            point = {v: float(rounded[v][j]) for v in VARS}
            ref = exact(e, point, bounds=True)
            f = float(ref.value)
            if ref.bound > ILL32 * _scale(f):
                continue  # ill-conditioned: float32 cannot carry this value
            assert abs(float(value[j]) - f) <= RTOL32 * _scale(f) + 4 * ref.bound, (
                *where, point, float(value[j]), f, ref.bound,
            )  # fmt: skip
            for v in VARS:
                g, g_exact, bound = float(grads[v][j]), float(ref.grad[v]), ref.grad_bound[v]
                if bound > ILL32 * _scale(g_exact, f):
                    continue
                tol = RTOL32 * _scale(g_exact, f) + 4 * bound
                assert abs(g - g_exact) <= tol, (*where, point, v, g, g_exact, bound)
            checked += 1
    return checked


def _record(tier: str, dtype: str, e: Expr, checked: int) -> None:
    if checked:
        SEEN.setdefault((tier, dtype), set()).update(e.ops())
        CHECKED[(tier, dtype)] = CHECKED.get((tier, dtype), 0) + 1


HYPOTHESIS = settings(
    max_examples=12,
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
EXAMPLES = {"instant": 60, "numba": 10, "llvm": 30, "auto": 6}


# ------------------------------------------------------------------ the tests: float64
def test_every_op_states_what_the_generator_needs():
    """Each entry of the table: an arity of 1 to 3, a domain per operand of a known kind, kinks
    that evaluate, an oracle, an exact definition; ops whose definition is not smooth everywhere
    say where (kinks, or a domain that keeps their operands off the rough part)."""
    rough = (sp.Abs, sp.sign, sp.Max, sp.Min, sp.Heaviside, sp.floor, sp.ceiling, sp.Piecewise)
    grid = [np.linspace(-2.2, 2.3, 7) + k for k in (0.0, 0.1, 0.2)]
    for name in ops():
        spec = registry.OPS[name]
        assert spec.arity in (1, 2, 3), f"op {name!r}: arity {spec.arity}"
        assert len(domain(name)) == spec.arity, f"op {name!r}: domain {spec.domain} for arity"
        for kind in domain(name):
            ok = kind in ("", "natural", "truth") or interval(kind) is not None
            assert ok, (
                f"op {name!r}: unknown domain {kind!r} (use '', '(lo, hi)', 'natural', 'truth')"
            )
        with np.errstate(all="ignore"):
            for kink, text in zip(kink_functions(name), spec.kinks):
                value = np.asarray(kink(*grid[: spec.arity]), float)
                assert value.shape == (7,), f"op {name!r}: kink {text!r} is not elementwise"
        assert callable(spec.numpy), f"op {name!r} has no NumPy oracle"
        expr, places = definition(name)
        assert expr.free_symbols <= set(places), f"op {name!r}: definition over {expr.free_symbols}"
        if expr.has(*rough):
            said = spec.kinks or any(k != "" for k in domain(name))
            assert said, f"op {name!r} is not smooth everywhere: state its kinks (OpDef.kinks)"
    assert set(GUARD_OPS) <= set(registry.OPS), set(GUARD_OPS) - set(registry.OPS)
    assert any(registry.OPS[n].truth for n in ops()), "no op makes truth values"


@pytest.mark.parametrize("tier", TIERS)
def test_every_op_on_every_tier(tier):
    """A fixed sweep over the whole table: each op checked at points on ``tier``."""
    for e in sweep():
        checked = check(e, SWEEP_POINTS, tier)
        assert checked >= 8, (e.text, checked)  # most sweep points are smooth
        _record(tier, "float64", e, checked)
    assert SEEN[(tier, "float64")] == set(ops()), set(ops()) - SEEN[(tier, "float64")]


@pytest.mark.parametrize("tier", TIERS)
def test_random_expressions_on_every_tier(tier):
    @settings(HYPOTHESIS, max_examples=EXAMPLES[tier])
    @given(e=expressions(), env=points)
    def prop(e, env):
        _, ok = numpy_value(e, env)
        assume(ok.any())
        _record(tier, "float64", e, check(e, env, tier))

    before = CHECKED.get((tier, "float64"), 0)
    prop()
    assert CHECKED.get((tier, "float64"), 0) - before >= EXAMPLES[tier] // 2  # not vacuous


def test_a_new_op_is_drawn_with_no_edit_here(monkeypatch, tmp_path):
    """An op registered now is in the generator's table, and its entry is all the oracle needs."""
    from compiler.ir.opdef import entry

    def lower(L, a):
        return L.b.fmul(L.b.fmul(a, a), a)

    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path / "cache"))
    spec = entry("cube", "a**3", grads=("3 * a * a",), numpy=lambda a: a * a * a, lower=lower)
    registry.register(spec)
    try:
        assert "cube" in ops()
        e = node("add", node("cube", var("x")), node("mul", var("y"), var("z")))
        assert check(e, SWEEP_POINTS, "instant") == 16

        @HYPOTHESIS
        @given(e=expressions())
        def drawn(e):
            assume("cube" in e.ops())

        drawn()  # fails (no example) unless the generator draws the new op
    finally:
        registry.unregister("cube")
        for cached in (definition, mp_value, local, second, sympy_numpy):
            cached.cache_clear()
    assert "cube" not in ops()


# ------------------------------------------------------------------ the tests: float32
# float32 inputs give float32 kernels on every tier (README: the dtype rule).
@pytest.mark.parametrize("tier", TIERS)
def test_float32_every_op_on_every_tier(tier):
    for e in sweep():
        checked = check32(e, SWEEP_POINTS, tier)
        assert checked >= 8, (e.text, checked)
        _record(tier, "float32", e, checked)
    assert SEEN[(tier, "float32")] == set(ops()), set(ops()) - SEEN[(tier, "float32")]


@pytest.mark.parametrize("tier", TIERS)
def test_float32_random_expressions_on_every_tier(tier):
    @settings(HYPOTHESIS, max_examples=max(EXAMPLES[tier] // 2, 4))
    @given(e=expressions(), env=points)
    def prop(e, env):
        rounded = {v: env[v].astype(np.float32).astype(np.float64) for v in VARS}
        _, ok = numpy_value(e, rounded)
        assume(ok.any())
        _record(tier, "float32", e, check32(e, env, tier))

    before = CHECKED.get((tier, "float32"), 0)
    prop()
    assert CHECKED.get((tier, "float32"), 0) - before >= EXAMPLES[tier] // 4  # not vacuous

"""The new numeric ops (compiler/ir/ops/{special,hyperbolic,inverse_trig,powers}.py), each checked
against independent oracles: its stated gradients against ``sympy.diff`` of its definition (mpmath
at 50 digits), its lowering against its NumPy/SciPy oracle at float64 and float32 (a stated ulp
bound; where the oracle itself is off, against mpmath), and the oracle against mpmath."""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import sympy

from compiler.ir.ops import hyperbolic, inverse_trig, powers, special
from tests.lowerjit import evaluate

OPS = {op.name: op for m in (special, hyperbolic, inverse_trig, powers) for op in m.OPS}
A, B = sympy.symbols("a b", real=True)


# ---------------------------------------------------------------- independent truth (mpmath)
def _cbrt(x):
    return mp.sign(x) * abs(x) ** (mp.mpf(1) / 3)


def _xlog1py(a, b):
    return mp.mpf(0) if a == 0 else a * mp.log1p(b)


TRUTH = {
    "erf": mp.erf,
    "erfc": mp.erfc,
    "lgamma": lambda x: mp.log(abs(mp.gamma(x))),
    "digamma": mp.digamma,
    "polygamma": lambda n, x: mp.psi(int(n), x),
    "sinh": mp.sinh,
    "cosh": mp.cosh,
    "asinh": mp.asinh,
    "acosh": mp.acosh,
    "atanh": mp.atanh,
    "atan": mp.atan,
    "atan2": mp.atan2,
    "asin": mp.asin,
    "acos": mp.acos,
    "hypot": mp.hypot,
    "log2": lambda x: mp.log(x, 2),
    "log10": lambda x: mp.log(x, 10),
    "exp2": lambda x: mp.power(2, x),
    "cbrt": _cbrt,
    "square": lambda x: x * x,
    "reciprocal": lambda x: 1 / x,
    "logaddexp": lambda a, b: mp.log(mp.exp(a) + mp.exp(b)),
    "log1mexp": lambda x: mp.log(-mp.expm1(x)),
    "xlog1py": _xlog1py,
}


def truth(name: str, *args: float) -> float:
    with mp.workdps(50):
        value = TRUTH[name](*(mp.mpf(float(a)) for a in args))
        return float(value) if isinstance(value, mp.mpf) else math.nan


# ---------------------------------------------------------------- gradients vs sympy.diff
# The grads text is symgrad's text language over table ops; here it is read by SymPy with each
# table op spelled as its SymPy meaning.
GRAD_NAMES = {
    "log1p": lambda x: sympy.log(1 + x),
    "expm1": lambda x: sympy.exp(x) - 1,
    "hypot": lambda x, z: sympy.sqrt(x**2 + z**2),
    "heaviside": sympy.Heaviside,
    "digamma": lambda x: sympy.polygamma(0, x),
    "polygamma": sympy.polygamma,
}

# points inside each op's domain (no kinks), for the gradient check
DOMAIN = {
    "acosh": [(1.5,), (3.25,), (40.0,)],
    "atanh": [(-0.7,), (0.1,), (0.9,)],
    "asin": [(-0.7,), (0.1,), (0.9,)],
    "acos": [(-0.7,), (0.1,), (0.9,)],
    "log1mexp": [(-0.01,), (-0.9,), (-7.0,)],
    "log2": [(0.3,), (2.5,), (70.0,)],
    "log10": [(0.3,), (2.5,), (70.0,)],
    "lgamma": [(0.3,), (4.5,), (-2.5,)],
    "digamma": [(0.3,), (4.5,), (-2.5,)],
    "polygamma": [(1.0, 0.3), (2.0, 4.5), (5.0, 2.5)],
    "xlog1py": [(0.7, 0.3), (-2.0, 4.0), (3.0, -0.5)],
}
BINARY = [(0.7, 0.3), (-2.0, 4.0), (3.0, -0.5)]
UNARY = [(-1.3,), (0.4,), (2.7,)]


@pytest.mark.parametrize("name", sorted(OPS))
def test_stated_gradients_equal_sympy_diff(name):
    op = OPS[name]
    definition = sympy.sympify(op.definition, locals={"a": A, "b": B})
    points = DOMAIN.get(name, BINARY if op.arity == 2 else UNARY)
    for k, text in enumerate(op.grads):
        if name == "polygamma" and k == 0:
            assert text == "0"  # the order is an integer: gradient 0 (the kink table)
            continue
        stated, tolerance = _stated(text, definition)
        exact = sympy.diff(definition, (A, B)[k])
        for point in points:
            at = {s: sympy.Float(v, 60) for s, v in zip((A, B), point)}
            want = sympy.N(exact.subs(at), 50)
            difference = sympy.N(stated.subs(at) - exact.subs(at), 50)
            assert abs(difference) <= tolerance * (1 + abs(want)), (name, k, point, difference)


def _stated(text: str, definition):
    """A stated gradient as SymPy: by SymPy's own reading where it can (the names above), else
    by symgrad's parser (gradients with ``where``, ``round``, ``clip``: issue 15's forms), whose
    graph folds constants to floats (2/sqrt(pi)): to 1e-15 then."""
    from compiler.frontend.text import parse

    if not any(f"{name}(" in text for name in ("where", "round", "clip")):
        stated = sympy.sympify(text, locals={"a": A, "b": B, "y": definition, **GRAD_NAMES})
        return stated, 1e-40
    expr = parse(text).to_sympy()
    names = {"a": A, "b": B, "y": definition}
    return expr.xreplace({s: names[s.name] for s in expr.free_symbols}), 1e-15


def test_definitions_are_exact():
    """Constants stay symbolic: erf' names 2/sqrt(pi), not a rounded float."""
    erf = sympy.sympify(OPS["erf"].definition, locals={"a": A})
    assert sympy.simplify(sympy.diff(erf, A) - 2 * sympy.exp(-(A**2)) / sympy.sqrt(sympy.pi)) == 0
    assert not sympy.sympify(OPS["log2"].definition, locals={"a": A}).atoms(sympy.Float)
    cbrt = sympy.sympify(OPS["cbrt"].definition, locals={"a": A})
    assert cbrt.subs(A, -8) == -2  # the real cube root, as np.cbrt


# ---------------------------------------------------------------- lowerings vs oracles
SPECIAL = [0.0, -0.0, 1.0, -1.0, 2.0, -2.0, -3.0, 0.5, -0.5, math.inf, -math.inf, math.nan,
           -(2.0**-55), 1e4, -1e4, 1e-300, -1e-300, 5e-324, 1e300, -1e300, 1.4616321449683622,
           0.9999999, 1.0000001, -0.6931471805599453, 20.0, 710.0, -745.0]  # fmt: skip


def points(arity: int, seed: int = 0) -> list[np.ndarray]:
    """Wide sets: the edge values, uniform and log-uniform (both signs), and [-1, 1]."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([
        SPECIAL,
        rng.uniform(-20, 20, 4000),
        np.exp(rng.uniform(-700, 700, 2000)),
        -np.exp(rng.uniform(-700, 700, 1000)),
        np.exp(rng.uniform(-40, 40, 2000)),
        -np.exp(rng.uniform(-40, 40, 1000)),
        rng.uniform(-1, 1, 2000),
    ])  # fmt: skip
    if arity == 1:
        return [x]
    if arity == "order":  # polygamma(n, x): natural orders, and two that are not
        orders = np.array([0, 1, 2, 3, 5, 8, 20, 2.5, -1.0])
        return [np.repeat(orders, x.size), np.tile(x, orders.size)]
    grid = np.array([(u, v) for u in SPECIAL for v in SPECIAL]).T
    pairs = np.array([(1e4, 1e4), (-1e4, -1e4), (1e4, -1e4), (3.0, 3.0 + 2**-50)]).T
    with np.errstate(invalid="ignore"):  # inf * 0
        near = x + rng.normal(0, 1, x.size) * np.abs(x) * rng.choice([0, 1e-3, 1e-10], x.size)
    return [
        np.concatenate([grid[0], pairs[0], x, x]),
        np.concatenate([grid[1], pairs[1], rng.permutation(x), near]),
    ]


def _digamma_scale(x):
    """Digamma subtracts: below 10 the recurrence's sum of 1/(x + k) from the series at t >= 10
    (about log t), and below 0 the reflection's pi cot(pi x) from psi(1 - x). Its error is a few
    ulps of those terms, not of the result, except near the positive zero (a Taylor series)."""
    from scipy.special import psi

    with np.errstate(all="ignore"):
        t = np.where(x < 0, 1 - x, x)
        terms = np.where(t < 10, np.log(t + 10) + np.abs(psi(t + 10) - psi(t)), 0.0)
        terms = np.where(np.abs(t - 1.4616321449683622) < 0.25, 0.0, terms)
        cot = np.pi / np.tan(np.pi * (x - np.round(x)))
        return np.where(x < 0, np.abs(psi(1 - x)) + np.abs(cot) + terms, terms)


def _logaddexp_scale(a, b):
    """Where the result is near 0 the larger operand and the log1p term cancel."""
    return np.maximum(np.abs(a), np.abs(b))


SCALE = {
    "digamma": _digamma_scale,
    "polygamma": lambda n, x: np.where(n == 0, _digamma_scale(x), 0.0),  # n = 0 is digamma
    "logaddexp": _logaddexp_scale,
}

# Stated accuracy: ulps (of the result, or of SCALE's cancelling terms) at float64 and float32.
# (polygamma: 4 at float64 for trigamma below 0, where the reflection pi**2/sin**2 - psi1(1 - x)
# cancels; 1 above 0.)
ULPS = {
    "erf": (2, 2), "erfc": (1, 1), "lgamma": (4, 4), "digamma": (2, 1), "polygamma": (4, 1),
    "sinh": (2, 2), "cosh": (2, 2), "asinh": (2, 2), "acosh": (2, 2), "atanh": (2, 2),
    "atan": (1, 1), "atan2": (2, 2), "asin": (1, 1), "acos": (1, 1), "hypot": (1, 1),
    "log2": (1, 1), "log10": (2, 2), "exp2": (1, 1), "cbrt": (1, 1), "square": (0, 0),
    "reciprocal": (0, 0), "logaddexp": (2, 2), "log1mexp": (2, 2), "xlog1py": (2, 2),
}  # fmt: skip


def ulps(got, want, scale, dtype) -> np.ndarray:
    size = np.maximum(np.abs(want), scale).astype(dtype)
    return np.abs(got.astype(np.float64) - want) / np.spacing(size).astype(np.float64)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(OPS))
def test_lowering_matches_oracle(name, dtype):
    op = OPS[name]
    bound = ULPS[name][dtype is np.float32]
    with np.errstate(over="ignore"):  # 1e300 becomes inf at float32
        args = [a.astype(dtype) for a in points("order" if name == "polygamma" else op.arity)]
    got = evaluate(op.lower, *args, dtype=dtype)
    wide = [a.astype(np.float64) for a in args]
    with np.errstate(all="ignore"):
        want = np.asarray(op.numpy(*wide), dtype=np.float64).astype(dtype)
        scale = SCALE[name](*wide) if name in SCALE else 0.0
    scale = np.broadcast_to(scale, got.shape)
    # nan, ±inf and signed zeros where the oracle has them
    special = ~np.isfinite(want) | ~np.isfinite(got)
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    same &= (np.signbit(got) == np.signbit(want)) | (got != 0)
    err = np.where(special, np.where(same, 0.0, np.inf), 0.0)
    err[~special] = ulps(got[~special], want[~special], scale[~special], dtype)
    # Where the lowering is off the oracle, the oracle may be the one that is off (SciPy's erfc
    # and gammaln near their zeros, its gammaln(5e-324) = inf): the truth decides, same bound.
    off = np.flatnonzero(err > bound)
    assert off.size <= 0.2 * got.size, (name, off.size)
    for i in off:
        point = [a[i] for a in wide]
        exact = np.asarray(truth(name, *point)).astype(dtype)
        if np.isfinite(exact) and np.isfinite(got[i]):
            e = ulps(got[i : i + 1], np.array([exact], dtype=np.float64), scale[i], dtype)[0]
        else:
            e = 0.0 if got[i] == exact else np.inf
        assert e <= bound, (name, point, got[i], want[i], exact)


@pytest.mark.parametrize("name", sorted(OPS))
def test_oracle_agrees_with_mpmath(name):
    op = OPS[name]
    domain = DOMAIN.get(name, BINARY if op.arity == 2 else UNARY)
    for point in domain:
        want = truth(name, *point)
        got = float(np.asarray(op.numpy(*map(np.float64, point))))
        assert got == pytest.approx(want, rel=1e-14, abs=1e-300), (name, point)


# ---------------------------------------------------------------- the edges, by hand
EDGES = [
    ("log1mexp", (-(2.0**-55),), math.log(2.0**-55)),  # -expm1(x) = 2**-55 to within 2**-110
    ("log1mexp", (0.0,), -math.inf),
    ("log1mexp", (0.5,), math.nan),
    ("log1mexp", (-math.inf,), 0.0),
    ("logaddexp", (1e4, 1e4), 1e4 + math.log(2)),
    ("logaddexp", (math.inf, math.inf), math.inf),
    ("logaddexp", (-math.inf, -math.inf), -math.inf),
    ("logaddexp", (math.inf, -math.inf), math.inf),
    ("logaddexp", (math.nan, 1.0), math.nan),
    ("logaddexp", (-1000.0, 0.0), 0.0),
    ("xlog1py", (0.0, -1.0), 0.0),
    ("xlog1py", (0.0, math.nan), math.nan),
    ("xlog1py", (2.0, -1.0), -math.inf),
    ("digamma", (0.0,), -math.inf),
    ("digamma", (-0.0,), math.inf),
    ("digamma", (-3.0,), math.nan),
    ("digamma", (-math.inf,), math.nan),
    ("digamma", (math.inf,), math.inf),
    ("digamma", (1.0,), -0.5772156649015329),  # -Euler's gamma
    ("polygamma", (1.0, 1.0), math.pi**2 / 6),
    ("polygamma", (1.0, -3.0), math.inf),
    ("polygamma", (1.0, 0.0), math.inf),
    ("polygamma", (1.0, math.inf), 0.0),
    ("polygamma", (2.0, 1.0), -2.4041138063191885),  # -2 zeta(3)
    ("polygamma", (2.0, 0.0), -math.inf),
    ("polygamma", (3.0, -2.0), math.inf),
    ("polygamma", (2.0, -0.5), math.nan),  # not lowered below 0 for n >= 2 (docstring)
    ("polygamma", (2.5, 1.0), math.nan),
    ("polygamma", (0.0, 1.0), -0.5772156649015329),
    ("lgamma", (-math.inf,), -math.inf),  # SciPy's gammaln
    ("lgamma", (-2.0,), math.inf),
    ("lgamma", (1.0,), 0.0),
    ("hypot", (math.inf, math.nan), math.inf),  # C99 and NumPy: inf wins over nan
    ("atan2", (0.0, -0.0), math.pi),
    ("atanh", (1.0,), math.inf),
    ("acosh", (0.5,), math.nan),
    ("cbrt", (-8.0,), -2.0),
    ("reciprocal", (-0.0,), -math.inf),
    ("erfc", (-math.inf,), 2.0),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("name", "args", "want"), EDGES)
def test_edges(name, args, want, dtype):
    got = evaluate(OPS[name].lower, *(np.array([a]) for a in args), dtype=dtype)[0]
    if math.isnan(want):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(
            np.asarray(want, dtype=dtype), rel=4 * float(np.finfo(dtype).eps)
        )


# ---------------------------------------------------------------- end to end, through the table
X, Y = sympy.symbols("x y", real=True)
# (text, the same function in SymPy, points): every new op, in expressions with both inputs
END_TO_END = [
    ("erf(x) + atan2(x, y)", sympy.erf(X) + sympy.atan2(X, Y)),
    ("erfc(x) * lgamma(y) + digamma(y) + polygamma(1, y) + polygamma(2, y)",
     sympy.erfc(X) * sympy.loggamma(Y) + sympy.polygamma(0, Y) + sympy.polygamma(1, Y)
     + sympy.polygamma(2, Y)),
    ("sinh(x) * cosh(y) + asinh(x) + acosh(1 + y * y) + atanh(x / 3)",
     sympy.sinh(X) * sympy.cosh(Y) + sympy.asinh(X) + sympy.acosh(1 + Y**2) + sympy.atanh(X / 3)),
    ("atan(x) + asin(x / 3) + acos(y / 3) + hypot(x, y)",
     sympy.atan(X) + sympy.asin(X / 3) + sympy.acos(Y / 3) + sympy.sqrt(X**2 + Y**2)),
    ("log2(y) + log10(y) * exp2(x) + cbrt(x) + square(y) + reciprocal(x)",
     sympy.log(Y, 2) + sympy.log(Y, 10) * 2**X + X / sympy.Abs(X) ** sympy.Rational(2, 3)
     + Y**2 + 1 / X),
    ("logaddexp(x, y) + log1mexp(-y) + xlog1py(x, y)",
     sympy.log(sympy.exp(X) + sympy.exp(Y)) + sympy.log(1 - sympy.exp(-Y)) + X * sympy.log(1 + Y)),
]  # fmt: skip
XS = np.array([-0.9, -0.45, 0.3, 0.8])
YS = np.array([1.5, 2.25, 2.0, 2.75])


def _sympy_values(expr, xs, ys):
    """The expression, and its partials, evaluated by mpmath at 30 digits."""
    parts = [expr, sympy.diff(expr, X), sympy.diff(expr, Y)]
    fns = [sympy.lambdify((X, Y), p, modules="mpmath") for p in parts]
    with mp.workdps(30):
        return [np.array([float(f(mp.mpf(a), mp.mpf(b))) for a, b in zip(xs, ys)]) for f in fns]


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    from runtime import cache

    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "_loaded", {})


@pytest.mark.parametrize("mode", ["instant", "compiled", "auto"])
@pytest.mark.parametrize(("text", "expr"), END_TO_END, ids=[t for t, _ in END_TO_END])
def test_end_to_end(private_cache, text, expr, mode):
    import compiler

    kernel = compiler.compile_gradient(text, mode=mode)
    value, grads = kernel.value_and_grad(x=XS, y=YS)
    want, dx, dy = _sympy_values(expr, XS, YS)
    np.testing.assert_allclose(value, want, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(grads["x"], dx, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(grads["y"], dy, rtol=1e-12, atol=1e-13)
    # and by central differences of the kernel's own values (independent of any gradient text)
    h = 1e-6
    for name, g in (("x", grads["x"]), ("y", grads["y"])):
        up = kernel(**{"x": XS, "y": YS, name: (XS, YS)[name == "y"] + h})
        down = kernel(**{"x": XS, "y": YS, name: (XS, YS)[name == "y"] - h})
        np.testing.assert_allclose(g, (up - down) / (2 * h), rtol=1e-6, atol=1e-7)


def test_gradient_texts_parse_in_the_table():
    """Every stated gradient is symgrad text over table ops (the chain closes: digamma' is
    polygamma(1, .), polygamma's is polygamma(n + 1, .))."""
    from compiler.frontend.text import parse

    for op in OPS.values():
        for text in op.grads:
            parse(text)


def test_polygamma_of_a_huge_order_answers_at_once():
    """polygamma's zeta loop runs about n steps: an order of 1e30 (or inf) once looped for ever.
    Past order 170 the value is SciPy's (+-inf or nan: n! is inf); from 2**53 on, and at inf, the
    order is no natural number one can add 1 to, so nan. Run in a child: a hang fails, not hangs."""
    import json
    import subprocess
    import sys

    script = (
        "import json, numpy as np, compiler\n"
        "n = np.array([170.0, 171.0, 200.0, 1e6, 2.0**53, 1e30, np.inf])\n"
        "for mode in ('instant', 'compiled'):\n"
        "    k = compiler.compile_gradient('polygamma(n, x)', mode=mode)\n"
        "    for x in (0.5, 1.0, 3.0, 1000.0):\n"
        "        print(mode, x, json.dumps(k(n=n, x=np.full_like(n, x)).tolist()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-2000:]
    from scipy.special import polygamma

    for line in done.stdout.splitlines():
        mode, x, values = line.split(" ", 2)
        got = np.array(json.loads(values))  # Python's json reads Infinity and NaN
        with np.errstate(all="ignore"):
            want = polygamma(np.array([170.0, 171.0, 200.0, 1e6]), float(x))
        np.testing.assert_array_equal(np.isnan(got[:4]), np.isnan(want), err_msg=line)
        np.testing.assert_array_equal(got[:4][np.isinf(want)], want[np.isinf(want)], err_msg=line)
        assert np.isnan(got[4:]).all(), line

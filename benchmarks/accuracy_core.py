"""Measuring an op's forward and local gradients in ulps against mpmath (issue 15).

Shared by the accuracy workload (``benchmarks/workloads/accuracy.py``: the README's table and
``benchmarks/accuracy.json``) and by ``tests/test_accuracy.py`` (the same measurement on a
smaller sample, held to the committed numbers).

- **Points**: per operand, a dense sample of the op's domain (``OpDef.domain``): both signs over
  every binade from the subnormals to the largest finite float, a uniform grid near 0, and the
  domain's ends approached geometrically; binary ops take a grid of two such samples. Points are
  float32 numbers, so one mpmath reference serves both widths; float64 adds points beyond
  float32's range. Special points (±0, ±inf, nan) are scored apart.
- **Reference**: the entry's exact SymPy ``definition`` and ``sympy.diff`` of it, lambdified
  with ``modules="mpmath"`` at ``mp.dps = 50``, kept as two floats (hi + lo) per point.
- **ulp**: ``|got - exact| / spacing(exact)`` in the dtype measured, the spacing taken at no less
  than the smallest normal: below it, the error counts in units of the smallest subnormal.
  Where the exact value overflows the dtype the point is a special value (inf expected).
- **Special values**: at ±0, ±inf, nan operands (and exact results beyond the dtype's range) the
  result must be the mathematically right value rounded to the dtype (mpmath at the point, its
  limit at ±inf), or NumPy's/IEEE's where mpmath has none (nan operands: nan unless NumPy's
  forward is a number); points where neither defines a value are not scored.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
from contextlib import contextmanager

import mpmath
import numpy as np

DPS = 50
DTYPES = ("float64", "float32")
TIERS = ("instant", "numba", "llvm")
# Ops whose derivative is a distribution (0 almost everywhere) or unevaluated by SymPy, and
# truth-valued ops: their gradients are exactly 0 (tests/test_where.py); their forwards are
# still measured.
SPECIAL_POINTS = (0.0, -0.0, math.inf, -math.inf, math.nan)


# ------------------------------------------------------------------ sample points
def _binades(lo_exp: int, hi_exp: int, per: int) -> np.ndarray:
    """Positive points spread over every binade 2**lo_exp .. 2**hi_exp, ``per`` per binade."""
    exps = np.arange(lo_exp, hi_exp)
    frac = np.linspace(1.0, 2.0, per, endpoint=False)
    return np.ldexp(frac[None, :], exps[:, None]).ravel()


def operand_sample(kind: str, size: str = "full") -> tuple[np.ndarray, np.ndarray]:
    """(points common to both widths (float32 numbers), float64-only points) for one operand of
    domain ``kind`` ("", "(lo, hi)", "natural", "truth")."""
    if kind == "natural":
        return np.arange(0.0, 5.0), np.zeros(0)
    if kind == "truth":
        return np.array([0.0, 1.0]), np.zeros(0)
    per = {"full": 2, "grid": 1}[size]
    step = {"full": 1, "grid": 24}[size]
    pos32 = _binades(-149, 128, per)[::step]  # float32 subnormals .. max
    pos64 = _binades(-1074, 1024, per)[:: step * 2]
    pos64 = pos64[(pos64 < 2.0**-149) | (pos64 > 2.0**127)]
    n_lin = {"full": 801, "grid": 17}[size]
    lin = np.linspace(-8.0, 8.0, n_lin)
    lo, hi = -math.inf, math.inf
    if kind.startswith("("):
        lo, hi = (float(t) for t in kind.strip("()").split(","))
    common = np.concatenate([pos32, -pos32, lin])
    extra = np.concatenate([pos64, -pos64])
    ends = []
    for edge, sign in ((lo, 1.0), (hi, -1.0)):
        if math.isfinite(edge):
            ends.append(edge + sign * pos32[pos32 < 1.0])
    common = np.concatenate([common, *ends]).astype(np.float32).astype(np.float64)
    # float64 numbers with all 53 bits (a float32 number squares exactly in float64)
    rng = np.random.default_rng(15)
    extra = np.concatenate([extra, common * (1 + rng.uniform(-(2.0**-24), 2.0**-24, common.size))])
    keep = lambda v: v[(v > lo) & (v < hi) & np.isfinite(v)]  # noqa: E731
    return np.unique(keep(common)), np.unique(keep(extra))


#: the regression test's sample: every STRIDE-th point of the full one (a subset, so that its
#: worst error can never exceed the committed full-sample figure)
STRIDE = {1: 7, 2: 9, 3: 5}


def points(op: str, size: str = "full") -> dict[str, tuple[np.ndarray, ...]]:
    """Per dtype, the operand arrays (a grid for binary ops) at which ``op`` is measured;
    ``size="small"``: a deterministic subset of them."""
    from compiler.ir.registry import OPS

    spec = OPS[op]
    full = _points(op)
    if size == "full":
        return full
    stride = STRIDE[spec.arity]
    return {d: tuple(a[::stride] for a in args) for d, args in full.items()}


@functools.cache
def _points(op: str) -> dict[str, tuple[np.ndarray, ...]]:
    from compiler.ir.registry import OPS

    spec = OPS[op]
    kinds = spec.domain or ("",) * spec.arity
    size = "full"
    samples = [operand_sample(k, size if spec.arity == 1 else "grid") for k in kinds]
    if spec.arity == 3:  # clip, where: exact selections; a coarse grid
        samples = [(c[:: max(1, c.size // 12)], e[:: max(1, e.size // 4)]) for c, e in samples]
    if spec.arity == 1:
        c, e = samples[0]
        return {"float32": (c,), "float64": (np.concatenate([c, e]),)}
    # a grid of the float32 numbers; float64 adds each pair with all 53 bits, and a coarse grid
    # of the values beyond float32's range
    grid32 = [g.ravel() for g in np.meshgrid(*[s[0] for s in samples], indexing="ij")]
    rng = np.random.default_rng(15)
    n = grid32[0].size
    # (a natural or truth operand stays as it is: polygamma's order 2 - 2**-25 is no order)
    wide = [np.where((np.abs(g) > 1) & (k not in ("natural", "truth")),
                     g * (1 + rng.uniform(-2.0**-24, 2.0**-24, n)), g)
            for g, k in zip(grid32, kinds)]  # fmt: skip
    beyond = []
    for c, e in samples:
        far = e[(np.abs(e) > 2.0**127) | (np.abs(e) < 2.0**-149)]
        beyond.append(np.concatenate([far[:: max(1, far.size // 6)], c[:: max(1, c.size // 6)]]))
    grid_far = [g.ravel() for g in np.meshgrid(*beyond, indexing="ij")]
    grid64 = [np.concatenate(parts) for parts in zip(grid32, wide, grid_far)]
    return {"float32": tuple(grid32), "float64": tuple(grid64)}


def special_points(op: str) -> tuple[np.ndarray, ...]:
    """Operand tuples with at least one of ±0, ±inf, nan (the others from a few ordinary
    values of the operand's domain)."""
    from compiler.ir.registry import OPS

    spec = OPS[op]
    kinds = spec.domain or ("",) * spec.arity
    per = []
    for kind in kinds:
        if kind == "natural":
            per.append([0.0, 1.0, 2.0])
        elif kind == "truth":
            per.append([0.0, 1.0])
        else:
            per.append([*SPECIAL_POINTS, 0.5, 2.0, -0.5, 1e300, -1e300, 1e-310])
    grid = np.meshgrid(*[np.array(p) for p in per], indexing="ij")
    cols = [g.ravel() for g in grid]
    special = np.zeros(len(cols[0]), dtype=bool)
    for c in cols:
        special |= ~np.isfinite(c) | (c == 0)
    return tuple(c[special] for c in cols)


# ------------------------------------------------------------------ the mpmath reference
@functools.cache
def _functions(op: str):
    """mpmath functions of the definition and of each ``sympy.diff`` (None: not measured)."""
    import sympy

    from compiler.ir.graph import operand_symbols
    from compiler.ir.registry import OPS, sympy_definition

    spec = OPS[op]
    f = sympy_definition(op)
    symbols = operand_symbols(f)[: spec.arity]
    out = [sympy.lambdify(symbols, f, modules="mpmath")]
    for k in range(spec.arity):
        d = sympy.diff(f, symbols[k])
        d = d.replace(lambda e: isinstance(e, sympy.DiracDelta), lambda e: sympy.S.Zero)
        if d.has(sympy.Derivative, sympy.Subs) or (op, k) == ("polygamma", 0):
            d = sympy.Integer(0)  # 0 almost everywhere (the kink table)
        out.append(sympy.lambdify(symbols, d, modules="mpmath"))
    return out


def _mp(x: float):
    if math.isinf(x):
        return mpmath.mpf("inf") if x > 0 else mpmath.mpf("-inf")
    return mpmath.mpf(x)


def _eval(fn, args) -> tuple[float, float]:
    """(hi, lo) of ``fn(*args)``: at dps 50, then at more digits until two precisions agree
    (a definition like ``exp(a) - 1`` cancels at tiny ``a`` in mpmath too)."""
    if any(math.isnan(a) for a in args):  # undefined (and mpmath's polygamma(2, nan) hangs)
        return math.nan, 0.0
    tiny = [abs(a) for a in args if 0 < abs(a) < 1]
    base = DPS + (int(-math.log10(min(tiny))) + 1 if tiny else 0)
    last = None
    for dps in (base, base + 30, 2 * base + 60, 4 * base + 200, 3500):
        with mpmath.workdps(dps):
            v = _eval_at(fn, args)
        if last is not None and not v[2] and _agree(v, last):  # an exact 0 may be cancellation
            return v[:2]
        last = v
    return last[:2]


def _agree(v, w) -> bool:
    if math.isnan(v[0]) or math.isnan(w[0]):
        return math.isnan(v[0]) and math.isnan(w[0])
    return v[0] == w[0] and abs(v[1] - w[1]) <= 2.0**-40 * abs(v[0])


class _Slow(Exception):
    pass


def _alarm(signum, frame):
    raise _Slow


def _eval_at(fn, args) -> tuple[float, float]:
    """mpmath's value, or nan if it takes over 5 s (mpmath's polygamma(1, -1e300) never ends:
    such a point is not scored)."""
    import signal

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, 5.0)
    try:
        return _eval_mp(fn, args)
    except _Slow:
        return math.nan, 0.0, False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _eval_mp(fn, args) -> tuple[float, float]:
    try:
        v = fn(*[_mp(a) for a in args])
        if isinstance(v, mpmath.mpc):
            if abs(v.imag) > 0:
                return math.nan, 0.0, False
            v = v.real
        v = mpmath.mpf(v)
    except (ValueError, ZeroDivisionError, TypeError, OverflowError, ArithmeticError):
        return math.nan, 0.0, False
    if mpmath.isnan(v):
        return math.nan, 0.0, False
    if mpmath.isinf(v):
        return (math.inf if v > 0 else -math.inf), 0.0, False
    hi = float(v) if abs(v) < mpmath.mpf(2) ** 1100 else (math.inf if v > 0 else -math.inf)
    lo = float(v - hi) if math.isfinite(hi) else 0.0
    return hi, lo, v == 0


_CACHE: dict = {}


def reference(op: str, args: tuple[np.ndarray, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(hi, lo) of the forward, then of each gradient] at the points ``args``."""
    fns = _functions(op)
    n = len(args[0])
    out = [(np.empty(n), np.empty(n)) for _ in fns]
    if True:
        for i in range(n):
            point = tuple(float(a[i]) for a in args)
            for j, fn in enumerate(fns):
                key = (op, j, point)
                if key not in _CACHE:
                    _CACHE[key] = _eval(fn, point)
                out[j][0][i], out[j][1][i] = _CACHE[key]
    return out


# ------------------------------------------------------------------ ulps
def ulps(got: np.ndarray, hi: np.ndarray, lo: np.ndarray, dtype: str) -> np.ndarray:
    """|got - exact| in units of spacing(exact) in ``dtype`` (at least the smallest normal's);
    nan where ``exact`` is not a finite number of that dtype (scored as special values)."""
    info = np.finfo(dtype)
    got = np.asarray(got, dtype=np.float64)
    with np.errstate(all="ignore"):
        mag = np.maximum(np.abs(hi), float(info.tiny))
        spacing = np.spacing(mag.astype(dtype)).astype(np.float64)
        err = np.abs((got - hi) - lo) / spacing
        finite = np.isfinite(hi) & (np.abs(hi) <= float(info.max))
        err = np.where(finite, err, np.nan)
        err = np.where(finite & ~np.isfinite(got), np.inf, err)
    return err


def special_ok(got: np.ndarray, expected: np.ndarray, dtype: str) -> tuple[int, int]:
    """(matching, scored) where ``expected`` (rounded to ``dtype``) is defined (not None/nan
    marker -2): nan matches nan, inf matches inf of its sign, numbers within 2 ulps (0 == -0)."""
    got = np.asarray(got, dtype=np.float64)
    exp = np.asarray(expected, dtype=np.float64)
    with np.errstate(all="ignore"):
        exp_d = exp.astype(dtype).astype(np.float64)
        same = (np.isnan(exp_d) & np.isnan(got)) | (exp_d == got)
        close = np.isfinite(exp_d) & (
            np.abs(got - exp_d) <= 2 * np.spacing(np.abs(exp_d).astype(dtype)).astype(np.float64)
        )
    ok = same | close
    return int(ok.sum()), len(ok)


def special_expected(op: str, args, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(expected, scored mask) at special points for output ``k`` (0 forward, 1.. gradients)."""
    from compiler.ir.registry import OPS

    spec = OPS[op]
    hi = reference(op, args)[k][0]
    n = len(args[0])
    nan_in = np.zeros(n, dtype=bool)
    for a in args:
        nan_in |= np.isnan(a)
    with np.errstate(all="ignore"):
        forward = np.asarray(spec.numpy(*args), dtype=np.float64) * np.ones(n)
    if k == 0:
        expected = np.where(np.isnan(hi), forward, hi)  # NumPy's where mpmath has none
        scored = np.ones(n, dtype=bool)
    else:  # a gradient at a nan operand is not scored (add's is 1, by its rule)
        expected = hi
        scored = ~np.isnan(hi) & ~nan_in
    return expected, scored


# ------------------------------------------------------------------ symgrad's kernels
@contextmanager
def on_tier(tier: str):
    """The policy patched so that a kernel compiled within answers from ``tier`` (as
    tests/test_oracle.py does); yields the ``mode`` to compile with."""
    from runtime import policy

    saved = (policy.LLVM_OPS, policy.LLVM_TRIG)
    try:
        if tier == "numba":
            policy.LLVM_OPS, policy.LLVM_TRIG = 10**9, False
        elif tier == "llvm":
            policy.LLVM_OPS = -1
        yield "compiled" if tier in ("numba", "llvm") else tier
    finally:
        policy.LLVM_OPS, policy.LLVM_TRIG = saved


VARS = ("x", "y", "z")


def expression(op: str) -> str:
    from compiler.ir.registry import OPS

    spec = OPS[op]
    return spec.text.format(**dict(zip("abc", VARS[: spec.arity])))


def symgrad_outputs(op: str, args, dtype: str, tier: str) -> list[np.ndarray]:
    """[forward, gradient to each operand] by symgrad's compiled gradient of ``op(x, ...)``."""
    import compiler
    from compiler.ir.registry import OPS

    spec = OPS[op]
    names = VARS[: spec.arity]
    with on_tier(tier) as mode:
        k = compiler.compile_gradient(expression(op), inputs=names, mode=mode)
        with np.errstate(all="ignore"):  # 1e300 is inf in float32: a special point
            kwargs = {v: np.ascontiguousarray(a, dtype=dtype) for v, a in zip(names, args)}
            value, grads = k.value_and_grad(**kwargs)
    return [np.asarray(value, dtype=np.float64)] + [
        np.asarray(grads[v], dtype=np.float64) * np.ones(len(args[0])) for v in names
    ]


def _where_worst(err, normal, args) -> list[float]:
    e = np.where(normal & ~np.isnan(err), err, -1.0)
    i = int(np.argmax(e))
    return [float(a[i]) for a in args] if e[i] >= 0 else []


def on_kink(op: str, args) -> np.ndarray:
    """Points where one of the entry's ``kinks`` (NumPy text over a, b, c) is 0."""
    from compiler.ir.registry import OPS

    names = {k: v for k, v in vars(np).items() if not k.startswith("_")}
    mask = np.zeros(len(args[0]), dtype=bool)
    with np.errstate(all="ignore"):
        for text in OPS[op].kinks:
            value = eval(text, names, dict(zip("abc", args)))  # noqa: S307 - the table's own text
            mask |= np.asarray(value) * np.ones(len(args[0])) == 0
    return mask


def worst(err: np.ndarray) -> float:
    e = err[~np.isnan(err)]
    return float(e.max()) if e.size else 0.0


def measure(op: str, outputs_of, size: str = "full") -> dict:
    """{dtype: {"f"|"d0"|"d1"..: {"ulp": worst, "special": [ok, scored]}}} for the outputs
    ``outputs_of(op, args, dtype)`` returns ([forward, grads...], or None where lacking)."""
    result = {}
    sample = points(op, size)
    special = special_points(op)
    for dtype in DTYPES:
        args = sample[dtype]
        ref = reference(op, args)
        got = outputs_of(op, args, dtype)
        if got is None:
            continue
        got_special = outputs_of(op, special, dtype)
        row = {}
        for j, (hi, lo) in enumerate(ref):
            key = "f" if j == 0 else f"d{j - 1}"
            if got[j] is None:
                continue
            err = ulps(got[j], hi, lo, dtype)
            normal = np.abs(hi) >= float(np.finfo(dtype).tiny)
            if j > 0:  # gradients at kinks follow the kink table (tested apart), not diff's
                err = np.where(on_kink(op, args), np.nan, err)
            expected, scored = special_expected(op, special, j)
            # exact values beyond the dtype's range are special values too
            beyond = np.isfinite(hi) & (np.abs(hi) > float(np.finfo(dtype).max))
            ok, n = special_ok(got_special[j][scored], expected[scored], dtype)
            ok2, n2 = special_ok(got[j][beyond], hi[beyond], dtype)
            at = _where_worst(err, normal, args)
            row[key] = {
                "ulp": worst(err[normal]),
                "underflow": worst(err[~normal]),
                "special": [ok + ok2, n + n2],
                "at": at,
            }
        result[dtype] = row
    return result


def symgrad_measure(op: str, size: str = "full", tiers=TIERS) -> dict:
    """symgrad's figures, the worst over ``tiers`` (and which tier gave it)."""
    per_tier = {
        t: measure(op, lambda o, a, d, t=t: symgrad_outputs(o, a, d, t), size) for t in tiers
    }
    out: dict = {}
    for t, res in per_tier.items():
        for dtype, row in res.items():
            for key, cell in row.items():
                have = out.setdefault(dtype, {}).setdefault(key, None)
                if have is None or (cell["ulp"], cell["underflow"]) > (
                    have["ulp"],
                    have["underflow"],
                ):
                    new = dict(cell, tier=t)
                    if have is not None:
                        new["special"] = min(have["special"], cell["special"])
                    out[dtype][key] = new
                else:
                    have["special"] = min(have["special"], cell["special"])
    return out


def fresh_cache_dir() -> str:
    return os.environ.get("SYMGRAD_CACHE_DIR") or tempfile.mkdtemp(prefix="symgrad-acc-")

"""T1 — tensor programs (issue 3): two networks' loss and weight gradients, each compiled kernel
side by side with the same computation written by hand.

(a) The lecture's example 5 (``shared/LECTURE.md``): ``sum((1/(1+exp(-(x @ w1))) @ w2 - y)**2)``
    at N, D_in, H, D_out = 64, 1000, 100, 10, gradients for w1 and w2.
(b) The batched 2-layer ReLU network ``sum((maximum(0, X @ W1) @ W2 - Y)**2) / B`` at
    B, D, H, C = 100, 4096, 100, 10, gradients for W1 and W2.

Contenders: the lecture's hand-written NumPy lines (the reference; for (b) the same lines with the
ReLU), hand-written Numba (one ``@njit`` function with ``np.dot`` and fused loops; and ``@njit``
loops with NumPy's ``@`` between them), symgrad's ``value_and_grad`` and forward ``k(...)``, and two
diagnostics: symgrad's generated ``value_and_grad`` called directly (no binding or checks) and the
matrix products alone. Before anything is timed every contender's value and gradients must equal
the reference's to rtol 1e-10 (plus an atol of 1e-10 · max|reference| for entries that cancel, as
``tests/test_tensor_lecture.py`` checks); a contender that does not is reported as failed.
"""

from __future__ import annotations

import ast
import copy
import gc
import inspect
import math
import statistics
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numba import njit

from benchmarks import startup
from benchmarks.harness import (
    Contender,
    Result,
    Target,
    agreement_table,
    fmt_num,
    md_table,
    missing_modules,
    paired_ratio,
    run_contenders,
    source_details,
    timing_table,
)
from benchmarks.workloads import Options, Section, Workload

# Targets (issue 3).
RATIO_VS_NUMPY = 1.1  # compiled value_and_grad ÷ hand-written NumPy: both bound by the same BLAS
VG_OVER_FORWARD = 3.0
RTOL = 1e-10  # agreement demanded before timing


@dataclass(frozen=True)
class Problem:
    key: str  # "a" or "b"
    title: str
    text: str
    shapes: dict[str, tuple[str, ...]]
    wrt: tuple[str, ...]
    full: dict[str, int]
    quick: dict[str, int]


EX5 = Problem(
    "a",
    "(a) the lecture's example 5: sigmoid network",
    "sum((1/(1+exp(-(x @ w1))) @ w2 - y)**2)",
    {"x": ("N", "D_in"), "w1": ("D_in", "H"), "w2": ("H", "D_out"), "y": ("N", "D_out")},
    ("w1", "w2"),
    {"N": 64, "D_in": 1000, "H": 100, "D_out": 10},
    {"N": 16, "D_in": 100, "H": 20, "D_out": 5},
)
RELU = Problem(
    "b",
    "(b) batched 2-layer ReLU network",
    "sum((maximum(0, X @ W1) @ W2 - Y)**2) / B",
    {"X": ("B", "D"), "W1": ("D", "H"), "W2": ("H", "C"), "Y": ("B", "C")},
    ("W1", "W2"),
    {"B": 100, "D": 4096, "H": 100, "C": 10},
    {"B": 20, "D": 256, "H": 20, "C": 5},
)
PROBLEMS = (EX5, RELU)


def sizes_text(sizes: dict[str, int]) -> str:
    return ", ".join(f"{k} = {v:,}" for k, v in sizes.items())


def make_data(p: Problem, sizes: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """(a) as the homework: x, y, w1, w2 standard normal (drawn in that order, as the tests do).
    (b) X, Y standard normal, W1 and W2 standard normal scaled by sqrt(2 / fan-in) (He)."""
    rng = np.random.default_rng(seed)
    if p is EX5:
        n, d, h, o = (sizes[k] for k in ("N", "D_in", "H", "D_out"))
        x = rng.standard_normal((n, d))
        y = rng.standard_normal((n, o))
        w1 = rng.standard_normal((d, h))
        w2 = rng.standard_normal((h, o))
        return {"x": x, "w1": w1, "w2": w2, "y": y}
    b, d, h, c = (sizes[k] for k in ("B", "D", "H", "C"))
    X = rng.standard_normal((b, d))
    Y = rng.standard_normal((b, c))
    W1 = rng.standard_normal((d, h)) * math.sqrt(2.0 / d)
    W2 = rng.standard_normal((h, c)) * math.sqrt(2.0 / h)
    return {"X": X, "W1": W1, "W2": W2, "Y": Y}


# ---------------------------------------------------------------- (1) hand-written NumPy
def numpy_ex5(x, w1, w2, y):
    """The lecture's lines (example 5), as written."""
    h = 1 / (1 + np.exp(-x.dot(w1)))
    y_pred = h.dot(w2)
    loss = np.square(y_pred - y).sum()
    grad_y_pred = 2.0 * (y_pred - y)
    grad_w2 = h.T.dot(grad_y_pred)
    grad_h = grad_y_pred.dot(w2.T)
    grad_w1 = x.T.dot(grad_h * h * (1 - h))
    return loss, {"w1": grad_w1, "w2": grad_w2}


def numpy_relu(X, W1, W2, Y):
    """The same lines for the batched ReLU network (the ReLU's backward as the classic
    hand-written two-layer net masks it)."""
    B = X.shape[0]
    h_pre = X.dot(W1)
    h = np.maximum(h_pre, 0)
    y_pred = h.dot(W2)
    loss = np.square(y_pred - Y).sum() / B
    grad_y_pred = 2.0 * (y_pred - Y) / B
    grad_W2 = h.T.dot(grad_y_pred)
    grad_h = grad_y_pred.dot(W2.T)
    grad_h[h_pre <= 0] = 0  # relu'(0) = 0
    grad_W1 = X.T.dot(grad_h)
    return loss, {"W1": grad_W1, "W2": grad_W2}


NUMPY = {"a": numpy_ex5, "b": numpy_relu}


# ---------------------------------------------------------------- (2) hand-written Numba
@njit(error_model="numpy")
def numba_ex5(x, w1, w2, y):
    """Everything in one @njit function: np.dot for the products, one loop per elementwise
    region (sigmoid; residual, loss and its gradient; the sigmoid's backward)."""
    a = np.dot(x, w1)
    n, hh = a.shape
    h = np.empty_like(a)
    for i in range(n):
        for j in range(hh):
            h[i, j] = 1.0 / (1.0 + math.exp(-a[i, j]))
    p = np.dot(h, w2)
    g = np.empty_like(p)
    loss = 0.0
    for i in range(n):
        for j in range(p.shape[1]):
            d = p[i, j] - y[i, j]
            loss += d * d
            g[i, j] = 2.0 * d
    grad_w2 = np.dot(h.T, g)
    gh = np.dot(g, w2.T)
    for i in range(n):
        for j in range(hh):
            s = h[i, j]
            gh[i, j] *= s * (1.0 - s)
    grad_w1 = np.dot(x.T, gh)
    return loss, grad_w1, grad_w2


@njit(error_model="numpy")
def numba_relu(X, W1, W2, Y):
    a = np.dot(X, W1)
    b, hh = a.shape
    h = np.empty_like(a)
    for i in range(b):
        for j in range(hh):
            v = a[i, j]
            h[i, j] = v if v > 0.0 else 0.0
    p = np.dot(h, W2)
    g = np.empty_like(p)
    loss = 0.0
    for i in range(b):
        for j in range(p.shape[1]):
            d = p[i, j] - Y[i, j]
            loss += d * d
            g[i, j] = 2.0 * d / b
    grad_W2 = np.dot(h.T, g)
    gh = np.dot(g, W2.T)
    for i in range(b):
        for j in range(hh):
            if a[i, j] <= 0.0:
                gh[i, j] = 0.0
    grad_W1 = np.dot(X.T, gh)
    return loss / b, grad_W1, grad_W2


NUMBA = {"a": numba_ex5, "b": numba_relu}


# @njit loops only; the products stay NumPy's `@` (the split symgrad's generated code makes).
@njit(error_model="numpy")
def _sigmoid_loop(a):
    h = np.empty_like(a)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            h[i, j] = 1.0 / (1.0 + math.exp(-a[i, j]))
    return h


@njit(error_model="numpy")
def _relu_loop(a):
    h = np.empty_like(a)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            v = a[i, j]
            h[i, j] = v if v > 0.0 else 0.0
    return h


@njit(error_model="numpy")
def _residual_loop(p, y, scale):
    g = np.empty_like(p)
    loss = 0.0
    for i in range(p.shape[0]):
        for j in range(p.shape[1]):
            d = p[i, j] - y[i, j]
            loss += d * d
            g[i, j] = 2.0 * d * scale
    return loss * scale, g


@njit(error_model="numpy")
def _sigmoid_back_loop(gh, h):
    for i in range(gh.shape[0]):
        for j in range(gh.shape[1]):
            s = h[i, j]
            gh[i, j] *= s * (1.0 - s)
    return gh


@njit(error_model="numpy")
def _relu_back_loop(gh, a):
    for i in range(gh.shape[0]):
        for j in range(gh.shape[1]):
            if a[i, j] <= 0.0:
                gh[i, j] = 0.0
    return gh


def loops_ex5(x, w1, w2, y):
    h = _sigmoid_loop(x @ w1)
    loss, g = _residual_loop(h @ w2, y, 1.0)
    grad_w2 = h.T @ g
    grad_w1 = x.T @ _sigmoid_back_loop(g @ w2.T, h)
    return loss, {"w1": grad_w1, "w2": grad_w2}


def loops_relu(X, W1, W2, Y):
    a = X @ W1
    h = _relu_loop(a)
    loss, g = _residual_loop(h @ W2, Y, 1.0 / X.shape[0])
    grad_W2 = h.T @ g
    grad_W1 = X.T @ _relu_back_loop(g @ W2.T, a)
    return loss, {"W1": grad_W1, "W2": grad_W2}


LOOPS = {"a": loops_ex5, "b": loops_relu}


def products_ex5(x, w1, w2, y):
    """The five matrix products of value_and_grad and nothing else (a floor for every row)."""
    a = x @ w1
    p = a @ w2
    return p, {"w1": x.T @ a, "w2": a.T @ p, "h": p @ w2.T}


def products_relu(X, W1, W2, Y):
    a = X @ W1
    p = a @ W2
    return p, {"W1": X.T @ a, "W2": a.T @ p, "h": p @ W2.T}


PRODUCTS = {"a": products_ex5, "b": products_relu}


# ---------------------------------------------------------------- (3) symgrad
_KERNELS: dict[str, Any] = {}


def kernel(p: Problem):
    if p.key not in _KERNELS:
        import compiler

        _KERNELS[p.key] = compiler.compile_gradient(
            p.text, shapes=p.shapes, wrt=list(p.wrt), mode="compiled"
        )
    return _KERNELS[p.key]


def _contenders(p: Problem) -> list[Contender]:
    names = list(p.shapes)
    ref, loops, products, hw = NUMPY[p.key], LOOPS[p.key], PRODUCTS[p.key], NUMBA[p.key]

    def args(data):
        return [data[n] for n in names]

    def make_numpy(data):
        a = args(data)
        return lambda: ref(*a)

    def make_numba(data):
        a = args(data)

        def run():
            loss, g1, g2 = hw(*a)
            return loss, dict(zip(p.wrt, (g1, g2)))

        return run

    def make_loops(data):
        a = args(data)
        return lambda: loops(*a)

    def make_vg(data):
        k = kernel(p)
        return lambda: k.value_and_grad(**data)

    def make_fwd(data):
        k = kernel(p)
        return lambda: (k(**data), None)

    def make_raw(data):
        """The generated module's value_and_grad, called directly: the Kernel's per-call work
        (binding, shape checks, seed, errstate) left out. Runtime internals: if they change,
        this row reports a failure."""
        k = kernel(p)
        module = k._module(True)
        a = [*args(data), 1.0]

        def run():
            value, grads = module.value_and_grad(*a)
            return value, dict(zip(p.wrt, grads))

        return run

    def make_products(data):
        a = args(data)
        return lambda: products(*a)

    vg = f"{p.key}-vg"
    C = Contender
    return [
        C(f"{p.key}-numpy", "hand-written NumPy (the lecture's lines)", make_numpy, "reference",
          compare_with=vg),
        C(f"{p.key}-numba", "hand-written Numba: one @njit function, np.dot + fused loops",
          make_numba, "limit", compare_with=vg),
        C(f"{p.key}-loops", "hand-written Numba loops, NumPy @ for the products", make_loops,
          "limit", compare_with=vg),
        C(vg, "symgrad value_and_grad", make_vg, "symgrad", compare_with=vg),
        C(f"{p.key}-fwd", "symgrad forward k(...) — ratio is value_and_grad ÷ forward", make_fwd,
          "symgrad", compare_with=vg),
        C(f"{p.key}-raw", "diagnostic: symgrad's generated value_and_grad called directly",
          make_raw, "floor", compare_with=vg),
        C(f"{p.key}-products", "floor: the five matrix products alone (NumPy @)", make_products,
          "floor", check=False, compare_with=vg),
    ]  # fmt: skip


# ---------------------------------------------------------------- agreement before timing
def verify(out, ref, rtol: float = RTOL) -> None:
    """Value and every gradient equal to the reference's to ``rtol`` (gradients: plus an atol of
    ``rtol`` · max|reference|); raises AssertionError naming what differs."""
    value, grads = out
    np.testing.assert_allclose(float(value), float(ref[0]), rtol=rtol, atol=0, err_msg="value")
    if grads is None:
        return
    for name, r in ref[1].items():
        g = np.asarray(grads[name])
        assert g.shape == r.shape, f"{name}: shape {g.shape}, reference {r.shape}"
        atol = rtol * float(np.max(np.abs(r))) if r.size else 0.0
        np.testing.assert_allclose(g, r, rtol=rtol, atol=atol, err_msg=name)


def _prepare(contenders, data, reference: str, log) -> tuple[list[Contender], dict[str, float]]:
    """Make every contender and call it once (its first call, timed: compiling), check it against
    the reference to RTOL, and hand the harness contenders whose ``make`` returns the prepared
    ``run`` (or raises what went wrong, so the harness reports it as failed and times nothing)."""
    firsts: dict[str, float] = {}
    ref_out = None
    prepared = []
    for c in sorted(contenders, key=lambda c: c.name != reference):
        if missing_modules(c.requires):
            prepared.append(c)
            continue
        run, err = None, None
        try:
            t0 = time.perf_counter()
            run = c.make(data)
            out = run()
            firsts[c.name] = time.perf_counter() - t0
            if c.name == reference:
                ref_out = out
            elif c.check:
                verify(out, ref_out)
            what = "reference" if c.name == reference else f"agrees to rtol {RTOL:g}"
            log(f"  {c.name}: first call {firsts[c.name] * 1e3:.1f} ms, {what}")
        except Exception as e:
            err = e
            if isinstance(e, AssertionError):
                msg = " ".join(str(e).split())[:150]
                err = AssertionError(f"disagrees with the reference beyond rtol {RTOL:g}: {msg}")
            log(f"  {c.name}: {type(err).__name__}: {err}")

        def make(_data, run=run, err=err):
            if err is not None:
                raise err
            return run

        prepared.append(replace(c, make=make))
    order = {c.name: i for i, c in enumerate(contenders)}
    return sorted(prepared, key=lambda c: order[c.name]), firsts


# ---------------------------------------------------------------- where the time goes
def _instrument(fn_def: ast.FunctionDef, src: str, namespace: dict) -> tuple[Callable, list[str]]:
    """A copy of the function that also returns ``perf_counter()`` readings around each
    top-level statement; and the statements' text."""
    labels, body = [], [ast.parse("_T_ = [_pc_()]").body[0]]
    for stmt in fn_def.body:
        if isinstance(stmt, ast.Expr) and isinstance(getattr(stmt, "value", None), ast.Constant):
            continue  # docstring
        labels.append(" ".join((ast.get_source_segment(src, stmt) or "?").split()))
        if isinstance(stmt, ast.Return):
            body.append(ast.parse("_R_ = 0").body[0])
            body[-1].value = stmt.value
            body.append(ast.parse("_T_.append(_pc_())").body[0])
            body.append(ast.parse("return _R_, _T_").body[0])
        else:
            body += [stmt, ast.parse("_T_.append(_pc_())").body[0]]
    fn_def = copy.copy(fn_def)
    fn_def.name, fn_def.body, fn_def.decorator_list, fn_def.returns = "_timed_", body, [], None
    mod = ast.fix_missing_locations(ast.Module(body=[fn_def], type_ignores=[]))
    ns = dict(namespace, _pc_=time.perf_counter)
    exec(compile(mod, "<timed>", "exec"), ns)
    return ns["_timed_"], labels


def _function_def(src: str, name: str) -> ast.FunctionDef:
    for node in ast.parse(src).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise LookupError(name)


def line_profiles(p: Problem, data, rounds: int) -> dict[str, list[tuple[str, float]]]:
    """Median time of each statement of the reference NumPy lines and of symgrad's generated
    ``value_and_grad``, interleaved over ``rounds`` calls, garbage collector off."""
    ref = NUMPY[p.key]
    ref_src = textwrap.dedent(inspect.getsource(ref))
    k = kernel(p)
    module = k._module(True)
    gen_src = k.source
    timed = {
        "hand-written NumPy": (
            _instrument(_function_def(ref_src, ref.__name__), ref_src, ref.__globals__),
            [data[n] for n in p.shapes],
        ),
        "symgrad generated value_and_grad": (
            _instrument(_function_def(gen_src, "value_and_grad"), gen_src, vars(module)),
            [*(data[n] for n in p.shapes), 1.0],
        ),
    }
    samples: dict[str, list[list[float]]] = {name: [] for name in timed}
    gc.collect()
    gc.disable()
    try:
        with np.errstate(all="ignore"):
            for i in range(rounds + 3):
                for name, ((fn, _), a) in timed.items():
                    _, ts = fn(*a)
                    if i >= 3:  # warm-up
                        samples[name].append(np.diff(ts))
    finally:
        gc.enable()
    out = {}
    for name, ((_, labels), _) in timed.items():
        med = np.median(np.asarray(samples[name]), axis=0)
        out[name] = list(zip(labels, med.tolist()))
    return out


def _profile_table(profile: list[tuple[str, float]]) -> str:
    total = sum(t for _, t in profile)
    rows = [
        [f"`{label[:90]}`", f"{t * 1e6:.1f}", f"{100 * t / total:.0f}%"] for label, t in profile
    ]
    rows.append(["**sum of the medians**", f"**{total * 1e6:.1f}**", ""])
    return md_table(["statement", "median µs", "share"], rows)


# ---------------------------------------------------------------- start-up (subprocesses)
_SYMGRAD_CHILD = """
import numpy as np
import compiler
from benchmarks.workloads.network import PROBLEMS, make_data
MARKS['imported'] = _t.perf_counter()
p = [q for q in PROBLEMS if q.key == {key!r}][0]
data = make_data(p, {sizes!r})
MARKS['ready'] = _t.perf_counter()
k = compiler.compile_gradient(p.text, shapes=p.shapes, wrt=list(p.wrt), mode="compiled")
MARKS['compiled'] = _t.perf_counter()
value, grads = k.value_and_grad(**data)
MARKS['first'] = _t.perf_counter()
k(**data)
MARKS['forward'] = _t.perf_counter()
"""

_NUMBA_CHILD = """
import numpy as np
from numba import njit
from benchmarks.workloads.network import NUMBA, PROBLEMS, make_data
MARKS['imported'] = _t.perf_counter()
p = [q for q in PROBLEMS if q.key == {key!r}][0]
data = make_data(p, {sizes!r})
MARKS['ready'] = _t.perf_counter()
f = njit(cache=True, error_model="numpy")(NUMBA[p.key].py_func)
MARKS['compiled'] = _t.perf_counter()
f(*[data[n] for n in p.shapes])
MARKS['first'] = _t.perf_counter()
"""


def _forward_first(runs: list[startup.ChildRun]) -> float:
    vals = [r.marks["forward"] - r.marks["first"] for r in runs if "forward" in r.marks]
    return statistics.median(vals) if vals else math.nan


def _share(runs: list[startup.ChildRun]) -> str:
    vals = [r.others for r in runs if not math.isnan(r.others)]
    return f"{100 * statistics.median(vals):.0f}%" if vals else "?"


def _startup(opts: Options, problems, log) -> str:
    cold_runs, warm_runs = (1, 1) if opts.quick else (3, 5)
    tries = 1 if opts.quick else startup.TRIES
    s = startup
    rows = []
    for p in problems[:1] if opts.quick else problems:  # --quick: (a) only, one run each
        sizes = p.quick if opts.quick else p.full
        log(f"  start-up {p.key}: symgrad")
        body = _SYMGRAD_CHILD.format(key=p.key, sizes=sizes)
        colds, warms = s.cold_and_warm(body, cold=cold_runs, warm=warm_runs, tries=tries, log=log)
        warms = warms[""]
        for what, runs in (("cold (empty cache)", colds), ("warm (cache filled)", warms)):
            rows.append(
                [f"{p.key}: symgrad {what}", len(runs),
                 fmt_num(s.median(runs, "build"), "s"), fmt_num(s.median(runs, "first_call"), "s"),
                 f"**{fmt_num(s.median(runs, 'compile_to_first'), 's')}**",
                 s.span(runs, "compile_to_first"), fmt_num(_forward_first(runs), "s"),
                 fmt_num(s.median(runs, "launch_to_first"), "s"), _share(runs)]
            )  # fmt: skip
        if opts.quick:
            continue
        log(f"  start-up {p.key}: hand-written Numba")
        hw_cold, hw_warm = s.cold_and_warm(
            _NUMBA_CHILD.format(key=p.key, sizes=sizes),
            cold=max(1, cold_runs - 1),
            warm=max(1, warm_runs - 2),
            cache_var="NUMBA_CACHE_DIR",
            tries=tries,
            log=log,
        )
        for what, runs in (("cold", hw_cold), ("warm", hw_warm[""])):
            rows.append(
                [f"{p.key}: reference: hand-written Numba (one @njit function), cache=True, "
                 f"{what}", len(runs), "", "",
                 f"**{fmt_num(s.median(runs, 'compile_to_first'), 's')}**",
                 s.span(runs, "compile_to_first"), "",
                 fmt_num(s.median(runs, "launch_to_first"), "s"), _share(runs)]
            )  # fmt: skip
    headers = ["run", "runs", "compile_gradient", "first value_and_grad",
               "compile + first call (median)", "min–max", "then first forward k(...)",
               "launch → first result", "others' CPU"]  # fmt: skip
    return md_table(headers, rows)


# ---------------------------------------------------------------- targets and the section
def _med(by: dict[str, Result], name: str) -> float:
    r = by.get(name)
    return r.stats.median if r is not None and r.ok else math.nan


def _targets(p: Problem, by: dict[str, Result], quick: bool, profile) -> list[Target]:
    note = "--quick: tiny sizes, too small to judge" if quick else ""
    k = p.key
    vg, fwd, ref, raw = f"{k}-vg", f"{k}-fwd", f"{k}-numpy", f"{k}-raw"

    def ratio(ours: str, theirs: str) -> tuple[float, str]:
        a, b = by.get(ours), by.get(theirs)
        if a is None or b is None or not a.ok or not b.ok:
            return math.nan, ""
        r, q1, q3 = paired_ratio(a, b)
        return r, f"per-round IQR {q1:.2f}–{q3:.2f}"

    def ms_(name: str) -> str:
        return f"{_med(by, name) * 1e3:.3f} ms"

    why = (
        f"symgrad {ms_(vg)}, the NumPy lines {ms_(ref)}; the five matrix products alone take "
        f"{ms_(f'{k}-products')}. symgrad's generated value_and_grad called directly takes "
        f"{ms_(raw)}, so the Kernel's per-call work (binding, shape checks, seed) adds "
        f"{(_med(by, vg) - _med(by, raw)) * 1e3:.3f} ms and the generated code itself "
        f"{(_med(by, raw) - _med(by, ref)) * 1e3:+.3f} ms against the NumPy lines"
    )
    if profile:
        gen = profile.get("symgrad generated value_and_grad", [])
        hand = profile.get("hand-written NumPy", [])
        loops = sum(t for label, t in gen if "_loop" in label)
        mm = sum(t for label, t in gen if "@" in label)
        ref_mm = sum(t for label, t in hand if ".dot(" in label)
        why += (
            f". Line by line (tables below): the generated code spends {loops * 1e3:.3f} ms in "
            f"its fused Numba loops and {mm * 1e3:.3f} ms in the statements that multiply "
            f"matrices; the NumPy lines {ref_mm * 1e3:.3f} ms in theirs (`.dot(` statements, "
            "some with elementwise work inside)"
        )
    t = []
    r, sp = ratio(vg, ref)
    t.append(Target(f"T1{k} symgrad value_and_grad ÷ hand-written NumPy", r, RATIO_VS_NUMPY,
                    spread=sp, note=note, why=why))  # fmt: skip
    r, sp = ratio(vg, fwd)
    t.append(Target(f"T1{k} symgrad value_and_grad ÷ its forward k(...)", r, VG_OVER_FORWARD,
                    spread=sp, note=note,
                    why=f"forward {ms_(fwd)}: one large product (input @ first layer) and a "
                        "small one; value_and_grad adds one more large product (the first "
                        "layer's gradient, input.T @ upstream) and two small ones"))  # fmt: skip
    return t


def _run_problem(p: Problem, opts: Options, log) -> tuple[list[str], list[Target], float]:
    sizes = p.quick if opts.quick else p.full
    repeats = opts.repeats or (10 if opts.quick else 200)
    log(f"T1 {p.title}: {sizes_text(sizes)}, {repeats} quiet interleaved rounds wanted")
    data = make_data(p, sizes, opts.seed)
    contenders, firsts = _prepare(_contenders(p), data, f"{p.key}-numpy", log)
    # Numba's np.dot calls SciPy's own OpenBLAS, whose idle threads spin for ~0.1 s after each
    # product: interleaved with NumPy's OpenBLAS on two cores, each pool halves the other's
    # cores (measured: NumPy's lines 0.65 -> 4.0 ms). That contender gets its own group.
    apart = {f"{p.key}-numba"}
    groups = [
        [c for c in contenders if c.name not in apart],
        [c for c in contenders if c.name in apart or c.name in (f"{p.key}-numpy", f"{p.key}-vg")],
    ]
    timings = [
        run_contenders(
            group,
            data,
            reference=f"{p.key}-numpy",
            repeats=repeats if i == 0 else max(10, repeats // 4),
            warmup=2 if opts.quick else 10,
            min_sample=0.001 if opts.quick else 0.01,
            budget=opts.budget if opts.budget is not None else (0.0 if opts.quick else 300.0),
            log=log,
        )
        for i, group in enumerate(groups)
        if any(c.name in apart for c in group) or i == 0
    ]
    timed = timings[0]
    results = timed.results
    separate = [r for t in timings[1:] for r in t.results if r.contender.name in apart]
    for r in [r for t in timings for r in t.results]:  # first calls happened in _prepare
        r.first_call = firsts.get(r.contender.name, math.nan)
    by = {r.contender.name: r for r in results}
    profile = None
    try:
        profile = line_profiles(p, data, 20 if opts.quick else 300)
    except Exception as e:  # an inspection detail must not fail the report
        log(f"  line profile unavailable: {type(e).__name__}: {e}")
    targets = _targets(p, by, opts.quick, profile)

    shapes = ", ".join(f"{n} {sh}" for n, sh in p.shapes.items())
    parts = [
        f"### {p.title}",
        "",
        f"`{p.text}` with {shapes}; {sizes_text(sizes)}; value and the gradients for "
        f"{' and '.join(p.wrt)}. {timed.describe()}. Every contender agreed with the reference "
        f"to rtol {RTOL:g} before timing (else it is listed as failed). Each round calls every "
        "contender once, in a fresh random order; garbage collector off. The "
        "first call is make + the first call in this process (symgrad: `compile_gradient`, "
        "loading or compiling the module, the call); its cache is whatever `SYMGRAD_CACHE_DIR` "
        "held (cold and warm starts are measured below in fresh processes). The last column "
        "divides symgrad value_and_grad's median by this row's (above 1: symgrad is slower), "
        "with the quartiles of the same ratio taken round by round.",
        "",
        "#### Time per call",
        "",
        timing_table(results),
        "",
        "#### Agreement with the hand-written NumPy reference",
        "",
        agreement_table(results + separate),
    ]
    for extra in timings[1:]:
        parts += [
            "",
            "#### Numba's np.dot, timed apart",
            "",
            "The one-function Numba version multiplies with `np.dot`, which Numba hands to "
            "SciPy's OpenBLAS, a second BLAS beside NumPy's. OpenBLAS's idle threads spin for "
            "about 0.1 s after each product, so on two cores, interleaving the two libraries "
            "halves each one's cores (measured here: the NumPy lines go from 0.65 to 4.0 ms per "
            "call). It is therefore timed in its own interleaved rounds with the NumPy lines and "
            f"symgrad's value_and_grad: {extra.describe()}. Both of those suffer its spinning "
            "threads too; compare with the table above for their undisturbed times.",
            "",
            timing_table(extra.results),
        ]
    if profile:
        parts += [
            "",
            "#### Where the time goes: each statement's median, interleaved calls",
            "",
            "The reference function and symgrad's generated `value_and_grad` (from "
            "`k.source`), each re-run with a `perf_counter()` reading after every statement "
            f"({20 if opts.quick else 300} calls each, alternating; the timer adds ~0.1 µs a "
            "statement).",
            "",
        ]
        for name, prof in profile.items():
            parts += [f"{name}:", "", _profile_table(prof), ""]
    worst = max(
        (r.agreement.worst_rel for r in results + separate if r.ok and r.agreement is not None),
        default=0.0,
    )
    return parts, targets, worst


def run(opts: Options, log: Callable[[str], None]) -> Section:
    parts: list[str] = []
    targets: list[Target] = []
    worst = 0.0
    for p in PROBLEMS:
        ps, ts, w = _run_problem(p, opts, log)
        parts += ps
        targets += ts
        worst = max(worst, w)
    if opts.startup:
        parts += [
            "### First call: cold compile and warm start (fresh `python -c` processes)",
            "",
            "Cold: a new empty `SYMGRAD_CACHE_DIR`; the figure is `compile_gradient` + the first "
            "`value_and_grad` (inputs made beforehand, not counted); the next column is the "
            "first forward call after it (its own entry point: it compiles its own loops). "
            "Warm: the same cache again. `launch → first result` adds the interpreter's start "
            "and the imports. The reference compiles the hand-written one-function Numba version "
            "with `@njit(cache=True)` (`NUMBA_CACHE_DIR` empty, then full).",
            "",
            _startup(opts, PROBLEMS, log),
        ]
    parts += source_details(
        lambda: kernel(EX5).source,
        "def value_and_grad(",
        "\n# A vjp",
        "The value_and_grad code symgrad generated for (a)",
    )
    text = "\n".join(parts)
    size = "quick sizes" if opts.quick else "64×1000×100×10 and 100×4096×100×10"
    title = f"T1 — Tensor programs (issue 3): example 5 and a batched ReLU network, {size}"
    return Section("T1", title, text, targets, worst)


WORKLOAD = Workload("T1", "network", "tensor programs: example 5 and a batched ReLU net", run)

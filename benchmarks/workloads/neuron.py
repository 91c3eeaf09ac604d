"""F1 — the lecture's neuron f = 1/(1+exp(-(w0*x0+w1*x1+w2))), value and all five gradients,
every input an array of N float64 samples (N = 1,000,000; 10,000 with ``--quick``).
"""

from __future__ import annotations

import importlib.util
import math
import statistics
from collections.abc import Callable

import numpy as np
from numba import njit, prange

from benchmarks import startup
from benchmarks.harness import (
    Contender,
    Result,
    Target,
    agreement_table,
    fmt_num,
    md_table,
    paired_ratio,
    run_contenders,
    source_details,
    timing_table,
)
from benchmarks.workloads import Options, Section, Workload

EXPR = "1/(1+exp(-(w0*x0+w1*x1+w2)))"
NAMES = ("w0", "x0", "w1", "x1", "w2")
N_FULL = 1_000_000
N_QUICK = 10_000
N_SMALL = 100  # start-up at a size small enough for symgrad's serial loop

# Targets (issue 2; the last from issue 7).
SPEEDUP_VS_NUMPY = 3.0
RATIO_VS_NUMBA = 1.2
RATIO_VS_NUMBA_ISSUE7 = 1.1
VG_OVER_FORWARD = 2.0
COLD_COMPILE_S = 1.5
WARM_FIRST_S = 0.6


def make_data(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(n) for name in NAMES}


# ---------------------------------------------------------------- (1) the lecture's NumPy, gate by gate
def numpy_lecture(w0, x0, w1, x1, w2):
    """Forward then backward exactly as LECTURE.md walks the neuron's graph."""
    # forward: one line per gate
    a = w0 * x0  # *
    b = w1 * x1  # *
    s = a + b  # +
    z = s + w2  # +
    m = -z  # *(-1)
    e = np.exp(m)  # exp
    d = 1.0 + e  # +1
    f = 1.0 / d  # 1/x
    # backward: upstream × local gradient, in reverse order (df = 1)
    dd = -1.0 / (d * d)  # 1/x  → -1/d²
    de = dd  # +1   → passes through
    dm = e * de  # exp  → e^m
    dz = -dm  # *(-1)
    ds, dw2 = dz, dz  # add distributes
    da, db = ds, ds  # add distributes
    dw0, dx0 = x0 * da, w0 * da  # mul swaps
    dw1, dx1 = x1 * db, w1 * db  # mul swaps
    return f, {"w0": dw0, "x0": dx0, "w1": dw1, "x1": dx1, "w2": dw2}


def _numpy(data):
    args = [data[n] for n in NAMES]
    return lambda: numpy_lecture(*args)


# ---------------------------------------------------------------- (2) the hand-written Numba loop
def _vg_loop(w0, x0, w1, x1, w2, out, g_w0, g_x0, g_w1, g_x1, g_w2):
    for i in prange(w0.shape[0]):
        z = w0[i] * x0[i] + w1[i] * x1[i] + w2[i]
        s = 1.0 / (1.0 + math.exp(-z))
        out[i] = s
        g = s * (1.0 - s)  # the sigmoid gate's local gradient
        g_w0[i] = g * x0[i]
        g_x0[i] = g * w0[i]
        g_w1[i] = g * x1[i]
        g_x1[i] = g * w1[i]
        g_w2[i] = g


def _forward_loop(w0, x0, w1, x1, w2, out):
    for i in prange(w0.shape[0]):
        out[i] = 1.0 / (1.0 + math.exp(-(w0[i] * x0[i] + w1[i] * x1[i] + w2[i])))


def _stream_loop(w0, x0, w1, x1, w2, out, g_w0, g_x0, g_w1, g_x1, g_w2):
    # the memory traffic of value_and_grad without its arithmetic: 5 reads, 6 writes
    for i in prange(w0.shape[0]):
        a, b, c, d, e = w0[i], x0[i], w1[i], x1[i], w2[i]
        out[i] = a
        g_w0[i] = b
        g_x0[i] = c
        g_w1[i] = d
        g_x1[i] = e
        g_w2[i] = a


vg_parallel = njit(parallel=True, error_model="numpy")(_vg_loop)
vg_serial = njit(error_model="numpy")(_vg_loop)
forward_parallel = njit(parallel=True, error_model="numpy")(_forward_loop)
stream_parallel = njit(parallel=True, error_model="numpy")(_stream_loop)


def _split(bufs):
    return bufs[0], dict(zip(NAMES, bufs[1:]))


def _numba_fresh(data):
    args = [data[n] for n in NAMES]
    n = args[0].shape[0]

    def run():
        bufs = [np.empty(n) for _ in range(6)]
        vg_parallel(*args, *bufs)
        return _split(bufs)

    return run


def _numba_reused(data):
    args = [data[n] for n in NAMES]
    bufs = [np.empty(args[0].shape[0]) for _ in range(6)]

    def run():
        vg_parallel(*args, *bufs)
        return _split(bufs)

    return run


def _numba_forward_reused(data):
    args = [data[n] for n in NAMES]
    out = np.empty(args[0].shape[0])

    def run():
        forward_parallel(*args, out)
        return out, None

    return run


def _stream_reused(data):
    args = [data[n] for n in NAMES]
    bufs = [np.empty(args[0].shape[0]) for _ in range(6)]

    def run():
        stream_parallel(*args, *bufs)
        return _split(bufs)

    return run


# ---------------------------------------------------------------- (3) sympy.diff + lambdify
def _sympy(cse: bool):
    def make(data):
        import sympy as sp

        syms = sp.symbols(NAMES)
        w0, x0, w1, x1, w2 = syms
        f = 1 / (1 + sp.exp(-(w0 * x0 + w1 * x1 + w2)))
        exprs = [f] + [sp.diff(f, s) for s in syms]
        fn = sp.lambdify(syms, exprs, modules="numpy", cse=cse)
        args = [data[n] for n in NAMES]

        def run():
            out = fn(*args)
            return out[0], dict(zip(NAMES, out[1:]))

        return run

    return make


# ---------------------------------------------------------------- (4, 5) symgrad
def _kernel():
    import compiler

    return compiler.compile_gradient(EXPR, mode="compiled")  # auto's steady state


def _symgrad_fresh(data):
    k = _kernel()
    return lambda: k.value_and_grad(**data)


def _symgrad_out(data):
    k = _kernel()
    n = data["x0"].shape[0]
    bufs = (np.empty(n), {name: np.empty(n) for name in k.inputs})
    return lambda: k.value_and_grad(**data, out=bufs)


def _symgrad_forward_fresh(data):
    k = _kernel()
    return lambda: (k(**data), None)


def _symgrad_forward_out(data):
    k = _kernel()
    buf = np.empty(data["x0"].shape[0])
    return lambda: (k(**data, out=buf), None)


def _symgrad_raw_reused(data):
    """symgrad's generated parallel loop called directly, without the Kernel's per-call work
    (binding, checks, module lookup): separates code generation from call overhead. Uses
    runtime internals (``Kernel._module_for``); if they change, this row reports a failure."""
    k = _kernel()
    module = k._module_for("a" * len(k.inputs) + "s")
    args = [data[n] for n in module.USED]
    n = args[0].shape[0]
    bufs = [np.empty(n) for _ in range(1 + len(k.wrt))]
    seed = (1.0,) if module.SEEDED else ()

    def run():
        module.value_and_grad(n, *args, *seed, *bufs)
        return bufs[0], dict(zip(k.wrt, bufs[1:]))

    return run


# ---------------------------------------------------------------- peers (optional, issue 7)
def _jax(data):
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    def f(w0, x0, w1, x1, w2):
        return 1 / (1 + jnp.exp(-(w0 * x0 + w1 * x1 + w2)))

    @jax.jit
    def vg(*a):
        v, pullback = jax.vjp(f, *a)
        return v, pullback(jnp.ones_like(v))

    args = [jax.device_put(data[n]) for n in NAMES]

    def run():
        v, g = jax.block_until_ready(vg(*args))
        return v, dict(zip(NAMES, g))

    return run


def _torch(data):
    import torch

    ts = {n: torch.from_numpy(data[n]).requires_grad_(True) for n in NAMES}
    w0, x0, w1, x1, w2 = ts.values()

    def run():
        for t in ts.values():
            t.grad = None
        f = 1 / (1 + torch.exp(-(w0 * x0 + w1 * x1 + w2)))
        f.backward(torch.ones_like(f))
        return f.detach(), {n: t.grad for n, t in ts.items()}

    return run


def _pytensor(data):
    import pytensor
    import pytensor.tensor as pt

    vs = [pt.dvector(n) for n in NAMES]
    w0, x0, w1, x1, w2 = vs
    f = 1 / (1 + pt.exp(-(w0 * x0 + w1 * x1 + w2)))
    grads = pytensor.grad(f.sum(), vs)
    fn = pytensor.function(vs, [f, *grads], mode="NUMBA")
    args = [data[n] for n in NAMES]

    def run():
        out = fn(*args)
        return out[0], dict(zip(NAMES, out[1:]))

    return run


def _symengine(data):
    import symengine as se

    syms = se.symbols(" ".join(NAMES))
    w0, x0, w1, x1, w2 = syms
    f = 1 / (1 + se.exp(-(w0 * x0 + w1 * x1 + w2)))
    exprs = [f] + [f.diff(s) for s in syms]
    fn = se.Lambdify(list(syms), exprs, backend="llvm", cse=True)
    args = [data[n] for n in NAMES]
    n = args[0].shape[0]

    def run():
        out = np.asarray(fn(np.column_stack(args)))  # inputs as rows of (w0, x0, w1, x1, w2)
        out = out.reshape(n, 6) if out.shape[-1] == 6 else out.reshape(6, n).T
        return out[:, 0], {name: out[:, j + 1] for j, name in enumerate(NAMES)}

    return run


VG_FRESH, VG_OUT = "symgrad-fresh", "symgrad-out"


def contenders() -> list[Contender]:
    C = Contender
    return [
        C("numpy", "hand-written NumPy (lecture, gate by gate)", _numpy, "reference",
          compare_with=VG_FRESH),
        C("numba-fresh", "hand-written Numba prange loop", _numba_fresh, "limit",
          compare_with=VG_FRESH),
        C("numba-reused", "hand-written Numba prange loop", _numba_reused, "limit", "reused",
          compare_with=VG_OUT),
        C("sympy", "sympy.diff + lambdify (numpy)", _sympy(False), "peer",
          compare_with=VG_FRESH),
        C("sympy-cse", "sympy.diff + lambdify (numpy, cse=True)", _sympy(True), "peer",
          compare_with=VG_FRESH),
        C("jax", "JAX jit(vjp), x64", _jax, "peer", requires=("jax",), compare_with=VG_FRESH),
        C("torch", "PyTorch eager autograd", _torch, "peer", requires=("torch",),
          compare_with=VG_FRESH),
        C("pytensor", "PyTensor grad, NUMBA mode", _pytensor, "peer", requires=("pytensor",),
          compare_with=VG_FRESH),
        C("symengine", "SymEngine Lambdify (LLVM, cse)", _symengine, "peer",
          requires=("symengine",), compare_with=VG_FRESH),
        C(VG_FRESH, "symgrad value_and_grad", _symgrad_fresh, "symgrad", compare_with=VG_FRESH),
        C(VG_OUT, "symgrad value_and_grad(out=)", _symgrad_out, "symgrad", "reused",
          compare_with=VG_OUT),
        C("symgrad-fwd-fresh", "symgrad forward k(...) — ratio is vg ÷ forward",
          _symgrad_forward_fresh, "symgrad", compare_with=VG_FRESH),
        C("symgrad-fwd-out", "symgrad forward k(..., out=) — ratio is vg ÷ forward",
          _symgrad_forward_out, "symgrad", "reused", compare_with=VG_OUT),
        C("numba-fwd-reused", "floor: hand-written Numba forward only", _numba_forward_reused,
          "floor", "reused", compare_with="symgrad-fwd-out"),
        C("symgrad-raw-out", "diagnostic: symgrad's generated loop called directly",
          _symgrad_raw_reused, "floor", "reused", compare_with=VG_OUT),
        C("stream-reused", "floor: memory traffic only (5 reads, 6 writes, no math)",
          _stream_reused, "floor", "reused", check=False, compare_with=VG_OUT),
    ]  # fmt: skip


# ---------------------------------------------------------------- start-up (subprocesses)
_SYMGRAD_CHILD = """
import numpy as np
import compiler
MARKS['imported'] = _t.perf_counter()
data = {{n: np.random.default_rng(0).standard_normal({n}) for n in {names!r}}}
MARKS['ready'] = _t.perf_counter()
k = compiler.compile_gradient({expr!r})
MARKS['compiled'] = _t.perf_counter()
value, grads = k.value_and_grad(**data)
MARKS['first'] = _t.perf_counter()
assert value.shape == ({n},) and len(grads) == 5
try:  # which loop ran: the entries Numba compiled (best effort: runtime internals)
    from runtime import cache as _c
    MARKS['compiled_entries'] = sorted(
        name for m in _c._loaded.values() for name, f in vars(m).items()
        if getattr(f, 'signatures', None))
except Exception:
    pass
"""

_NUMBA_CHILD = """
import numpy as np
from numba import njit
from benchmarks.workloads.neuron import _vg_loop
MARKS['imported'] = _t.perf_counter()
args = [np.random.default_rng(0).standard_normal({n}) for _ in range(5)]
outs = [np.empty({n}) for _ in range(6)]
MARKS['ready'] = _t.perf_counter()
f = njit(parallel={parallel}, cache=True, error_model="numpy")(_vg_loop)
MARKS['compiled'] = _t.perf_counter()
f(*args, *outs)
MARKS['first'] = _t.perf_counter()
"""

#: Prepended to the symgrad child to measure what SciPy's import costs a warm start (Numba imports
#: scipy.linalg when it loads its first function, to check for BLAS).
_HIDE_SCIPY = "import sys; sys.modules['scipy'] = None\n"

#: A warm start taken apart: each step forced in turn (Numba internals, best effort).
_STEPS_CHILD = """
import numpy as np
MARKS['numpy'] = _t.perf_counter()
import compiler
MARKS['imported'] = _t.perf_counter()
data = {{n: np.random.default_rng(0).standard_normal({n}) for n in {names!r}}}
MARKS['ready'] = _t.perf_counter()
import numba
MARKS['numba'] = _t.perf_counter()
try:
    from numba.core.registry import cpu_target
    cpu_target.target_context.refresh()
    cpu_target.typing_context.refresh()
except Exception:
    pass
MARKS['numba_init'] = _t.perf_counter()
try:
    from runtime import cache as _c
    _c.environment_fingerprint()
except Exception:
    pass
MARKS['fingerprint'] = _t.perf_counter()
k = compiler.compile_gradient({expr!r})
MARKS['compiled'] = _t.perf_counter()
value, grads = k.value_and_grad(**data)
MARKS['first'] = _t.perf_counter()
"""

#: (label, start mark, end mark) of the steps above.
_STEPS = (
    ("interpreter start (launch → first line)", "launch", "T0"),
    ("import numpy", "T0", "numpy"),
    ("import compiler (symgrad)", "numpy", "imported"),
    ("import numba", "ready", "numba"),
    ("Numba's first-use set-up (typing and target registries)", "numba", "numba_init"),
    ("symgrad cache key (versions, CPU features)", "numba_init", "fingerprint"),
    ("compile_gradient + load cached kernel + first call", "fingerprint", "first"),
    ("**total** (inputs excluded)", None, None),
)


def _step(run: startup.ChildRun, a: str | None, b: str | None) -> float:
    if a is None:
        return run.launch_to_first
    m = run.marks
    return m[b] - m[a] if a in m and b in m else math.nan


def _step_median(runs: list[startup.ChildRun], a: str | None, b: str | None) -> float:
    vals = [v for v in (_step(r, a, b) for r in runs) if not math.isnan(v)]
    return statistics.median(vals) if vals else math.nan


def _steps_table(runs: dict[str, list[startup.ChildRun]]) -> str:
    rows = [
        [label, *(fmt_num(_step_median(runs[k], a, b), "s") for k in runs)]
        for label, a, b in _STEPS
    ]
    return md_table(["step (median)", *runs], rows)


def _warm_why(warms: dict[str, list[startup.ChildRun]], hw_warm: float, base: float) -> str:
    steps = warms.get("steps")
    if not steps:
        return ""
    own = sum(
        _step_median(steps, a, b)
        for a, b in (("numpy", "imported"), ("numba_init", "fingerprint"), ("fingerprint", "first"))
    )
    numba = _step_median(steps, "ready", "numba") + _step_median(steps, "numba", "numba_init")
    text = (
        f"of the {fmt_num(_step_median(steps, None, None), 's')} (step-by-step runs), symgrad's "
        f"own steps — importing `compiler`, the cache key, loading the cached kernel and the "
        f"first call — take {fmt_num(own, 's')}; the interpreter "
        f"{fmt_num(_step_median(steps, 'launch', 'T0'), 's')}, importing NumPy "
        f"{fmt_num(_step_median(steps, 'T0', 'numpy'), 's')}, and importing Numba plus its "
        f"first-use set-up {fmt_num(numba, 's')} take the rest"
    )
    hidden = warms.get("steps, scipy hidden")
    if hidden:
        h_numba = _step_median(hidden, "ready", "numba") + _step_median(
            hidden, "numba", "numba_init"
        )
        text += (
            f". Numba's set-up imports `scipy.linalg` when SciPy is installed (it is here, though "
            f"symgrad does not depend on it): hiding SciPy cuts the Numba part to "
            f"{fmt_num(h_numba, 's')} and the total to "
            f"{fmt_num(_step_median(hidden, None, None), 's')}"
        )
    text += (
        f". The same loop written by hand with `@njit(cache=True)` takes {fmt_num(hw_warm, 's')} "
        f"to its first cached result, and `python -c 'import numpy, numba'` alone "
        f"{fmt_num(base, 's')}: the floor for any Numba-based kernel on this machine."
    )
    return text


_BASELINE_CHILD = """
import numpy, numba
MARKS['imported'] = _t.perf_counter()
"""


def _tier(runs: list[startup.ChildRun]) -> str:
    entries = runs[0].marks.get("compiled_entries") if runs else None
    if not entries:
        return "loop unknown"
    return "serial loop" if all(e.endswith("_serial") for e in entries) else "parallel loop"


def _share(runs: list[startup.ChildRun]) -> str:
    vals = [r.others for r in runs if not math.isnan(r.others)]
    return f"{100 * statistics.median(vals):.0f}%" if vals else "?"


def _startup(opts: Options, log) -> tuple[str, list[Target]]:
    sizes = [N_SMALL] if opts.quick else [N_FULL, N_SMALL]
    cold_runs, warm_runs = (1, 2) if opts.quick else (3, 5)
    tries = 1 if opts.quick else startup.TRIES
    s = startup
    rows, targets, extra = [], [], []

    def row(what: str, runs: list, figure: str, attr: str, compile_col: bool = True) -> list:
        return [what, len(runs), fmt_num(s.median(runs, "interpreter"), "s"),
                fmt_num(s.median(runs, "imports"), "s"),
                fmt_num(s.median(runs, "build"), "s") if compile_col else "",
                fmt_num(s.median(runs, "first_call"), "s"),
                f"**{fmt_num(s.median(runs, attr), 's')}** {figure}", s.span(runs, attr),
                _share(runs)]  # fmt: skip

    base = s.once(_BASELINE_CHILD, 2 if opts.quick else 3, tries)
    floor = s.median(base, "interpreter") + s.median(base, "imports")
    for n in sizes:
        log(f"  start-up, N={n:,}")
        body = _SYMGRAD_CHILD.format(n=n, names=NAMES, expr=EXPR)
        variants = {}
        if not opts.quick:
            steps = _STEPS_CHILD.format(n=n, names=NAMES, expr=EXPR)
            variants["steps"] = steps
            if importlib.util.find_spec("scipy") is not None:
                variants["steps, scipy hidden"] = _HIDE_SCIPY + steps
        colds, warms = s.cold_and_warm(
            body, cold=cold_runs, warm=warm_runs, variants=variants, tries=tries, log=log
        )
        tier = _tier(colds)
        parallel = tier != "serial loop"
        log(f"  start-up, hand-written Numba, N={n:,}")
        hw_cold, hw_warm = s.cold_and_warm(
            _NUMBA_CHILD.format(n=n, parallel=parallel),
            cold=max(1, cold_runs - 1),
            warm=max(1, warm_runs - 2),
            cache_var="NUMBA_CACHE_DIR",
            tries=tries,
            log=log,
        )
        hw_warm = hw_warm[""]
        cold, warm = s.median(colds, "compile_to_first"), s.median(warms[""], "launch_to_first")
        hw_c, hw_w = s.median(hw_cold, "compile_to_first"), s.median(hw_warm, "launch_to_first")
        loop = f"{'parallel' if parallel else 'serial'} loop"
        rows += [
            row(f"symgrad cold (empty cache), N={n:,}, {tier}", colds, "compile + first call",
                "compile_to_first"),
            row(f"symgrad warm (cache filled), N={n:,}, {tier}", warms[""],
                "launch → first result", "launch_to_first"),
        ]  # fmt: skip
        hidden = warms.get("steps, scipy hidden")
        if hidden:
            rows.append(row(f"symgrad warm, scipy hidden (see below), N={n:,}", hidden,
                            "launch → first result", "launch_to_first", False))  # fmt: skip
        step_runs = {k: v for k, v in warms.items() if k.startswith("steps")}
        if step_runs:
            extra += [
                "",
                f"Warm start taken apart, N={n:,} (each step forced in turn in a fresh process; "
                "`scipy hidden`: `sys.modules['scipy'] = None` first, as on a machine without "
                "SciPy — Numba imports `scipy.linalg` during its set-up when SciPy is installed):",
                "",
                _steps_table(step_runs),
            ]
        rows += [
            row(f"reference: hand-written Numba {loop}, cache=True, cold, N={n:,}", hw_cold,
                "compile + first call", "compile_to_first", False),
            row(f"reference: hand-written Numba {loop}, cache=True, warm, N={n:,}", hw_warm,
                "launch → first result", "launch_to_first", False),
        ]  # fmt: skip
        targets += [
            Target(f"F1 cold compile + first value_and_grad, N={n:,} ({tier})", cold,
                   COLD_COMPILE_S, unit="s", spread=s.span(colds, "compile_to_first"),
                   note=f"hand-written Numba {loop}: {fmt_num(hw_c, 's')}",
                   why=f"the same loop written by hand compiles in {fmt_num(hw_c, 's')} here "
                       f"(Numba's own cost); symgrad adds {fmt_num(cold - hw_c, 's')} "
                       "(parsing, adjoint, code generation, writing the cache)"),
            Target(f"F1 warm start: launch → first result, N={n:,} ({tier})", warm,
                   WARM_FIRST_S, unit="s", spread=s.span(warms[""], "launch_to_first"),
                   note=f"interpreter {fmt_num(s.median(warms[''], 'interpreter'), 's')} + "
                        f"imports {fmt_num(s.median(warms[''], 'imports'), 's')} + kernel "
                        f"{fmt_num(s.median(warms[''], 'compile_to_first'), 's')}; "
                        f"hand-written Numba {loop}, cached: {fmt_num(hw_w, 's')}",
                   why=_warm_why(warms, hw_w, floor)),
        ]  # fmt: skip
    if opts.quick:
        for what, limit in (
            (f"F1 cold compile + first value_and_grad, N={N_FULL:,}", COLD_COMPILE_S),
            (f"F1 warm start: launch → first result, N={N_FULL:,}", WARM_FIRST_S),
        ):
            targets.append(Target(what, math.nan, limit, unit="s", note="not run with --quick"))
    rows.append(
        ["baseline: `python -c 'import numpy, numba'`", len(base),
         fmt_num(s.median(base, "interpreter"), "s"), fmt_num(s.median(base, "imports"), "s"),
         "", "", f"{fmt_num(floor, 's')} launch → imported", "", _share(base)]
    )  # fmt: skip
    headers = ["run", "runs", "interpreter start", "imports", "compile_gradient", "first call",
               "figure (median)", "min–max", "others' CPU"]  # fmt: skip
    return "\n".join([md_table(headers, rows), *extra]), targets


# ---------------------------------------------------------------- the section
def _targets(by: dict[str, Result], quick: bool) -> list[Target]:
    note = "--quick: N=10,000, too small to judge" if quick else ""

    def ok(*names: str) -> bool:
        return all(n in by and by[n].ok for n in names)

    def ratio(ours: str, theirs: str) -> tuple[float, str]:
        if not ok(ours, theirs):
            return math.nan, ""
        r, q1, q3 = paired_ratio(by[ours], by[theirs])
        return r, f"per-round IQR {q1:.2f}–{q3:.2f}"

    def med(name: str) -> float:
        return by[name].stats.median * 1e3 if ok(name) else math.nan

    def faults(name: str) -> float:
        return by[name].faults_per_call if ok(name) else math.nan

    # Facts that explain misses, from this run's numbers.
    limit_vs_numpy = med("numpy") / med("numba-fresh")
    why_numpy = (
        f"the hand-written parallel Numba loop is {limit_vs_numpy:.2f}× faster than NumPy here "
        f"({med('numba-fresh'):.2f} vs {med('numpy'):.2f} ms, fresh outputs)"
        + (
            ", so 3× is beyond the practical limit with fresh outputs"
            if limit_vs_numpy < SPEEDUP_VS_NUMPY
            else f", and symgrad takes {med(VG_FRESH) / med('numba-fresh'):.2f}× the loop's time"
        )
        + f"; into reused buffers symgrad is {med('numpy') / med(VG_OUT):.2f}× faster than NumPy"
    )
    overhead = (
        f"symgrad's generated loop called directly takes {med('symgrad-raw-out'):.2f} ms against "
        f"the hand-written loop's {med('numba-reused'):.2f} ms (code generation: the loops differ "
        f"in their arithmetic, see the generated code below), and the Kernel's per-call work — "
        f"binding and checking inputs and buffers, finding the module — adds "
        f"{med(VG_OUT) - med('symgrad-raw-out'):.2f} ms; the memory-only floor is "
        f"{med('stream-reused'):.2f} ms"
    )
    why_fresh = (
        f"six fresh 8 MB outputs cost {faults(VG_FRESH):.0f} minor page faults per call, the "
        f"forward's single output {faults('symgrad-fwd-fresh'):.0f} (glibc hands one freed 8 MB "
        f"block straight back to the next call, but six exceed its trim threshold and return to "
        f"the OS after every call); fresh − reused is {med(VG_FRESH) - med(VG_OUT):.2f} ms for "
        f"symgrad and {med('numba-fresh') - med('numba-reused'):.2f} ms for the hand-written "
        f"loop; with reused buffers the ratio is {med(VG_OUT) / med('symgrad-fwd-out'):.2f}×"
    )
    t = []
    r, sp = ratio("numpy", VG_FRESH)
    t.append(Target("F1 symgrad value_and_grad vs hand-written NumPy: speed-up",
                    r, SPEEDUP_VS_NUMPY, at_most=False, spread=sp, note=note,
                    why=why_numpy))  # fmt: skip
    r, sp = ratio(VG_FRESH, "numba-fresh")
    t.append(Target("F1 symgrad ÷ hand-written Numba loop, fresh outputs", r, RATIO_VS_NUMBA,
                    spread=sp, note=note, why=overhead))  # fmt: skip
    r, sp = ratio(VG_OUT, "numba-reused")
    t.append(Target("F1 symgrad ÷ hand-written Numba loop, reused buffers (out=)", r,
                    RATIO_VS_NUMBA, spread=sp, note=note, why=overhead))  # fmt: skip
    r, sp = ratio(VG_FRESH, "symgrad-fwd-fresh")
    t.append(Target("F1 symgrad value_and_grad ÷ forward, fresh outputs", r, VG_OVER_FORWARD,
                    spread=sp, note=note, why=why_fresh))  # fmt: skip
    r, sp = ratio(VG_OUT, "symgrad-fwd-out")
    t.append(Target("F1 symgrad value_and_grad ÷ forward, reused buffers", r, VG_OVER_FORWARD,
                    spread=sp, note=note,
                    why=f"the forward reads 5 arrays and writes 1; value_and_grad writes 6: "
                        f"the memory-only floor for that traffic is "
                        f"{med('stream-reused'):.2f} ms"))  # fmt: skip
    r, sp = ratio(VG_OUT, "numba-reused")
    t.append(Target("F1 (issue 7) symgrad ÷ hand-written Numba loop, reused buffers", r,
                    RATIO_VS_NUMBA_ISSUE7, spread=sp, note=note, why=overhead))  # fmt: skip
    peers = [x for x in by.values() if x.contender.kind == "peer" and x.ok]
    if peers and ok(VG_FRESH):
        best = min(peers, key=lambda x: x.stats.median)
        r, sp = ratio(VG_FRESH, best.contender.name)
        t.append(Target("F1 (issue 7) symgrad ÷ fastest peer that ran", r, 1.0, spread=sp,
                        note=f"fastest peer: {best.contender.label}"))  # fmt: skip
    return t


def run(opts: Options, log: Callable[[str], None]) -> Section:
    n = N_QUICK if opts.quick else N_FULL
    repeats = opts.repeats or (15 if opts.quick else 200)
    log(f"F1 neuron: N={n:,}, {repeats} quiet interleaved rounds wanted")
    data = make_data(n, opts.seed)
    timed = run_contenders(
        contenders(),
        data,
        reference="numpy",
        repeats=repeats,
        warmup=3 if opts.quick else 10,
        min_sample=0.002 if opts.quick else 0.0,
        budget=opts.budget if opts.budget is not None else (0.0 if opts.quick else 900.0),
        log=log,
    )
    results = timed.results
    by = {r.contender.name: r for r in results}
    targets = _targets(by, opts.quick)

    parts = [
        f"Expression `{EXPR}`; every input an array of N = {n:,} float64 samples "
        f"(standard normal, seed {opts.seed}); value and all five gradients (seed 1). "
        f"{timed.describe()}. Each round calls every contender once, in a fresh "
        "random order; after warm-up; garbage collector off while timing. `outputs`: `fresh` "
        "allocates its outputs every call, `reused` writes into buffers allocated once. The last "
        "column divides the matching symgrad row's median by this row's (below 1: symgrad is "
        "faster); in brackets the quartiles of the same ratio taken round by round.",
        "",
        "### Time per call",
        "",
        timing_table(results),
        "",
        "### Agreement with the hand-written NumPy reference",
        "",
        "Worst absolute difference and worst relative difference |a − r| / max(|a|, |r|) over "
        "all N samples, for the value and over the five gradients.",
        "",
        agreement_table(results),
    ]
    if opts.startup:
        table, st_targets = _startup(opts, log)
        targets += st_targets
        parts += [
            "",
            "### Cold compile and warm start (fresh `python -c` processes)",
            "",
            "Cold: a new empty `SYMGRAD_CACHE_DIR`; the figure is `compile_gradient` + the first "
            "`value_and_grad` (inputs made beforehand, not counted). Warm: the same cache again; "
            "the figure runs from the parent launching the interpreter (its start-up measured on "
            "the shared monotonic clock) through the imports to the first result, without making "
            "the inputs. Each run waits for a quiet machine first (at most "
            f"{startup.WAIT_BUDGET:.0f} s in all; {startup.waited():.0f} s spent), and a run "
            f"during which other processes took more than {100 * startup.QUIET:.0f}% of the "
            f"machine's CPU is repeated (up to {startup.TRIES} times, keeping the quietest); the "
            "last column is the median share they took. "
            "The references run the same loop written by hand with `@njit(cache=True)` "
            "(`NUMBA_CACHE_DIR` empty, then full): what any Numba-based kernel pays here.",
            "",
            table,
        ]
    parts += source_details(
        lambda: _kernel().source,
        "def value_and_grad(",
        "\n@",
        "The value_and_grad code symgrad generated for F1",
    )
    worst = max(
        (r.agreement.worst_rel for r in results if r.ok and r.agreement is not None),
        default=0.0,
    )
    return Section("F1", f"F1 — the lecture's neuron, N = {n:,}", "\n".join(parts), targets, worst)


WORKLOAD = Workload("F1", "neuron", "the lecture's neuron over N samples", run)

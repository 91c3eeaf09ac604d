"""S1 — compile latency and scale (issue 6): graphs of 100 to 100,000 nodes on both tiers.

Two families of elementwise graphs, sized by their node count N (inputs and constants included):

- ``dag``: a random DAG with fan-out over four inputs — each step applies a unary op (sin, cos,
  tanh, sigmoid, neg, exp(−a²)) to the latest value, or a binary one (a·b, (a+b)/2, (a−b)/2) to the
  latest value and either an input or one of the 64 values before it;
- ``chain``: g(u) = sin(u)·u + exp(−u·u) composed N/6 times (six nodes a step).

The source is a Python callable that builds the graph (traced by ``compile_gradient``): the text
language has no names for intermediate values, so a DAG with fan-out written out as text grows
exponentially. Measured:

1. the passes in this process — trace, fusion, adjoint, Numba source, the instant tier's program;
2. from source to the first gradient (1,000 points) in fresh processes, per tier, cold (empty cache
   directory) and warm (the same directory again); JAX ``jit`` of ``vjp`` and SymPy ``diff`` +
   ``cse`` + ``lambdify`` beside them, in child processes with a time limit;
3. the steady state per ``value_and_grad`` call over 100,000 points: both tiers interleaved in this
   process, JAX and SymPy in their children.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.harness import (
    Contender,
    Target,
    child_env,
    cpu_counters,
    md_table,
    others_share,
    run_child,
    run_contenders,
)
from benchmarks.startup import ChildRun
from benchmarks.workloads import Options, Section, Workload

FAMILIES = ("dag", "chain")
SIZES = (100, 1_000, 10_000, 100_000)
QUICK_SIZES = (100, 1_000)
FIRST_POINTS = 1_000  # the first call's inputs: latency, not throughput
STEADY_POINTS = 100_000
QUICK_STEADY_POINTS = 2_000
#: Compiled-tier kernels up to this size are built (beyond 128 forward ops the compiled tier is
#: LLVM IR written directly, ``runtime/llvm_tier.py``: seconds per 10,000 nodes).
COMPILED_MAX = 100_000
JAX_MAX = 10_000
#: SymPy's expressions grow exponentially with depth: the chain of 61 nodes does not finish in
#: minutes. Below the issue's sizes its growth is shown from 25 nodes up.
SYMPY_SIZES = (25, 50, 100)
CONTENDER_TIMEOUT = 200.0  # seconds per JAX or SymPy child
#: At this many nodes the steady state runs over fewer points: 100,000 points through a
#: 300,000-node adjoint is 3·10¹⁰ element-operations, tens of seconds per call.
BIG_GRAPH = 100_000
BIG_GRAPH_POINTS = 10_000
PLOT = Path(__file__).resolve().parent.parent / "scale.png"

# The targets.
COMPILED_10K_S = 10.0
INSTANT_10K_S = 1.0
STEADY_RATIO = 5.0
GROWTH_EXPONENT = 1.0  # time to first result ∝ N**exponent from 1k to 100k nodes


# ---------------------------------------------------------------------------------- graphs
def source(family: str, n: int) -> Callable:
    """A callable whose traced graph has about ``n`` nodes (inputs and constants included)."""
    from compiler import ops

    if family == "chain":
        steps = max(1, round((n - 1) / 6))

        def chain(x):
            u = x
            for _ in range(steps):
                u = ops.sin(u) * u + ops.exp(-u * u)
            return u

        return chain

    # Every step maps values in [-1, 1] into [-1, 1]: nothing overflows at any depth.
    unary = [ops.sin, ops.cos, ops.tanh, ops.sigmoid, lambda a: -a, lambda a: ops.exp(-a * a)]
    binary = [lambda a, b: a * b, lambda a, b: (a + b) * 0.5, lambda a, b: (a - b) * 0.5]

    def dag(x0, x1, x2, x3):
        rng = random.Random(n)
        inputs = [x0, x1, x2, x3]
        values = list(inputs)
        while len(x0.graph) < n:
            if rng.random() < 0.4:
                values.append(rng.choice(unary)(values[-1]))
                continue
            if rng.random() < 0.2:  # inputs fan out all over the graph
                other = rng.choice(inputs)
            else:
                other = values[-1 - min(rng.randrange(1, 65), len(values) - 1)]
            values.append(rng.choice(binary)(values[-1], other))
        return values[-1]

    return dag


def input_names(family: str) -> tuple[str, ...]:
    return ("x",) if family == "chain" else ("x0", "x1", "x2", "x3")


def make_inputs(names, points: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {name: rng.uniform(-1.0, 1.0, points) for name in names}


# ---------------------------------------------------------------------------------- (1) passes
PASSES = ("trace", "fusion", "adjoint", "codegen", "program")


def time_passes(family: str, n: int) -> dict:
    """Seconds per pass in this process (one run each: the large ones take seconds)."""
    import compiler
    from compiler.codegen import entries, numba_source
    from runtime.instant.program import compile_program

    f = source(family, n)
    t0 = time.perf_counter()
    graph = compiler.trace(f)
    t1 = time.perf_counter()
    fused, _ = compiler.fuse(graph)
    t2 = time.perf_counter()
    adj = compiler.adjoint(fused)
    t3 = time.perf_counter()
    kinds = "a" * len(fused.inputs) + "s"
    numba_source.generate(adj, fused.inputs, kinds)
    t4 = time.perf_counter()
    _, planned = entries.plan(adj, fused.inputs, kinds)
    compile_program(adj, next(e for e in planned if e.name == "value_and_grad"))
    t5 = time.perf_counter()
    times = dict(zip(PASSES, np.diff([t0, t1, t2, t3, t4, t5])))
    return {"nodes": len(fused), "adjoint nodes": len(adj), **times}


# ---------------------------------------------------------------------------------- (2) first result
FIRST_BODY = """
import numpy as np
import compiler
from benchmarks.workloads.scale import input_names, make_inputs, source
MARKS["imported"] = _t.perf_counter()
f = source({family!r}, {n})
args = make_inputs(input_names({family!r}), {points})
MARKS["ready"] = _t.perf_counter()
k = compiler.compile_gradient(f, mode={mode!r})
MARKS["compiled"] = _t.perf_counter()
value, grads = k.value_and_grad(**args)
MARKS["first"] = _t.perf_counter()
MARKS["tier"] = k.tier
"""


def first_result(family: str, n: int, mode: str, cache_dir: str) -> ChildRun | str:
    """Time from the source to the first gradient in a fresh process (or why it failed)."""
    body = FIRST_BODY.format(family=family, n=n, mode=mode, points=FIRST_POINTS)
    c0 = cpu_counters()
    try:
        run = ChildRun(run_child(body, child_env(SYMGRAD_CACHE_DIR=cache_dir), timeout=3600))
    except Exception as e:  # noqa: BLE001 - reported in the table
        return f"failed: {str(e)[-200:]}"
    run.others = others_share(c0, cpu_counters())
    return run


# ---------------------------------------------------------------------------------- contenders
# Each child prints its first result (and the gradient at five points) as soon as it has it, so a
# child stopped at the time limit while compiling for the steady state still reports it.
CONTENDER_COMMON = """
import json, sys
import numpy as np
import compiler
from benchmarks.workloads.scale import make_inputs, source
MARKS["imported"] = _t.perf_counter()
graph = compiler.trace(source({family!r}, {n}))
first_args = make_inputs(graph.inputs, {points})
big = make_inputs(graph.inputs, {steady})
MARKS["ready"] = _t.perf_counter()
"""

CONTENDER_FIRST = """
MARKS["first"] = _t.perf_counter()
MARKS["check"] = [np.broadcast_to(np.asarray(v, float), {points})[:5].tolist() for v in out]
print("@@FIRST@@" + json.dumps(MARKS), flush=True)
times = []
for _ in range({repeats} + 1):  # the first call compiles for these shapes (JAX) or warms up
    t = _t.perf_counter(); run(big); times.append(_t.perf_counter() - t)
MARKS["steady"] = float(np.median(times[1:]))
"""

JAX_BODY = """
import jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
F = dict(sin=jnp.sin, cos=jnp.cos, exp=jnp.exp, tanh=jnp.tanh, sigmoid=jax.nn.sigmoid,
         neg=jnp.negative, add=jnp.add, sub=jnp.subtract, mul=jnp.multiply)

def f(*xs):
    env, values = dict(zip(graph.inputs, xs)), []
    for node in graph.nodes:
        if node.op == "input":
            values.append(env[node.value])
        elif node.op == "const":
            values.append(node.value)
        else:
            values.append(F[node.op](*(values[a] for a in node.args)))
    return values[graph.outputs[0]]

def value_and_grad(*xs):
    y, pullback = jax.vjp(f, *xs)
    return (y, *pullback(jnp.ones_like(y)))

vg = jax.jit(value_and_grad)
run = lambda args: jax.block_until_ready(vg(*args.values()))
out = run(first_args)
"""

SYMPY_BODY = """
import sympy as sp
expr = graph.to_sympy()
symbols = [sp.Symbol(name) for name in graph.inputs]
vg = sp.lambdify(symbols, [expr, *(sp.diff(expr, s) for s in symbols)], "numpy", cse=True)
run = lambda args: vg(*args.values())
out = run(first_args)
"""


def run_contender(body: str, family: str, n: int, steady: int, repeats: int) -> dict | str:
    """Marks of a JAX or SymPy child: ``first`` always, ``steady`` unless it ran out of time."""
    code = (CONTENDER_COMMON + body + CONTENDER_FIRST).format(
        family=family, n=n, points=FIRST_POINTS, steady=steady, repeats=repeats
    )
    try:
        return run_child(code, child_env(), timeout=CONTENDER_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout or ""
        first = [ln for ln in out.splitlines() if ln.startswith("@@FIRST@@")]
        if first:
            return json.loads(first[0][len("@@FIRST@@") :])
        return f"no result within {CONTENDER_TIMEOUT:.0f} s"
    except Exception as e:  # noqa: BLE001 - reported in the table
        return f"failed: {str(e)[-120:]}"


def _rel(a, b) -> float:
    """Worst |a - b| / max(1, |a|, |b|)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))))


# ---------------------------------------------------------------------------------- the run
def _fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.{digits}f}"


def _exponent(t_small: float, t_large: float, n_small: int, n_large: int) -> float:
    if not (t_small > 0 and t_large > 0):
        return math.nan
    return math.log(t_large / t_small) / math.log(n_large / n_small)


def run(opts: Options, log: Callable[[str], None]) -> Section:
    dirs: list[str] = []
    saved_env = os.environ.get("SYMGRAD_CACHE_DIR")
    try:
        return _run(opts, log, dirs)
    finally:
        if saved_env is None:
            os.environ.pop("SYMGRAD_CACHE_DIR", None)
        else:
            os.environ["SYMGRAD_CACHE_DIR"] = saved_env
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


def _run(opts: Options, log: Callable[[str], None], dirs: list[str]) -> Section:
    sizes = QUICK_SIZES if opts.quick else SIZES
    steady_points = QUICK_STEADY_POINTS if opts.quick else STEADY_POINTS

    def fresh_dir() -> str:
        dirs.append(tempfile.mkdtemp(prefix="symgrad-scale-"))
        return dirs[-1]

    def merge(src: str, dst: str) -> None:
        """Copy a cache directory's entries into another (mtimes kept: Numba's stay valid)."""
        shutil.copytree(src, dst, dirs_exist_ok=True, copy_function=shutil.copy2)

    log("S1 scale: passes")
    passes = {(fam, n): time_passes(fam, n) for fam in FAMILIES for n in sizes}

    # From source to the first result. ``shared`` collects the machine and every kernel built,
    # so a warm run finds what it needs there.
    shared = fresh_dir()
    first: dict[tuple, ChildRun | str] = {}
    contenders: dict[tuple, dict | str] = {}
    for fam in FAMILIES:
        for n in sizes:
            if opts.quick and (fam, n) != ("chain", 100):
                continue  # quick: every kind of child once, on the smallest graph
            log(f"S1 scale: first result, {fam} {n:,}")
            cold = fresh_dir()
            first[(fam, n, "instant", "cold")] = first_result(fam, n, "instant", cold)
            merge(cold, shared)
            first[(fam, n, "instant", "warm")] = first_result(fam, n, "instant", shared)
            if n <= COMPILED_MAX:
                cold = fresh_dir()
                first[(fam, n, "compiled", "cold")] = first_result(fam, n, "compiled", cold)
                first[(fam, n, "compiled", "warm")] = first_result(fam, n, "compiled", cold)
                if not opts.quick:  # auto: the machine cached, the kernel not, then both
                    auto = fresh_dir()
                    merge(shared, auto)
                    first[(fam, n, "auto", "cold")] = first_result(fam, n, "auto", auto)
                merge(cold, shared)
                if not opts.quick:
                    first[(fam, n, "auto", "warm")] = first_result(fam, n, "auto", shared)
            if opts.quick:
                continue
            if n <= JAX_MAX:
                log(f"S1 scale: JAX, {fam} {n:,}")
                contenders[(fam, n, "JAX")] = run_contender(
                    JAX_BODY, fam, n, steady_points, 5 if n <= 1_000 else 2
                )
    sympy_sizes = () if opts.quick else SYMPY_SIZES
    for fam in FAMILIES:
        for n in sympy_sizes:
            log(f"S1 scale: SymPy, {fam} {n:,}")
            contenders[(fam, n, "SymPy")] = c = run_contender(SYMPY_BODY, fam, n, steady_points, 5)
            if isinstance(c, str):
                break  # larger graphs take longer still

    os.environ["SYMGRAD_CACHE_DIR"] = shared
    from runtime import cache

    cache._loaded.clear()
    steady = {}
    for fam in FAMILIES:
        for n in sizes:
            log(f"S1 scale: steady state, {fam} {n:,}")
            have_compiled = isinstance(first.get((fam, n, "compiled", "warm")), ChildRun)
            steady[(fam, n)] = _steady(fam, n, steady_points, opts, have_compiled)

    parts = [
        f"Graphs of {', '.join(f'{n:,}' for n in sizes)} nodes; first results over "
        f"{FIRST_POINTS:,} points, steady state over {steady_points:,} points. The graphs and "
        "every child process's script are in `benchmarks/workloads/scale.py`.",
    ]
    if opts.quick:
        parts.append("**--quick: small sizes, no contenders, no plot: not for conclusions.**")
    parts += _passes_table(passes)
    parts += _first_table(first, contenders, passes, sizes)
    parts += _sympy_table(contenders, sympy_sizes)
    parts += _steady_table(steady, contenders, sizes, steady_points)
    if not opts.quick:
        parts += ["", f"![compile latency and scale]({_plot(passes, first, steady, sizes)})"]
    targets = _targets(first, steady, sizes)
    return Section("S1", "S1 — compile latency and scale (issue 6)", "\n".join(parts), targets)


def _steady(fam: str, n: int, points: int, opts: Options, have_compiled: bool) -> dict:
    """Interleaved timing of both tiers' value_and_grad (the compiled one if it was built)."""
    import compiler
    from runtime import instant

    f = source(fam, n)
    instant.machine()  # loaded already: a session's next expression
    t0 = time.perf_counter()
    k = compiler.compile_gradient(f, mode="instant")
    value, grads = k.value_and_grad(**make_inputs(k.inputs, FIRST_POINTS))
    session_first = time.perf_counter() - t0
    check = [value[:5], *(g[:5] for g in grads.values())]

    def tier(mode):
        def make(data):
            k = compiler.compile_gradient(f, mode=mode)
            return lambda: k.value_and_grad(**data)

        return make

    contenders = [Contender("instant", "symgrad instant", tier("instant"), kind="symgrad")]
    if have_compiled:
        contenders.insert(0, Contender("compiled", "compiled", tier("compiled"), kind="symgrad"))
    points = min(points, BIG_GRAPH_POINTS) if n >= BIG_GRAPH else points
    repeats = opts.repeats or (3 if opts.quick else 7 if n <= 1_000 else 3 if n <= 10_000 else 1)
    timed = run_contenders(
        contenders,
        make_inputs(input_names(fam), points),
        reference=contenders[0].name,
        repeats=repeats,
        warmup=0 if n >= 10_000 else 1,
        min_sample=0.0,
    )
    out = {r.contender.name: r for r in timed.results}
    return {**out, "points": points, "session first": session_first, "check": check}


def _passes_table(passes: dict) -> list[str]:
    rows = []
    for (fam, _), p in passes.items():
        total = sum(p[k] for k in PASSES)
        rows.append(
            [fam, f"{p['nodes']:,}", f"{p['adjoint nodes']:,}"]
            + [_fmt(p[k]) for k in PASSES]
            + [_fmt(total)]
        )
    return [
        "",
        "### Passes (seconds, this process)",
        "",
        "`codegen` writes the Numba source of all four entries; `program` is the instant tier's "
        "instruction array for `value_and_grad`.",
        "",
        md_table(["family", "nodes", "adjoint nodes", *PASSES, "total"], rows),
    ]


def _contender_first(c: dict | str | None) -> str:
    if c is None:
        return "not run"
    if isinstance(c, str):
        return c
    return _fmt(c["first"] - c["ready"], 2)


def _first_table(first: dict, contenders: dict, passes: dict, sizes) -> list[str]:
    columns = [
        ("instant", "cold"),
        ("instant", "warm"),
        ("compiled", "cold"),
        ("compiled", "warm"),
        ("auto", "cold"),
        ("auto", "warm"),
    ]
    rows = []
    for fam in FAMILIES:
        for n in sizes:
            runs = [first.get((fam, n, *col)) for col in columns]
            if not any(runs):
                continue
            row = [fam, f"{passes[(fam, n)]['nodes']:,}"]
            for (mode, _), r in zip(columns, runs):
                if r is None:
                    row.append("not run")
                elif isinstance(r, str):
                    row.append(r)
                elif mode == "auto":
                    row.append(f"{r.compile_to_first:.3f} ({r.marks.get('tier')})")
                else:
                    row.append(_fmt(r.compile_to_first))
            row += [_contender_first(contenders.get((fam, n, name))) for name in ("JAX", "SymPy")]
            shares = [r.others for r in runs if isinstance(r, ChildRun)]
            row.append(f"{100 * float(np.nanmedian(shares)):.0f}%" if shares else "")
            rows.append(row)
    headers = ["family", "nodes", *(f"{m} {s}" for m, s in columns), "JAX", "SymPy", "others"]
    return [
        "",
        "### From source to the first gradient (fresh processes, seconds)",
        "",
        "`compile_gradient` + the first `value_and_grad` over 1,000 points, imports excluded. "
        "*cold*: an empty cache directory (instant: includes compiling the virtual machine, "
        "which happens once per machine; compiled: the kernel's compile). *warm*: the same "
        "directory again (instant: the machine loads from the cache; compiled: the kernel does). "
        "*auto cold* has the machine cached but not the kernel; the tier that answered the first "
        "call is in brackets. JAX: `jit` of `vjp` (x64), tracing + XLA compile + first call; "
        "SymPy: `to_sympy` + `diff` + `lambdify(cse=True)` + first call. *others*: the median "
        "share of the CPU other processes took during symgrad's runs.",
        "",
        md_table(headers, rows),
        *_compiled_estimate(first, passes, sizes),
    ]


def _compiled_estimate(first: dict, passes: dict, sizes) -> list[str]:
    """The compiled tier's cold compile beyond ``COMPILED_MAX``, from the largest one run."""
    big = max(sizes)
    if big <= COMPILED_MAX:
        return []
    notes = []
    for fam in FAMILIES:
        r = first.get((fam, COMPILED_MAX, "compiled", "cold"))
        if isinstance(r, ChildRun):
            rate = r.compile_to_first / passes[(fam, COMPILED_MAX)]["adjoint nodes"]
            minutes = rate * passes[(fam, big)]["adjoint nodes"] / 60
            notes.append(
                f"{fam}: {1e3 * rate:.1f} ms per adjoint node at {COMPILED_MAX:,} nodes, so "
                f"about {minutes:.0f} min at {big:,} nodes"
            )
    if not notes:
        return []
    return ["", f"Compiled tier at {big:,} nodes, estimated (not run): " + "; ".join(notes) + "."]


def _sympy_table(contenders: dict, sympy_sizes) -> list[str]:
    rows = []
    for (fam, n, name), c in contenders.items():
        if name != "SymPy" or n not in sympy_sizes:
            continue
        steady = c.get("steady") if isinstance(c, dict) else None
        rows.append([fam, f"{n:,}", _contender_first(c), _fmt(steady and 1e3 * steady, 2)])
    if not rows:
        return []
    return [
        "",
        "### SymPy's growth (seconds to the first gradient; ms per call over 100,000 points)",
        "",
        "SymPy builds each graph as one expression tree: shared subexpressions are copied, so its "
        f"work grows exponentially with depth. A size that ran out of time ({CONTENDER_TIMEOUT:.0f}"
        " s) ends its family's series.",
        "",
        md_table(["family", "nodes", "source → first", "steady ms"], rows),
    ]


def _steady_table(steady: dict, contenders: dict, sizes, points: int) -> list[str]:
    rows = []
    for (fam, n), res in steady.items():
        inst, comp = res.get("instant"), res.get("compiled")
        t_i = inst.stats.median if inst is not None and inst.ok else math.nan
        t_c = comp.stats.median if comp is not None and comp.ok else math.nan
        agree_tiers = inst.agreement.worst_rel if comp is not None and inst.agreement else None
        row = [fam, f"{n:,}", _fmt(res["session first"]), f"{res['points']:,}"]
        row += [_fmt(1e3 * t_c, 2), _fmt(1e3 * t_i, 2), _fmt(t_i / t_c, 2)]
        row.append(f"{agree_tiers:.0e}" if agree_tiers is not None else "")
        for name in ("JAX", "SymPy"):
            c = contenders.get((fam, n, name))
            if not isinstance(c, dict):
                row += ["not run" if c is None else c, ""]
                continue
            agree = max(_rel(a, b) for a, b in zip(c["check"], res["check"]))
            steady_ms = c.get("steady")
            row.append(
                f"{1e3 * steady_ms:.2f}"
                if steady_ms
                else f"no result within {CONTENDER_TIMEOUT:.0f} s"
            )
            row.append(f"{agree:.0e}")
        rows.append(row)
    return [
        "",
        f"### Steady state: one `value_and_grad` over {points:,} points (ms, median)",
        "",
        f"Graphs of {BIG_GRAPH:,} nodes run over {BIG_GRAPH_POINTS:,} points (the *points* "
        'column). *in session*: `compile_gradient(mode="instant")` + the first `value_and_grad` '
        "(1,000 points) in this process with the machine loaded — a notebook's next expression. "
        "Both tiers run in this process, interleaved, from the warm cache; *tiers agree* is the "
        "instant tier's worst relative difference from the compiled kernel over all points. JAX "
        "and SymPy run in their child processes; their *agree* is the worst difference "
        "|a − b| / max(1, |a|, |b|) from symgrad at 5 points.",
        "",
        md_table(
            [
                "family",
                "nodes",
                "in session (s)",
                "points",
                "compiled",
                "instant",
                "instant ÷ compiled",
                "tiers agree",
                "JAX",
                "agree",
                "SymPy",
                "agree",
            ],
            rows,
        ),
    ]


def _targets(first: dict, steady: dict, sizes) -> list[Target]:
    def worst(mode: str, state: str, n: int) -> float:
        runs = [first.get((fam, n, mode, state)) for fam in FAMILIES]
        vals = [r.compile_to_first for r in runs if isinstance(r, ChildRun)]
        return max(vals) if len(vals) == len(FAMILIES) else math.nan

    def growth(mode: str, state: str, lo: int, hi: int) -> float:
        exps = [
            _exponent(
                first[(fam, lo, mode, state)].compile_to_first,
                first[(fam, hi, mode, state)].compile_to_first,
                lo,
                hi,
            )
            for fam in FAMILIES
            if isinstance(first.get((fam, lo, mode, state)), ChildRun)
            and isinstance(first.get((fam, hi, mode, state)), ChildRun)
        ]
        return max(exps) if len(exps) == len(FAMILIES) else math.nan

    if 10_000 not in sizes:  # quick: only the steady-state ratio means anything
        return [_ratio_target(steady)]
    compiled_cold = worst("compiled", "cold", 10_000)
    instant_warm = worst("instant", "warm", 10_000)
    session = max(steady[(fam, 10_000)]["session first"] for fam in FAMILIES)
    top = max(sizes)
    return [
        Target(
            "S1: 10,000 nodes, source → first gradient, compiled, cold (worse family)",
            compiled_cold,
            COMPILED_10K_S,
            unit="s",
            why="beyond 128 forward ops the compiled tier writes LLVM IR itself "
            "(`runtime/llvm_tier.py`) and LLVM compiles bounded chunk functions on two threads; "
            f'`mode="auto"` answers with the instant tier meanwhile '
            f"({worst('auto', 'cold', 10_000):.2f} s here)",
        ),
        Target(
            "S1: 10,000 nodes, source → first gradient, compiled, warm (kernel cached)",
            worst("compiled", "warm", 10_000),
            COMPILED_10K_S,
            unit="s",
        ),
        Target(
            "S1: 10,000 nodes, source → first gradient, instant, warm (fresh process)",
            instant_warm,
            INSTANT_10K_S,
            unit="s",
            note=f"in a session, the machine loaded: {session:.2f} s",
            why="the passes (trace, fusion, adjoint, program) take most of it, see the passes "
            "table; loading the virtual machine's object code takes milliseconds; in a session "
            f"with the machine loaded the same graph takes {session:.2f} s",
        ),
        Target(
            "S1: 10,000 nodes, source → first gradient, instant, cold (machine compiled too)",
            worst("instant", "cold", 10_000),
            INSTANT_10K_S,
            unit="s",
            note="compiling the machine happens once per machine and cache directory",
            why="compiling the virtual machine itself (once per machine: LLVM's O3 on its IR) "
            "comes on top of the warm time",
        ),
        _ratio_target(steady),
        Target(
            f"S1: growth of time to first result, instant warm, 1,000 → {top:,} nodes: exponent",
            growth("instant", "warm", 1_000, top),
            GROWTH_EXPONENT,
            unit="",
            note=f"time ∝ nodes^exponent, worse family; 10,000 → {top:,}: "
            f"{growth('instant', 'warm', 10_000, top):.2f}",
            why="a pass grows faster than linearly at these sizes; see the passes table",
        ),
        Target(
            f"S1: growth of time to first result, compiled cold, 1,000 → {COMPILED_MAX:,} "
            "nodes: exponent",
            growth("compiled", "cold", 1_000, COMPILED_MAX),
            GROWTH_EXPONENT,
            unit="",
            note="worse family",
            why="LLVM's code generation per chunk function grows with the chunk count",
        ),
    ]


def _ratio_target(steady: dict) -> Target:
    ratios = [
        res["instant"].stats.median / res["compiled"].stats.median
        for res in steady.values()
        if "compiled" in res and res["compiled"].ok and res["instant"].ok
    ]
    return Target(
        "S1: instant ÷ compiled steady state (worst size and family)",
        max(ratios) if ratios else math.nan,
        STEADY_RATIO,
        why="the machine runs each op over a block of points and stores it to its register "
        "file, where the compiled loop keeps values in registers",
    )


def _plot(passes: dict, first: dict, steady: dict, sizes) -> str:
    """Writes ``benchmarks/scale.png``; returns its name for the report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"dag": "-", "chain": "--"}
    for fam in FAMILIES:
        nodes = {n: passes[(fam, n)]["nodes"] for n in sizes}
        for mode, state in (("instant", "warm"), ("compiled", "cold"), ("compiled", "warm")):
            pts = [
                (nodes[n], r.compile_to_first)
                for n in sizes
                if isinstance(r := first.get((fam, n, mode, state)), ChildRun)
            ]
            if pts:
                label = f"{mode}, {state} ({fam})"
                axes[0].loglog(*zip(*pts), styles[fam], marker="o", label=label)
        total = [sum(passes[(fam, n)][k] for k in PASSES) for n in sizes]
        label = f"passes alone ({fam})"
        axes[0].loglog(list(nodes.values()), total, styles[fam], color="gray", label=label)
        for mode in ("compiled", "instant"):
            pts = [
                (nodes[n], 1e9 * r.stats.median / steady[(fam, n)]["points"])
                for n in sizes
                if (r := steady[(fam, n)].get(mode)) is not None and r.ok
            ]
            if pts:
                axes[1].loglog(*zip(*pts), styles[fam], marker="o", label=f"{mode} ({fam})")
    axes[0].set(xlabel="nodes", ylabel="seconds", title="source → first gradient (fresh process)")
    axes[1].set(xlabel="nodes", ylabel="ns per point", title="value_and_grad, steady state")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=90)
    plt.close(fig)
    return PLOT.name


WORKLOAD = Workload(
    "S1", "scale", "compile latency and scale: 100 to 100,000 nodes, two tiers", run
)

"""Peers (issue 7) — symgrad against JAX, PyTorch, PyTensor, SymPy, SymEngine and hand-written code: F1 the neuron over N samples, F2 ‖W·x‖²,
F3 the 2-layer ReLU network and the lecture's sigmoid network, F4 the deep chain
g(u) = sin(u)·u + exp(−u·u) composed k times.

Every case runs, in one process and interleaved (``harness.run_contenders``), the hand-written
NumPy backward (the reference), a hand-written ``@numba.njit`` version (the practical limit),
SymPy ``diff`` + ``cse`` + ``lambdify`` and SymEngine ``Lambdify`` (LLVM) where the function is
elementwise, JAX ``jit`` of ``value_and_grad`` (``vjp`` with a ones seed for elementwise outputs),
PyTensor ``grad`` in NUMBA mode, PyTorch eager autograd and ``torch.compile``, and symgrad on both
tiers, fused and unfused. Everything is float64. A peer that is not installed is listed as skipped;
one that cannot express the case (SymPy on a 512×512 matrix program) says why; SymPy's build is cut
off after ``SYMPY_LIMIT`` seconds (expression swell on the deep chain).

Each workload also measures, in fresh processes, symgrad's cold first result (empty cache), its
first result on the instant tier when only the virtual machine is cached (a new kernel), its warm
start, and JAX's first call after import; and draws a plot (``benchmarks/peers_*.png``).
One workload, ``peers``; ``SYMGRAD_PEERS=F2,F4`` runs only some parts (for development).
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from numba import njit, prange

from benchmarks import startup
from benchmarks.harness import (
    Contender,
    Result,
    Target,
    Timed,
    agreement_table,
    child_env,
    fmt_num,
    md_table,
    missing_modules,
    ms,
    paired_ratio,
    run_contenders,
    timing_table,
)
from benchmarks.workloads import Options, Section, Workload
from benchmarks.workloads import neuron as f1

PLOT_DIR = Path(__file__).resolve().parent.parent
SYMPY_LIMIT = {True: 2.0, False: 90.0}  # seconds for diff + cse + lambdify (quick, full)
OURS, OURS_OUT = "sg-compiled", "sg-compiled-out"
#: Sleep before each sample (``run_contenders(settle=)``): the peers bring five thread pools
#: (NumPy's and SciPy's OpenBLAS, Numba's, XLA's, PyTorch's OpenMP) whose idle workers spin for up
#: to ~0.1 s; on two cores a spinning pool halves the cores of whoever runs next.
SETTLE = 0.15

# The targets.
F1_VS_NUMBA = 1.1
F3_VS_NUMPY = 1.0
F4_VS_JAX = 1.0
F4_VS_TORCH_COMPILE = 1.5
FASTER_THAN_PEERS = 1.0


# ---------------------------------------------------------------------------------- backends
def _ns(kind: str) -> SimpleNamespace:
    """The few functions the problems use, for one backend (``fn(ns, *inputs)``)."""
    if kind == "jax":
        import jax.numpy as m

        return SimpleNamespace(exp=m.exp, sin=m.sin, sum=m.sum, relu=lambda x: m.maximum(0.0, x))
    if kind == "torch":
        import torch as m

        return SimpleNamespace(exp=m.exp, sin=m.sin, sum=m.sum, relu=m.relu)
    if kind == "pytensor":
        import pytensor.tensor as m

        return SimpleNamespace(exp=m.exp, sin=m.sin, sum=m.sum, relu=lambda x: m.maximum(0.0, x))
    if kind == "sympy":
        import sympy as m

        return SimpleNamespace(exp=m.exp, sin=m.sin)
    if kind == "symengine":
        import symengine as m

        return SimpleNamespace(exp=m.exp, sin=m.sin)
    raise ValueError(kind)


class BuildTimeout(Exception):
    pass


@contextmanager
def time_limit(seconds: float):
    """Interrupt pure-Python work (SymPy) after ``seconds``; a no-op off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise BuildTimeout(f"did not finish in {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------------------- problems
@dataclass
class Problem:
    """One case: its inputs, the function once for every backend, and the hand-written code."""

    key: str  # column header, e.g. "k=16"
    title: str
    inputs: tuple[str, ...]
    wrt: tuple[str, ...]
    make_data: Callable[[int], dict[str, np.ndarray]]
    fn: Callable[..., Any]  # fn(ns, *inputs): the function, written once for jax/torch/...
    source: Callable[[], Any]  # symgrad's source: text or callable
    numpy: Callable[[dict], Callable[[], Any]]
    numba: Callable[[dict], Callable[[], Any]]
    scalar: bool = False  # a scalar loss (tensor program); else elementwise, seeded with ones
    shapes: dict[str, tuple] | None = None
    #: code for a fresh process: defines SRC, KW (compile_gradient keywords) and DATA
    child: str = ""
    param: float = math.nan  # x-axis of the plot (k for F4)
    extra: list[Contender] = field(default_factory=list)
    #: The hand-written Numba multiplies with np.dot, i.e. SciPy's OpenBLAS, whose idle threads
    #: spin for ~0.1 s after each product: interleaved with NumPy's OpenBLAS on two cores each
    #: pool halves the other's cores (measured in T1: NumPy's lines 0.65 -> 4.0 ms; here the
    #: contender's own median was 38 ms against a best of 3.7). It gets rounds of its own.
    numba_apart: bool = False

    @property
    def elementwise(self) -> bool:
        return self.shapes is None

    def kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        if self.shapes is not None:
            kw["shapes"] = self.shapes
        if self.wrt != self.inputs:
            kw["wrt"] = list(self.wrt)
        return kw


def _rng_data(shapes: dict[str, tuple[int, ...]], scale: dict[str, float] | None = None):
    def make(seed: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        return {n: rng.standard_normal(s) * (scale or {}).get(n, 1.0) for n, s in shapes.items()}

    return make


def _grads(names, values) -> dict[str, Any]:
    return dict(zip(names, values))


def _value_then_grads(p: Problem, fn: Callable, data: dict) -> Callable[[], Any]:
    """``run()`` for a function of the inputs that returns [value, *gradients]."""
    args = [data[n] for n in p.inputs]

    def run():
        res = fn(*args)
        return res[0], _grads(p.wrt, res[1:])

    return run


# F1 — the neuron ------------------------------------------------------------------------------
def _neuron_fn(m, w0, x0, w1, x1, w2):
    return 1 / (1 + m.exp(-(w0 * x0 + w1 * x1 + w2)))


def neuron(n: int) -> Problem:
    p = Problem(
        key=f"N={n:,}",
        title=f"F1 neuron, N = {n:,}",
        inputs=f1.NAMES,
        wrt=f1.NAMES,
        make_data=lambda seed: f1.make_data(n, seed),
        fn=_neuron_fn,
        source=lambda: f1.EXPR,
        numpy=f1._numpy,
        numba=f1._numba_fresh,
        child=(
            f"SRC = {f1.EXPR!r}\nKW = {{}}\n"
            f"DATA = {{n: np.random.default_rng(0).standard_normal({n}) for n in {f1.NAMES!r}}}\n"
        ),
    )
    p.extra = [
        Contender("numba-reused", "hand-written Numba prange loop", f1._numba_reused, "limit",
                  "reused", compare_with=OURS_OUT),
        Contender(OURS_OUT, "symgrad compiled, fused, value_and_grad(out=)",
                  _symgrad(p, "compiled", True, out=True), "symgrad", "reused",
                  compare_with=OURS_OUT),
    ]  # fmt: skip
    return p


# F2 — ||W x||^2 -------------------------------------------------------------------------------
def _norm_fn(m, W, x):
    return m.sum((W @ x) ** 2)


def _norm_numpy(data):
    W, x = data["W"], data["x"]

    def run():
        q = W @ x  # forward
        f = q @ q
        dq = 2.0 * q  # backward: d/dq of sum(q²)
        return f, {"W": np.outer(dq, x), "x": W.T @ dq}  # matmul's two adjoints

    return run


@njit(parallel=True, error_model="numpy")
def _norm_loop(W, x, dW, dx):
    n, m = W.shape
    q = np.empty(n)
    for i in prange(n):
        s = 0.0
        for j in range(m):
            s += W[i, j] * x[j]
        q[i] = s
        for j in range(m):
            dW[i, j] = 2.0 * s * x[j]
    for j in prange(m):
        s = 0.0
        for i in range(n):
            s += W[i, j] * q[i]
        dx[j] = 2.0 * s
    return np.sum(q * q)


def _norm_numba(data):
    W, x = data["W"], data["x"]

    def run():
        dW, dx = np.empty_like(W), np.empty_like(x)
        return _norm_loop(W, x, dW, dx), {"W": dW, "x": dx}

    return run


def norm(n: int) -> Problem:
    shapes = {"W": ("n", "n"), "x": ("n",)}
    return Problem(
        key=f"n={n}",
        title=f"F2 ‖W·x‖², n = {n}",
        inputs=("W", "x"),
        wrt=("W", "x"),
        make_data=_rng_data({"W": (n, n), "x": (n,)}),
        fn=_norm_fn,
        source=lambda: "sum((W @ x)**2)",
        numpy=_norm_numpy,
        numba=_norm_numba,
        scalar=True,
        shapes=shapes,
        child=(
            f"SRC = 'sum((W @ x)**2)'\nKW = {{'shapes': {shapes!r}}}\n"
            f"_r = np.random.default_rng(0)\n"
            f"DATA = {{'W': _r.standard_normal(({n}, {n})), 'x': _r.standard_normal({n})}}\n"
        ),
    )


# F3 — 2-layer networks ------------------------------------------------------------------------
RELU_LOSS = "sum((maximum(0, X @ W1) @ W2 - Y)**2) / B"
SIGMOID_LOSS = "sum((1/(1+exp(-(X @ W1))) @ W2 - Y)**2)"
NET_SHAPES = {"X": ("B", "D"), "W1": ("D", "H"), "W2": ("H", "C"), "Y": ("B", "C")}


def _relu_fn(m, X, W1, W2, Y):
    return m.sum((m.relu(X @ W1) @ W2 - Y) ** 2) / X.shape[0]


def _sigmoid_fn(m, X, W1, W2, Y):
    return m.sum((1 / (1 + m.exp(-(X @ W1))) @ W2 - Y) ** 2)


def _net_numpy(relu: bool):
    def make(data):
        X, W1, W2, Y = (data[n] for n in ("X", "W1", "W2", "Y"))

        def run():
            a = X @ W1  # forward
            h = np.maximum(0.0, a) if relu else 1.0 / (1.0 + np.exp(-a))
            r = h @ W2 - Y
            c = 1.0 / X.shape[0] if relu else 1.0
            loss = c * np.sum(r * r)
            g = (2.0 * c) * r  # backward: grad_y_pred
            dW2 = h.T @ g
            dh = g @ W2.T
            da = dh * (a > 0) if relu else dh * h * (1.0 - h)
            return loss, {"W1": X.T @ da, "W2": dW2}

        return run

    return make


@njit(parallel=True, error_model="numpy")
def _net_loop(X, W1, W2, Y, relu):
    a = X @ W1
    h = np.empty_like(a)
    for i in prange(a.shape[0]):
        for j in range(a.shape[1]):
            h[i, j] = max(a[i, j], 0.0) if relu else 1.0 / (1.0 + math.exp(-a[i, j]))
    r = h @ W2 - Y
    c = 1.0 / X.shape[0] if relu else 1.0
    loss = c * np.sum(r * r)
    g = (2.0 * c) * r
    dW2 = h.T @ g
    dh = g @ W2.T
    for i in prange(a.shape[0]):
        for j in range(a.shape[1]):
            if relu:
                dh[i, j] = dh[i, j] if a[i, j] > 0 else 0.0
            else:
                dh[i, j] *= h[i, j] * (1.0 - h[i, j])
    return loss, X.T @ dh, dW2


def _net_numba(relu: bool):
    def make(data):
        args = [data[n] for n in ("X", "W1", "W2", "Y")]

        def run():
            loss, dW1, dW2 = _net_loop(*args, relu)
            return loss, {"W1": dW1, "W2": dW2}

        return run

    return make


def network(relu: bool, b: int, d: int, h: int, c: int) -> Problem:
    sizes = {"X": (b, d), "W1": (d, h), "W2": (h, c), "Y": (b, c)}
    scale = {"W1": 1 / math.sqrt(d), "W2": 1 / math.sqrt(h)}  # pre-activations ~ N(0, 1)
    loss = RELU_LOSS if relu else SIGMOID_LOSS
    name = "ReLU" if relu else "sigmoid (lecture)"
    return Problem(
        key=f"{'ReLU' if relu else 'sigmoid'} {b}×{d}×{h}×{c}",
        title=f"F3 2-layer {name} network, B, D, H, C = {b}, {d}, {h}, {c}",
        inputs=("X", "W1", "W2", "Y"),
        wrt=("W1", "W2"),
        make_data=_rng_data(sizes, scale),
        fn=_relu_fn if relu else _sigmoid_fn,
        source=lambda: loss,
        numpy=_net_numpy(relu),
        numba=_net_numba(relu),
        numba_apart=True,
        scalar=True,
        shapes=NET_SHAPES,
        child=(
            f"SRC = {loss!r}\nKW = {{'shapes': {NET_SHAPES!r}, 'wrt': ['W1', 'W2']}}\n"
            f"_r = np.random.default_rng(0)\n"
            f"DATA = {{k: _r.standard_normal(s) * {scale!r}.get(k, 1.0) "
            f"for k, s in {sizes!r}.items()}}\n"
        ),
    )


# F4 — the deep chain --------------------------------------------------------------------------
def chain_fn(k: int) -> Callable:
    def fn(m, u):
        for _ in range(k):
            u = m.sin(u) * u + m.exp(-u * u)
        return u

    return fn


def _chain_source(k: int) -> Callable:
    def chain(u):
        from compiler import ops

        for _ in range(k):
            u = ops.sin(u) * u + ops.exp(-u * u)
        return u

    return chain


def _chain_numpy(k: int):
    def make(data):
        u = data["u"]

        def run():
            x, saved = u, []
            for _ in range(k):  # forward, keeping each step's input, sin and exp
                s, e = np.sin(x), np.exp(-x * x)
                saved.append((x, s, e))
                x = s * x + e
            d = np.ones_like(u)  # backward: upstream × g'(x) = cos(x)·x + sin(x) − 2x·exp(−x²)
            for xi, s, e in reversed(saved):
                d = d * (np.cos(xi) * xi + s - 2.0 * xi * e)
            return x, {"u": d}

        return run

    return make


@njit(parallel=True, error_model="numpy")
def _chain_loop(u, k, out, du):
    # one input, one output per element: the derivative rides along the forward (no storage)
    for i in prange(u.shape[0]):
        x = u[i]
        d = 1.0
        for _ in range(k):
            s = math.sin(x)
            e = math.exp(-x * x)
            d *= math.cos(x) * x + s - 2.0 * x * e
            x = s * x + e
        out[i] = x
        du[i] = d


def _chain_numba(k: int):
    def make(data):
        u = data["u"]

        def run():
            out, du = np.empty_like(u), np.empty_like(u)
            _chain_loop(u, k, out, du)
            return out, {"u": du}

        return run

    return make


def chain(k: int, n: int) -> Problem:
    return Problem(
        key=f"k={k}",
        title=f"F4 chain, k = {k}, {n:,} points",
        inputs=("u",),
        wrt=("u",),
        make_data=_rng_data({"u": (n,)}),
        fn=chain_fn(k),
        source=lambda: _chain_source(k),
        numpy=_chain_numpy(k),
        numba=_chain_numba(k),
        param=k,
        child=(
            "from compiler import ops\n"
            "def SRC(u):\n"
            f"    for _ in range({k}):\n"
            "        u = ops.sin(u) * u + ops.exp(-u * u)\n"
            "    return u\n"
            "KW = {}\n"
            f"DATA = {{'u': np.random.default_rng(0).standard_normal({n})}}\n"
        ),
    )


# ---------------------------------------------------------------------------------- contenders
def _symgrad(p: Problem, mode: str, fuse: bool, out: bool = False):
    def make(data):
        import compiler

        k = compiler.compile_gradient(p.source(), mode=mode, fuse=fuse, **p.kwargs())
        args = {n: data[n] for n in p.inputs}
        if out:
            n = next(iter(args.values())).shape
            bufs = (np.empty(n), {name: np.empty(n) for name in k.wrt})
            return lambda: k.value_and_grad(**args, out=bufs)
        return lambda: k.value_and_grad(**args)

    return make


def _jax(p: Problem):
    def make(data):
        import jax

        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        ns = _ns("jax")
        idx = tuple(p.inputs.index(w) for w in p.wrt)

        def f(*a):
            return p.fn(ns, *a)

        if p.scalar:
            vg = jax.jit(jax.value_and_grad(f, argnums=idx))
        else:

            def vjp(*a):
                v, pullback = jax.vjp(f, *a)
                g = pullback(jnp.ones_like(v))
                return v, tuple(g[i] for i in idx)

            vg = jax.jit(vjp)
        args = [jax.device_put(data[n]) for n in p.inputs]

        def run():
            v, g = jax.block_until_ready(vg(*args))
            return v, _grads(p.wrt, g)

        return run

    return make


def _torch(p: Problem, compiled: bool):
    def make(data):
        import torch

        ns = _ns("torch")

        def f(*a):
            return p.fn(ns, *a)

        if compiled:
            # static shapes: one code object serves every case, and a second shape would
            # otherwise make Dynamo compile shape-generic kernels (and stop at its recompile limit)
            for knob in ("recompile_limit", "cache_size_limit"):
                if hasattr(torch._dynamo.config, knob):
                    setattr(torch._dynamo.config, knob, 64)
            f = torch.compile(f, dynamic=False)
        ts = [torch.from_numpy(data[n]) for n in p.inputs]

        def run():
            leaves = [t.detach().requires_grad_(n in p.wrt) for n, t in zip(p.inputs, ts)]
            v = f(*leaves)
            v.backward() if p.scalar else v.backward(torch.ones_like(v))
            grads = {n: t.grad for n, t in zip(p.inputs, leaves) if n in p.wrt}
            return v.detach(), grads

        return run

    return make


def _pytensor(p: Problem):
    def make(data):
        import pytensor
        import pytensor.tensor as pt

        vs = [pt.tensor(n, dtype="float64", shape=(None,) * data[n].ndim) for n in p.inputs]
        out = p.fn(_ns("pytensor"), *vs)
        cost = out if p.scalar else out.sum()
        grads = pytensor.grad(cost, [vs[p.inputs.index(w)] for w in p.wrt])
        fn = pytensor.function(vs, [out, *grads], mode="NUMBA")
        return _value_then_grads(p, fn, data)

    return make


def _sympy(p: Problem, limit: float):
    def make(data):
        import sympy as sp

        syms = sp.symbols(list(p.inputs))
        with time_limit(limit):
            f = p.fn(_ns("sympy"), *syms)
            exprs = [f] + [sp.diff(f, syms[p.inputs.index(w)]) for w in p.wrt]
            fn = sp.lambdify(syms, exprs, modules="numpy", cse=True)
        return _value_then_grads(p, fn, data)

    return make


def _symengine(p: Problem):
    def make(data):
        import symengine as se

        syms = [se.Symbol(n) for n in p.inputs]
        f = p.fn(_ns("symengine"), *syms)
        exprs = [f] + [f.diff(syms[p.inputs.index(w)]) for w in p.wrt]
        fn = se.Lambdify(syms, exprs, backend="llvm", cse=True)
        X = np.column_stack([data[n] for n in p.inputs])  # one row per point
        n = X.shape[0]

        def run():
            res = np.asarray(fn(X)).reshape(n, len(exprs))
            return res[:, 0], {w: res[:, j + 1] for j, w in enumerate(p.wrt)}

        return run

    return make


def contenders(
    p: Problem, quick: bool, first: bool = True
) -> tuple[list[Contender], dict[str, str]]:
    """The case's contenders, and the reasons some are not run (name -> reason)."""
    C = Contender
    rows = [
        C("numpy", "hand-written NumPy (the lecture's backward)", p.numpy, "reference",
          compare_with=OURS),
        C("numba", "hand-written @numba.njit(parallel) loop", p.numba, "limit",
          compare_with=OURS),
        C("sympy", "SymPy diff + cse + lambdify", _sympy(p, SYMPY_LIMIT[quick]), "peer",
          compare_with=OURS),
        C("symengine", "SymEngine Lambdify (LLVM, cse)", _symengine(p), "peer",
          requires=("symengine",), compare_with=OURS),
        C("jax", "JAX jit(value_and_grad), x64", _jax(p), "peer", requires=("jax",),
          compare_with=OURS),
        C("pytensor", "PyTensor grad, NUMBA mode", _pytensor(p), "peer",
          requires=("pytensor",), compare_with=OURS),
        C("torch", "PyTorch eager autograd", _torch(p, False), "peer", requires=("torch",),
          compare_with=OURS),
        C("torch-compile", "PyTorch torch.compile + autograd", _torch(p, True), "peer",
          requires=("torch",), compare_with=OURS),
        C(OURS, "symgrad compiled, fused (the default's steady state)",
          _symgrad(p, "compiled", True), "symgrad", compare_with=OURS),
        C("sg-compiled-unfused", "symgrad compiled, fuse=False",
          _symgrad(p, "compiled", False), "symgrad", compare_with=OURS),
        C("sg-instant", "symgrad instant tier, fused", _symgrad(p, "instant", True), "symgrad",
          compare_with=OURS),
        C("sg-instant-unfused", "symgrad instant tier, fuse=False",
          _symgrad(p, "instant", False), "symgrad", compare_with=OURS),
        *p.extra,
    ]  # fmt: skip
    skip: dict[str, str] = {}
    if not p.elementwise:
        why = "not applicable: a matrix program; diff/Lambdify take one scalar symbol per entry"
        skip["sympy"] = skip["symengine"] = why
    if quick:
        skip["torch-compile"] = "not run with --quick (its first compile takes 10–100 s here)"
        if not first:
            skip["pytensor"] = (
                "not run with --quick after a part's first case (compiles for seconds)"
            )
    return rows, skip


# ---------------------------------------------------------------------------------- running
@dataclass
class Case:
    problem: Problem
    timed: Timed
    results: list[Result]

    @property
    def by(self) -> dict[str, Result]:
        return {r.contender.name: r for r in self.results}

    def median(self, name: str) -> float:
        r = self.by.get(name)
        return r.stats.median if r is not None and r.ok else math.nan

    def ratio(self, ours: str, theirs: str) -> tuple[float, str]:
        by = self.by
        if not (ours in by and theirs in by and by[ours].ok and by[theirs].ok):
            return math.nan, ""
        r, q1, q3 = paired_ratio(by[ours], by[theirs])
        return r, "timed apart" if math.isnan(q1) else f"per-round IQR {q1:.2f}–{q3:.2f}"

    def fastest_peer(self) -> Result | None:
        peers = [r for r in self.results if r.contender.kind == "peer" and r.ok]
        return min(peers, key=lambda r: r.stats.median) if peers else None


def run_case(p: Problem, opts: Options, log, gave_up: dict[str, str], first: bool) -> Case:
    """Time one case; ``gave_up`` carries contenders that timed out at a smaller size."""
    log(f"  {p.title}")
    rows, skip = contenders(p, opts.quick, first)
    for name, why in gave_up.items():
        skip.setdefault(name, why)
    runnable = [c for c in rows if c.name not in skip]
    apart = {"numba"} if p.numba_apart else set()
    data = p.make_data(opts.seed)
    repeats = opts.repeats or (5 if opts.quick else 30)

    def timed_rounds(group: list[Contender], repeats: int) -> Timed:
        return run_contenders(
            group,
            data,
            reference="numpy",
            repeats=repeats,
            warmup=1 if opts.quick else 5,
            min_sample=0.002 if opts.quick else 0.02,
            budget=opts.budget if opts.budget is not None else (0.0 if opts.quick else 150.0),
            settle=0.0 if opts.quick else SETTLE,
            log=lambda s: log("  " + s),
        )

    timed = timed_rounds([c for c in runnable if c.name not in apart], repeats)
    by = {r.contender.name: r for r in timed.results}
    if apart & {c.name for c in runnable}:
        group = [c for c in runnable if c.name in apart | {"numpy", OURS}]
        side = timed_rounds(group, max(5, repeats // 3))
        by.update({r.contender.name: r for r in side.results if r.contender.name in apart})
    results = []
    for c in rows:
        if c.name in skip:
            results.append(Result(c, status=f"skipped: {skip[c.name]}"))
            continue
        r = by[c.name]
        if "BuildTimeout" in r.status:
            r.status = "gave up: diff + cse + lambdify " + r.status.split(": ", 2)[-1]
            gave_up[c.name] = f"gave up at {p.key} (build over {SYMPY_LIMIT[opts.quick]:.0f} s)"
        results.append(r)
    return Case(p, timed, results)


@contextmanager
def _own_cache():
    """A new empty symgrad cache for the run, so the first-call column is a cold compile (the
    instant tier's virtual machine is compiled once, by the first part's first case)."""
    old = os.environ.get("SYMGRAD_CACHE_DIR")
    d = tempfile.mkdtemp(prefix="symgrad-peers-")
    os.environ["SYMGRAD_CACHE_DIR"] = d
    try:
        yield d
    finally:
        if old is None:
            os.environ.pop("SYMGRAD_CACHE_DIR", None)
        else:
            os.environ["SYMGRAD_CACHE_DIR"] = old
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------------------------- start-up
_SG_CHILD = """
import numpy as np
import compiler
MARKS['imported'] = _t.perf_counter()
{child}
MARKS['ready'] = _t.perf_counter()
k = compiler.compile_gradient(SRC, mode={mode!r}, **KW)
MARKS['compiled'] = _t.perf_counter()
value, grads = k.value_and_grad(**DATA)
MARKS['first'] = _t.perf_counter()
MARKS['tier'] = k.tier
"""

#: Fills a cache directory with the instant tier's virtual machine, from another expression.
_PREFILL_VM = """
import numpy as np
import compiler
compiler.compile_gradient('sin(a) * b + exp(c)', mode='instant').value_and_grad(
    a=np.ones(3), b=np.ones(3), c=np.ones(3))
MARKS['first'] = _t.perf_counter()
"""

_JAX_CHILD = """
import numpy as np
import jax
jax.config.update('jax_enable_x64', True)
import jax.numpy as jnp
from benchmarks.workloads import peers
MARKS['imported'] = _t.perf_counter()
p = peers.{factory}
run_make = peers._jax(p)
data = p.make_data(0)
MARKS['ready'] = _t.perf_counter()
run = run_make(data)
MARKS['compiled'] = _t.perf_counter()
run()
MARKS['first'] = _t.perf_counter()
"""


@dataclass
class Startup:
    rows: list[list[str]]
    cold: float = math.nan
    instant: float = math.nan
    jax: float = math.nan
    note: str = ""


def _startup(p: Problem, factory: str, opts: Options, log) -> Startup:
    """Cold (empty cache, mode='auto'), a new kernel on the instant tier with the VM cached,
    warm start, and JAX's first call after import: each in fresh processes."""
    s = startup
    n_cold, n_warm = (1, 1) if opts.quick else (3, 3)
    tries = 1 if opts.quick else s.TRIES
    log(f"  start-up: {p.title}")
    body = _SG_CHILD.format(child=p.child, mode="auto")
    colds, warms = s.cold_and_warm(body, cold=n_cold, warm=n_warm, tries=tries, log=log)
    # This process's cache directory holds the virtual machine (the instant tier's contenders
    # ran), and nothing else the instant tier reads: a new kernel there is "VM cached, kernel new".
    env = child_env()
    if not any(Path(env["SYMGRAD_CACHE_DIR"]).glob("vm_*")):
        s.quiet_run(_PREFILL_VM, env, tries=1)
    instants = []
    for _ in range(n_cold):
        run, _, _ = s.quiet_run(_SG_CHILD.format(child=p.child, mode="instant"), env, tries=tries)
        instants.append(run)
        log(f"    instant, VM cached: {run.compile_to_first:.3f} s")
    jax_runs: list[startup.ChildRun] = []
    if not missing_modules(["jax"]):
        jax_runs = s.once(_JAX_CHILD.format(factory=factory), n_cold, tries)
        log(f"    jax first call: {s.median(jax_runs, 'compile_to_first'):.3f} s")
    tier = colds[0].marks.get("tier", "?") if colds else "?"

    def row(what, runs, attr, figure):
        return [what, len(runs), fmt_num(s.median(runs, "imports"), "s"),
                f"**{fmt_num(s.median(runs, attr), 's')}** {figure}", s.span(runs, attr),
                f"{100 * s.median(runs, 'others'):.0f}%" if runs else ""]  # fmt: skip

    rows = [
        row(f"symgrad cold, empty cache, mode='auto' (answered by: {tier})", colds,
            "compile_to_first", "compile_gradient + first call"),
        row("symgrad new kernel, instant tier, VM already cached", instants,
            "compile_to_first", "compile_gradient + first call"),
        row("symgrad warm (cache filled), mode='auto'", warms[""], "launch_to_first",
            "launch → first result"),
    ]  # fmt: skip
    if jax_runs:
        rows.append(row("JAX, fresh process: jit + first call after import", jax_runs,
                        "compile_to_first", "jit + first call"))  # fmt: skip
    else:
        rows.append(["JAX first call", 0, "", "skipped: not installed (jax)", "", ""])
    return Startup(
        rows,
        cold=s.median(colds, "compile_to_first"),
        instant=s.median(instants, "compile_to_first"),
        jax=s.median(jax_runs, "compile_to_first") if jax_runs else math.nan,
    )


def _startup_table(st: Startup) -> str:
    headers = ["run", "runs", "imports", "figure (median)", "min–max", "others' CPU"]
    return md_table(headers, st.rows)


def _startup_targets(wid: str, st: Startup) -> list[Target]:
    note = f"JAX: {fmt_num(st.jax, 's')}"
    return [
        Target(f"{wid} cold start: symgrad mode='auto', empty cache ÷ JAX first call",
               st.cold / st.jax, 1.0, note=note,
               why=f"mode='auto' compiles a small graph with Numba at once "
                   f"({fmt_num(st.cold, 's')}: LLVM compiles the parallel and serial entries); "
                   f"the instant tier answers a new kernel in {fmt_num(st.instant, 's')}"),
        Target(f"{wid} cold start: symgrad instant tier (VM cached), new kernel ÷ JAX first call",
               st.instant / st.jax, 1.0, note=note),
    ]  # fmt: skip


# ---------------------------------------------------------------------------------- report
def summary_table(cases: list[Case]) -> str:
    """Contenders down, cases across: median ms and symgrad ÷ this."""
    names = []
    for c in cases:
        for r in c.results:
            if r.contender.name not in names:
                names.append(r.contender.name)
    labels = {r.contender.name: r.contender.label for c in cases for r in c.results}
    rows = []
    for name in names:
        row = [labels[name]]
        for c in cases:
            r = c.by.get(name)
            if r is None:
                row += ["", ""]
            elif not r.ok:
                row += [r.status.split(" (")[0] if r.status.startswith("skip") else r.status, ""]
            else:
                ours = r.contender.compare_with or OURS
                ratio = c.ratio(ours, name)[0]
                row += [ms(r.stats.median), f"{ratio:.2f}" if not math.isnan(ratio) else ""]
        rows.append(row)
    headers = ["contender"]
    for c in cases:
        headers += [f"{c.problem.key} ms", "symgrad ÷ this"]
    return md_table(headers, rows)


def _why_ratio(c: Case, theirs: str) -> str:
    sg = {n: c.median(n) for n in (OURS, "sg-compiled-unfused", "sg-instant", "numba", "numpy")}
    return (
        f"{c.problem.key}: symgrad compiled {ms(sg[OURS])} ms (unfused "
        f"{ms(sg['sg-compiled-unfused'])}, instant {ms(sg['sg-instant'])}), {theirs} "
        f"{ms(c.median(theirs))} ms, hand-written Numba {ms(sg['numba'])} ms, NumPy "
        f"{ms(sg['numpy'])} ms"
    )


def ratio_target(c: Case, what: str, theirs: str, limit: float, ours: str = OURS, why=""):
    r, spread = c.ratio(ours, theirs)
    label = c.by[theirs].contender.label if theirs in c.by else theirs
    return Target(f"{what} ({c.problem.key})", r, limit, spread=spread,
                  note=f"vs {label}", why=why or _why_ratio(c, theirs))  # fmt: skip


def peers_target(wid: str, c: Case) -> Target | None:
    best = c.fastest_peer()
    if best is None:
        return None
    return ratio_target(c, f"{wid} symgrad ÷ fastest peer", best.contender.name,
                        FASTER_THAN_PEERS)  # fmt: skip


def _plot(wid: str, name: str, title: str, cases: list[Case], quick: bool) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter
    except ImportError:
        return None
    out_dir = Path(tempfile.gettempdir()) / "symgrad-bench-quick" if quick else PLOT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"peers_{name}.png"
    labels = {r.contender.name: r.contender.label for c in cases for r in c.results}
    if all(not math.isnan(c.problem.param) for c in cases) and len(cases) > 2:
        fig, ax = plt.subplots(figsize=(8, 5))
        for n in labels:
            pts = [
                (c.problem.param, c.median(n) * 1e3) for c in cases if not math.isnan(c.median(n))
            ]
            if pts:
                xs, ys = zip(*pts)
                style = "-o" if n.startswith("sg-") else "--s"
                ax.plot(xs, ys, style, label=labels[n], lw=2.2 if n == OURS else 1.2, ms=4)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks([c.problem.param for c in cases], [c.problem.key for c in cases])
        ax.set_yscale("log")
        ax.set_ylabel("ms per value_and_grad (median)")
        ax.legend(fontsize=7, loc="upper left")
    else:
        fig, axes = plt.subplots(1, len(cases), figsize=(7 * len(cases), 4.8), squeeze=False)
        for ax, c in zip(axes[0], cases):
            ok = [r for r in c.results if r.ok]
            ys = range(len(ok))
            colors = ["tab:red" if r.contender.kind == "symgrad" else "tab:gray"
                      if r.contender.kind in ("reference", "limit") else "tab:blue"
                      for r in ok]  # fmt: skip
            ax.barh(ys, [r.stats.median * 1e3 for r in ok], color=colors)
            ax.set_yticks(ys, [f"{r.contender.label} [{r.contender.mode}]" for r in ok], fontsize=7)
            ax.invert_yaxis()
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            for y, r in zip(ys, ok):
                ax.text(r.stats.median * 1e3, y, f" {ms(r.stats.median)}", va="center", fontsize=7)
            ax.set_xlabel("ms per call, median (log scale)")
            ax.set_title(c.problem.title, fontsize=9)
        title += "   [red: symgrad, gray: hand-written, blue: peers]"
    fig.suptitle(f"{wid}: {title}" + (" (--quick)" if quick else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


@dataclass
class Part:
    """One F-workload's share of the peers section."""

    id: str
    markdown: str
    targets: list[Target]
    worst_rel: float


def run_part(
    fid: str,
    name: str,
    title: str,
    problems: list[Problem],
    start: tuple[Problem, str],
    opts: Options,
    log,
    targets_of: Callable[[list[Case]], list[Target]],
    intro: str,
) -> Part:
    log(f"{fid} — {title}")
    gave_up: dict[str, str] = {}
    cases = [run_case(p, opts, log, gave_up, i == 0) for i, p in enumerate(problems)]
    targets = targets_of(cases)
    parts = [f"### {fid} — {title}", "", intro, ""]
    plot = _plot(fid, name, title, cases, opts.quick)
    if plot is not None and not opts.quick:
        parts += [f"![{fid}: {title}]({plot.name})", ""]
    parts += ["#### Summary: median ms per value_and_grad, and symgrad ÷ this", "",
              summary_table(cases)]  # fmt: skip
    if opts.startup and opts.quick and fid != "F2":
        parts += ["", "(Cold and warm start: with --quick only in F2.)"]
    elif opts.startup:
        st = _startup(*start, opts, log)
        targets += _startup_targets(fid, st)
        parts += ["", f"#### Cold and warm start, {start[0].title} (fresh processes)", "",
                  "Cold: a new empty `SYMGRAD_CACHE_DIR`; `compile_gradient` + the first "
                  "`value_and_grad` after the imports (inputs made beforehand). Instant tier: "
                  "the cache holds only the instant tier's virtual machine (compiled once per "
                  "machine, here from another expression), the kernel is new. Warm: the cold "
                  "run's cache again, from launching the interpreter to the first result. JAX: "
                  "`jit` + the first call after `import jax` (no persistent compilation cache).",
                  "", _startup_table(st)]  # fmt: skip
    for c in cases:
        parts += [
            "",
            f"#### {c.problem.title}: time per call",
            "",
            c.timed.describe() + ". First call: this process's first call (compiles; symgrad "
            "starts from an empty cache directory)."
            + (
                " The hand-written Numba multiplies with `np.dot` (SciPy's OpenBLAS, whose idle "
                "threads spin after each product and halve everyone else's cores): it is timed "
                "in rounds of its own with the NumPy reference and symgrad."
                if c.problem.numba_apart
                else ""
            ),
            "",
            timing_table(c.results),
            "",
            f"##### {c.problem.title}: agreement with the hand-written NumPy reference",
            "",
            agreement_table(c.results),
        ]
    if opts.quick:
        for t in targets:
            t.note = (t.note + "; " if t.note else "") + "--quick: tiny sizes, not a verdict"
    worst = max(
        (r.agreement.worst_rel for c in cases for r in c.results if r.ok and r.agreement),
        default=0.0,
    )
    return Part(fid, "\n".join(parts), targets, worst)


# ---------------------------------------------------------------------------------- the parts
def _targets_f1(cases: list[Case]) -> list[Target]:
    c = cases[0]
    t = [ratio_target(c, "F1 symgrad ÷ hand-written parallel Numba, reused buffers", "numba-reused",
                      F1_VS_NUMBA, ours=OURS_OUT)]  # fmt: skip
    pt = peers_target("F1", c)
    return t + ([pt] if pt else [])


def _targets_f3(cases: list[Case]) -> list[Target]:
    t = []
    for c in cases:
        t.append(ratio_target(c, "F3 symgrad ÷ hand-written NumPy", "numpy", F3_VS_NUMPY))
        pt = peers_target("F3", c)
        if pt:
            t.append(pt)
    return t


def _targets_f4(cases: list[Case]) -> list[Target]:
    t = []
    for c in cases:
        t.append(ratio_target(c, "F4 symgrad ÷ JAX", "jax", F4_VS_JAX))
        t.append(ratio_target(c, "F4 symgrad ÷ torch.compile", "torch-compile",
                              F4_VS_TORCH_COMPILE))  # fmt: skip
    return t


def _f1(opts: Options, log) -> Part:
    n = 10_000 if opts.quick else 1_000_000
    p = neuron(n)
    return run_part("F1", "neuron", f"the neuron, N = {n:,}", [p], (p, f"neuron({n})"), opts,
                    log, _targets_f1,
                    f"`{f1.EXPR}`, all five inputs arrays of N = {n:,}; value and five "
                    "gradients.")  # fmt: skip


def _f2(opts: Options, log) -> Part:
    n = 64 if opts.quick else 512
    p = norm(n)
    return run_part("F2", "norm", f"‖W·x‖², n = {n}", [p], (p, f"norm({n})"), opts, log,
                    lambda cases: [],  # the issue sets no target for F2
                    f"`sum((W @ x)**2)`, W of {n}×{n}, x of {n}; gradients for W and x. The "
                    "issue sets no target here: the ratios are in the table.")  # fmt: skip


def _f3(opts: Options, log) -> Part:
    relu = (10, 64, 16, 4) if opts.quick else (100, 4096, 100, 10)
    sig = (8, 50, 16, 4) if opts.quick else (64, 1000, 100, 10)
    problems = [network(True, *relu), network(False, *sig)]
    start = (problems[0], f"network(True, {', '.join(map(str, relu))})")
    return run_part("F3", "network", "2-layer networks", problems, start, opts, log,
                    _targets_f3,
                    f"`{RELU_LOSS}` and the lecture's `{SIGMOID_LOSS}` (example 5); gradients "
                    "for W1 and W2 (W1 scaled by 1/√D and W2 by 1/√H so pre-activations are of "
                    "order 1).")  # fmt: skip


def _f4(opts: Options, log) -> Part:
    n = 2_000 if opts.quick else 100_000
    ks = (4, 8) if opts.quick else (4, 8, 16, 32)
    k0 = ks[-1] if opts.quick else 16
    return run_part("F4", "chain", f"the deep chain, {n:,} points", [chain(k, n) for k in ks],
                    (chain(k0, n), f"chain({k0}, {n})"), opts, log, _targets_f4,
                    f"g(u) = sin(u)·u + exp(−u·u) composed k = {', '.join(map(str, ks))} times "
                    f"over {n:,} points; value and du. symgrad traces a callable (as text the "
                    "chain's size would triple with each step); the hand-written Numba loop "
                    "carries the derivative along the forward (one input, one output per point). "
                    f"SymPy's build is cut off after {SYMPY_LIMIT[opts.quick]:.0f} s and not "
                    "tried again at larger k.")  # fmt: skip


PARTS = {"F1": _f1, "F2": _f2, "F3": _f3, "F4": _f4}
#: For development: ``SYMGRAD_PEERS=F2,F4`` runs only those parts (the section then says so).
PARTS_ENV = "SYMGRAD_PEERS"


def run(opts: Options, log: Callable[[str], None]) -> Section:
    wanted = [x.strip().upper() for x in os.environ.get(PARTS_ENV, "").split(",") if x.strip()]
    unknown = sorted(set(wanted) - set(PARTS))
    if unknown:
        raise SystemExit(f"{PARTS_ENV}: unknown part(s) {unknown}; known: {', '.join(PARTS)}")
    chosen = [k for k in PARTS if not wanted or k in wanted]
    with _own_cache():
        parts = [PARTS[k](opts, log) for k in chosen]
    intro = [
        "F1–F4 of issue 7. Every case runs, in one process and interleaved round by round "
        f"(a fresh random order each round, {SETTLE:g} s of sleep before each sample so the last "
        "contender's spinning thread pool is idle) after warm-up, the hand-written NumPy backward (the reference), a hand-written "
        "`@numba.njit(parallel=True)` version (the practical limit), SymPy `diff` + `cse` + "
        "`lambdify` and SymEngine `Lambdify` (LLVM backend) where the function is elementwise, "
        "JAX `jit(value_and_grad)` (for an elementwise output `jit` of `vjp` seeded with ones), "
        "PyTensor `grad` compiled in NUMBA mode, PyTorch eager autograd and `torch.compile`, and "
        "symgrad on both tiers, fused and `fuse=False`. Everything is float64, inputs standard "
        f"normal (seed {opts.seed}), outputs fresh unless marked `reused`. `symgrad ÷ this`: the "
        "median of symgrad's default (`compile_gradient(src)`: compiled tier, fused, in its "
        "steady state) divided by this row's — below 1 symgrad is faster. Agreement: worst "
        "absolute and relative |a − r| / max(|a|, |r|) difference against the hand-written "
        "NumPy reference. A peer not installed is listed as skipped (`pip install -e .[bench]`).",
    ]
    if len(chosen) < len(PARTS):
        intro.append(f"\nOnly {', '.join(chosen)} ran ({PARTS_ENV}={','.join(chosen)}).")
    md = "\n".join(intro) + "\n\n" + "\n\n".join(p.markdown for p in parts)
    targets = [t for p in parts for t in p.targets]
    worst = max((p.worst_rel for p in parts), default=0.0)
    title = "Peers (issue 7): F1–F4 against JAX, PyTorch, PyTensor, SymPy, SymEngine, hand-written"
    return Section("P", title, md, targets, worst)


WORKLOAD = Workload("P", "peers", "issue 7: F1–F4 against the peers and hand-written code", run)

"""F4's deep chain at k = 16 over 10^5 points: libm against the ops' vectorisable lowerings.

    python -m benchmarks.vecmath_bench [--k 16] [--n 100000] [--rounds 20] [--no-torch]

Times, interleaved round by round after warm-up (medians): symgrad's ``value_and_grad`` as this
checkout generates it; the same straight-line fused loop written by hand with libm's
``math.sin/exp/cos``, with the exp op's lowering and libm sin/cos, with the lowerings of exp,
sin and cos (libm fallback beyond TRIG_MAX), and with their fast path alone (no fallback, wrong
beyond 2**51: shown for what LLVM gives without it); and torch.compile. Not a test: no assertions.
"""

import argparse
import math
import time
from dataclasses import replace

import numpy as np
from numba import njit, prange

from compiler.ir.registry import OPS
from runtime import numba_ops


def _fast_only(op):
    """The op's fast form alone: wrong beyond TRIG_MAX, shown for what LLVM gives without it."""
    return replace(OPS[op], lower=lambda L, x: OPS[op].fast(L, x)[0], fast=None)


# The ops' own lowerings as Numba intrinsics: exp branch-free; sin and cos branch-free with the
# C library's value beyond TRIG_MAX (their vector lowering), or their fast form alone.
_exp = numba_ops.intrinsic("exp")
_sin, _cos = (numba_ops._make(replace(OPS[op], fast=None)) for op in ("sin", "cos"))
_sin_fast, _cos_fast = (numba_ops._make(_fast_only(op)) for op in ("sin", "cos"))


VARIANTS = {
    "hand, libm": ("math.sin", "math.exp", "math.cos"),
    "hand, exp": ("math.sin", "_exp", "math.cos"),
    "hand, exp sin cos": ("_sin", "_exp", "_cos"),
    "hand, exp sin cos, no fallback": ("_sin_fast", "_exp", "_cos_fast"),
}


def hand_kernel(k, sin, exp, cos):
    """The fused value-and-derivative loop, unrolled as symgrad writes it."""
    body = ["    for i in prange(u.shape[0]):", "        x = u[i]", "        d = 1.0"]
    for _ in range(k):
        body += [
            f"        s = {sin}(x)",
            f"        e = {exp}(-x * x)",
            f"        d *= {cos}(x) * x + s - 2.0 * x * e",
            "        x = s * x + e",
        ]
    body += ["        out[i] = x", "        du[i] = d"]
    ns = dict(
        math=math,
        prange=prange,
        _exp=_exp,
        _sin=_sin,
        _cos=_cos,
        _sin_fast=_sin_fast,
        _cos_fast=_cos_fast,
    )
    exec("def chain(u, out, du):\n" + "\n".join(body) + "\n", ns)
    return njit(parallel=True, error_model="numpy")(ns["chain"])


def chain_source(k):
    def chain(u):
        from compiler import ops

        for _ in range(k):
            u = ops.sin(u) * u + ops.exp(-u * u)
        return u

    return chain


def contenders(k, u, torch_too):
    import compiler

    kern = compiler.compile_gradient(chain_source(k))
    bufs = (np.empty_like(u), {"u": np.empty_like(u)})
    out = {"symgrad value_and_grad": lambda: kern.value_and_grad(u=u, out=bufs)}
    for name, fns in VARIANTS.items():
        f, o, d = hand_kernel(k, *fns), np.empty_like(u), np.empty_like(u)
        out[name] = lambda f=f, o=o, d=d: (f(u, o, d), (o, d))[1]
    if torch_too:
        try:
            import torch
        except ImportError:
            print("torch not installed: torch.compile skipped")
            return out

        def fn(x):
            for _ in range(k):
                x = torch.sin(x) * x + torch.exp(-x * x)
            return x

        cf = torch.compile(fn, dynamic=False)
        t = torch.from_numpy(u)

        def run():
            leaf = t.detach().requires_grad_(True)
            v = cf(leaf)
            v.backward(torch.ones_like(v))
            return v.detach(), leaf.grad

        out["torch.compile"] = run
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--no-torch", action="store_true")
    a = ap.parse_args()
    u = np.random.default_rng(0).standard_normal(a.n)
    cs = contenders(a.k, u, not a.no_torch)
    for f in cs.values():  # compile and warm up
        f(), f()
    times = {n: [] for n in cs}
    for _ in range(a.rounds):
        for n, f in cs.items():
            t = time.perf_counter()
            f()
            times[n].append(time.perf_counter() - t)
    ref = (
        min(np.median(times[n]) for n in cs if n == "torch.compile")
        if "torch.compile" in cs
        else None
    )
    print(f"F4 chain, k = {a.k}, n = {a.n:,}: median of {a.rounds} interleaved rounds")
    for n, ts in times.items():
        m = np.median(ts)
        ratio = f"  {m / ref:5.2f}x torch.compile" if ref else ""
        print(f"  {n:34s} {m * 1e3:8.2f} ms  (min {min(ts) * 1e3:.2f}){ratio}")


if __name__ == "__main__":
    main()

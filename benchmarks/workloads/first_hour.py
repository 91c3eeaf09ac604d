"""FH — the first hour (issue 13): a new user's scripts, each run four times in fresh processes
from an EMPTY kernel cache, beside the same scripts written in NumPy.

Two scripts, as a newcomer writes them (``import symgrad``, as the README does): Rosenbrock
``(1-x)**2 + 100*(y-x**2)**2`` and a Gaussian negative log-likelihood
``0.5*((x-mu)/sigma)**2 + log(sigma) + log(sqrt(2 pi))``, each ``value_and_grad`` over 10⁶
points (x, y arrays; mu, sigma scalars), called 20 times. A run's per-call time is its calls'
total over their number (the first call's compile included); its wall time is the whole process,
from start to exit (imports, and the wait at exit for a background compile, included). Targets:
every run's per-call time ≤ 1.2× NumPy's, runs 2–4 ≤ 0.5× NumPy's, the wall time of run 1 ≤
NumPy's + 1.5 s.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from benchmarks.harness import REPO_ROOT, Target, md_table
from benchmarks.workloads import Options, Section, Workload

RUNS = 4
N_FULL, CALLS_FULL = 1_000_000, 20
N_QUICK, CALLS_QUICK = 100_000, 10
PER_CALL_ANY_RUN = 1.2  # every run's per-call time ≤ this × NumPy's
PER_CALL_WARM = 0.5  # runs 2–4
WALL_EXTRA_S = 1.5  # run 1's wall time ≤ NumPy's + this

PROLOGUE = """
import json, sys, time
import numpy as np
N, CALLS = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
x = rng.standard_normal(N)
y = rng.standard_normal(N)
mu, sigma = 0.3, 1.7
times = []
"""

EPILOGUE = """
print(json.dumps({"times": times, "check": check, "tier": tier}))
"""

SCRIPTS = {
    "rosenbrock": {
        "symgrad": """
import symgrad
k = symgrad.compile_gradient("(1 - x)**2 + 100*(y - x**2)**2")
for _ in range(CALLS):
    t = time.perf_counter()
    v, g = k.value_and_grad(x=x, y=y)
    times.append(time.perf_counter() - t)
check, tier = [float(v.sum()), float(g["x"].sum()), float(g["y"].sum())], k.tier
""",
        "numpy": """
def value_and_grad(x, y):
    a = 1 - x
    b = y - x * x
    return a * a + 100 * b * b, {"x": -2 * a - 400 * x * b, "y": 200 * b}
for _ in range(CALLS):
    t = time.perf_counter()
    v, g = value_and_grad(x, y)
    times.append(time.perf_counter() - t)
check, tier = [float(v.sum()), float(g["x"].sum()), float(g["y"].sum())], "numpy"
""",
    },
    "gaussian_nll": {
        "symgrad": """
import symgrad
k = symgrad.compile_gradient("0.5*((x - mu)/sigma)**2 + log(sigma) + 0.9189385332046727")
for _ in range(CALLS):
    t = time.perf_counter()
    v, g = k.value_and_grad(x=x, mu=mu, sigma=sigma)
    times.append(time.perf_counter() - t)
check, tier = [float(v.sum()), float(g["x"].sum()), g["mu"], g["sigma"]], k.tier
""",
        "numpy": """
def value_and_grad(x, mu, sigma):
    z = (x - mu) / sigma
    gx = z / sigma
    v = 0.5 * z * z + np.log(sigma) + 0.9189385332046727
    return v, {"x": gx, "mu": -gx.sum(), "sigma": (1 - z * z).sum() / sigma}
for _ in range(CALLS):
    t = time.perf_counter()
    v, g = value_and_grad(x, mu, sigma)
    times.append(time.perf_counter() - t)
check, tier = [float(v.sum()), float(g["x"].sum()), float(g["mu"]), float(g["sigma"])], "numpy"
""",
    },
}


def child_env(cache_dir: str, pycache: str) -> dict[str, str]:
    """A new user's environment: an empty kernel cache, Python's bytecode cached (as after
    ``pip install``, which compiles it; this machine's ``PYTHONDONTWRITEBYTECODE`` would make
    every process compile symgrad's and llvmlite's sources again, ~0.1 s)."""
    env = {**os.environ, "SYMGRAD_CACHE_DIR": cache_dir, "PYTHONPATH": REPO_ROOT}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = pycache
    return env


def install_bytecode(pycache: str) -> None:
    """What ``pip install`` does: the packages' bytecode, compiled once (untimed)."""
    imports = "import symgrad, runtime.kernel, runtime.llvm_tier, runtime.instant, llvmlite.binding"
    env = child_env(pycache + "/unused-cache", pycache)
    subprocess.run([sys.executable, "-c", imports], env=env, cwd=REPO_ROOT, check=True, timeout=600)


def run_script(body: str, n: int, calls: int, env: dict[str, str]) -> dict:
    """One fresh process: its per-call times, wall time, checks and the engine of its last call."""
    code = PROLOGUE + body + EPILOGUE
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, str(n), str(calls)],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    out = json.loads(done.stdout.strip().splitlines()[-1])
    times = out["times"]
    return {
        "per_call": sum(times) / len(times),
        "first": times[0],
        "median": statistics.median(times),
        "wall": wall,
        "check": out["check"],
        "tier": out["tier"],
        "note": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "",
    }


def close(a: list[float], b: list[float]) -> bool:
    return all(abs(p - q) <= 1e-9 * max(1.0, abs(p), abs(q)) for p, q in zip(a, b))


def run(opts: Options, log: Callable[[str], None]) -> Section:
    n, calls = (N_QUICK, CALLS_QUICK) if opts.quick else (N_FULL, CALLS_FULL)
    rows, targets = [], []
    for name, bodies in SCRIPTS.items():
        with tempfile.TemporaryDirectory(prefix="symgrad-first-hour-") as tmp:
            install_bytecode(tmp + "/pycache")
            env = child_env(tmp + "/cache", tmp + "/pycache")
            numpy_runs, ours = [], []
            for r in range(RUNS):  # interleaved: a busy machine slows both alike
                numpy_runs.append(run_script(bodies["numpy"], n, calls, env))
                ours.append(run_script(bodies["symgrad"], n, calls, env))
                log(
                    f"  {name} run {r + 1}: symgrad {ours[-1]['per_call'] * 1e3:.1f} ms/call "
                    f"({ours[-1]['tier']}), NumPy {numpy_runs[-1]['per_call'] * 1e3:.1f} ms/call"
                )
        np_call = statistics.median(r["per_call"] for r in numpy_runs)
        np_wall = statistics.median(r["wall"] for r in numpy_runs)
        agree = all(close(r["check"], numpy_runs[0]["check"]) for r in ours)
        rows.append(
            [name, "NumPy (median of 4)", f"{np_call * 1e3:.1f}", "", "", f"{np_wall:.2f}", "", ""]
        )
        for k, r in enumerate(ours, 1):
            rows.append(
                [
                    name,
                    f"symgrad run {k}" + (" (empty cache)" if k == 1 else ""),
                    f"{r['per_call'] * 1e3:.1f}",
                    f"{r['first'] * 1e3:.0f}",
                    f"{r['median'] * 1e3:.1f}",
                    f"{r['wall']:.2f}",
                    r["tier"],
                    f"{r['per_call'] / np_call:.2f}×",
                ]
            )
        warm = ours[1:]
        why = (
            f"runs 2–4: first call {statistics.median(r['first'] for r in warm) * 1e3:.0f} ms "
            f"(importing llvmlite, loading the cached O3 code) of {calls} calls, then a median "
            f"call of {statistics.median(r['median'] for r in warm) * 1e3:.1f} ms "
            f"({statistics.median(r['median'] for r in warm) / np_call:.2f}× NumPy's per call); "
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
        )
        worst_any = max(r["per_call"] for r in ours) / np_call
        worst_warm = max(r["per_call"] for r in ours[1:]) / np_call
        extra = ours[0]["wall"] - np_wall
        spread = ", ".join(f"{r['per_call'] / np_call:.2f}" for r in ours)
        targets += [
            Target(
                f"{name}: every run's per-call time / NumPy's",
                worst_any,
                PER_CALL_ANY_RUN,
                spread=f"runs: {spread}",
            ),
            Target(f"{name}: runs 2–4 per-call time / NumPy's", worst_warm, PER_CALL_WARM, why=why),
            Target(
                f"{name}: run 1 wall time − NumPy's",
                extra,
                WALL_EXTRA_S,
                unit="s",
                note=ours[0]["note"][:120],
            ),
            Target(
                f"{name}: results agree with NumPy's (1e-9)",
                float(agree),
                1.0,
                at_most=False,
                unit="",
            ),
        ]
    table = md_table(
        [
            "script",
            "run",
            "per call (ms)",
            "first call (ms)",
            "median call (ms)",
            "wall (s)",
            "engine of the last call",
            "per call / NumPy",
        ],
        rows,
    )
    markdown = (
        f"{RUNS} fresh processes per script from an empty cache (`SYMGRAD_CACHE_DIR` a new "
        f"temporary directory), interleaved with the NumPy script; {n:,} points, {calls} calls "
        "of `value_and_grad` per run. Per call: the calls' total over their number (the first "
        "call's compile included); wall: the whole process, imports and exit included. "
        "Python's bytecode is compiled once beforehand, untimed, as `pip install` does.\n\n"
        + table
        + "\n"
    )
    return Section("FH", "FH — the first hour: new scripts from an empty cache", markdown, targets)


WORKLOAD = Workload("FH", "first_hour", "the first hour", run)

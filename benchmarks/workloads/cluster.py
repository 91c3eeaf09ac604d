"""D1 — data-parallel value + gradient on Dask (issue 17): events per second.

Two per-event losses with scalar parameters, their gradients summed over events:

- ``logistic``: ``log(1 + exp(-y*(w0*x0 + w1*x1 + b)))`` (y = ±1), 3 parameters;
- ``mixture``: issue 16's unbinned Gaussian-mixture NLL at K = 2, 6 parameters.

Contenders, each computing the summed value and the parameters' gradients of the same events:

1. ``in memory``: ``k.total_value_and_grad`` on NumPy arrays in this process (its own threads:
   2 cores);
2. ``dask threads``: the same call on Dask arrays of those events, threaded scheduler, 2 threads;
3. ``cluster 1`` / ``cluster 2``: a ``LocalCluster`` of 1 or 2 worker processes, one thread and one
   kernel thread each (``NUMBA_NUM_THREADS=1``): one core per worker, events persisted on them;
4. ``dask.array by hand``: the loss and its gradient written with ``dask.array`` + NumPy ufuncs
   (the gradient by hand), threaded scheduler, 2 threads.

Each is timed over block sizes (events per block); the median of the rounds is reported. Beside
them: the per-task overhead (from blocks of 4·10^4 events), Dask's own floor (the plain sum of one
column on the same cluster and blocks), an extrapolation to 100 nodes, and an
out-of-core pass — the mixture over 2·10^9 events generated blockwise (``da.random``, never
materialised) in a child process whose peak resident memory is read from ``getrusage``.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks.harness import Target, child_env, md_table, run_child
from benchmarks.workloads import Options, Section, Workload

PLOT = Path(__file__).resolve().parent.parent / "cluster.png"

LOGISTIC = "log(1 + exp(-y*(w0*x0 + w1*x1 + b)))"
LOGISTIC_PARAMS = {"w0": 0.7, "w1": -1.3, "b": 0.2}
MIXTURE = (
    "-log(exp(a0 - s0 - 0.5*((x - m0)*exp(-s0))**2) + exp(a1 - s1 - 0.5*((x - m1)*exp(-s1))**2))"
    " + log(exp(a0) + exp(a1)) + 0.9189385332046727"
)
MIXTURE_PARAMS = {"a0": 0.1, "a1": -0.3, "m0": -1.0, "m1": 1.2, "s0": 0.0, "s1": 0.3}

# Events per pass: a distributed pass costs Dask ~50 ms of its own here (scheduling, the
# tree's transfers: the table's "Dask's x.sum()" rows), which 32e6 events (0.1 s in memory)
# do not amortise; 1.28e8 (0.3-0.5 s) is a fit's pass at scale.
EVENTS, QUICK_EVENTS = 128_000_000, 200_000
BLOCKS, QUICK_BLOCKS = (100_000, 1_000_000, 4_000_000), (100_000,)
TINY_BLOCK = 40_000  # the per-task overhead is read from blocks this small
OUT_OF_CORE, QUICK_OUT_OF_CORE = 2_000_000_000, 8_000_000
OUT_OF_CORE_BLOCK = 4_000_000
ROUNDS, QUICK_ROUNDS = 5, 1
QUICK_NOTE = "**--quick: small sizes, one round, no plot: not for conclusions.**"
WORKER_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def events(loss: str, n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if loss == "logistic":
        x0, x1 = rng.normal(size=n), rng.normal(size=n)
        y = np.where(rng.random(n) < 1 / (1 + np.exp(-(0.7 * x0 - 1.3 * x1 + 0.2))), 1.0, -1.0)
        return {"x0": x0, "x1": x1, "y": y}
    return {"x": np.where(rng.random(n) < 0.5, rng.normal(-1.0, 1.0, n), rng.normal(1.2, 1.3, n))}


def kernel(loss: str):
    """The loss's kernel, differentiated by the parameters only (as a fit wants it)."""
    import symgrad

    source = LOGISTIC if loss == "logistic" else MIXTURE
    return symgrad.compile_gradient(source, wrt=list(params(loss)))


def params(loss: str) -> dict[str, float]:
    return LOGISTIC_PARAMS if loss == "logistic" else MIXTURE_PARAMS


def symgrad_pass(k, data: dict, p: dict, **scheduler) -> tuple:
    """One value + gradient pass: the summed loss and the parameters' gradients, computed
    (``k.total_value_and_grad``: over Dask arrays a few numbers back per task, one vector
    fetched) on the current Dask scheduler or ``scheduler=...``."""
    import dask

    with dask.config.set(**scheduler):
        return k.total_value_and_grad(**data, **p, wrt=list(p), now=True)


def by_hand(loss: str, data: dict, p: dict) -> tuple:
    """The loss and its gradient written with array operations (the gradient derived by hand),
    as a user of ``dask.array`` without symgrad would."""
    import dask.array as da

    if loss == "logistic":
        x0, x1, y = data["x0"], data["x1"], data["y"]
        margin = y * (p["w0"] * x0 + p["w1"] * x1 + p["b"])
        s = -y / (1 + da.exp(margin))  # d loss / d (w·x + b)
        value = da.logaddexp(0.0, -margin).sum()
        return value, {"w0": (s * x0).sum(), "w1": (s * x1).sum(), "b": s.sum()}
    x = data["x"]
    a = np.array([p["a0"], p["a1"]])
    norm = np.log(np.exp(a).sum())
    terms, zs = [], []
    for k in (0, 1):
        z = (x - p[f"m{k}"]) * math.exp(-p[f"s{k}"])
        terms.append(p[f"a{k}"] - p[f"s{k}"] - 0.5 * z * z)
        zs.append(z)
    top = da.maximum(terms[0], terms[1])
    total = da.exp(terms[0] - top) + da.exp(terms[1] - top)
    value = (-(top + da.log(total)) + norm + 0.9189385332046727).sum()
    grads = {}
    for k in (0, 1):
        r = da.exp(terms[k] - top) / total  # responsibility of component k
        grads[f"a{k}"] = (-r).sum() + r.shape[0] * math.exp(a[k] - norm)
        grads[f"m{k}"] = (-r * zs[k] * math.exp(-p[f"s{k}"])).sum()
        grads[f"s{k}"] = (r * (1 - zs[k] * zs[k])).sum()
    return value, grads


def computed(make: Callable[..., tuple], *args, **scheduler) -> tuple:
    """``make(*args)``'s lazy results, computed together (one pass over the events)."""
    import dask

    return dask.compute(*make(*args), **scheduler)


def timed(run: Callable[[], object], rounds: int, settle: Callable | None = None) -> float:
    """Median seconds of ``rounds`` runs, after untimed ones: the first starts the background
    compiles (its calls answer from the instant tier meanwhile), ``settle`` waits for them (by
    default this process's), the second loads their code."""
    from runtime import background

    run()
    (settle or background.wait_idle)()
    run()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def agree(got: tuple, want: tuple) -> float:
    """Worst relative difference between two (value, {param: gradient}) results."""
    pairs = [(got[0], want[0])] + [(got[1][w], want[1][w]) for w in want[1]]
    return max(abs(float(a) - float(b)) / max(abs(float(b)), 1e-300) for a, b in pairs)


def run_local(loss: str, data: dict, blocks: tuple, rounds: int, log) -> tuple[dict, float]:
    """In-memory, threaded-Dask and hand-written rows: {(contender, block): seconds}."""
    import dask.array as da

    k, p = kernel(loss), params(loss)
    n = len(next(iter(data.values())))
    times = {("in memory", n): timed(lambda: symgrad_pass(k, data, p), rounds)}
    want = symgrad_pass(k, data, p)
    worst = 0.0
    for b in blocks:
        lazy = {name: da.from_array(v, chunks=b) for name, v in data.items()}
        ours = partial(symgrad_pass, k, lazy, p, scheduler="threads", num_workers=2)
        hand = partial(computed, by_hand, loss, lazy, p, scheduler="threads", num_workers=2)
        times[("dask threads", b)] = timed(ours, rounds)
        times[("dask.array by hand", b)] = timed(hand, rounds)
        worst = max(worst, agree(ours(), want), agree(hand(), want))
        log(f"  D1 {loss} block {b}: threads {times[('dask threads', b)]:.3f} s")
    return times, worst


def run_cluster(loss: str, n: int, seed: int, blocks: tuple, workers: int, rounds: int, log):
    """{(contender, block): seconds} on a LocalCluster of ``workers`` one-core processes, the
    events (the local rows' own) persisted on the workers."""
    import dask.array as da
    from dask.distributed import Client, LocalCluster, wait

    from runtime import background

    k, p = kernel(loss), params(loss)
    times = {}
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
            env=WORKER_ENV,
        ) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        for b in blocks:
            lazy = {
                name: da.from_array(v, chunks=b) for name, v in events(loss, n, seed).items()
            }  # the same events as the local rows
            lazy = dict(zip(lazy, client.persist(list(lazy.values()))))
            wait(list(lazy.values()))
            run = partial(symgrad_pass, k, lazy, p)
            settle = partial(client.run, background.wait_idle)  # each worker's compiles
            times[(f"cluster {workers}", b)] = timed(run, rounds, settle)
            if workers == 2:  # Dask's own floor: the plain sum of one column, same blocks
                column = next(iter(lazy.values()))
                times[("Dask's x.sum(), cluster 2", b)] = timed(column.sum().compute, rounds)
            log(
                f"  D1 {loss} cluster {workers} block {b}: {times[(f'cluster {workers}', b)]:.3f} s"
            )
            client.cancel(list(lazy.values()))
    return times


OUT_OF_CORE_CHILD = """
import sys, time
import dask.array as da
from dask.diagnostics import ProgressBar
from benchmarks.workloads.cluster import MIXTURE_PARAMS, kernel, symgrad_pass
n, block = {n}, {block}
k = kernel("mixture")
x = da.random.default_rng(7).normal(size=n, chunks=block)  # generated per block, never whole
k.total_value_and_grad(x=x[:block].compute(), **MIXTURE_PARAMS)  # compile before timing
k.wait()
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
base = status("VmRSS")  # interpreter, libraries, kernel: before the pass
t = time.perf_counter()
with ProgressBar(out=sys.stderr, dt=1.0):
    value, grads = symgrad_pass(k, {{"x": x}}, MIXTURE_PARAMS, scheduler="threads", num_workers=2)
MARKS["seconds"] = time.perf_counter() - t
MARKS["peak_rss"] = status("VmHWM")  # this process's own peak (ru_maxrss can carry the parent's)
MARKS["base_rss"] = base
MARKS["value"] = float(value)
"""


def out_of_core(n: int, log) -> dict:
    log(f"  D1 out of core: mixture over {n:.1e} events ...")
    marks = run_child(OUT_OF_CORE_CHILD.format(n=n, block=OUT_OF_CORE_BLOCK), child_env(), 7200)
    marks["events"] = n
    return marks


FIT_EVENTS, QUICK_FIT_EVENTS = 100_000_000, 1_000_000
FIT_BLOCK = 2_000_000
FIT_START = {"a0": 0.0, "a1": 0.0, "m0": -0.5, "m1": 0.5, "s0": 0.2, "s1": 0.2}


def fit_at_scale(n: int, log) -> dict:
    """``scipy.optimize.minimize(method="trust-exact")`` on the mixture over ``n`` events
    persisted on a LocalCluster of 2 one-core workers, through ``k.scipy``: every evaluation one
    distributed pass (value + gradient, or value + gradient + Hessian)."""
    import dask.array as da
    import scipy.optimize
    from dask.distributed import Client, LocalCluster, wait

    log(f"  D1 fit at scale: mixture over {n:.1e} events ...")
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
            env=WORKER_ENV,
        ) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        rng = da.random.default_rng(11)
        pick = rng.random(n, chunks=FIT_BLOCK) < 0.4
        x = da.where(
            pick,
            rng.normal(-1.0, 0.8, n, chunks=FIT_BLOCK),
            rng.normal(1.2, 1.3, n, chunks=FIT_BLOCK),
        )
        x = client.persist(x)
        wait(x)
        obj = kernel("mixture").scipy(like=FIT_START, data={"x": x})
        t = time.perf_counter()
        fit = scipy.optimize.minimize(
            obj.fun, obj.x0, jac=obj.jac, hess=obj.hess, method="trust-exact",
            options={"gtol": 1e-7 * n},
        )  # fmt: skip
        seconds = time.perf_counter() - t
    passes = obj.evaluations + fit.nhev
    return {"events": n, "seconds": seconds, "passes": passes, "iterations": fit.nit,
            "success": bool(fit.success), "x": obj.unpack(fit.x)}  # fmt: skip


def _fit_md(f: dict) -> str:
    got = ", ".join(f"{k} = {v:.4f}" for k, v in f["x"].items())
    return (
        f'**A fit at scale**: `scipy.optimize.minimize(method="trust-exact")` of the mixture '
        f"(6 parameters) over {f['events']:.0e} events persisted on a LocalCluster of 2 workers, "
        f"through `k.scipy(like=..., data={{'x': dask_array}})`: {f['iterations']} iterations, "
        f"{f['passes']} distributed passes (each value + gradient, or value + gradient + Hessian), "
        f"{f['seconds']:.1f} s in all, {f['seconds'] / f['passes']:.2f} s per pass; converged: "
        f"{f['success']} ({got}; the events were drawn with a0 - a1 = log(0.4/0.6) = -0.405, "
        f"m = -1.0, 1.2, s = log 0.8, log 1.3 = -0.223, 0.262)."
    )


def run(opts: Options, log) -> Section:
    n = QUICK_EVENTS if opts.quick else EVENTS
    blocks = QUICK_BLOCKS if opts.quick else BLOCKS
    rounds = opts.repeats or (QUICK_ROUNDS if opts.quick else ROUNDS)
    tables, targets, overheads, worst = [], [], {}, 0.0
    results: dict[str, dict] = {}
    for loss in ("logistic", "mixture"):
        data = events(loss, n, opts.seed)
        times, w = run_local(loss, data, blocks, rounds, log)
        worst = max(worst, w)
        for workers in (1, 2):
            times.update(
                run_cluster(
                    loss,
                    n,
                    opts.seed,
                    blocks + (TINY_BLOCK,) if workers == 2 else blocks,
                    workers,
                    rounds,
                    log,
                )
            )
        results[loss] = times
        tables.append(_table(loss, n, times, blocks))
        targets += _targets(loss, n, times, blocks)
        overheads[loss] = _per_task(times, n, blocks)
    ooc = out_of_core(QUICK_OUT_OF_CORE if opts.quick else OUT_OF_CORE, log)
    fit = fit_at_scale(QUICK_FIT_EVENTS if opts.quick else FIT_EVENTS, log)
    plot = None if opts.quick else _plot(results, n, blocks)
    md = [
        f"{n:,} events per pass; median of {rounds} rounds after a warm-up; seconds per pass and "
        f"events per second. Cluster workers: one process, one thread, `NUMBA_NUM_THREADS=1` each "
        f"(one core). All contenders agree with the in-memory call to {worst:.1e} (relative).",
        "",
        *tables,
        _out_of_core_md(ooc),
        _fit_md(fit),
        _extrapolation_md(overheads, results, n, blocks),
        f"![throughput by block size]({plot.name})" if plot else QUICK_NOTE,
    ]
    return Section(
        "D1",
        "D1 — data-parallel value + gradient on Dask (issue 17)",
        "\n\n".join(md),
        targets,
        worst,
    )


def _rate(times: dict, key: tuple, n: int) -> float:
    return n / times[key] if key in times else math.nan


def _table(loss: str, n: int, times: dict, blocks: tuple) -> str:
    rows = [
        [
            "in memory (2 threads)",
            "—",
            f"{times[('in memory', n)]:.3f}",
            f"{_rate(times, ('in memory', n), n):.2e}",
        ]
    ]
    for who in (
        "dask threads", "cluster 1", "cluster 2", "Dask's x.sum(), cluster 2", "dask.array by hand"
    ):  # fmt: skip
        for b in blocks:
            if (who, b) in times:
                rows.append(
                    [who, f"{b:,}", f"{times[(who, b)]:.3f}", f"{_rate(times, (who, b), n):.2e}"]
                )
    return f"**{loss}**\n\n" + md_table(
        ["contender", "events per block", "s per pass", "events/s"], rows
    )


def _targets(loss: str, n: int, times: dict, blocks: tuple) -> list[Target]:
    big = [b for b in blocks if b >= 1_000_000] or [max(blocks)]
    best = lambda who: max(_rate(times, (who, b), n) for b in big)  # noqa: E731
    memory = _rate(times, ("in memory", n), n)
    return [
        Target(f"{loss}: 2 workers / 1 worker (events/s)", best("cluster 2") / best("cluster 1"), 1.7, at_most=False),
        Target(f"{loss}: cluster of 2 / in memory on 2 cores", best("cluster 2") / memory, 0.85, at_most=False,
               note="distributed overhead at most 15%"),
        Target(f"{loss}: dask threads / dask.array by hand", best("dask threads") / best("dask.array by hand"), 5.0, at_most=False),
    ]  # fmt: skip


def _per_task(times: dict, n: int, blocks: tuple) -> float:
    """Seconds of overhead per block on the 2-worker cluster: the time with tiny blocks minus
    the time with large ones, over the extra blocks (2 cores share them). Tiny blocks travel 32
    to a task (``runtime.dask_arrays.TASK_BLOCKS``): this is the scheduler's per-task cost over 32
    plus the per-block cost of the calls and of Dask's block bookkeeping."""
    big = max(blocks)
    extra_blocks = n / TINY_BLOCK - n / big
    return 2 * (times[("cluster 2", TINY_BLOCK)] - times[("cluster 2", big)]) / extra_blocks


def _out_of_core_md(m: dict) -> str:
    block_mb = OUT_OF_CORE_BLOCK * 8 / 2**20
    return (
        f"**Out of core**: the mixture's value and 6 gradients over {m['events']:.1e} events "
        f"generated per block of {OUT_OF_CORE_BLOCK:,} ({block_mb:.0f} MiB) by `da.random` (never "
        f"materialised: {m['events'] * 8 / 2**30:.0f} GiB as float64), threaded scheduler, a "
        f"`ProgressBar` on stderr: {m['seconds']:.1f} s, {m['events'] / m['seconds']:.2e} events/s, "
        f"peak resident memory {m['peak_rss'] / 2**20:.0f} MiB (`VmHWM` of the process itself), "
        f"{m['base_rss'] / 2**20:.0f} MiB before the pass (interpreter, libraries, kernel): the "
        f"pass added {(m['peak_rss'] - m['base_rss']) / 2**20:.0f} MiB, "
        f"{(m['peak_rss'] - m['base_rss']) / 2**20 / block_mb:.1f} blocks' worth."
    )


def _extrapolation_md(overheads: dict, results: dict, n: int, blocks: tuple) -> str:
    from runtime.dask_arrays import SPLIT_EVERY, TASK_EVENTS

    lines = ["**On paper, 100 nodes of 2 cores** (from the numbers above):", ""]
    for loss, per_block in overheads.items():
        per_core = _rate(results[loss], ("cluster 1", max(blocks)), n)
        total, block = 10**11, 10**6
        nblocks = total / block
        tasks = nblocks / (TASK_EVENTS // block)
        compute = total / (200 * per_core)
        overhead = nblocks * per_block / 200
        depth = math.ceil(math.log(tasks, SPLIT_EVERY))
        lines.append(
            f"- {loss}: {per_core:.2e} events/s per core and {per_block * 1e3:.2f} ms of overhead "
            f"per block; 10^11 events in blocks of 10^6 are {nblocks:.0e} blocks in {tasks:.1e} "
            f"tasks — {compute:.1f} s of compute on 200 cores, plus {overhead:.2f} s of per-block "
            f"overhead spread over them and a reduction tree {depth} levels deep "
            f"({SPLIT_EVERY} vectors per node, a few ms per level): about "
            f"{total / (compute + overhead):.1e} events/s. One scheduler handles ~10^3-10^4 "
            f"tasks/s: {tasks:.1e} tasks are {tasks / 5000:.1f} s of its time at 5,000 tasks/s, "
            f"{'within' if tasks / 5000 < compute else 'beyond'} the compute time."
        )
    return "\n".join(lines)


def _plot(results: dict, n: int, blocks: tuple) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(10, 3.6))
    for ax, (loss, times) in zip(np.atleast_1d(axes), results.items()):
        for who in ("dask threads", "cluster 1", "cluster 2", "dask.array by hand"):
            xs = [b for b in blocks if (who, b) in times]
            ax.plot(xs, [_rate(times, (who, b), n) for b in xs], marker="o", label=who)
        ax.axhline(_rate(times, ("in memory", n), n), color="k", ls="--", label="in memory")
        ax.set(xscale="log", yscale="log", title=loss, xlabel="events per block")
        ax.set_ylabel("events / s")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=90)
    plt.close(fig)
    return PLOT


WORKLOAD = Workload("D1", "cluster", "Data-parallel value + gradient on Dask", run)

"""G1 — gate fusion (issue 4): the lecture's neuron compiled fused (one stable sigmoid gate) and
unfused (the lecture's eight gates), side by side: backward op counts, bytes the backward keeps,
and the time of ``value_and_grad`` and of ``vjp`` + pullback, over N = 1,000,000 samples (memory
bound) and N = 20,000 (in cache: arithmetic bound); then example 5's sigmoid network (a tensor
program: the sigmoid gate between two matrix products) fused and unfused.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from benchmarks.harness import (
    Contender,
    Result,
    Target,
    agreement_table,
    md_table,
    paired_ratio,
    run_contenders,
    timing_table,
)
from benchmarks.workloads import Options, Section, Workload
from benchmarks.workloads.network import numpy_ex5
from benchmarks.workloads.neuron import EXPR, _numpy, _stream_reused, make_data

SIZES = (1_000_000, 20_000)
QUICK_SIZES = (10_000, 2_000)
FUSED_OVER_UNFUSED = 0.8  # the target for value_and_grad on the neuron
NEVER_SLOWER = 1.0
KINDS = ("out", "fresh", "vjp", "pullback")


def kernel(fused: bool):
    import compiler

    return compiler.compile_gradient(EXPR, fuse=fused, mode="compiled")  # auto's steady state


def _value_and_grad_out(fused: bool):
    def make(data):
        k = kernel(fused)
        n = data["x0"].shape[0]
        bufs = (np.empty(n), {name: np.empty(n) for name in k.inputs})
        return lambda: k.value_and_grad(**data, out=bufs)

    return make


def _value_and_grad_fresh(fused: bool):
    def make(data):
        k = kernel(fused)
        return lambda: k.value_and_grad(**data)

    return make


def _vjp(fused: bool):
    def make(data):
        k = kernel(fused)

        def run():
            value, pullback = k.vjp(**data)
            return value, pullback()

        return run

    return make


def _pullback(fused: bool):
    def make(data):
        k = kernel(fused)
        value, pullback = k.vjp(**data)  # the forward once; each call is the backward alone
        return lambda: (value, pullback())

    return make


def _name(fused: bool, kind: str) -> str:
    return f"{'fused' if fused else 'unfused'}-{kind}"


def _again(name: str) -> str:
    """The A/A control: the same kernel timed twice shows how far apart two identical
    contenders land on this machine, the band within which "never slower" is judged."""
    return f"{name}-again"


def _never_slower(by: dict[str, Result], fused: str, unfused: str) -> tuple[float, float, str]:
    """Fused ÷ unfused, the limit 1 + the A/A noise, and the spread text."""
    a, b, aa = by.get(fused), by.get(unfused), by.get(_again(fused))
    if not all(r is not None and r.ok for r in (a, b, aa)):
        return math.nan, NEVER_SLOWER, ""
    r, q1, q3 = paired_ratio(a, b)
    n, n1, n3 = paired_ratio(a, aa)
    noise = max(abs(n - 1), n3 - 1, 1 - n1, 0.0)
    spread = f"per-round IQR {q1:.2f}–{q3:.2f}; A/A {n:.2f} (IQR {n1:.2f}–{n3:.2f})"
    return r, NEVER_SLOWER + noise, spread


def contenders() -> list[Contender]:
    C = Contender
    rows = [
        C("numpy", "hand-written NumPy (lecture, gate by gate)", _numpy, "reference",
          compare_with=_name(True, "fresh")),
    ]  # fmt: skip
    labels = {
        "out": ("value_and_grad(out=)", "reused", _value_and_grad_out),
        "fresh": ("value_and_grad", "fresh", _value_and_grad_fresh),
        "vjp": ("vjp + pullback", "fresh", _vjp),
        "pullback": ("pullback alone (the backward)", "fresh", _pullback),
    }
    for kind, (what, mode, make) in labels.items():
        for fused in (True, False):
            gate = "fused: one sigmoid gate" if fused else "unfused: eight gates"
            rows.append(
                C(_name(fused, kind), f"symgrad {what}, {gate}", make(fused), "symgrad", mode,
                  compare_with=_name(True, kind))
            )  # fmt: skip
        rows.append(
            C(_again(_name(True, kind)), f"control: the fused {what} again (A/A: the noise)",
              make(True), "control", mode, compare_with=_name(True, kind))
        )  # fmt: skip
    rows.append(
        C("stream-reused", "floor: memory traffic only (5 reads, 6 writes, no math)",
          _stream_reused, "floor", "reused", check=False, compare_with=_name(True, "out"))
    )  # fmt: skip
    return rows


def _costs(n: int) -> tuple[str, dict[str, tuple[int, int]]]:
    """The fusion report's counts as a table, with the saved bytes at this N and the arrays a
    ``vjp`` moves (forward_save: inputs in, value and residuals out; backward: residuals and
    the inputs it reads in, five gradients out)."""
    report = kernel(True).fusion
    counts = dict(report.counts)
    moved = []
    for fused in (False, True):
        adj = kernel(fused).adjoint
        reads = {a for i in adj.backward_nodes() for a in adj.nodes[i].args}
        inputs = sum(1 for i in reads if adj.nodes[i].op == "input")
        saved = len(adj.saved)
        moved.append(len(adj.inputs) + 1 + saved + saved + inputs + len(adj.wrt))
    counts["arrays a vjp moves"] = (moved[0], moved[1])
    before, after = report.saved_bytes_per_element
    rows = [[what, u, f] for what, (u, f) in counts.items()]
    rows.append([f"saved bytes at N = {n:,}", _bytes(before * n), _bytes(after * n)])
    return md_table(["", "unfused", "fused"], rows), counts


def _bytes(b: float) -> str:
    return f"{b / 1e6:.0f} MB" if b >= 1e6 else f"{b / 1e3:.0f} kB"


def _why(by: dict[str, Result], counts: dict, floor_ms: float) -> dict[str, str]:
    """What explains a miss, per kind, from this run's numbers."""

    def med(name: str) -> float:
        r = by.get(name)
        return r.stats.median * 1e3 if r is not None and r.ok else math.nan

    memory = (
        f"fused and unfused loops move the same arrays (5 read, 6 written; the memory-only floor "
        f"is {floor_ms:.2f} ms) and compute one exp per element each; fusion's savings "
        f"({counts['backward ops'][0] - counts['backward ops'][1]} backward op, "
        f"{counts['saved values'][0] - counts['saved values'][1]} saved value) are register "
        f"work inside value_and_grad's single loop"
    )
    fresh = (
        f"{memory}; fresh outputs add page faults to both "
        f"(fresh − reused: {med(_name(True, 'fresh')) - med(_name(True, 'out')):.2f} ms fused, "
        f"{med(_name(False, 'fresh')) - med(_name(False, 'out')):.2f} ms unfused)"
    )
    u, f = counts["arrays a vjp moves"]
    backward = (
        f"a vjp keeps residuals: fused, the gate's local gradient σ(x)·σ(−x) (computed once in "
        f"the forward, one exp per element), unfused exp(−x) and −y/x; the backwards then only "
        f"multiply (pullback alone: {med(_name(True, 'pullback')):.2f} ms fused, "
        f"{med(_name(False, 'pullback')):.2f} ms unfused; {u} arrays moved unfused, {f} fused)"
    )
    return {"out": memory, "fresh": fresh, "vjp": backward, "pullback": backward}


def _ratios(by: dict[str, Result]) -> dict[str, tuple[float, str]]:
    """Fused ÷ unfused per kind: (median ratio, spread text)."""
    out = {}
    for kind in KINDS:
        a, b = by.get(_name(True, kind)), by.get(_name(False, kind))
        if a is None or b is None or not (a.ok and b.ok):
            out[kind] = (math.nan, "")
            continue
        r, q1, q3 = paired_ratio(a, b)
        out[kind] = (r, f"per-round IQR {q1:.2f}–{q3:.2f}")
    return out


def _run_size(n: int, opts: Options, log: Callable[[str], None]):
    repeats = opts.repeats or (10 if opts.quick else 100)
    log(f"G1 fusion: N={n:,}, {repeats} quiet interleaved rounds wanted")
    timed = run_contenders(
        contenders(),
        make_data(n, opts.seed),
        reference="numpy",
        repeats=repeats,
        warmup=3 if opts.quick else 10,
        min_sample=0.002,
        budget=opts.budget if opts.budget is not None else (0.0 if opts.quick else 300.0),
        log=log,
    )
    return timed, {r.contender.name: r for r in timed.results}


def run(opts: Options, log: Callable[[str], None]) -> Section:
    sizes = QUICK_SIZES if opts.quick else SIZES
    note = "--quick: tiny N, too few rounds to judge" if opts.quick else ""
    parts = [
        f"Expression `{EXPR}`, every input an array of N float64 samples (standard normal, seed "
        f"{opts.seed}); value and all five gradients. `fused` is `compile_gradient(expr)` (the "
        "default, `fuse=True`): the exp / add-one / reciprocal subgraph becomes one sigmoid gate "
        "whose local gradient is σ(x)·σ(−x). `unfused` is `fuse=False`: the lecture's eight gates. "
        "`vjp + pullback` runs the forward keeping the values the backward reads, then the "
        "backward alone: what the saved bytes cost. The last column is fused ÷ this row (for the "
        "unfused rows: below 1 the fused kernel is faster), with the quartiles of the same ratio "
        "taken round by round.",
        "",
        "### What fusion changes",
        "",
    ]
    table, counts = _costs(sizes[0])
    parts += [table, "", "```", str(kernel(True).fusion), "```"]
    targets: list[Target] = []
    worst_rel = 0.0
    for n in sizes:
        timed, by = _run_size(n, opts, log)
        ratios = _ratios(by)
        floor = by.get("stream-reused")
        floor_ms = floor.stats.median * 1e3 if floor is not None and floor.ok else math.nan
        parts += [
            "",
            f"### Time per call, N = {n:,}",
            "",
            f"{timed.describe()}.",
            "",
            timing_table(timed.results),
            "",
            f"Fused ÷ unfused: value_and_grad(out=) {ratios['out'][0]:.2f}, value_and_grad "
            f"{ratios['fresh'][0]:.2f}, vjp + pullback {ratios['vjp'][0]:.2f}, pullback alone "
            f"{ratios['pullback'][0]:.2f}.",
            "",
            f"#### Agreement with the hand-written NumPy reference, N = {n:,}",
            "",
            agreement_table(timed.results),
        ]
        why = _why(by, counts, floor_ms)
        if n == sizes[0]:
            r, spread = ratios["out"]
            targets.append(
                Target(f"G1 fused ÷ unfused value_and_grad(out=), neuron, N={n:,}", r,
                       FUSED_OVER_UNFUSED, spread=spread, note=note, why=why["out"])
            )  # fmt: skip
        for kind in KINDS:
            r, limit, spread = _never_slower(by, _name(True, kind), _name(False, kind))
            targets.append(
                Target(f"G1 never slower (A/A noise allowed): fused ÷ unfused {kind}, N={n:,}",
                       r, limit, spread=spread, note=note, why=why[kind])
            )  # fmt: skip
        worst_rel = max(
            [worst_rel]
            + [r.agreement.worst_rel for r in timed.results if r.ok and r.agreement is not None]
        )
    net_parts, net_targets = _network(opts, log)
    parts += net_parts
    targets += net_targets
    title = (
        f"G1 — gate fusion, fused vs unfused: the neuron at N = {', '.join(f'{n:,}' for n in sizes)}"
        " and example 5's sigmoid network"
    )
    return Section("G1", title, "\n".join(parts), targets, worst_rel)


# ------------------------------------------------------------------ example 5's sigmoid network
NET_EXPR = "sum((1/(1+exp(-(x @ w1))) @ w2 - y)**2)"
NET_SHAPES = {"x": ("N", "D"), "w1": ("D", "H"), "w2": ("H", "C"), "y": ("N", "C")}
NET_SIZES = (64, 1000, 100, 10)  # the lecture's N, D_in, H, D_out
QUICK_NET_SIZES = (16, 50, 20, 5)


def net_kernel(fused: bool):
    import compiler

    return compiler.compile_gradient(
        NET_EXPR, shapes=NET_SHAPES, wrt=["w1", "w2"], fuse=fused, mode="compiled"
    )


def net_data(sizes: tuple[int, int, int, int], seed: int) -> dict[str, np.ndarray]:
    n, d, h, c = sizes
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((n, d)),
        "w1": rng.standard_normal((d, h)) / math.sqrt(d),
        "w2": rng.standard_normal((h, c)) / math.sqrt(h),
        "y": rng.standard_normal((n, c)),
    }


def _net_numpy(data):
    x, w1, w2, y = data["x"], data["w1"], data["w2"], data["y"]
    return lambda: numpy_ex5(x, w1, w2, y)  # the lecture's hand-written lines


def _net(fused: bool, kind: str):
    def make(data):
        k = net_kernel(fused)
        if kind == "vg":
            return lambda: k.value_and_grad(**data)

        def run():
            value, pullback = k.vjp(**data)
            return value, pullback()

        return run

    return make


def _network(opts: Options, log: Callable[[str], None]) -> tuple[list[str], list[Target]]:
    sizes = QUICK_NET_SIZES if opts.quick else NET_SIZES
    note = "--quick: tiny N, too few rounds to judge" if opts.quick else ""
    C = Contender
    rows = [C("numpy", "hand-written NumPy (the lecture's lines)", _net_numpy, "reference",
              compare_with="net-fused-vg")]  # fmt: skip
    for kind, what in (("vg", "value_and_grad"), ("vjp", "vjp + pullback")):
        for fused in (True, False):
            name = f"net-{'fused' if fused else 'unfused'}-{kind}"
            label = f"symgrad {what}, {'fused sigmoid gate' if fused else 'unfused'}"
            rows.append(
                C(name, label, _net(fused, kind), "symgrad", compare_with=f"net-fused-{kind}")
            )
        rows.append(
            C(_again(f"net-fused-{kind}"), f"control: the fused {what} again (A/A: the noise)",
              _net(True, kind), "control", compare_with=f"net-fused-{kind}")
        )  # fmt: skip
    repeats = opts.repeats or (10 if opts.quick else 60)
    log(f"G1 fusion: example 5 at N, D_in, H, D_out = {sizes}")
    timed = run_contenders(
        rows, net_data(sizes, opts.seed), reference="numpy", repeats=repeats,
        warmup=3 if opts.quick else 10, budget=opts.budget if opts.budget is not None else 0.0,
        log=log,
    )  # fmt: skip
    by = {r.contender.name: r for r in timed.results}
    report = net_kernel(True).fusion
    counts = [[what, u, f] for what, (u, f) in report.counts.items()]
    parts = [
        "",
        f"### Example 5's sigmoid network, N, D_in, H, D_out = {', '.join(map(str, sizes))}",
        "",
        f"`{NET_EXPR}` with gradients for w1 and w2. Fused, the sigmoid is one gate between the "
        "two matrix products; its local gradient σ(x)·σ(−x) is computed in the same loop as the "
        "forward sigmoid.",
        "",
        md_table(["", "unfused", "fused"], counts),
        "",
        f"{timed.describe()}.",
        "",
        timing_table(timed.results),
        "",
        agreement_table(timed.results),
    ]
    targets = []
    for kind in ("vg", "vjp"):
        r, limit, spread = _never_slower(by, f"net-fused-{kind}", f"net-unfused-{kind}")
        targets.append(
            Target(f"G1 never slower (A/A noise allowed): fused ÷ unfused {kind}, example 5", r,
                   limit, spread=spread, note=note,
                   why="both run the same two BLAS products forward and three backward")
        )  # fmt: skip
    return parts, targets


WORKLOAD = Workload("G1", "fusion", "gate fusion on the neuron: fused vs unfused", run)

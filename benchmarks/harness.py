"""Workload-independent machinery: contenders, interleaved timing, statistics, agreement,
targets, start-up subprocesses and markdown.

A *workload* (``benchmarks/workloads/*.py``) builds its inputs and a list of ``Contender``s. Each
contender's ``make(data)`` returns a zero-argument ``run()`` that does one complete call and returns
``(value, {name: gradient})`` (``grads`` is ``None`` for a forward-only contender). The harness:

1. skips contenders whose packages are missing (``skipped: not installed``) and records failures
   instead of dying (``failed: ...``), so one broken peer never hides the others;
2. calls each ``run()`` once (compile / first call, timed), compares its numbers with the reference
   contender's, and warms it up;
3. times all contenders *interleaved* — every round calls each contender once, in a fresh random
   order so no contender always follows the same neighbour — with the garbage collector off;
   a sample is the mean of ``number`` back-to-back calls, ``number`` chosen so a sample lasts at least
   ``min_sample`` seconds (1 at large sizes);
4. reports median, quartiles, min and max per call, and minor page faults per call (getrusage).
"""

from __future__ import annotations

import gc
import importlib.util
import json
import math
import os
import random
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Output = tuple[Any, dict[str, Any] | None]


# ---------------------------------------------------------------------------------- contenders
@dataclass
class Contender:
    """One way of computing a workload.

    ``mode`` is ``"fresh"`` (new output arrays every call) or ``"reused"`` (writes into buffers
    allocated once); ``kind`` groups rows in the report (``reference``, ``limit``, ``peer``,
    ``symgrad``, ``floor``). ``requires`` names importable modules; a missing one means the
    contender is listed as skipped.
    """

    name: str
    label: str
    make: Callable[[dict[str, Any]], Callable[[], Output]]
    kind: str = "peer"
    mode: str = "fresh"
    requires: tuple[str, ...] = ()
    note: str = ""
    check: bool = True  # compare its numbers with the reference
    #: name of the symgrad contender whose median is divided by this one's in the ratio column
    compare_with: str | None = None


@dataclass
class Stats:
    median: float
    q1: float
    q3: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        a = np.asarray(samples, dtype=float)
        q1, med, q3 = np.percentile(a, [25, 50, 75])
        return cls(float(med), float(q1), float(q3), float(a.min()), float(a.max()), len(a))


@dataclass
class Agreement:
    value_abs: float = math.nan
    value_rel: float = math.nan
    grad_abs: float = math.nan
    grad_rel: float = math.nan
    worst_grad: str = ""

    @property
    def worst_rel(self) -> float:
        vals = [v for v in (self.value_rel, self.grad_rel) if not math.isnan(v)]
        return max(vals) if vals else math.nan


@dataclass
class Result:
    contender: Contender
    status: str = "ok"  # "ok", "skipped: ...", "failed: ..."
    first_call: float = math.nan  # seconds: first call in this process (compiles)
    samples: list[float] = field(default_factory=list)
    faults: list[float] = field(default_factory=list)
    number: int = 1
    agreement: Agreement | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def stats(self) -> Stats:
        return Stats.of(self.samples)

    @property
    def faults_per_call(self) -> float:
        return float(np.median(self.faults)) if self.faults else math.nan


def missing_modules(mods: Sequence[str]) -> list[str]:
    return [m for m in mods if importlib.util.find_spec(m) is None]


# ---------------------------------------------------------------------------------- agreement
def _as_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _diff(a: Any, ref: Any) -> tuple[float, float]:
    a, ref = np.broadcast_arrays(_as_array(a), _as_array(ref))
    if a.size == 0:
        return 0.0, 0.0
    d = np.abs(a - ref)
    both_nan = np.isnan(a) & np.isnan(ref)
    same_inf = np.isinf(a) & (a == ref)
    d = np.where(both_nan | same_inf, 0.0, d)
    scale = np.maximum(np.abs(a), np.abs(ref))
    rel = np.where(d == 0, 0.0, d / np.where(scale == 0, 1.0, scale))
    return float(np.max(d)), float(np.max(rel))


def agreement(out: Output, ref: Output) -> Agreement:
    """Worst absolute and relative (|a − r| / max(|a|, |r|)) differences, value and gradients."""
    ag = Agreement()
    ag.value_abs, ag.value_rel = _diff(out[0], ref[0])
    if out[1] is not None and ref[1] is not None:
        missing = set(ref[1]) - set(out[1])
        if missing:
            raise ValueError(f"no gradient for {sorted(missing)}")
        ag.grad_abs = ag.grad_rel = 0.0
        for name, g in ref[1].items():
            a, r = _diff(out[1][name], g)
            ag.grad_abs = max(ag.grad_abs, a)
            if r >= ag.grad_rel:
                ag.grad_rel, ag.worst_grad = r, name
    return ag


def _snapshot(out: Output) -> Output:
    """A copy, so a later call that reuses the buffers cannot change what we compare."""
    value, grads = out
    value = np.array(_as_array(value), copy=True)
    if grads is not None:
        grads = {k: np.array(_as_array(v), copy=True) for k, v in grads.items()}
    return value, grads


# ---------------------------------------------------------------------------------- timing
def _minflt() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _one_sample(run: Callable[[], Output], number: int) -> tuple[float, float]:
    f0 = _minflt()
    t0 = time.perf_counter()
    for _ in range(number):
        run()
    t1 = time.perf_counter()
    f1 = _minflt()
    return (t1 - t0) / number, (f1 - f0) / number


def cpu_counters() -> tuple[float, float, float, float] | None:
    """(all cores' total, idle, steal, this process's + its children's CPU) in seconds, or None.

    From /proc/stat (whole machine) and ``os.times()`` (us, all our threads); both in clock ticks.
    """
    try:
        with open("/proc/stat", encoding="utf-8") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    total = sum(fields[:8]) / hz  # guest time is already counted in user
    idle = (fields[3] + fields[4]) / hz
    steal = fields[7] / hz if len(fields) > 7 else 0.0
    t = os.times()
    return total, idle, steal, t.user + t.system + t.children_user + t.children_system


def others_share(a, b) -> float:
    """Share of all cores' time that other processes (or the hypervisor) took between two
    ``cpu_counters()`` readings; nan if unknown."""
    if a is None or b is None:
        return math.nan
    total, idle, _steal, own = (y - x for x, y in zip(a, b))
    if total <= 0:
        return math.nan
    return max(0.0, total - idle - own) / total


@dataclass
class Timed:
    """What ``run_contenders`` returns: the results and how the rounds were chosen."""

    results: list[Result]
    rounds_total: int = 0
    rounds_used: int = 0
    quiet_threshold: float = math.nan
    shares: list[float] = field(default_factory=list)  # others' share of the CPU, per round
    filtered: bool = False

    def describe(self) -> str:
        med = np.nanmedian(self.shares) if self.shares else math.nan
        base = (
            f"{self.rounds_total} interleaved rounds; other processes took a median "
            f"{100 * med:.0f}% of the machine's CPU per round"
        )
        if self.filtered:
            return (
                f"{base}. Statistics use the {self.rounds_used} quiet rounds (others ≤ "
                f"{100 * self.quiet_threshold:.0f}% of the CPU)"
            )
        return f"{base}. Statistics use all rounds (not enough quiet ones to filter)"


def run_contenders(
    contenders: Sequence[Contender],
    data: dict[str, Any],
    *,
    reference: str,
    repeats: int,
    warmup: int = 3,
    min_sample: float = 0.002,
    quiet: float = 0.15,
    budget: float = 0.0,
    settle: float = 0.0,
    log: Callable[[str], None] = lambda s: None,
) -> Timed:
    """Set up, check and time every contender, interleaved; see the module docstring.

    On a shared machine another process that takes a core stalls every parallel loop (one of its
    threads waits for a time slice), so each round also records how much CPU other processes used
    meanwhile. Rounds go on until ``repeats`` *quiet* rounds (others ≤ ``quiet`` of all cores)
    are collected or ``budget`` seconds have passed (at least ``repeats`` rounds in all); the
    statistics use the quiet rounds if there are at least ``repeats // 2`` of them, else all.

    ``settle`` seconds of sleep before each sample let the previous contender's thread pool go
    idle: OpenBLAS, OpenMP and XLA workers spin for up to ~0.1 s after a call, and on two
    cores a spinning pool halves the cores of whoever runs next.
    """
    results = {c.name: Result(c) for c in contenders}
    runs: dict[str, Callable[[], Output]] = {}
    ref_out: Output | None = None
    # The reference runs first so everyone else can be compared with it.
    for c in sorted(contenders, key=lambda c: c.name != reference):
        res = results[c.name]
        missing = missing_modules(c.requires)
        if missing:
            res.status = f"skipped: not installed ({', '.join(missing)})"
            log(f"  {c.name}: {res.status}")
            continue
        try:
            t0 = time.perf_counter()
            run = c.make(data)
            out = run()
            res.first_call = time.perf_counter() - t0
            snap = _snapshot(out)
            if c.name == reference:
                ref_out = snap
            if c.check and ref_out is not None:
                res.agreement = agreement(snap, ref_out)
            for _ in range(warmup):
                run()
        except Exception as e:  # a broken contender is reported, never fatal
            msg = str(e).splitlines()[0][:160] if str(e) else ""
            res.status = f"failed: {type(e).__name__}: {msg}"
            log(f"  {c.name}: {res.status}")
            continue
        runs[c.name] = run
        log(f"  {c.name}: ready (first call {res.first_call * 1e3:.1f} ms)")

    live = [r for r in results.values() if r.ok]
    # Calibrate: enough calls per sample that a sample is not dominated by timer resolution.
    # The fastest of five single calls: one slow call (a thread pool waking up) would leave a
    # contender with few calls per sample, each sample then weighed down by its first call.
    for r in live:
        t = min(_one_sample(runs[r.contender.name], 1)[0] for _ in range(5))
        r.number = max(1, math.ceil(min_sample / max(t, 1e-9)))

    shares: list[float] = []
    n_quiet = 0
    start = time.perf_counter()
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        rnd = 0
        order = random.Random(0)
        while live:
            # a fresh order every round: no contender always follows the same one (the cache,
            # the threads' wake-up state and the allocator are left by whoever ran before)
            c0 = cpu_counters()
            for r in order.sample(live, len(live)):
                if settle:
                    time.sleep(settle)
                t, f = _one_sample(runs[r.contender.name], r.number)
                r.samples.append(t)
                r.faults.append(f)
            shares.append(others_share(c0, cpu_counters()))
            n_quiet += shares[-1] <= quiet
            rnd += 1
            if rnd % 50 == 0:
                log(f"  round {rnd}: {n_quiet} quiet")
            if rnd >= repeats and (n_quiet >= repeats or time.perf_counter() - start > budget):
                break
    finally:
        if was_enabled:
            gc.enable()

    timed = Timed(list(results.values()), len(shares), len(shares), quiet, shares)
    keep = [i for i, sh in enumerate(shares) if sh <= quiet]
    if len(keep) >= max(repeats // 2, 1) and len(keep) < len(shares):
        timed.filtered, timed.rounds_used = True, len(keep)
        for r in live:
            r.samples = [r.samples[i] for i in keep]
            r.faults = [r.faults[i] for i in keep]
    return timed


def paired_ratio(ours: Result, theirs: Result) -> tuple[float, float, float]:
    """Median(ours) / median(theirs), and the quartiles of the per-round ratios (same round,
    so slow phases of a noisy machine cancel); no quartiles (nan) for contenders timed in rounds
    of their own."""
    ratio = ours.stats.median / theirs.stats.median
    if len(ours.samples) != len(theirs.samples):
        return ratio, math.nan, math.nan
    per_round = np.asarray(ours.samples) / np.asarray(theirs.samples)
    q1, q3 = np.percentile(per_round, [25, 75])
    return ratio, float(q1), float(q3)


# ---------------------------------------------------------------------------------- targets
@dataclass
class Target:
    """``value`` compared with ``limit``: ``at_most`` (value ≤ limit) or at least."""

    what: str
    value: float
    limit: float
    at_most: bool = True
    unit: str = "×"
    spread: str = ""
    note: str = ""
    #: measured facts that explain a miss; the report prints them for missed targets
    why: str = ""

    @property
    def met(self) -> bool:
        if math.isnan(self.value):
            return False
        return self.value <= self.limit if self.at_most else self.value >= self.limit

    def verdict(self) -> str:
        if math.isnan(self.value):
            return "not measured"
        if self.met:
            return "**met**"
        if self.at_most:
            over = self.value - self.limit
            pct = 100 * (self.value / self.limit - 1)
            return f"**missed** by {fmt_num(over, self.unit)} ({pct:.0f}% over)"
        short = self.limit - self.value
        pct = 100 * (1 - self.value / self.limit)
        return f"**missed** by {fmt_num(short, self.unit)} ({pct:.0f}% short)"

    def row(self) -> list[str]:
        op = "≤" if self.at_most else "≥"
        val = fmt_num(self.value, self.unit)
        if self.spread:
            val += f" ({self.spread})"
        return [self.what, f"{op} {fmt_num(self.limit, self.unit)}", val, self.verdict(), self.note]


def fmt_num(x: float, unit: str) -> str:
    if math.isnan(x):
        return "—"
    if unit == "s":
        return f"{x:.3f} s"
    if unit == "ms":
        return f"{x:.2f} ms"
    return f"{x:.3f}{unit}" if abs(x) < 0.1 else f"{x:.2f}{unit}"


# ---------------------------------------------------------------------------------- start-up
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD_PROLOGUE = "import time as _t; _T0 = _t.perf_counter()\n"
CHILD_EPILOGUE = "\nimport json as _j; print('@@MARKS@@' + _j.dumps({'T0': _T0, **MARKS}))\n"


def run_child(body: str, env: dict[str, str] | None = None, timeout: float = 600) -> dict:
    """Run ``python -c`` with ``body`` in a fresh interpreter; return its time marks.

    ``body`` fills a dict ``MARKS`` with ``time.perf_counter()`` readings (the name ``_t`` is the
    ``time`` module). ``perf_counter`` is CLOCK_MONOTONIC on Linux, shared by all processes, so the
    parent's launch time and the child's marks are on one clock: ``T0 - launch`` is the
    interpreter's own start-up before the first line of the script runs.
    """
    code = CHILD_PROLOGUE + "MARKS = {}\n" + body + CHILD_EPILOGUE
    launch = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=REPO_ROOT,  # so a child can import ``benchmarks``
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    end = time.perf_counter()
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"child exited {proc.returncode}: {' | '.join(tail)}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("@@MARKS@@"))
    marks = json.loads(line[len("@@MARKS@@") :])
    marks["launch"] = launch
    marks["exit"] = end
    return marks


def child_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(overrides)
    return env


# ---------------------------------------------------------------------------------- markdown
def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |"]
    lines.append("|" + "|".join(" --- " for _ in headers) + "|")
    lines += ["| " + " | ".join(cell(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def ms(x: float) -> str:
    if math.isnan(x):
        return "—"
    if x < 1e-3:
        return f"{x * 1e3:.4f}"
    return f"{x * 1e3:.2f}"


def sci(x: float) -> str:
    if x is None or math.isnan(x):
        return "—"
    if x == 0:
        return "0"
    return f"{x:.1e}"


def ratio_cell(r: Result, by_name: dict[str, Result]) -> str:
    """``symgrad ÷ this`` for the row's ``compare_with`` contender, with the per-round IQR."""
    other = by_name.get(r.contender.compare_with or "")
    if other is None or not other.ok or not r.ok:
        return ""
    if other is r:
        return "1 (itself)"
    ratio, q1, q3 = paired_ratio(other, r)
    spread = "timed apart" if math.isnan(q1) else f"{q1:.2f}–{q3:.2f}"
    return f"{ratio:.2f} ({spread})"


def timing_table(results: Sequence[Result]) -> str:
    by_name = {r.contender.name: r for r in results}
    rows = []
    for r in results:
        c = r.contender
        if not r.ok:
            rows.append([c.label, c.mode, r.status, "", "", "", "", "", ""])
            continue
        s = r.stats
        rows.append(
            [
                c.label,
                c.mode,
                ms(s.median),
                f"{ms(s.q1)}–{ms(s.q3)}",
                f"{ms(s.min)}–{ms(s.max)}",
                f"{s.n}×{r.number}",
                f"{r.faults_per_call:.0f}",
                ms(r.first_call),
                ratio_cell(r, by_name),
            ]
        )
    headers = [
        "contender",
        "outputs",
        "median ms",
        "IQR ms",
        "min–max ms",
        "samples×calls",
        "minor faults/call",
        "first call ms",
        "symgrad ÷ this (per-round IQR)",
    ]
    return md_table(headers, rows)


def agreement_table(results: Sequence[Result]) -> str:
    rows = []
    for r in results:
        if not r.ok or r.agreement is None:
            continue
        a = r.agreement
        rows.append(
            [
                r.contender.label,
                r.contender.mode,
                sci(a.value_abs),
                sci(a.value_rel),
                sci(a.grad_abs),
                sci(a.grad_rel),
                a.worst_grad or "—",
            ]
        )
    headers = [
        "contender",
        "outputs",
        "value max abs",
        "value max rel",
        "grads max abs",
        "grads max rel",
        "worst gradient",
    ]
    return md_table(headers, rows)


def source_details(source_of: Callable[[], str], start: str, end: str, title: str) -> list[str]:
    """Markdown lines folding the generated code from ``start`` to ``end`` into a ``<details>``
    block, so a report shows what was timed; a failure to get it is one line, never a failed run."""
    try:
        src = source_of()
        i = src.find(start)
        j = src.find(end, i)
    except Exception as e:  # the report should not fail on an inspection detail
        return ["", f"(generated source unavailable: {e})"]
    code = src[i : j if j > 0 else None].rstrip()
    return ["", f"<details><summary>{title}</summary>", "", "```python", code, "```", "</details>"]

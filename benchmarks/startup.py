"""Cold compile and warm start, each in a fresh ``python -c`` process.

A child script (``body``) records ``time.perf_counter()`` marks in ``MARKS``:

- ``imported`` — after its imports (NumPy, symgrad / Numba),
- ``ready`` — after making its inputs (not counted: any program has its data already),
- ``compiled`` — after building the kernel object (``compile_gradient``; work may be lazy),
- ``first`` — after the first complete result.

*Cold*: a new empty ``SYMGRAD_CACHE_DIR`` per run, so code generation and Numba compilation both
happen; the figure is ``first - ready``. *Warm*: the same cache directory again, now full; the figure
is the time from the parent launching the interpreter to the first result, imports included, minus
making the inputs: ``(T0 - launch) + (imported - T0) + (first - ready)``.
"""

from __future__ import annotations

import math
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.harness import child_env, cpu_counters, others_share, run_child


@dataclass
class ChildRun:
    marks: dict
    others: float = math.nan  # other processes' share of all cores during the run

    def _d(self, a: str, b: str) -> float:
        m = self.marks
        return m[b] - m[a] if a in m and b in m else math.nan

    @property
    def interpreter(self) -> float:
        """From the parent's launch to the first line of the script."""
        return self._d("launch", "T0")

    @property
    def imports(self) -> float:
        return self._d("T0", "imported")

    @property
    def build(self) -> float:
        return self._d("ready", "compiled")

    @property
    def first_call(self) -> float:
        return self._d("compiled", "first")

    @property
    def compile_to_first(self) -> float:
        """Kernel construction + first call: the cold compile figure."""
        return self._d("ready", "first")

    @property
    def launch_to_first(self) -> float:
        """Interpreter start + imports + kernel + first call (inputs excluded): the warm figure."""
        return self.interpreter + self.imports + self.compile_to_first


#: A child run during which other processes took more than this share of all cores is repeated
#: (up to ``TRIES`` times in all, keeping the quietest): a busy core slows start-up severalfold.
QUIET = 0.15
TRIES = 3
#: Seconds, over the whole run, that ``wait_for_quiet`` may spend waiting for an idle machine.
WAIT_BUDGET = 300.0
_waited = 0.0


def wait_for_quiet(probe: float = 0.25) -> None:
    """Before launching a child, wait while other processes keep the machine busy (others above
    ``QUIET`` over a ``probe``-second look), within ``WAIT_BUDGET`` seconds for the whole run."""
    global _waited
    while _waited < WAIT_BUDGET:
        a = cpu_counters()
        time.sleep(probe)
        if not others_share(a, cpu_counters()) > QUIET:  # quiet, or unknown
            return
        _waited += probe


def waited() -> float:
    """Seconds spent so far in ``wait_for_quiet``."""
    return _waited


def quiet_run(
    body: str, env: dict[str, str] | None = None, fresh_dir: str | None = None, tries: int = TRIES
):
    """Run a child until one run is quiet (at most ``TRIES``); return (run, its cache dir, dirs).

    With ``fresh_dir`` (an environment variable name) each attempt gets a new empty directory in
    that variable, so a repeated cold run is still cold.
    """
    best, best_dir, dirs = None, None, []
    for _ in range(max(tries, 1)):
        e = dict(env or child_env())
        d = None
        if fresh_dir:
            d = tempfile.mkdtemp(prefix="symgrad-bench-cache-")
            dirs.append(d)
            e[fresh_dir] = d
        if tries > 1:
            wait_for_quiet()
        c0 = cpu_counters()
        run = ChildRun(run_child(body, e))
        run.others = others_share(c0, cpu_counters())
        if best is None or not run.others > best.others:  # nan never replaces a known value
            best, best_dir = run, d
        if run.others <= QUIET:
            break
    return best, best_dir, dirs


def cold_and_warm(
    body: str,
    *,
    cold: int,
    warm: int,
    cache_var: str = "SYMGRAD_CACHE_DIR",
    variants: dict[str, str] | None = None,
    tries: int = TRIES,
    log: Callable[[str], None] = lambda s: None,
) -> tuple[list[ChildRun], dict[str, list[ChildRun]]]:
    """``cold`` runs, each with a new empty cache directory (passed in the environment variable
    ``cache_var``); then ``warm`` runs on the last one's now full cache, of ``body`` (key ``""``)
    and of each extra ``variants`` body (alternating, so a noisy phase hits all alike).
    Every run is repeated while the machine is busy (see ``quiet_run``).
    """
    bodies = {"": body, **(variants or {})}
    colds: list[ChildRun] = []
    warms: dict[str, list[ChildRun]] = {k: [] for k in bodies}
    dirs: list[str] = []
    try:
        warm_dir = None
        for _ in range(max(cold, 1)):
            run, warm_dir, used = quiet_run(body, fresh_dir=cache_var, tries=tries)
            dirs += used
            colds.append(run)
            log(f"    cold: {run.compile_to_first:.3f} s (others {100 * run.others:.0f}%)")
        env = child_env(**{cache_var: warm_dir})
        for _ in range(warm):
            for key, b in bodies.items():
                run, _, _ = quiet_run(b, env, tries=tries)
                warms[key].append(run)
                log(
                    f"    warm{' ' + key if key else ''}: {run.launch_to_first:.3f} s "
                    f"(others {100 * run.others:.0f}%)"
                )
    finally:
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
    return colds, warms


def once(body: str, runs: int, tries: int = TRIES) -> list[ChildRun]:
    """Runs that need no cache (baselines)."""
    return [quiet_run(body, tries=tries)[0] for _ in range(runs)]


def median(runs: list[ChildRun], attr: str) -> float:
    vals = [getattr(r, attr) for r in runs]
    vals = [v for v in vals if not math.isnan(v)]
    return statistics.median(vals) if vals else math.nan


def span(runs: list[ChildRun], attr: str) -> str:
    vals = [getattr(r, attr) for r in runs if not math.isnan(getattr(r, attr))]
    if len(vals) < 2:
        return ""
    return f"{min(vals):.3f}–{max(vals):.3f} s"

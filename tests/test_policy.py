"""The tier policy's table, as documented, against the pure function; one state machine for both
kernels.

- The tables in ``runtime.policy``'s docstring (the README's) are read here, and every
  combination of mode x graph x call size x ready x background state is checked: the first row
  that matches gives ``choose``'s answer, and some row always matches.
- ``Kernel`` and ``TensorKernel`` hold the same ``runtime.tiers.Tiers``, which reports the same
  tiers for the same situations, waits the same way and warns the same way about a failed
  background compile (the jobs here are stand-ins: no compile runs).
"""

from __future__ import annotations

import itertools
import threading
import warnings

import numpy as np
import pytest

import compiler
from runtime import background, policy, tiers
from runtime.kernel import Kernel
from runtime.policy import Choice, Stats, choose
from runtime.tensor_kernel import TensorKernel

ANY = "any"
COLUMNS = ("mode", "graph", "call", "ready", "background", "answers", "compiles behind")
VALUES = {
    "mode": ("instant", "compiled", "auto"),
    "graph": ("small", "trig", "large", "tensor"),
    "call": ("small", "large"),
    "ready": ("nothing", "llvm-O3", "final"),
    "background": ("idle", "pending", "ready", "failed"),
}


def tables() -> list[list[dict[str, str]]]:
    """The docstring's Markdown tables, each as rows of {column: cell}."""
    found, lines = [], [line.strip() for line in policy.__doc__.splitlines()]
    for k, line in enumerate(lines):
        if line.startswith("|") and (k == 0 or not lines[k - 1].startswith("|")):
            block = list(itertools.takewhile(lambda s: s.startswith("|"), lines[k:]))
            header = [c.strip() for c in block[0].strip("|").split("|")]
            rows = [[c.strip() for c in row.strip("|").split("|")] for row in block[2:]]
            found.append([dict(zip(header, row)) for row in rows])
    return found


GRAPHS, DECISIONS = tables()


def examples(graph: str) -> list[Stats]:
    """Graphs of each kind, at the edges of the thresholds."""
    top = policy.LLVM_OPS
    return {
        "small": [Stats(1), Stats(7), Stats(top)],
        "trig": [Stats(1, trig=True), Stats(top, trig=True)],
        "large": [Stats(top + 1), Stats(10 * top), Stats(10 * top, trig=True)],
        "tensor": [Stats(1, tensor=True), Stats(500, tensor=True)],
    }[graph]


def calls(stats: Stats, size: str) -> list[int]:
    """Points of a small call (work below ``wait_work``) or a large one."""
    edge = -(-policy.wait_work(stats) // stats.ops)  # the fewest points of a large call
    return [1, edge - 1] if size == "small" else [edge, 10 * edge]


def ready_set(ready: str, stats: Stats) -> frozenset[str]:
    return {
        "nothing": frozenset(),
        "llvm-O3": frozenset({"llvm-O3"}),
        "final": frozenset({policy.final(stats)}),
    }[ready]


def matches(row: dict[str, str], case: dict[str, str]) -> bool:
    return all(row[c] == ANY or case[c] in [v.strip() for v in row[c].split(",")] for c in VALUES)


def test_the_tables_are_there_and_use_known_words():
    assert [set(r) for r in DECISIONS[:1]] == [set(COLUMNS)]
    assert [r["graph"] for r in GRAPHS] == list(VALUES["graph"])
    for row in DECISIONS:
        for column, allowed in VALUES.items():
            cells = [v.strip() for v in row[column].split(",")]
            assert row[column] == ANY or set(cells) <= set(allowed), (column, row)
        assert row["answers"] in (*policy.ENGINES, "final"), row
        assert row["compiles behind"] in ("nothing", "final"), row


@pytest.mark.parametrize("row", GRAPHS, ids=[r["graph"] for r in GRAPHS])
def test_the_final_engine_of_each_kind_of_graph(row):
    for stats in examples(row["graph"]):
        assert policy.final(stats) == row["final engine"], stats


def test_every_situation_is_the_first_matching_row_of_the_table():
    checked = 0
    for values in itertools.product(*VALUES.values()):
        case = dict(zip(VALUES, values))
        row = next((r for r in DECISIONS if matches(r, case)), None)
        assert row is not None, f"no row of the table covers {case}"
        for stats in examples(case["graph"]):
            goal = policy.final(stats)
            now = goal if row["answers"] == "final" else row["answers"]
            behind = goal if row["compiles behind"] == "final" else None
            for points in calls(stats, case["call"]):
                got = choose(
                    stats, points, case["mode"], ready_set(case["ready"], stats), case["background"]
                )
                assert got == Choice(now, behind), (case, stats, points, row)
                checked += 1
    assert checked > 1000


def test_every_row_is_needed():
    """Each row decides at least one situation (no dead row hides a changed rule)."""
    used = set()
    for values in itertools.product(*VALUES.values()):
        case = dict(zip(VALUES, values))
        used.add(next(k for k, r in enumerate(DECISIONS) if matches(r, case)))
    assert used == set(range(len(DECISIONS)))


def test_every_threshold_is_the_policys():
    """The thresholds the table names are the module's, at the values the table states."""
    assert (policy.LLVM_OPS, policy.WAIT_WORK) == (128, 300_000)
    assert "`LLVM_OPS` (128)" in policy.__doc__ and "`WAIT_WORK` (300,000)" in policy.__doc__
    doc = " ".join(policy.__doc__.split())
    assert (policy.VM_NS, policy.O3_BASE_NS, policy.O3_NS_PER_OP) == (6, 100_000_000, 4_000_000)
    assert "`VM_NS` (6 ns) >= `O3_BASE_NS` (0.1 s) + ops x `O3_NS_PER_OP` (4 ms)" in doc
    assert policy.parallel(Stats(8), policy.PARALLEL_WORK // 8)
    assert not policy.parallel(Stats(8), policy.PARALLEL_WORK // 8 - 1)


# ------------------------------------------------------------------ one state machine
class FakeJob(background.Job):
    """A background job that compiles nothing: it finishes when the test says so."""

    def __init__(self, entry: str, module: object):
        super().__init__("", str, entry)
        self.result = module
        self.release = threading.Event()

    def run(self, stopping: threading.Event) -> None:
        self.release.wait(60)
        if isinstance(self.result, BaseException):
            self.error, self.state = self.result, "failed"
        else:
            self.module, self.state = self.result, "ready"
        self.done.set()


@pytest.fixture(autouse=True)
def own_threads(monkeypatch):
    """A fake job runs on a thread of its own: on the shared worker it would queue behind the
    real compiles earlier tests left there (a full run leaves dozens), and time out."""
    real = background.submit

    def submit(job):
        if not isinstance(job, FakeJob):
            return real(job)
        threading.Thread(target=job.run, args=(threading.Event(),), daemon=True).start()
        return job

    monkeypatch.setattr(background, "submit", submit)


class FakeEngines:
    """Engines as modules named after themselves: what the state machine does, alone."""

    def __init__(self, result: object = "final module", on_disk: object = None):
        self.result, self.disk = result, on_disk
        self.jobs: list[FakeJob] = []
        self.looks = 0

    def engine(self, name, key):
        return f"{name} module"

    def on_disk(self, key):
        self.looks += 1
        return self.disk

    def ready(self, key):
        return frozenset()

    def job(self, key):
        self.jobs.append(FakeJob(str(key), self.result))
        return self.jobs[-1]

    def label(self, name, module, key):
        return name


def drive(t: tiers.Tiers, points: int = 10) -> object:
    module = t.answer("key", points)
    t.answered("key")
    return module


@pytest.mark.parametrize("stats", [Stats(7), Stats(3, tensor=True)], ids=["kernel", "tensor"])
def test_auto_answers_now_compiles_behind_then_switches(stats):
    engines = FakeEngines()
    t = tiers.Tiers(engines, stats, "auto", "f", behind_first=not stats.tensor)  # as the kernels
    assert t.tier is None
    stand_in = "llvm-O0" if not stats.tensor else "numpy"
    assert t.answer("key", 10) == f"{stand_in} module" and t.tier == stand_in
    assert len(engines.jobs) == (0 if stats.tensor else 1)  # a tensor's, once it has answered
    t.answered("key")
    assert len(engines.jobs) == 1 and t.jobs == {"key": engines.jobs[0]}
    assert drive(t) == f"{stand_in} module" and len(engines.jobs) == 1  # pending: no second job
    engines.jobs[0].release.set()
    assert t.wait(60)
    assert drive(t) == "final module" and t.tier == policy.final(stats)
    assert engines.looks == 1  # the disk, looked at once per key


def test_a_failed_job_warns_once_naming_the_engine_that_goes_on():
    engines = FakeEngines(result=RuntimeError("exploded"))
    t = tiers.Tiers(engines, Stats(7), "auto", "f")
    drive(t)
    engines.jobs[0].release.set()
    assert not t.wait(60)
    with pytest.warns(RuntimeWarning, match=r"'f'.*exploded.*the llvm-O0 engine keeps answering"):
        assert drive(t) == "llvm-O0 module"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        drive(t)
    assert len(engines.jobs) == 1  # never compiled again


def test_the_warning_points_at_the_users_line(private_cache, monkeypatch):
    """Whatever the path through the runtime, the warning names the caller's file."""
    from compiler.codegen import numba_source

    monkeypatch.setattr(numba_source, "generate", _broken)
    k = compiler.compile_gradient("x * tanh(y) - y")
    k.value_and_grad(x=np.arange(3.0), y=0.5)
    assert not k.wait(timeout=300)
    with pytest.warns(RuntimeWarning, match="background") as caught:
        k.grad(x=np.arange(3.0), y=0.5)
    assert caught[0].filename == __file__


def _broken(*args, **kwargs):
    raise RuntimeError("codegen exploded")


def test_on_disk_answers_at_once_and_nothing_compiles_behind():
    engines = FakeEngines(on_disk="disk module")
    t = tiers.Tiers(engines, Stats(7), "auto")
    assert drive(t) == "disk module" and t.tier == "numba" and not t.jobs
    assert t.wait(0)


@pytest.mark.parametrize("mode", ["instant", "compiled"])
def test_other_modes_never_compile_behind(mode):
    engines = FakeEngines()
    for stats in (Stats(7), Stats(3, tensor=True)):
        t = tiers.Tiers(engines, stats, mode)
        drive(t, policy.WAIT_WORK)
        assert t.tier == choose(stats, 10, mode, frozenset(), "idle").now and not t.jobs
    assert not engines.jobs and engines.looks == 0


def test_the_mode_is_checked_in_one_place():
    with pytest.raises(ValueError, match="mode"):
        tiers.Tiers(FakeEngines(), Stats(1), "fast")
    graph = compiler.trace("x * y")
    with pytest.raises(ValueError, match="mode"):
        Kernel(graph, ("x",), mode="fast", plan=lambda: None)
    tensor = compiler.trace("sum(x)", shapes={"x": ("n",)})
    with pytest.raises(ValueError, match="mode"):
        TensorKernel(tensor, ("x",), mode="fast", plan=lambda: None)


# ------------------------------------------------------------------ both kernels, for real
@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    from runtime import cache

    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "_loaded", {})
    return tmp_path / "cache"


def test_both_kernels_hold_the_same_state_machine():
    k = compiler.compile_gradient("x * y", mode="instant")
    t = compiler.compile_gradient("sum(x * y)", shapes={"x": ("n",), "y": ("n",)}, mode="instant")
    assert type(k._tiers) is type(t._tiers) is tiers.Tiers
    assert k._tiers.stats == Stats(1) and t._tiers.stats == Stats(2, tensor=True)  # mul, sum


@pytest.mark.parametrize("mode", ["instant", "compiled"])
def test_both_kernels_report_what_the_policy_chose(private_cache, mode):
    x, y = np.array([1.0, 2.0, 3.0]), np.array([0.5, -1.0, 2.0])
    k = compiler.compile_gradient("x * y", mode=mode)
    t = compiler.compile_gradient("sum(x * y)", shapes={"x": ("n",), "y": ("n",)}, mode=mode)
    value, grads = k.value_and_grad(x=x, y=y)
    np.testing.assert_array_equal(value, x * y)
    np.testing.assert_array_equal(grads["x"], y)
    total, tgrads = t.value_and_grad(x=x, y=y)
    assert total == pytest.approx(np.sum(x * y), rel=1e-15)
    np.testing.assert_array_equal(tgrads["y"], x)
    assert k.tier == choose(k._tiers.stats, 3, mode, frozenset(), "idle").now
    assert t.tier == choose(t._tiers.stats, 3, mode, frozenset(), "idle").now
    assert not k._jobs and t._job is None and k.wait(0) and t.wait(0)


def test_the_runtime_receives_a_planned_program():
    """compile_gradient plans the adjoint; the runtime only calls the planner, once."""
    k = compiler.compile_gradient("x * exp(y)", mode="instant")
    assert k.adjoint is k.adjoint and k.adjoint.wrt == ("x", "y")
    assert str(k.adjoint) == str(compiler.api.plan(k.graph, k.wrt))

"""Scale: passes that stay linear and iterative, bounded generated functions, deep graphs.

No timing assertions (the benchmark measures time: ``python -m benchmarks --only scale``); these
tests check the structure that makes time linear — every traversal iterative, no generated
function longer than ``SPLIT_LINES`` node lines — and that split kernels compute what one loop does.
"""

from __future__ import annotations

import math
import random
import re
import sys

import numpy as np
import pytest
from test_instant import assert_same_results, chain, chain_forward_mode

import compiler
from compiler import ops
from compiler.codegen import entries, numba_source
from runtime import policy
from runtime.instant.program import compile_program


@pytest.fixture
def low_recursion_limit():
    """Any recursive traversal of a deep graph fails at once, not by luck of the stack."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    yield
    sys.setrecursionlimit(old)


def random_dag(n_ops: int, seed: int = 0):
    """A random elementwise DAG with fan-out: each op reads the latest value and, if binary,
    one of the 64 before it (so every node is used, many more than once)."""
    rng = random.Random(seed)
    unary = [ops.sin, ops.cos, ops.exp, ops.tanh, ops.sigmoid, lambda a: -a]
    binary = [lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b]

    def f(x0, x1, x2, x3):
        values = [x0, x1, x2, x3]
        for _ in range(n_ops):
            other = values[-1 - min(rng.randrange(1, 65), len(values) - 1)]
            if rng.random() < 0.4:
                values.append(rng.choice(unary)(values[-1]))
            else:
                values.append(rng.choice(binary)(values[-1], other))
        return values[-1]

    return f


def segment_sizes(source: str) -> dict[str, int]:
    """Node lines per jitted function of a generated module (loads/stores of temps excluded)."""
    sizes: dict[str, int] = {}
    name = None
    for line in source.splitlines():
        header = re.match(r"def (\w+)\(", line)
        if header:
            name = header.group(1)
            sizes[name] = 0
        elif (
            name
            and re.match(r" {8}\w+ = ", line)
            and "temps[" not in line
            and " i = lo" not in line
        ):
            sizes[name] += 1
    return sizes


# ------------------------------------------------------------------ passes at 100,000 nodes
@pytest.mark.parametrize("family", ["chain", "dag"])
def test_100k_node_graphs_go_through_every_pass_iteratively(family, low_recursion_limit):
    source = (lambda x: chain(x, 16_667)) if family == "chain" else random_dag(100_000)
    graph = compiler.trace(source)
    assert len(graph) > 50_000
    adj = compiler.adjoint(graph)
    kinds = "a" * len(graph.inputs) + "s"
    layout, planned = entries.plan(adj, graph.inputs, kinds)
    both = next(e for e in planned if e.name == "value_and_grad")
    assert compile_program(adj, both).n_regs < len(both.nodes)  # the instant tier's program
    source_text = numba_source.generate(adj, graph.inputs, kinds)
    sizes = segment_sizes(source_text)
    assert max(sizes.values()) <= numba_source.SPLIT_LINES
    for entry in planned:  # every node printed once, in some segment of its entry
        printed = sum(v for name, v in sizes.items() if re.fullmatch(rf"{entry.name}_\d+", name))
        assert printed == len(entry.nodes), entry.name


# ------------------------------------------------------------------ bounded functions
def test_small_graphs_stay_one_loop_per_entry():
    k = compiler.compile_gradient("1/(1+exp(-(w0*x0+w1*x1+w2)))", fuse=False)
    source = k.source
    assert source.count("for i in prange(n):") == 4  # forward, value_and_grad, save, backward
    assert "temps" not in source and "run_blocks" not in source


def test_large_entries_are_split_into_bounded_segments(monkeypatch):
    monkeypatch.setattr(numba_source, "SPLIT_LINES", 10)
    k = compiler.compile_gradient(lambda x, y: chain(x * y, 10), mode="compiled")
    source = k.source
    sizes = segment_sizes(source)
    assert sizes and max(sizes.values()) <= 10
    assert "for i in prange(n):" not in source  # every entry split
    for entry in entries.ENTRIES:
        assert f"def {entry}(n, " in source and f"def {entry}_1(lo, m, " in source
    compile(source, "<split kernel>", "exec")


NEURON_PLUS = "1/(1+exp(-(w0*x0+w1*x1+w2))) + sin(x0) * maximum(w0, x1) - x1 ** 3 / (1 + w2 * w2)"


@pytest.fixture(scope="module")
def split_and_whole():
    """The same expression compiled as one loop per entry and as segments of 8 lines."""
    whole = compiler.compile_gradient(NEURON_PLUS, mode="compiled")
    patch = pytest.MonkeyPatch()
    patch.setattr(numba_source, "SPLIT_LINES", 8)
    split = compiler.compile_gradient(NEURON_PLUS, mode="compiled")
    assert "run_blocks" in split.source
    yield split, whole, patch
    patch.undo()


@pytest.mark.parametrize("n", [0, 1, 7, 1000, 40_000])
def test_split_kernels_compute_what_one_loop_does(split_and_whole, n, monkeypatch):
    split, whole, _ = split_and_whole
    rng = np.random.default_rng(n)
    args = dict(
        w0=rng.standard_normal(n),
        x0=0.3,  # scalar inputs: gradients summed over blocks
        w1=rng.standard_normal(n),
        x1=-1.2,
        w2=rng.standard_normal(n),
    )
    for work in (0, 1 << 62):  # threads over blocks, and serial
        monkeypatch.setattr(policy, "PARALLEL_WORK", work)
        seed = rng.standard_normal(n)
        assert_same_results(
            split.value_and_grad(**args, seed=seed), whole.value_and_grad(**args, seed=seed)
        )
        assert_same_results((split(**args), {}), (whole(**args), {}))
        value, pullback = split.vjp(**args)
        assert_same_results((value, pullback(seed)), whole.value_and_grad(**args, seed=seed))


def test_split_kernels_broadcast_and_fill_out_buffers(split_and_whole):
    split, whole, _ = split_and_whole
    rng = np.random.default_rng(5)
    args = dict(
        w0=rng.standard_normal((3, 1)),
        x0=rng.standard_normal(4),
        w1=rng.standard_normal((3, 4)),
        x1=0.5,
        w2=rng.standard_normal((1, 4)),
    )
    value = np.empty((3, 4))
    grads = {n: np.empty(np.shape(v)) for n, v in args.items()}
    got = split.value_and_grad(**args, seed=2.0, out=(value, grads))
    assert got[0] is value
    assert_same_results(got, whole.value_and_grad(**args, seed=2.0))


def test_a_deep_chain_compiled_in_segments_matches_forward_mode(monkeypatch):
    monkeypatch.setattr(numba_source, "SPLIT_LINES", 40)
    steps = 15
    k = compiler.compile_gradient(lambda x: chain(x, steps), mode="compiled")
    assert len(segment_sizes(k.source)) > 4
    xs = np.array([0.1, 0.7, -1.3])
    value, grads = k.value_and_grad(x=xs)
    for j, x in enumerate(xs):
        v, d = chain_forward_mode(float(x), steps)
        assert value[j] == pytest.approx(v, rel=1e-12)
        assert grads["x"][j] == pytest.approx(d, rel=1e-10)
    instant = compiler.compile_gradient(lambda x: chain(x, steps), mode="instant")
    assert_same_results(instant.value_and_grad(x=xs), (value, grads))


def test_temporary_rows_are_reused(monkeypatch):
    """A chain crosses segments with a few live values, not with every value it computed."""
    monkeypatch.setattr(numba_source, "SPLIT_LINES", 30)
    k = compiler.compile_gradient(lambda x: chain(x, 20), mode="compiled")
    forward = k.source.split("def forward(n, ")[1].split('"""')[1]
    rows = int(re.search(r"(\d+) temporary rows", forward).group(1))
    assert rows <= 3
    assert math.isfinite(k(x=0.5))

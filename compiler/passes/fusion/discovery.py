"""Gate discovery (``fuse="auto"``): single-input regions whose derivative SymPy writes in
terms of the region's own output (``exp(2x)`` → ``2y``) become gates named by their content.

Pure: the entries made are returned with the rewritten graph, never installed in the op table
(``compiler.gates.fuse`` installs them for the kernel compiled next).
"""

from __future__ import annotations

import time

import numpy as np

from compiler.ir.graph import CONST, LEAVES, Graph
from compiler.ir.lowering import LoweringError
from compiler.ir.printing import evaluate, text_of
from compiler.ir.registry import OPS, local
from compiler.passes.fusion.matching import Match
from compiler.passes.fusion.report import Discovered
from compiler.passes.fusion.rewrite import rebuild
from compiler.passes.gates import discovered_spec, output_gradient

#: Discovery: largest region tried, and the SymPy time one compile may spend on it.
MAX_REGION = 10
DISCOVERY_BUDGET_S = 10.0


def discover(graph: Graph) -> tuple[Graph, list[Discovered], list[str]]:
    """Fuse single-input regions whose derivative SymPy writes in terms of their own output:
    the rewritten graph, the gates discovered (their entries not installed), and notes."""
    users, outputs = graph.users(), set(graph.outputs)
    taken: set[int] = set()
    matches: dict[int, Match] = {}
    found: list[Discovered] = []
    notes: list[str] = []
    start = time.perf_counter()
    for root in range(len(graph.nodes) - 1, -1, -1):
        node = graph.nodes[root]
        if node.op not in OPS or root in taken or OPS[node.op].is_gate:
            continue  # leaves, tensor ops and gates
        if time.perf_counter() - start > DISCOVERY_BUDGET_S:
            notes.append(f"discovery stopped after its {DISCOVERY_BUDGET_S:g} s budget")
            break
        region = _region(graph, root, users, outputs, taken)
        if region is None:
            continue
        core, x = region
        body = _region_graph(graph, core, x, root)
        if not _monotone(body):
            continue
        gradient = output_gradient(body)
        if gradient is None:
            continue
        try:
            spec = discovered_spec(body, gradient)
        except LoweringError as e:  # an op of the region no tier can lower: leave it unfused
            notes.append(f"not fused: {text_of(body)} ({e})")
            continue
        note = text_of(body, {"x": "{a}"})
        matches[root] = Match(spec.name, root, ((x, 1.0),), frozenset(core), note)
        taken |= core
        if all(d.gate != spec.name for d in found):
            found.append(Discovered(spec.name, text_of(body), text_of(gradient), spec))
    if not matches:
        return graph, found, notes
    with local({d.gate: d.spec for d in found}):  # this pass's view only: nothing written
        return rebuild(graph, matches), found, notes


def _region(graph, root, users, outputs, taken) -> tuple[set[int], int] | None:
    """The largest region under ``root`` (nodes used only inside it, at most ``MAX_REGION``, no
    gates) that reads exactly one non-constant node: (its nodes, that node); None if under 2."""
    inside, frontier = {root}, _operands(graph, root)
    best = None
    while True:
        if len(frontier) == 1:
            best = (set(inside), next(iter(frontier)))
        if len(inside) >= MAX_REGION:
            break
        ready = [
            c
            for c in frontier
            if graph.nodes[c].op not in LEAVES
            and not OPS[graph.nodes[c].op].is_gate
            and c not in taken
            and c not in outputs
            and all(u in inside for u in users[c])
        ]
        if not ready:
            break
        c = max(ready)  # users before operands: every user of c is already inside
        inside.add(c)
        frontier = (frontier - {c}) | {a for a in _operands(graph, c) if a not in inside}
    return best if best is not None and len(best[0]) >= 2 else None


def _operands(graph: Graph, i: int) -> set[int]:
    return {a for a in graph.nodes[i].args if graph.nodes[a].op != CONST}


def _region_graph(graph: Graph, core: set[int], x: int, root: int) -> Graph:
    """The region as a graph of its own over the input ``x``."""
    body = Graph()
    mapping = {x: body.input("x")}
    for i in sorted(core):
        node = graph.nodes[i]
        args = [mapping[a] if a in mapping else body.const(graph.nodes[a].value) for a in node.args]
        mapping[i] = body.add(node.op, *args)
    body.outputs = [mapping[root]]
    return body


def _monotone(body: Graph) -> bool:
    """A cheap test before asking SymPy: is the region strictly monotone where it is finite?
    (If two inputs gave one output, the derivative could not be a function of the output.)"""
    xs = np.linspace(-6.0, 6.0, 241)
    ys = np.asarray(evaluate(body, {"x": xs})[body.outputs[0]] * np.ones_like(xs))
    ys = ys[np.isfinite(ys)]
    if len(ys) < 50:
        return False
    steps = np.diff(ys)
    return bool(np.all(steps > 0) or np.all(steps < 0))

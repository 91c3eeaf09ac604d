"""The rewrite: a copy of the graph with each match's root computed by its gate (over its
operand, rescaled) and the subgraph it replaced dropped, each gate node keeping its note."""

from __future__ import annotations

from compiler.ir.graph import Graph
from compiler.passes.fusion.matching import Match


def rebuild(graph: Graph, matches: dict[int, Match]) -> Graph:
    """A copy of ``graph`` with each match's root computed by its gate and its core dropped."""
    live = [False] * len(graph.nodes)
    for o in graph.outputs:
        live[o] = True
    for i in range(len(graph.nodes) - 1, -1, -1):
        if live[i]:
            for a in (matches[i].base,) if i in matches else graph.nodes[i].args:
                live[a] = True
    out = graph.empty_like()
    for name in graph.inputs:
        out.input(name)
    mapping: dict[int, int] = {}
    for i, node in enumerate(graph.nodes):
        if not live[i]:
            continue
        if i in matches:
            m = matches[i]
            mapping[i] = out.add(m.gate, _scaled(out, mapping[m.base], m.coef))
            note = m.note
        else:
            mapping[i] = _copy(graph, out, i, mapping)
            note = graph.notes.get(i)
        wanted = matches[i].gate if i in matches else node.op
        if note and out.nodes[mapping[i]].op == wanted:  # not folded into something else
            out.notes.setdefault(mapping[i], note)
    out.outputs = [mapping[o] for o in graph.outputs]
    return out


def _copy(graph: Graph, out: Graph, i: int, mapping: dict[int, int]) -> int:
    node = graph.nodes[i]
    return out.copy_node(node, [mapping[a] for a in node.args])


def _scaled(out: Graph, base: int, coef: float) -> int:
    if coef == 1:
        return base
    if coef == -1:
        return out.add("neg", base)
    return out.add("mul", out.const(coef), base)

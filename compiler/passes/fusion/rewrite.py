"""The rewrite: a copy of the graph with each match's root computed by its replacement (the
entry's op over the operands, rescaled; a stabilisation's rhs inlined; a ``+ ...`` sum's op
folded over its terms) and the subgraph it replaced dropped, each fused node keeping its note."""

from __future__ import annotations

from compiler.ir.graph import CONST, INPUT, Graph
from compiler.passes.fusion.matching import Match
from compiler.passes.fusion.patterns import definition_note


def rebuild(graph: Graph, matches: dict[int, Match]) -> Graph:
    """A copy of ``graph`` with each match's root computed by its replacement, its core dropped."""
    live = [False] * len(graph.nodes)
    for o in graph.outputs:
        live[o] = True
    for i in range(len(graph.nodes) - 1, -1, -1):
        if live[i]:
            reads = [b for b, _ in matches[i].operands] if i in matches else graph.nodes[i].args
            for a in reads:
                live[a] = True
    out = graph.empty_like()
    for name in graph.inputs:
        out.input(name)
    mapping: dict[int, int] = {}
    for i, node in enumerate(graph.nodes):
        if not live[i]:
            continue
        if i in matches:
            mapping[i] = _replace(out, matches[i], mapping)
        else:
            mapping[i] = _copy(graph, out, i, mapping)
            note = graph.notes.get(i)
            if note and out.nodes[mapping[i]].op == node.op:  # not folded into something else
                out.notes.setdefault(mapping[i], note)
    out.outputs = [mapping[o] for o in graph.outputs]
    return out


def _replace(out: Graph, m: Match, mapping: dict[int, int]) -> int:
    """Build match ``m``'s replacement in ``out``; its fused node(s) get the note."""
    operands = [_scaled(out, mapping[base], coef) for base, coef in m.operands]
    p = m.pattern
    if p is None:
        return _noted(out, out.add(m.gate, *operands), m.gate, m.note)
    inlined: dict[int, int] = {}
    if p.sum_node is not None:  # the op folded over the sum's terms, the rhs around it
        terms = operands[1:] if p.rest else operands  # op(y, ...): all but x's
        inlined[p.op_node] = _fold(out, m.gate, terms, m.note)
    for j, node in enumerate(p.rhs.nodes):
        if j in inlined:
            continue
        if node.op == INPUT:
            inlined[j] = operands["xy".index(node.value)]
        elif node.op == CONST:
            inlined[j] = out.const(node.value)
        else:
            inlined[j] = out.add(node.op, *(inlined[a] for a in node.args))
    _noted(out, inlined[p.op_node], m.gate, m.note)
    root = inlined[p.rhs.outputs[0]]
    if p.rest and len(operands) == 2:  # no fold (one other term): the rhs's own op is the news
        op = out.nodes[root].op
        _noted(out, root, op, definition_note(op))
    return root


def _fold(out: Graph, op: str, terms: list[int], note: str) -> int:
    """``op`` over ``terms`` as a balanced tree (depth log2 n: rounding errors add up along
    its depth), each node noted with the pattern's two-term form."""
    if len(terms) == 1:
        return terms[0]
    half = len(terms) // 2
    left, right = _fold(out, op, terms[:half], note), _fold(out, op, terms[half:], note)
    return _noted(out, out.add(op, left, right), op, note)


def _noted(out: Graph, node: int, op: str, note: str) -> int:
    if note and out.nodes[node].op == op:  # not folded into something else
        out.notes.setdefault(node, note)
    return node


def _copy(graph: Graph, out: Graph, i: int, mapping: dict[int, int]) -> int:
    node = graph.nodes[i]
    return out.copy_node(node, [mapping[a] for a in node.args])


def _scaled(out: Graph, base: int, coef: float) -> int:
    if coef == 1:
        return base
    if coef == -1:
        return out.add("neg", base)
    return out.add("mul", out.const(coef), base)

"""Gate patterns, compiled once: each gate's pattern texts parsed into graphs, with the nodes
that read the pattern variable linearly (``-x``, ``2*x``) and the op families a graph must
contain for a match, indexed by the graph op their root can match."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import NamedTuple

from compiler.errors import ParseError
from compiler.frontend.text import parse
from compiler.ir.graph import CONST, Graph
from compiler.ir.registry import OPS


class Pattern(NamedTuple):
    gate: str
    graph: Graph
    root: int
    linear: dict[int, float]  # pattern nodes that are k * x, with their k
    needs: tuple[tuple[str, ...], ...]  # op families a graph must contain for a match (_needs)


@cache
def compile_pattern(gate: str, text: str) -> Pattern:
    g = parse(text)
    x = g.input("x")
    linear: dict[int, float] = {x: 1.0}
    for i, node in enumerate(g.nodes):
        args = node.args
        if node.op == "neg" and args[0] in linear:
            linear[i] = -linear[args[0]]
        elif node.op == "mul":
            for k in (0, 1):
                c = g.constant_value(args[k])
                if c is not None and args[1 - k] in linear:
                    linear[i] = c * linear[args[1 - k]]
        elif node.op == "div" and args[0] in linear and g.constant_value(args[1]) is not None:
            linear[i] = linear[args[0]] / g.constant_value(args[1])
    return Pattern(gate, g, g.outputs[0], linear, _needs(g, g.outputs[0], linear))


def _needs(g: Graph, root: int, linear: dict[int, float]) -> tuple[tuple[str, ...], ...]:
    """The op families (``FAMILY``) a graph must contain for the pattern to match anywhere.

    A match pairs every pattern node it reaches — all but constants and the readings of x,
    which match any node — with a graph node of that node's family (see ``_Matcher.match``)."""
    needs, stack = set(), [root]
    while stack:
        pn = stack.pop()
        node = g.nodes[pn]
        if pn not in linear and node.op != CONST:
            needs.add(FAMILY.get(node.op, (node.op,)))
            stack.extend(node.args)
    return tuple(sorted(needs))


# The graph ops a pattern's op can match (see _alternatives); other ops match only themselves.
FAMILY = {"div": ("div", "pow"), "sub": ("sub", "add"), "add": ("add", "sub")}


def patterns_by_op(names: Sequence[str]) -> dict[str, list[Pattern]]:
    """Patterns of the selected gates, indexed by the graph op their root can match."""
    by_op: dict[str, list[Pattern]] = {}
    for name in names:
        for text in OPS[name].patterns if name in OPS else ():
            try:
                p = compile_pattern(name, text)
            except ParseError:  # names a gate that is no longer registered
                continue
            op = p.graph.nodes[p.root].op
            for graph_op in FAMILY.get(op, (op,)):
                by_op.setdefault(graph_op, []).append(p)
    return by_op

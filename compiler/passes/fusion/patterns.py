"""Fusion patterns, compiled once: each entry's pattern texts parsed into graphs, with the nodes
that read a pattern variable linearly (``-x``, ``2*y``) and the op families a graph must contain
for a match, indexed by the graph op their root can match.

A pattern is text over the variables ``x`` and ``y``, in one of two forms:

- ``lhs``: the subgraph becomes the entry's op over the variables, ``sigmoid(x)`` for
  ``1 / (1 + exp(-x))``, ``logaddexp(x, y)`` for ``log(exp(x) + exp(y))``: a gate fusion;
- ``lhs -> rhs``: a *stabilisation*, the subgraph becomes ``rhs`` (text over the same
  variables, inlined by the rewrite), which computes the entry's own op once (one op, one place:
  the rule lives in the entry of the op it introduces): ``1 - exp(-x) -> -expm1(-x)``,
  ``log(exp(x) / (exp(x) + exp(y) + ...)) -> x - logaddexp(x, y)``.

A sum written ``a + b + ...`` matches a sum of any number of such terms, however its add tree
is shaped; the entry's op, of two operands, is then folded over the terms as a balanced tree:
``log(exp(x) + exp(y) + ...)`` makes ``log(exp(a) + exp(b) + exp(c))`` a nest of logaddexp.
Where the pattern also reads ``x`` outside the sum (a softmax's numerator), ``x`` is the term
that reads the same value, wherever it stands in the sum; the rhs may then fold the op over the
other terms only, written ``op(y, ...)``: ``log(exp(x) / (exp(x) + exp(y) + ...)) ->
logsigmoid(x - logaddexp(y, ...))`` (its gradient σ(rest - x), where ``1 - softmax`` cancels).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from typing import NamedTuple

from compiler.errors import GateError, ParseError
from compiler.frontend.text import parse
from compiler.ir.graph import CONST, INPUT, Graph
from compiler.ir.registry import OPS

#: The pattern variables, in the order of the entry op's operands.
VARIABLES = ("x", "y")
#: How a pattern writes a sum of any number of terms.
ETC = " + ..."
#: How a rhs writes the op folded over the sum's terms but x's: ``logaddexp(y, ...)``.
REST = "...)"


class Pattern(NamedTuple):
    gate: str
    graph: Graph
    root: int
    linear: dict[int, tuple[int, float]]  # pattern nodes that are k * variable: (variable, k)
    needs: tuple[tuple[str, ...], ...]  # op families a graph must contain for a match (_needs)
    rhs: Graph  # the replacement, over the variables
    op_node: int  # the node of ``rhs`` computing the entry's op: the fused node, with the note
    fields: dict[int, tuple[str, float]]  # variable -> (its operand of op_node, "a", and m:
    # op_node reads m * variable there)
    negated: bool  # rhs is -op(...)
    rewrite: bool  # written "lhs -> rhs": a stabilisation
    sum_node: int | None = None  # the pattern's ``+ ...`` sum, if any (its first operand: a term)
    rest: bool = False  # the op is folded over the sum's terms but x's (``op(y, ...)``)


@cache
def compile_pattern(gate: str, text: str) -> Pattern:
    """``text`` (a pattern of the entry ``gate``) parsed and read: see the module docstring."""
    lhs_text, arrow, rhs_text = text.partition("->")
    lhs_text = lhs_text.strip()
    variadic = ETC in lhs_text
    g = parse(lhs_text.replace(ETC, ""))
    names = [v for v in VARIABLES if v in g.inputs]
    linear = _linear_readings(g, names)
    rest = variadic and REST in rhs_text
    rhs = parse(rhs_text.replace(REST, "y)") if arrow else f"{gate}({', '.join(names)})")
    op_node, fields, negated = _replacement(gate, rhs, names, text, rest)
    root = g.outputs[0]
    sum_node = _sum_node(g, text) if variadic else None
    needs = _needs(g, root, linear)
    return Pattern(
        gate, g, root, linear, needs, rhs, op_node, fields, negated, bool(arrow), sum_node, rest
    )


def _linear_readings(g: Graph, names: list[str]) -> dict[int, tuple[int, float]]:
    """The nodes reading ``k * variable``: the variable itself, its negation, constant
    multiples and quotients."""
    linear = {g.input(v): (j, 1.0) for j, v in enumerate(names)}
    for i, node in enumerate(g.nodes):
        args = node.args
        if node.op == "neg" and args[0] in linear:
            j, k = linear[args[0]]
            linear[i] = (j, -k)
        elif node.op == "mul":
            for s in (0, 1):
                c = g.constant_value(args[s])
                if c is not None and args[1 - s] in linear:
                    j, k = linear[args[1 - s]]
                    linear[i] = (j, c * k)
        elif node.op == "div" and args[0] in linear and g.constant_value(args[1]) is not None:
            j, k = linear[args[0]]
            linear[i] = (j, k / g.constant_value(args[1]))
    return linear


def _replacement(gate: str, rhs: Graph, names: list[str], text: str, rest: bool = False):
    """Where ``rhs`` computes the entry's op, how that node reads each variable, and whether
    the rhs negates it. Refuses any other shape of rhs: a note (what the fused node replaced,
    over its operands) could not be written for it."""
    root = rhs.outputs[0]
    negated = rhs.nodes[root].op == "neg" and rhs.nodes[rhs.nodes[root].args[0]].op == gate
    op_node = rhs.nodes[root].args[0] if negated else root
    if rhs.nodes[op_node].op != gate:  # the op inside a larger rhs: x - logaddexp(x, y)
        inside = [i for i, node in enumerate(rhs.nodes) if node.op == gate]
        if len(inside) != 1:
            raise GateError(
                f"pattern {text!r} of {gate}: the replacement must compute {gate}(...) once"
            )
        op_node = inside[0]
    readings = _linear_readings(rhs, [v for v in names if v in rhs.inputs])
    order = [v for v in names if v in rhs.inputs]
    fields: dict[int, tuple[str, float]] = {}
    for field, arg in zip("ab", rhs.nodes[op_node].args):
        if arg not in readings:
            raise GateError(f"pattern {text!r} of {gate}: each operand must be k * a variable")
        j, m = readings[arg]
        fields[names.index(order[j])] = (field, m)
    if rest:  # op(y, ...): the fold over the other terms; x is read around it
        return op_node, {1: ("a", 1.0)}, negated
    if len(fields) != len(names):
        raise GateError(f"pattern {text!r} of {gate}: the replacement must use every variable")
    return op_node, fields, negated


def _sum_node(g: Graph, text: str) -> int:
    """The sum the pattern writes ``a + b + ...``: its only add node."""
    adds = [i for i in range(len(g.nodes)) if g.nodes[i].op == "add"]
    if len(adds) != 1:
        raise GateError(f"pattern {text!r}: '+ ...' needs exactly one sum")
    return adds[0]


def _needs(g: Graph, root: int, linear: dict) -> tuple[tuple[str, ...], ...]:
    """The op families (``FAMILY``) a graph must contain for the pattern to match anywhere.

    A match pairs every pattern node it reaches — all but constants and the readings of the
    variables, which match any node — with a graph node of that node's family (see
    ``_Matcher.match``)."""
    needs, stack = set(), [root]
    while stack:
        pn = stack.pop()
        node = g.nodes[pn]
        if pn not in linear and node.op not in (CONST, INPUT):
            needs.add(FAMILY.get(node.op, (node.op,)))
            stack.extend(node.args)
    return tuple(sorted(needs))


# The graph ops a pattern's op can match (see _alternatives); other ops match only themselves.
FAMILY = {"div": ("div", "pow"), "sub": ("sub", "add"), "add": ("add", "sub")}


@cache
def definition_note(op: str) -> str:
    """The op's definition (SymPy text over a, b) as a note over its operands ``{a}``, ``{b}``:
    what a node of it replaced where a rewrite built it (a fold's nodes, a rhs's own op)."""
    from compiler.ir.printing import ATOM, render

    text = re.sub(r"\b([ab])\b", lambda m: "xy"["ab".index(m.group(1))], OPS[op].definition)
    g = parse(text)
    leaves = {g.input(v): (f, ATOM) for v, f in zip(VARIABLES, ("{a}", "{b}")) if v in g.inputs}
    return render(g, g.outputs[0], leaves)


def patterns_by_op(names: Sequence[str]) -> dict[str, list[Pattern]]:
    """Patterns of the selected entries, indexed by the graph op their root can match."""
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
    for candidates in by_op.values():
        candidates.sort(key=_precedence)
    return by_op


def _precedence(p: Pattern) -> tuple[bool, int]:
    """Gate patterns first (in table order), then stabilisations, larger ones first: at
    ``log(1 + exp(x))`` softplus wins over log1p, at ``log1p(-exp(x))`` log1mexp would."""
    return (p.rewrite, -len(p.graph.nodes) if p.rewrite else 0)

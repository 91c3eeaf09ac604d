"""Small graphs as one expression of the text language, and evaluated with NumPy (the oracle):
how a gate made of other ops is printed, checked and described without new helpers.

Pure functions of a graph and the op table; fusion, gate registration and drawings use them.
"""

from __future__ import annotations

import math
import re

import numpy as np

from compiler.ir.graph import CONST, INPUT, SEED, Graph, format_const
from compiler.ir.registry import OPS

_CALL_HEAD = re.compile(r"[\w.]+\(")


def render(
    graph: Graph,
    root: int,
    leaves: dict[int, tuple[str, int]],
    templates: dict[int, str] | None = None,
) -> str:
    """``root`` as one expression of the text language (a gate's code is its lowering,
    ``compiler.ir.lowering.lower_graph``: no source text of it is printed).

    ``leaves`` maps nodes to (text, precedence) pairs printed as given; ``templates`` overrides
    the op's template for some unary nodes (a fused gate prints what it replaced). Operands are
    parenthesised where precedence needs it. Iterative, in node order; for gate-sized graphs.
    """
    templates = templates or {}
    texts = dict(leaves)
    needed = _cone(graph, root, set(leaves))
    for i in sorted(needed):
        node = graph.nodes[i]
        if node.op == CONST:
            texts[i] = (_const_text(node.value), ATOM)
        elif node.op in (INPUT, SEED):
            texts[i] = (str(node.value) if node.op == INPUT else "seed", ATOM)
        else:
            template = templates.get(i) or OPS[node.op].text
            level = precedence(template)
            operands = {}
            for k, arg in zip("abc", node.args):
                text, inner = texts[arg]
                operands[k] = f"({text})" if _needs_parentheses(level, inner, k) else text
            texts[i] = (template.format(**operands), level)
    return texts[root][0]


# Binding strength of a template, as Python's (and the language's) grammar has it.
ATOM, POWER, UNARY, PRODUCT, SUM = 5, 4, 3, 2, 1
_INFIX = {"**": POWER, "*": PRODUCT, "/": PRODUCT, "+": SUM, "-": SUM}
_BINARY = re.compile(r"\{a\} (\*\*|\*|/|\+|-) \{b\}")


def precedence(template: str) -> int:
    """ATOM for a call, then POWER, UNARY, PRODUCT, SUM; 0 for anything else (a composed
    gate's code), which is always parenthesised as an operand."""
    if _is_call(template):
        return ATOM
    if template == "-{a}":
        return UNARY
    infix = _BINARY.fullmatch(template)
    return _INFIX[infix.group(1)] if infix else 0


def _needs_parentheses(outer: int, inner: int, side: str) -> bool:
    if outer == ATOM:  # a call's operands sit between parentheses and commas
        return False
    if outer == 0:
        return inner < ATOM
    if outer == POWER:  # (-x) ** 2, (a ** b) ** c
        return inner <= POWER if side == "a" else inner < UNARY
    return inner < outer or (inner == outer and side == "b" and outer != UNARY)


def _is_call(template: str) -> bool:
    """``name(...)`` as a whole, whose first parenthesis closes at the very end: no parentheses
    needed around it as an operand."""
    head = _CALL_HEAD.match(template)
    if not head or not template.endswith(")"):
        return False
    depth = 0
    for k in range(head.end() - 1, len(template)):
        depth += {"(": 1, ")": -1}.get(template[k], 0)
        if depth == 0:
            return k == len(template) - 1
    return False


def _cone(graph: Graph, root: int, stop: set[int]) -> set[int]:
    seen, stack = set(), [root]
    while stack:
        i = stack.pop()
        if i in seen or i in stop:
            continue
        seen.add(i)
        stack.extend(graph.nodes[i].args)
    return seen


def _const_text(value: float) -> str:
    if math.isnan(value):
        return "(1e999 - 1e999)"  # folds back to nan when parsed
    if math.isinf(value):
        return "1e999" if value > 0 else "(-1e999)"
    text = format_const(value)
    return f"({text})" if text.startswith("-") else text


def text_of(graph: Graph, names: dict[str, str] | None = None) -> str:
    """The graph's output as text in the language, inputs renamed by ``names``."""
    names = names or {}
    leaves = {graph.input(n): (names.get(n, n), ATOM) for n in graph.inputs}
    return render(graph, graph.outputs[0], leaves)


def evaluate(graph: Graph, env: dict[str, object], seed: float = 1.0) -> list:
    """Every node's value, with NumPy and NumPy's float semantics (no warnings): the oracle of
    the compiler's own checks (a gate's spot checks, discovery, where a form overflows), never a
    value handed to a user (those come from the lowerings: ``compiler.ir.elementwise``)."""
    values: list = []
    with np.errstate(all="ignore"):
        for node in graph.nodes:
            if node.op == INPUT:
                values.append(np.asarray(env[node.value], dtype=np.float64))
            elif node.op == CONST:
                values.append(np.float64(node.value))
            elif node.op == SEED:
                values.append(np.float64(seed))
            else:
                values.append(OPS[node.op].numpy(*(values[a] for a in node.args)))
    return values

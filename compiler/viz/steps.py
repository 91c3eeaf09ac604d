"""Backprop as the lecture walks it: forward gate by gate, then backward gate by gate.

``walk`` turns a graph and a point into steps. A forward step is one gate computing its value
("mul gate: t0 = w0 * x0 = 2.00 * -1.00 = -2.00"); a backward step is one gate multiplying its
upstream gradient by each local gradient and sending the product to its operands ("mul gate:
upstream 0.20 × local x0 = -1.00 → -0.20 to w0"), and where a value fans out the caption shows
the sum being formed. Values and gradients come from ``compiler.viz.values.annotate`` (the
adjoint graph, evaluated with the op tables); a local gradient is the op's own gradient rule
(``OPS[op].grads``) evaluated on a one-gate graph at the gate's operands, so each op's facts
stay in its registry entry. ``align`` pairs the unfused and fused walks step for step: a fused
gate's one step stands beside every step of the subgraph it replaced.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compiler.ir.graph import CONST, INPUT, Graph
from compiler.ir.registry import OPS
from compiler.ir.tensor import DIM, TensorGraph
from compiler.ir.tensor_ops import TENSOR_OPS
from compiler.viz.values import Annotated, annotate

#: Arrays of at most this many elements are shown in full; larger ones as min/mean/max.
SMALL = 6
FOLDED = (CONST, DIM)


@dataclass
class Step:
    """One step: the gate (node index) it is about, forward or backward, and its caption."""

    phase: str  # "forward" or "backward"
    node: int
    gate: str
    caption: str


@dataclass
class Walk:
    """A graph's steps at a point, with what each node shows when hovered."""

    graph: Graph
    numbers: Annotated
    steps: list[Step]
    nodes: dict[int, dict[str, str]] = field(default_factory=dict)

    @property
    def forward(self) -> list[Step]:
        return [s for s in self.steps if s.phase == "forward"]

    @property
    def backward(self) -> list[Step]:
        return [s for s in self.steps if s.phase == "backward"]


# ------------------------------------------------------------------------------ numbers as text
def number(v: float, digits: int = 2) -> str:
    from compiler.viz.draw import format_number

    return format_number(float(v), digits)


def text(value: Any, digits: int = 2) -> str:
    """A value as a caption writes it: a number, a small array in full, a large one summarised
    by its shape and min/mean/max (never every element)."""
    a = np.asarray(value, dtype=np.float64)
    if a.ndim == 0:
        return number(a, digits)
    if a.size <= SMALL:
        return np.array2string(
            a, separator=", ", formatter={"float_kind": lambda v: number(v, digits)}
        ).replace("\n", "")
    if a.size == 0:
        return f"[empty, shape {shape_text(a)}]"
    with np.errstate(all="ignore"):
        lo, mean, hi = np.nanmin(a), np.nanmean(a), np.nanmax(a)
    return (
        f"[{shape_text(a)} values: min {number(lo, digits)}, mean {number(mean, digits)}, "
        f"max {number(hi, digits)}]"
    )


def shape_text(value: Any) -> str:
    a = np.asarray(value)
    return "scalar" if a.ndim == 0 else " × ".join(map(str, a.shape))


# ------------------------------------------------------------------------------ the walk
def walk(
    graph: Graph,
    at: Mapping[str, Any],
    wrt: Sequence[str] | None = None,
    seed: Any = None,
    digits: int = 2,
) -> Walk:
    """The forward then backward steps of ``graph`` at ``at`` (one per live gate each way)."""
    numbers = annotate(graph, at, wrt, seed)
    g = numbers.graph
    live = g.reachable(g.outputs[:1])
    gates = [i for i in g.op_nodes() if live[i]]
    w = Walk(g, numbers, [])
    for i in gates:
        w.steps.append(Step("forward", i, gate_name(g, i), _forward_caption(g, numbers, i, digits)))
    # Backward: who sends a gradient to each node, to show the sums where a value fans out.
    senders: dict[int, list[tuple[int, int]]] = {}
    for i, k in numbers.edge_grads:
        senders.setdefault(g.nodes[i].args[k], []).append((i, k))
    arrived: dict[int, list[Any]] = {}
    for i in reversed(gates):
        if i not in numbers.grads:
            continue
        caption = _backward_caption(g, numbers, i, digits, senders, arrived)
        w.steps.append(Step("backward", i, gate_name(g, i), caption))
    for i, node in enumerate(g.nodes):
        if node.op == INPUT or (live[i] and node.op not in FOLDED):
            w.nodes[i] = hover(g, numbers, i, digits)
    return w


def gate_name(g: Graph, i: int) -> str:
    return g.nodes[i].op


def operand_name(g: Graph, a: int) -> str:
    return g.operand_text(a) if g.nodes[a].op in FOLDED else g.names[a]


def _formula(g: Graph, i: int, operands: Sequence[str]) -> str:
    return g.template(i).format(**dict(zip("abc", operands)))


def _forward_caption(g: Graph, numbers: Annotated, i: int, digits: int) -> str:
    node = g.nodes[i]
    names = [operand_name(g, a) for a in node.args]
    values = [
        operand_name(g, a) if g.nodes[a].op in FOLDED else _operand(numbers.values[a], digits)
        for a in node.args
    ]
    value = text(numbers.values[i], digits)
    symbolic = _formula(g, i, names)
    numeric = _formula(g, i, values)
    shapes = ""
    if isinstance(g, TensorGraph) and np.ndim(numbers.values[i]) > 0:
        shapes = f" (shape {shape_text(numbers.values[i])})"
    what = f"{g.nodes[i].op} gate: {g.names[i]} = {symbolic}"
    if numeric == symbolic or len(numeric) > 120:
        return f"{what} = {value}{shapes}"
    return f"{what} = {numeric} = {value}{shapes}"


def _operand(value: Any, digits: int) -> str:
    t = text(value, digits)
    return f"({t})" if t.startswith("-") else t


_WORD = re.compile(r"\b([aby])\b")


def rule_text(g: Graph, i: int, k: int) -> str | None:
    """The op table's local gradient of node ``i`` for operand ``k``, over the graph's names."""
    node = g.nodes[i]
    spec = OPS.get(node.op) if node.op in OPS else None
    if spec is None or not spec.grads:
        return None
    names = {"a": operand_name(g, node.args[0]), "y": g.names[i]}
    if len(node.args) > 1:
        names["b"] = operand_name(g, node.args[1])
    return _WORD.sub(lambda m: names.get(m.group(1), m.group(1)), spec.grads[k])


def local_gradient(g: Graph, numbers: Annotated, i: int, k: int) -> Any:
    """The local gradient d node_i / d operand_k at the point: the op's own rule, run through
    the adjoint pass on a graph of that one gate (seed 1). None for a tensor op (its Jacobian is
    never formed: the step shows its vector-Jacobian product instead)."""
    node = g.nodes[i]
    if node.op not in OPS:
        return None
    one = Graph()
    leaves = [one.input(f"a{j}") for j in range(len(node.args))]
    out = one.add(node.op, *leaves)
    one.outputs = [out]
    at = {f"a{j}": numbers.values[a] for j, a in enumerate(node.args)}
    try:
        local = annotate(one, at)
    except Exception:  # an op the one-gate graph cannot take: fall back on the quotient
        return None
    return local.edge_grads.get((out, k))


def _backward_caption(g, numbers, i, digits, senders, arrived) -> str:
    node = g.nodes[i]
    upstream = numbers.grads[i]
    parts = []
    sums = []
    for k, a in enumerate(node.args):
        if (i, k) not in numbers.edge_grads:
            continue
        sent = numbers.edge_grads[(i, k)]
        to = operand_name(g, a)
        rule = rule_text(g, i, k)
        local = local_gradient(g, numbers, i, k)
        if rule is not None and local is not None:
            parts.append(
                f"upstream {text(upstream, digits)} × local {rule} = {text(local, digits)}"
                f" → {text(sent, digits)} to {to}"
            )
        else:  # a tensor op: its vector-Jacobian product, shapes shown
            vjp = TENSOR_OPS[node.op].vjp.__name__.strip("_") if node.op in TENSOR_OPS else "vjp"
            parts.append(
                f"upstream {text(upstream, digits)} ({shape_text(upstream)}) through {vjp}"
                f" → {text(sent, digits)} ({shape_text(sent)}) to {to}"
            )
        got = arrived.setdefault(a, [])
        got.append(sent)
        if len(senders.get(a, ())) > 1:
            total = text(sum(got[1:], got[0]), digits)
            terms = " + ".join(text(v, digits) for v in got)
            n = len(senders[a])
            if len(got) < n:
                sums.append(f"{to} fans out to {n} gates: its gradient so far {terms} = {total}")
            else:
                sums.append(f"{to} fans out to {n} gates: its gradient {terms} = {total}")
    caption = f"{node.op} gate: " + "; ".join(parts)
    if sums:
        caption += " — " + "; ".join(sums)
    return caption


def hover(g: Graph, numbers: Annotated, i: int, digits: int) -> dict[str, str]:
    """What a node shows when hovered or focused: formula, local gradient rule, value, gradient."""
    node = g.nodes[i]
    info = {"name": g.names[i], "value": text(numbers.values[i], digits)}
    grad = numbers.grads.get(i)
    info["grad"] = "none (not between the inputs asked for and f)" if grad is None else (
        text(grad, digits))  # fmt: skip
    if node.op == INPUT:
        info["formula"] = f"input {node.value}"
        info["rule"] = "a leaf: its gradient is the sum of what its gates send back"
        return info
    names = [operand_name(g, a) for a in node.args]
    info["formula"] = f"{g.names[i]} = {_formula(g, i, names)}"
    if i in g.notes:
        info["formula"] += f"  (fused: {g.notes[i].format(a=names[0], b=names[-1])})"
    if node.op in OPS:
        rules = [
            f"∂{g.names[i]}/∂{operand_name(g, a)} = {rule_text(g, i, k)}"
            for k, a in enumerate(node.args)
            if g.nodes[a].op not in FOLDED and rule_text(g, i, k) is not None
        ]
        info["rule"] = "; ".join(rules) or "its derivative by SymPy"
    else:
        vjp = TENSOR_OPS[node.op].vjp
        doc = (vjp.__doc__ or "").strip().splitlines()
        info["rule"] = f"vector-Jacobian product {vjp.__name__.strip('_')}" + (
            f": {doc[0]}" if doc else "")  # fmt: skip
    return info


# ------------------------------------------------------------------------------ fused beside unfused
def align(unfused: Walk, fused: Walk) -> list[tuple[int | None, int | None]]:
    """Rows of (unfused step, fused step) indices: both walks stepped together. A fused gate's
    step stands beside every unfused step of the subgraph it replaced (the nodes computed after
    the previous match up to the node computing the same value); backward in reverse."""
    match = _matches(unfused, fused)  # unfused node -> fused node computing the same value
    group: dict[int, int] = {}
    pending: list[int] = []
    for s in unfused.forward:
        pending.append(s.node)
        if s.node in match:
            for n in pending:
                group[n] = match[s.node]
            pending = []
    fwd_index = {s.node: j for j, s in enumerate(fused.steps) if s.phase == "forward"}
    bwd_index = {s.node: j for j, s in enumerate(fused.steps) if s.phase == "backward"}
    rows: list[tuple[int | None, int | None]] = []
    used: set[int] = set()
    for j, s in enumerate(unfused.steps):
        index = fwd_index if s.phase == "forward" else bwd_index
        f = index.get(group.get(s.node, -1))
        if s.phase == "backward" and not any(r[0] is not None and unfused.steps[r[0]].phase ==
                                             "backward" for r in rows):  # fmt: skip
            rows += [(None, k) for k in sorted(set(fwd_index.values()) - used)]
            used |= set(fwd_index.values())
        rows.append((j, f))
        if f is not None:
            used.add(f)
    rows += [(None, k) for k in range(len(fused.steps)) if k not in used]
    return rows


def _matches(unfused: Walk, fused: Walk) -> dict[int, int]:
    """Unfused node -> fused node of the same value (same expression for scalar graphs, same
    numbers for tensor graphs), matched in order."""
    keys_u, keys_f = _keys(unfused), _keys(fused)
    out: dict[int, int] = {}
    start = 0
    order = [s.node for s in unfused.forward]
    for f in (s.node for s in fused.forward):
        for pos in range(start, len(order)):
            u = order[pos]
            if _same(keys_u, keys_f, unfused, fused, u, f):
                out[u] = f
                start = pos + 1
                break
    return out


def _same(keys_u, keys_f, unfused: Walk, fused: Walk, u: int, f: int) -> bool:
    if keys_u is not None and keys_f is not None:
        return keys_u[u] == keys_f[f]
    a, b = unfused.numbers.values[u], fused.numbers.values[f]
    return np.shape(a) == np.shape(b) and bool(np.allclose(a, b, equal_nan=True))


def _keys(w: Walk) -> list | None:
    """Each node's SymPy expression (scalar graphs), or None."""
    if isinstance(w.graph, TensorGraph):
        return None
    import sympy

    from compiler.ir.registry import sympy_definition

    a, b = sympy.symbols("a b", real=True)
    keys: list = []
    try:
        for node in w.graph.nodes:
            if node.op == INPUT:
                keys.append(sympy.Symbol(node.value, real=True))
            elif node.op == CONST:
                keys.append(sympy.Float(node.value) if node.value % 1 else
                            sympy.Integer(int(node.value)))  # fmt: skip
            elif node.op in OPS:
                operands = dict(zip((a, b), (keys[x] for x in node.args)))
                keys.append(sympy_definition(node.op).xreplace(operands))
            else:
                return None
    except Exception:  # a definition SymPy cannot take: match by numbers
        return None
    return keys

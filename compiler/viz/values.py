"""The numbers a drawing puts on its edges: every node's value, and the gradient on every edge.

Values come from evaluating the graph with the op tables (each elementwise op by its lowering,
``compiler.ir.elementwise``: the bits the compiled kernels give;
the generated-code text of ``TENSOR_OPS[op].code`` for tensor ops, run by NumPy); gradients from
the adjoint graph (``compiler.passes.adjoint``), evaluated the same way. The gradient on an edge
``u -> v`` is what ``v`` sends back to ``u``: ``v``'s upstream gradient times its local gradient
(the lecture's picture), so where ``u`` fans out its edges' gradients add up to ``u``'s own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compiler.errors import InputError
from compiler.ir import elementwise, reductions
from compiler.ir import shapes as sh
from compiler.ir.graph import CONST, INPUT, SEED, Graph
from compiler.ir.registry import OPS
from compiler.ir.tensor import DIM, TENSOR_LEAVES, TensorGraph
from compiler.ir.tensor_ops import AXES_OPS, AXIS_SHAPE_OPS, TENSOR_OPS

_NAMESPACE = {"np": np, **{h: getattr(reductions, h) for h in reductions.__all__}}


def evaluate(graph: Graph, at: Mapping[str, Any], seed: Any = None) -> list:
    """Every node's value at the point ``at`` (NumPy's float64 semantics, no warnings).

    ``seed`` is the value of the graph's seed node, by default ones of the output's shape.
    """
    arrays = {n: np.asarray(at[n], dtype=np.float64) for n in graph.inputs if n in at}
    missing = [n for n in graph.inputs if n not in arrays]
    if missing:
        raise InputError(f"at= gives no value for {missing}; the graph's inputs are "
                         f"{list(graph.inputs)}")  # fmt: skip
    declared = getattr(graph, "declared", {})
    sizes = sh.bind({n: s for n, s in declared.items() if n in arrays}, arrays)
    # The form of the lowerings the graph's compiled tier runs: tensor graphs' Numba loops take
    # sin and cos's scalar form, scalar graphs with sin or cos run on LLVM's O3 tier (vector).
    vector = None if isinstance(graph, TensorGraph) else True
    values: list = []
    with np.errstate(all="ignore"):
        for i, node in enumerate(graph.nodes):
            args = [values[a] for a in node.args]
            if node.op == INPUT:
                values.append(arrays[node.value])
            elif node.op == CONST:
                values.append(np.float64(node.value))
            elif node.op == SEED:  # an adjoint graph's seed comes after its output
                ones = np.ones_like(values[graph.outputs[0]])
                values.append(ones if seed is None else np.asarray(seed, dtype=np.float64))
            elif node.op == DIM:
                values.append(np.float64(sizes[node.value]))
            elif node.op in OPS:
                values.append(elementwise.apply(OPS[node.op], *args, vector=vector))
            else:
                values.append(_tensor_op(graph, i, args, sizes))
    return values


def _tensor_op(graph: Graph, i: int, args: list, sizes: dict[str, int]):
    node = graph.nodes[i]
    attrs = node.value
    if node.op in AXES_OPS:
        attrs = str(attrs[0]) if len(attrs) == 1 else str(tuple(attrs))
    elif node.op in AXIS_SHAPE_OPS:  # (axis, shape)
        attrs = f"{attrs[0]}, {sh.concrete(attrs[1], sizes)!r}"
    elif attrs is not None:
        attrs = repr(sh.concrete(attrs, sizes))
    code = TENSOR_OPS[node.op].code.format(a="a", b="b", attrs=attrs)
    return eval(code, _NAMESPACE, dict(zip("ab", args)))  # the op table's own code text


@dataclass
class Annotated:
    """A graph's forward nodes with numbers: ``values[i]`` for every node, ``grads[i]`` the
    gradient of the output with respect to node ``i``, ``edge_grads[(i, k)]`` what node ``i``
    sends back to its operand ``k``. Nodes not between ``wrt`` and the output have no gradient.
    """

    graph: Graph
    values: list
    grads: dict[int, Any] = field(default_factory=dict)
    edge_grads: dict[tuple[int, int], Any] = field(default_factory=dict)

    @property
    def output(self) -> int:
        return self.graph.outputs[0]


def annotate(
    graph: Graph, at: Mapping[str, Any], wrt: Sequence[str] | None = None, seed: Any = None
) -> Annotated:
    """Values and gradients of ``graph``'s nodes at ``at``, from its adjoint graph.

    ``seed`` is the upstream gradient of the output (default: ones of the output's shape).
    The returned graph is the adjoint's forward part, the same nodes as ``graph`` in its order.
    """
    from compiler.passes.adjoint import adjoint

    adj = adjoint(graph, wrt)
    edges, node_grads = _backward_edges(adj)
    values = evaluate(adj, at, seed)
    forward = _forward_view(adj)
    return Annotated(
        forward,
        values[: adj.n_forward],
        {i: values[g] for i, g in node_grads.items()},
        {e: (values[g] if g is not None else 0.0 * values[forward.nodes[e[0]].args[e[1]]])
         for e, g in edges.items()},
    )  # fmt: skip


def _forward_view(adj) -> Graph:
    """The forward part of ``adj`` as a graph of its own (nodes shared; output: the value)."""
    view = adj.empty_like()
    view.__dict__.update({k: v for k, v in adj.__dict__.items() if k != "outputs"})
    view.nodes = adj.nodes[: adj.n_forward]
    view.names = adj.names[: adj.n_forward]
    if isinstance(adj, TensorGraph):
        view.shapes = adj.shapes[: adj.n_forward]
    view.outputs = adj.outputs[:1]
    return view


def _backward_edges(adj) -> tuple[dict[tuple[int, int], int | None], dict[int, int]]:
    """Per forward edge (node, operand index): the adjoint node of what flows back on it (None
    for a structural zero); per forward node: its adjoint. The adjoint pass's own rules
    (``contribution``), replayed on its graph: hash-consing finds the nodes it built."""
    n = adj.n_forward
    wrt = {adj.input(w) for w in adj.wrt}
    needed = [i in wrt for i in range(n)]
    for i, node in enumerate(adj.nodes[:n]):
        needed[i] = needed[i] or any(needed[a] for a in node.args)
    out = adj.outputs[0]
    grads: dict[int, int] = {out: adj.seed()} if needed[out] else {}
    edges: dict[tuple[int, int], int | None] = {}
    for i in range(n - 1, -1, -1):
        node = adj.nodes[i]
        if i not in grads or node.op in TENSOR_LEAVES:
            continue
        for k, arg in enumerate(node.args):
            if not needed[arg]:
                continue
            c = edges[(i, k)] = adj.contribution(i, grads[i], k)
            if c is not None:
                grads[arg] = c if arg not in grads else adj.add("add", grads[arg], c)
    return edges, grads

"""Forward mode: tangents pushed through a graph, and the programs built from them.

Each node's tangent is ``t_y = Σ_k ∂y/∂a_k · t_{a_k}``, the local gradients instantiated from
the op table exactly as the adjoint pass instantiates them (``adjoint.instantiate_gradient``:
one place states every op's derivative). Only nodes that depend on a seeded input get a tangent;
structural zeros are never built. A local gradient that selects (``where(c, 1, 0)``: ``where``,
``clip``, ``relu``) routes the tangent, ``where(c, t, 0)``, rather than multiplying it, so an
unchosen branch's inf or nan never reaches the derivative.

The kernels' programs are ``AdjointGraph``s, so every tier runs them unchanged: a quantity that
is not the value (a directional derivative, a Jacobian entry) is read out as the gradient of an
input of its own, given 0, that multiplies it in a sum nothing returns — as
``passes.hessian`` reads out its entries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from compiler.errors import InputError
from compiler.ir.graph import CONST, INPUT, SEED, Graph, copy_nodes
from compiler.ir.tensor import TensorGraph
from compiler.passes.adjoint import AdjointGraph, backpropagate, instantiate_gradient
from compiler.passes.second_order import gradient_values

#: A tangent input is this prefix and its input's name: ``t_x`` for ``x``.
TANGENT_PREFIX = "t_"
#: The input whose gradient reads out the directional derivative.
JVP_READER = "jvp_out"


def propagate(g: Graph, seeds: Mapping[int, int], upto: int | None = None) -> dict[int, int]:
    """Tangent nodes (added to ``g``) of ``g``'s nodes before ``upto`` (default: all present)
    that depend on a seeded node; ``seeds`` maps nodes to their tangents' nodes."""
    tangents = dict(seeds)
    for i in range(len(g.nodes) if upto is None else upto):
        node = g.nodes[i]
        if i in tangents or node.op in (INPUT, CONST, SEED):
            continue
        terms = [_term(g, i, k, tangents[a]) for k, a in enumerate(node.args) if a in tangents]
        terms = [t for t in terms if t is not None]
        if terms:
            total = terms[0]
            for t in terms[1:]:
                total = g.add("add", total, t)
            tangents[i] = total
    return tangents


def _term(g: Graph, i: int, k: int, tangent: int) -> int | None:
    """``∂ node_i / ∂ operand_k · tangent`` (None: a structural zero)."""
    node = g.nodes[i]
    local = instantiate_gradient(g, node.op, k, node.args, i)
    if g.constant_value(local) == 0:
        return None
    return scaled(g, local, tangent)


def scaled(g: Graph, local: int, tangent: int) -> int:
    """``local · tangent``; a local gradient that selects (``where(c, 1, 0)`` or its mirror)
    routes instead, ``where(c, tangent, 0)``: an unchosen branch's inf never meets a 0."""
    node = g.nodes[local]
    if node.op == "where":
        cond, *branches = node.args
        picks = [g.constant_value(b) for b in branches]
        if all(p in (0.0, 1.0) for p in picks):
            zero = g.const(0.0)
            return g.add("where", cond, *(tangent if p == 1 else zero for p in picks))
    return g.add("mul", local, tangent)


def tangent_names(inputs: Sequence[str], wrt: Sequence[str]) -> dict[str, str]:
    """``{input: its tangent's name}``; names already taken by an input are refused."""
    names = {w: TANGENT_PREFIX + w for w in wrt}
    _refuse_taken(inputs, [*names.values(), JVP_READER], "forward mode names")
    return names


def jvp(graph: Graph, wrt: Sequence[str] | None = None) -> AdjointGraph:
    """The program of ``graph``'s value and its derivative along a tangent.

    Inputs: ``graph``'s, one tangent ``t_<w>`` per ``w`` in ``wrt``, then ``jvp_out`` (given
    0). Value: f. Its one gradient, of ``jvp_out``: ``Σ_w ∂f/∂w · t_w`` per point (scaled by
    the seed), by forward mode — one sweep, no backward pass over f.
    """
    wrt = _check(graph, wrt)
    names = tangent_names(graph.inputs, wrt)
    adj = AdjointGraph()
    for name in (*graph.inputs, *names.values(), JVP_READER):
        adj.input(name)
    mapping = copy_nodes(graph, adj, {})
    f = mapping[graph.outputs[0]]
    seeds = {adj.input(w): adj.input(names[w]) for w in wrt}
    derivative = propagate(adj, seeds).get(f, adj.const(0.0))
    s = adj.add("mul", adj.input(JVP_READER), derivative)
    return backpropagate(adj, s, (JVP_READER,), value=f)


def jacobian(graph: Graph, wrt: Sequence[str] | None = None, by: str = "auto") -> AdjointGraph:
    """The program of every output's value and the Jacobian of ``graph``'s outputs (m of them)
    with respect to ``wrt`` (n inputs), per point.

    ``by="rows"``: one reverse sweep per output; ``"columns"``: one forward sweep per input;
    ``"auto"``: rows when m < n, else columns (the fewer sweeps). Read out through inputs
    ``out_<i>`` (output i's value) and ``jac_<i>_<j>`` (entry (i, j)), given 0: the program's
    gradients in that order (outputs, then the entries row by row); its value is output 0.
    """
    wrt = _check(graph, wrt)
    m, n = len(graph.outputs), len(wrt)
    if by == "auto":
        by = "rows" if m < n else "columns"
    if by not in ("rows", "columns"):
        raise ValueError(f"by must be 'auto', 'rows' or 'columns', not {by!r}")
    readers = jacobian_names(graph.inputs, m, n)
    adj = AdjointGraph()
    for name in (*graph.inputs, *readers):
        adj.input(name)
    mapping = copy_nodes(graph, adj, {})
    outputs = [mapping[o] for o in graph.outputs]
    entries = _rows(graph, adj, wrt) if by == "rows" else _columns(adj, outputs, wrt)
    total = adj.const(0.0)
    for reader, node in zip(readers, [*outputs, *entries]):
        total = adj.add("add", total, adj.add("mul", adj.input(reader), node))
    return backpropagate(adj, total, tuple(readers), value=outputs[0])


def jacobian_names(inputs: Sequence[str], m: int, n: int) -> list[str]:
    """``out_<i>`` then ``jac_<i>_<j>`` row by row; refused if an input has such a name."""
    names = [f"out_{i}" for i in range(m)] + [f"jac_{i}_{j}" for i in range(m) for j in range(n)]
    _refuse_taken(inputs, names, "a Jacobian's values and entries are read out through inputs")
    return names


def _rows(graph: Graph, adj: AdjointGraph, wrt: Sequence[str]) -> list[int]:
    """The Jacobian's entries row by row, each row one reverse sweep of its output."""
    entries = []
    for o in graph.outputs:
        row = gradient_values(Graph._with_outputs(graph, [o]), wrt)
        copied = copy_nodes(row, adj, {})
        entries.extend(copied[x] for x in row.outputs[1:])
    return entries


def _columns(adj: AdjointGraph, outputs: list[int], wrt: Sequence[str]) -> list[int]:
    """The Jacobian's entries row by row, each column one forward sweep from its input."""
    upto, one, zero = len(adj.nodes), adj.const(1.0), adj.const(0.0)
    columns = [propagate(adj, {adj.input(w): one}, upto) for w in wrt]
    return [column.get(o, zero) for o in outputs for column in columns]


def _refuse_taken(inputs: Sequence[str], names: Sequence[str], what: str) -> None:
    taken = sorted(set(names) & set(inputs))
    if taken:
        raise InputError(f"{what} like {taken}, which input(s) already use: rename them")


def _check(graph: Graph, wrt: Sequence[str] | None) -> tuple[str, ...]:
    if isinstance(graph, TensorGraph):
        raise NotImplementedError(
            "forward mode of tensor programs (shapes=) is not supported yet: only elementwise "
            "graphs of scalars and arrays of samples"
        )
    wrt = tuple(graph.inputs if wrt is None else wrt)
    unknown = [w for w in wrt if w not in graph.inputs]
    if unknown:
        raise InputError(f"wrt names unknown input(s) {unknown}; inputs are {list(graph.inputs)}")
    return wrt

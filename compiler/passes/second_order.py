"""Second order by reverse-over-reverse: the Hessian-vector product graph of a scalar graph.

No new differentiator: the adjoint pass runs twice. Its first run gives the gradient nodes ∇f
(with the upstream gradient fixed at 1); they become forward values of a new graph, which also
reads one direction input ``v_<name>`` per differentiated input and forms the scalar
``s(x, v) = Σ_i ∇f_i(x) · v_i``. The adjoint pass's second run differentiates ``s``: with respect
to the original inputs that is ``H·v`` (H symmetric), with respect to ``v_i`` it is ``∇f_i``. So
one kernel of the result returns ``f`` (its value), ``H·v`` and ``∇f`` in one pass over memory,
and every tier compiles it unchanged: it is an ``AdjointGraph`` like any other.

A tensor program (``TensorGraph``) goes the same way, into a ``TensorAdjointGraph``: each
direction is declared with its input's shape and each ``∇f_i · v_i`` is the full ``sum`` of
their elementwise product, so ``s`` stays a scalar. The tensor ops' VJPs (matmul, transpose,
reshape, broadcast_to and sum_to, the reductions, the softmax gates, take/scatter) are built
of ops of the same table, so the second run differentiates them like any other node; ``ties``
(the max/min share) is piecewise constant, gradient 0. Only a scalar output is taken.

The dense Hessian of a scalar graph is ``passes.hessian``'s (a sum of outer products of
tangents, linear in the graph rather than one sweep per row).

Second derivatives come from the local-gradient templates of the op table differentiated once
more: an op's ``smooth_grads`` where it states them (logaddexp's plain sigmoids, not its
rounding-corrected ones: a correction's derivative is 0 and would only lengthen the program;
the gradient an hvp returns is first order's own). A kink's local gradient
(``where(x > 0, 1, 0)``, ``sign(x)``) is piecewise constant, so its own gradient is 0 away from
the kink, and at the kink too (comparisons and ``sign`` have gradient 0 everywhere in the kink
table).
"""

from __future__ import annotations

from collections.abc import Sequence

from compiler.errors import InputError, ShapeError
from compiler.ir.graph import SEED, Graph, copy_nodes
from compiler.ir.shapes import text as sh_text
from compiler.ir.tensor import TensorGraph
from compiler.passes.adjoint import (
    AdjointGraph,
    TensorAdjointGraph,
    adjoint,
    backpropagate,
)

#: A direction input is this prefix and its input's name: ``v_x`` for ``x``.
DIRECTION_PREFIX = "v_"


def direction_names(inputs: Sequence[str], wrt: Sequence[str]) -> dict[str, str]:
    """``{input: its direction's name}`` for the ``wrt`` inputs. A direction's name that is
    already an input's is refused: the product would silently read the user's value."""
    names = {w: DIRECTION_PREFIX + w for w in wrt}
    taken = sorted(v for v in names.values() if v in inputs)
    if taken:
        raise InputError(
            f"second derivatives name the direction of each input x 'v_x', but input(s) "
            f"{taken} already use that name: rename them"
        )
    return names


def gradient_values(graph: Graph, wrt: Sequence[str], smooth: bool = False) -> Graph:
    """A forward graph whose outputs are ``[f, ∂f/∂wrt_0, ...]``: the first adjoint with the
    upstream gradient fixed at 1, so the gradients are plain values to differentiate again.
    ``smooth``: built from the ops' ``smooth_grads`` (the form to differentiate)."""
    first = adjoint(graph, wrt, smooth)
    out = graph.empty_like()  # a tensor graph's keeps its declared shapes
    for name in graph.inputs:
        out.input(name)
    seed = [i for i, n in enumerate(first.nodes) if n.op == SEED]
    mapping = copy_nodes(first, out, {s: out.const(1.0) for s in seed})
    out.outputs = [mapping[o] for o in first.outputs]
    return out


def hvp(graph: Graph, wrt: Sequence[str] | None = None) -> AdjointGraph:
    """The Hessian-vector product program of ``graph``'s scalar output.

    Its inputs are ``graph``'s, then one direction ``v_<w>`` per ``w`` in ``wrt``; its value is
    f; its gradients, by ``wrt`` order, are ``(H·v)_w`` for each ``w`` then ``∂f/∂w`` (as the
    gradients of ``v_<w>``). Each is scaled by the seed, as a first-order kernel's gradients are.
    H·v differentiates the smooth gradient, as ``passes.hessian`` does (so both agree at
    logaddexp's ties, say); the ∇f returned is first order's own. On a ``TensorGraph`` each direction has
    its input's shape and ``∇f_i · v_i`` is the full sum of their elementwise product: the
    tensor ops' VJPs are differentiated as any other nodes.
    """
    wrt = _check(graph, wrt)
    directions = direction_names(graph.inputs, wrt)
    values = gradient_values(graph, wrt)  # f and ∇f as first order computes them
    smooth = gradient_values(graph, wrt, smooth=True).fold_negations()  # ∇f to differentiate
    adj = _second_program(graph, directions)
    adj.smooth = True
    for name in (*graph.inputs, *directions.values()):
        adj.input(name)
    mapping = copy_nodes(values, adj, {})
    f, *grads = (mapping[o] for o in values.outputs)
    mapping = copy_nodes(smooth, adj, {})
    s = _dot(adj, [mapping[o] for o in smooth.outputs[1:]], [adj.input(directions[w]) for w in wrt])
    given = {directions[w]: g for w, g in zip(wrt, grads)}
    return backpropagate(adj, s, (*wrt, *directions.values()), value=f, given=given)


def _second_program(graph: Graph, directions: dict[str, str]) -> AdjointGraph:
    """The empty program a second-order pass fills: a ``TensorAdjointGraph`` for a tensor
    program, whose direction inputs are declared with their inputs' shapes."""
    if not isinstance(graph, TensorGraph):
        return AdjointGraph()
    declared = dict(graph.declared)
    declared.update({v: graph.declared.get(w, ()) for w, v in directions.items()})
    return TensorAdjointGraph(declared)


def _check(graph: Graph, wrt: Sequence[str] | None) -> tuple[str, ...]:
    """``wrt`` checked against ``graph``'s inputs; a tensor program's output must be a scalar:
    H·v of a non-scalar output would need a seed per element."""
    if isinstance(graph, TensorGraph):
        shape = graph.shapes[graph.outputs[0]]
        if shape:
            raise ShapeError(
                f"second derivatives need a scalar output, but this tensor program's has "
                f"shape {sh_text(shape)}: reduce it (sum(...), mean(...)) first"
            )
    wrt = tuple(graph.inputs if wrt is None else wrt)
    unknown = [w for w in wrt if w not in graph.inputs]
    if unknown:
        raise InputError(f"wrt names unknown input(s) {unknown}; inputs are {list(graph.inputs)}")
    return wrt


def _dot(g: Graph, a: Sequence[int], b: Sequence[int]) -> int:
    """``Σ a_i · b_i`` as a chain of adds (0 for no terms); on a tensor graph each term is the
    full sum of an elementwise product, so the total stays a scalar."""
    total = g.const(0.0)
    for x, y in zip(a, b):
        total = g.add("add", total, _full_sum(g, g.add("mul", x, y)))
    return total


def _full_sum(g: Graph, node: int) -> int:
    """The sum of all of ``node``'s elements (``node`` itself if it is a scalar)."""
    if not isinstance(g, TensorGraph) or not g.shapes[node]:
        return node
    return g.add("sum", node, attrs=tuple(range(len(g.shapes[node]))))

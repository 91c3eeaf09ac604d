"""Second order by reverse-over-reverse: the Hessian-vector product graph of a scalar graph.

No new differentiator: the adjoint pass runs twice. Its first run gives the gradient nodes ∇f
(with the upstream gradient fixed at 1); they become forward values of a new graph, which also
reads one direction input ``v_<name>`` per differentiated input and forms the scalar
``s(x, v) = Σ_i ∇f_i(x) · v_i``. The adjoint pass's second run differentiates ``s``: with respect
to the original inputs that is ``H·v`` (H symmetric), with respect to ``v_i`` it is ``∇f_i``. So
one kernel of the result returns ``f`` (its value), ``H·v`` and ``∇f`` in one pass over memory,
and every tier compiles it unchanged: it is an ``AdjointGraph`` like any other.

Second derivatives come from the local-gradient templates of the op table differentiated once
more: a kink's local gradient (``where(x > 0, 1, 0)``, ``sign(x)``) is piecewise constant, so its
own gradient is 0 away from the kink, and at the kink too (comparisons and ``sign`` have
gradient 0 everywhere in the kink table).
"""

from __future__ import annotations

from collections.abc import Sequence

from compiler.errors import InputError
from compiler.ir.graph import SEED, Graph, copy_nodes
from compiler.ir.tensor import TensorGraph
from compiler.passes.adjoint import AdjointGraph, adjoint, backpropagate

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


def gradient_values(graph: Graph, wrt: Sequence[str]) -> Graph:
    """A forward graph whose outputs are ``[f, ∂f/∂wrt_0, ...]``: the first adjoint with the
    upstream gradient fixed at 1, so the gradients are plain values to differentiate again."""
    first = adjoint(graph, wrt)
    out = Graph()
    for name in graph.inputs:
        out.input(name)
    seed = [i for i, n in enumerate(first.nodes) if n.op == SEED]
    mapping = copy_nodes(first, out, {s: out.const(1.0) for s in seed})
    out.outputs = [mapping[o] for o in first.outputs]
    return out


def hvp(graph: Graph, wrt: Sequence[str] | None = None) -> AdjointGraph:
    """The Hessian-vector product program of ``graph``'s (scalar, elementwise) output.

    Its inputs are ``graph``'s, then one direction ``v_<w>`` per ``w`` in ``wrt``; its value is
    f; its gradients, by ``wrt`` order, are ``(H·v)_w`` for each ``w`` then ``∂f/∂w`` (as the
    gradients of ``v_<w>``). Each is scaled by the seed, as a first-order kernel's gradients are.
    """
    if isinstance(graph, TensorGraph):
        raise NotImplementedError(
            "second derivatives of tensor programs (shapes=) are not supported yet: "
            "only elementwise graphs of scalars and arrays of samples"
        )
    wrt = tuple(graph.inputs if wrt is None else wrt)
    unknown = [w for w in wrt if w not in graph.inputs]
    if unknown:
        raise InputError(f"wrt names unknown input(s) {unknown}; inputs are {list(graph.inputs)}")
    directions = direction_names(graph.inputs, wrt)
    values = gradient_values(graph, wrt)
    adj = AdjointGraph()
    for name in (*graph.inputs, *directions.values()):
        adj.input(name)
    mapping = copy_nodes(values, adj, {})
    f, *grads = (mapping[o] for o in values.outputs)
    s = _dot(adj, grads, [adj.input(directions[w]) for w in wrt])
    return backpropagate(adj, s, (*wrt, *directions.values()), value=f)


def _dot(g: Graph, a: Sequence[int], b: Sequence[int]) -> int:
    """``Σ a_i · b_i`` as a chain of adds (0 for no terms)."""
    total = g.const(0.0)
    for x, y in zip(a, b):
        total = g.add("add", total, g.add("mul", x, y))
    return total

"""Tensor gates: the reductions people write out by hand, rewritten into stable ops.

``log(sum(exp(x), axis))`` becomes ``logsumexp(x, axis)`` (also the max-shifted form people write
for stability), ``exp(x) / sum(exp(x), axis, keepdims=True)`` becomes ``softmax``, ``log`` of a
softmax and ``x - logsumexp(x, keepdims)`` become ``log_softmax`` (the core of softmax
cross-entropy: ``-sum(Y * log_softmax(S))``), and ``sum(x * x)`` or ``sum(x ** 2)`` becomes
``sumsq``. Each gate's gradient is its own rule in ``compiler/ir/tensor_ops.py``.

The pass copies the graph once, bottom-up, matching each node against its already-rewritten
operands, so a gate found inside another pattern (a logsumexp inside a log_softmax) composes.
"""

from __future__ import annotations

from collections.abc import Sequence

from compiler.ir.graph import prune
from compiler.ir.tensor import TensorGraph
from compiler.ir.tensor_ops import TENSOR_GATES


def fuse_tensor_gates(graph: TensorGraph, names: Sequence[str]) -> TensorGraph:
    """``graph`` with the named tensor gates built where their forms appear."""
    wanted = [n for n in names if n in TENSOR_GATES]
    if not wanted:
        return graph
    out = graph.empty_like()
    for name in graph.inputs:
        out.input(name)
    mapping: dict[int, int] = {}
    for i, node in enumerate(graph.nodes):
        new = out.copy_node(node, [mapping[a] for a in node.args])
        note = graph.notes.get(i)
        if note and out.nodes[new].op == node.op:  # an elementwise gate keeps its note
            out.notes.setdefault(new, note)
        mapping[i] = _rewrite(out, new, wanted)
    out.outputs = [mapping[o] for o in graph.outputs]
    return prune(out)


def _rewrite(g: TensorGraph, i: int, wanted: list[str]) -> int:
    for rule in _RULES:
        found = rule(g, i, wanted)
        if found is not None:
            return found
    return i


# ------------------------------------------------------------------------------ reading forms
def _op(g: TensorGraph, i: int, op: str) -> bool:
    return g.nodes[i].op == op


def _reduced(g: TensorGraph, i: int, op: str) -> tuple[int, tuple[int, ...], bool] | None:
    """``(operand, axes, kept)`` if node ``i`` is ``op`` over axes or its keepdims reshape;
    ``kept`` when it broadcasts against the operand as a kept one would (a reduction over
    leading axes does, the keepdims reshape having been simplified away)."""
    kept = False
    if _op(g, i, "reshape"):
        inner = g.nodes[i].args[0]
        if not _op(g, inner, op):
            return None
        x, axes = g.nodes[inner].args[0], g.nodes[inner].value
        keep = tuple(1 if k in axes else d for k, d in enumerate(g.shapes[x]))
        if g.shapes[i] != keep:
            return None
        i, kept = inner, True
    if not _op(g, i, op):
        return None
    x, axes = g.nodes[i].args[0], g.nodes[i].value
    leading = axes == tuple(range(len(axes)))  # broadcasts back by itself (right-aligned)
    return x, axes, kept or leading


def _note(g: TensorGraph, node: int, text: str) -> int:
    """Record the subgraph a gate replaced, in the text language over ``{a}`` (the drawing's
    ``expand=True`` parses it back, the generated source prints it)."""
    g.notes.setdefault(node, text)
    return node


def _softmax_text(axes: tuple[int, ...]) -> str:
    return f"exp({{a}}) / sum(exp({{a}}), axis={_axes(axes)}, keepdims=True)"


# ------------------------------------------------------------------------------ the rules
def _logsumexp(g: TensorGraph, i: int, wanted: list[str]) -> int | None:
    """log(sum(exp(x))) and max(x) + log(sum(exp(x - max(x)))), kept dims or not."""
    if "logsumexp" not in wanted:
        return None
    if _op(g, i, "log"):
        found = _reduced(g, g.nodes[i].args[0], "sum")
        if found and _op(g, found[0], "exp"):
            x, axes = g.nodes[found[0]].args[0], found[1]
            lse = g.add("logsumexp", x, attrs=axes)
            _note(g, lse, f"log(sum(exp({{a}}), axis={_axes(axes)}))")
            same = g.shapes[i] == g.shapes[lse]
            return lse if same else g.add("reshape", lse, attrs=g.shapes[i])
    if _op(g, i, "add"):
        for m, rest in (g.nodes[i].args, g.nodes[i].args[::-1]):
            if _op(g, rest, "logsumexp") and _op(g, g.nodes[rest].args[0], "sub"):
                x, shifted = g.nodes[g.nodes[rest].args[0]].args
                top = _reduced(g, shifted, "max")
                if top and top[0] == x and top[1] == g.nodes[rest].value and _max_of(g, m, x):
                    node = g.add("logsumexp", x, attrs=top[1])
                    shifted_form = (
                        "max({a}, axis=AXES) + "
                        "log(sum(exp({a} - max({a}, axis=AXES, keepdims=True)), axis=AXES))"
                    )
                    return _note(g, node, shifted_form.replace("AXES", _axes(top[1])))
    return None


def _max_of(g: TensorGraph, m: int, x: int) -> bool:
    found = _reduced(g, m, "max")
    return bool(found) and found[0] == x


def _softmax(g: TensorGraph, i: int, wanted: list[str]) -> int | None:
    """exp(x) / sum(exp(x), keepdims=True)."""
    if "softmax" not in wanted or not _op(g, i, "div"):
        return None
    top, bottom = g.nodes[i].args
    found = _reduced(g, bottom, "sum")
    if found and found[0] == top and found[2] and _op(g, top, "exp"):
        x = g.nodes[top].args[0]
        node = g.add("softmax", x, attrs=found[1])
        return _note(g, node, _softmax_text(found[1]))
    return None


def _log_softmax(g: TensorGraph, i: int, wanted: list[str]) -> int | None:
    """log(softmax(x)) and x - logsumexp(x, keepdims=True)."""
    if "log_softmax" not in wanted:
        return None
    if _op(g, i, "log") and _op(g, g.nodes[i].args[0], "softmax"):
        s = g.nodes[i].args[0]
        node = g.add("log_softmax", g.nodes[s].args[0], attrs=g.nodes[s].value)
        return _note(g, node, f"log({_softmax_text(g.nodes[s].value)})")
    if _op(g, i, "sub"):
        x, lse = g.nodes[i].args
        found = _reduced(g, lse, "logsumexp")
        if found and found[0] == x and found[2]:
            node = g.add("log_softmax", x, attrs=found[1])
            axes = _axes(found[1])
            return _note(g, node, f"{{a}} - log(sum(exp({{a}}), axis={axes}, keepdims=True))")
    return None


def _sumsq(g: TensorGraph, i: int, wanted: list[str]) -> int | None:
    """sum(x * x) and sum(x ** 2)."""
    if "sumsq" not in wanted or not _op(g, i, "sum"):
        return None
    sq, axes = g.nodes[i].args[0], g.nodes[i].value
    a = g.nodes[sq].args
    square = (_op(g, sq, "mul") and a[0] == a[1]) or (
        _op(g, sq, "pow") and g.constant_value(a[1]) == 2.0
    )
    if not square:
        return None
    node = g.add("sumsq", a[0], attrs=axes)
    return _note(g, node, f"sum({{a}} ** 2, axis={_axes(axes)})")


def _axes(axes: tuple[int, ...]) -> str:
    return str(axes[0]) if len(axes) == 1 else str(axes)


_RULES = (_logsumexp, _softmax, _log_softmax, _sumsq)

"""The tensor op table: each op beyond the elementwise registry declared once, JAX-style.

An entry holds its shape rule, its vector-Jacobian product (VJP), how it prints in listings and how
generated code computes it. VJPs build nodes in the graph and never a Jacobian: matmul's adjoint is
two matmuls, a broadcast's adjoint is a sum over the broadcast axes, a reduction's adjoint a
broadcast. Elementwise ops keep their entries in ``compiler.ir.registry`` and broadcast like NumPy.

Tensor gates (``logsumexp``, ``softmax``, ``log_softmax`` — the softmax cross-entropy's core —
and ``sumsq``) are entries here too: the fusion pass builds them from the forms people write.
An all ``-inf`` slice has logsumexp ``-inf`` and gradient 0 (not nan), and softmax 0 there.

``take_along_axis`` (NumPy's) picks by integer indices — class labels, for softmax cross-entropy
with integer targets: ``-mean(take_along_axis(log_softmax(z, axis=1), y, axis=1))`` with ``y`` of
shape ``(B, 1)``. Inputs are float64, so indices are float64 arrays of whole numbers, checked when
used; its VJP adds the upstream gradient into the picked positions (``scatter_along_axis``).

Every op here is also a function of the text language and of ``compiler.ops``, spelled as its
``listing`` prints it, so a listing reads back (``Graph.to_text``).

Tie rule of the ``max``/``min`` reductions (the kink table's rule for ``maximum``, and JAX's): the
upstream gradient is split equally among the elements equal to the extremum, so the partials sum
to 1.

``attrs`` is a node's static attribute: the reduced axes (``sum``, ``max``, ``min``, ``ties``,
``take_along_axis``), a target shape (``reshape``, ``broadcast_to``, ``sum_to``) or both
(``scatter_along_axis``: ``(axis, shape)``). VJP rules receive the graph ``g``, the
node ``i``, its upstream gradient ``G`` and the operand index ``k``, and return the contribution to
that operand's gradient (of that operand's shape), or None for no gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from compiler.errors import ShapeError
from compiler.ir.shapes import Shape, broadcast, text


@dataclass(frozen=True)
class TensorOp:
    """One tensor op: its arity, shape rule, VJP, listing text and generated code.

    ``listing`` and ``code`` are format strings over the operands ``{a}``, ``{b}`` and the
    attribute ``{attrs}`` (the axes as NumPy writes them, or a shape's text).
    """

    name: str
    arity: int
    shape: Callable[[list[Shape], Any], Shape]
    vjp: Callable[..., int | None]
    listing: str
    code: str
    # A tensor gate (compiler/passes/tensor_fusion.py builds it from what users write): what the
    # unfused form risks, for the fusion report.
    overflow: str = ""

    @property
    def is_gate(self) -> bool:
        return bool(self.overflow)


# ----------------------------------------------------------------------------- shape rules
def _matmul_shape(shapes: list[Shape], _attrs) -> Shape:
    a, b = shapes
    if not a or not b:
        raise ShapeError(f"matmul of {text(a)} and {text(b)}: an operand is a scalar; use *")
    if len(a) > 2 or len(b) > 2:
        raise ShapeError(f"matmul of {text(a)} and {text(b)}: only 1-D and 2-D operands")
    inner_a, inner_b = a[-1], b[0] if len(b) == 1 else b[-2]
    if inner_a != inner_b:
        raise ShapeError(
            f"matmul of {text(a)} and {text(b)}: inner dimensions {inner_a} and {inner_b} differ"
        )
    return a[:-1] + b[:-2] + b[-1:] if len(b) == 2 else a[:-1]


def _reduced(shapes: list[Shape], axes: tuple[int, ...]) -> Shape:
    return tuple(d for k, d in enumerate(shapes[0]) if k not in axes)


def _target(shapes: list[Shape], shape: Shape) -> Shape:
    if _size(shapes[0]) != _size(shape):
        raise ShapeError(f"cannot reshape {text(shapes[0])} to {text(shape)}: sizes differ")
    return shape


def _size(shape: Shape) -> tuple:
    """A shape's element count as (product of its sizes, its dimension names sorted)."""
    known, names = 1, []
    for d in shape:
        if isinstance(d, int):
            known *= d
        else:
            names.append(d)
    return known, sorted(names)


def _broadcast_to(shapes: list[Shape], shape: Shape) -> Shape:
    if broadcast([shapes[0], shape], "broadcast_to") != shape:
        raise ShapeError(f"cannot broadcast {text(shapes[0])} to {text(shape)}")
    return shape


def _sum_to(shapes: list[Shape], shape: Shape) -> Shape:
    if broadcast([shapes[0], shape], "sum_to") != shapes[0]:
        raise ShapeError(f"cannot sum {text(shapes[0])} to {text(shape)}")
    return shape


# ----------------------------------------------------------------------------- VJP rules
def _matmul_vjp(g, i: int, G: int, k: int) -> int:
    a, b = g.nodes[i].args
    ra, rb = len(g.shapes[a]), len(g.shapes[b])
    if ra == 1 and rb == 1:  # a . b: a scalar; each side gets G times the other
        return g.add("mul", G, b if k == 0 else a)
    if k == 0:
        if rb == 1:  # A (m, n) @ x (n,): dA = outer(G, x)
            return g.add("mul", g.column(G), g.row(b))
        return g.add("matmul", G, g.add("transpose", b))  # dA = G @ B^T (G @ B for a vector a)
    if ra == 1:  # x (n,) @ B (n, k): dB = outer(x, G)
        return g.add("mul", g.column(a), g.row(G))
    return g.add("matmul", g.add("transpose", a), G)  # dB = A^T @ G


def _transpose_vjp(g, i: int, G: int, k: int) -> int:
    return g.add("transpose", G)


def _sum_vjp(g, i: int, G: int, k: int) -> int:
    a = g.nodes[i].args[0]
    return g.add("broadcast_to", g.keepdims(G, g.nodes[i].value, a), attrs=g.shapes[a])


def _extreme_vjp(g, i: int, G: int, k: int) -> int:
    a, axes = g.nodes[i].args[0], g.nodes[i].value
    share = g.add("ties", a, i, attrs=axes)
    return g.fit(g.add("mul", share, g.keepdims(G, axes, a)), g.shapes[a])


def _reshape_vjp(g, i: int, G: int, k: int) -> int:
    a = g.nodes[i].args[0]
    return g.add("reshape", G, attrs=g.shapes[a])


def _broadcast_vjp(g, i: int, G: int, k: int) -> int:
    return g.add("sum_to", G, attrs=g.shapes[g.nodes[i].args[0]])


def _sum_to_vjp(g, i: int, G: int, k: int) -> int:
    return g.add("broadcast_to", G, attrs=g.shapes[g.nodes[i].args[0]])


def _constant(g, i: int, G: int, k: int) -> None:
    return None


# The tensor gates' VJPs: each its own analytic rule, never the derivative of its stable form.
def _logsumexp_vjp(g, i: int, G: int, k: int) -> int:
    a, axes = g.nodes[i].args[0], g.nodes[i].value
    return g.add("mul", g.add("softmax", a, attrs=axes), g.keepdims(G, axes, a))


def _softmax_vjp(g, i: int, G: int, k: int) -> int:
    a, axes = g.nodes[i].args[0], g.nodes[i].value  # dx = y * (G - sum(G * y))
    inner = g.keepdims(g.add("sum", g.add("mul", G, i), attrs=axes), axes, a)
    return g.add("mul", i, g.add("sub", G, inner))


def _log_softmax_vjp(g, i: int, G: int, k: int) -> int:
    a, axes = g.nodes[i].args[0], g.nodes[i].value  # dx = G - softmax(x) * sum(G)
    total = g.keepdims(g.add("sum", G, attrs=axes), axes, a)
    return g.add("sub", G, g.add("mul", g.add("softmax", a, attrs=axes), total))


def _sumsq_vjp(g, i: int, G: int, k: int) -> int:
    a, axes = g.nodes[i].args[0], g.nodes[i].value
    return g.add("mul", g.add("mul", g.const(2.0), a), g.keepdims(G, axes, a))


def _same(shapes: list[Shape], _attrs) -> Shape:
    return shapes[0]


# ---- take_along_axis: integer labels into a tensor (softmax cross-entropy with integer targets)
def _take_shape(shapes: list[Shape], axes: tuple[int, ...]) -> Shape:
    a, idx = shapes
    (axis,) = axes
    if len(idx) != len(a):
        raise ShapeError(
            f"take_along_axis of {text(a)} by indices {text(idx)}: the indices need the same "
            f"rank as the array ({len(a)}), e.g. labels of shape (B, 1) for scores (B, C)"
        )
    for k, (d, e) in enumerate(zip(a, idx)):
        if k != axis and d != e:
            raise ShapeError(
                f"take_along_axis of {text(a)} by indices {text(idx)}: axis {k} differs "
                f"({d} vs {e}); only axis {axis} may"
            )
    return idx


def _take_vjp(g, i: int, G: int, k: int) -> int | None:
    if k == 1:
        return None  # indices are piecewise constant: no gradient
    a, idx = g.nodes[i].args
    (axis,) = g.nodes[i].value
    return g.add("scatter_along_axis", G, idx, attrs=(axis, g.shapes[a]))


def _scatter_shape(shapes: list[Shape], attrs: tuple[int, Shape]) -> Shape:
    return attrs[1]


def _scatter_vjp(g, i: int, G: int, k: int) -> int | None:
    if k == 1:
        return None
    idx, (axis, _) = g.nodes[i].args[1], g.nodes[i].value
    return g.add("take_along_axis", G, idx, attrs=(axis,))


# fmt: off
_TABLE = [
    TensorOp("matmul", 2, _matmul_shape, _matmul_vjp, "{a} @ {b}", "{a} @ {b}"),
    TensorOp("transpose", 1, lambda s, _: s[0][::-1], _transpose_vjp, "{a}.T", "{a}.T"),
    TensorOp("sum", 1, _reduced, _sum_vjp, "sum({a}, axis={attrs})",
             "np.add.reduce({a}, axis={attrs})"),  # np.sum without its wrapper
    TensorOp("max", 1, _reduced, _extreme_vjp, "max({a}, axis={attrs})",
             "np.max({a}, axis={attrs})"),
    TensorOp("min", 1, _reduced, _extreme_vjp, "min({a}, axis={attrs})",
             "np.min({a}, axis={attrs})"),
    # The share of the upstream gradient each element of a gets from max/min reduction b: 1 / count
    # where a equals b, 0 elsewhere (the tie rule above). Piecewise constant: no gradient of its own.
    TensorOp("ties", 2, lambda s, _: s[0], _constant, "ties({a}, {b}, axis={attrs})",
             "ties({a}, {b}, {attrs})"),
    TensorOp("reshape", 1, _target, _reshape_vjp, "reshape({a}, {attrs})",
             "np.reshape({a}, {attrs})"),
    TensorOp("broadcast_to", 1, _broadcast_to, _broadcast_vjp, "broadcast_to({a}, {attrs})",
             "np.broadcast_to({a}, {attrs})"),
    TensorOp("sum_to", 1, _sum_to, _sum_to_vjp, "sum_to({a}, {attrs})", "sum_to({a}, {attrs})"),
    # ---- tensor gates (runtime/reductions.py computes them stably: max-shifted, -inf safe)
    TensorOp("logsumexp", 1, _reduced, _logsumexp_vjp, "logsumexp({a}, axis={attrs})",
             "logsumexp({a}, {attrs})",
             overflow="log(sum(exp(x))) overflows to inf once x > 709; logsumexp shifts by max(x)"),
    TensorOp("softmax", 1, _same, _softmax_vjp, "softmax({a}, axis={attrs})",
             "softmax({a}, {attrs})",
             overflow="exp(x) / sum(exp(x)) is nan once x > 709; softmax shifts by max(x)"),
    TensorOp("log_softmax", 1, _same, _log_softmax_vjp, "log_softmax({a}, axis={attrs})",
             "log_softmax({a}, {attrs})",
             overflow="log(softmax(x)) is -inf where softmax underflows; log_softmax is x - lse(x)"),
    TensorOp("sumsq", 1, _reduced, _sumsq_vjp, "sumsq({a}, axis={attrs})", "sumsq({a}, {attrs})",
             overflow="no overflow risk: sumsq saves the squared temporary and its pass"),
    # ---- integer indices (float64 arrays of integral values, as every input is), NumPy's rules
    TensorOp("take_along_axis", 2, _take_shape, _take_vjp, "take_along_axis({a}, {b}, axis={attrs})",
             "take_along_axis({a}, {b}, {attrs})"),
    # take_along_axis's adjoint: {a} added into zeros of the given shape at the indices {b}.
    TensorOp("scatter_along_axis", 2, _scatter_shape, _scatter_vjp,
             "scatter_along_axis({a}, {b}, axis={attrs})", "scatter_along_axis({a}, {b}, {attrs})"),
]
# fmt: on

TENSOR_OPS: dict[str, TensorOp] = {op.name: op for op in _TABLE}

#: Tensor ops whose attribute is a tuple of axes (the others' is a target shape).
AXES_OPS = (
    "sum", "max", "min", "ties", "logsumexp", "softmax", "log_softmax", "sumsq", "take_along_axis"
)  # fmt: skip

#: ``scatter_along_axis``'s attribute is ``(axis, shape)``: printed ``1, shape=(B, C)``.
AXIS_SHAPE_OPS = ("scatter_along_axis",)

#: The tensor gates, by name.
TENSOR_GATES = tuple(op.name for op in _TABLE if op.is_gate)

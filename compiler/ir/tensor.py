"""The tensor IR: the elementwise ``Graph`` with a shape on every node, and the tensor ops.

Elementwise ops (``compiler.ir.registry``) broadcast like NumPy; the ops of
``compiler.ir.tensor_ops`` (matmul, transpose, reductions, reshapes) carry their own shape rules
and VJPs. Shapes are checked as nodes are added, so a mismatch is reported where it is written.

>>> g = TensorGraph({"W": ("n", "n"), "x": ("n",)})
>>> q = g.add("matmul", g.input("W"), g.input("x"))
>>> g.outputs = [g.add("sum", g.add("mul", q, q), attrs=(0,))]
>>> print(g)
t0 = W @ x  # (n,)
t1 = t0 * t0  # (n,)
t2 = sum(t1, axis=0)  # ()
return t2
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from compiler.errors import ShapeError
from compiler.ir import shapes as sh
from compiler.ir.graph import CONST, INPUT, LEAVES, SEED, Graph, Node, copy_nodes
from compiler.ir.registry import OPS
from compiler.ir.shapes import Shape
from compiler.ir.tensor_ops import AXES_OPS, AXIS_SHAPE_OPS, TENSOR_OPS

DIM = "dim"  # a leaf: the size of a named dimension, bound at call time (for mean)
TENSOR_LEAVES = (*LEAVES, DIM)


class TensorGraph(Graph):
    """A Graph whose nodes have shapes; ``declared`` gives each input's shape (default scalar)."""

    def __init__(self, declared: Mapping[str, Shape] | None = None) -> None:
        super().__init__()
        self.declared: dict[str, Shape] = dict(declared or {})
        self.shapes: list[Shape] = []
        self.seed_shape: Shape = ()

    @property
    def dim_names(self) -> set[str]:
        """The dimension names the declared shapes use."""
        return {d for shape in self.declared.values() for d in shape if isinstance(d, str)}

    # ----------------------------------------------------------------- building
    def dim(self, name: str) -> int:
        """The size of dimension ``name`` as a scalar node."""
        key = (DIM, name)
        if key not in self._index:
            self._index[key] = self._append(Node(DIM, (), name), f"size_{name}")
        return self._index[key]

    def size(self, shape: Shape) -> int:
        """The number of elements of ``shape`` as a scalar node (a constant when all are ints)."""
        known, names = 1.0, []
        for d in shape:
            if isinstance(d, int):
                known *= d
            else:
                names.append(d)
        node = self.const(known)
        for name in names:
            node = self.add("mul", node, self.dim(name))
        return node

    def add(self, op: str, *args: int, attrs: Any = None, name: str | None = None) -> int:
        """Add ``op(*args)``: an elementwise op (broadcasting) or a tensor op with ``attrs``."""
        if op in OPS:
            what = f"{op} of " + ", ".join(self.names[a] for a in args)
            shape = sh.broadcast([self.shapes[a] for a in args], what)
            args = self._through_broadcasts(args, shape)
            node = super().add(op, *args, name=name)
            # A simplification may drop a broadcast (x ** 0 -> 1): keep the shape NumPy gives.
            return (
                node if self.shapes[node] == shape else self.add("broadcast_to", node, attrs=shape)
            )
        spec = TENSOR_OPS.get(op)
        if spec is None:
            raise ShapeError(f"unknown op {op!r}")
        if len(args) != spec.arity:
            raise TypeError(f"{op} takes {spec.arity} operand(s), got {len(args)}")
        if op in ("reshape", "broadcast_to", "sum_to") and self.shapes[args[0]] == attrs:
            return args[0]
        if op == "transpose" and len(self.shapes[args[0]]) < 2:
            return args[0]
        if op in ("sum", "max", "min", "logsumexp") and not attrs:
            return args[0]  # reducing over no axes
        key = (op, args, attrs)
        index = self._index.get(key)
        if index is None:
            try:
                spec.shape([self.shapes[a] for a in args], attrs)
            except ShapeError as e:
                names = ", ".join(self.names[a] for a in args)
                raise ShapeError(f"{e} (operands {names})") from None
            index = self._index[key] = self._append(
                Node(op, args, attrs), name or self._next_name()
            )
        return index

    def _through_broadcasts(self, args: tuple[int, ...], shape: Shape) -> tuple[int, ...]:
        """Operands with explicit broadcasts removed where implicit broadcasting gives ``shape``:
        ``seed * t`` rather than ``broadcast_to(reshape(seed, (1, 1)), (n, m)) * t``."""
        out = list(args)
        for k, a in enumerate(args):
            source = a
            while self._broadcasts(source):
                source = self.nodes[source].args[0]
            trial = out[:k] + [source] + out[k + 1 :]
            if source != a and sh.broadcast([self.shapes[b] for b in trial]) == shape:
                out[k] = source
        return tuple(out)

    def _broadcasts(self, i: int) -> bool:
        """Whether node ``i`` only broadcasts its operand: a broadcast_to, or a reshape that adds
        or drops leading 1s (which NumPy's right-aligned broadcasting does by itself)."""
        node = self.nodes[i]
        if node.op == "broadcast_to":
            return True
        if node.op != "reshape":
            return False
        before, after = self.shapes[node.args[0]], self.shapes[i]
        return _strip_ones(before) == _strip_ones(after)

    def _append(self, node: Node, name: str) -> int:
        self.shapes.append(self._shape_of(node))
        return super()._append(node, name)

    def _shape_of(self, node: Node) -> Shape:
        if node.op == INPUT:
            return self.declared.get(node.value, ())
        if node.op in (CONST, DIM):
            return ()
        if node.op == SEED:
            return self.seed_shape
        if node.op in OPS:
            return sh.broadcast([self.shapes[a] for a in node.args])
        spec = TENSOR_OPS[node.op]
        return spec.shape([self.shapes[a] for a in node.args], node.value)

    def copy_node(self, node: Node, args: list[int]) -> int:
        if node.op == DIM:
            return self.dim(node.value)
        if node.op in TENSOR_OPS:
            return self.add(node.op, *args, attrs=node.value)
        return super().copy_node(node, args)

    def empty_like(self) -> TensorGraph:
        out = TensorGraph(self.declared)
        out.seed_shape = self.seed_shape
        return out

    # ----------------------------------------------------------------- helpers for VJPs
    def keepdims(self, node: int, axes: tuple[int, ...], like: int) -> int:
        """``node`` (reduced over ``axes`` of ``like``) reshaped with those axes kept as 1."""
        shape = tuple(1 if k in axes else d for k, d in enumerate(self.shapes[like]))
        return self.add("reshape", node, attrs=shape)

    def column(self, node: int) -> int:
        """A vector (n,) as a column (n, 1)."""
        return self.add("reshape", node, attrs=(*self.shapes[node], 1))

    def row(self, node: int) -> int:
        """A vector (n,) as a row (1, n)."""
        return self.add("reshape", node, attrs=(1, *self.shapes[node]))

    def fit(self, node: int, shape: Shape) -> int:
        """``node`` brought to ``shape``: summed over broadcast axes, or broadcast up to it."""
        have = self.shapes[node]
        if have == shape:
            return node
        if sh.broadcast([have, shape], "a gradient") == shape:
            return self.add("broadcast_to", node, attrs=shape)
        return self.add("sum_to", node, attrs=shape)

    # ----------------------------------------------------------------- building for users
    def reduce(self, op: str, node: int, axis: Any = None, keepdims: bool = False) -> int:
        """``sum``, ``mean``, ``max``, ``min``, ``logsumexp`` or ``sumsq`` over ``axis`` (None:
        all), as NumPy's (and SciPy's logsumexp)."""
        what = f"{op}({self.names[node]})"
        axes = sh.normalize_axes(axis, len(self.shapes[node]), what)
        if op == "mean":
            count = self.size(tuple(self.shapes[node][k] for k in axes))
            result = self.add("div", self.add("sum", node, attrs=axes), count)
        elif op == "sumsq" and not axes:
            result = self.add("mul", node, node)
        else:
            result = self.add(op, node, attrs=axes)
        return self.keepdims(result, axes, node) if keepdims else result

    def matmul(self, a: int, b: int) -> int:
        """``a @ b`` for 1-D and 2-D operands; ``dot`` of a scalar is a product, as NumPy's."""
        if not self.shapes[a] or not self.shapes[b]:
            what = self.names[a] if not self.shapes[a] else self.names[b]
            raise ShapeError(f"matmul: '{what}' is a scalar; use * (or dot) for scalars")
        return self.add("matmul", a, b)

    # ----------------------------------------------------------------- reading
    def line(self, i: int) -> str:
        node = self.nodes[i]
        if node.op in OPS:
            return f"{super().line(i)}  # {sh.text(self.shapes[i])}"
        operands = dict(zip("abc", (self.operand_text(a) for a in node.args)))
        body = self.template(i).format(**operands)
        return f"{self.names[i]} = {body}  # {sh.text(self.shapes[i])}"

    def op_nodes(self):
        return (i for i, n in enumerate(self.nodes) if n.op not in TENSOR_LEAVES)

    def template(self, i: int) -> str:
        node = self.nodes[i]
        if node.op in OPS:
            return super().template(i)
        return TENSOR_OPS[node.op].listing.replace("{attrs}", attrs_text(node.op, node.value))

    def leaf_text(self, i: int) -> str:
        node = self.nodes[i]
        return node.value if node.op == DIM else super().leaf_text(i)  # n: the size of n

    def key(self) -> str:
        h = hashlib.sha256(super().key().encode())
        h.update(repr(sorted(self.declared.items())).encode())
        h.update(repr(self.seed_shape).encode())
        return h.hexdigest()

    def to_sympy(self, output: int = 0):
        raise NotImplementedError("a tensor graph has no single SymPy expression")


def _strip_ones(shape: Shape) -> Shape:
    k = 0
    while k < len(shape) and shape[k] == 1:
        k += 1
    return shape[k:]


def attrs_text(op: str, attrs: Any) -> str:
    """An attribute as NumPy writes it: ``1`` or ``(0, 1)`` for axes, ``(n, 1)`` for a shape."""
    if attrs is None:
        return ""
    if op in AXES_OPS:
        return str(attrs[0]) if len(attrs) == 1 else str(tuple(attrs))
    if op in AXIS_SHAPE_OPS:
        return f"{attrs[0]}, shape={sh.text(attrs[1])}"
    return sh.text(attrs)


def from_elementwise(graph: Graph, declared: Mapping[str, Shape]) -> TensorGraph:
    """An elementwise graph (from SymPy, say) on shaped inputs: every op broadcasts."""
    out = TensorGraph(declared)
    for name in graph.inputs:
        out.input(name)
    mapping = copy_nodes(graph, out, {})
    out.outputs = [mapping[o] for o in graph.outputs]
    return out

"""The tensor IR, its adjoint and its code generation, read as structures (not numbers).

Numbers are checked against the lecture, hand-written NumPy, SymPy and finite differences in
test_tensor_lecture.py and test_tensor_oracle.py; these tests pin the shapes, the no-Jacobian
guarantee and the loop fusion that make the kernels fast.
"""

from __future__ import annotations

import re

import pytest

import compiler
from compiler.codegen.tensor_source import Region, schedule
from compiler.ir import shapes as sh
from compiler.ir.tensor import TensorGraph
from compiler.passes.adjoint import adjoint

EX5 = "sum((1/(1+exp(-(x @ w1))) @ w2 - y)**2)"
EX5_SHAPES = {"x": ("N", "D"), "w1": ("D", "H"), "w2": ("H", "C"), "y": ("N", "C")}


@pytest.mark.parametrize(
    "shapes, expected",
    [
        ([("b", "d"), ("d",)], ("b", "d")),
        ([("b", 1), ("b", "c")], ("b", "c")),
        ([(), (3, 4)], (3, 4)),
        ([(1, "n"), ("m", 1)], ("m", "n")),
        ([(5,), (1,)], (5,)),
    ],
)
def test_broadcast_follows_numpy_with_names(shapes, expected):
    assert sh.broadcast(shapes) == expected


@pytest.mark.parametrize("shapes", [[(3,), (4,)], [("n",), ("m",)], [("n",), (3,)]])
def test_broadcast_refuses_what_may_not_fit(shapes):
    with pytest.raises(compiler.ShapeError, match="cannot broadcast"):
        sh.broadcast(shapes)


def test_every_node_has_its_numpy_shape():
    g = compiler.trace("sum(A @ B.T, axis=1, keepdims=True) * c", shapes={
        "A": ("n", "k"), "B": ("m", "k"), "c": ("m",)})  # fmt: skip
    shapes = {g.names[i]: g.shapes[i] for i in g.op_nodes()}
    assert list(shapes.values()) == [("m", "k")[::-1], ("n", "m"), ("n",), ("n", 1), ("n", "m")]


def test_adjoint_never_builds_a_jacobian():
    """Every node of the adjoint is a matrix at most, like the values it differentiates: a
    Jacobian of a matrix by a matrix would have rank 4."""
    adj = adjoint(compiler.trace(EX5, shapes=EX5_SHAPES), ["w1", "w2"])
    assert max(len(s) for s in adj.shapes) == 2


def test_gradients_have_their_inputs_shapes():
    g = compiler.trace("sum(maximum(0, X @ W + b) * v)", shapes={
        "X": ("B", "D"), "W": ("D", "H"), "b": ("H",), "v": (1, "H")})  # fmt: skip
    adj = adjoint(g)
    for name, out in zip(adj.wrt, adj.outputs[1:]):
        assert adj.shapes[out] == g.declared.get(name, ())


def test_explicit_broadcasts_are_looked_through():
    """``seed * 2 * t`` is written, not ``broadcast_to(reshape(seed, (1, 1)), (n, m)) * ...``."""
    adj = adjoint(compiler.trace("sum(X * X)", shapes={"X": ("n", "m")}))
    live = adj.reachable(adj.outputs)
    used = [adj.nodes[i].op for i in adj.backward_nodes() if live[i]]
    assert "broadcast_to" not in used and "reshape" not in used


def test_example_5_runs_in_three_fused_loops_and_the_lectures_five_matmuls():
    """Forward and backward elementwise nodes of one shape share loops: sigmoid and its local
    gradient in one, the residual, its square and 2*(y_pred - y) in another, d_h * local in a
    third. The matmuls are the lecture's: two forward, three backward (grad_w2, grad_h, grad_w1)."""
    adj = adjoint(compiler.trace(EX5, shapes=EX5_SHAPES), ["w1", "w2"])
    steps = schedule(adj, list(adj.outputs), "vg")
    loops = [s for s in steps if isinstance(s, Region)]
    matmuls = [s for s in steps if not isinstance(s, Region) and adj.nodes[s].op == "matmul"]
    assert len(loops) == 3 and len(matmuls) == 5


def test_a_region_never_needs_itself_through_a_matmul():
    adj = adjoint(compiler.trace("sum(exp(A @ exp(A)))", shapes={"A": ("n", "n")}))
    steps = schedule(adj, list(adj.outputs), "vg")
    done: set[int] = set()
    for s in steps:
        nodes = s.nodes if isinstance(s, Region) else [s]
        inside = set(nodes)
        for i in nodes:
            for a in adj.nodes[i].args:
                assert a in done or a in inside or adj.nodes[a].op in ("input", "const", "seed")
        done |= inside


def test_generated_source_reads_like_the_lecture():
    k = compiler.compile_gradient(EX5, shapes=EX5_SHAPES, wrt=["w1", "w2"], fuse=False)
    src = k.source
    assert re.search(r"^    d_w2 = \w+ @ d_t\d+$", src, re.M)  # h.T @ grad_y_pred
    assert "np.empty" in src and "for i0 in range(size_N):" in src
    assert "float64" not in src  # no types spelled out: Numba infers them


def test_tensor_graph_listing_shows_shapes():
    g = TensorGraph({"W": ("n", "m"), "x": ("m",)})
    g.outputs = [g.add("matmul", g.input("W"), g.input("x"))]
    assert str(g) == "t0 = W @ x  # (n,)\nreturn t0"


def test_a_dimension_name_in_text_is_its_size():
    g = compiler.trace("sum(x) / n", shapes={"x": ("n",)})
    assert "size_n" in str(g) and g.inputs == ("x",)

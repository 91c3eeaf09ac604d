"""The listings say what they mean (issue 13, item 7), for the lecture's worked examples.

Each expected listing is written by hand from the lecture's gate rules (shared/LECTURE.md): add
distributes the upstream gradient, mul swaps, max routes it to the larger input, the sigmoid gate's
local gradient is σ(x)σ(−x), and ‖W·x‖²'s is 2q. Every returned gradient is named after its input;
the last lines say which inputs and forward values the backward reads and what a vjp keeps.
"""

from __future__ import annotations

import numpy as np
import pytest

import compiler
from compiler.frontend.text import parse
from compiler.passes.adjoint import adjoint


def _adjoint(text: str, **kwargs) -> str:
    return str(compiler.compile_gradient(text, mode="instant", **kwargs).adjoint)


EXAMPLE_1 = """\
# forward
t0 = x + y
t1 = t0 * z
# backward (seed = upstream gradient)
d_t0 = seed * z
d_z = seed * t0
d_x = d_t0
d_y = d_t0
return t1, d_x, d_y, d_z
# the backward reads: z, t0
# a vjp's forward keeps: t0"""

EXAMPLE_2_SIGMOID_GATE = """\
# forward
t0 = w0 * x0
t1 = w1 * x1
t2 = t0 + t1
t3 = t2 + w2
t4 = sigmoid(t3)  # fused: 1 / (1 + exp(-t3))
# backward (seed = upstream gradient)
b1 = -t3
b2 = sigmoid(b1)
b3 = t4 * b2
d_t3 = seed * b3
d_w1 = d_t3 * x1
d_x1 = d_t3 * w1
d_w0 = d_t3 * x0
d_x0 = d_t3 * w0
d_w2 = d_t3
return t4, d_w0, d_x0, d_w1, d_x1, d_w2
# the backward reads: w0, x0, w1, x1, t3, t4
# a vjp's forward keeps: b3"""

EXAMPLE_3 = """\
# forward
t0 = maximum(z, w)
# backward (seed = upstream gradient)
b1 = z - w
b3 = heaviside(b1, 0.5)
d_z = seed * b3
b5 = w - z
b6 = heaviside(b5, 0.5)
d_w = seed * b6
return t0, d_z, d_w
# the backward reads: z, w
# a vjp's forward keeps: nothing"""

MAX_TIMES_Z = """\
# forward
t0 = maximum(x, y)
t1 = t0 * z
# backward (seed = upstream gradient)
d_t0 = seed * z
d_z = seed * t0
b3 = x - y
b5 = heaviside(b3, 0.5)
d_x = d_t0 * b5
b7 = y - x
b8 = heaviside(b7, 0.5)
d_y = d_t0 * b8
return t1, d_x, d_y, d_z
# the backward reads: x, y, z, t0
# a vjp's forward keeps: t0"""

EXAMPLE_4 = """\
# forward
t0 = W @ x  # (2,)
t1 = t0 ** 2  # (2,)
t2 = sum(t1, axis=0)  # ()
# backward (seed = upstream gradient)
b5 = 2 * t0  # (2,)
d_t0 = seed * b5  # (2,)
b7 = reshape(d_t0, (2, 1))  # (2, 1)
d_W = b7 * x  # (2, 2)
b10 = W.T  # (2, 2)
d_x = b10 @ d_t0  # (2,)
return t2, d_W, d_x
# the backward reads: W, x, t0
# a vjp's forward keeps: b5"""

ADD_ONLY = """\
# forward
t0 = x + y
# backward (seed = upstream gradient)
d_x = seed
d_y = seed
return t0, d_x, d_y
# the backward reads: nothing
# a vjp's forward keeps: nothing"""


@pytest.mark.parametrize(
    "text, kwargs, expected",
    [
        ("(x + y) * z", {}, EXAMPLE_1),
        ("1/(1+exp(-(w0*x0+w1*x1+w2)))", {}, EXAMPLE_2_SIGMOID_GATE),
        ("maximum(z, w)", {}, EXAMPLE_3),
        ("maximum(x, y) * z", {}, MAX_TIMES_Z),
        ("sum((W @ x)**2)", {"shapes": {"W": (2, 2), "x": (2,)}, "fuse": False}, EXAMPLE_4),
        ("x + y", {}, ADD_ONLY),
    ],
    ids=["ex1", "ex2-sigmoid", "ex3-max", "max-times-z", "ex4-norm", "add"],
)
def test_the_adjoint_listing(text, kwargs, expected):
    assert _adjoint(text, **kwargs) == expected


def test_the_forward_listing_of_example_1():
    assert str(compiler.compile_gradient("(x + y) * z", mode="instant").graph) == (
        "t0 = x + y\nt1 = t0 * z\nreturn t1"
    )


def test_every_returned_gradient_is_named_after_its_input():
    for text in ("(x + y) * z", "x * y + x", "x", "sin(x) + 0 * y", "maximum(x, y) * z"):
        adj = adjoint(parse(text))
        returned = str(adj).splitlines()[-3]
        assert returned.split(", ")[1:] == [f"d_{w}" for w in adj.wrt], text


def test_a_gradient_without_dependence_is_named_too():
    adj = adjoint(parse("x * 2"), wrt=["x"])
    g = parse("x")
    g.input("y")  # y is declared but unused: its gradient is the constant 0
    zero = adjoint(g, wrt=["y"])
    assert "d_y = 0\nreturn x, d_y" in str(zero)
    assert str(adj).splitlines()[-3] == "return t0, d_x"


def test_saved_gives_names_and_saved_nodes_indices():
    k = compiler.compile_gradient("maximum(x, y) * z", mode="instant")
    adj = k.adjoint
    assert adj.saved == ("t0",)
    assert tuple(adj.names[i] for i in adj.saved_nodes) == adj.saved
    assert adj.reads == ("x", "y", "z", "t0")
    # the vjp still keeps exactly those values and its pullback is right
    value, pullback = k.vjp(x=1.0, y=3.0, z=2.0)
    grads = pullback(1.0)
    assert (value, grads["x"], grads["y"], grads["z"]) == (6.0, 0.0, 2.0, 3.0)


def test_the_tensor_vjp_keeps_its_saved_values_by_index():
    k = compiler.compile_gradient(
        "sum((W @ x)**2)", shapes={"W": (2, 2), "x": (2,)}, mode="instant"
    )
    W, x = np.array([[0.1, 0.5], [-0.3, 0.8]]), np.array([0.2, 0.4])
    value, pullback = k.vjp(W=W, x=x)
    grads = pullback()
    assert value == pytest.approx(0.116, abs=1e-15)
    np.testing.assert_allclose(grads["W"], [[0.088, 0.176], [0.104, 0.208]], atol=1e-15)
    np.testing.assert_allclose(grads["x"], [-0.112, 0.636], atol=1e-15)

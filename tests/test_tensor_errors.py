"""Tensor programs that cannot work, and hostile values at call time.

At compile time, shapes that cannot work raise ``compiler.ShapeError`` (an ``InputError``) whose
message names the operands' dimensions; a tensor op in text compiled without ``shapes=`` raises a
``SymgradError`` that mentions ``shapes``. At call time, an array whose rank or fixed dimension
does not fit its declaration, or a dimension name bound to two sizes, raises ``InputError`` naming
the input(s) and the dimension. Hostile values (strings, ragged lists, complex numbers, None) give
``InputError`` too, never an exception from NumPy or Numba.

Input and dimension names are long and distinctive, so that finding them in a message means the
message names them.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import compiler
from compiler import ops


def compile_error(source, shapes=None, error=compiler.ShapeError, **kwargs) -> str:
    with pytest.raises(error) as info:
        compiler.compile_gradient(source, shapes=shapes, **kwargs)
    assert isinstance(info.value, compiler.SymgradError)
    return str(info.value)


def test_shape_error_is_an_input_error():
    assert issubclass(compiler.ShapeError, compiler.InputError)
    assert issubclass(compiler.InputError, compiler.SymgradError)


# --------------------------------------------------------------------------- compile time
def test_matmul_inner_dimensions_that_differ_name_the_dims():
    shapes = {"weights": ("rows", "inner"), "features": ("other",)}
    message = compile_error("weights @ features", shapes)
    assert "inner" in message and "other" in message, message
    message = compile_error(lambda weights, features: weights @ features, shapes)
    assert "inner" in message and "other" in message, message


def test_matmul_fixed_inner_dimensions_that_differ():
    message = compile_error("sum(weights @ features)", {"weights": (2, 3), "features": (4,)})
    assert "3" in message and "4" in message, message
    message = compile_error("sum(dot(left, right))", {"left": (5, 7), "right": (6, 2)})
    assert "7" in message and "6" in message, message
    message = compile_error("left @ right", {"left": ("alpha",), "right": ("beta",)})
    assert "alpha" in message and "beta" in message, message


def test_broadcasting_3_with_4():
    message = compile_error("sum(first + second)", {"first": (3,), "second": (4,)})
    assert "3" in message and "4" in message, message
    message = compile_error("sum(first * second)", {"first": (2, 3), "second": (2, 4)})
    assert "3" in message and "4" in message, message
    message = compile_error(
        lambda first, second: ops.sum(first - second), {"first": (3,), "second": (4,)}
    )
    assert "3" in message and "4" in message, message


@pytest.mark.parametrize(
    "text",
    [
        "sum(matrix, axis=2)",
        "sum(matrix, axis=-3)",
        "mean(matrix, axis=5)",
        "max(matrix, axis=2)",
        "min(matrix, axis=-3, keepdims=True)",
        "sum(matrix, axis=(0, 2))",
    ],
)
def test_axis_out_of_range(text):
    message = compile_error(text, {"matrix": ("rows", "cols")})
    assert "axis" in message, message


def test_axis_out_of_range_in_a_callable():
    message = compile_error(lambda vec: ops.sum(vec, axis=1), {"vec": ("n",)})
    assert "axis" in message, message


@pytest.mark.parametrize(
    "text,shapes",
    [
        ("sum(scalarish, axis=1)", {"scalarish": ()}),
        ("sum(scalarish, axis=0)", {"scalarish": ()}),
        ("scalarish @ other", {"scalarish": (), "other": ()}),
        ("sum(matrix @ scalarish)", {"matrix": ("n", "n")}),  # scalarish omitted: a scalar
        ("max(scalarish, axis=0) + sum(other)", {"other": ("n",)}),
    ],
)
def test_tensor_op_on_an_input_declared_scalar(text, shapes):
    message = compile_error(text, shapes)
    assert message  # a message, and a ShapeError (checked by compile_error)


@pytest.mark.parametrize(
    "text",
    ["sum(x, axis=1)", "W @ x", "sum(dot(W, x))", "max(x, axis=0)", "sum((W @ x)**2)"],
)
def test_tensor_op_in_text_without_shapes_mentions_shapes(text):
    message = compile_error(text, None, error=compiler.SymgradError)
    assert "shapes" in message, message


# --------------------------------------------------------------------------- call time
@functools.cache
def matvec_kernel():
    return compiler.compile_gradient(
        "sum((weights @ features)**2)",
        shapes={"weights": ("hidden", "inner"), "features": ("inner",)},
    )


@functools.cache
def fixed_kernel():
    return compiler.compile_gradient(
        "sum(tanh(batch + bias))", shapes={"batch": ("rows", 3), "bias": (3,)}
    )


def call_error(call) -> str:
    with pytest.raises(compiler.InputError) as info:
        call()
    return str(info.value)


W = np.ones((2, 3))
X = np.ones(3)


def test_valid_call_for_reference():
    value, grads = matvec_kernel().value_and_grad(weights=W, features=X)
    assert value == pytest.approx(18.0)
    np.testing.assert_allclose(grads["weights"], np.full((2, 3), 6.0))
    np.testing.assert_allclose(grads["features"], np.full(3, 12.0))


@pytest.mark.parametrize(
    "kwargs,culprit",
    [
        ({"weights": W, "features": np.ones((3, 1))}, "features"),  # rank 2 for rank 1
        ({"weights": W, "features": 1.0}, "features"),  # a scalar for a vector
        ({"weights": np.ones(3), "features": X}, "weights"),  # rank 1 for rank 2
        ({"weights": np.ones((2, 3, 1)), "features": X}, "weights"),  # rank 3
        ({"weights": 2.0, "features": X}, "weights"),
    ],
)
def test_wrong_rank_names_the_input(kwargs, culprit):
    k = matvec_kernel()
    for call in (k, k.value_and_grad, k.grad, k.vjp):
        message = call_error(lambda call=call: call(**kwargs))
        assert culprit in message, message


def test_fixed_dimension_mismatch_names_the_input():
    k = fixed_kernel()
    assert k(batch=np.zeros((5, 3)), bias=np.zeros(3)) == pytest.approx(0.0)
    message = call_error(lambda: k(batch=np.zeros((5, 4)), bias=np.zeros(3)))
    assert "batch" in message, message
    message = call_error(lambda: k.value_and_grad(batch=np.zeros((5, 3)), bias=np.zeros(2)))
    assert "bias" in message, message


def test_a_dimension_name_with_two_sizes_names_both_inputs_and_the_dim():
    k = matvec_kernel()
    message = call_error(lambda: k.value_and_grad(weights=np.ones((2, 3)), features=np.ones(4)))
    assert "weights" in message and "features" in message and "inner" in message, message
    message = call_error(lambda: k(weights=np.ones((2, 5)), features=np.ones(3)))
    assert "weights" in message and "features" in message and "inner" in message, message


def test_a_dimension_name_with_two_sizes_within_one_input():
    k = compiler.compile_gradient(
        "sum((mat @ vec)**2)", shapes={"mat": ("side", "side"), "vec": ("side",)}
    )
    message = call_error(lambda: k(mat=np.ones((2, 3)), vec=np.ones(3)))
    assert "mat" in message and "side" in message, message


HOSTILE = {
    "string": "abc",
    "string_array": np.array(["1", "2", "3"]),
    "list_of_strings": ["1", "2", "3"],
    "ragged_list": [[1.0, 2.0], [3.0]],
    "complex": np.array([1 + 1j, 2.0, 3.0]),
    "complex_scalar": 1j,
    "none": None,
    "dict": {"a": 1.0},
    "object_array": np.array([object(), object(), object()], dtype=object),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_values_give_input_error(name):
    k = matvec_kernel()
    bad = HOSTILE[name]
    for call in (k, k.value_and_grad, k.grad, k.vjp):
        message = call_error(lambda call=call: call(weights=W, features=bad))
        assert "features" in message, message


def test_hostile_matrix_values():
    k = matvec_kernel()
    for bad in ("matrix", [[1.0, 2.0, 3.0], [4.0, 5.0]], np.ones((2, 3)) * 1j):
        message = call_error(lambda bad=bad: k.value_and_grad(weights=bad, features=X))
        assert "weights" in message, message


def test_missing_and_unknown_inputs():
    k = matvec_kernel()
    message = call_error(lambda: k(weights=W))
    assert "features" in message, message
    message = call_error(lambda: k(weights=W, features=X, stranger=X))
    assert "stranger" in message, message


def test_a_seed_of_the_wrong_shape():
    k = compiler.compile_gradient(
        "weights @ features", shapes={"weights": ("hidden", "inner"), "features": ("inner",)}
    )
    np.testing.assert_allclose(k(weights=W, features=X), [3.0, 3.0])
    with pytest.raises(compiler.InputError):
        k.value_and_grad(weights=W, features=X, seed=np.ones(3))
    with pytest.raises(compiler.InputError):
        k.value_and_grad(weights=W, features=X, seed="abc")
    _, pullback = k.vjp(weights=W, features=X)
    with pytest.raises(compiler.InputError):
        pullback(np.ones((2, 2)))


@pytest.mark.parametrize(
    "text",
    [
        "sum(matrix, axis=1.5)",
        "sum(matrix, axis=other)",
        "sum(matrix, keepdims=2)",
        "sum(matrix, bogus=1)",
        "sum(matrix, axis=(0, 0))",
        "matrix.shape",
        "matrix[0]",
    ],
)
def test_malformed_tensor_text(text):
    message = compile_error(text, {"matrix": ("rows", "cols")}, error=compiler.SymgradError)
    assert message


def test_tensor_op_in_a_callable_without_shapes_mentions_shapes():
    for fn in (lambda W, x: W @ x, lambda x: ops.sum(x, axis=1), lambda x: np.sum(x, axis=0)):
        message = compile_error(fn, None, error=compiler.SymgradError)
        assert "shapes" in message, message


@functools.cache
def empty_max_kernel():
    return compiler.compile_gradient("max(values)", shapes={"values": ("n",)})


def test_max_over_an_empty_axis_is_an_input_error():
    k = empty_max_kernel()
    assert k(values=np.array([1.0, 3.0])) == 3.0  # the kernel has run once
    for call in (k, k.value_and_grad, k.grad, k.vjp):
        message = call_error(lambda call=call: call(values=np.ones(0)))
        assert "values" in message, message


def test_sum_over_an_empty_axis_is_zero():
    """Values follow NumPy: an empty sum is 0, and its gradient is an empty array."""
    k = compiler.compile_gradient("sum(values**2)", shapes={"values": ("n",)})
    value, grads = k.value_and_grad(values=np.ones(0))
    assert value == 0.0
    assert np.shape(grads["values"]) == (0,)

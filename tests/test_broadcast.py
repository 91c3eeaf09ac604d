"""NumPy broadcasting, seeds, ``out=`` buffers, ``vjp``, gradcheck and unusual arrays.

One expression, f(x, y) = x*sin(y) + exp(-x*y), is compiled once; its reference value and partial
derivatives are written out by hand in NumPy below (df/dx = sin y - y e^(-xy),
df/dy = x cos y - x e^(-xy)) and reduced over broadcast axes by hand — never by symgrad.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

import compiler
import runtime
import runtime.policy

SOURCE = "x*sin(y) + exp(-x*y)"


@cache
def K():
    return compiler.compile_gradient(SOURCE)


def f(x, y):
    return x * np.sin(y) + np.exp(-x * y)


def dfdx(x, y):
    return np.sin(y) - y * np.exp(-x * y)


def dfdy(x, y):
    return x * np.cos(y) - x * np.exp(-x * y)


def close(a, b, rtol=1e-13, atol=1e-13):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


RNG = np.random.default_rng(20240607)
X31 = RNG.normal(size=(3, 1))
Y14 = RNG.normal(size=(1, 4))


# ----------------------------------------------------------------------------- scalar + array
def test_scalar_with_array():
    k = K()
    y = np.linspace(-2.0, 2.0, 7)
    value, grads = k.value_and_grad(x=0.7, y=y)
    assert isinstance(value, np.ndarray) and value.dtype == np.float64
    close(value, f(0.7, y))
    assert isinstance(grads["x"], float)  # a scalar's gradient is summed over the elements
    close(grads["x"], np.sum(dfdx(0.7, y)))
    close(grads["y"], dfdy(0.7, y))
    close(k(x=0.7, y=y), f(0.7, y))


def test_array_with_scalar_and_size_one_shapes():
    k = K()
    x = np.linspace(-1.0, 1.0, 5)
    value, grads = k.value_and_grad(x=x, y=np.array([0.3]))
    close(value, f(x, 0.3))
    close(grads["x"], dfdx(x, 0.3))
    assert grads["y"].shape == (1,)  # the gradient keeps the input's shape
    close(grads["y"], [np.sum(dfdy(x, 0.3))])
    # a (1, 1) input raises the output's rank
    value, grads = k.value_and_grad(x=x, y=np.array([[0.3]]))
    assert value.shape == (1, 5)
    close(value, f(x, 0.3)[None, :])
    assert grads["x"].shape == (5,) and grads["y"].shape == (1, 1)
    close(grads["y"], [[np.sum(dfdy(x, 0.3))]])
    # 0-d arrays behave as Python floats
    value, grads = k.value_and_grad(x=np.float64(0.5), y=np.array(0.25))
    assert isinstance(value, float) and isinstance(grads["y"], float)
    close(value, f(0.5, 0.25))
    close(grads["x"], dfdx(0.5, 0.25))


# ----------------------------------------------------------------------------- (3,1) x (1,4)
def test_column_with_row():
    k = K()
    value, grads = k.value_and_grad(x=X31, y=Y14)
    assert value.shape == (3, 4)
    close(value, f(X31, Y14))
    assert grads["x"].shape == (3, 1) and grads["y"].shape == (1, 4)
    close(grads["x"], dfdx(X31, Y14).sum(axis=1, keepdims=True))
    close(grads["y"], dfdy(X31, Y14).sum(axis=0, keepdims=True))
    close(k(X31, Y14), f(X31, Y14))


def test_broadcast_against_full_and_leading_axes():
    k = K()
    x = RNG.normal(size=(2, 3, 4))
    y = RNG.normal(size=(4,))
    value, grads = k.value_and_grad(x=x, y=y)
    close(value, f(x, y))
    close(grads["x"], dfdx(x, y))
    close(grads["y"], dfdy(x, y).sum(axis=(0, 1)))
    y2 = RNG.normal(size=(2, 1, 4))
    value, grads = k.value_and_grad(x=x, y=y2)
    close(grads["y"], dfdy(x, y2).sum(axis=1, keepdims=True))


def test_shapes_that_do_not_broadcast():
    with pytest.raises(runtime.InputError, match=r"broadcast"):
        K().value_and_grad(x=np.zeros(3), y=np.zeros(4))
    with pytest.raises(runtime.InputError):
        K()(x=np.zeros((3, 2)), y=np.zeros((2, 3)))


# ----------------------------------------------------------------------------- seed
def test_scalar_seed():
    k = K()
    value, grads = k.value_and_grad(x=X31, y=Y14, seed=2.5)
    close(value, f(X31, Y14))
    close(grads["x"], (2.5 * dfdx(X31, Y14)).sum(axis=1, keepdims=True))
    close(grads["y"], (2.5 * dfdy(X31, Y14)).sum(axis=0, keepdims=True))
    g = k.grad(x=0.2, y=-0.4, seed=-3.0)
    close(g["x"], -3.0 * dfdx(0.2, -0.4))
    close(g["y"], -3.0 * dfdy(0.2, -0.4))


@pytest.mark.parametrize("seed_shape", [(3, 4), (1, 4), (4,), (3, 1), ()])
def test_array_seed(seed_shape):
    k = K()
    seed = RNG.normal(size=seed_shape)
    value, grads = k.value_and_grad(x=X31, y=Y14, seed=seed)
    close(value, f(X31, Y14))
    s = np.broadcast_to(seed, (3, 4))
    close(grads["x"], (s * dfdx(X31, Y14)).sum(axis=1, keepdims=True))
    close(grads["y"], (s * dfdy(X31, Y14)).sum(axis=0, keepdims=True))


@pytest.mark.parametrize("seed_shape", [(2,), (3, 3), (2, 3, 4), (4, 1)])
def test_seed_that_does_not_broadcast_is_an_input_error(seed_shape):
    with pytest.raises(runtime.InputError, match="seed"):
        K().value_and_grad(x=X31, y=Y14, seed=np.ones(seed_shape))


def test_non_numeric_seed_is_an_input_error():
    with pytest.raises(runtime.InputError, match="seed"):
        K().value_and_grad(x=1.0, y=2.0, seed="one")


# ----------------------------------------------------------------------------- out=
def test_out_buffers_are_reused_and_returned():
    k = K()
    vbuf = np.full((3, 4), np.nan)
    gbufs = {"x": np.full((3, 1), np.nan), "y": np.full((1, 4), np.nan)}
    value, grads = k.value_and_grad(x=X31, y=Y14, out=(vbuf, gbufs))
    assert value is vbuf
    assert grads["x"] is gbufs["x"] and grads["y"] is gbufs["y"]
    close(vbuf, f(X31, Y14))
    close(gbufs["x"], dfdx(X31, Y14).sum(axis=1, keepdims=True))
    close(gbufs["y"], dfdy(X31, Y14).sum(axis=0, keepdims=True))
    # a second call with other inputs writes into the same buffers
    x2, y2 = X31 + 1.0, Y14 * 0.5
    value, grads = k.value_and_grad(x=x2, y=y2, seed=2.0, out=(vbuf, gbufs))
    assert value is vbuf and grads["x"] is gbufs["x"] and grads["y"] is gbufs["y"]
    close(vbuf, f(x2, y2))
    close(gbufs["x"], 2.0 * dfdx(x2, y2).sum(axis=1, keepdims=True))
    close(gbufs["y"], 2.0 * dfdy(x2, y2).sum(axis=0, keepdims=True))


def test_out_buffers_for_same_shape_and_scalar_inputs():
    k = K()
    x = np.linspace(-1.0, 1.0, 6)
    vbuf, gx, gy = np.empty(6), np.empty(6), np.empty(())
    value, grads = k.value_and_grad(x=x, y=0.4, out=(vbuf, {"x": gx, "y": gy}))
    assert value is vbuf and grads["x"] is gx and grads["y"] is gy
    close(vbuf, f(x, 0.4))
    close(gx, dfdx(x, 0.4))
    close(gy, np.sum(dfdy(x, 0.4)))
    # forward alone and grad alone take out= as well
    vbuf2 = np.empty(6)
    assert k(x=x, y=0.4, out=vbuf2) is vbuf2
    close(vbuf2, f(x, 0.4))
    gx2, gy2 = np.empty(6), np.empty(())
    g = k.grad(x=x, y=0.4, out={"x": gx2, "y": gy2})
    assert g["x"] is gx2 and g["y"] is gy2
    close(gx2, dfdx(x, 0.4))


@pytest.mark.parametrize(
    "bad",
    [
        np.empty((3, 3)),  # wrong shape
        np.empty((3, 4), dtype=np.float32),  # wrong dtype
        np.empty((4, 3)).T,  # not C-contiguous
    ],
)
def test_bad_out_buffer_is_an_input_error(bad):
    gbufs = {"x": np.empty((3, 1)), "y": np.empty((1, 4))}
    with pytest.raises(runtime.InputError):
        K().value_and_grad(x=X31, y=Y14, out=(bad, gbufs))


def test_out_gradient_buffers_must_cover_wrt():
    with pytest.raises(runtime.InputError):
        K().value_and_grad(x=X31, y=Y14, out=(np.empty((3, 4)), {"x": np.empty((3, 1))}))
    with pytest.raises(runtime.InputError):  # gradient buffer with the broadcast shape, not x's
        K().value_and_grad(
            x=X31, y=Y14, out=(np.empty((3, 4)), {"x": np.empty((3, 4)), "y": np.empty((1, 4))})
        )


# ----------------------------------------------------------------------------- vjp
def test_vjp_agrees_with_value_and_grad():
    k = K()
    value, pullback = k.vjp(x=X31, y=Y14)
    close(value, f(X31, Y14))
    g1 = pullback()
    close(g1["x"], dfdx(X31, Y14).sum(axis=1, keepdims=True))
    close(g1["y"], dfdy(X31, Y14).sum(axis=0, keepdims=True))
    for seed in (2.0, RNG.normal(size=(3, 4)), RNG.normal(size=(1, 4))):
        g = pullback(seed)
        _, expected = k.value_and_grad(x=X31, y=Y14, seed=seed)
        assert set(g) == set(expected)
        for name in g:
            assert g[name].shape == expected[name].shape
            close(g[name], expected[name], rtol=1e-14, atol=1e-14)
    # the residuals survive repeated pullbacks
    close(pullback()["x"], g1["x"], rtol=0, atol=0)
    with pytest.raises(runtime.InputError):
        pullback(np.ones(5))


def test_vjp_scalars():
    k = K()
    value, pullback = k.vjp(0.2, -0.4)
    assert isinstance(value, float)
    close(value, f(0.2, -0.4))
    g = pullback(3.0)
    close(g["x"], 3.0 * dfdx(0.2, -0.4))
    close(g["y"], 3.0 * dfdy(0.2, -0.4))


# ----------------------------------------------------------------------------- gradcheck
def test_gradcheck_on_arrays():
    result = runtime.gradcheck(K(), x=X31, y=Y14)
    assert result.ok and bool(result)
    assert result.max_error < 1e-6
    assert result.worst is not None and result.worst[0] in ("x", "y")
    result = runtime.gradcheck(K(), x=np.linspace(-1, 1, 5), y=0.3)
    assert result.ok


def test_gradcheck_of_float32_inputs_steps_in_float64():
    """A 1e-6 step is below float32's resolution near 1: differences taken in float32 would be
    noise (errors of order 0.1), so gradcheck evaluates float32 inputs in float64."""
    result = runtime.gradcheck(K(), x=X31.astype(np.float32), y=Y14.astype(np.float32))
    assert result.ok and result.max_error < 1e-6, str(result)


class _WrongGradient:
    """A kernel whose gradient of y is off by 1 % at one entry: gradcheck must notice."""

    def __init__(self, kernel):
        self.k = kernel
        self.inputs, self.wrt = kernel.inputs, kernel.wrt

    def __call__(self, *args, **kwargs):
        return self.k(*args, **kwargs)

    def grad(self, *args, **kwargs):
        g = self.k.grad(*args, **kwargs)
        g["y"] = np.array(g["y"], dtype=float)
        g["y"][0, 2] *= 1.01
        return g


def test_gradcheck_detects_a_wrong_gradient():
    result = runtime.gradcheck(_WrongGradient(K()), x=X31, y=Y14)
    assert not result.ok
    assert result.worst == ("y", (0, 2))
    assert result.max_error == pytest.approx(0.01 / 1.01, rel=1e-3)


# ----------------------------------------------------------------------------- sizes
def test_zero_size_arrays():
    k = K()
    value, grads = k.value_and_grad(x=np.empty(0), y=0.5)
    assert value.shape == (0,)
    assert grads["x"].shape == (0,)
    assert grads["y"] == 0.0  # an empty sum
    value, grads = k.value_and_grad(x=np.empty((0, 1)), y=Y14)
    assert value.shape == (0, 4)
    assert grads["x"].shape == (0, 1)
    assert grads["y"].shape == (1, 4) and np.all(grads["y"] == 0.0)
    assert k(x=np.empty((2, 0)), y=np.ones((1, 1))).shape == (2, 0)
    value, pullback = k.vjp(x=np.empty(0), y=0.5)
    assert value.shape == (0,)
    g = pullback()
    assert g["x"].shape == (0,) and g["y"] == 0.0
    vbuf, gx, gy = np.empty(0), np.empty(0), np.empty(())
    value, grads = k.value_and_grad(x=np.empty(0), y=0.5, out=(vbuf, {"x": gx, "y": gy}))
    assert value is vbuf and grads["x"] is gx and grads["y"] is gy
    assert gy == 0.0


def _force(monkeypatch, parallel: bool):
    """Pin the serial/parallel choice, whichever threshold constant this version uses."""
    monkeypatch.setattr(runtime.policy, "PARALLEL_WORK", 0 if parallel else 1 << 62)


def test_large_arrays_parallel_matches_serial(monkeypatch):
    k = K()
    n = 3 << 16
    x = RNG.normal(size=n)
    y = RNG.normal(size=n)
    runs = {}
    for parallel in (True, False):
        _force(monkeypatch, parallel)
        runs[parallel] = (
            k(x=x, y=y),
            k.value_and_grad(x=x, y=y),
            k.value_and_grad(x=x, y=0.3, seed=2.0),  # a scalar's gradient: a parallel reduction
            k.vjp(x=x, y=y)[1](x),
        )
    monkeypatch.undo()
    runs["default"] = (k(x=x, y=y), k.value_and_grad(x=x, y=y))
    par, ser = runs[True], runs[False]
    close(par[0], f(x, y))
    close(par[1][0], f(x, y))
    close(par[1][1]["x"], dfdx(x, y))
    close(par[1][1]["y"], dfdy(x, y))
    close(par[2][1]["y"], 2.0 * np.sum(dfdy(x, 0.3)), rtol=1e-10)
    close(par[3]["x"], x * dfdx(x, y))
    # elementwise results are bit-identical; reductions agree up to summation order
    assert np.array_equal(par[0], ser[0])
    assert np.array_equal(par[1][0], ser[1][0])
    for name in ("x", "y"):
        assert np.array_equal(par[1][1][name], ser[1][1][name])
        assert np.array_equal(par[3][name], ser[3][name])
    close(par[2][1]["y"], ser[2][1]["y"], rtol=1e-12)
    assert np.array_equal(par[2][1]["x"], ser[2][1]["x"])
    assert np.array_equal(runs["default"][0], ser[0])
    assert np.array_equal(runs["default"][1][1]["y"], ser[1][1]["y"])


# ----------------------------------------------------------------------------- layouts, dtypes
def test_non_contiguous_and_transposed_inputs():
    k = K()
    base = RNG.normal(size=(8, 6))
    keep = base.copy()
    # (x, y, how y's gradient reduces): strided views, transposed + reversed, Fortran order
    # against a column view, a column of a C array with a scalar
    cases = [
        (base[::2, ::3], base[1::2, 1::3], None),
        (base.T, base.T[::-1], None),
        (np.asfortranarray(base), base[:, :1], 1),
        (base[:, 2], 0.5, "all"),
    ]
    for x, y, reduce_y in cases:
        assert not (np.asarray(x).flags.c_contiguous and np.asarray(y).flags.c_contiguous)
        value, grads = k.value_and_grad(x=x, y=y)
        close(value, f(x, y))
        close(grads["x"], dfdx(x, y))
        gy = dfdy(x, y)
        if reduce_y == "all":
            close(grads["y"], gy.sum())
        elif reduce_y is None:
            close(grads["y"], gy)
        else:
            close(grads["y"], gy.sum(axis=reduce_y, keepdims=True))
    assert np.array_equal(base, keep)  # inputs are never written


def test_int_and_bool_inputs_become_float64():
    k = K()
    xi = np.arange(-2, 3)  # int64
    yb = np.array([True, False, True, True, False])
    value, grads = k.value_and_grad(x=xi, y=yb)
    xf, yf = xi.astype(float), yb.astype(float)
    assert value.dtype == np.float64
    assert grads["x"].dtype == np.float64 and grads["y"].dtype == np.float64
    close(value, f(xf, yf))
    close(grads["x"], dfdx(xf, yf))
    close(grads["y"], dfdy(xf, yf))
    for x, y in [
        (2, True),  # Python int and bool
        (np.int32(2), np.uint8(1)),
        (np.array([2], dtype=np.int16), np.array(1, dtype=np.int8)),
        (np.float64(2.0), 1),  # (np.float32 computes in float32: tests/test_float32.py)
    ]:
        value, grads = k.value_and_grad(x=x, y=y)
        close(np.reshape(value, -1), [f(2.0, 1.0)], rtol=1e-15)
        close(np.reshape(grads["x"], -1), [dfdx(2.0, 1.0)], rtol=1e-15)
        close(np.reshape(grads["y"], -1), [dfdy(2.0, 1.0)], rtol=1e-15)
        assert np.shape(grads["x"]) == np.shape(x) and np.shape(grads["y"]) == np.shape(y)


def test_python_lists_are_arrays():
    value, grads = K().value_and_grad(x=[1, 2, 3], y=[[0.5], [1.5]])
    xa, ya = np.array([1.0, 2.0, 3.0]), np.array([[0.5], [1.5]])
    close(value, f(xa, ya))
    close(grads["x"], dfdx(xa, ya).sum(axis=0))
    close(grads["y"], dfdy(xa, ya).sum(axis=1, keepdims=True))


@pytest.mark.parametrize("bad", ["1.0", np.array([1 + 2j]), [1, [2, 3]], None, object()])
def test_non_numeric_inputs_are_input_errors(bad):
    with pytest.raises(runtime.InputError, match="'x'"):
        K().value_and_grad(x=bad, y=1.0)

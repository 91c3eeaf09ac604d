"""The NumPy semantics of tensor reductions and their VJPs: what generated tensor kernels call
(through ``runtime.reductions``), and the reference tracing and drawings evaluate with."""

from __future__ import annotations

import numpy as np

from compiler.errors import InputError

__all__ = [
    "log_softmax", "logsumexp", "scatter_along_axis", "softmax", "sum_to", "sumsq",
    "take_along_axis", "ties",
]  # fmt: skip


def ties(x: np.ndarray, extreme: np.ndarray, axes: int | tuple[int, ...]) -> np.ndarray:
    """Each element's share of a max/min reduction's gradient: 1/count where ``x`` equals the
    reduced ``extreme`` along ``axes``, 0 elsewhere (ties split equally, as JAX does)."""
    axes = (axes,) if isinstance(axes, int) else axes
    hit = x == np.expand_dims(extreme, axes)
    return hit / np.sum(hit, axis=axes, keepdims=True)


def _shift(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """max(x) over ``axes`` (kept), 0 where it is not finite: exp(x - shift) never overflows,
    and an all -inf slice gives exp(-inf) = 0 instead of nan."""
    m = np.max(x, axis=axes, keepdims=True, initial=-np.inf)  # an empty slice: -inf
    return np.where(np.isfinite(m), m, 0.0)


def logsumexp(x: np.ndarray, axes: int | tuple[int, ...]) -> np.ndarray:
    """log(sum(exp(x))) over ``axes``, stably: logsumexp([1000, 1000]) = 1000 + log 2."""
    axes = (axes,) if isinstance(axes, int) else axes
    m = _shift(x, axes)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    return np.squeeze(out, axis=axes)


def softmax(x: np.ndarray, axes: int | tuple[int, ...]) -> np.ndarray:
    """exp(x) / sum(exp(x)) over ``axes``, stably; 0 on an all -inf slice."""
    axes = (axes,) if isinstance(axes, int) else axes
    e = np.exp(x - _shift(x, axes))
    total = np.sum(e, axis=axes, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


def log_softmax(x: np.ndarray, axes: int | tuple[int, ...]) -> np.ndarray:
    """x - logsumexp(x) over ``axes``: finite where softmax underflows to 0."""
    axes = (axes,) if isinstance(axes, int) else axes
    return x - np.expand_dims(logsumexp(x, axes), axes)


def sumsq(x: np.ndarray, axes: int | tuple[int, ...]) -> np.ndarray:
    """sum(x * x) over ``axes``: ``np.add.reduce``, the very sum ``np.sum`` makes, without its
    Python wrapper's microseconds (a loss is often this, called once per step)."""
    return np.add.reduce(np.square(x), axis=axes)


def _indices(indices: np.ndarray, size: int) -> np.ndarray:
    """Float64 indices (every input is float64) as NumPy integers, checked: whole numbers in
    [-size, size), as NumPy's indexing takes them; an InputError says which is not."""
    with np.errstate(invalid="ignore"):
        whole = np.isfinite(indices) & (indices == np.round(indices))
    inside = whole & (indices >= -size) & (indices < size)
    if not inside.all():
        bad = indices[~inside].flat[0]
        raise InputError(
            f"take_along_axis: index {bad!r} is not an integer in [-{size}, {size}) "
            f"(the size of the axis it indexes)"
        )
    return indices.astype(np.intp)


def take_along_axis(x: np.ndarray, indices: np.ndarray, axis: int) -> np.ndarray:
    """numpy.take_along_axis with float64 indices holding integers (class labels, say)."""
    return np.take_along_axis(x, _indices(indices, x.shape[axis]), axis=axis)


def scatter_along_axis(
    g: np.ndarray, indices: np.ndarray, axis: int, shape: tuple[int, ...]
) -> np.ndarray:
    """take_along_axis's adjoint: zeros of ``shape`` with ``g`` added at ``indices`` along
    ``axis`` (a repeated index receives the sum of its shares)."""
    out = np.zeros(shape)
    where = list(np.indices(indices.shape, sparse=True))
    where[axis] = _indices(indices, shape[axis])
    np.add.at(out, tuple(where), g)
    return out


def sum_to(gradient: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a full-size gradient over the axes along which an input of ``shape`` was broadcast."""
    lead = gradient.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + k for k, d in enumerate(shape) if d == 1 and gradient.shape[lead + k] != 1
    )
    return gradient.sum(axis=axes, keepdims=True).reshape(shape)

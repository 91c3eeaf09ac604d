"""Binding call arguments to a kernel's inputs: validation, float64, NumPy broadcasting.

Each input becomes one of two *kinds* for the generated loop: ``"s"`` — a single number shared by
every element — or ``"a"`` — a flat array as long as the broadcast shape. An input that broadcasts
only partly (shape (3, 1) against (3, 4)) is expanded to full size, and its gradient is summed back
over the broadcast axes, as NumPy's and JAX's reverse modes do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compiler.errors import InputError


def bind(names: Sequence[str], args: tuple, kwargs: dict[str, Any]) -> dict[str, np.ndarray]:
    """Match positional and keyword arguments to ``names``; every value as a float64 array."""
    if len(args) > len(names):
        raise InputError(f"got {len(args)} positional values for {len(names)} inputs {list(names)}")
    values = dict(zip(names, args))
    for name, value in kwargs.items():
        if name not in names:
            raise InputError(f"unknown input '{name}'; the inputs are {list(names)}")
        if name in values:
            raise InputError(f"input '{name}' given both by position and by name")
        values[name] = value
    missing = [n for n in names if n not in values]
    if missing:
        hint = ""
        if {"seed", "out"} & set(missing):
            hint = (
                " ('seed' and 'out' are also keyword options of the kernel's methods, so inputs"
                " with those names are passed by position)"
            )
        raise InputError(f"missing input(s) {missing}; the inputs are {list(names)}{hint}")
    return {n: as_float_array(n, values[n]) for n in names}


def as_float_array(name: str, value: Any) -> np.ndarray:
    """``value`` as float64, refusing what NumPy would silently misread (strings, objects, complex)."""
    if type(value) is np.ndarray and value.dtype == np.float64:
        return value  # the common case, first: a call's overhead is felt at small sizes
    try:
        array = np.asarray(value)
    except Exception as e:  # ragged lists and the like
        raise InputError(
            f"input '{name}': cannot read {type(value).__name__} as numbers ({e})"
        ) from None
    if array.dtype == object and all(type(v) is int for v in array.ravel()):
        try:  # Python ints beyond int64: as float64, as NumPy's float() would read them
            array = np.asarray(array.tolist(), dtype=np.float64)
        except OverflowError:
            raise InputError(f"input '{name}': integer too large for float64") from None
    if array.dtype.kind not in "biuf":
        raise InputError(
            f"input '{name}' must be real numbers, got {type(value).__name__} of dtype {array.dtype}"
        )
    return array.astype(np.float64, copy=False)


@dataclass
class Layout:
    """Inputs arranged for one call of the flat loops."""

    shape: tuple[int, ...]
    n: int
    kinds: dict[str, str] = field(default_factory=dict)
    flat: dict[str, np.ndarray | float] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    expanded: set[str] = field(default_factory=set)


def broadcast_shape(values: dict[str, np.ndarray]) -> tuple[int, ...]:
    shapes = {v.shape for v in values.values()}
    if len(shapes) == 1:
        return shapes.pop()
    try:
        return np.broadcast_shapes(*(v.shape for v in values.values()))
    except ValueError:
        shapes = ", ".join(f"{n}: {v.shape}" for n, v in values.items())
        raise InputError(f"input shapes do not broadcast together ({shapes})") from None


def arrange(values: dict[str, np.ndarray], shape: tuple[int, ...] | None = None) -> Layout:
    """Flatten each value for the loop, choosing its kind."""
    shape = broadcast_shape(values) if shape is None else shape
    layout = Layout(shape=shape, n=math.prod(shape))
    for name, v in values.items():
        layout.shapes[name] = v.shape
        if v.size == 1:
            layout.kinds[name], layout.flat[name] = "s", float(v.reshape(-1)[0])
            continue
        layout.kinds[name] = "a"
        if v.shape != shape:
            layout.expanded.add(name)
            v = np.broadcast_to(v, shape)
        flat = v.ndim == 1 and v.flags.c_contiguous
        layout.flat[name] = v if flat else np.ascontiguousarray(v).reshape(-1)
    return layout


def arrange_seed(seed: Any, shape: tuple[int, ...]) -> tuple[str, np.ndarray | float]:
    """The upstream gradient: any value that broadcasts to the output's shape (default 1)."""
    if seed is None:
        return "s", 1.0
    array = as_float_array("seed", seed)
    try:
        fits = np.broadcast_shapes(array.shape, shape) == shape
    except ValueError:
        fits = False
    if not fits:
        raise InputError(f"seed of shape {array.shape} does not broadcast to the output's {shape}")
    layout = arrange({"seed": array}, shape)
    return layout.kinds["seed"], layout.flat["seed"]


def sum_to(gradient: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a full-size gradient over the axes along which an input of ``shape`` was broadcast."""
    lead = gradient.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + k for k, d in enumerate(shape) if d == 1 and gradient.shape[lead + k] != 1
    )
    return gradient.sum(axis=axes, keepdims=True).reshape(shape)

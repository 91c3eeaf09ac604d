"""Binding call arguments to a kernel's inputs: validation, the call's dtype, NumPy broadcasting.

**The call's dtype** (``call_dtype``, decided here and nowhere else) is NumPy's own promotion over
the inputs (``np.result_type``, with Python numbers *weak* as NEP 50 has it): float32 arrays or
``np.float32`` scalars, alone or with Python floats and ints, compute in float32; any float64
input (a float64 array, ``np.float64``, a list of floats) makes it float64; integer and bool
arrays follow NumPy (int64 with float32 is float64; int8 or int16 with float32 is float32), and
integers alone compute in float64. float16 computes in float32 (no kernel is written in half
precision: its 11-bit significand would lose most digits of a gradient). Every input is converted
to that dtype, the outputs have it, and the kernel is compiled for it (a float32 call and a float64
call of one kernel run separate modules).

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

#: The dtypes kernels are compiled for; the first is the default.
DTYPES = ("float64", "float32")
_FLOAT32 = np.dtype(np.float32)
_FLOAT64 = np.dtype(np.float64)
_WEAK = (bool, int, float)  # Python numbers (not NumPy scalars, though np.float64 is a float)


def bind(names: Sequence[str], args: tuple, kwargs: dict[str, Any]) -> dict[str, np.ndarray]:
    """Match positional and keyword arguments to ``names``; every value as an array of the
    call's dtype (``call_dtype``: float64 or float32, the same for every input)."""
    values = match(names, args, kwargs)
    if all(type(v) is np.ndarray and v.dtype is _FLOAT64 for v in values.values()):
        return values  # the common case, first: float64 arrays
    arrays = {n: as_real_array(n, values[n]) for n in names}
    dtype = call_dtype([(values[n], arrays[n]) for n in names])
    return {n: a.astype(dtype, copy=False) for n, a in arrays.items()}


def match(names: Sequence[str], args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Positional and keyword arguments matched to ``names``, in their order, as given."""
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
    return {n: values[n] for n in names}


def call_dtype(values: Sequence[tuple[Any, np.ndarray]]) -> np.dtype:
    """The dtype a call computes in, from its (given value, value as an array) pairs: NumPy's
    promotion with Python numbers weak (see the module's docstring); float32 or float64."""
    strong = [a.dtype for v, a in values if type(v) not in _WEAK]
    if not strong:
        return _FLOAT64
    dtype = strong[0] if len(set(strong)) == 1 else np.result_type(*strong)
    if dtype == _FLOAT64 or dtype.kind != "f":
        return _FLOAT64  # integers and bools alone compute in float64, as NumPy's true division
    return _FLOAT32 if dtype.itemsize <= 4 else _FLOAT64


def dtype_of(values: dict[str, np.ndarray]) -> np.dtype:
    """The dtype of bound values (``bind``): float64 for a call without inputs."""
    return next(iter(values.values())).dtype if values else _FLOAT64


def as_float_array(name: str, value: Any, dtype: Any = np.float64) -> np.ndarray:
    """``value`` as an array of ``dtype`` (float64 by default), refusing what NumPy would
    silently misread (strings, objects, complex)."""
    if type(value) is np.ndarray and value.dtype == dtype:
        return value  # the common case, first: a call's overhead is felt at small sizes
    return as_real_array(name, value).astype(dtype, copy=False)


def as_real_array(name: str, value: Any) -> np.ndarray:
    """``value`` as an array of its own real dtype (integers, bools and floats as NumPy reads
    them), refusing strings, objects and complex numbers."""
    if type(value) is np.ndarray and value.dtype.kind == "f":
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
    return array


@dataclass
class Layout:
    """Inputs arranged for one call of the flat loops."""

    shape: tuple[int, ...]
    n: int
    kinds: dict[str, str] = field(default_factory=dict)
    flat: dict[str, np.ndarray | float] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    expanded: set[str] = field(default_factory=set)
    dtype: np.dtype = _FLOAT64  # the call's (``call_dtype``)
    dtype_name: str = "float64"


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
    """Flatten each value for the loop, choosing its kind. A single number is a Python float
    for float64 (as Numba's float64 parameters take it at once), a NumPy float32 for float32."""
    shape = broadcast_shape(values) if shape is None else shape
    layout = Layout(shape=shape, n=math.prod(shape))
    dtype = dtype_of(values)
    f64 = dtype is _FLOAT64 or dtype == _FLOAT64
    if not f64:
        layout.dtype, layout.dtype_name = dtype, "float32"  # bind's only other dtype
    for name, v in values.items():
        layout.shapes[name] = v.shape
        if v.size == 1:
            number = v.reshape(-1)[0]
            layout.kinds[name] = "s"
            layout.flat[name] = float(number) if f64 else number
            continue
        layout.kinds[name] = "a"
        if v.shape != shape:
            layout.expanded.add(name)
            v = np.broadcast_to(v, shape)
        flat = v.ndim == 1 and v.flags.c_contiguous
        layout.flat[name] = v if flat else np.ascontiguousarray(v).reshape(-1)
    return layout


def arrange_seed(
    seed: Any, shape: tuple[int, ...], dtype: np.dtype = _FLOAT64
) -> tuple[str, np.ndarray | float]:
    """The upstream gradient: any value that broadcasts to the output's shape (default 1), in
    the call's dtype (a seed never changes the dtype the inputs chose: it is not an input)."""
    if seed is None:
        return "s", (np.float32(1.0) if dtype == _FLOAT32 else 1.0)
    array = as_float_array("seed", seed, dtype)
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
    if gradient.dtype == _FLOAT64:
        return gradient.sum(axis=axes, keepdims=True).reshape(shape)
    # float32: summed in float64 and rounded once, as the kernels sum a single number's gradient
    total = gradient.sum(axis=axes, keepdims=True, dtype=np.float64)
    return total.astype(gradient.dtype).reshape(shape)

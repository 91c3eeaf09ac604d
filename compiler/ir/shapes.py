"""Shapes with named dimensions: declaration, NumPy broadcasting, and binding at call time.

A shape is a tuple of dimensions; a dimension is an ``int`` (fixed) or a ``str`` (a name such as
``"n"``, whose size each call binds). Rules follow NumPy, decided at compile time: two dims agree
when equal, and a literal 1 broadcasts against anything. A name never broadcasts against another
name or a different int (its size is unknown until the call): that is a ``ShapeError`` naming both,
so one kernel is right for every size its names take.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from compiler.errors import InputError, ShapeError

Dim = int | str
Shape = tuple[Dim, ...]


def declare(name: str, spec: Any) -> Shape:
    """A user's shape declaration as a Shape: ``("n", 3)``, ``"n"`` (one axis), ``5`` or ``()``."""
    if isinstance(spec, (str, int)) and not isinstance(spec, bool):
        spec = (spec,)
    if not isinstance(spec, (tuple, list)):
        raise ShapeError(
            f"shape of '{name}' must be a tuple of sizes and dimension names, not {spec!r}"
        )
    dims: list[Dim] = []
    for d in spec:
        if isinstance(d, bool) or not isinstance(d, (int, str)):
            raise ShapeError(f"shape of '{name}': {d!r} is neither a size nor a dimension name")
        if isinstance(d, int) and d < 0:
            raise ShapeError(f"shape of '{name}': negative size {d}")
        if isinstance(d, str) and not d.isidentifier():
            raise ShapeError(f"shape of '{name}': dimension name {d!r} is not an identifier")
        dims.append(int(d) if isinstance(d, int) else d)
    return tuple(dims)


def text(shape: Shape) -> str:
    """``(n, 3)``, ``(n,)`` or ``()`` as people write shapes."""
    inner = ", ".join(str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def broadcast(shapes: Iterable[Shape], what: str = "operands") -> Shape:
    """NumPy's broadcast of ``shapes`` (aligned on the right), or a ShapeError naming the dims."""
    shapes = list(shapes)
    rank = max((len(s) for s in shapes), default=0)
    result: list[Dim] = []
    for k in range(-rank, 0):
        dim: Dim = 1
        for s in shapes:
            d = s[k] if -k <= len(s) else 1
            if d == 1 or d == dim:
                continue
            if dim != 1:
                listed = " and ".join(text(s) for s in shapes)
                raise ShapeError(f"cannot broadcast {listed} in {what}: dimension {dim} vs {d}")
            dim = d
        result.append(dim)
    return tuple(result)


def normalize_axes(axis: Any, rank: int, what: str) -> tuple[int, ...]:
    """``axis=`` as sorted non-negative axes; None means all of them."""
    if axis is None:
        return tuple(range(rank))
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, int):
            raise ShapeError(f"{what}: axis must be an integer or a tuple of integers, not {a!r}")
        if not -rank <= a < rank:
            raise ShapeError(f"{what}: axis {a} is out of range for an operand of rank {rank}")
        out.append(a % rank)
    if len(set(out)) != len(out):
        raise ShapeError(f"{what}: repeated axis in {axis!r}")
    return tuple(sorted(out))


def bind(declared: Mapping[str, Shape], arrays: Mapping[str, Any]) -> dict[str, int]:
    """The size of every dimension name, read from the arrays; an InputError names the culprits."""
    sizes: dict[str, tuple[int, str]] = {}  # name -> (size, the input that set it)
    for name, shape in declared.items():
        actual = arrays[name].shape
        if len(actual) != len(shape):
            raise InputError(
                f"input '{name}' has shape {tuple(actual)}, but {text(shape)} was declared "
                f"(rank {len(actual)} instead of {len(shape)})"
            )
        for axis, (d, n) in enumerate(zip(shape, actual)):
            if isinstance(d, int):
                if d != n:
                    raise InputError(
                        f"input '{name}' has shape {tuple(actual)}, but {text(shape)} was "
                        f"declared: axis {axis} must be {d}"
                    )
            elif d in sizes and sizes[d][0] != n:
                size, other = sizes[d]
                raise InputError(
                    f"dimension '{d}' is {size} in input '{other}' but {n} in input '{name}'"
                )
            else:
                sizes.setdefault(d, (n, name))
    return {d: n for d, (n, _) in sizes.items()}


def concrete(shape: Shape, sizes: Mapping[str, int]) -> tuple[int, ...]:
    """``shape`` with each name replaced by its bound size."""
    return tuple(d if isinstance(d, int) else sizes[d] for d in shape)

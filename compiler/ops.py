"""Functions for use inside traced callables: ``lambda x: ops.exp(-x) * ops.sin(x)``.

Each works on traced values (adding a graph node), on SymPy expressions (giving SymPy) and on
plain numbers or arrays (computing with the op's own lowering, ``compiler.ir.elementwise``: the
bits a compiled kernel gives, NumPy's broadcasting and float32/float64 promotion), so one function
body serves all three.
Generated from the op registry: one op, one place.
"""

from __future__ import annotations

import numpy as np

from compiler.errors import ShapeError
from compiler.frontend.tracing import Var
from compiler.ir import elementwise
from compiler.ir.graph import operand_symbols
from compiler.ir.registry import FUNCTIONS, OPS, sympy_definition
from compiler.ir.shapes import declare, normalize_axes


def _is_sympy(obj) -> bool:
    # Classes SymPy makes at run time (sympy.Function("f")) have __module__ None: ask the MRO.
    return any((c.__module__ or "").startswith("sympy") for c in type(obj).__mro__)


def _make(name: str):
    op = OPS[FUNCTIONS[name]]

    def function(*args):
        if len(args) != op.arity:
            raise TypeError(f"{name}() takes {op.arity} argument(s), got {len(args)}")
        traced = next((a for a in args if isinstance(a, Var)), None)
        if traced is not None:
            return traced.apply(op.name, *args)
        if any(_is_sympy(a) for a in args):
            import sympy

            definition = sympy_definition(op.name)
            subs = dict(zip(operand_symbols(definition), map(sympy.sympify, args)))
            return definition.xreplace(subs)
        return elementwise.apply(op, *args, vector=True)  # the scalar tiers' form

    function.__name__ = function.__qualname__ = name
    function.__doc__ = f"{name}: {op.definition} (over a, b, c), elementwise."
    return function


def install(name: str) -> None:
    """Offer ``name`` here (a gate registered after import: ``compiler.register_gate``)."""
    globals()[name] = _make(name)
    if name not in __all__:
        __all__.append(name)
        __all__.sort()


def uninstall(name: str) -> None:
    """Withdraw a function of an unregistered gate."""
    if name in __all__:
        __all__.remove(name)
        globals().pop(name, None)


__all__: list[str] = []
for _name in FUNCTIONS:
    install(_name)


# ---- tensor functions: on traced values of a shaped trace they add tensor nodes; on arrays,
# NumPy computes them.
def _reduction(op: str):
    def function(x, axis=None, keepdims: bool = False):
        if isinstance(x, Var):
            return x.reduce(op, axis, keepdims)
        return _NUMPY_REDUCTIONS.get(op, getattr(np, op, None))(x, axis=axis, keepdims=keepdims)

    function.__name__ = function.__qualname__ = op
    function.__doc__ = f"{op} over ``axis`` (None: all axes), as numpy.{op}."
    return function


def _numpy_logsumexp(x, axis=None, keepdims: bool = False):
    from compiler.ir.reductions import logsumexp as stable

    x = np.asarray(x, dtype=float)
    axes = normalize_axes(axis, x.ndim, "logsumexp")
    out = stable(x, axes) if axes else x
    return np.expand_dims(out, axes) if keepdims else out


def _numpy_sumsq(x, axis=None, keepdims: bool = False):
    return np.sum(np.square(x), axis=axis, keepdims=keepdims)


_NUMPY_REDUCTIONS = {"logsumexp": _numpy_logsumexp, "sumsq": _numpy_sumsq}

sum = _reduction("sum")  # noqa: A001 - NumPy's names
mean = _reduction("mean")
max = _reduction("max")  # noqa: A001
min = _reduction("min")  # noqa: A001
amax, amin = max, min


def transpose(x):
    """The axes reversed (x.T)."""
    return x.T


def matmul(a, b):
    """The matrix product a @ b (1-D and 2-D operands)."""
    return a @ b


def dot(a, b):
    """numpy.dot: a @ b for 1-D and 2-D operands, a product when one is a scalar."""
    if isinstance(a, Var) and not a.shape or isinstance(b, Var) and not b.shape:
        return a * b
    if not isinstance(a, Var) and not isinstance(b, Var):
        return np.dot(a, b)
    return a @ b


logsumexp = _reduction("logsumexp")
logsumexp.__doc__ = "log(sum(exp(x))) over ``axis`` (None: all axes), stably, as SciPy's."
sumsq = _reduction("sumsq")
sumsq.__doc__ = "sum(x * x) over ``axis`` (None: all axes)."


# ---- the other tensor ops a listing prints (compiler/ir/tensor_ops.py), with the same options
def _traced(name: str, arrays: tuple, attrs) -> Var | None:
    """``name(*arrays)`` as a node of the trace an operand belongs to, or None (no tracer)."""
    first = next((a for a in arrays if isinstance(a, Var)), None)
    if first is None:
        return None
    g = first._tensor(f"{name}()")
    return Var(g, g.add(name, *(first._lift(a) for a in arrays), attrs=attrs))


def _axes(x, axis, what: str) -> tuple[int, ...]:
    if axis is None:
        raise ShapeError(f"{what} needs an integer axis (or a tuple of them), not None")
    axes = normalize_axes(axis, len(x.shape), what)
    if not axes:
        raise ShapeError(f"{what} needs at least one axis")
    return axes


def _one_axis(x, axis, what: str) -> int:
    axes = _axes(x, axis, what)
    if len(axes) != 1:
        raise ShapeError(f"{what} takes one axis, not {len(axes)}")
    return axes[0]


def _shape(x: Var, shape, what: str) -> tuple:
    shape = declare(what, shape)
    unknown = [d for d in shape if isinstance(d, str) and d not in x.graph.dim_names]
    if unknown:
        raise ShapeError(f"{what}: {unknown} in the shape name no dimension of the inputs")
    return shape


def softmax(x, axis):
    """exp(x) / sum(exp(x)) over ``axis``, stably (shifted by the max)."""
    if isinstance(x, Var):
        return _traced("softmax", (x,), _axes(x, axis, "softmax()"))
    from compiler.ir.reductions import softmax as numpy_softmax

    return numpy_softmax(np.asarray(x, dtype=float), normalize_axes(axis, np.ndim(x), "softmax"))


def log_softmax(x, axis):
    """x - logsumexp(x, axis, keepdims=True): finite where softmax underflows."""
    if isinstance(x, Var):
        return _traced("log_softmax", (x,), _axes(x, axis, "log_softmax()"))
    from compiler.ir.reductions import log_softmax as numpy_log_softmax

    x = np.asarray(x, dtype=float)
    return numpy_log_softmax(x, normalize_axes(axis, x.ndim, "log_softmax"))


def take_along_axis(arr, indices, axis: int):
    """numpy.take_along_axis: ``indices`` (integers, of ``arr``'s rank) picked along ``axis``;
    the gradient goes back to the picked positions. ``indices`` may be a float input holding
    integers (class labels, say): every input is float64."""
    if isinstance(arr, Var) or isinstance(indices, Var):
        like = arr if isinstance(arr, Var) else indices
        return _traced(
            "take_along_axis", (arr, indices), (_one_axis(like, axis, "take_along_axis()"),)
        )
    from compiler.ir import reductions

    arr = np.asarray(arr, dtype=float)
    return reductions.take_along_axis(arr, np.asarray(indices, dtype=float), axis)


def scatter_along_axis(values, indices, axis: int, shape):
    """take_along_axis's adjoint: zeros of ``shape`` with ``values`` added at ``indices``."""
    if isinstance(values, Var) or isinstance(indices, Var):
        like = values if isinstance(values, Var) else indices
        what = "scatter_along_axis()"
        attrs = (_one_axis(like, axis, what), _shape(like, shape, what))
        return _traced("scatter_along_axis", (values, indices), attrs)
    from compiler.ir import reductions

    values = np.asarray(values, dtype=float)
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    return reductions.scatter_along_axis(values, np.asarray(indices, dtype=float), axis, shape)


def reshape(x, shape):
    """numpy.reshape to ``shape`` (sizes and the inputs' dimension names)."""
    if isinstance(x, Var):
        return _traced("reshape", (x,), _shape(x, shape, "reshape()"))
    return np.reshape(x, shape)


def broadcast_to(x, shape):
    """numpy.broadcast_to ``shape`` (sizes and the inputs' dimension names)."""
    if isinstance(x, Var):
        return _traced("broadcast_to", (x,), _shape(x, shape, "broadcast_to()"))
    return np.broadcast_to(x, shape)


def sum_to(x, shape):
    """``x`` summed over the axes along which ``shape`` broadcasts to it (broadcast_to's
    adjoint)."""
    if isinstance(x, Var):
        return _traced("sum_to", (x,), _shape(x, shape, "sum_to()"))
    from compiler.ir.reductions import sum_to as numpy_sum_to

    return numpy_sum_to(np.asarray(x, dtype=float), tuple(shape))


def ties(x, extreme, axis):
    """Each element's share of a max/min reduction's gradient (1/count where ``x`` equals the
    ``extreme`` reduced over ``axis``, 0 elsewhere)."""
    if isinstance(x, Var) or isinstance(extreme, Var):
        like = x if isinstance(x, Var) else extreme
        return _traced("ties", (x, extreme), _axes(like, axis, "ties()"))
    from compiler.ir.reductions import ties as numpy_ties

    x = np.asarray(x, dtype=float)
    return numpy_ties(x, np.asarray(extreme, dtype=float), normalize_axes(axis, x.ndim, "ties"))


__all__ += ["dot", "matmul", "max", "mean", "min", "sum", "transpose", "logsumexp", "sumsq"]
__all__ += ["softmax", "log_softmax", "take_along_axis", "scatter_along_axis", "reshape"]
__all__ += ["broadcast_to", "sum_to", "ties"]
__all__.sort()

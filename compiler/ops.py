"""Functions for use inside traced callables: ``lambda x: ops.exp(-x) * ops.sin(x)``.

Each works on traced values (adding a graph node), on SymPy expressions (giving SymPy) and on
plain numbers or arrays (computing with NumPy), so one function body serves all three.
Generated from the op registry: one op, one place.
"""

from __future__ import annotations

import numpy as np

from compiler.frontend.tracing import Var
from compiler.ir.registry import FUNCTIONS, OPS, placeholders, sympy_definition


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

            subs = dict(zip(placeholders(), map(sympy.sympify, args)))
            return sympy_definition(op.name).xreplace(subs)
        return op.numpy(*args)

    function.__name__ = function.__qualname__ = name
    function.__doc__ = f"{name}: {op.definition} (over a, b), elementwise."
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
        return getattr(np, op)(x, axis=axis, keepdims=keepdims)

    function.__name__ = function.__qualname__ = op
    function.__doc__ = f"{op} over ``axis`` (None: all axes), as numpy.{op}."
    return function


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


__all__ += ["dot", "matmul", "max", "mean", "min", "sum", "transpose"]
__all__.sort()

"""Functions for use inside traced callables: ``lambda x: ops.exp(-x) * ops.sin(x)``.

Each works on traced values (adding a graph node), on SymPy expressions (giving SymPy) and on
plain numbers or arrays (computing with NumPy), so one function body serves all three.
Generated from the op registry: one op, one place.
"""

from __future__ import annotations

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


for _name in FUNCTIONS:
    globals()[_name] = _make(_name)

__all__ = sorted(FUNCTIONS)

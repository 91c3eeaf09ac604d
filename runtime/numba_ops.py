"""The op table's lowerings as Numba intrinsics: how a Numba kernel computes an op.

Each op's one lowering (``OpDef.lower``, ``compiler.ir.lowering``) becomes a
``numba.extending.intrinsic`` on first use, so a kernel's loop holds the op's own IR, inlined,
and stays Numba-jitted. Generated modules import them by the op's name
(``from runtime.numba_ops import exp, sigmoid``); a name that is a Python builtin takes a
trailing underscore (``abs_``, ``round_``, ``pow_``: ``callable_name``).

Typing follows NumPy's promotion: float32 operands give float32, float64 (or a mix) float64, and
integers are cast to float64. No fast-math flags: nan, inf and signed zeros are the lowering's.
An op without a lowering is a ``LoweringError`` naming it and the tier, never a ``KeyError``.
"""

from __future__ import annotations

import threading

from compiler.codegen.audit import callable_name, op_of_callable
from compiler.ir.lowering import Lower, LoweringError

_made: dict[str, tuple[object, object]] = {}  # op name -> (its OpDef, its intrinsic)
_lock = threading.Lock()


def has_lowering(op: str) -> bool:
    """Whether ``op`` is in the table with a lowering (so a Numba kernel can call it)."""
    from compiler.ir.registry import OPS

    spec = OPS.get(op)
    return spec is not None and spec.lower is not None


def intrinsic(op: str):
    """``op``'s intrinsic, made on first use (and again if the table's entry changed: a gate
    registered anew under the same name)."""
    from compiler.ir.registry import OPS

    spec = OPS.get(op)
    if spec is None or spec.lower is None:
        raise LoweringError(op, "numba", "not in the op table" if spec is None else "")
    with _lock:
        made = _made.get(op)
        if made is None or made[0] is not spec:
            made = (spec, _make(spec))
            _made[op] = made
    return made[1]


def __getattr__(name: str):
    """``from runtime.numba_ops import exp``: the intrinsic of the op ``name`` calls."""
    op = op_of_callable(name)
    if op is None:
        raise AttributeError(f"module 'runtime.numba_ops' has no attribute {name!r}")
    return intrinsic(op)


# ------------------------------------------------------------------------------ making them
def _result_type(args):
    """NumPy's promotion over float32/float64 operands, integers (and bools) as float64; None
    (Numba then tries other signatures and names the call) for anything else."""
    from numba import types

    if not all(isinstance(a, (types.Float, types.Integer, types.Boolean)) for a in args):
        return None
    if all(a == types.float32 for a in args):
        return types.float32
    return types.float64


def _make(spec):
    """One intrinsic for one entry: a typer of the entry's arity (Numba refuses ``*args``)."""
    from numba.extending import intrinsic as numba_intrinsic

    lower = spec.lower
    # An op with a ``fast`` form (sin, cos) branches out of its vector lowering for rare points,
    # which the LLVM tier handles with exact twin loops and a Numba loop cannot: a branch keeps
    # the whole loop scalar. Its scalar form (LLVM's intrinsic, what Numba's math.sin is) lets
    # LLVM vectorise the rest of the loop around it.
    vector = spec.fast is None

    def codegen(context, builder, sig, args):
        ty = sig.return_type
        cast = [context.cast(builder, v, t, ty) for v, t in zip(args, sig.args)]
        return lower(Lower(builder, context.get_value_type(ty), vector=vector), *cast)

    def signature(*args):
        ty = _result_type(args)
        return None if ty is None else (ty(*args), codegen)

    if spec.arity == 1:

        def typer(typingctx, a):
            return signature(a)

    elif spec.arity == 2:

        def typer(typingctx, a, b):
            return signature(a, b)

    elif spec.arity == 3:

        def typer(typingctx, a, b, c):
            return signature(a, b, c)

    else:
        raise LoweringError(spec.name, "numba", f"arity {spec.arity}")
    typer.__name__ = typer.__qualname__ = callable_name(spec.name)
    typer.__doc__ = f"{spec.name}: its lowering, inlined (compiler.ir.lowering)."
    return numba_intrinsic(typer)

"""An op's lowering printed as LLVM IR: one ``internal alwaysinline`` function per op and module.

The LLVM tier's chunks and the instant tier's machine compute a node as
``%t = call double @op.<name>.f64(double %x, ...)``; the function is the op's ``lower``
(``compiler.ir.lowering``) written by llvmlite's IRBuilder, printed once per module. LLVM inlines
it (``alwaysinline``: the O3 pipeline and the O0 one both run the always-inliner), so the call
costs nothing and the optimiser sees the op's instructions in the loop. A float32 kernel
(``dtype="float32"``) calls ``@op.<name>.f32``: the same lowering at ``float`` width
(``Lower(builder, ir.FloatType())``), so each op is written once for both widths.

An op with a ``fast`` form (sin, cos) is also printed as ``@op.<name>.fast.f64`` returning
``{double, i1}`` (``.f32``: ``{float, i1}``): the value and whether the point needs ``lower``'s
exact path. A user's or a discovered gate has the lowering of its stable form
(``compiler.ir.lowering.lower_graph``); an op without a lowering is ``LoweringError``, never a
KeyError or a recursion.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache

from llvmlite import ir

from compiler.ir.lowering import DOUBLE, FLOAT, Lower, LoweringError, function_of
from compiler.ir.registry import OPS, OpDef

_METADATA = re.compile(r", ![-a-zA-Z$._0-9]+ ![0-9]+$", re.M)  # hints (!prof), module-level
_PLAIN = re.compile(r'([%@])"([-a-zA-Z$._][-a-zA-Z$._0-9]*)"')
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
FAST_TYPE = "{ double, i1 }"

#: The kernels' float types by NumPy dtype name: the element type of their arrays, registers and
#: op functions. Sums of scalar inputs' gradients stay double whatever the dtype.
DTYPES = {"float64": DOUBLE, "float32": FLOAT}


def float_type(dtype: str) -> ir.Type:
    """llvmlite's type for ``dtype`` (``"float64"`` or ``"float32"``), else ``ValueError``."""
    try:
        return DTYPES[dtype]
    except (KeyError, TypeError):
        raise ValueError(f"dtype must be 'float64' or 'float32', not {dtype!r}") from None


def type_name(dtype: str) -> str:
    """The LLVM name of ``dtype``'s float type: ``double`` or ``float``."""
    return str(float_type(dtype))


def fast_type(dtype: str) -> str:
    """What a fast form returns at ``dtype``: ``{ double, i1 }`` or ``{ float, i1 }``."""
    return f"{{ {type_name(dtype)}, i1 }}"


@dataclass(frozen=True)
class OpFunction:
    """One op's function: its ``symbol``, its definition's ``text``, the external functions it
    calls (name -> ``declare`` line), and its cost in instructions."""

    symbol: str
    text: str
    declarations: tuple[tuple[str, str], ...]
    instructions: int


def symbol(op: str, fast: bool = False, dtype: str = "float64") -> str:
    """``op.<name>.f64`` (``op.<name>.fast.f64``; ``.f32`` at float32); a name that is not a
    plain identifier (a user's gate) is numbered instead, so no user text reaches the IR."""
    name = op if _IDENT.match(op) else "g" + hashlib.sha256(op.encode()).hexdigest()[:12]
    bits = 64 if float_type(dtype) is DOUBLE else 32
    return f"op.{name}{'.fast' if fast else ''}.f{bits}"


def plain(text: str) -> str:
    """llvmlite's quoted names (``%".1"``, ``@"llvm.exp.f64"``) unquoted where LLVM allows;
    attachments of module-level metadata (branch weights: hints only) dropped, as the function
    is printed without its module."""
    return _METADATA.sub("", _PLAIN.sub(r"\1\2", text))


def op_function(
    op: str, vector: bool, fast: bool = False, tier: str = "llvm", dtype: str = "float64"
) -> OpFunction:
    """The function computing ``op`` at ``dtype`` for code meant (``vector``) or not for LLVM's
    vectoriser."""
    spec = OPS.get(op)
    if spec is None:
        raise LoweringError(op, tier, "not in the op table")
    float_type(dtype)  # a clear error for a bad dtype
    return _printed(spec, vector, fast, tier, dtype)


@lru_cache(maxsize=1024)
def _printed(spec: OpDef, vector: bool, fast: bool, tier: str, dtype: str) -> OpFunction:
    lower = spec.fast if fast else _lowering(spec, tier)
    if lower is None:
        raise LoweringError(spec.name, tier, "no fast form")
    return _from_lower(symbol(spec.name, fast, dtype), spec, lower, vector, fast, dtype)


def _lowering(spec: OpDef, tier: str):
    """``spec.lower`` (a gate's is ``lower_graph`` of its stable form), else ``LoweringError``."""
    if spec.lower is None:
        raise LoweringError(spec.name, tier)
    return spec.lower


def _from_lower(
    name: str, spec: OpDef, lower, vector: bool, fast: bool, dtype: str = "float64"
) -> OpFunction:
    ty = float_type(dtype)
    if not fast:
        module, fn = function_of(name, lower, spec.arity, ty, vector)
    else:  # fast: (value, needs the exact path) as one struct
        module = ir.Module()
        kind = ir.LiteralStructType([ty, ir.IntType(1)])
        fn = ir.Function(module, ir.FunctionType(kind, [ty] * spec.arity), name)
        fn.linkage = "internal"
        fn.attributes.add("alwaysinline")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        value, flag = lower(Lower(b, ty, vector), *fn.args)
        pair = b.insert_value(ir.Constant(kind, ir.Undefined), value, 0)
        b.ret(b.insert_value(pair, flag, 1))
    declarations = []
    for g in module.globals.values():  # the C library's functions and LLVM's intrinsics
        if isinstance(g, ir.Function) and g is not fn:
            params = ", ".join(str(t) for t in g.function_type.args)
            declarations.append(
                (g.name, f"declare {g.function_type.return_type} @{g.name}({params})")
            )
    text = plain(str(fn))
    return OpFunction(name, text, tuple(sorted(declarations)), _count(text))


def _count(text: str) -> int:
    """Instructions of a printed function (its lines but the signature, labels and braces)."""
    return sum(
        1
        for line in text.split("\n")
        if line.startswith("  ") and line.strip() and not line.strip().startswith(";")
    )


def functions_for(
    ops, vector: bool, fast_ops=(), tier: str = "llvm", dtype: str = "float64"
) -> list[OpFunction]:
    """The functions a module computing ``ops`` (and the ``fast`` forms of ``fast_ops``) at
    ``dtype`` needs."""
    return [op_function(op, vector, False, tier, dtype) for op in ops] + [
        op_function(op, vector, True, tier, dtype) for op in fast_ops
    ]


def declarations(functions: list[OpFunction]) -> dict[str, str]:
    """The external functions ``functions`` call: name -> ``declare`` line."""
    found: dict[str, str] = {}
    for f in functions:
        found.update(f.declarations)
    return dict(sorted(found.items()))

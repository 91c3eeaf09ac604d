"""An op's lowering printed as LLVM IR: one ``internal alwaysinline`` function per op and module.

The LLVM tier's chunks and the instant tier's machine compute a node as
``%t = call double @op.<name>.f64(double %x, ...)``; the function is the op's ``lower``
(``compiler.ir.lowering``) written by llvmlite's IRBuilder, printed once per module. LLVM inlines
it (``alwaysinline``: the O3 pipeline and the O0 one both run the always-inliner), so the call
costs nothing and the optimiser sees the op's instructions in the loop.

An op with a ``fast`` form (sin, cos) is also printed as ``@op.<name>.fast.f64`` returning
``{double, i1}``: the value and whether the point needs ``lower``'s exact path. A gate without a
lowering of its own (a user's or a discovered one) is printed from its stable form, one call of
each of its ops' functions; an op with none of these is ``LoweringError``, never a recursion.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache

from llvmlite import ir

from compiler.codegen import llvm_legacy
from compiler.ir.graph import CONST, INPUT
from compiler.ir.lowering import DOUBLE, Lower, LoweringError, function_of
from compiler.ir.registry import OPS, OpDef

_PLAIN = re.compile(r'([%@])"([-a-zA-Z$._][-a-zA-Z$._0-9]*)"')
_CALLS = re.compile(r"@([-a-zA-Z$._0-9]+)\(")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
FAST_TYPE = "{ double, i1 }"


@dataclass(frozen=True)
class OpFunction:
    """One op's function: its ``symbol``, its definition's ``text``, the external functions it
    calls (name -> ``declare`` line), the op functions it calls (a gate's), and its cost."""

    symbol: str
    text: str
    declarations: tuple[tuple[str, str], ...]
    uses: tuple[str, ...]  # op names whose functions this one calls
    instructions: int


def symbol(op: str, fast: bool = False) -> str:
    """``op.<name>.f64`` (``op.<name>.fast.f64``); a name that is not a plain identifier (a
    user's gate) is numbered instead, so no user text reaches the IR."""
    name = op if _IDENT.match(op) else "g" + hashlib.sha256(op.encode()).hexdigest()[:12]
    return f"op.{name}{'.fast' if fast else ''}.f64"


def plain(text: str) -> str:
    """llvmlite's quoted names (``%".1"``, ``@"llvm.exp.f64"``) unquoted where LLVM allows."""
    return _PLAIN.sub(r"\1\2", text)


def op_function(op: str, vector: bool, fast: bool = False, tier: str = "llvm") -> OpFunction:
    """The function computing ``op`` for code meant (``vector``) or not for LLVM's vectoriser."""
    spec = OPS.get(op)
    if spec is None:
        raise LoweringError(op, tier, "not in the op table")
    return _printed(spec, vector, fast, tier, ())


@lru_cache(maxsize=1024)
def _printed(spec: OpDef, vector: bool, fast: bool, tier: str, within: tuple) -> OpFunction:
    name = symbol(spec.name, fast)
    lower = spec.fast if fast else spec.lower
    if lower is not None:
        return _from_lower(name, spec, lower, vector, fast)
    lines = llvm_legacy.body(spec.name, vector, fast) if spec.origin == "builtin" else None
    if lines is not None:
        return _from_lines(name, spec.arity, lines, fast)
    if fast:
        raise LoweringError(spec.name, tier, "no fast form")
    if spec.origin != "builtin" and spec.name not in within:
        return _expanded(name, spec, vector, tier, within + (spec.name,))
    raise LoweringError(spec.name, tier)


def _from_lower(name: str, spec: OpDef, lower, vector: bool, fast: bool) -> OpFunction:
    if not fast:
        module, fn = function_of(name, lower, spec.arity, DOUBLE, vector)
    else:  # fast: (value, needs the exact path) as one struct
        module = ir.Module()
        kind = ir.LiteralStructType([DOUBLE, ir.IntType(1)])
        fn = ir.Function(module, ir.FunctionType(kind, [DOUBLE] * spec.arity), name)
        fn.linkage = "internal"
        fn.attributes.add("alwaysinline")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        value, flag = lower(Lower(b, DOUBLE, vector), *fn.args)
        pair = b.insert_value(ir.Constant(kind, ir.Undefined), value, 0)
        b.ret(b.insert_value(pair, flag, 1))
    declarations = []
    for g in module.globals.values():
        if isinstance(g, ir.Function) and g is not fn:
            params = ", ".join(str(t) for t in g.function_type.args)
            declarations.append(
                (g.name, f"declare {g.function_type.return_type} @{g.name}({params})")
            )
    text = plain(str(fn))
    return OpFunction(name, text, tuple(sorted(declarations)), (), _count(text))


def _from_lines(name: str, arity: int, lines: list[str], fast: bool) -> OpFunction:
    params = ", ".join(f"double %{p}" for p in "ab"[:arity])
    if fast:
        tail = [
            f"%ret.v = insertvalue {FAST_TYPE} undef, double %r, 0",
            f"%ret.f = insertvalue {FAST_TYPE} %ret.v, i1 %p.big, 1",
            f"ret {FAST_TYPE} %ret.f",
        ]
    else:
        tail = ["ret double %r"]
    returns = FAST_TYPE if fast else "double"
    text = "\n".join(
        [f"define internal {returns} @{name}({params}) alwaysinline {{", "entry:"]
        + [f"  {line}" for line in lines + tail]
        + ["}"]
    )
    called = sorted({c for line in lines for c in _CALLS.findall(line)})
    declarations = tuple((c, llvm_legacy.DECLARATIONS[c]) for c in called)
    return OpFunction(name, text, declarations, (), len(lines))


def _expanded(name: str, spec: OpDef, vector: bool, tier: str, within: tuple) -> OpFunction:
    """A gate from its stable form: one call of each of its ops' functions."""
    template = _template(spec.stable or spec.definition)
    params = ", ".join(f"double %{p}" for p in "ab"[: spec.arity])
    values: dict[int, str] = {}
    lines: list[str] = []
    uses: list[str] = []
    cost = 1
    for t, node in enumerate(template.nodes):
        if node.op == INPUT:
            values[t] = f"%{node.value}"
        elif node.op == CONST:
            values[t] = llvm_legacy.literal(node.value)
        else:
            callee = OPS.get(node.op)
            if callee is None:
                raise LoweringError(spec.name, tier, f"its stable form uses {node.op}")
            inner = _printed(callee, vector, False, tier, within)
            uses.append(callee.name)
            cost += inner.instructions
            args = ", ".join(f"double {values[a]}" for a in node.args)
            lines.append(f"%g{t} = call double @{inner.symbol}({args})")
            values[t] = f"%g{t}"
    result = values[template.outputs[0]]
    lines.append(f"%r = fadd double {result}, {llvm_legacy.MINUS_ZERO}")  # x + -0 is x, even -0
    text = "\n".join(
        [f"define internal double @{name}({params}) alwaysinline {{", "entry:"]
        + [f"  {line}" for line in lines + ["ret double %r"]]
        + ["}"]
    )
    return OpFunction(name, text, (), tuple(dict.fromkeys(uses)), cost)


def _template(text: str):
    # A user's gate's stable form is symgrad's text language (never sympify'd).
    from compiler.frontend.text import parse

    return parse(text)


def _count(text: str) -> int:
    """Instructions of a printed function (its lines but the signature, labels and braces)."""
    return sum(
        1
        for line in text.split("\n")
        if line.startswith("  ") and line.strip() and not line.strip().startswith(";")
    )


def closure(ops, vector: bool, fast_ops=(), tier: str = "llvm") -> list[OpFunction]:
    """The functions a module computing ``ops`` (and the ``fast`` forms of ``fast_ops``) needs,
    callees before callers, each once."""
    done: dict[str, OpFunction] = {}

    def visit(f: OpFunction) -> None:
        for used in f.uses:
            visit(op_function(used, vector, tier=tier))
        done.setdefault(f.symbol, f)

    for op in ops:
        visit(op_function(op, vector, tier=tier))
    for op in fast_ops:
        visit(op_function(op, vector, True, tier))
    return list(done.values())


def declarations(functions: list[OpFunction]) -> dict[str, str]:
    """The external functions ``functions`` call: name -> ``declare`` line."""
    found: dict[str, str] = {}
    for f in functions:
        found.update(f.declarations)
    return dict(sorted(found.items()))

"""One op's entry in the op table (``compiler.ir.registry``): everything symgrad knows of it."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

#: An op's name: generated code calls its lowering by it (``compiler.codegen.audit``'s
#: ``callable_name``), so it is a plain ASCII identifier, never text to escape.
OP_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@dataclass(frozen=True)
class OpDef:
    """One elementwise op.

    ``text`` prints the op in graph listings and is also how the text parser spells it;
    ``code`` prints it in generated Numba source; ``numpy`` evaluates it (constant folding,
    oracles); ``symbol`` is the short label drawings use.
    """

    name: str
    arity: int
    definition: str
    text: str
    code: str | None  # Numba source text (being replaced by ``lower``); None for new entries
    numpy: Callable[..., float]
    symbol: str
    grads: tuple[str, ...] | None = None
    commutative: bool = False
    helper: str | None = None  # name of the runtime.scalar function the code calls, if any
    # The op's lowering (``compiler.ir.lowering``): ``lower(L, *operands) -> value``, written
    # once, used by every tier. ``fast``, where an op has one, returns ``(value, exact)``: a
    # faster form and an i1 saying the point needs ``lower``'s exact path (sin and cos of huge
    # arguments), for the LLVM tier's vectorised loops with their exact twins.
    lower: Callable | None = None
    fast: Callable | None = None
    # Gates (see the module docstring): the subgraphs fusion turns into this op, the stable
    # formula ``code`` computes, more helpers a composed ``code`` calls, and who made the entry.
    patterns: tuple[str, ...] = ()
    stable: str | None = None
    calls: tuple[str, ...] = ()
    origin: str = "builtin"  # "builtin", "user" (compiler.register_gate) or "discovered"

    @property
    def helpers(self) -> tuple[str, ...]:
        """Every ``runtime.scalar`` function the generated code calls for this op."""
        return tuple(dict.fromkeys(((self.helper,) if self.helper else ()) + self.calls))

    @property
    def is_gate(self) -> bool:
        return bool(self.patterns) or self.origin != "builtin"


def entry(
    name: str,
    definition: str,
    *,
    grads: tuple[str, ...],
    numpy: Callable[..., float],
    lower: Callable,
    arity: int = 1,
    fast: Callable | None = None,
    text: str | None = None,
    symbol: str | None = None,
    commutative: bool = False,
    patterns: tuple[str, ...] = (),
    stable: str | None = None,
) -> OpDef:
    """One op's entry, the way ``compiler/ir/ops/*.py`` write them: a function call by default
    (``erf(x)``, ``atan2(y, x)``), printed and drawn by its name.

    ``definition`` is exact SymPy text over ``a`` (and ``b``); ``grads`` the local gradients, text
    over ``a``, ``b`` and the output ``y`` (checked against ``sympy.diff``); ``numpy`` the oracle;
    ``lower`` the lowering (``compiler.ir.lowering``)."""
    call = f"{name}({', '.join('{' + p + '}' for p in 'ab'[:arity])})"
    return OpDef(
        name, arity, definition, text or call, None, numpy, symbol or name, grads, commutative,
        patterns=patterns, stable=stable, lower=lower, fast=fast,
    )  # fmt: skip

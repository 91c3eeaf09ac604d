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
    ``numpy`` is the test oracle (the op's value by NumPy, never a tier's); ``symbol`` is the
    short label drawings use.
    """

    name: str
    arity: int
    definition: str
    text: str
    numpy: Callable[..., float]
    symbol: str
    grads: tuple[str, ...] | None = None
    commutative: bool = False
    # The op's lowering (``compiler.ir.lowering``): ``lower(L, *operands) -> value``, written
    # once, used by every tier. ``fast``, where an op has one, returns ``(value, exact)``: a
    # faster form and an i1 saying the point needs ``lower``'s exact path (sin and cos of huge
    # arguments), for the LLVM tier's vectorised loops with their exact twins.
    lower: Callable | None = None
    fast: Callable | None = None
    # Gates (see the module docstring): the subgraphs fusion turns into this op, the stable
    # formula its lowering computes, and who made the entry. Patterns written "lhs -> rhs" are
    # stabilisations (``compiler/passes/fusion/patterns.py``); an ordinary op may carry them
    # (log1p, hypot) and stays an ordinary op: a gate is an op with a stable form, or a user's.
    patterns: tuple[str, ...] = ()
    stable: str | None = None
    origin: str = "builtin"  # "builtin", "user" (compiler.register_gate) or "discovered"
    # Where the op is defined and smooth: what the random-expression oracle (tests/test_oracle.py)
    # needs to draw operands and to keep its points off kinks, so that a new op is tested with no
    # edit to the test. ``domain``: per operand, "" (any real), an open interval "(lo, hi)" its
    # values must lie in ("(0, inf)" for log), "natural" (a small natural number: polygamma's
    # order) or "truth" (a truth value, 0 or 1: where's condition); () is "" for every operand.
    # ``kinks``: NumPy text over ``a``, ``b``, ``c``, each zero where the op is not smooth (abs at
    # 0: "a"; floor at the integers: "sin(pi * a)"; maximum's tie: "a - b"). ``truth``: the op's
    # values are truth values, 1.0 or 0.0 (comparisons, logic), which may feed a "truth" operand.
    domain: tuple[str, ...] = ()
    kinks: tuple[str, ...] = ()
    truth: bool = False
    # Local gradients to differentiate once more (second order: ``passes.second_order``), where
    # ``grads`` carry rounding corrections or guards whose own derivatives are 0 and would only
    # lengthen a Hessian's program: exact derivatives too (checked against ``sympy.diff``), a few
    # ulps less accurate as values. None: ``grads`` serve both orders.
    smooth_grads: tuple[str, ...] | None = None
    # A nest of this op (each inner node read only by the next) is one op of many operands whose
    # gradient in a leaf ``a`` is ``nest_weight`` (text over ``a`` and the nest's value ``y``)
    # and whose Hessian in the leaves is diag(w) - w wᵀ: log-sum-exp's softmax weights. The
    # Hessian pass (``passes.hessian``) then takes the nest as one node — one outer product of
    # the nest's tangent, not one per level of it.
    nest_weight: str | None = None

    @property
    def is_gate(self) -> bool:
        """A lecture gate: a built-in one states its stable form; users' and discovered entries
        are all gates. (Patterns alone do not make one: fusion builds expm1 too.)"""
        return self.stable is not None or self.origin != "builtin"


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
    domain: tuple[str, ...] = (),
    kinks: tuple[str, ...] = (),
    truth: bool = False,
    smooth_grads: tuple[str, ...] | None = None,
    nest_weight: str | None = None,
) -> OpDef:
    """One op's entry, the way ``compiler/ir/ops/*.py`` write them: a function call by default
    (``erf(x)``, ``atan2(y, x)``), printed and drawn by its name.

    ``definition`` is exact SymPy text over ``a`` (and ``b``); ``grads`` the local gradients, text
    over ``a``, ``b`` and the output ``y`` (checked against ``sympy.diff``); ``numpy`` the oracle;
    ``lower`` the lowering (``compiler.ir.lowering``); ``domain``, ``kinks`` and ``truth`` where it is
    defined and smooth; ``smooth_grads`` the gradients a second derivative differentiates;
    ``nest_weight`` a nest's weights (``OpDef``'s fields)."""
    call = f"{name}({', '.join('{' + p + '}' for p in 'ab'[:arity])})"
    return OpDef(
        name, arity, definition, text or call, numpy, symbol or name, grads, commutative,
        patterns=patterns, stable=stable, lower=lower, fast=fast,
        domain=domain, kinks=kinks, truth=truth, smooth_grads=smooth_grads,
        nest_weight=nest_weight,
    )  # fmt: skip

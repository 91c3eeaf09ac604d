"""The op table: every op declared once — definition, printing, evaluation, gradient.

Frontends, the adjoint pass, codegen and (later) fusion and drawing all read this table, so adding an
op touches one entry. Definitions are SymPy text over the placeholders ``a``, ``b``; local gradients
come from ``sympy.diff`` of the definition unless ``grads`` states them (over ``a``, ``b`` and the
op's own output ``y``) — used where ``diff``'s form is numerically poor or a kink needs a choice.

Kink table (documented subgradient choices, tested):

=============  =========================================
relu'(0)       0
abs'(0)        0  (sign(0) = 0)
max/min tie    each operand gets half (partials sum to 1)
sqrt'(0)       inf
d/db a**b      0 where a == 0 (xlogy convention), b*a**(b-1) for d/da
=============  =========================================
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


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
    code: str
    numpy: Callable[..., float]
    symbol: str
    grads: tuple[str, ...] | None = None
    commutative: bool = False
    helper: str | None = None  # name of the runtime.scalar function the code calls, if any


def _xlogy(x, y):
    with np.errstate(all="ignore"):
        return np.where((x == 0) & ~np.isnan(y), 0.0, x * np.log(y))


def _sigmoid(x):
    with np.errstate(all="ignore"):
        return np.where(x >= 0, 1.0 / (1.0 + np.exp(-x)), np.exp(x) / (1.0 + np.exp(x)))


def _unary(name, definition, code, numpy, grads=None, helper=None):
    return OpDef(
        name, 1, definition, f"{name}({{a}})", code, numpy, name, grads=grads, helper=helper
    )


_OPS = [
    OpDef("add", 2, "a + b", "{a} + {b}", "{a} + {b}", np.add, "+", commutative=True),
    OpDef("sub", 2, "a - b", "{a} - {b}", "{a} - {b}", np.subtract, "-"),
    OpDef("mul", 2, "a * b", "{a} * {b}", "{a} * {b}", np.multiply, "*", commutative=True),
    OpDef("div", 2, "a / b", "{a} / {b}", "{a} / {b}", np.divide, "/"),
    OpDef("neg", 1, "-a", "-{a}", "-{a}", np.negative, "-x"),
    # d/db uses xlogy so that a**b at a = 0, b > 0 has gradient 0 rather than 0 * log(0) = nan.
    OpDef(
        "pow",
        2,
        "a**b",
        "{a} ** {b}",
        "{a} ** {b}",
        np.power,
        "**",
        grads=("b * a ** (b - 1)", "xlogy(y, a)"),
    ),
    _unary("exp", "exp(a)", "math.exp({a})", np.exp),
    _unary("log", "log(a)", "math.log({a})", np.log, grads=("1 / a",)),
    _unary("log1p", "log(1 + a)", "math.log1p({a})", np.log1p, grads=("1 / (1 + a)",)),
    _unary("expm1", "exp(a) - 1", "math.expm1({a})", np.expm1, grads=("y + 1",)),
    _unary("sqrt", "sqrt(a)", "math.sqrt({a})", np.sqrt, grads=("0.5 / y",)),
    _unary("sin", "sin(a)", "math.sin({a})", np.sin),
    _unary("cos", "cos(a)", "math.cos({a})", np.cos),
    _unary("tan", "tan(a)", "math.tan({a})", np.tan, grads=("1 + y * y",)),
    _unary("tanh", "tanh(a)", "math.tanh({a})", np.tanh, grads=("1 - y * y",)),
    _unary("abs", "Abs(a)", "abs({a})", np.abs),
    _unary("sign", "sign(a)", "sign({a})", np.sign, grads=("0",), helper="sign"),
    # The sigmoid gate: its local gradient is stated from its own output, as in the lecture.
    _unary(
        "sigmoid",
        "1 / (1 + exp(-a))",
        "sigmoid({a})",
        _sigmoid,
        grads=("y * (1 - y)",),
        helper="sigmoid",
    ),
    _unary(
        "relu",
        "Max(0, a)",
        "relu({a})",
        lambda a: np.maximum(0.0, a),
        grads=("heaviside(a, 0)",),
        helper="relu",
    ),
    OpDef(
        "maximum",
        2,
        "Max(a, b)",
        "maximum({a}, {b})",
        "maximum({a}, {b})",
        np.maximum,
        "max",
        commutative=True,
        helper="maximum",
    ),
    OpDef(
        "minimum",
        2,
        "Min(a, b)",
        "minimum({a}, {b})",
        "minimum({a}, {b})",
        np.minimum,
        "min",
        commutative=True,
        helper="minimum",
    ),
    # heaviside(x, h): 0 below zero, h at zero, 1 above (NumPy's np.heaviside); a kink selector.
    OpDef(
        "heaviside",
        2,
        "Heaviside(a, b)",
        "heaviside({a}, {b})",
        "heaviside({a}, {b})",
        np.heaviside,
        "H",
        grads=("0", "0"),
        helper="heaviside",
    ),
    OpDef(
        "xlogy",
        2,
        "a * log(b)",
        "xlogy({a}, {b})",
        "xlogy({a}, {b})",
        _xlogy,
        "xlogy",
        grads=("log(b)", "a / b"),
        helper="xlogy",
    ),
]

OPS: dict[str, OpDef] = {op.name: op for op in _OPS}

# Functions the text language and ``compiler.ops`` offer, by the name users write.
FUNCTIONS: dict[str, str] = {
    op.name: op.name for op in _OPS if op.name not in ("add", "sub", "mul", "div", "neg")
}
FUNCTIONS["pow"] = "pow"

CONSTANTS: dict[str, float] = {"pi": math.pi}


def sympy_definition(op: str):
    """The op's definition as a SymPy expression over real placeholders ``a`` and ``b``."""
    return _sympy_definitions()[op]


_SYMPY_CACHE: dict = {}


def _sympy_definitions() -> dict:
    # SymPy is imported lazily: the warm-cache path never needs it (import costs ~0.4 s).
    if not _SYMPY_CACHE:
        import sympy

        a, b, y = sympy.symbols("a b y", real=True)
        ns = {
            "a": a,
            "b": b,
            "y": y,
            "Max": sympy.Max,
            "Min": sympy.Min,
            "Abs": sympy.Abs,
            "exp": sympy.exp,
            "log": sympy.log,
            "sqrt": sympy.sqrt,
            "sin": sympy.sin,
            "cos": sympy.cos,
            "tan": sympy.tan,
            "tanh": sympy.tanh,
            "sign": sympy.sign,
            "Heaviside": sympy.Heaviside,
        }
        for op in _OPS:
            # Our own trusted definitions, never user text.
            _SYMPY_CACHE[op.name] = sympy.sympify(op.definition, locals=ns)
        _SYMPY_CACHE["__symbols__"] = (a, b, y)
    return _SYMPY_CACHE


def placeholders():
    """The SymPy placeholder symbols ``(a, b, y)`` used by every definition."""
    return _sympy_definitions()["__symbols__"]

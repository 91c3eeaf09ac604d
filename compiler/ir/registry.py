"""The op table: every op declared once — definition, printing, evaluation, gradient.

Frontends, the adjoint pass, codegen and (later) fusion and drawing all read this table, so adding an
op touches one entry. Definitions are SymPy text over the placeholders ``a``, ``b``. Local gradients
are stated in ``grads`` (text over ``a``, ``b`` and the op's own output ``y``, like the lecture's
gate patterns) and checked against ``sympy.diff`` of the definition by the test suite; an op that
states none (a user's gate) gets ``sympy.diff`` at compile time. Stating them keeps SymPy's 0.4 s
import off the compile path, and lets kinks and numerically poor forms be chosen deliberately.

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


def _unary(name, definition, code, numpy, grads, helper=None):
    return OpDef(name, 1, definition, f"{name}({{a}})", code, numpy, name, grads, helper=helper)


def _call2(name, definition, numpy, symbol, grads, commutative=False):
    call = f"{name}({{a}}, {{b}})"
    return OpDef(name, 2, definition, call, call, numpy, symbol, grads, commutative, helper=name)


def _infix(name, sign, numpy, grads, commutative=False):
    text = f"{{a}} {sign} {{b}}"
    return OpDef(name, 2, f"a {sign} b", text, text, numpy, sign, grads, commutative)


# fmt: off
_OPS = [
    # The lecture's gate patterns: add distributes the upstream gradient, mul swaps its inputs.
    _infix("add", "+", np.add, ("1", "1"), commutative=True),
    _infix("sub", "-", np.subtract, ("1", "-1")),
    _infix("mul", "*", np.multiply, ("b", "a"), commutative=True),
    _infix("div", "/", np.divide, ("1 / b", "-y / b")),
    # d/db through xlogy: a**b at a = 0, b > 0 has gradient 0, not 0 * log(0) = nan.
    _infix("pow", "**", np.power, ("b * a ** (b - 1)", "xlogy(y, a)")),
    OpDef("neg", 1, "-a", "-{a}", "-{a}", np.negative, "-x", ("-1",)),
    _unary("exp", "exp(a)", "math.exp({a})", np.exp, ("y",)),
    _unary("log", "log(a)", "math.log({a})", np.log, ("1 / a",)),
    _unary("log1p", "log(1 + a)", "math.log1p({a})", np.log1p, ("1 / (1 + a)",)),
    _unary("expm1", "exp(a) - 1", "math.expm1({a})", np.expm1, ("y + 1",)),
    _unary("sqrt", "sqrt(a)", "math.sqrt({a})", np.sqrt, ("0.5 / y",)),
    _unary("sin", "sin(a)", "math.sin({a})", np.sin, ("cos(a)",)),
    _unary("cos", "cos(a)", "math.cos({a})", np.cos, ("-sin(a)",)),
    _unary("tan", "tan(a)", "math.tan({a})", np.tan, ("1 + y * y",)),
    _unary("tanh", "tanh(a)", "math.tanh({a})", np.tanh, ("1 - y * y",)),
    _unary("abs", "Abs(a)", "abs({a})", np.abs, ("sign(a)",)),
    _unary("sign", "sign(a)", "sign({a})", np.sign, ("0",), helper="sign"),
    # The sigmoid gate: its local gradient is stated from its own output, as in the lecture.
    _unary("sigmoid", "1 / (1 + exp(-a))", "sigmoid({a})", _sigmoid, ("y * (1 - y)",),
           helper="sigmoid"),
    _unary("relu", "Max(0, a)", "relu({a})", lambda a: np.maximum(0.0, a),
           ("heaviside(a, 0)",), helper="relu"),
    _call2("maximum", "Max(a, b)", np.maximum, "max",
           ("heaviside(a - b, 0.5)", "heaviside(b - a, 0.5)"), commutative=True),
    _call2("minimum", "Min(a, b)", np.minimum, "min",
           ("heaviside(b - a, 0.5)", "heaviside(a - b, 0.5)"), commutative=True),
    # heaviside(x, h): 0 below zero, h at zero, 1 above (np.heaviside); selects at kinks.
    _call2("heaviside", "Heaviside(a, b)", np.heaviside, "H", ("0", "0")),
    _call2("xlogy", "a * log(b)", _xlogy, "xlogy", ("log(b)", "a / b")),
]
# fmt: on

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

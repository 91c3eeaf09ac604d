"""The op table: every op declared once — definition, printing, evaluation, gradient.

Frontends, the adjoint pass, codegen, fusion and drawing all read this table, so adding an op
touches one entry. Definitions are SymPy text over the placeholders ``a``, ``b``. Local gradients
are stated in ``grads`` (text over ``a``, ``b`` and the op's own output ``y``, like the lecture's
gate patterns) and checked against ``sympy.diff`` of the definition by the test suite; an op that
states none (a user's gate) gets ``sympy.diff`` at compile time. Stating them keeps SymPy's 0.4 s
import off the compile path, and lets kinks and numerically poor forms be chosen deliberately.

Gates are ops too. An op with ``patterns`` is a *gate*: the fusion pass
(``compiler/passes/fusion.py``) builds it from those subgraphs (text over ``x``). A gate states the
stable formula its helper computes (``stable``, proved equal to the definition by
``compiler.ir.gates.verify``) and its local gradient from its own output ``y`` where that is
accurate. ``compiler.register_gate`` (``compiler/ir/gates.py``) checks a user's gate with SymPy
and adds its entry here; such entries (``origin`` "user" or "discovered") write their definition
in symgrad's own text language, never parsed by ``sympify``.

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

import hashlib
import importlib
import inspect
import math
import pkgutil

import numpy as np

from compiler.ir.opdef import OpDef


def _xlogy(x, y):
    with np.errstate(all="ignore"):
        return np.where((x == 0) & ~np.isnan(y), 0.0, x * np.log(y))


# The gates' stable forms (the Numba helpers in runtime/scalar.py compute the same): exp only ever
# sees -|x| <= 0, so nothing overflows.
def _sigmoid(x):
    with np.errstate(all="ignore"):
        e = np.exp(-np.abs(x))
        r = 1.0 / (1.0 + e)
        return np.where(x >= 0, r, e * r)


def _softplus(x):
    with np.errstate(all="ignore"):
        return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def _logsigmoid(x):
    with np.errstate(all="ignore"):
        return np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x)))


def _unary(name, definition, code, numpy, grads, helper=None):
    return OpDef(name, 1, definition, f"{name}({{a}})", code, numpy, name, grads, helper=helper)


def _gate(name, definition, numpy, grads, stable, patterns, code=None, helper=None):
    helper = helper if code else (helper or name)
    code = code or f"{name}({{a}})"
    return OpDef(name, 1, definition, f"{name}({{a}})", code, numpy, name, grads, helper=helper,
                 patterns=patterns, stable=stable)  # fmt: skip


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
    # exp: runtime.scalar's branch-free exp, which LLVM vectorises (math.exp is a libm call).
    _unary("exp", "exp(a)", "exp({a})", np.exp, ("y",), helper="exp"),
    _unary("log", "log(a)", "math.log({a})", np.log, ("1 / a",)),
    _unary("log1p", "log(1 + a)", "math.log1p({a})", np.log1p, ("1 / (1 + a)",)),
    _unary("expm1", "exp(a) - 1", "math.expm1({a})", np.expm1, ("y + 1",)),
    _unary("sqrt", "sqrt(a)", "math.sqrt({a})", np.sqrt, ("0.5 / y",)),
    _unary("sin", "sin(a)", "math.sin({a})", np.sin, ("cos(a)",)),
    _unary("cos", "cos(a)", "math.cos({a})", np.cos, ("-sin(a)",)),
    _unary("tan", "tan(a)", "math.tan({a})", np.tan, ("1 + y * y",)),
    _unary("abs", "Abs(a)", "abs({a})", np.abs, ("sign(a)",)),
    _unary("sign", "sign(a)", "sign({a})", np.sign, ("0",), helper="sign"),
    # ---- gates: ops the fusion pass also builds from the subgraphs in their patterns (over x).
    # The lecture's sigmoid gate. Its local gradient is sigma(x) * sigma(-x): from its own output
    # y like the lecture's y * (1 - y), but accurate where 1 - y rounds to 0 (x = 37.43).
    _gate("sigmoid", "1 / (1 + exp(-a))", _sigmoid, ("y * sigmoid(-a)",),
          stable="exp(minimum(a, 0)) / (1 + exp(-abs(a)))",
          patterns=("1 / (1 + exp(-x))", "exp(x) / (1 + exp(x))", "1 - 1 / (1 + exp(x))",
                    "0.5 + 0.5 * tanh(0.5 * x)")),
    # math.tanh is stable; fusion finds it in its exp forms.
    _gate("tanh", "tanh(a)", np.tanh, ("1 - y * y",), stable="tanh(a)", code="math.tanh({a})",
          patterns=("(exp(x) - exp(-x)) / (exp(x) + exp(-x))", "(exp(2 * x) - 1) / (exp(2 * x) + 1)",
                    "(1 - exp(-2 * x)) / (1 + exp(-2 * x))", "expm1(2 * x) / (exp(2 * x) + 1)",
                    "2 / (1 + exp(-2 * x)) - 1", "2 * sigmoid(2 * x) - 1")),
    # softplus' = sigma(x) = 1 - exp(-y): from the output alone, and exactly 0.5 at x = 0.
    _gate("softplus", "log(1 + exp(a))", _softplus, ("-expm1(-y)",),
          stable="maximum(a, 0) + log1p(exp(-abs(a)))",
          patterns=("log(1 + exp(x))", "log1p(exp(x))", "-log(sigmoid(-x))",
                    "-log(1 / (1 + exp(x)))", "-logsigmoid(-x)")),
    # log sigma(x) = -softplus(-x); its gradient sigma(-x) = -expm1(y).
    _gate("logsigmoid", "-log(1 + exp(-a))", _logsigmoid, ("-expm1(y)",),
          stable="minimum(a, 0) - log1p(exp(-abs(a)))",
          patterns=("log(sigmoid(x))", "-log(1 + exp(-x))", "-log1p(exp(-x))",
                    "log(1 / (1 + exp(-x)))", "-softplus(-x)")),
    # relu(x) = max(0, x); relu'(0) = 0 (the kink table), where maximum's tie rule gives 1/2.
    _gate("relu", "Max(0, a)", lambda a: np.maximum(0.0, a), ("heaviside(y, 0)",),
          stable="maximum(a, 0)", patterns=("maximum(0, x)", "(x + abs(x)) / 2",
                                            "0.5 * (x + abs(x))", "x / 2 + abs(x) / 2")),
    _call2("maximum", "Max(a, b)", np.maximum, "max",
           ("heaviside(a - b, 0.5)", "heaviside(b - a, 0.5)"), commutative=True),
    _call2("minimum", "Min(a, b)", np.minimum, "min",
           ("heaviside(b - a, 0.5)", "heaviside(a - b, 0.5)"), commutative=True),
    # heaviside(x, h): 0 below zero, h at zero, 1 above (np.heaviside); selects at kinks.
    _call2("heaviside", "Heaviside(a, b)", np.heaviside, "H", ("0", "0")),
    _call2("xlogy", "a * log(b)", _xlogy, "xlogy", ("log(b)", "a / b")),
]
# fmt: on


def _collect() -> list[OpDef]:
    """Every entry of every module in ``compiler/ir/ops`` (each module's ``OPS`` list), modules
    in name order, entries in their module's order; an entry there replaces one of ``_OPS``'s."""
    import compiler.ir.ops as package

    found: dict[str, OpDef] = {op.name: op for op in _OPS}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for op in getattr(module, "OPS", ()):
            found[op.name] = op
    return list(found.values())


def _is_function(op: OpDef) -> bool:
    """Whether users write the op by name (``erf(x)``); ``pow`` is also Python's ``pow``."""
    return op.text.startswith(f"{op.name}(") or op.name == "pow"


_BUILTIN: dict[str, OpDef] = {op.name: op for op in _collect()}

OPS: dict[str, OpDef] = dict(_BUILTIN)

# Functions the text language and ``compiler.ops`` offer, by the name users write.
FUNCTIONS: dict[str, str] = {op.name: op.name for op in OPS.values() if _is_function(op)}

CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}


def register(op: OpDef, sympy_form=None) -> None:
    """Add (or replace) one op at run time: one entry is all every tier needs. ``sympy_form``
    is its definition as SymPy (else its ``definition`` is read as built-in, trusted text)."""
    OPS[op.name] = op
    if _is_function(op):
        FUNCTIONS[op.name] = op.name
    _SYMPY_CACHE.pop(op.name, None)
    if sympy_form is not None:
        _GIVEN_SYMPY[op.name] = sympy_form
    else:
        _GIVEN_SYMPY.pop(op.name, None)
    _changed()


def unregister(name: str) -> None:
    """Withdraw an op added by ``register`` (a built-in entry comes back if it replaced one)."""
    if name in _BUILTIN:
        OPS[name] = _BUILTIN[name]
    else:
        OPS.pop(name, None)
        FUNCTIONS.pop(name, None)
    _SYMPY_CACHE.pop(name, None)
    _GIVEN_SYMPY.pop(name, None)
    _changed()


_VERSION = [0]


def _changed() -> None:
    _VERSION[0] += 1


def version() -> int:
    """A counter bumped by every ``register``/``unregister``: tiers that print the whole table
    (the instant tier's machine) rebuild when it moves."""
    return _VERSION[0]


def sympy_definition(op: str):
    """The op's definition as a SymPy expression over real placeholders ``a`` and ``b``."""
    cache = _sympy_definitions()
    if op not in cache:
        a, b, y = cache["__symbols__"]
        spec = OPS[op]
        if op in _GIVEN_SYMPY:
            expr = _GIVEN_SYMPY[op]
        elif spec.origin == "builtin":  # an entry added at run time: trusted text, like ours
            expr = _sympify(spec.definition, (a, b, y))
        else:
            # A user's or a discovered gate: its text is symgrad's language, never sympify'd.
            # (The one upward import left: gates are to hand their SymPy form to ``register``.)
            import sympy

            from compiler.frontend.text import parse

            expr = parse(spec.definition).to_sympy()
            expr = expr.xreplace({sympy.Symbol("a"): a, sympy.Symbol("b"): b})
        cache[op] = expr
    return cache[op]


def forget_sympy_definition(op: str) -> None:
    """Drop a cached definition (its gate was unregistered)."""
    _SYMPY_CACHE.pop(op, None)


def fingerprint(op: str) -> str:
    """What a kernel's cache key must cover beyond symgrad's source files: the whole entry of an
    op that is not one of the files' own (added at run time, a user's or a discovered gate):
    definition, printing, gradients, stable form and the source of its lowering. Empty for the
    files' own ops and for leaves."""
    spec = OPS.get(op)
    if spec is None or _BUILTIN.get(op) is spec:
        return ""
    parts = [spec.definition, spec.text, spec.code or "", *(spec.grads or ()), *spec.calls]
    parts += [spec.stable or "", _source(spec.lower), _source(spec.fast)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _source(function) -> str:
    """A lowering's source text (its code object's bytes where the source is not on disk)."""
    if function is None:
        return ""
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        code = getattr(function, "__code__", None)
        return repr((code.co_code, code.co_consts)) if code else repr(function)


_SYMPY_CACHE: dict = {}
_GIVEN_SYMPY: dict = {}


def _namespace(symbols) -> dict:
    """SymPy's own names (every function a definition may use: erf, gamma, ...) and the
    placeholders."""
    import sympy

    a, b, y = symbols
    names = {k: v for k, v in vars(sympy).items() if not k.startswith("_")}
    return {**names, "a": a, "b": b, "y": y}


def _sympify(text: str, symbols):
    import sympy

    return sympy.sympify(text, locals=_namespace(symbols))


def _sympy_definitions() -> dict:
    # SymPy is imported lazily: the warm-cache path never needs it (import costs ~0.4 s).
    if not _SYMPY_CACHE:
        import sympy

        symbols = sympy.symbols("a b y", real=True)
        _SYMPY_CACHE["__symbols__"] = symbols
        for op in _BUILTIN.values():
            # Our own trusted built-in definitions, never user text.
            _SYMPY_CACHE[op.name] = _sympify(op.definition, symbols)
    return _SYMPY_CACHE


def placeholders():
    """The SymPy placeholder symbols ``(a, b, y)`` used by every definition."""
    return _sympy_definitions()["__symbols__"]

"""The op table: every op declared once — definition, printing, evaluation, gradient.

Frontends, the adjoint pass, codegen, fusion and drawing all read this table, so adding an op
touches one entry. The entries live in ``compiler/ir/ops/<family>.py`` (each module's ``OPS``
list, collected here in module-name order): an op added there, or at run time by ``register``, is
on every tier with nothing else to edit, its lowering (``OpDef.lower``) being the one every tier
prints. ``FUNCTIONS`` and the SymPy names a definition may use come from the table and from
SymPy itself, never from a list kept by hand. Definitions are SymPy text over the placeholders ``a``, ``b``. Local gradients
are stated in ``grads`` (text over ``a``, ``b`` and the op's own output ``y``, like the lecture's
gate patterns) and checked against ``sympy.diff`` of the definition by the test suite; an op that
states none (a user's gate) gets ``sympy.diff`` at compile time. Stating them keeps SymPy's 0.4 s
import off the compile path, and lets kinks and numerically poor forms be chosen deliberately.

Gates are ops too. The fusion pass (``compiler/passes/fusion/``) builds an op with ``patterns``
from those subgraphs (text over ``x``, ``y``); such an op is a *gate* if it states a ``stable``
form (an ordinary op like ``expm1`` may carry patterns: stabilisations). A gate states the
stable formula its lowering computes (``stable``, proved equal to the definition by
``compiler.passes.gates.verify``) and its local gradient from its own output ``y`` where that is
accurate. ``compiler.register_gate`` (``compiler/gates.py``) checks a user's gate with SymPy
and adds its entry here; such entries (``origin`` "user" or "discovered") write their definition
in symgrad's own text language, never parsed by ``sympify``. The gates fusion discovers stay out
of this table during the pass: it reads them through ``local`` (its own view, in its thread).

Kink table (documented subgradient choices, tested):

=============  =========================================
relu'(0)       0
abs'(0)        0  (sign(0) = 0)
max/min tie    each operand gets half (partials sum to 1)
sqrt'(0)       inf
d/db a**b      0 where a == 0 (xlogy convention), b*a**(b-1) for d/da (0 where b == 0)
d/db xlogy    0 where a == 0, for every b (xlog1py too)
=============  =========================================
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import math
import pkgutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

from compiler.ir.opdef import OP_NAME, OpDef


def _collect() -> list[OpDef]:
    """Every entry of every module in ``compiler/ir/ops`` (each module's ``OPS`` list), modules
    in name order (``arith`` first: its infix ops lead the table), entries in their order."""
    import compiler.ir.ops as package

    found: dict[str, OpDef] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for op in getattr(module, "OPS", ()):
            found[op.name] = op
    return list(found.values())


def _is_function(op: OpDef) -> bool:
    """Whether users write the op by name (``erf(x)``); ``pow`` is also Python's ``pow``."""
    return op.text.startswith(f"{op.name}(") or op.name == "pow"


class OpTable(dict):
    """The op table: a dict of every entry, built-in and registered, which also answers — in the
    thread (context) running a pass, and there only — for the entries that pass made for itself
    (``local``: the gates fusion discovers). Such entries are never written here: two threads
    compiling at once never see each other's, and the table's contents stay as they are.
    Iterating, ``len`` and ``items`` cover the shared entries only."""

    __slots__ = ()

    def __missing__(self, name: str) -> OpDef:
        local = _LOCAL.get()
        if local is not None and name in local:
            return local[name]
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        if dict.__contains__(self, name):
            return True
        local = _LOCAL.get()
        return local is not None and name in local

    def get(self, name: str, default=None):
        try:
            return self[name]
        except KeyError:
            return default


_LOCAL: ContextVar[Mapping[str, OpDef] | None] = ContextVar("symgrad_local_ops", default=None)


@contextmanager
def local(entries: Mapping[str, OpDef]) -> Iterator[None]:
    """``entries`` readable through ``OPS`` in this context only, for the duration (a pass's
    own view of the table: fusion's rewrite and report read the gates it discovered). Shared
    entries win over local ones of the same name; nothing is written to the table."""
    outer = _LOCAL.get()
    token = _LOCAL.set({**entries, **(outer or {})})
    try:
        yield
    finally:
        _LOCAL.reset(token)


def lookup(name: str) -> OpDef | None:
    """The entry ``name`` (shared, or local to this context's pass), or None."""
    return OPS.get(name)


_BUILTIN: dict[str, OpDef] = {op.name: op for op in _collect()}

OPS: OpTable = OpTable(_BUILTIN)

# Functions the text language and ``compiler.ops`` offer, by the name users write.
FUNCTIONS: dict[str, str] = {op.name: op.name for op in OPS.values() if _is_function(op)}

CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}


def register(op: OpDef, sympy_form=None) -> None:
    """Add (or replace) one op at run time: one entry is all every tier needs. ``sympy_form``
    is its definition as SymPy (else its ``definition`` is read as built-in, trusted text).
    ``ValueError`` for a name that is not a plain identifier (``OP_NAME``): it reaches generated
    code."""
    if not (isinstance(op.name, str) and OP_NAME.fullmatch(op.name)):
        raise ValueError(
            f"op name {op.name!r} must be an ASCII letter then letters, digits or underscores"
        )
    OPS[op.name] = op
    if _is_function(op):
        FUNCTIONS[op.name] = op.name
    _SYMPY_CACHE.pop(op.name, None)
    _FINGERPRINTS.pop(op.name, None)
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
    _FINGERPRINTS.pop(name, None)
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
        else:  # a gate's text is symgrad's language: compiler.gates parses it and registers it
            raise KeyError(f"gate '{op}' was registered without its SymPy form")
        cache[op] = expr
    return cache[op]


def forget_sympy_definition(op: str) -> None:
    """Drop a cached definition (its gate was unregistered)."""
    _SYMPY_CACHE.pop(op, None)


def fingerprint(op: str) -> str:
    """What a kernel's cache key must cover beyond symgrad's source files (which the key hashes
    whole, ``runtime.cache.environment_fingerprint``): what defines an op that is not one of the
    files' own (added at run time, a user's or a discovered gate) — its definition (the SymPy form
    it was registered with, if any), arity, printing, gradients, stable form, and its lowering's
    identity (``_identity``: source, closure and attributes). Empty for the files' own ops and
    for leaves. Kept per entry: ``Graph.key`` asks once per node."""
    spec = lookup(op)
    return "" if spec is None else entry_fingerprint(spec)


def entry_fingerprint(spec: OpDef) -> str:
    """``fingerprint`` of the entry ``spec``, whether or not the table holds it now."""
    op = spec.name
    if _BUILTIN.get(op) is spec:
        return ""
    known = _FINGERPRINTS.get(op)
    if known is not None and known[0] is spec:
        return known[1]
    given = _GIVEN_SYMPY.get(op)
    parts = [spec.definition, repr(spec.arity), spec.text, repr(spec.commutative), spec.origin]
    parts += [*(spec.grads or ("<sympy.diff>",)), spec.stable or "", *spec.patterns]
    parts += [*(spec.smooth_grads or ())]
    parts += ["" if given is None else _srepr(given), _identity(spec.lower), _identity(spec.fast)]
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
    _FINGERPRINTS[op] = (spec, digest)
    return digest


_FINGERPRINTS: dict[str, tuple[OpDef, str]] = {}


def _srepr(expr) -> str:
    import sympy

    return sympy.srepr(expr)


def _identity(value, seen: frozenset[int] = frozenset()) -> str:
    """What a lowering is, as text: a function's module, name and source (its code object where
    the source is not on disk), and — since a factory makes many lowerings of one source
    (``lower_graph`` over a gate's graph, a C library call by name) — what its closure cells,
    defaults and attributes hold, recursively; a graph by its ``key()``."""
    if id(value) in seen:
        return "<cycle>"
    seen = seen | {id(value)}
    if value is None or isinstance(value, (str, int, float, bool)):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_identity(v, seen) for v in value) + "]"
    if isinstance(value, dict):
        items = sorted((repr(k), _identity(v, seen)) for k, v in value.items())
        return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
    if callable(getattr(value, "key", None)) and hasattr(value, "nodes"):
        return f"<graph {value.key()}>"
    code = getattr(value, "__code__", None)
    if code is None:
        return repr(value)
    try:
        source = inspect.getsource(value)
    except (OSError, TypeError):
        source = repr((code.co_code, code.co_consts, code.co_names))
    cells = [c.cell_contents for c in value.__closure__ or () if _filled(c)]
    held = [cells, value.__defaults__, value.__kwdefaults__, dict(vars(value))]
    return f"{value.__module__}.{value.__qualname__}\n{source}\n{_identity(held, seen)}"


def _filled(cell) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


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

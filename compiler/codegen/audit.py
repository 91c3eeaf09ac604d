"""What may reach generated code, and the check every generated module passes before it runs.

Generated source is executed (and cached for other processes), so no input may ever reach it as
code. Inputs reach it in three ways only, each through one function:

- *names* (inputs, SymPy symbols, dimensions) become identifiers through ``Namer``:
  ASCII letters, digits and underscores, never a keyword, a builtin or a generated name;
- *data* (input names as strings, op names, sizes, axes) through ``data``: Python literals;
- *comments* (what a fused gate replaced) through ``comment``: printable ASCII on one line.

Titles (the source text, a SymPy expression) never reach generated code at all.

Then ``check_python`` parses each Python module and checks its shape (a docstring of ours,
imports of allowed modules, literal constants, functions made of arithmetic, loops and calls of
NumPy, math and the module's own functions) and ``check_llvm`` each LLVM module (printable ASCII,
no quoted names or strings, calls only of the math functions symgrad declares). Either failing is
symgrad's bug: the module is refused with a ``CompileError`` and never cached.
"""

from __future__ import annotations

import ast
import builtins
import functools
import keyword
import re

from compiler import pyast
from compiler.errors import CompileError
from compiler.ir.opdef import OP_NAME

NUMBA_DOCSTRING = "symgrad kernels (generated: edit the graph, not this file)."
TENSOR_DOCSTRING = "symgrad tensor kernel (generated: edit the graph, not this file)."
DOCSTRINGS = frozenset({NUMBA_DOCSTRING, TENSOR_DOCSTRING})


# ------------------------------------------------------------------------------ into the source
class Namer:
    """Hands out unique, safe identifiers, whatever the names it is given: the only way a name
    reaches generated code (Python or LLVM IR). Each is ASCII letters, digits and underscores,
    starts with a letter or one underscore, and is never a keyword, a builtin, a reserved name or
    one handed out before: the generated code's own names (claimed after the inputs', or
    reserved) cannot collide with an input's."""

    def __init__(self, reserved: set[str] | frozenset[str]):
        self.taken = set(reserved) | BUILTIN_NAMES

    def claim(self, name: str) -> str:
        if not isinstance(name, str):
            raise TypeError(f"a name must be a str, not {type(name).__name__}")
        name = str.__str__(name)
        base = name if name.isidentifier() and name.isascii() else _sanitise(name)
        if keyword.iskeyword(base) or base.startswith("__"):
            base = "in_" + base.strip("_")
        ident, k = base, 1
        while ident in self.taken:
            ident, k = f"{base}_{k}", k + 1
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", ident), ident
        self.taken.add(ident)
        return ident


def _sanitise(name: str) -> str:
    ascii_name = re.sub(r"[^A-Za-z0-9_]", "_", name.encode("ascii", "backslashreplace").decode())
    return "in_" + ascii_name.strip("_") if not ascii_name[:1].isalpha() else ascii_name


def data(value: object) -> str:
    """``value`` (a str, int, float, bool or None, or a tuple of them) as a Python literal.

    Safe whatever the text: ``str.__repr__`` always writes a literal that evaluates back to the
    same string — the quote it uses and backslashes are escaped, and every non-printable character
    (newlines, ``\\r``, NUL, U+0085, U+2028...) is written as an escape — so the literal is one
    token on one line. The base types' own ``__repr__`` is called, never a subclass's.
    """
    if value is None or isinstance(value, bool):
        return {None: "None", True: "True", False: "False"}[value]
    if isinstance(value, str):
        return str.__repr__(value)
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return (
            float.__repr__(value) if value == value and abs(value) != float("inf") else _bad(value)
        )
    if isinstance(value, tuple):
        items = [data(v) for v in value]
        return f"({', '.join(items)}{',' if len(items) == 1 else ''})"
    raise CompileError(f"cannot write a {type(value).__name__} into generated code")


def _bad(value: float) -> str:
    raise CompileError(f"cannot write {value!r} as a literal; use compiler.codegen's literal()")


def comment(text: str) -> str:
    """``text`` for a comment (Python's ``#``, LLVM's ``;``): printable ASCII only, the rest
    (line breaks of any kind, NUL, non-ASCII, and ``"``, which LLVM IR never needs) as backslash
    escapes, so it cannot end the line."""
    escaped = str(text).encode("ascii", "backslashreplace").decode("ascii")
    return "".join(c if " " <= c <= "~" and c != '"' else f"\\x{ord(c):02x}" for c in escaped)


# ------------------------------------------------------------------------------ op intrinsics
def callable_name(op: str) -> str:
    """The name generated Numba source calls ``op``'s intrinsic by (``runtime.numba_ops``): the
    op's name, with a trailing underscore where that is a Python builtin or keyword (``abs_``),
    one of the generated module's own names (``forward_``, ``np_``) or itself ends with one (a
    gate ``abs_`` is ``abs__``: no two ops ever share a name). An op name that is not a plain
    identifier is never written (``CompileError``)."""
    if not (isinstance(op, str) and OP_NAME.fullmatch(op)):
        raise CompileError(
            f"the op name {op!r} cannot be written into generated code: an op's name is a letter "
            f"then letters, digits or underscores"
        )
    clash = op in BUILTIN_NAMES or keyword.iskeyword(op) or op in _generated_names()
    clash = clash or _REGION.fullmatch(op) is not None
    return f"{op}_" if clash or op.endswith("_") else op


_REGION = re.compile(r"[a-z]+_loop[0-9]+")  # a tensor module's loop functions: fwd_loop0


@functools.cache
def _generated_names() -> frozenset[str]:
    """The names generated modules define or import for themselves (read from the writers, which
    import this module: hence on first use)."""
    from compiler.codegen import entries, numba_source, tensor_source

    names = {*numba_source._RESERVED, *tensor_source._RESERVED, *entries.ENTRIES}
    names |= {f"{e}_serial" for e in entries.ENTRIES}
    for allowed in IMPORTS.values():
        names |= allowed if isinstance(allowed, set) else set()
    constants = "INPUTS USED BACKWARD_READS WRT SAVED SEEDED KINDS SIGNATURES".split()
    return frozenset(names | {"math", "np", *constants})


def op_of_callable(name: str) -> str | None:
    """The op of the table a callable name stands for (``callable_name``'s inverse), or None."""
    from compiler.ir.registry import OPS

    for op in (name, name[:-1] if name.endswith("_") else None):
        if op in OPS and OP_NAME.fullmatch(op) and callable_name(op) == name:
            return op
    return None


# ------------------------------------------------------------------------------ Python modules
#: Modules a generated module may import, and the names it may import from each.
IMPORTS = {
    "math": None,
    "numpy": None,
    "functools": {"partial"},
    "numba": {"get_thread_id", "njit", "prange"},
    "runtime.blocks": {"run_blocks"},
    "runtime.jit": {"BLOCK", "FLAGS", "THREADS", "add_lanes", "in_order", "serial"},
    "runtime.numba_ops": "ops",  # the intrinsics of ops in the table, by ``callable_name``
    "runtime.reductions": "*",
    "runtime.elementwise": {"elementwise"},  # an op over arrays by its lowering
}
#: Builtins the generated code calls; every other builtin name is refused (the Namer keeps
#: input names off all of them).
BUILTINS = frozenset({"range", "float", "abs"})
#: Python's builtin names (a fixed list: ``_`` comes and goes in interactive sessions).
BUILTIN_NAMES = frozenset(n for n in dir(builtins) if not n.startswith("_"))
_FORBIDDEN = BUILTIN_NAMES - BUILTINS
_NODES = (
    ast.Module, ast.Expr, ast.Constant, ast.Import, ast.ImportFrom, ast.alias, ast.Assign,
    ast.AugAssign, ast.FunctionDef, ast.arguments, ast.arg, ast.Return, ast.For, ast.IfExp,
    ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.Call, ast.keyword, ast.Name,
    ast.Attribute, ast.Subscript, ast.Tuple, ast.Dict, ast.Slice, ast.expr_context, ast.operator,
    ast.unaryop, ast.cmpop, ast.boolop,
)  # fmt: skip
_ATTRIBUTES = frozenset({"T", "shape", "numpy"})  # of any value (arrays, OPS entries)
_NUMPY = frozenset(
    "empty array full ascontiguousarray reshape broadcast_to transpose max min sum where"
    " float32".split()
)


def check_python(source: str) -> str:
    """``source`` if it is a module of the shape symgrad writes, else ``CompileError``."""
    try:
        tree = pyast.parse(source)
    except (SyntaxError, ValueError) as e:
        _refuse(f"it does not parse ({e})")
    body = tree.body
    first = body[0] if body else None
    doc = first.value if isinstance(first, ast.Expr) else None
    if not (isinstance(doc, ast.Constant) and doc.value in DOCSTRINGS):
        _refuse("its docstring is not symgrad's")
    for statement in body[1:]:
        _check_top(statement)
    for node in ast.walk(tree):
        _check_node(node)
    return source


def _check_top(s: ast.stmt) -> None:
    if isinstance(s, ast.Import):
        if any(a.name not in IMPORTS or IMPORTS[a.name] is not None for a in s.names):
            _refuse(f"line {s.lineno} imports {[a.name for a in s.names]}")
    elif isinstance(s, ast.ImportFrom):
        allowed = IMPORTS.get(s.module or "")
        names = {a.name for a in s.names}
        if allowed == "ops":
            allowed = {n for n in names if op_of_callable(n) is not None}
        if s.level or allowed is None or "*" in names or not (allowed == "*" or names <= allowed):
            _refuse(f"line {s.lineno} imports {sorted(names)} from {s.module}")
        if any(a.asname for a in s.names):
            _refuse(f"line {s.lineno} renames an import")
    elif isinstance(s, ast.Assign):
        if len(s.targets) != 1 or not isinstance(s.targets[0], ast.Name):
            _refuse(f"line {s.lineno} assigns to something other than a name")
        if not (_literal(s.value) or _alias(s.value) or _elementwise(s.value) or _float32(s.value)):
            _refuse(f"line {s.lineno} assigns something other than a constant")
    elif isinstance(s, ast.FunctionDef):
        if not all(_njit(d) for d in s.decorator_list):
            _refuse(f"line {s.lineno}: a decorator other than njit")
    else:
        _refuse(f"line {s.lineno}: a top-level {type(s).__name__}")


def _subclasses(classes) -> frozenset[type]:
    found, stack = set(), list(classes)
    while stack:
        cls = stack.pop()
        found.add(cls)
        stack += cls.__subclasses__()
    return frozenset(found)


_NODE_TYPES = _subclasses(_NODES)  # exact types: one set lookup per node (modules run long)


def _check_node(node: ast.AST) -> None:
    kind = type(node)
    if kind not in _NODE_TYPES:
        _refuse(f"it contains a {kind.__name__}")
    if kind is ast.Name:
        if node.id.startswith("__") or node.id in _FORBIDDEN:
            _refuse(f"line {node.lineno} names {node.id!r}")
    elif kind is ast.Attribute:
        if not _attribute(node):
            _refuse(f"line {node.lineno} reads the attribute {node.attr!r}")
    elif (kind is ast.Import or kind is ast.ImportFrom) and node.col_offset:
        _refuse(f"line {node.lineno} imports inside a function")


def _attribute(node: ast.Attribute) -> bool:
    if node.attr.startswith("_"):
        return False
    base = node.value
    if isinstance(base, ast.Name) and base.id == "math":
        return True
    if isinstance(base, ast.Name) and base.id == "np":
        return node.attr in _NUMPY or _ufunc(node.attr)
    if (
        isinstance(base, ast.Attribute)
        and isinstance(base.value, ast.Name)
        and base.value.id == "np"
    ):
        return _ufunc(base.attr)  # a ufunc's methods: np.add.reduce
    return node.attr in _ATTRIBUTES


def _ufunc(name: str) -> bool:
    import numpy as np

    return isinstance(getattr(np, name, None), np.ufunc)


def _literal(value: ast.expr) -> bool:
    try:
        ast.literal_eval(value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def _alias(value: ast.expr) -> bool:
    """``serial(forward)``, ``partial(forward, parallel=False)``."""
    return (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Name)
        and value.func.id in ("serial", "partial")
        and all(isinstance(a, ast.Name) for a in value.args)
        and all(isinstance(k.value, ast.Constant) for k in value.keywords)
    )


def _elementwise(value: ast.expr) -> bool:
    """``elementwise("exp")``: an op of the table over arrays, by its lowering."""
    from compiler.ir.registry import OPS

    return (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Name)
        and value.func.id == "elementwise"
        and len(value.args) == 1
        and not value.keywords
        and isinstance(value.args[0], ast.Constant)
        and isinstance(value.args[0].value, str)
        and value.args[0].value in OPS
    )


def _float32(value: ast.expr) -> bool:
    """``np.float32(0.1)``: a float32 constant of a float32 kernel, of one number only (a
    numeric literal, ``math.nan`` or ``math.inf``, possibly negated)."""
    if not (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Attribute)
        and isinstance(value.func.value, ast.Name)
        and value.func.value.id == "np"
        and value.func.attr == "float32"
        and len(value.args) == 1
        and not value.keywords
    ):
        return False
    number = value.args[0]
    if isinstance(number, ast.UnaryOp) and isinstance(number.op, (ast.USub, ast.UAdd)):
        number = number.operand
    if isinstance(number, ast.Attribute):
        return (
            isinstance(number.value, ast.Name)
            and number.value.id == "math"
            and number.attr in ("nan", "inf")
        )
    return isinstance(number, ast.Constant) and type(number.value) in (int, float)


def _njit(decorator: ast.expr) -> bool:
    """``@njit(...)`` with constant keywords and ``**FLAGS``."""
    return (
        isinstance(decorator, ast.Call)
        and isinstance(decorator.func, ast.Name)
        and decorator.func.id == "njit"
        and not decorator.args
        and all(
            isinstance(k.value, ast.Constant)
            or (k.arg is None and isinstance(k.value, ast.Name) and k.value.id == "FLAGS")
            for k in decorator.keywords
        )
    )


# ------------------------------------------------------------------------------ LLVM modules
_GLOBAL = re.compile(r"@([-\w.$]+)")


def check_llvm(text: str, symbols: set[str] | frozenset[str], declared: set[str]) -> str:
    """``text`` if it is LLVM IR of the shape symgrad writes: printable ASCII, no quoted names
    or strings, and no global but ``symbols`` (its own functions) and ``declared`` (the math
    functions it may call); else ``CompileError``."""
    if not (text.isascii() and all(line.isprintable() for line in text.split("\n"))):
        _refuse("its IR has a character outside printable ASCII")
    if '"' in text:
        _refuse("its IR has a quoted name or string")
    code = "\n".join(
        line.split(";", 1)[0] for line in text.split("\n")
    )  # no strings: ; starts a comment
    unknown = {g for g in _GLOBAL.findall(code) if g not in symbols and g not in declared}
    if unknown:
        _refuse(f"its IR names the globals {sorted(unknown)[:5]}")
    return text


def _refuse(why: str):
    raise CompileError(
        f"symgrad's generated code failed its audit: {why}; this is a bug in symgrad"
    )

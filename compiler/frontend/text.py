"""Text → Graph, safely: Python's ``ast`` parses, a whitelist walks, nothing is ever evaluated.

Accepted: numbers, names, ``+ - * / **``, unary ``-``/``+``, parentheses and calls of the functions
in the op registry (``exp(x)``, ``maximum(a, b)``, ...). On a ``TensorGraph`` (inputs with declared
shapes) also NumPy's ``a @ b``, ``x.T`` and the tensor functions ``sum``, ``mean``, ``max``, ``min``
(with ``axis=`` and ``keepdims=``), ``transpose``, ``dot`` and ``matmul``. Anything else raises
``ParseError`` naming the token and its column. The walk is iterative, so depth is limited only by Python's own parser.
"""

from __future__ import annotations

import ast
import math
import re

from compiler.errors import ParseError, ShapeError
from compiler.ir.graph import Graph
from compiler.ir.registry import CONSTANTS, FUNCTIONS, OPS
from compiler.ir.shapes import normalize_axes
from compiler.ir.tensor import TensorGraph
from compiler.ir.tensor_ops import TENSOR_OPS

#: Tensor functions of the text language: how many array operands each takes. Every tensor op a
#: listing prints is one (``compiler.ir.tensor_ops``), so a listing's lines parse back.
TENSOR_FUNCTIONS = {
    **{name: op.arity for name, op in TENSOR_OPS.items()}, "mean": 1, "dot": 2
}  # fmt: skip
_REDUCTIONS = ("sum", "mean", "max", "min", "logsumexp", "sumsq")
#: The static options of each tensor function after its arrays, in order (those marked
#: required in _REQUIRED must be given): what a listing prints, as NumPy names them.
_OPTIONS = {
    **{name: ("axis", "keepdims") for name in _REDUCTIONS},
    **{name: ("axis",) for name in ("softmax", "log_softmax", "take_along_axis", "ties")},
    **{name: ("shape",) for name in ("reshape", "broadcast_to", "sum_to")},
    "scatter_along_axis": ("axis", "shape"),
}
_REQUIRED = {name: opts for name, opts in _OPTIONS.items() if name not in _REDUCTIONS}
_NEEDS_SHAPES = (
    "needs shapes: declare the inputs' shapes, as in "
    "compile_gradient(text, shapes={'W': ('n', 'm'), 'x': ('m',)})"
)

_BINOPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.Pow: "pow"}
_UNARY = (ast.USub, ast.UAdd)
_OPERATOR_TEXT = {
    ast.MatMult: "@",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.BitAnd: "&",
    ast.Invert: "~",
    ast.Not: "not",
}
MAX_LENGTH = 10_000_000
_LONG_INT = re.compile(r"\d{4301,}")  # Python refuses longer int literals (max_str_digits)
_TOKEN = re.compile(r"\w+|\*\*|//|\S|.")  # one token of text, roughly


def parse(text: str, graph: Graph | None = None) -> Graph:
    """Parse ``text`` into a graph whose single output is the expression.

    >>> print(parse("(x + y) * z"))
    t0 = x + y
    t1 = t0 * z
    return t1
    """
    if not isinstance(text, str):
        raise ParseError(f"expected a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ParseError(
            f"expression is {len(text):,} characters long; the limit is {MAX_LENGTH:,}"
        )
    if not text.strip():
        raise ParseError("empty expression")
    source = _Source(text)
    tree = _parse_ast(source)
    graph = graph if graph is not None else Graph()
    graph.outputs = [_Walker(source, graph).build(tree.body)]
    return graph


class _Source:
    """The text as parsed (stripped) and the map from its positions back to the text as given."""

    def __init__(self, text: str):
        self.original = text
        self.text = text.strip()
        lead = text[: len(text) - len(text.lstrip())]
        self.lead_lines = len(_LINE_BREAK.findall(lead))
        self.lead_col = len(_LINE_BREAK.split(lead)[-1])
        self.lines = _LINE_BREAK.split(self.text)
        self.multiline = len(_LINE_BREAK.split(text.rstrip())) > 1

    def char_col(self, lineno: int, byte_col: int) -> int:
        """ast counts columns in UTF-8 bytes; this is the character column on that line."""
        line = self.lines[lineno - 1] if 0 < lineno <= len(self.lines) else ""
        return len(line.encode()[:byte_col].decode(errors="replace"))

    def error(self, message: str, lineno: int, col: int, token: str | None) -> ParseError:
        """A ParseError at (line, character column) of the stripped text, reported for the original."""
        if lineno == 1:
            col += self.lead_col
        where = f" on line {lineno + self.lead_lines}" if self.multiline else ""
        what = f": '{token}'" if token is not None else ""
        return ParseError(f"{message}{what}{where}", column=col, token=token)


_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # how Python's tokenizer splits lines


def _parse_ast(source: _Source) -> ast.Expression:
    null = source.original.find("\0")
    if null >= 0:
        before = source.original[:null]
        col = len(_LINE_BREAK.split(before)[-1])
        where = f" on line {len(_LINE_BREAK.findall(before)) + 1}" if source.multiline else ""
        raise ParseError(f"null byte in the expression: '\\x00'{where}", column=col, token="\x00")
    try:
        return ast.parse(source.text, mode="eval")
    except SyntaxError as e:
        line, col = _syntax_error_position(source, e)
        token = _TOKEN.match(source.lines[line - 1], col)
        if token is None:
            end = "expression" if line == len(source.lines) else "line"
            raise source.error(f"unexpected end of {end}", line, col, None) from None
        message = "invalid syntax" if e.msg == "invalid syntax" else f"invalid syntax ({e.msg})"
        raise source.error(message, line, col, token.group()[:40]) from None
    except (RecursionError, MemoryError):
        raise ParseError(
            "expression is nested too deeply for Python's parser: a few thousand levels at most, "
            "where each operator of a chain such as a+b+c+... counts as one level"
        ) from None
    except ValueError as e:  # anything else ast refuses
        raise ParseError(f"invalid text: {e}") from None


def _syntax_error_position(source: _Source, e: SyntaxError) -> tuple[int, int]:
    """(1-based line, 0-based character column) of a SyntaxError in the stripped text."""
    lines = source.lines
    line = e.lineno if e.lineno and 0 < e.lineno <= len(lines) else 1
    if e.offset and e.offset > 0:  # Python's offsets count characters, from 1
        return line, min(e.offset - 1, len(lines[line - 1]))
    digits = _LONG_INT.search(source.text) if "digits" in str(e.msg) else None
    if digits:  # an integer literal beyond Python's digit limit
        before = _LINE_BREAK.split(source.text[: digits.start()])
        return len(before), len(before[-1])
    return len(lines), len(lines[-1])  # Python points nowhere: the text ended too soon


class _Walker:
    """Post-order walk over the AST with an explicit stack."""

    def __init__(self, source: _Source, graph: Graph):
        self.source = source
        self.graph = graph

    def build(self, root: ast.AST) -> int:
        values: list[int] = []
        stack: list[tuple[ast.AST, bool]] = [(root, False)]
        while stack:
            node, visited = stack.pop()
            if visited:
                values.append(self._emit(node, values))
                continue
            children = self._children(node)
            stack.append((node, True))
            stack.extend((c, False) for c in reversed(children))
        return values[-1]

    # ------------------------------------------------------------ validation
    def _children(self, node: ast.AST) -> list[ast.AST]:
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.MatMult):
                self._need_tensor(node, "@")
                return [node.left, node.right]
            if type(node.op) not in _BINOPS:
                raise self._error(node, "unsupported operator", _OPERATOR_TEXT.get(type(node.op)))
            return [node.left, node.right]
        if isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, _UNARY):
                raise self._error(node, "unsupported operator", _OPERATOR_TEXT.get(type(node.op)))
            return [node.operand]
        if isinstance(node, ast.Call):
            return self._call_args(node)
        if isinstance(node, (ast.Name, ast.Constant)):
            return []
        if isinstance(node, ast.Attribute) and node.attr == "T":
            self._need_tensor(node, ".T")
            return [node.value]
        raise self._error(node, f"unsupported syntax ({type(node).__name__})")

    def _call_args(self, node: ast.Call) -> list[ast.AST]:
        if not isinstance(node.func, ast.Name):
            raise self._error(node.func, "only calls of named functions are allowed")
        name = node.func.id
        if name in TENSOR_FUNCTIONS:
            self._need_tensor(node.func, name)
            return self._tensor_args(node, name)
        if name not in FUNCTIONS:
            raise self._error(node.func, f"unknown function '{name}'", name)
        if node.keywords:
            raise self._error(node.keywords[0], f"{name}() takes no keyword arguments")
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self._error(arg, "starred arguments are not allowed")
        arity = OPS[FUNCTIONS[name]].arity
        if len(node.args) != arity:
            raise self._error(
                node, f"{name}() takes {arity} argument(s), got {len(node.args)}", name
            )
        return list(node.args)

    def _need_tensor(self, node: ast.AST, token: str) -> None:
        if not isinstance(self.graph, TensorGraph):
            raise self._error(node, f"'{token}' {_NEEDS_SHAPES}", token)

    def _tensor_args(self, node: ast.Call, name: str) -> list[ast.AST]:
        """The array operands of a tensor function; its static options are read in _emit."""
        n = TENSOR_FUNCTIONS[name]
        allowed = _OPTIONS.get(name, ())
        positional = n + len(allowed)
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self._error(arg, "starred arguments are not allowed")
        if not n <= len(node.args) <= positional:
            raise self._error(node, f"{name}() takes {n} array argument(s)", name)
        for kw in node.keywords:
            if kw.arg not in allowed:
                raise self._error(kw, f"{name}() takes no keyword argument '{kw.arg}'", kw.arg)
        self._options(node, name)  # validated now, before anything is built
        return list(node.args[:n])

    def _options(self, node: ast.Call, name: str) -> dict:
        """The static options (``axis``, ``keepdims``, ``shape``) of a tensor function, from
        positional or keyword arguments."""
        names = _OPTIONS.get(name, ())[: len(node.args) - TENSOR_FUNCTIONS[name]]
        given = dict(zip(names, node.args[TENSOR_FUNCTIONS[name] :]))
        for kw in node.keywords:
            if kw.arg in given:
                raise self._error(kw, f"{name}() got '{kw.arg}' twice", kw.arg)
            given[kw.arg] = kw.value
        missing = [k for k in _REQUIRED.get(name, ()) if k not in given]
        if missing:
            arrays = ", ".join("xyz"[: TENSOR_FUNCTIONS[name]])
            example = ", ".join(f"{k}={'1' if k == 'axis' else '(n, 1)'}" for k in missing)
            raise self._error(
                node, f"{name}() needs {' and '.join(missing)}, as in {name}({arrays}, {example})"
            )
        options = {k: self._static(v) for k, v in given.items()}
        if "shape" in options:
            options["shape"] = self._shape(given["shape"], options["shape"])
        if not isinstance(options.get("keepdims", False), bool):
            raise self._error(given["keepdims"], "keepdims must be True or False")
        axis = options.get("axis")
        items = axis if isinstance(axis, tuple) else (axis,)
        if any(isinstance(a, bool) or not isinstance(a, (int, type(None))) for a in items) or (
            isinstance(axis, tuple) and None in axis
        ):
            raise self._error(given["axis"], "axis must be an integer, a tuple of them, or None")
        return options

    def _static(self, node: ast.AST):
        """A literal option: an int (maybe negative), True/False/None, or a tuple of ints."""
        if isinstance(node, ast.Constant) and (
            node.value is None or isinstance(node.value, (bool, int))
        ):
            return node.value
        if (
            isinstance(node, ast.UnaryOp)
            and isinstance(node.op, ast.USub)
            and isinstance(node.operand, ast.Constant)
            and type(node.operand.value) is int
        ):
            return -node.operand.value
        if isinstance(node, ast.Tuple):
            return tuple(self._static(e) for e in node.elts)
        if isinstance(node, ast.Name):  # a dimension's name, in a shape
            return node.id
        raise self._error(node, "expected a literal: an integer, a tuple of integers, True/False")

    def _shape(self, node: ast.AST, value) -> tuple:
        """A ``shape=`` option: sizes and the graph's dimension names, as a listing prints it."""
        dims = value if isinstance(value, tuple) else (value,)
        known = self.graph.dim_names if isinstance(self.graph, TensorGraph) else set()
        for d in dims:
            if isinstance(d, str) and d not in known:
                raise self._error(node, f"'{d}' in a shape is no dimension of the inputs", d)
            if isinstance(d, bool) or not isinstance(d, (int, str)) or isinstance(d, int) and d < 0:
                raise self._error(node, "a shape is a tuple of sizes and dimension names")
        return dims

    # ------------------------------------------------------------ building
    def _emit(self, node: ast.AST, values: list[int]) -> int:
        g = self.graph
        if isinstance(node, ast.Constant):
            return g.const(self._number(node))
        if isinstance(node, ast.Name):
            return self._name(node)
        if isinstance(node, ast.UnaryOp):
            operand = values.pop()
            return g.add("neg", operand) if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            right, left = values.pop(), values.pop()
            if isinstance(node.op, ast.MatMult):
                return self._shaped(node, g.matmul, left, right)
            return self._shaped(node, g.add, _BINOPS[type(node.op)], left, right)
        if isinstance(node, ast.Attribute):  # x.T
            return self._shaped(node, g.add, "transpose", values.pop())
        call = node  # ast.Call, validated in _call_args
        name = call.func.id
        if name in TENSOR_FUNCTIONS:
            return self._tensor_call(call, name, values)
        args = [values.pop() for _ in call.args][::-1]
        return self._shaped(call, g.add, FUNCTIONS[name], *args)

    def _tensor_call(self, call: ast.Call, name: str, values: list[int]) -> int:
        g = self.graph
        args = [values.pop() for _ in range(TENSOR_FUNCTIONS[name])][::-1]
        options = self._options(call, name)
        if name in _REDUCTIONS:
            return self._shaped(call, g.reduce, name, args[0], **options)
        if name in _OPTIONS:
            return self._shaped(call, self._tensor_op, name, args, **options)
        if name == "transpose":
            return self._shaped(call, g.add, "transpose", args[0])
        if name == "dot" and not (g.shapes[args[0]] and g.shapes[args[1]]):
            return self._shaped(call, g.add, "mul", *args)  # NumPy: dot of a scalar multiplies
        return self._shaped(call, g.matmul, *args)

    def _tensor_op(self, name: str, args: list[int], axis=None, shape=None) -> int:
        """A tensor op with its axis (normalized as NumPy's) and/or target shape."""
        g = self.graph
        if axis is None and "axis" in _OPTIONS[name]:
            raise ShapeError(f"{name}() needs an integer axis (or a tuple of them), not None")
        if axis is not None:
            axis = normalize_axes(axis, len(g.shapes[args[0]]), f"{name}()")
        if axis is not None and not axis:
            raise ShapeError(f"{name}() needs at least one axis")
        if name in ("take_along_axis", "scatter_along_axis") and len(axis) != 1:
            raise ShapeError(f"{name}() takes one axis, not {len(axis)}")
        if name == "scatter_along_axis":
            return g.add(name, *args, attrs=(axis[0], shape))
        return g.add(name, *args, attrs=axis if shape is None else shape)

    def _shaped(self, node: ast.AST, build, *args, **kwargs) -> int:
        """``build(*args)``, with a ShapeError pointed at the text that wrote it."""
        try:
            return build(*args, **kwargs)
        except ShapeError as e:
            src = self.source
            col = src.char_col(node.lineno, node.col_offset)
            token = (ast.get_source_segment(src.text, node) or "")[:40]
            raise ShapeError(f"{e} (column {col}: '{token}')") from None

    def _number(self, node: ast.Constant) -> float:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._error(node, f"unsupported literal {value!r}")
        try:
            return float(value)
        except OverflowError:  # an integer literal beyond float64: NumPy's float would be inf
            return math.inf

    def _name(self, node: ast.Name) -> int:
        if node.id in CONSTANTS:
            return self.graph.const(CONSTANTS[node.id])
        if node.id in FUNCTIONS:
            raise self._error(node, f"'{node.id}' is a function: call it, as in {node.id}(x)")
        g = self.graph
        if isinstance(g, TensorGraph) and node.id in g.dim_names and node.id not in g.declared:
            return g.dim(node.id)  # a dimension's name stands for its size: sum(x) / n
        if isinstance(g, TensorGraph) and node.id not in g.declared:  # as listings print it
            dim = node.id.removeprefix("size_")
            if dim != node.id and dim in g.dim_names:
                return g.dim(dim)
        return g.input(node.id)

    def _error(self, node: ast.AST, message: str, token: str | None = None) -> ParseError:
        src = self.source
        lineno, col = node.lineno, src.char_col(node.lineno, node.col_offset)
        if isinstance(node, ast.BinOp) and token:
            # The operator is the first occurrence of its text after the left operand (only
            # whitespace, closing parentheses and comments lie between). No unparse: it recurses.
            left = node.left
            lineno, col = left.end_lineno, src.char_col(left.end_lineno, left.end_col_offset)
            while lineno <= len(src.lines):
                found = src.lines[lineno - 1].find(token, col)
                if found >= 0:
                    col = found
                    break
                lineno, col = lineno + 1, 0
            else:
                lineno, col = node.lineno, src.char_col(node.lineno, node.col_offset)
        if token is None:
            token = (ast.get_source_segment(src.text, node) or type(node).__name__)[:40]
        return src.error(message, lineno, col, token)

"""Text → Graph, safely: Python's ``ast`` parses, a whitelist walks, nothing is ever evaluated.

Accepted: numbers, names, ``+ - * / **``, unary ``-``/``+``, parentheses and calls of the functions
in the op registry (``exp(x)``, ``maximum(a, b)``, ``where(x > 0, x, 0)``, ...); comparisons
``< <= > >= == !=`` (chained as Python chains them: ``0 < x < 1``) giving 1.0 or 0.0, and ``&``,
``|``, ``~`` on truth values (nonzero is true), with Python's precedence: ``&`` binds tighter than
``<``, so write ``(x > 0) & (y > 0)``. On a ``TensorGraph`` (inputs with declared
shapes) also NumPy's ``a @ b``, ``x.T`` and the tensor functions ``sum``, ``mean``, ``max``, ``min``
(with ``axis=`` and ``keepdims=``), ``transpose``, ``dot`` and ``matmul``. Anything else raises
``ParseError`` naming the token and its column. The walk is iterative, so depth is limited only by Python's own parser.

Before parsing, the text is screened in O(n) time and memory: at most ``MAX_LENGTH`` characters
and ``MAX_TOKENS`` tokens (Python's AST costs about 500 bytes a token), no null bytes or lone
surrogates, and no name spelt two ways that NFKC normalisation (which Python applies) would merge.
"""

from __future__ import annotations

import ast
import itertools
import math
import re
import unicodedata
import warnings

from compiler import pyast
from compiler.errors import ParseError, ShapeError, did_you_mean
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

_BINOPS = {
    ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.Pow: "pow",
    ast.BitAnd: "logical_and", ast.BitOr: "logical_or",
}  # fmt: skip
_UNARY = (ast.USub, ast.UAdd, ast.Invert)
_COMPARISONS = {
    ast.Lt: "lt", ast.LtE: "le", ast.Gt: "gt", ast.GtE: "ge", ast.Eq: "eq", ast.NotEq: "ne"
}  # fmt: skip
_LOGIC_HINT = " (on truth values write & | ~ with parentheses: (x > 0) & ~(y > 0))"
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
_OPERATOR_HINTS = {ast.BitXor: " (use ** for powers, as in x**2)"}
MAX_LENGTH = 10_000_000
MAX_TOKENS = 100_000  # at most about 60 MB of Python AST
_COUNTED = re.compile(r"\w+|\S")  # what counts as a token for MAX_TOKENS (over-counts numbers)
_UNREADABLE = re.compile("[\0\ud800-\udfff]")  # null bytes and lone surrogates
_IDENTIFIER = re.compile(r"(?<![\w.])[^\W\d]\w*")
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
    _screen(text)
    source = _Source(text)
    tree = _parse_ast(source)
    graph = graph if graph is not None else Graph()
    graph.outputs = [_Walker(source, graph).build(tree.body)]
    return graph


def _screen(text: str) -> None:
    """Refuse, in O(n) time and memory, what Python's parser would choke on or take gigabytes
    for (its AST costs about 500 bytes per token): every error names its column."""
    if len(text) > MAX_LENGTH:
        raise _error_at(
            text, MAX_LENGTH, f"expression is {len(text):,} characters long; the limit is "
            f"{MAX_LENGTH:,}, reached here", None,
        )  # fmt: skip
    if not text.strip():
        raise ParseError("empty expression", column=0)
    unreadable = _UNREADABLE.search(text)
    if unreadable:
        what = "null byte in the expression" if unreadable[0] == "\0" else "lone surrogate"
        raise _error_at(text, unreadable.start(), what, unreadable[0])
    over = next(itertools.islice(_COUNTED.finditer(text), MAX_TOKENS, None), None)
    if over:
        raise _error_at(
            text, over.start(), f"expression has more than {MAX_TOKENS:,} tokens (names, numbers, "
            "operators, parentheses); the limit is reached here", over[0][:40],
        )  # fmt: skip
    _check_spellings(text)


def _check_spellings(text: str) -> None:
    """Python reads names NFKC-normalised, so '𝐱' and 'x' would silently be one input: refuse
    two spellings of one name."""
    if text.isascii():
        return
    seen: dict[str, tuple[str, int]] = {}
    for match in _IDENTIFIER.finditer(text):
        raw = match[0]
        if not raw.isidentifier():
            continue  # 'x²': Python refuses the character itself, with its column
        name = unicodedata.normalize("NFKC", raw)
        first, where = seen.setdefault(name, (raw, match.start()))
        if first != raw:
            column = _position(text, where)[1]
            raise _error_at(
                text, match.start(), f"'{raw}' and '{first}' (column {column}) are the same name "
                f"'{name}' once Unicode-normalised (NFKC, as Python reads names): spell it one way",
                raw,
            )  # fmt: skip


def _position(text: str, index: int) -> tuple[int, int]:
    """(1-based line, 0-based column) of ``text[index]``, in O(n) time and no extra memory."""
    head = text[:index]
    line = head.count("\n") + head.count("\r") - head.count("\r\n") + 1
    return line, index - max(head.rfind("\n"), head.rfind("\r")) - 1


def _error_at(text: str, index: int, message: str, token: str | None) -> ParseError:
    """A ParseError at ``text[index]`` of the text as given."""
    line, column = _position(text, index)
    multiline = len(_LINE_BREAK.split(text.rstrip(), maxsplit=1)) > 1
    where = f" on line {line}" if multiline else ""
    return ParseError(f"{message}{_shown(message, token)}{where}", column=column, token=token)


def _shown(message: str, token: str | None) -> str:
    """``": 'token'"`` (escaped if unprintable), unless the message already quotes it."""
    if token is None:
        return ""
    shown = token if token.isprintable() else repr(token)[1:-1]
    return "" if f"'{shown}'" in message else f": '{shown}'"


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
        return ParseError(f"{message}{_shown(message, token)}{where}", column=col, token=token)

    def segment(self, node: ast.AST, limit: int = 40) -> str:
        """The start of ``node``'s text, at most ``limit`` characters and one line: O(limit)
        beyond the line's encoding (``ast.get_source_segment`` copies the whole text, slowly)."""
        line = self.lines[node.lineno - 1]
        start = self.char_col(node.lineno, node.col_offset)
        end = len(line)
        if node.end_lineno == node.lineno:
            end = self.char_col(node.lineno, node.end_col_offset)
        return line[start : min(end, start + limit)]


_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # how Python's tokenizer splits lines


def _parse_ast(source: _Source) -> ast.Expression:
    try:
        with warnings.catch_warnings():  # SyntaxWarnings are about Python code, not this text
            warnings.simplefilter("ignore")
            return pyast.parse(source.text, mode="eval")
    except SyntaxError as e:
        line, col = _syntax_error_position(source, e)
        token = _TOKEN.match(source.lines[line - 1], col)
        if token is None:
            end = "expression" if line == len(source.lines) else "line"
            raise source.error(f"unexpected end of {end}", line, col, None) from None
        message = "invalid syntax" if e.msg == "invalid syntax" else f"invalid syntax ({e.msg})"
        raise source.error(message, line, col, token.group()[:40]) from None
    except (RecursionError, MemoryError) as e:
        index, depth = _deepest(source.original)
        if isinstance(e, MemoryError) and depth < _SHALLOW:
            raise  # not the parser's stack overflowing (Python 3.11 says MemoryError) but memory
        raise _error_at(
            source.original, index, "expression is nested too deeply for Python's parser: a few "
            "thousand levels at most, where each operator of a chain such as a+b+c+... counts as "
            "one level; split it into parts, as in (a+b+...)+(c+d+...). It is deepest here",
            _TOKEN.match(source.original, index)[0][:40],
        ) from None  # fmt: skip
    except ValueError as e:  # anything else ast refuses
        raise ParseError(f"invalid text: {e}", column=0) from None


_NESTING = re.compile(r"[(\[{]|[)\]}]|,|\*\*|//|[-+*/@%^&|<>=~!]|\w+|\S")
_SHALLOW = 200  # fewer levels than this cannot overflow Python's parser


def _deepest(text: str) -> tuple[int, int]:
    """Where ``text`` nests deepest, roughly as Python's parser counts: each open bracket and
    each operator of a chain within one bracket (or argument) is a level: (index, levels).
    O(tokens)."""
    groups = [0]  # operators so far in each open bracket's current argument
    depth = deepest = where = 0
    for match in _NESTING.finditer(text):
        token = match[0]
        if token in "([{":
            groups.append(0)
            depth += 1
        elif token in ")]}" and len(groups) > 1:
            depth -= groups.pop() + 1
        elif token == ",":
            depth -= groups[-1]
            groups[-1] = 0
        elif token[0] in "-+*/@%^&|<>=~!":
            groups[-1] += 1
            depth += 1
        if depth > deepest:
            deepest, where = depth, match.start()
    return where, deepest


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


def _literal(node: ast.AST) -> bool:
    """A constant, maybe negated, or a tuple: what can only be an option, never an operand."""
    if isinstance(node, ast.UnaryOp):
        node = node.operand
    return isinstance(node, (ast.Constant, ast.Tuple))


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
                message = "unsupported operator" + _OPERATOR_HINTS.get(type(node.op), "")
                raise self._error(node, message, _OPERATOR_TEXT.get(type(node.op)))
            return [node.left, node.right]
        if isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, _UNARY):
                message = "unsupported operator" + _LOGIC_HINT
                raise self._error(node, message, _OPERATOR_TEXT.get(type(node.op)))
            return [node.operand]
        if isinstance(node, ast.Compare):
            for op in node.ops:
                if type(op) not in _COMPARISONS:
                    name = type(op).__name__
                    raise self._error(node, f"unsupported comparison ({name})", name)
            return [node.left, *node.comparators]
        if isinstance(node, ast.BoolOp):
            word = "and" if isinstance(node.op, ast.And) else "or"
            raise self._error(node, f"unsupported operator '{word}'" + _LOGIC_HINT)
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
        self._not_elementwise(node, name)
        if name in TENSOR_FUNCTIONS:
            self._need_tensor(node.func, name)
            return self._tensor_args(node, name)
        if name not in FUNCTIONS:
            known = [*FUNCTIONS, *TENSOR_FUNCTIONS]
            raise self._error(
                node.func, f"unknown function '{name}'{did_you_mean(name, known)} (the functions "
                "are symgrad.ops.__all__, listed in the README's language section)", name,
            )  # fmt: skip
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

    def _not_elementwise(self, node: ast.Call, name: str) -> None:
        """``max(x, y)`` means NumPy's reduction, whose second argument is an axis: people
        writing it mean the elementwise ``maximum``, so say so."""
        full = {"max": "maximum", "min": "minimum"}.get(name)
        if full is None or len(node.args) < 2:
            return
        if isinstance(self.graph, TensorGraph) and _literal(node.args[1]):
            return  # max(x, 0) on arrays: axis 0
        nested = f", nested for more: {full}(x, {full}(y, z))" if len(node.args) > 2 else ""
        raise self._error(
            node.func, f"{name}() reduces one array; the elementwise {name} of two values is "
            f"{full}(x, y){nested}", name,
        )  # fmt: skip

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
            if isinstance(node.op, ast.Invert):
                return self._shaped(node, g.add, "logical_not", operand)
            return g.add("neg", operand) if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.Compare):
            return self._compare(node, values)
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

    def _compare(self, node: ast.Compare, values: list[int]) -> int:
        """``a < b < c`` as Python reads it: ``(a < b) & (b < c)``, ``b`` computed once."""
        operands = [values.pop() for _ in range(len(node.ops) + 1)][::-1]
        g, result = self.graph, None
        for op, left, right in zip(node.ops, operands, operands[1:]):
            truth = self._shaped(node, g.add, _COMPARISONS[type(op)], left, right)
            result = (
                truth if result is None else self._shaped(node, g.add, "logical_and", result, truth)
            )
        return result

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
            token = src.segment(node)
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
            token = src.segment(node) or type(node).__name__
        return src.error(message, lineno, col, token)

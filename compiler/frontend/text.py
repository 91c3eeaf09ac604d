"""Text → Graph, safely: Python's ``ast`` parses, a whitelist walks, nothing is ever evaluated.

Accepted: numbers, names, ``+ - * / **``, unary ``-``/``+``, parentheses and calls of the functions
in the op registry (``exp(x)``, ``maximum(a, b)``, ...). Anything else raises ``ParseError`` naming
the token and its column. The walk is iterative, so depth is limited only by Python's own parser.
"""

from __future__ import annotations

import ast
import math
import re

from compiler.errors import ParseError
from compiler.ir.graph import Graph
from compiler.ir.registry import CONSTANTS, FUNCTIONS, OPS

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
        raise self._error(node, f"unsupported syntax ({type(node).__name__})")

    def _call_args(self, node: ast.Call) -> list[ast.AST]:
        if not isinstance(node.func, ast.Name):
            raise self._error(node.func, "only calls of named functions are allowed")
        name = node.func.id
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
            return g.add(_BINOPS[type(node.op)], left, right)
        call = node  # ast.Call, validated in _call_args
        args = [values.pop() for _ in call.args][::-1]
        return g.add(FUNCTIONS[call.func.id], *args)

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
        return self.graph.input(node.id)

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

"""Text → Graph, safely: Python's ``ast`` parses, a whitelist walks, nothing is ever evaluated.

Accepted: numbers, names, ``+ - * / **``, unary ``-``/``+``, parentheses and calls of the functions
in the op registry (``exp(x)``, ``maximum(a, b)``, ...). Anything else raises ``ParseError`` naming
the token and its column. The walk is iterative, so depth is limited only by Python's own parser.
"""

from __future__ import annotations

import ast
import math

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
    tree = _parse_ast(text)
    graph = graph if graph is not None else Graph()
    graph.outputs = [_Walker(text, graph).build(tree.body)]
    return graph


def _parse_ast(text: str) -> ast.Expression:
    try:
        return ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        col = (e.offset or 1) - 1
        raise ParseError(f"invalid syntax: {e.msg}", column=col) from None
    except (RecursionError, MemoryError):
        raise ParseError("expression is nested too deeply for Python's parser") from None
    except ValueError as e:  # null bytes, integer literals over the digit limit
        raise ParseError(f"invalid text: {e}") from None


class _Walker:
    """Post-order walk over the AST with an explicit stack."""

    def __init__(self, text: str, graph: Graph):
        self.text = text.strip()
        self.lines = self.text.splitlines() or [""]
        self.shift = len(text) - len(text.lstrip())
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
            raise self._error(node.keywords[0].value, f"{name}() takes no keyword arguments")
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
        line = self.lines[node.lineno - 1] if 0 < node.lineno <= len(self.lines) else ""
        # ast columns count UTF-8 bytes; report characters of the text as given.
        col = len(line.encode()[: node.col_offset].decode(errors="replace"))
        if isinstance(node, ast.BinOp) and token:
            col = line.find(token, col + len(ast.unparse(node.left))) if token in line else col
        if token is None:
            token = (ast.get_source_segment(self.text, node) or type(node).__name__)[:40]
        where = f" on line {node.lineno}" if len(self.lines) > 1 else ""
        if node.lineno == 1:
            col += self.shift
        return ParseError(f"{message}: '{token}'{where}", column=col, token=token)

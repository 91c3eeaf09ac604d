"""SymPy expression → Graph, iteratively, reading SymPy's canonical forms back into readable gates.

``Add`` with negative terms becomes subtractions, ``Mul`` with negative powers becomes a division,
``x**(1/2)`` becomes ``sqrt``. ``Piecewise`` becomes nested ``where`` (its first true condition
wins, as SymPy reads it; no ``True`` at the end leaves nan, SymPy's undefined), relations become
comparisons, ``And``/``Or``/``Not`` the logical ops, and any function an op is defined as
(``floor(a)``, ``ceiling(a)``, ``erf(a)``, ...) that op: the table says. The same routine turns ``sympy.diff`` results into graph fragments
for the adjoint pass.
"""

from __future__ import annotations

import math
from functools import cache

from compiler.errors import ParseError
from compiler.ir.graph import Graph
from compiler.ir.registry import FUNCTIONS, OPS, sympy_definition, version


def from_sympy(expr, graph: Graph | None = None, bind: dict | None = None) -> Graph:
    """Build ``expr`` into ``graph`` (a new one by default); ``bind`` maps symbols to node ids."""
    import sympy

    if not isinstance(expr, sympy.Basic):
        try:
            expr = sympy.Float(float(expr))
        except (TypeError, ValueError):
            raise ParseError(f"expected a SymPy expression, got {type(expr).__name__}") from None
    graph = graph if graph is not None else Graph()
    graph.outputs = [_Builder(graph, bind or {}).build(expr)]
    return graph


class _Builder:
    def __init__(self, graph: Graph, bind: dict):
        import sympy

        self.sp = sympy
        self.graph = graph
        self.bind = bind
        self.functions = {
            sympy.exp: "exp",
            sympy.log: "log",
            sympy.sin: "sin",
            sympy.cos: "cos",
            sympy.tan: "tan",
            sympy.tanh: "tanh",
            sympy.Abs: "abs",
            sympy.sign: "sign",
            sympy.floor: "floor",
            sympy.ceiling: "ceil",
            **_table_functions(version()),
        }
        self.relations = {
            sympy.StrictLessThan: "lt",
            sympy.LessThan: "le",
            sympy.StrictGreaterThan: "gt",
            sympy.GreaterThan: "ge",
            sympy.Equality: "eq",
            sympy.Unequality: "ne",
        }
        self.logic = {sympy.And: "logical_and", sympy.Or: "logical_or"}

    def build(self, root) -> int:
        memo: dict = {}
        stack = [(root, False)]
        while stack:
            expr, visited = stack.pop()
            if expr in memo:
                continue
            if visited:
                memo[expr] = self._emit(expr, memo)
                continue
            stack.append((expr, True))
            stack.extend((c, False) for c in reversed(self._children(expr)) if c not in memo)
        return memo[root]

    def _children(self, expr) -> list:
        sp = self.sp
        if isinstance(expr, sp.Add):
            return [_abs_term(t)[1] for t in expr.args]
        if isinstance(expr, sp.Mul):
            num, den, _ = _split_mul(expr)
            return num + den
        if isinstance(expr, sp.Pow):
            base, exp = expr.args
            return [base] if exp.is_Number else [base, exp]
        if isinstance(expr, sp.Heaviside):
            return [expr.args[0]]
        if isinstance(expr, (sp.Max, sp.Min)) or type(expr) in self.functions:
            return list(expr.args)
        if self._named_op(expr):
            return list(expr.args)
        if type(expr) in self.relations or type(expr) in self.logic or isinstance(expr, sp.Not):
            return list(expr.args)
        if isinstance(expr, sp.Piecewise):
            return [part for pair in expr.args for part in pair]
        if expr in (sp.true, sp.false):
            return []
        if expr.is_Symbol or expr.is_Number or expr.is_NumberSymbol:
            return []
        raise ParseError(f"unsupported SymPy expression {type(expr).__name__}: {str(expr)[:60]}")

    def _emit(self, expr, memo) -> int:
        sp, g = self.sp, self.graph
        if expr.is_Symbol:
            return self.bind[expr] if expr in self.bind else g.input(expr.name)
        if expr in (sp.true, sp.false):
            return g.const(1.0 if expr is sp.true else 0.0)
        if expr.is_Number or expr.is_NumberSymbol:
            return g.const(_number(expr))
        if type(expr) in self.relations:
            return g.add(self.relations[type(expr)], *(memo[a] for a in expr.args))
        if type(expr) in self.logic:
            return _fold(g, self.logic[type(expr)], [memo[a] for a in expr.args])
        if isinstance(expr, sp.Not):
            return g.add("logical_not", memo[expr.args[0]])
        if isinstance(expr, sp.Piecewise):
            return self._piecewise(expr, memo)
        if isinstance(expr, sp.Add):
            return self._add(expr, memo)
        if isinstance(expr, sp.Mul):
            return self._mul(expr, memo)
        if isinstance(expr, sp.Pow):
            return self._pow(expr, memo)
        if isinstance(expr, sp.Heaviside):
            h0 = expr.args[1] if len(expr.args) > 1 else sp.Rational(1, 2)
            return g.add("heaviside", memo[expr.args[0]], g.const(_number(h0)))
        if isinstance(expr, (sp.Max, sp.Min)):
            op = "maximum" if isinstance(expr, sp.Max) else "minimum"
            return _fold(g, op, [memo[a] for a in expr.args])
        op = self.functions.get(type(expr)) or self._named_op(expr)
        return g.add(op, *(memo[a] for a in expr.args))

    def _named_op(self, expr) -> str | None:
        """``sympy.Function("erf")(x)``: an undefined SymPy function named as one of symgrad's
        functions, with its arity, is that op (how an op SymPy lacks is written in SymPy)."""
        from sympy.core.function import AppliedUndef

        if not isinstance(expr, AppliedUndef):
            return None
        op = FUNCTIONS.get(expr.func.__name__)
        return op if op is not None and OPS[op].arity == len(expr.args) else None

    def _piecewise(self, expr, memo) -> int:
        """``Piecewise((e1, c1), (e2, c2), ...)`` as ``where(c1, e1, where(c2, e2, ...))``."""
        g = self.graph
        result = g.const(float("nan"))  # no condition holds: SymPy leaves it undefined
        for value, condition in reversed(expr.args):
            if condition is self.sp.true:
                result = memo[value]
            else:
                result = g.add("where", memo[condition], memo[value], result)
        return result

    def _add(self, expr, memo) -> int:
        g = self.graph
        acc = None
        for term in expr.args:
            negative, magnitude = _abs_term(term)
            value = memo[magnitude]
            if acc is None:
                acc = g.add("neg", value) if negative else value
            else:
                acc = g.add("sub" if negative else "add", acc, value)
        return acc

    def _mul(self, expr, memo) -> int:
        g = self.graph
        num, den, coeff = _split_mul(expr)
        if coeff.is_Rational and not (_overflows(coeff.p) or _overflows(coeff.q)):
            p, q = float(coeff.p), coeff.q  # x/3 stays a division, exact as text's
        else:
            p, q = _number(coeff), 1  # 10**400 * x: inf, as the text gives
        negative = p < 0
        factors = [memo[f] for f in num]
        if abs(p) != 1 or not factors:
            factors.insert(0, g.const(abs(float(p))))
        result = _fold(g, "mul", factors)
        divisors = [memo[f] for f in den]
        if q != 1:
            divisors.insert(0, g.const(float(q)))
        if divisors:
            result = g.add("div", result, _fold(g, "mul", divisors))
        return g.add("neg", result) if negative else result

    def _pow(self, expr, memo) -> int:
        g = self.graph
        base, exp = memo[expr.args[0]], expr.args[1]
        if not exp.is_Number:
            return g.add("pow", base, memo[exp])
        magnitude = abs(exp)
        if magnitude == self.sp.Rational(1, 2):
            value = g.add("sqrt", base)
        else:
            value = g.add("pow", base, g.const(_number(magnitude)))
        return g.add("div", g.const(1.0), value) if exp < 0 else value


@cache
def _table_functions(table_version: int) -> dict:
    """SymPy's function -> the op defined as exactly it applied to its operands (``erf(a)``,
    ``atan2(a, b)``): the op table's entries, read once per version of the table."""
    import sympy

    a, b = sympy.symbols("a b", real=True)
    found = {}
    for name, spec in list(OPS.items()):
        if spec.origin != "builtin":
            continue
        try:
            expr = sympy_definition(name)
        except Exception:  # noqa: BLE001 - an entry SymPy cannot read is no function of it
            continue
        if isinstance(expr, sympy.Function) and expr.args == (a, b)[: spec.arity]:
            found.setdefault(type(expr), name)
    return found


def _abs_term(term):
    """Split an Add term into (is_negative, positive_term)."""
    coeff, rest = term.as_coeff_Mul()
    if coeff.is_Number and coeff < 0:
        return True, -term
    return False, term


def _split_mul(expr):
    """A Mul as (numerator factors, denominator factors with positive powers, numeric coefficient)."""
    coeff, factors = expr.as_coeff_mul()
    num, den = [], []
    for f in factors:
        if f.is_Pow and f.args[1].is_Number and f.args[1] < 0:
            den.append(f.args[0] if f.args[1] == -1 else f.func(f.args[0], -f.args[1]))
        else:
            num.append(f)
    return num, den, coeff


def _fold(g: Graph, op: str, values: list[int]) -> int:
    acc = values[0]
    for v in values[1:]:
        acc = g.add(op, acc, v)
    return acc


def _number(expr) -> float:
    import sympy

    if expr is sympy.nan:
        return math.nan
    if expr is sympy.zoo or expr.is_extended_real is False:  # oo is not is_real, but real
        raise ParseError(f"complex value {expr} is not supported (float64 only)")
    try:
        return float(expr)
    except (TypeError, OverflowError):
        if expr.is_infinite or (expr.is_Number and expr.is_finite):  # 10**400: inf, like text
            return math.inf if expr.is_positive else -math.inf
        raise ParseError(f"unsupported number {str(expr)[:60]}") from None


def _overflows(n) -> bool:
    """An exact number beyond float64 (``float`` would raise)."""
    try:
        float(n)
    except OverflowError:
        return True
    return False

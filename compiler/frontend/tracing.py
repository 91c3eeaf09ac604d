"""Python callable → Graph: call it with tracer values that record each operation as a node."""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Sequence

import numpy as np

from compiler.errors import InputError, ParseError
from compiler.ir.graph import Graph

# NumPy ufuncs a traced function may call on tracers (np.exp(x) works like ops.exp(x)).
_UFUNCS = {
    "add": "add",
    "subtract": "sub",
    "multiply": "mul",
    "true_divide": "div",
    "divide": "div",
    "negative": "neg",
    "power": "pow",
    "exp": "exp",
    "log": "log",
    "log1p": "log1p",
    "expm1": "expm1",
    "sqrt": "sqrt",
    "sin": "sin",
    "cos": "cos",
    "tan": "tan",
    "tanh": "tanh",
    "absolute": "abs",
    "sign": "sign",
    "maximum": "maximum",
    "minimum": "minimum",
    "heaviside": "heaviside",
    "less": "lt",
    "less_equal": "le",
    "greater": "gt",
    "greater_equal": "ge",
    "equal": "eq",
    "not_equal": "ne",
    "logical_and": "logical_and",
    "logical_or": "logical_or",
    "logical_not": "logical_not",
    "floor": "floor",
    "ceil": "ceil",
    "trunc": "trunc",
    "rint": "round",
}

_ROUNDING = ("floor_divide", "remainder", "fmod", "divmod")


class Var:
    """A traced value: arithmetic on it adds nodes to its graph instead of computing."""

    __slots__ = ("graph", "node")
    __array_priority__ = 1000

    def __init__(self, graph: Graph, node: int):
        self.graph, self.node = graph, node

    def _lift(self, other) -> int:
        if isinstance(other, Var):
            if other.graph is not self.graph:
                raise ParseError("values from two different traces were combined")
            return other.node
        if isinstance(other, numbers.Real) and not isinstance(other, bool):
            return self.graph.const(float(other))
        raise ParseError(f"cannot combine a traced value with {type(other).__name__}")

    def apply(self, op: str, *operands) -> Var:
        return Var(self.graph, self.graph.add(op, *(self._lift(o) for o in operands)))

    def __add__(self, o):
        return self.apply("add", self, o)

    def __radd__(self, o):
        return self.apply("add", o, self)

    def __sub__(self, o):
        return self.apply("sub", self, o)

    def __rsub__(self, o):
        return self.apply("sub", o, self)

    def __mul__(self, o):
        return self.apply("mul", self, o)

    def __rmul__(self, o):
        return self.apply("mul", o, self)

    def __truediv__(self, o):
        return self.apply("div", self, o)

    def __rtruediv__(self, o):
        return self.apply("div", o, self)

    def __pow__(self, o):
        return self.apply("pow", self, o)

    def __rpow__(self, o):
        return self.apply("pow", o, self)

    def __neg__(self):
        return self.apply("neg", self)

    def __pos__(self):
        return self

    def __abs__(self):
        return self.apply("abs", self)

    # Comparisons are traced: 1.0 where true, 0.0 where false (nan compares false but for !=),
    # and & | ~ combine them (nonzero is true); ops.where(c, a, b) selects with them.
    def __lt__(self, o):
        return self.apply("lt", self, o)

    def __le__(self, o):
        return self.apply("le", self, o)

    def __gt__(self, o):
        return self.apply("gt", self, o)

    def __ge__(self, o):
        return self.apply("ge", self, o)

    def __eq__(self, o):  # type: ignore[override] - a traced comparison, as NumPy's
        return self.apply("eq", self, o)

    def __ne__(self, o):  # type: ignore[override]
        return self.apply("ne", self, o)

    def __and__(self, o):
        return self.apply("logical_and", self, o)

    def __rand__(self, o):
        return self.apply("logical_and", o, self)

    def __or__(self, o):
        return self.apply("logical_or", self, o)

    def __ror__(self, o):
        return self.apply("logical_or", o, self)

    def __invert__(self):
        return self.apply("logical_not", self)

    def _no_branching(self, *_):
        raise ParseError(
            "a traced value has no truth value: if/else, and, or, not (bool()) on inputs "
            "cannot be traced; select with ops.where(x > 0, a, b) (np.where works too) and "
            "combine conditions with & | ~, as in (x > 0) & ~(y > 1)"
        )

    __bool__ = _no_branching
    __hash__ = object.__hash__

    def __float__(self):
        raise ParseError(
            "math.* functions cannot take traced values; use compiler.ops (exp, log, ...)"
        )

    # round() and math.floor/ceil/trunc are ops (gradient 0); Python's round rounds half to
    # even, as NumPy's.
    def __round__(self, ndigits=None):
        if ndigits is not None:
            raise ParseError("round(x, ndigits) of a traced value is not supported: round(x)")
        return self.apply("round", self)

    def __floor__(self):
        return self.apply("floor", self)

    def __ceil__(self):
        return self.apply("ceil", self)

    def __trunc__(self):
        return self.apply("trunc", self)

    # What Python would otherwise refuse with a bare TypeError, each with what to write instead.
    def _no_rounding(self, *_):
        raise ParseError(
            "int() and // or % of a traced value are not supported: the value stays real; "
            "write ops.floor(x / y) for a floor division (its gradient is 0)"
        )

    __int__ = __index__ = _no_rounding
    __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = __divmod__ = __rdivmod__ = _no_rounding
    __complex__ = __float__

    def _no_container(self, *_):
        raise ParseError(
            "a traced value is one number (elementwise over the arrays the kernel is called "
            "with), not a sequence: len(), indexing and iteration are not supported; give each "
            "component its own input, or declare shapes= and use sum, mean, @ and .T"
        )

    __len__ = __getitem__ = __iter__ = __contains__ = _no_container

    def _no_bitwise(self, *_):
        raise ParseError(
            "operators ^ << >> are not supported on traced values: use ** for powers, as in "
            "x**2 (& | ~ are the logical and, or, not of truth values)"
        )

    __xor__ = __rxor__ = _no_bitwise
    __lshift__ = __rlshift__ = __rshift__ = __rrshift__ = _no_bitwise

    def __getattr__(self, name: str):
        if name.startswith("_"):  # NumPy, SymPy, IPython, copy and pickle probe these
            raise AttributeError(name)
        raise ParseError(
            f"a traced value has no attribute '{name}': it supports arithmetic, compiler.ops "
            "(ops.exp(x)) and NumPy's ufuncs (np.exp(x)); with shapes=, also .T, .shape, "
            ".sum(), .mean(), .max() and .min()"
        )

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if ufunc.__name__ == "matmul" and method == "__call__" and not kwargs:
            a, b = inputs
            return a.__matmul__(b) if isinstance(a, Var) else b.__rmatmul__(a)
        op = _UFUNCS.get(ufunc.__name__)
        if ufunc.__name__ in _ROUNDING:
            self._no_rounding()
        if method != "__call__" or op is None or kwargs:
            raise ParseError(
                f"numpy.{ufunc.__name__}{'' if method == '__call__' else '.' + method} is not "
                f"supported on traced values; these are: {', '.join(_UFUNCS)}"
            )
        first = next(v for v in inputs if isinstance(v, Var))
        return first.apply(op, *inputs)

    # ---- tensor programs (the graph is a TensorGraph: inputs with declared shapes)
    def _tensor(self, what: str):
        from compiler.ir.tensor import TensorGraph

        if not isinstance(self.graph, TensorGraph):
            raise ParseError(
                f"{what} needs shapes: declare the inputs' shapes, as in "
                "compile_gradient(f, shapes={'W': ('n', 'm'), 'x': ('m',)})"
            )
        return self.graph

    def __matmul__(self, o):
        g = self._tensor("@")
        return Var(g, g.matmul(self.node, self._lift(o)))

    def __rmatmul__(self, o):
        g = self._tensor("@")
        return Var(g, g.matmul(self._lift(o), self.node))

    @property
    def T(self) -> Var:
        g = self._tensor(".T")
        return Var(g, g.add("transpose", self.node))

    @property
    def shape(self) -> tuple:
        """The declared shape: ints and dimension names."""
        return self._tensor(".shape").shapes[self.node]

    def reduce(self, op: str, axis=None, keepdims: bool = False) -> Var:
        g = self._tensor(f"{op}()")
        return Var(g, g.reduce(op, self.node, axis, keepdims))

    # NumPy's np.sum(v), np.max(v), ... call these methods on objects that are not arrays.
    def sum(self, axis=None, dtype=None, out=None, keepdims=False, **_):
        return self.reduce("sum", axis, keepdims)

    def mean(self, axis=None, dtype=None, out=None, keepdims=False, **_):
        return self.reduce("mean", axis, keepdims)

    def max(self, axis=None, out=None, keepdims=False, **_):
        return self.reduce("max", axis, keepdims)

    def min(self, axis=None, out=None, keepdims=False, **_):
        return self.reduce("min", axis, keepdims)

    def __array_function__(self, func, types, args, kwargs):
        from compiler import ops

        mine = getattr(ops, func.__name__, None)
        if func.__name__ not in _ARRAY_FUNCTIONS or mine is None:
            raise ParseError(f"numpy.{func.__name__} is not supported on traced values")
        if func.__name__ in _NUMPY_SIGNATURES:
            args, kwargs = _NUMPY_SIGNATURES[func.__name__](*args, **kwargs), {}
        return mine(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Var({self.graph.names[self.node]})"


# NumPy functions a traced function may call (they dispatch to ``compiler.ops``).
_ARRAY_FUNCTIONS = (
    "sum", "mean", "max", "min", "amax", "amin", "dot", "transpose", "matmul",
    "take_along_axis", "reshape", "broadcast_to", "where", "clip", "round",
)  # fmt: skip


def _clip(a, a_min=None, a_max=None, out=None, *, min=None, max=None):  # noqa: A002
    """np.clip's operands: a bound left out (None) is no bound (-inf, inf)."""
    if out is not None:
        raise ParseError("numpy.clip(..., out=) is not supported on traced values")
    lo, hi = a_min if a_min is not None else min, a_max if a_max is not None else max
    return a, -math.inf if lo is None else lo, math.inf if hi is None else hi


def _round(a, decimals=0, out=None):
    """np.round to an integer: the op round (half to even)."""
    if decimals != 0 or out is not None:
        raise ParseError("numpy.round(x, decimals) of a traced value is not supported: round(x)")
    return (a,)


def _where(condition, x=None, y=None):
    if x is None or y is None:
        raise ParseError("numpy.where(condition) of a traced value is not supported: "
                         "np.where(condition, x, y)")  # fmt: skip
    return condition, x, y


# NumPy's signatures of the functions whose options map onto an op's operands.
_NUMPY_SIGNATURES = {"clip": _clip, "round": _round, "where": _where}


def trace_callable(
    fn: Callable, inputs: Sequence[str] | None = None, graph: Graph | None = None
) -> Graph:
    """Call ``fn`` with one tracer per parameter (or per name in ``inputs``) and record the graph
    (into ``graph`` if given: a ``TensorGraph`` with the inputs' shapes)."""
    names = list(inputs) if inputs is not None else _parameter_names(fn)
    if len(set(names)) != len(names):
        raise InputError(f"inputs {names} has duplicates")
    graph = Graph() if graph is None else graph
    tracers = [Var(graph, graph.input(n)) for n in names]
    args, kwargs = _arguments(fn, names, tracers, declared=inputs is not None)
    result = fn(*args, **kwargs)
    if isinstance(result, numbers.Real) and not isinstance(result, bool):
        graph.outputs = [graph.const(float(result))]
    elif isinstance(result, Var) and result.graph is graph:
        graph.outputs = [result.node]
    else:
        raise ParseError(
            f"the traced function returned {type(result).__name__}, not a traced value"
        )
    return graph


def _arguments(fn: Callable, names: list[str], tracers: list[Var], declared: bool):
    """How to call ``fn``: keyword-only parameters by name, the others by position."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return tracers, {}  # a builtin or the like: positional it is
    if declared:
        try:
            signature.bind(*tracers)
        except TypeError as e:
            raise InputError(f"inputs={names} do not fit the callable's parameters: {e}") from None
        return tracers, {}
    kinds = {p.name: p.kind for p in signature.parameters.values()}
    args = [t for n, t in zip(names, tracers) if kinds[n] != inspect.Parameter.KEYWORD_ONLY]
    kwargs = {n: t for n, t in zip(names, tracers) if kinds[n] == inspect.Parameter.KEYWORD_ONLY}
    return args, kwargs


def _parameter_names(fn: Callable) -> list[str]:
    name = getattr(fn, "__name__", type(fn).__name__)
    if isinstance(fn, np.ufunc):  # its signature lists out=, where=, dtype=...: not inputs
        params = ", ".join("xyzw"[: fn.nin]) if fn.nin <= 4 else "*args"
        raise ParseError(
            f"numpy.{name} is a ufunc, not a function of named inputs: pass one that calls "
            f"it, lambda {params}: np.{name}({params})"
        )
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        raise ParseError(
            f"cannot read the parameters of {name}; wrap it, as in lambda x: {name}(x), "
            "or pass inputs=[...]"
        ) from None
    names = []
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ParseError(f"cannot trace *{p.name}/**{p.name}; pass inputs=[...] names")
        names.append(p.name)
    return names

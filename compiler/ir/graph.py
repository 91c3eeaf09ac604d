"""The IR: an SSA DAG of nodes in topological order, each op defined in the registry.

Nodes are hash-consed (a subexpression is stored once), constants fold as float64 through each
op's own lowering (``compiler.ir.elementwise.fold``: the bits a kernel would compute), and a few identities (x + 0, x * 1, -(-x)) simplify as nodes are added. Every traversal
is a loop over the node list, never recursion, so graphs 100,000 nodes deep are fine.
"""

from __future__ import annotations

import ast
import functools
import gc
import hashlib
import math
from collections.abc import Callable, Iterable
from functools import cache
from typing import NamedTuple, TypeVar

from compiler import pyast
from compiler.ir.elementwise import fold
from compiler.ir.registry import OPS, fingerprint, sympy_definition

F = TypeVar("F", bound=Callable)


def gc_paused(fn: F) -> F:
    """``fn`` run with Python's cyclic garbage collector paused: building a graph makes
    100,000s of small tuples, and each of the collections they trigger rescans the whole heap —
    in a process that holds a large one (JAX's, say), a third of a Hessian's compile time.
    Nodes never form cycles; the collector runs again as before when ``fn`` returns."""

    @functools.wraps(fn)
    def paused(*args, **kwargs):
        if not gc.isenabled():
            return fn(*args, **kwargs)
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            gc.enable()

    return paused  # type: ignore[return-value]


INPUT, CONST, SEED = "input", "const", "seed"
LEAVES = (INPUT, CONST, SEED)


class Node(NamedTuple):
    """One SSA value: ``op`` applied to earlier nodes ``args``.

    ``value`` is the float of a constant, or the name of an input. A named tuple rather than a
    frozen dataclass: graphs hold 100,000s of nodes and a tuple is several times cheaper to make.
    """

    op: str
    args: tuple[int, ...] = ()
    value: float | str | None = None


def format_const(value: float) -> str:
    """Short, exact text of a constant for listings: 2, 0.5, -1, -0.0, inf, nan."""
    if value == 0 and math.copysign(1.0, value) < 0:
        return "-0.0"  # not 0: x * -0.0 is -0.0 for x > 0
    if math.isfinite(value) and value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


class Graph:
    """A forward (or adjoint) computation: nodes, display names, declared inputs, outputs.

    >>> g = Graph()
    >>> x, y = g.input("x"), g.input("y")
    >>> g.outputs = [g.add("mul", g.add("add", x, y), g.input("z"))]
    >>> print(g)
    t0 = x + y
    t1 = t0 * z
    return t1
    """

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.names: list[str] = []
        self.outputs: list[int] = []
        self._index: dict[tuple, int] = {}
        self._inputs: dict[str, int] = {}
        self._ops = 0
        # Node -> what a fused gate replaced, a template over its operand "{a}" (passes/fusion.py).
        self.notes: dict[int, str] = {}

    # ----------------------------------------------------------------- building
    @property
    def inputs(self) -> tuple[str, ...]:
        """Input names in order of first appearance."""
        return tuple(self._inputs)

    def input(self, name: str) -> int:
        if name not in self._inputs:
            self._inputs[name] = self._append(Node(INPUT, (), name), name)
        return self._inputs[name]

    def const(self, value: float) -> int:
        value = float(value)
        key = (CONST, value.hex() if not math.isnan(value) else "nan")
        if key not in self._index:
            self._index[key] = self._append(Node(CONST, (), value), format_const(value))
        return self._index[key]

    def seed(self) -> int:
        """The upstream gradient fed to a backward pass (the lecture's dL/d out)."""
        key = (SEED,)
        if key not in self._index:
            self._index[key] = self._append(Node(SEED), "seed")
        return self._index[key]

    def add(self, op: str, *args: int, name: str | None = None) -> int:
        """Add ``op(*args)``, folding constants and reusing an identical node if present."""
        spec = OPS[op]
        if len(args) != spec.arity:
            raise TypeError(f"{op} takes {spec.arity} operand(s), got {len(args)}")
        simplified = self._simplify(op, args)
        if simplified is not None:
            return simplified
        # Commutative ops are binary: x + y and y + x are one node (the node keeps its order).
        key = (op, args[::-1] if spec.commutative and args[0] > args[1] else args)
        index = self._index.get(key)
        if index is None:
            index = self._index[key] = self._append(Node(op, args), name or self._next_name())
        return index

    def copy_node(self, node: Node, args: list[int]) -> int:
        """Add a node like ``node`` (of another graph) over ``args`` (nodes of this graph)."""
        if node.op == INPUT:
            return self.input(node.value)
        if node.op == CONST:
            return self.const(node.value)
        if node.op == SEED:
            return self.seed()
        return self.add(node.op, *args)

    def empty_like(self) -> Graph:
        """A new empty graph of the same kind (a tensor graph keeps its declared shapes)."""
        return Graph()

    def _next_name(self) -> str:
        self._ops += 1
        return f"t{self._ops - 1}"

    def _append(self, node: Node, name: str) -> int:
        self.nodes.append(node)
        self.names.append(name)
        return len(self.nodes) - 1

    def constant_value(self, i: int) -> float | None:
        node = self.nodes[i]
        return node.value if node.op == CONST else None

    def _simplify(self, op: str, args: tuple[int, ...]) -> int | None:
        """A node equal to ``op(*args)`` by a rule — constants folded, x + 0, x * 1, -(-x) —
        or None. The hot path of every pass (tracing, adjoint, copies): most nodes have no
        constant operand and are no double negation, and leave after one loop."""
        nodes = self.nodes
        for a in args:
            if nodes[a].op == CONST:
                break
        else:
            if op == "neg" and nodes[args[0]].op == "neg":
                return nodes[args[0]].args[0]
            return None
        simplified = self._identity(op, args)
        if simplified is None and all(nodes[a].op == CONST for a in args):
            return self.const(fold(OPS[op], *(nodes[a].value for a in args)))
        return simplified

    def _identity(self, op: str, args: tuple[int, ...]) -> int | None:
        """The rules for an operand that is a constant: x + 0 is x, x * -1 is -x, ..."""
        c = [self.constant_value(a) for a in args]
        if op == "add":
            if c[1] == 0:
                return args[0]
            if c[0] == 0:
                return args[1]
        elif op == "sub":
            if c[1] == 0:
                return args[0]
            if c[0] == 0 and c[1] is None:
                return self.add("neg", args[1])
        elif op == "mul":
            for k in (0, 1):
                if c[k] == 1:
                    return args[1 - k]
                if c[k] == -1 and c[1 - k] is None:
                    return self.add("neg", args[1 - k])
        elif op == "div":
            if c[1] == 1:
                return args[0]
            if c[1] == -1 and c[0] is None:
                return self.add("neg", args[0])
        elif op == "where":
            if c[0] is not None:  # a constant condition (a gradient's template: x**2's b == 0)
                return args[1] if c[0] != 0 else args[2]  # nan is true, as the lowering's
        elif op == "logical_and":
            if 0 in c:  # x & 0 is 0 whatever x is (nan too): pow's second derivative at b != 0
                return self.const(0.0)
        elif op == "pow":
            if c[1] == 1:
                return args[0]
            if c[1] == 0:  # NumPy: x**0 == 1 even for nan and inf
                return self.const(1.0)
        return None

    # ----------------------------------------------------------------- reading
    def __len__(self) -> int:
        return len(self.nodes)

    def operand_text(self, i: int) -> str:
        """How node ``i`` appears as an operand: its name, or a constant's literal."""
        node = self.nodes[i]
        if node.op == CONST:
            text = format_const(node.value)
            return f"({text})" if text.startswith("-") else text
        return self.names[i]

    def line(self, i: int) -> str:
        """``t3 = t1 * z``: node ``i`` as one line of a listing."""
        node = self.nodes[i]
        spec = OPS[node.op]
        operands = dict(zip("abc", (self.operand_text(a) for a in node.args)))
        line = f"{self.names[i]} = {spec.text.format(**operands)}"
        note = self.notes.get(i)
        return f"{line}  # fused: {note.format(**operands)}" if note else line

    def op_nodes(self) -> Iterable[int]:
        return (i for i, n in enumerate(self.nodes) if n.op not in LEAVES)

    def template(self, i: int) -> str:
        """Node ``i``'s op as text over its operands ``{a}``, ``{b}``: how listings print it."""
        return OPS[self.nodes[i].op].text

    def leaf_text(self, i: int) -> str:
        """A leaf in the text language: an input's name, a constant's literal."""
        node = self.nodes[i]
        if node.op == CONST and not math.isfinite(node.value):  # no inf or nan in the text
            inf = "1e999" if node.value > 0 else "(-1e999)"
            return inf if not math.isnan(node.value) else "(1e999 - 1e999)"
        return self.operand_text(i)

    def to_text(self, output: int = 0, limit: int = 10_000_000) -> str:
        """Output ``output`` as one expression of the text language, which parses back to this
        graph: ``(x + y) * z``. A value read twice is written twice (parsing shares it again).
        A ValueError when the text would be longer than ``limit`` characters or nested deeper
        than the parser reads (``MAX_DEPTH``): the listing then says it better."""
        root = self.outputs[output]
        live = self.reachable([root])
        uses = [0] * len(self.nodes)  # readers still to come: a text is dropped after its last
        for i, node in enumerate(self.nodes):
            if live[i]:
                for a in node.args:
                    uses[a] += 1
        # node -> (text, precedence, depth in nodes, depth in parentheses)
        text: dict[int, tuple[str, int, int, int]] = {}
        for i, node in enumerate(self.nodes):
            if not live[i]:
                continue
            if not node.args:  # a leaf
                leaf = self.leaf_text(i)
                text[i] = (leaf, _ATOM, 0, int(leaf.startswith("(")))
                continue
            shape = _template_shape(self.template(i))
            operands, depth, parens = {}, 0, 0
            for slot, a in zip("abc", node.args):
                written, precedence, below, inner = text[a]
                wrapped = _wrap(written, precedence, shape.needs[slot])
                operands[slot] = wrapped
                depth = max(depth, below + 1)
                parens = max(parens, inner + shape.parens[slot] + (wrapped is not written))
                uses[a] -= 1
                if not uses[a] and a != root:
                    del text[a]
            written = self.template(i).format(**operands)
            if len(written) > limit or depth > MAX_DEPTH or parens > MAX_PARENTHESES:
                raise ValueError(
                    f"as one expression this graph is over {limit:,} characters or nested "
                    f"deeper than Python's parser reads ({MAX_DEPTH} operations, "
                    f"{MAX_PARENTHESES} parentheses; a value read twice is written twice): "
                    "print the listing instead"
                )
            text[i] = (written, shape.precedence, depth, parens)
        return text[root][0]

    def __str__(self) -> str:
        lines = [self.line(i) for i in self.op_nodes()]
        lines.append("return " + ", ".join(self.operand_text(o) for o in self.outputs))
        return "\n".join(lines)

    def __repr__(self) -> str:
        ops = sum(1 for _ in self.op_nodes())
        return f"<Graph inputs={self.inputs} ops={ops} outputs={len(self.outputs)}>"

    @staticmethod
    def _with_outputs(graph: Graph, outputs: list[int]) -> Graph:
        """A shallow view of ``graph`` with other outputs (nodes shared, not copied)."""
        view = Graph.__new__(Graph)
        view.__dict__.update(graph.__dict__)
        view.outputs = list(outputs)
        return view

    def key(self) -> str:
        """A stable hash of the structure: ops, edges, constants (bit-exact), inputs, outputs.

        A user's or a discovered gate counts with its whole entry (``registry.fingerprint``): the
        same name may mean another gate in another process.
        """
        h = hashlib.sha256()
        for n in self.nodes:
            value = n.value.hex() if isinstance(n.value, float) else n.value
            h.update(f"{n.op}{fingerprint(n.op)}|{n.args}|{value!r};".encode())
        h.update(f"outputs={self.outputs}".encode())
        return h.hexdigest()

    def fold_negations(self) -> Graph:
        """A copy with negations folded into the adds, subtractions, products and quotients that
        read them — ``x + -y`` is ``x - y``, ``-x * y`` is ``-(x * y)``, ``-x - -y`` is
        ``y - x`` — so that a negation rises until an add or a subtraction absorbs it. Exact
        (negation only flips a sign bit; a zero's sign aside), and kept out of ``add``'s
        rules so that listings of first-order programs keep the lecture's shape: second order
        (``passes.second_order``), whose adjoints of adjoints are full of ``-1`` local
        gradients, uses it. Products also take out power-of-two factors (``_lift_scale``),
        exact as well: ``(0.5·x)·(2·y)`` is ``x·y``."""
        out = self.empty_like()
        for name in self.inputs:
            out.input(name)
        mapping: dict[int, int] = {}
        for i, node in enumerate(self.nodes):
            args = [mapping[a] for a in node.args]
            if node.op in _NEGATION_FOLDS:
                mapping[i] = out._fold_negation(node.op, *args)
            else:
                mapping[i] = out.copy_node(node, args)
        out.outputs = [mapping[o] for o in self.outputs]
        return out

    def _fold_negation(self, op: str, a: int, b: int) -> int:
        """``op(a, b)`` (op in ``_NEGATION_FOLDS``) with an operand's negation taken out."""
        na, nb = (self.nodes[x].args[0] if self.nodes[x].op == "neg" else None for x in (a, b))
        if na is None and nb is None:
            return self._lift_scale(a, b) if op == "mul" else self.add(op, a, b)
        if op == "add":
            if na is not None and nb is not None:
                return self.add("neg", self.add("add", na, nb))
            return self.add("sub", a, nb) if nb is not None else self.add("sub", b, na)
        if op == "sub":
            if na is not None and nb is not None:
                return self.add("sub", nb, na)
            if nb is not None:
                return self.add("add", a, nb)
            return self.add("neg", self.add("add", na, b))
        if na is not None and nb is not None:  # mul, div
            return self._fold_negation(op, na, nb)
        if na is not None:
            return self.add("neg", self._fold_negation(op, na, b))
        return self.add("neg", self._fold_negation(op, a, nb))

    def _scaled(self, x: int) -> tuple[float, int] | None:
        """``(p, y)`` when node x is ``p * y``, p a constant power of two; else None."""
        node = self.nodes[x]
        if node.op != "mul":
            return None
        for k in (0, 1):
            if _power_of_two(self.constant_value(node.args[k])):
                return self.nodes[node.args[k]].value, node.args[1 - k]
        return None

    def _lift_scale(self, a: int, b: int) -> int:
        """``a * b`` with a power-of-two factor of an operand taken out: ``(p·x)·(q·y)`` is
        ``(p·q)·(x·y)`` and ``p·(q·x)`` is ``(p·q)·x``, exactly (a power of two scales without
        rounding, barring overflow and underflow), so that the adjoints' ``0.5 * (2 * x)``
        cancel."""
        ca, cb = self.constant_value(a), self.constant_value(b)
        if ca is not None or cb is not None:  # p * (q * x): the constants meet
            c, other = (ca, b) if ca is not None else (cb, a)
            inner = self._scaled(other) if _power_of_two(c) else None
            if inner is None:
                return self.add("mul", a, b)
            return self.add("mul", self.const(c * inner[0]), inner[1])
        sa, sb = self._scaled(a), self._scaled(b)
        if sa is None and sb is None:
            return self.add("mul", a, b)
        p, x = sa if sa is not None else (1.0, a)
        q, y = sb if sb is not None else (1.0, b)
        return self.add("mul", self.const(p * q), self.add("mul", x, y))

    def users(self) -> list[list[int]]:
        """For each node, the nodes that read it."""
        users: list[list[int]] = [[] for _ in self.nodes]
        for i, n in enumerate(self.nodes):
            for a in n.args:
                users[a].append(i)
        return users

    def reachable(self, roots: Iterable[int]) -> list[bool]:
        """Which nodes the given roots depend on (an iterative backward sweep)."""
        live = [False] * len(self.nodes)
        for r in roots:
            live[r] = True
        for i in range(len(self.nodes) - 1, -1, -1):
            if live[i]:
                for a in self.nodes[i].args:
                    live[a] = True
        return live

    # ----------------------------------------------------------------- SymPy
    def to_sympy(self, output: int = 0):
        """The SymPy expression of one output (inputs become plain ``Symbol``s)."""
        import sympy

        exprs: list = []
        for n in self.nodes:
            if n.op == INPUT:
                exprs.append(sympy.Symbol(n.value))
            elif n.op == CONST:
                exprs.append(_sympy_number(n.value))
            elif n.op == SEED:
                exprs.append(sympy.Symbol("seed"))
            else:
                definition = sympy_definition(n.op)
                subs = dict(zip(operand_symbols(definition), (exprs[k] for k in n.args)))
                exprs.append(definition.xreplace(subs))
        return exprs[self.outputs[output]]

    def _repr_svg_(self) -> str | None:  # Jupyter shows the graph drawn (compiler.viz)
        from compiler.viz.display import graph_svg

        return graph_svg(self)


# ---- to_text: Python's operator precedence, read from each op's template by ``ast``
#: The deepest nesting to_text writes: Python's parser reads a few thousand operations and 200
#: parentheses deep at most.
MAX_DEPTH, MAX_PARENTHESES = 1000, 200
_ATOM = 20
_PRECEDENCE = {
    ast.BitOr: 7, ast.BitAnd: 9,
    ast.Add: 10, ast.Sub: 10, ast.Mult: 11, ast.Div: 11, ast.MatMult: 11, ast.Pow: 13
}  # fmt: skip
_COMPARE = 6  # below | and &: x < y | z is x < (y | z), as Python reads it
_UNARY = 12


class _Shape(NamedTuple):
    precedence: int  # of the template's outermost operation
    needs: dict[str, int]  # the least precedence an operand may have unparenthesized, per slot
    parens: dict[str, int]  # the parentheses around each slot: 1 in exp({a})


@cache
def _template_shape(template: str) -> _Shape:
    """Where ``{a}`` and ``{b}`` stand in a template, as precedences: ``{a} - {b}`` writes
    ``a + b`` for a as is and ``(a + b)`` for b."""
    tree = pyast.parse(template.format(a="a", b="b", c="c"), mode="eval").body
    parens = {}
    for slot in "abc":
        before = template.split(f"{{{slot}}}")[0]
        parens[slot] = before.count("(") - before.count(")")
    needs = {"a": 0, "b": 0, "c": 0}  # inside a call's parentheses: anything goes
    if isinstance(tree, ast.Compare):  # comparisons chain in Python: (x < y) < z keeps both
        return _Shape(_COMPARE, {"a": _COMPARE + 1, "b": _COMPARE + 1, "c": 0}, parens)
    if isinstance(tree, ast.BinOp):
        own = _PRECEDENCE[type(tree.op)]
        left, right = (own + 1, _UNARY) if isinstance(tree.op, ast.Pow) else (own, own + 1)
        for side, need in ((tree.left, left), (tree.right, right)):
            if isinstance(side, ast.Name) and side.id in needs:
                needs[side.id] = need
        return _Shape(own, needs, parens)
    if isinstance(tree, ast.UnaryOp):
        return _Shape(_UNARY, {"a": _UNARY, "b": _UNARY, "c": 0}, parens)
    if isinstance(tree, ast.Attribute):  # x.T
        return _Shape(_ATOM, {"a": _ATOM, "b": _ATOM, "c": 0}, parens)
    return _Shape(_ATOM, needs, parens)


def _wrap(text: str, precedence: int, need: int) -> str:
    return text if precedence >= need else f"({text})"


def operand_symbols(definition) -> tuple:
    """The placeholders ``a``, ``b``, ``c`` as they stand in an op's SymPy definition (whatever
    their assumptions), in operand order; one not in it is a fresh symbol of its name."""
    import sympy

    found = {s.name: s for s in definition.free_symbols if s.name in ("a", "b", "c")}
    return tuple(found.get(name, sympy.Symbol(name)) for name in "abc")


def _sympy_number(value: float):
    import sympy

    if math.isnan(value):
        return sympy.nan
    if math.isinf(value):
        return sympy.oo if value > 0 else -sympy.oo
    if value == int(value) and abs(value) < 2**53:
        return sympy.Integer(int(value))
    return sympy.Float(value)


def _power_of_two(c: float | None) -> bool:
    """Whether c is a (finite, nonzero) power of two: multiplying by it is exact."""
    return c is not None and c != 0 and math.isfinite(c) and math.frexp(abs(c))[0] == 0.5


#: The binary ops ``Graph.fold_negations`` takes an operand's negation out of.
_NEGATION_FOLDS = ("add", "sub", "mul", "div")


def copy_nodes(
    source: Graph, target: Graph, mapping: dict[int, int], keep: list[bool] | None = None
) -> dict[int, int]:
    """Rebuild ``source``'s nodes (those in ``keep``) in ``target``; ``mapping`` pre-binds some.

    Unbound inputs map to ``target``'s inputs of the same name. Returns the full mapping.
    """
    for i, n in enumerate(source.nodes):
        if i in mapping or (keep is not None and not keep[i]):
            continue
        mapping[i] = target.copy_node(n, [mapping[a] for a in n.args])
        note = source.notes.get(i) if source.notes else None
        if note and target.nodes[mapping[i]].op == n.op:  # a fused gate keeps its note
            target.notes.setdefault(mapping[i], note)
    return mapping


def prune(graph: Graph) -> Graph:
    """A copy keeping only what the outputs depend on (declared inputs stay, in order)."""
    live = graph.reachable(graph.outputs)
    out = graph.empty_like()
    for name in graph.inputs:
        out.input(name)
    mapping = copy_nodes(graph, out, {}, keep=live)
    out.outputs = [mapping[o] for o in graph.outputs]
    return out

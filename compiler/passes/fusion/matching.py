"""Matching patterns against a graph: through commutative operands, ``q ** -1`` for ``1 / q``,
``u + (-v)`` for ``u - v``, the pattern variables under negation and constant scaling (read as
linear forms), and a pattern's ``+ ...`` sum against add trees of any shape. Matches never share
interior nodes with the rest of the graph."""

from __future__ import annotations

import math
from typing import NamedTuple

from compiler.ir.graph import CONST, LEAVES, Graph, format_const
from compiler.ir.printing import ATOM, PRODUCT, UNARY, render
from compiler.ir.registry import OPS
from compiler.passes.fusion.patterns import FAMILY, Pattern, definition_note

#: Largest add/sub tree read as a linear form (bigger ones are compared as opaque nodes), and
#: largest add tree a pattern's ``+ ...`` sum matches.
MAX_LINEAR = 64


class _Operand(NamedTuple):
    """The gate's operand x = s * (the linear form ``key``), computed as ``coef * base``."""

    key: tuple[tuple[int, float], ...]
    s: float
    base: int
    coef: float


class _State(NamedTuple):
    core: tuple[int, ...]  # graph nodes the gate replaces
    occurrences: tuple[tuple[int, int, float], ...]  # (graph node, variable, k): where k * the
    # variable was read; a variable's first one binds it (``_Matcher.operand``), the others
    # must agree with it


class Match(NamedTuple):
    gate: str
    root: int
    operands: tuple[tuple[int, float], ...]  # per variable: (base, coef), it is coef * base
    core: frozenset[int]
    note: str  # the replaced subgraph as a template over the fused node's operands "{a}", "{b}"
    pattern: Pattern | None = None  # None: the gate over the one operand (discovery)


class _Matcher:
    """Matches patterns against one graph, remembering the linear forms it has computed."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.forms: dict[int, tuple[tuple[tuple[int, float], ...], float]] = {}

    def match(self, p: Pattern, pn: int, gn: int, st: _State) -> _State | None:
        """Extend ``st`` by matching pattern node ``pn`` against graph node ``gn``."""
        g = self.graph
        pnode, gnode = p.graph.nodes[pn], g.nodes[gn]
        if pn in p.linear:
            return self._bind(*p.linear[pn], gn, st)
        if pn == p.sum_node:
            return self._sum(p, pn, gn, st)
        if pnode.op == CONST:
            return st if gnode.op == CONST and gnode.value == pnode.value else None
        if gnode.op not in FAMILY.get(pnode.op, (pnode.op,)) or gnode.op in LEAVES:
            return None  # most tries end here: no alternative pairs these two ops
        for pairs, extra in _alternatives(p, pn, g, gn):
            s: _State | None = _State(st.core + (gn, *extra), st.occurrences)
            for pa, ga in pairs:
                s = self.match(p, pa, ga, s)
                if s is None:
                    break
            if s is not None:
                return s
        return None

    def _bind(self, var: int, k: float, gn: int, st: _State) -> _State | None:
        """The pattern reads ``k * var`` where the graph has node ``gn``: bind or check var.

        The first reading binds var without computing anything: most tries fail later on, and
        linear forms are the costly part. A second reading must give the first one's value."""
        first = next((o for o in st.occurrences if o[1] == var), None)
        if first is not None:
            x, other = self.operand(first[0], first[2]), self.operand(gn, k)
            if x.key != other.key or x.s != other.s:
                return None
        return _State(st.core, st.occurrences + ((gn, var, k),))

    def _sum(self, p: Pattern, pn: int, gn: int, st: _State) -> _State | None:
        """The pattern's ``+ ...`` sum at graph node ``gn``: an add tree of any shape whose
        every term matches the pattern's term, each binding a variable of its own (0, 1, ...).
        Where ``x`` (variable 0) is bound already, outside the sum (a softmax's numerator), the
        term that reads the same value is put first, wherever it stands."""
        adds, terms = _add_tree(self.graph, gn)
        if len(terms) < 2:
            return None
        term = p.graph.nodes[pn].args[0]
        states = []
        for t in terms:  # most tries fail at a term: stop there
            s = self.match(p, term, t, _State((), ()))
            if s is None or not s.occurrences:
                return None
            states.append(s)
        bound = next((o for o in st.occurrences if o[1] == 0), None)
        if bound is not None:
            x = self.operand(bound[0], bound[2])
            same = [i for i, s in enumerate(states) if self._reads(s, x)]
            if not same:
                return None
            states.insert(0, states.pop(same[0]))
        core, found = list(st.core) + adds, list(st.occurrences)
        for var, s in enumerate(states):
            core += s.core
            found += [(n, var, k) for n, _, k in s.occurrences]
        return _State(tuple(core), tuple(found))

    def _reads(self, s: _State, x: _Operand) -> bool:
        """Whether a term's match reads the value ``x``."""
        other = self.operand(s.occurrences[0][0], s.occurrences[0][2])
        return other.key == x.key and other.s == x.s

    def operands(self, st: _State) -> list[_Operand]:
        """Each variable's value, in variable order."""
        first: dict[int, tuple[int, float]] = {}
        for n, var, k in st.occurrences:
            first.setdefault(var, (n, k))
        return [self.operand(*first[v]) for v in sorted(first)]

    def operand(self, gn: int, k: float) -> _Operand:
        """x where the pattern reads ``k * x`` and the graph has node ``gn``."""
        key, scale = self.linear(gn)
        s = scale / k  # x = s * sum(key)
        base, c = _view(self.graph, gn)  # gn = c * base, and base = (scale / c) * sum(key)
        return _Operand(key, s, base, s * c / scale)

    def linear(self, i: int) -> tuple[tuple[tuple[int, float], ...], float]:
        """Node ``i`` as ``scale * sum(c * term)`` over the add/sub/neg/constant-factor tree
        under it, normalised so the first term's c is 1: ``-b - w*z`` and ``b + w*z`` share a
        key, with scales -1 and 1. Constants are the term -1."""
        if i not in self.forms:
            self.forms[i] = _linear_form(self.graph, i)
        return self.forms[i]


def _linear_form(graph: Graph, i: int):
    terms: dict[int, float] = {}
    stack, visited = [(i, 1.0)], 0
    while stack:
        n, c = stack.pop()
        visited += 1
        if visited > MAX_LINEAR:
            return ((i, 1.0),), 1.0
        node = graph.nodes[n]
        if node.op == "add":
            stack += [(a, c) for a in node.args]
        elif node.op == "sub":
            stack += [(node.args[0], c), (node.args[1], -c)]
        elif node.op == "neg":
            stack.append((node.args[0], -c))
        elif node.op == CONST:
            terms[-1] = terms.get(-1, 0.0) + c * node.value
        else:
            base, k = _view(graph, n)
            if base == n:
                terms[n] = terms.get(n, 0.0) + c
            else:
                stack.append((base, c * k))
    terms = {t: c for t, c in terms.items() if c != 0}
    if not terms or not all(math.isfinite(c) for c in terms.values()):
        return ((i, 1.0),), 1.0
    lead = terms[min(terms)]
    return tuple(sorted((t, c / lead) for t, c in terms.items())), lead


def _add_tree(graph: Graph, i: int) -> tuple[list[int], list[int]]:
    """The add nodes of the sum tree at ``i`` and its terms, left to right (none if ``i`` is no
    add, or the tree is larger than ``MAX_LINEAR``)."""
    if graph.nodes[i].op != "add":
        return [], []
    adds, terms, stack = [], [], [i]
    while stack:
        n = stack.pop()
        if graph.nodes[n].op == "add":
            adds.append(n)
            stack += reversed(graph.nodes[n].args)
        else:
            terms.append(n)
        if len(adds) + len(terms) > MAX_LINEAR:
            return [], []
    return adds, terms


def _view(graph: Graph, i: int) -> tuple[int, float]:
    """Node ``i`` as ``c * base``, looking through negation and finite, non-zero constant
    factors and divisors."""
    c = 1.0
    while True:
        node = graph.nodes[i]
        if node.op == "neg":
            c, i = -c, node.args[0]
            continue
        if node.op in ("mul", "div"):
            k = next((k for k in (1, 0) if graph.constant_value(node.args[k]) is not None), None)
            if k is not None and (node.op == "mul" or k == 1):
                v = graph.constant_value(node.args[k])
                if v != 0 and math.isfinite(v):
                    c, i = (c * v if node.op == "mul" else c / v), node.args[1 - k]
                    continue
        return i, c


def _alternatives(p: Pattern, pn: int, g: Graph, gn: int):
    """Ways to pair the pattern node's operands with the graph node's, equal forms included:
    (pairs, further graph nodes the gate replaces)."""
    pnode, gnode = p.graph.nodes[pn], g.nodes[gn]
    pc, gc = p.graph.constant_value, g.constant_value
    if pnode.op == gnode.op:
        yield list(zip(pnode.args, gnode.args)), ()
        if OPS[pnode.op].commutative:
            yield list(zip(pnode.args, reversed(gnode.args))), ()
    elif (
        pnode.op == "div"
        and gnode.op == "pow"
        and pc(pnode.args[0]) == 1
        and gc(gnode.args[1]) == -1
    ):
        yield [(pnode.args[1], gnode.args[0])], ()  # 1 / q  ==  q ** -1
    elif pnode.op == "sub" and gnode.op == "add":  # u - v  ==  u + (-v)
        u, v = pnode.args
        for s, t in (gnode.args, reversed(gnode.args)):
            if g.nodes[t].op == "neg":
                yield [(u, s), (v, g.nodes[t].args[0])], (t,)
            elif pc(v) is not None and gc(t) == -pc(v):
                yield [(u, s)], ()
    elif pnode.op == "add" and gnode.op == "sub":  # u + c  ==  u - (-c)
        for u, c in (pnode.args, reversed(pnode.args)):
            if pc(c) is not None and gc(gnode.args[1]) == -pc(c):
                yield [(u, gnode.args[0])], ()


def _possible(graph: Graph, patterns: dict[str, list[Pattern]]) -> dict[str, list[Pattern]]:
    """The patterns that can match somewhere in ``graph`` (in their order): those whose needed
    op families all occur in it. Most graphs rule out most patterns at once."""
    ops = {node.op for node in graph.nodes}
    possible: dict[str, list[Pattern]] = {}
    for op, candidates in patterns.items():
        kept = [p for p in candidates if all(not ops.isdisjoint(f) for f in p.needs)]
        if kept:
            possible[op] = kept
    return possible


def find_matches(graph: Graph, patterns: dict[str, list[Pattern]]):
    """Non-overlapping matches, outermost first (roots visited from the output down)."""
    patterns = _possible(graph, patterns)
    if not patterns:
        return {}, []
    users: list[list[int]] | None = None  # made at the first match: most tries find none
    outputs = set(graph.outputs)
    consumed: set[int] = set()
    matches: dict[int, Match] = {}
    skipped: list[str] = []
    matcher = _Matcher(graph)
    for root in range(len(graph.nodes) - 1, -1, -1):
        candidates = patterns.get(graph.nodes[root].op)
        if not candidates or root in consumed:
            continue
        for p in candidates:
            st = matcher.match(p, p.root, root, _State((), ()))
            if st is None or not st.occurrences:
                continue
            xs = matcher.operands(st)
            core = frozenset(st.core)
            users = graph.users() if users is None else users
            shared = _shared_interior(core, root, users, outputs, consumed) or [
                x.base for x in xs if x.base in core
            ]
            if shared:
                skipped.append(_skip_reason(graph, p, root, shared, users, core))
                continue
            note = _note(graph, root, st, p)
            operands = tuple((x.base, x.coef) for x in xs)
            matches[root] = Match(p.gate, root, operands, core, note, p)
            consumed |= core
            break
    return matches, skipped


def _shared_interior(core, root, users, outputs, consumed) -> list[int]:
    return [
        c
        for c in core
        if c != root and (c in outputs or c in consumed or any(u not in core for u in users[c]))
    ]


def _skip_reason(graph, p, root, shared, users, core) -> str:
    i = min(shared)
    others = ", ".join(graph.names[u] for u in users[i] if u not in core) or "the outputs"
    return (
        f"{graph.names[root]} matches {p.gate} but {graph.names[i]} = {graph.line(i).split(' = ')[1]}"
        f" is also used by {others}: fusing would compute it twice"
    )


def _note(graph: Graph, root: int, st: _State, p: Pattern) -> str:
    """The matched subgraph as a template over the fused node's operands ``{a}``, ``{b}``:
    where the pattern read ``k * x`` and the node reads ``m * x`` as ``{a}``, it prints
    ``k/m * {a}``; gates fused earlier print what they replaced. A rhs ``-op(...)`` negates it:
    the note is what the op node's own value replaced. A ``+ ...`` sum's is the pattern's own
    two-term form, which each node of its fold replaced."""
    if p.sum_node is not None:  # each node of the fold is the entry's two-term definition
        return definition_note(p.gate)
    leaves = {}
    for node, var, k in st.occurrences:
        field, m = p.fields[var]
        leaves[node] = _scaled_text(k / m, "{" + field + "}")
    templates = {i: graph.notes[i] for i in st.core if i in graph.notes}
    text = render(graph, root, leaves, templates=templates)
    return f"-({text})" if p.negated else text


def _scaled_text(k: float, field: str) -> tuple[str, int]:
    if k == 1:
        return field, ATOM
    if k == -1:
        return f"-{field}", UNARY
    return f"{_number(k)} * {field}", PRODUCT


def _number(k: float) -> str:
    text = format_const(k)
    return f"({text})" if text.startswith("-") else text

"""Gate fusion: rewrite subgraphs into gates (``Graph -> (Graph, FusionReport)``).

The lecture's trade-off — how much math goes into one node versus how simple each local gradient
is — as a pass. A gate (an op of the registry with ``patterns``) replaces any subgraph matching
one of its patterns, e.g. ``1/(1+exp(-x))`` → ``sigmoid(x)`` with ``x`` any subexpression. The
matcher sees through the forms frontends produce:

- commutative operands in either order, ``q ** -1`` for ``1 / q``, ``u + (-c)`` or
  ``u + (-v)`` for ``u - c`` and ``u - v``;
- the pattern variable under negation and constant scaling: ``exp(-x)`` matches ``exp(t)`` with
  ``x = -t``, so SymPy's ``exp(-w*x - b)`` still makes ``sigmoid(w*x + b)``; ``exp(-2*x)`` in a
  tanh pattern matches ``exp(-4*t)`` with ``x = 2*t``.

A subgraph is fused only if its interior nodes are used by nothing else (else it is reported as
skipped: fusing would compute them twice). Rounds repeat until nothing changes, so a gate can
absorb another (``log(sigmoid(x))`` → ``logsigmoid``). Each fused node carries a note — the
subgraph it replaced, as a template over its operand — which listings and generated code print.

``gates="auto"`` also *discovers* gates (``_discover``): single-input regions whose derivative
SymPy can write in terms of the region's own output (``exp(2x)`` → ``2y``). SymPy is imported only
then; the default path parses patterns with symgrad's own parser.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import NamedTuple

import numpy as np

from compiler.errors import GateError, ParseError
from compiler.ir import gates as gate_table
from compiler.ir.graph import CONST, LEAVES, Graph, format_const
from compiler.ir.registry import OPS
from compiler.ir.tensor import TensorGraph
from compiler.ir.tensor_ops import TENSOR_GATES, TENSOR_OPS
from compiler.passes.tensor_fusion import fuse_tensor_gates

MAX_ROUNDS = 8
#: Discovery: largest region tried, and the SymPy time one compile may spend on it.
MAX_REGION = 10
DISCOVERY_BUDGET_S = 10.0

Gates = bool | str | Sequence[str]


# ------------------------------------------------------------------------------ the report
class Fused(NamedTuple):
    """One fused gate: ``node = gate(operand)`` replaced ``replaced``."""

    gate: str
    node: str
    operand: str
    template: str  # the replaced subgraph over the operand, "{a}"
    call: str = ""  # the gate as the listing writes it: "log_softmax(S, axis=1)"

    @property
    def replaced(self) -> str:
        return self.template.format(a=self.operand)


class Discovered(NamedTuple):
    """A gate discovery made: d/dx of ``definition`` (over x) is ``gradient`` (over y)."""

    gate: str
    definition: str
    gradient: str


@dataclass
class FusionReport:
    """What ``fuse`` did: fused subgraphs, discovered gates, what it left alone and why, and the
    cost before and after (node counts of forward and backward, values the backward keeps)."""

    gates: tuple[str, ...]
    discover: bool
    before: Graph
    after: Graph
    wrt: tuple[str, ...] | None = None
    fused: list[Fused] = field(default_factory=list)
    discovered: list[Discovered] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @cached_property
    def counts(self) -> dict[str, tuple[int, int]]:
        """``{what: (unfused, fused)}`` for forward ops, backward ops and saved values."""
        from compiler.passes.adjoint import adjoint

        rows: dict[str, list[int]] = {"forward ops": [], "backward ops": [], "saved values": []}
        for graph in (self.before, self.after):
            adj = adjoint(graph, self.wrt)
            ops = [i for i in adj.op_nodes()]
            rows["forward ops"].append(sum(1 for i in ops if i < adj.n_forward))
            rows["backward ops"].append(sum(1 for i in ops if i >= adj.n_forward))
            rows["saved values"].append(len(adj.saved))
        return {k: (v[0], v[1]) for k, v in rows.items()}

    @property
    def saved_bytes_per_element(self) -> tuple[int, int]:
        """float64 bytes per element a ``vjp`` forward keeps for its backward: unfused, fused."""
        before, after = self.counts["saved values"]
        return 8 * before, 8 * after

    @cached_property
    def overflow(self) -> dict[str, str]:
        """Per replaced template: where the unfused form overflows and the gate does not."""
        found = {}
        for f in self.fused:
            if f.template not in found:
                found[f.template] = overflow_note(f.gate, f.template)
        return {t: n for t, n in found.items() if n}

    def __str__(self) -> str:
        enabled = ", ".join(self.gates) or "none"
        lines = [f"fusion (gates: {enabled}; discovery {'on' if self.discover else 'off'})"]
        if not self.fused:
            lines.append("  nothing fused")
        for f in self.fused:
            lines.append(f"  {f.node} = {f.call}  replaces  {f.replaced}")
            note = self.overflow.get(f.template)
            if note:
                lines.append(f"      {note.format(a=f.operand)}")
        for d in self.discovered:
            lines.append(f"  discovered {d.gate}(x) = {d.definition}, d/dx = {d.gradient}")
        lines += [f"  skipped: {s}" for s in self.skipped]
        lines += [f"  note: {n}" for n in self.notes]
        lines.append(f"  {'':<28}{'unfused':>8}{'fused':>8}")
        for what, (before, after) in self.counts.items():
            lines.append(f"  {what:<28}{before:>8}{after:>8}")
        b, a = self.saved_bytes_per_element
        lines.append(f"  {'saved bytes per element':<28}{b:>8}{a:>8}")
        return "\n".join(lines)

    def _repr_html_(self) -> str | None:  # Jupyter: before and after drawn (compiler.viz)
        from compiler.viz.display import report_html

        return report_html(self)


# ------------------------------------------------------------------------------ the pass
def fuse(
    graph: Graph, gates: Gates = True, *, wrt: Sequence[str] | None = None
) -> tuple[Graph, FusionReport]:
    """Rewrite ``graph``'s subgraphs into gates.

    ``gates``: True (every registered gate), False (none: the graph comes back unchanged), a list
    of gate names (only those), a single name, or "auto" (every gate, plus discovery). ``wrt`` only
    shapes the report's backward counts (default: all inputs).
    """
    names, discover = select(gates)
    current, skipped, rounds = graph, [], 0
    patterns = _patterns_by_op(names)
    while patterns and rounds < MAX_ROUNDS:
        matches, refused = _find_matches(current, patterns)
        skipped += [s for s in refused if s not in skipped]
        if not matches:
            break
        current, rounds = _rebuild(current, matches), rounds + 1
    if isinstance(current, TensorGraph):
        current = fuse_tensor_gates(current, names)
    report = FusionReport(names, discover, graph, current, None if wrt is None else tuple(wrt))
    report.skipped = skipped
    if discover:
        current, report.discovered, report.notes = _discover(current)
        report.after = current
    report.fused = _fused_nodes(current)
    return current, report


def select(gates: Gates) -> tuple[tuple[str, ...], bool]:
    """(the gate names to fuse, whether to discover) for a ``fuse=`` setting."""
    fusable = tuple(g for g in gate_table.gate_names() if OPS[g].patterns) + TENSOR_GATES
    if gates is True:
        return fusable, False
    if gates is False or gates is None:
        return (), False
    if isinstance(gates, str):
        if gates == "auto":
            return fusable, True
        gates = [gates]
    if not isinstance(gates, (list, tuple)) or not all(isinstance(g, str) for g in gates):
        raise TypeError(f"fuse must be True, False, 'auto' or a list of gate names, not {gates!r}")
    unknown = [g for g in gates if g not in fusable]
    if unknown:
        raise GateError(f"unknown gate(s) {unknown}; the gates are {', '.join(fusable)}")
    return tuple(dict.fromkeys(gates)), False


def _fused_nodes(graph: Graph) -> list[Fused]:
    return [
        Fused(
            graph.nodes[i].op,
            graph.names[i],
            graph.operand_text(graph.nodes[i].args[0]),
            note,
            graph.template(i).format(a=graph.operand_text(graph.nodes[i].args[0])),
        )
        for i, note in sorted(graph.notes.items())
    ]


# ------------------------------------------------------------------------------ patterns
class _Pattern(NamedTuple):
    gate: str
    graph: Graph
    root: int
    linear: dict[int, float]  # pattern nodes that are k * x, with their k
    needs: tuple[tuple[str, ...], ...]  # op families a graph must contain for a match (_needs)


@cache
def _compile_pattern(gate: str, text: str) -> _Pattern:
    from compiler.frontend.text import parse

    g = parse(text)
    x = g.input("x")
    linear: dict[int, float] = {x: 1.0}
    for i, node in enumerate(g.nodes):
        args = node.args
        if node.op == "neg" and args[0] in linear:
            linear[i] = -linear[args[0]]
        elif node.op == "mul":
            for k in (0, 1):
                c = g.constant_value(args[k])
                if c is not None and args[1 - k] in linear:
                    linear[i] = c * linear[args[1 - k]]
        elif node.op == "div" and args[0] in linear and g.constant_value(args[1]) is not None:
            linear[i] = linear[args[0]] / g.constant_value(args[1])
    return _Pattern(gate, g, g.outputs[0], linear, _needs(g, g.outputs[0], linear))


def _needs(g: Graph, root: int, linear: dict[int, float]) -> tuple[tuple[str, ...], ...]:
    """The op families (``_FAMILY``) a graph must contain for the pattern to match anywhere.

    A match pairs every pattern node it reaches — all but constants and the readings of x,
    which match any node — with a graph node of that node's family (see ``_Matcher.match``)."""
    needs, stack = set(), [root]
    while stack:
        pn = stack.pop()
        node = g.nodes[pn]
        if pn not in linear and node.op != CONST:
            needs.add(_FAMILY.get(node.op, (node.op,)))
            stack.extend(node.args)
    return tuple(sorted(needs))


# The graph ops a pattern's op can match (see _alternatives); other ops match only themselves.
_FAMILY = {"div": ("div", "pow"), "sub": ("sub", "add"), "add": ("add", "sub")}


def _patterns_by_op(names: Sequence[str]) -> dict[str, list[_Pattern]]:
    """Patterns of the selected gates, indexed by the graph op their root can match."""
    by_op: dict[str, list[_Pattern]] = {}
    for name in names:
        for text in OPS[name].patterns if name in OPS else ():
            try:
                p = _compile_pattern(name, text)
            except ParseError:  # names a gate that is no longer registered
                continue
            op = p.graph.nodes[p.root].op
            for graph_op in _FAMILY.get(op, (op,)):
                by_op.setdefault(graph_op, []).append(p)
    return by_op


# ------------------------------------------------------------------------------ matching
#: Largest add/sub tree read as a linear form (bigger ones are compared as opaque nodes).
MAX_LINEAR = 64


class _Operand(NamedTuple):
    """The gate's operand x = s * (the linear form ``key``), computed as ``coef * base``."""

    key: tuple[tuple[int, float], ...]
    s: float
    base: int
    coef: float


class _State(NamedTuple):
    core: tuple[int, ...]  # graph nodes the gate replaces
    occurrences: tuple[tuple[int, float], ...]  # (graph node, k): where k * operand was read;
    # the first one binds the operand (``_Matcher.operand``), the others must agree with it


class Match(NamedTuple):
    gate: str
    root: int
    base: int
    coef: float
    core: frozenset[int]
    note: str  # the replaced subgraph as a template over the operand "{a}"


class _Matcher:
    """Matches patterns against one graph, remembering the linear forms it has computed."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.forms: dict[int, tuple[tuple[tuple[int, float], ...], float]] = {}

    def match(self, p: _Pattern, pn: int, gn: int, st: _State) -> _State | None:
        """Extend ``st`` by matching pattern node ``pn`` against graph node ``gn``."""
        g = self.graph
        pnode, gnode = p.graph.nodes[pn], g.nodes[gn]
        if pn in p.linear:
            return self._bind(p.linear[pn], gn, st)
        if pnode.op == CONST:
            return st if gnode.op == CONST and gnode.value == pnode.value else None
        if gnode.op not in _FAMILY.get(pnode.op, (pnode.op,)) or gnode.op in LEAVES:
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

    def _bind(self, k: float, gn: int, st: _State) -> _State | None:
        """The pattern reads ``k * x`` where the graph has node ``gn``: bind or check x.

        The first reading binds x without computing anything: most tries fail later on, and
        linear forms are the costly part. A second reading must give the first one's x."""
        if st.occurrences:
            x, other = self.operand(*st.occurrences[0]), self.operand(gn, k)
            if x.key != other.key or x.s != other.s:
                return None
        return _State(st.core, st.occurrences + ((gn, k),))

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


def _alternatives(p: _Pattern, pn: int, g: Graph, gn: int):
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


def _possible(graph: Graph, patterns: dict[str, list[_Pattern]]) -> dict[str, list[_Pattern]]:
    """The patterns that can match somewhere in ``graph`` (in their order): those whose needed
    op families all occur in it. Most graphs rule out most patterns at once."""
    ops = {node.op for node in graph.nodes}
    possible: dict[str, list[_Pattern]] = {}
    for op, candidates in patterns.items():
        kept = [p for p in candidates if all(not ops.isdisjoint(f) for f in p.needs)]
        if kept:
            possible[op] = kept
    return possible


def _find_matches(graph: Graph, patterns: dict[str, list[_Pattern]]):
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
            x = matcher.operand(*st.occurrences[0])
            core = frozenset(st.core)
            users = graph.users() if users is None else users
            shared = _shared_interior(core, root, users, outputs, consumed) or (
                [x.base] if x.base in core else []
            )
            if shared:
                skipped.append(_skip_reason(graph, p, root, shared, users, core))
                continue
            note = _note(graph, root, st)
            matches[root] = Match(p.gate, root, x.base, x.coef, core, note)
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


def _note(graph: Graph, root: int, st: _State) -> str:
    """The matched subgraph as a template over the gate's operand ``{a}``: where the pattern
    read ``k * x`` it prints ``k * {a}``; gates fused earlier print what they replaced."""
    leaves = {}
    for node, k in st.occurrences:
        if k == 1:
            leaves[node] = ("{a}", gate_table.ATOM)
        elif k == -1:
            leaves[node] = ("-{a}", gate_table.UNARY)
        else:
            leaves[node] = (f"{_number(k)} * {{a}}", gate_table.PRODUCT)
    templates = {i: graph.notes[i] for i in st.core if i in graph.notes}
    return gate_table.render(graph, root, leaves, templates=templates)


# ------------------------------------------------------------------------------ rewriting
def _rebuild(graph: Graph, matches: dict[int, Match]) -> Graph:
    """A copy of ``graph`` with each match's root computed by its gate and its core dropped."""
    live = [False] * len(graph.nodes)
    for o in graph.outputs:
        live[o] = True
    for i in range(len(graph.nodes) - 1, -1, -1):
        if live[i]:
            for a in (matches[i].base,) if i in matches else graph.nodes[i].args:
                live[a] = True
    out = graph.empty_like()
    for name in graph.inputs:
        out.input(name)
    mapping: dict[int, int] = {}
    for i, node in enumerate(graph.nodes):
        if not live[i]:
            continue
        if i in matches:
            m = matches[i]
            mapping[i] = out.add(m.gate, _scaled(out, mapping[m.base], m.coef))
            note = m.note
        else:
            mapping[i] = _copy(graph, out, i, mapping)
            note = graph.notes.get(i)
        wanted = matches[i].gate if i in matches else node.op
        if note and out.nodes[mapping[i]].op == wanted:  # not folded into something else
            out.notes.setdefault(mapping[i], note)
    out.outputs = [mapping[o] for o in graph.outputs]
    return out


def _copy(graph: Graph, out: Graph, i: int, mapping: dict[int, int]) -> int:
    node = graph.nodes[i]
    return out.copy_node(node, [mapping[a] for a in node.args])


def _number(k: float) -> str:
    text = format_const(k)
    return f"({text})" if text.startswith("-") else text


def _scaled(out: Graph, base: int, coef: float) -> int:
    if coef == 1:
        return base
    if coef == -1:
        return out.add("neg", base)
    return out.add("mul", out.const(coef), base)


# ------------------------------------------------------------------------------ overflow
PROBES = (-1000.0, -100.0, -10.0, 10.0, 100.0, 1000.0)


def overflow_note(gate: str, template: str) -> str:
    """Where the replaced subgraph, evaluated as written, overflows (an intermediate is ±inf) or
    loses its value or gradient (inf or nan) while the gate stays finite; probed at ±10, ±100,
    ±1000 with NumPy. A template over the operand "{a}", like the note; empty if nowhere.
    A tensor gate states its own note."""
    if gate in TENSOR_OPS:
        return TENSOR_OPS[gate].overflow
    from compiler.frontend.text import parse
    from compiler.passes.adjoint import adjoint, local_gradient_template

    try:
        unfused = adjoint(parse(template.format(a="x")), ["x"])
    except (ParseError, KeyError):
        return ""
    xs = np.array(PROBES)
    values = [np.broadcast_to(v, xs.shape) for v in gate_table.evaluate(unfused, {"x": xs})]
    value, slope = values[unfused.outputs[0]], values[unfused.outputs[1]]
    local = local_gradient_template(gate, 0)
    gate_value = np.broadcast_to(OPS[gate].numpy(xs), xs.shape)
    gate_slope = gate_table.evaluate(local, {"a": xs, "y": gate_value})[local.outputs[0]]
    gate_slope = np.broadcast_to(gate_slope, xs.shape)
    forward = [i for i in unfused.op_nodes() if i < unfused.n_forward]
    found = []
    for j in range(len(xs)):
        overflowed = [i for i in forward if np.isinf(values[i][j])]
        lost = not (np.isfinite(value[j]) and np.isfinite(slope[j]))
        if (overflowed or lost) and np.isfinite(gate_value[j]) and np.isfinite(gate_slope[j]):
            found.append((j, overflowed[0] if overflowed else None))
    if not found:
        return ""
    j, culprit = found[0]
    where = ", ".join(f"{xs[k]:g}" for k, _ in found)
    x_leaf = {unfused.input("x"): ("{a}", gate_table.ATOM)}
    what = f"{gate_table.render(unfused, culprit, x_leaf)} = inf" if culprit is not None else ""
    return (
        f"unfused, it overflows at {{a}} = {where}: at {{a}} = {xs[j]:g}{', ' + what if what else ''}, "
        f"its value is {value[j]:g} and its gradient {slope[j]:g}; the gate gives "
        f"{gate_value[j]:g} and {gate_slope[j]:g}"
    )


# ------------------------------------------------------------------------------ discovery
def _discover(graph: Graph) -> tuple[Graph, list[Discovered], list[str]]:
    """Fuse single-input regions whose derivative SymPy writes in terms of their own output."""
    users, outputs = graph.users(), set(graph.outputs)
    taken: set[int] = set()
    matches: dict[int, Match] = {}
    found: list[Discovered] = []
    notes: list[str] = []
    start = time.perf_counter()
    for root in range(len(graph.nodes) - 1, -1, -1):
        node = graph.nodes[root]
        if node.op not in OPS or root in taken or OPS[node.op].is_gate:
            continue  # leaves, tensor ops and gates
        if time.perf_counter() - start > DISCOVERY_BUDGET_S:
            notes.append(f"discovery stopped after its {DISCOVERY_BUDGET_S:g} s budget")
            break
        region = _region(graph, root, users, outputs, taken)
        if region is None:
            continue
        core, x = region
        body = _region_graph(graph, core, x, root)
        if not _monotone(body):
            continue
        gradient = gate_table.output_gradient(body)
        if gradient is None:
            continue
        spec = gate_table.register_discovered(body, gradient)
        note = gate_table.text_of(body, {"x": "{a}"})
        matches[root] = Match(spec.name, root, x, 1.0, frozenset(core), note)
        taken |= core
        d = Discovered(spec.name, gate_table.text_of(body), gate_table.text_of(gradient))
        if d not in found:
            found.append(d)
    return (_rebuild(graph, matches) if matches else graph), found, notes


def _region(graph, root, users, outputs, taken) -> tuple[set[int], int] | None:
    """The largest region under ``root`` (nodes used only inside it, at most ``MAX_REGION``, no
    gates) that reads exactly one non-constant node: (its nodes, that node); None if under 2."""
    inside, frontier = {root}, _operands(graph, root)
    best = None
    while True:
        if len(frontier) == 1:
            best = (set(inside), next(iter(frontier)))
        if len(inside) >= MAX_REGION:
            break
        ready = [
            c
            for c in frontier
            if graph.nodes[c].op not in LEAVES
            and not OPS[graph.nodes[c].op].is_gate
            and c not in taken
            and c not in outputs
            and all(u in inside for u in users[c])
        ]
        if not ready:
            break
        c = max(ready)  # users before operands: every user of c is already inside
        inside.add(c)
        frontier = (frontier - {c}) | {a for a in _operands(graph, c) if a not in inside}
    return best if best is not None and len(best[0]) >= 2 else None


def _operands(graph: Graph, i: int) -> set[int]:
    return {a for a in graph.nodes[i].args if graph.nodes[a].op != CONST}


def _region_graph(graph: Graph, core: set[int], x: int, root: int) -> Graph:
    """The region as a graph of its own over the input ``x``."""
    body = Graph()
    mapping = {x: body.input("x")}
    for i in sorted(core):
        node = graph.nodes[i]
        args = [mapping[a] if a in mapping else body.const(graph.nodes[a].value) for a in node.args]
        mapping[i] = body.add(node.op, *args)
    body.outputs = [mapping[root]]
    return body


def _monotone(body: Graph) -> bool:
    """A cheap test before asking SymPy: is the region strictly monotone where it is finite?
    (If two inputs gave one output, the derivative could not be a function of the output.)"""
    xs = np.linspace(-6.0, 6.0, 241)
    ys = np.asarray(gate_table.evaluate(body, {"x": xs})[body.outputs[0]] * np.ones_like(xs))
    ys = ys[np.isfinite(ys)]
    if len(ys) < 50:
        return False
    steps = np.diff(ys)
    return bool(np.all(steps > 0) or np.all(steps < 0))

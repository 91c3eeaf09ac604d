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

The same patterns carry *stabilisations* (PyTensor's rewrites), written ``lhs -> rhs`` in the
entry of the op they introduce: ``log(1 - exp(x)) -> log1mexp(x)``, ``1 - exp(-x) ->
-expm1(-x)``, ``log(exp(x) + exp(y) + ...) -> logaddexp(x, y)`` (any number of terms, folded as a
balanced tree), ``sqrt(x * x + y * y) -> hypot(x, y)``: where the unfused form overflows or loses
every digit. Patterns read up to two variables, ``x`` and ``y`` (``patterns.py``); the report lists
stabilisations apart from gates (``FusionReport.stabilised``).

A subgraph is fused only if its interior nodes are used by nothing else (else it is reported as
skipped: fusing would compute them twice). Rounds repeat until nothing changes, so a gate can
absorb another (``log(sigmoid(x))`` → ``logsigmoid``). Each fused node carries a note — the
subgraph it replaced, as a template over its operand — which listings and generated code print.

``gates="auto"`` also *discovers* gates (``discovery.py``): single-input regions whose derivative
SymPy can write in terms of the region's own output (``exp(2x)`` → ``2y``). SymPy is imported only
then; the default path parses patterns with symgrad's own parser.

A pure pass: it never writes the op table, not even for a moment. The entries of discovered gates
come back in the report (``FusionReport.discovered_ops``); the pass and its report read them
through their own view (``registry.local``: seen in the thread running the pass only), and
``compiler.fuse`` (``compiler.gates``), which the compile step calls, installs them for the
kernel. The modules, by responsibility: ``patterns``
(compiling gate patterns), ``matching`` (finding matches), ``rewrite`` (the rebuilt graph),
``discovery`` and ``report`` (what fusion did, and where unfused forms overflow).
"""

from __future__ import annotations

from collections.abc import Sequence

from compiler.errors import GateError
from compiler.ir.graph import Graph
from compiler.ir.registry import OPS, local
from compiler.ir.tensor import TensorGraph
from compiler.ir.tensor_ops import TENSOR_GATES
from compiler.passes.fusion.discovery import discover
from compiler.passes.fusion.matching import find_matches
from compiler.passes.fusion.patterns import patterns_by_op
from compiler.passes.fusion.report import (
    PROBES,
    Discovered,
    Fused,
    FusionReport,
    fused_nodes,
    overflow_note,
)
from compiler.passes.fusion.rewrite import rebuild
from compiler.passes.tensor_fusion import fuse_tensor_gates

__all__ = ["PROBES", "Discovered", "Fused", "FusionReport", "fuse", "overflow_note", "select"]

MAX_ROUNDS = 8

Gates = bool | str | Sequence[str]


def fuse(
    graph: Graph, gates: Gates = True, *, wrt: Sequence[str] | None = None
) -> tuple[Graph, FusionReport]:
    """Rewrite ``graph``'s subgraphs into gates.

    ``gates``: True (every registered gate and stabilisation), False (none: the graph comes back
    unchanged), a list of names (only those: "expm1" selects its stabilisations), a single name,
    or "auto" (everything, plus discovery). ``wrt`` only
    shapes the report's backward counts (default: all inputs). With discovery, the graph uses the
    entries in ``report.discovered_ops``, which are not installed: compile it through
    ``compiler.fuse`` (or ``compiler.gates.install_discovered(report)``).
    """
    names, discovering = select(gates)
    current, skipped, rounds = graph, [], 0
    stabilising: set[tuple[str, str]] = set()  # (op, note) of the stabilisations applied
    patterns = patterns_by_op(names)
    while patterns and rounds < MAX_ROUNDS:
        matches, refused = find_matches(current, patterns)
        skipped += [s for s in refused if s not in skipped]
        if not matches:
            break
        stabilising |= {(m.gate, m.note) for m in matches.values() if m.pattern.rewrite}
        current, rounds = rebuild(current, matches), rounds + 1
    if isinstance(current, TensorGraph):
        current = fuse_tensor_gates(current, names)
    report = FusionReport(names, discovering, graph, current, None if wrt is None else tuple(wrt))
    report.skipped = skipped
    if discovering:
        current, report.discovered, report.notes = discover(current)
        report.after = current
    with local(report.discovered_ops):
        found = fused_nodes(current)
    report.fused = [f for f in found if (f.gate, f.template) not in stabilising]
    report.stabilised = [f for f in found if (f.gate, f.template) in stabilising]
    return current, report


def select(gates: Gates) -> tuple[tuple[str, ...], bool]:
    """(the gate names to fuse, whether to discover) for a ``fuse=`` setting."""
    fusable = _fusable_names() + TENSOR_GATES
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


def _fusable_names() -> tuple[str, ...]:
    """The entries fusion builds — gates, and the ops stabilisations introduce (expm1,
    logaddexp, ...) — in table order (built-ins first): those with patterns."""
    return tuple(name for name, spec in OPS.items() if spec.patterns)

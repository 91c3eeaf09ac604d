"""What fusion did, as a report: the subgraphs fused, the gates discovered, what was left alone
and why, the cost before and after, and where the unfused forms overflow."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

import numpy as np

from compiler.errors import ParseError
from compiler.frontend.text import parse
from compiler.ir.graph import Graph
from compiler.ir.opdef import OpDef
from compiler.ir.printing import ATOM, evaluate, render
from compiler.ir.registry import OPS, local
from compiler.ir.tensor_ops import TENSOR_OPS
from compiler.passes.adjoint import adjoint, local_gradient_template


class Fused(NamedTuple):
    """One fused node: ``node = gate(operand, ...)`` replaced ``replaced``."""

    gate: str
    node: str
    operand: str
    template: str  # the replaced subgraph over the operands, "{a}" (and "{b}")
    call: str = ""  # the gate as the listing writes it: "log_softmax(S, axis=1)"
    operands: tuple[str, ...] = ()  # all of them (default: the one ``operand``)

    @property
    def replaced(self) -> str:
        return self.template.format(**self.fields)

    @property
    def fields(self) -> dict[str, str]:
        return dict(zip("abc", self.operands or (self.operand,)))


class Discovered(NamedTuple):
    """A gate discovery made: d/dx of ``definition`` (over x) is ``gradient`` (over y). ``spec``
    is its entry, which fusion does not install (``compiler.gates.fuse`` does)."""

    gate: str
    definition: str
    gradient: str
    spec: OpDef | None = None


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
    stabilised: list[Fused] = field(default_factory=list)  # by "lhs -> rhs" patterns
    discovered: list[Discovered] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @cached_property
    def counts(self) -> dict[str, tuple[int, int]]:
        """``{what: (unfused, fused)}`` for forward ops, backward ops and saved values."""
        rows: dict[str, list[int]] = {"forward ops": [], "backward ops": [], "saved values": []}
        for graph in (self.before, self.after):
            with local(self.discovered_ops):
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
        with local(self.discovered_ops):
            for f in self.fused + self.stabilised:
                if f.template not in found:
                    found[f.template] = overflow_note(f.gate, f.template)
        return {t: n for t, n in found.items() if n}

    def __str__(self) -> str:
        enabled = ", ".join(self.gates) or "none"
        lines = [f"fusion (gates: {enabled}; discovery {'on' if self.discover else 'off'})"]
        if not self.fused and not self.stabilised:
            lines.append("  nothing fused")
        for f in self.fused:
            lines += self._lines("", f)
        for f in self.stabilised:
            lines += self._lines("stabilised: ", f)
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

    def _lines(self, kind: str, f: Fused) -> list[str]:
        lines = [f"  {kind}{f.node} = {f.call}  replaces  {f.replaced}"]
        note = self.overflow.get(f.template)
        return lines + [f"      {note.format(**f.fields)}"] if note else lines

    @property
    def discovered_ops(self) -> dict[str, OpDef]:
        """The entries of the gates discovered, by name: for the caller to install."""
        return {d.gate: d.spec for d in self.discovered if d.spec is not None}

    def _repr_html_(self) -> str | None:  # Jupyter: before and after drawn (compiler.viz)
        from compiler.viz.display import report_html

        return report_html(self)


def fused_nodes(graph: Graph) -> list[Fused]:
    """Every noted node of ``graph``: what it replaced."""
    found = []
    for i, note in sorted(graph.notes.items()):
        operands = tuple(graph.operand_text(a) for a in graph.nodes[i].args)
        call = graph.template(i).format(**dict(zip("abc", operands)))
        found.append(Fused(graph.nodes[i].op, graph.names[i], operands[0], note, call, operands))
    return found


# ------------------------------------------------------------------------------ overflow
PROBES = (-1000.0, -100.0, -10.0, 10.0, 100.0, 1000.0)


def overflow_note(gate: str, template: str) -> str:
    """Where the replaced subgraph, evaluated as written, overflows (an intermediate is ±inf) or
    loses its value or gradient (inf or nan) while the gate stays finite; probed at ±10, ±100,
    ±1000 with NumPy (a gate of two operands: both at the point). A template over the operand "{a}", like the note; empty if nowhere.
    A tensor gate states its own note."""
    if gate in TENSOR_OPS:
        return TENSOR_OPS[gate].overflow
    try:
        unfused = adjoint(parse(template.format(a="x", b="x")), ["x"])
    except (ParseError, KeyError, IndexError):
        return ""
    with np.errstate(all="ignore"):
        return _probe(gate, unfused)


def _probe(gate: str, unfused) -> str:
    xs = np.array(PROBES)
    values = [np.broadcast_to(v, xs.shape) for v in evaluate(unfused, {"x": xs})]
    value, slope = values[unfused.outputs[0]], values[unfused.outputs[1]]
    local = local_gradient_template(gate, 0)
    gate_value = np.broadcast_to(OPS[gate].numpy(*[xs] * OPS[gate].arity), xs.shape)
    gate_slope = evaluate(local, {"a": xs, "b": xs, "y": gate_value})[local.outputs[0]]
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
    x_leaf = {unfused.input("x"): ("{a}", ATOM)}
    what = (
        f"{render(unfused, culprit, x_leaf)} = {values[culprit][j]:g}"
        if culprit is not None
        else ""
    )
    return (
        f"unfused, it overflows at {{a}} = {where}: at {{a}} = {xs[j]:g}{', ' + what if what else ''}, "
        f"its value is {value[j]:g} and its gradient {slope[j]:g}; the gate gives "
        f"{gate_value[j]:g} and {gate_slope[j]:g}"
    )

"""``compiler.draw``: a graph drawn the way the backprop lecture draws it.

One node per gate, labelled from the op table (``OPS[op].symbol``; a constant operand folds into
the label, as in the lecture's ``+1`` and ``1/x``; tensor ops print their listing over ``x``).
Inputs are on the left in the kernel's order, the output on the right (top and bottom when a
wide graph reads better so). Given a point ``at=``, each edge carries the value flowing forward
(green, above the wire) and the gradient flowing back (red, below), and each input its value and
total gradient (the sum over its edges); a tensor graph's edges carry their shapes, and values
only when they are small. A fused gate (``graph.notes``) is one node naming what it replaced;
``expand=True`` draws that subgraph inside a dashed box instead. ``backward=True`` draws the
adjoint graph itself: forward nodes, then the backward nodes (red), each output named.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from graphlib import TopologicalSorter
from typing import Any

import numpy as np

from compiler.errors import DrawError
from compiler.ir import shapes as sh
from compiler.ir.graph import CONST, INPUT, SEED, Graph, format_const
from compiler.ir.registry import OPS
from compiler.ir.tensor import DIM, TensorGraph, attrs_text
from compiler.ir.tensor_ops import TENSOR_OPS
from compiler.viz.render import MAX_LAYOUT, Drawing, attributes, dot_program, escape
from compiler.viz.values import Annotated, annotate, evaluate

GREEN, RED, GRAY, INK = "#1a7f37", "#cf222e", "#6e7781", "#24292f"
#: Arrays of at most this many elements show their values on an edge; larger ones their shape.
MAX_ELEMENTS = 6
#: Labels (a title, what a fused gate replaced) wrap at about this many characters.
WRAP = 48
FOLDED = (CONST, DIM)  # leaves drawn inside the label of the node that reads them

STYLES = {
    "input": {"shape": "box", "style": "rounded,filled", "fillcolor": "#ddf4ff",
              "color": "#54aeff"},
    "op": {"shape": "ellipse", "style": "filled", "fillcolor": "#f6f8fa", "color": "#57606a"},
    "gate": {"shape": "box", "style": "rounded,filled,bold", "fillcolor": "#fff8c5",
             "color": "#bf8700", "peripheries": "2"},
    "backward": {"shape": "ellipse", "style": "filled", "fillcolor": "#ffebe9", "color": RED},
    "output": {"shape": "plaintext", "fontcolor": INK},
}  # fmt: skip
HEADER = (
    'graph [rankdir={rankdir}, fontname="Helvetica", fontsize=13, nodesep=0.12, ranksep=0.3, '
    'bgcolor="white", pad=0.15, labelloc=t, newrank=true];\n'
    'node [fontname="Helvetica", fontsize=12, margin="0.08,0.03", height=0.32];\n'
    f'edge [fontname="Helvetica", fontsize=11, color="{GRAY}", arrowsize=0.6];'
)


@dataclass
class Wire:
    """The numbers on one edge, drawn as a node the edge passes through: shape and value
    (green) on one side of the wire, the gradient (red) on the other, so a label can only be
    read as its own edge's."""

    ident: str
    shape: list[str]
    values: list[str]
    grads: list[str]

    def node(self, rankdir: str) -> str:
        """The label node: a table whose thin middle cell (port ``w``) is the wire itself."""
        top = [*(f'<font color="{GRAY}" point-size="10">{t}</font>' for t in self.shape),
               *(f'<font color="{GREEN}">{t}</font>' for t in self.values)]  # fmt: skip
        above = f"<td>{'<br/>'.join(top)}</td>"
        below = "<td>" + "<br/>".join(f'<font color="{RED}">{t}</font>' for t in self.grads)
        below += "</td>"
        if rankdir == "LR":
            wire = f'<td port="w" height="1" bgcolor="{GRAY}"></td>'
            rows = f"<tr>{above}</tr><tr>{wire}</tr><tr>{below}</tr>"
        else:
            wire = f'<td port="w" width="1" bgcolor="{GRAY}"></td>'
            rows = f"<tr>{above}{wire}{below}</tr>"
        table = f'<table border="0" cellborder="0" cellspacing="0" cellpadding="1">{rows}</table>'
        return f'"{self.ident}" [shape=plaintext, margin=0, width=0, height=0, label=<{table}>];'


class Picture:
    """DOT text under construction: nodes (inside clusters where opened), then every edge at the
    top level (an edge written inside a cluster would pull its ends into it). It is written left
    to right or top to bottom on demand (``source``)."""

    def __init__(self, title: str = ""):
        self.title = title
        self.body: list[str | Wire] = []
        self.edges: list[tuple[str, str, Wire | None]] = []
        self.ranks: list[list[str]] = []
        self.depth = 1
        self.gates = 0
        self.nodes = 0

    def node(self, ident: str, label: str, kind: str, tooltip: str | None = None) -> str:
        """A node; ``label`` is an HTML-like label's content (text escaped)."""
        self.nodes += 1
        attrs = {"label": f"<{label}>", **STYLES[kind], "tooltip": tooltip}
        self.body.append("  " * self.depth + f'"{ident}"{attributes(attrs)};')
        return ident

    def edge(self, tail: str, head: str, label: Wire | None = None) -> None:
        """An edge; its label, if any, becomes a node on it, written where the edge's ends are."""
        if label is not None:
            label.ident = f"{tail}_{head}_{len(self.edges)}"
            self.body.append(label)
        self.edges.append((tail, head, label))

    def order(self, idents: Sequence[str]) -> None:
        """Put these nodes in one rank, in this order (top to bottom, or left to right)."""
        if len(idents) > 1:
            self.ranks.append(list(idents))

    @contextmanager
    def cluster(self, ident: str, label: str, color: str = GRAY, dashed: bool = True):
        pad = "  " * self.depth
        style = "dashed,rounded" if dashed else "rounded"
        attrs = {"label": label, "style": style, "color": color, "fontcolor": INK}
        self.body.append(f'{pad}subgraph "cluster_{ident}" {{')
        self.body.append(f"{pad}  graph{attributes(attrs)};")
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            self.body.append(f"{pad}}}")

    def source(self, rankdir: str = "LR") -> str:
        """The DOT text, laid out left to right (``LR``) or top to bottom (``TB``)."""
        title = {"label": f"<<b>{wrap(self.title)}</b>>"} if self.title else {}
        lines = ["digraph symgrad {", HEADER.format(rankdir=rankdir)]
        lines += [f"graph{attributes(title)};"] if title else []
        lines += [b if isinstance(b, str) else "  " + b.node(rankdir) for b in self.body]
        ends = (":w:w", ":w:e") if rankdir == "LR" else (":w:n", ":w:s")
        for tail, head, wire in self.edges:
            if wire is None:
                lines.append(f'  "{tail}" -> "{head}";')
            else:
                lines.append(f'  "{tail}" -> "{wire.ident}"{ends[0]} [arrowhead=none];')
                lines.append(f'  "{wire.ident}"{ends[1]} -> "{head}";')
        for rank in self.ranks:
            chain = " -> ".join(f'"{i}"' for i in rank)
            lines.append(f"  {{rank=same; {chain} [style=invis]}}")
        return "\n".join([*lines, "}"])

    def layout_size(self) -> int:
        """Nodes ``dot`` would place: every node, plus one per rank each edge crosses."""
        tails: dict[str, list[str]] = {}
        for tail, head, wire in self.edges:
            hops = [tail, head] if wire is None else [tail, wire.ident, head]
            for a, b in zip(hops, hops[1:]):
                tails.setdefault(b, []).append(a)
                tails.setdefault(a, [])
        rank: dict[str, int] = {}
        for n in TopologicalSorter(tails).static_order():
            rank[n] = max((rank[t] + 1 for t in tails[n]), default=0)
        return len(rank) + sum(rank[b] - rank[a] - 1 for b, ts in tails.items() for a in ts)

    def drawing(self, timeout: float | None = None, top_down: Picture | None = None) -> Drawing:
        """The picture, or a DrawError when it is too big to lay out in reasonable time;
        ``top_down`` is the picture to draw when top to bottom reads better (default: this)."""
        size = self.layout_size()
        if size > MAX_LAYOUT:
            raise DrawError(
                f"the picture is too big to lay out: {self.nodes} nodes and {len(self.edges)} "
                f"edges would place {size:,} nodes, over the limit of {MAX_LAYOUT:,} "
                "(compiler.viz.render.MAX_LAYOUT); draw a smaller graph or part of it, or read "
                "its listing: print(kernel.graph)"
            )
        tall = top_down or self
        return Drawing(self.source("LR"), self.gates, self.title,
                       top_down=lambda: tall.source("TB"), timeout=timeout)  # fmt: skip


def wrap(text: str, width: int = WRAP, most: int = 4) -> str:
    """``text`` escaped for a label, in at most ``most`` lines of about ``width`` characters
    (a long title would otherwise set the picture's width)."""
    lines = textwrap.wrap(
        str(text), width, max_lines=most, placeholder=" …", break_on_hyphens=False
    )
    return "<br/>".join(escape(line) for line in lines or [""])


# ------------------------------------------------------------------------------ the entry point
def draw(
    what: Any,
    at: Mapping[str, Any] | None = None,
    backward: bool = False,
    *,
    expand: bool = False,
    wrt: Sequence[str] | None = None,
    seed: Any = None,
    digits: int = 2,
    title: str | None = None,
    timeout: float | None = None,
) -> Drawing:
    """Draw a graph, a kernel (its graph), a fusion report (the fused graph), or text / SymPy /
    a callable (traced, unfused) with Graphviz.

    ``at`` (input values) puts on each edge its value (green) and its gradient (red), the
    gradient of the output seeded with ``seed`` (default 1) with respect to ``wrt`` (default: a
    kernel's ``wrt``, else every input). ``expand`` draws each fused gate's subgraph, ``backward``
    the adjoint graph; ``digits`` is the number of decimals shown. ``timeout`` bounds ``dot``'s
    layout in seconds (default ``SYMGRAD_DRAW_TIMEOUT`` or 30). Returns a ``Drawing``
    (``.save("g.svg")``, ``.svg()``, shown by Jupyter); a DrawError without Graphviz's ``dot``,
    for a graph too big to lay out, or when ``dot`` runs out of time.
    """
    dot_program()
    graph, kernel_wrt, adj, name = source_of(what)
    if wrt is not None and adj is not graph:  # a kernel's adjoint is for the kernel's wrt
        adj = None
    pic = Picture(name if title is None else title)
    draw_into(
        pic, graph, at, backward or adj is graph, expand=expand,
        wrt=kernel_wrt if wrt is None else wrt, seed=seed, digits=digits, adj=adj,
    )  # fmt: skip
    return pic.drawing(timeout)


def source_of(what: Any) -> tuple[Graph, tuple[str, ...] | None, Any, str]:
    """(graph, wrt, adjoint graph if known, title) of whatever ``draw`` was given."""
    from compiler.passes.adjoint import AdjointGraph
    from compiler.passes.fusion import FusionReport

    if isinstance(what, AdjointGraph):
        return what, what.wrt, what, ""
    if isinstance(what, Graph):
        return what, None, None, ""
    if isinstance(what, FusionReport):
        return what.after, what.wrt, None, "fused"
    if hasattr(what, "graph") and hasattr(what, "adjoint"):  # Kernel, TensorKernel
        return what.graph, tuple(what.wrt), what._adjoint, what.title
    from compiler import api

    return api.trace(what), None, None, api._title(what)


def draw_into(
    pic: Picture,
    graph: Graph,
    at: Mapping[str, Any] | None,
    backward: bool,
    *,
    expand: bool = False,
    wrt: Sequence[str] | None = None,
    seed: Any = None,
    digits: int = 2,
    adj: Any = None,
    prefix: str = "",
) -> None:
    """Draw ``graph`` (or its adjoint) into ``pic``, node names prefixed by ``prefix``."""
    if backward:
        if adj is None:
            from compiler.passes.adjoint import adjoint

            adj = adjoint(graph, wrt)
        values = None if at is None else evaluate(adj, at, seed)
        _draw_adjoint(pic, adj, values, digits, prefix)
        return
    numbers = None if at is None else annotate(graph, at, wrt, seed)
    drawn = numbers.graph if numbers is not None else graph
    writer = _Writer(pic, digits, expand)
    out = writer.graph(drawn, numbers, prefix, count=True)
    marker = pic.node(f"{prefix}out", "f", "output")
    o = drawn.outputs[0]
    value = numbers.values[o] if numbers else None
    grad = numbers.grads.get(o) if numbers else None
    pic.edge(out, marker, writer.edge_label(_shape(drawn, o), value, grad))


class _Writer:
    """Writes a forward graph's nodes and edges; a fused gate expanded is a graph of its own."""

    def __init__(self, pic: Picture, digits: int, expand: bool):
        self.pic, self.digits, self.expand = pic, digits, expand

    def graph(
        self,
        g: Graph,
        numbers: Annotated | None,
        prefix: str,
        sources: dict[str, str] | None = None,
        count: bool = False,
    ) -> str:
        """Draw ``g``'s nodes and edges; inputs named in ``sources`` are those drawn nodes.
        Returns the drawn node of the output."""
        sources = sources or {}
        live = g.reachable(g.outputs[:1])
        ids: dict[int, str] = {}
        expanded: set[int] = set()
        inputs = []
        for i, node in enumerate(g.nodes):
            ident = f"{prefix}n{i}"
            if node.op == INPUT and node.value in sources:
                ids[i] = sources[node.value]
            elif node.op == INPUT:
                label = input_label(node.value, numbers, i, self.digits)
                ids[i] = self.pic.node(ident, label, "input", node.value)
                inputs.append(ids[i])
            elif node.op in FOLDED or not live[i]:
                continue
            elif self.expand and i in g.notes and (body := gate_body(g, i)) is not None:
                ids[i] = self.gate(g, i, body, numbers, ident, ids)
                expanded.add(i)
            else:
                kind = "gate" if i in g.notes else "op"
                ids[i] = self.pic.node(ident, node_label(g, i), kind, g.line(i))
            if count and node.op != INPUT:
                self.pic.gates += 1
        for i, node in enumerate(g.nodes):
            if i not in ids or i in expanded or node.op == INPUT:
                continue
            for k, a in enumerate(node.args):
                if g.nodes[a].op in FOLDED:
                    continue
                value = numbers.values[a] if numbers else None
                grad = numbers.edge_grads.get((i, k)) if numbers else None
                self.pic.edge(ids[a], ids[i], self.edge_label(_shape(g, a), value, grad))
        self.pic.order(inputs)  # the kernel's input order, the same in every picture
        return ids[g.outputs[0]]

    def gate(self, g: Graph, i: int, body: Graph, numbers, ident: str, ids: dict) -> str:
        """A fused gate drawn as the subgraph it replaced, in a dashed box (its operands are
        the body's x and y)."""
        operands = {v: a for v, a in zip("xy", g.nodes[i].args) if v in body.inputs}
        inner = None
        if numbers is not None:
            at = {v: numbers.values[a] for v, a in operands.items()}
            upstream = numbers.grads.get(i)
            inner = (Annotated(body, evaluate(body, at)) if upstream is None
                     else annotate(body, at, list(operands), upstream))  # fmt: skip
        name = g.nodes[i].op
        label = f"<<b>{escape(name)}</b> (fused) = {wrap(g.notes[i].format(a='x', b='y'))}>"
        with self.pic.cluster(ident, label, STYLES["gate"]["color"]):
            drawn = inner.graph if inner is not None else body
            sources = {v: ids[a] for v, a in operands.items()}
            return self.graph(drawn, inner, f"{ident}_", sources)

    def edge_label(self, shape, value, grad) -> Wire | None:
        """What an edge carries: its shape (tensors), value (green) and gradient (red)."""
        shapes = [escape(sh.text(shape))] if shape else []
        sides = []
        for number in (value, grad):
            lines = None if number is None else format_value(number, self.digits)
            if number is not None and lines is None and not shape:  # a scalar graph on arrays
                shapes = [escape(str(np.shape(number)))]
            sides.append([escape(line) for line in lines or ()])
        if not (shapes or sides[0] or sides[1]):
            return None
        return Wire("", shapes, *sides)


def _shape(g: Graph, i: int):
    return g.shapes[i] if isinstance(g, TensorGraph) else None


# ------------------------------------------------------------------------------ the backward graph
def _draw_adjoint(pic: Picture, adj, values: list | None, digits: int, prefix: str) -> None:
    live = adj.reachable(adj.outputs)
    writer = _Writer(pic, digits, False)
    ids: dict[int, str] = {}
    inputs = []
    for i, node in enumerate(adj.nodes):
        ident = f"{prefix}n{i}"
        if not live[i] or node.op in FOLDED:
            continue
        if node.op in (INPUT, SEED):
            ids[i] = pic.node(ident, "seed" if node.op == SEED else escape(node.value), "input")
            inputs.append(ids[i])
            continue
        kind = "gate" if i in adj.notes else ("op" if i < adj.n_forward else "backward")
        name = f'<br/><font point-size="10" color="{GRAY}">{escape(adj.names[i])}</font>'
        ids[i] = pic.node(ident, node_label(adj, i) + name, kind, adj.line(i))
        pic.gates += 1
    for i in ids:
        for a in adj.nodes[i].args:
            if adj.nodes[a].op not in FOLDED:
                value = values[a] if values else None
                pic.edge(ids[a], ids[i], writer.edge_label(_shape(adj, a), value, None))
    names = ["f", *(f"df/d{w}" for w in adj.wrt)]
    markers = []
    for k, (o, name) in enumerate(zip(adj.outputs, names)):
        if o not in ids:  # a constant output (a gradient that is 0 everywhere)
            ids[o] = pic.node(f"{prefix}n{o}", escape(leaf_text(adj, o)), "output")
        markers.append(pic.node(f"{prefix}out{k}", escape(name), "output"))
        value = values[o] if values else None
        pic.edge(ids[o], markers[-1], writer.edge_label(_shape(adj, o), value, None))
    pic.order(inputs)
    pic.order(markers[1:])


# ------------------------------------------------------------------------------ labels
def input_label(name: str, numbers: Annotated | None, i: int, digits: int) -> str:
    """An input's label: its name, its value when a number, and the total gradient reaching it
    (the sum of what its edges carry back, where it fans out): ``x = -2.00``, ``∂f/∂x = -4.00``."""
    label = escape(name)
    if numbers is None:
        return label
    value = format_value(numbers.values[i], digits)
    if value is not None and len(value) == 1 and np.ndim(numbers.values[i]) == 0:
        label += f' = <font color="{GREEN}">{escape(value[0])}</font>'
    grad = numbers.grads.get(i)
    lines = None if grad is None else format_value(grad, digits)
    if lines:  # the name and the number on lines of their own: many inputs stay narrow
        rows = [f"∂f/∂{name} =", *lines]
        label += "".join(f'<br/><font color="{RED}">{escape(r)}</font>' for r in rows)
    return label


def leaf_text(g: Graph, i: int) -> str:
    """A folded leaf as its label shows it: a constant's literal, a dimension's name."""
    node = g.nodes[i]
    if node.op == DIM:
        return str(node.value)
    text = format_const(node.value)
    return f"({text})" if text.startswith("-") else text


def node_label(g: Graph, i: int) -> str:
    """The label of op node ``i`` (HTML-like label text): its symbol from the op table, constant
    operands folded in (``+1``, ``1/x``, ``**2``, ``max(0, x)``); a fused gate also names what it
    replaced."""
    node = g.nodes[i]
    folded = {k: leaf_text(g, a) for k, a in enumerate(node.args) if g.nodes[a].op in FOLDED}
    if i in g.notes:
        replaced = wrap(g.notes[i].format(a="x", b="y"), WRAP // 2)
        return f'<b>{escape(node.op)}</b><br/><font point-size="10">{replaced}</font>'
    if node.op in OPS:
        text = _elementwise_label(node.op, folded)
    else:
        spec = TENSOR_OPS[node.op]
        attrs = attrs_text(node.op, node.value)
        if not folded and spec.listing.startswith("{a} ") and spec.listing.endswith(" {b}"):
            text = spec.listing[4:-4]  # an infix op: "@"
        else:
            operands = {"ab"[k]: folded.get(k, "xy"[k]) for k in range(spec.arity)}
            text = spec.listing.format(**operands, attrs=attrs)
    return escape(text)


def _elementwise_label(op: str, folded: dict[int, str]) -> str:
    spec = OPS[op]
    if not folded:
        return spec.symbol
    infix = spec.arity == 2 and spec.text == f"{{a}} {spec.symbol} {{b}}"
    if infix and len(folded) == 1:
        (k, c), = folded.items()  # fmt: skip
        return f"{spec.symbol}{c}" if spec.commutative or k == 1 else f"{c}{spec.symbol}x"
    operands = [folded.get(k, "x") for k in range(spec.arity)]
    if infix:
        return f"{operands[0]}{spec.symbol}{operands[1]}"
    return f"{spec.symbol}({', '.join(operands)})"


def gate_body(g: Graph, i: int) -> Graph | None:
    """The subgraph fused gate ``i`` replaced, over the input ``x`` (None if it cannot be read)."""
    from compiler.errors import SymgradError
    from compiler.frontend.text import parse

    text = g.notes[i].format(a="x", b="y")
    try:
        if isinstance(g, TensorGraph):
            shapes = {v: g.shapes[a] for v, a in zip("xy", g.nodes[i].args)}
            return parse(text, TensorGraph(shapes))
        return parse(text)
    except SymgradError:
        return None


# ------------------------------------------------------------------------------ numbers
def format_value(value: Any, digits: int = 2) -> list[str] | None:
    """A value as label lines: a number, a vector ``[0.22, 0.26]``, a matrix one row per line;
    None for an array of more than MAX_ELEMENTS elements."""
    a = np.asarray(value, dtype=np.float64)
    if a.ndim == 0:
        return [format_number(float(a), digits)]
    if a.size > MAX_ELEMENTS or a.ndim > 2:
        return None
    rows = a.reshape(-1, a.shape[-1]) if a.ndim == 2 else a[None, :]
    return ["[" + ", ".join(format_number(float(v), digits) for v in row) + "]" for row in rows]


def format_number(v: float, digits: int = 2) -> str:
    """``digits`` decimals as the lecture writes them (0.73, -0.20), scientific notation for
    numbers too small or too large for that."""
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return f"{0.0:.{digits}f}"
    if abs(v) < 0.5 * 10.0**-digits or abs(v) >= 1e6:
        return f"{v:.{max(digits - 1, 1)}e}"
    return f"{v:.{digits}f}"


def cluster_of(pic: Picture, ident: str, label: str) -> Iterator[None]:
    """A solid box around a whole drawing (``compare`` puts two side by side)."""
    return pic.cluster(ident, label, GRAY, dashed=False)

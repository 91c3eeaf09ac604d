"""Jupyter's rich display: what a Graph, a Kernel and a FusionReport show as a cell's value,
and ``source``, the generated code with syntax highlighting.

Each ``_repr_*_`` method of those classes is one line calling here. A graph too big to lay out
quickly, or a machine without Graphviz's ``dot`` (warned once), falls back to the text repr.
"""

from __future__ import annotations

import html
import re
import warnings
from typing import Any

from compiler.errors import DrawError
from compiler.viz.render import MIN_FONT_PX, Drawing, legible_px

#: Graphs of more op nodes than this show as text in Jupyter (``draw`` still draws them).
REPR_MAX_OPS = 200

_warned = False


def _drawing(what: Any, **options) -> Drawing | None:
    """``draw(what)``, or None (text display) when it is too big, ``dot`` is missing (warned
    once) or ``dot`` fails or runs out of time (warned: the picture was asked for)."""
    from compiler.viz.draw import draw, source_of
    from compiler.viz.render import dot_program

    graph = source_of(what)[0]
    if sum(1 for _ in graph.op_nodes()) > REPR_MAX_OPS:
        return None
    try:
        dot_program()
    except DrawError as e:
        global _warned
        if not _warned:
            _warned = True
            warnings.warn(f"symgrad: no pictures: {e}", RuntimeWarning, stacklevel=3)
        return None
    try:
        drawing = draw(what, **options)
        drawing.svg()
        return drawing
    except DrawError as e:
        warnings.warn(f"symgrad: shown as text: {e}", RuntimeWarning, stacklevel=3)
        return None


def graph_svg(graph: Any) -> str | None:
    """``Graph._repr_svg_``: the graph drawn (an AdjointGraph: its backward graph)."""
    drawing = _drawing(graph)
    return drawing.svg() if drawing else None


def kernel_html(kernel: Any) -> str | None:
    """``Kernel._repr_html_``: its graph drawn, the generated source folded beneath."""
    drawing = _drawing(kernel)
    if drawing is None:
        return None
    title = html.escape(repr(kernel))
    return (
        f"<div><code>{title}</code><br/>{fitted_svg(drawing)}"
        f"<details><summary>generated source</summary>{source_html(kernel.source)}"
        "</details></div>"
    )


def report_html(report: Any) -> str | None:
    """``FusionReport._repr_html_``: before and after side by side, the report beneath."""
    pictures = [("unfused", _drawing(report.before)), ("fused", _drawing(report.after))]
    text = f"<pre>{html.escape(str(report))}</pre>"
    if any(d is None for _, d in pictures):
        return text
    return side_by_side(pictures, [], "") + text


def side_by_side(pictures: list[tuple[str, Drawing]], rows: list, note: str) -> str:
    """The pictures next to each other (wrapping when the cell is too narrow), each under its
    name, then a table of (what, left, right) rows."""
    items = "".join(
        f"<div style='flex:0 1 auto;max-width:100%'><div style='text-align:center'>"
        f"<b>{html.escape(name)}</b></div>{fitted_svg(drawing)}</div>"
        for name, drawing in pictures
    )
    head = "".join(f"<th style='text-align:right'>{html.escape(n)}</th>" for n, _ in pictures)
    body = "".join(
        f"<tr><td style='text-align:left'>{html.escape(what)}</td>"
        + "".join(f"<td style='text-align:right'>{html.escape(v)}</td>" for v in values)
        + "</tr>"
        for what, *values in rows
    )
    table = f"<table><tr><th></th>{head}</tr>{body}</table>" if rows else ""
    caption = f"<p><small>{html.escape(note)}</small></p>" if note else ""
    flex = "display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start"
    return f"<div><div style='{flex}'>{items}</div>{table}{caption}</div>"


def fitted_svg(drawing: Drawing) -> str:
    """The drawing's SVG element, shrunk to the width of its cell when wider, but never below
    the width at which its smallest text is MIN_FONT_PX: then the cell scrolls sideways."""
    svg = drawing.inline_svg()
    at_full = legible_px(svg, 10**9)  # its smallest text at its natural size (1 pt = 4/3 px)
    natural = _width_px(svg)
    least = min(natural, natural * MIN_FONT_PX / at_full) if at_full > 0 else natural
    style = f"max-width:100%;min-width:{least:.0f}px;height:auto"
    fitted = svg.replace("<svg ", f'<svg style="{style}" ', 1)
    return f"<div style='overflow-x:auto;max-width:100%'>{fitted}</div>"


def _width_px(svg: str) -> float:
    found = re.search(r'<svg width="([\d.]+)pt"', svg)
    return float(found.group(1)) * 4 / 3 if found else 0.0


# ------------------------------------------------------------------------------ source
class Source:
    """Generated code that Jupyter shows highlighted; ``str()`` is the plain text."""

    def __init__(self, text: str):
        self.text = text

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        return source_html(self.text)


def source(what: Any) -> Source:
    """The generated source of a kernel (or any text), highlighted in Jupyter."""
    return Source(what if isinstance(what, str) else what.source)


def source_html(text: str) -> str:
    """Python source as HTML, highlighted by Pygments where it is installed."""
    try:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import PythonLexer
    except ImportError:
        return f"<pre>{html.escape(text)}</pre>"
    return highlight(text, PythonLexer(), HtmlFormatter(noclasses=True, style="default"))

"""``compiler.explore``: step through backprop gate by gate, the unfused graph beside the fused.

The view is one self-contained HTML document (its own small script, ``explore.js``, and style,
``explore.css``; no server, no kernel), so it works in JupyterLab, the classic Notebook, VS Code
and in exported HTML. Its buttons, the ← and → keys and a slider step forward then backward,
one gate at a time: the current gate is highlighted in each drawing and a caption says what it
computes, with the numbers (``compiler.viz.steps``). Both sides advance together, aligned so a
fused gate's one step stands beside the steps it replaced, with each side's step counts and
saved bytes above it. Hovering (or focusing) a node shows its formula, its local gradient rule
from the op table, its value and gradient. In Jupyter it shows in an iframe (``srcdoc``), which
runs its script wherever the notebook's HTML is shown; ``save("x.html")`` writes the document.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from compiler.errors import DrawError, InputError
from compiler.viz.draw import Picture, draw_into
from compiler.viz.steps import Walk, align, walk


@dataclass
class Panel:
    """One side of the view: its name, walk, drawing (SVG) and the numbers above it."""

    name: str
    prefix: str
    walk: Walk
    svg: str
    saved_values: int
    saved_bytes: int

    @property
    def stats(self) -> str:
        w = self.walk
        return (
            f"{len(w.forward)} forward steps · {len(w.backward)} backward steps · "
            f"keeps {self.saved_values} value{'s' if self.saved_values != 1 else ''} "
            f"({self.saved_bytes:,} bytes) for the backward pass"
        )

    def ident(self, step_index: int) -> str:
        return f"{self.prefix}n{self.walk.steps[step_index].node}"


@dataclass
class Explorer:
    """The stepper: its panels (unfused then fused, or one when nothing was fused), the rows
    that step them together (``rows[r][p]``: panel ``p``'s step index at row ``r``, None when
    that side has no step there) and the HTML document (``html()``, ``save``)."""

    title: str
    panels: list[Panel]
    rows: list[tuple[int | None, ...]]
    note: str = ""
    kernel_line: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        sides = ", ".join(f"{p.name}: {len(p.walk.steps)} steps" for p in self.panels)
        return f"<Explorer {self.title!r} {len(self.rows)} rows ({sides})>"

    def captions(self, row: int) -> list[str | None]:
        """Each panel's caption at ``row`` (0-based), as the page shows it after row + 1 presses
        of "next" (a side with no step of its own there shows its last one)."""
        shown = self.shown()[row]
        return [None if s is None else p.walk.steps[s].caption for p, s in zip(self.panels, shown)]

    def shown(self) -> list[list[int | None]]:
        """Per row, the step each panel shows: its own, or its last one while the other side
        walks through steps it has no counterpart for."""
        last: list[int | None] = [None] * len(self.panels)
        out = []
        for row in self.rows:
            last = [s if s is not None else prev for s, prev in zip(row, last)]
            out.append(list(last))
        return out

    def data(self) -> dict:
        shown = self.shown()
        panels = []
        for p, panel in enumerate(self.panels):
            steps = panel.walk.steps
            n_fwd = len(panel.walk.forward)
            covers: dict[int, list[int]] = {}
            for r, row in enumerate(self.rows):
                if row[p] is not None:
                    covers.setdefault(row[p], []).append(r)
            items = []
            for j, s in enumerate(steps):
                number = j + 1 if s.phase == "forward" else j + 1 - n_fwd
                total = n_fwd if s.phase == "forward" else len(steps) - n_fwd
                items.append({
                    "node": panel.ident(j), "phase": s.phase, "gate": s.gate,
                    "caption": s.caption, "count": f"{s.phase} step {number} of {total}",
                })  # fmt: skip
            align_notes = []
            for r, row in enumerate(shown):
                j = row[p]
                note = ""
                if j is not None and len(covers.get(j, ())) > 1 and len(self.panels) > 1:
                    other = 1 - p
                    others = [self.rows[x][other] for x in covers[j]]
                    others = [o for o in others if o is not None]
                    if others:
                        gates = ", ".join(self.panels[other].walk.steps[o].gate for o in others)
                        note = (f"one {steps[j].gate} step here for {len(others)} "
                                f"{self.panels[other].name} steps ({gates})")  # fmt: skip
                elif j is not None and self.rows[r][p] is None:
                    note = "no step of its own here: the other side is computing more"
                align_notes.append(note)
            nodes = {f"{panel.prefix}n{i}": info for i, info in panel.walk.nodes.items()}
            panels.append({"name": panel.name, "steps": items, "nodes": nodes,
                           "align": align_notes})  # fmt: skip
        starts = [
            f"Press next (→) to walk {len(p.walk.forward)} gates forward, then "
            f"{len(p.walk.backward)} backward." for p in self.panels
        ]  # fmt: skip
        return {"rows": shown, "panels": panels, "start": starts}

    def html(self) -> str:
        """The self-contained HTML document."""
        css = _asset("explore.css")
        js = _asset("explore.js")
        # every "<" escaped: no text in the data can close or open a tag in the script
        payload = json.dumps(self.data(), ensure_ascii=False).replace("<", "\\u003c")
        sections = "".join(
            f'<section class="sg-panel" data-panel="{k}" data-name="{html.escape(p.name)}" '
            f'style="flex-grow:{_svg_width(p.svg):.0f}">'
            f"<h3>{html.escape(p.name)}</h3>"
            f'<div class="sg-stats">{html.escape(p.stats)}</div>'
            f'<div class="sg-count"></div>'
            f'<div class="sg-caption" aria-live="polite"></div>'
            f'<div class="sg-align"></div>'
            f'<div class="sg-svg">{p.svg}</div></section>'
            for k, p in enumerate(self.panels)
        )
        note = f'<p class="sg-note">{html.escape(self.note)}</p>' if self.note else ""
        kernel = (f'<p class="sg-kernel">{html.escape(self.kernel_line)}</p>'
                  if self.kernel_line else "")  # fmt: skip
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>symgrad explore: {html.escape(self.title)}</title>"
            f"<style>{css}</style></head><body>"
            f'<div class="sg-explore"><div class="sg-title">{html.escape(self.title)}</div>'
            '<div class="sg-controls">'
            '<button type="button" id="sg-prev" aria-label="previous step">← back</button>'
            f'<input type="range" id="sg-slider" min="0" max="{len(self.rows)}" value="0" '
            'aria-label="step">'
            '<button type="button" id="sg-next" aria-label="next step">next →</button>'
            '<span id="sg-position"></span></div>'
            f"{kernel}{note}"
            f'<div class="sg-panels">{sections}</div>'
            '<div id="sg-hover" class="sg-hover">Hover over or focus (Tab) a node: its formula, '
            "local gradient rule, value and gradient.</div></div>"
            f'<script type="application/json" id="sg-data">{payload}</script>'
            f"<script>{js}</script></body></html>\n"
        )

    def save(self, path: str | Path) -> Path:
        """Write the HTML document to ``path``."""
        path = Path(path)
        try:
            path.write_text(self.html(), encoding="utf-8")
        except OSError as e:
            raise DrawError(f"cannot write the explorer to {str(path)!r}: {e.strerror or e}") from e
        return path

    def iframe(self) -> str:
        """The document in an iframe (``srcdoc``): how a notebook shows it, script and all. The
        page sets the frame's height to its own once it runs."""
        height = 260 + max((_svg_height(p.svg) for p in self.panels), default=300)
        return (
            f'<iframe srcdoc="{html.escape(self.html(), quote=True)}" '
            f'style="width:100%;height:{height:.0f}px;border:0" '
            f'title="symgrad explore: {html.escape(self.title)}"></iframe>'
        )

    def _repr_html_(self) -> str:
        return self.iframe()


def _svg_width(svg: str) -> float:
    import re

    found = re.search(r'<svg width="([\d.]+)pt"', svg)
    return float(found.group(1)) if found else 300.0


def _svg_height(svg: str) -> float:
    import re

    found = re.search(r'<svg width="([\d.]+)pt" height="([\d.]+)pt"', svg)
    if not found:
        return 300.0
    w, h = (float(x) * 4 / 3 for x in found.groups())
    return h * min(1.0, 430 / w) if w else h


def _asset(name: str) -> str:
    return resources.files("compiler.viz").joinpath(name).read_text(encoding="utf-8")


# ------------------------------------------------------------------------------ the entry point
def explore(
    what: Any,
    at: Mapping[str, Any] | None = None,
    *,
    wrt: Sequence[str] | None = None,
    shapes: Mapping[str, Any] | None = None,
    fuse: bool | str | Sequence[str] = True,
    seed: Any = None,
    digits: int = 2,
    sliders: bool = False,
):
    """Step through ``what``'s backprop at the point ``at``, fused beside unfused.

    ``what`` is a kernel (its fusion report gives the unfused graph) or text / SymPy / a callable
    (compiled with ``wrt``, ``shapes``, ``fuse``). Returns an ``Explorer`` (shown by Jupyter,
    ``save("x.html")``). ``sliders=True`` adds input sliders (ipywidgets) that recompute through
    the compiled kernel and redraw every label; without ipywidgets it returns the static
    stepper with a note saying so.
    """
    if at is None:
        raise InputError("explore needs a point: explore(k, at={'x': 1.0, ...})")
    kernel = _kernel(what, wrt, shapes, fuse)
    if sliders:
        from compiler.viz.sliders import with_sliders

        return with_sliders(kernel, at, lambda point: build(kernel, point, seed, digits))
    return build(kernel, at, seed, digits)


def _kernel(what, wrt, shapes, fuse):
    if hasattr(what, "graph") and hasattr(what, "adjoint") and hasattr(what, "fusion"):
        return what
    from compiler import api

    return api.compile_gradient(what, wrt=wrt, shapes=shapes, fuse=fuse)


def build(kernel: Any, at: Mapping[str, Any], seed: Any = None, digits: int = 2) -> Explorer:
    """The explorer of ``kernel`` at ``at``: unfused beside fused when fusion changed its graph."""
    from compiler.viz.render import dot_program

    dot_program()
    wrt = tuple(kernel.wrt)
    report = kernel.fusion
    graphs = [("fused", kernel.graph)]
    note = ""
    if report is not None and report.before is not report.after and report.fused:
        graphs = [("unfused", report.before), ("fused", report.after)]
    else:
        note = "Nothing was fused in this function: one graph, stepped alone."
    panels = [_panel(name, g, at, wrt, seed, digits) for name, g in graphs]
    if len(panels) == 2:
        rows = align(panels[0].walk, panels[1].walk)
    else:
        rows = [(j,) for j in range(len(panels[0].walk.steps))]
    return Explorer(kernel.title, panels, rows, note)


def _panel(name, graph, at, wrt, seed, digits) -> Panel:
    from compiler.passes.adjoint import adjoint
    from compiler.viz.values import evaluate

    w = walk(graph, at, wrt, seed, digits)
    pic = Picture()
    draw_into(pic, graph, at, False, wrt=wrt, seed=seed, digits=digits, prefix=name[0])
    svg = pic.drawing().inline_svg()
    adj = adjoint(graph, wrt)
    values = evaluate(adj, at, seed)
    saved = 8 * sum(int(np.size(values[i])) for i in adj.saved_nodes)
    return Panel(name, name[0], w, svg, len(adj.saved_nodes), saved)

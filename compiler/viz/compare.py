"""``compiler.compare``: one function unfused and fused, side by side, with what each costs.

Both graphs are drawn (with values and gradients when ``at=`` is given), and both kernels are
compiled and timed: forward nodes, backward ops and saved values come from the fusion report
(``FusionReport.counts``), saved bytes from the values a ``vjp`` keeps at the measured size, and
the time is the best of a few ``value_and_grad`` calls of each compiled kernel.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compiler.ir import shapes as sh
from compiler.viz.draw import Picture, cluster_of, draw_into
from compiler.viz.render import Drawing, dot_program

#: Elements each scalar input gets when a scalar function is timed (its point, repeated).
TIMED_ELEMENTS = 100_000


@dataclass(repr=False)
class Comparison:
    """The unfused and the fused kernel of one function, their pictures and their costs.

    Each row of ``rows`` is ``(unfused, fused)``: "forward nodes", "backward ops", "saved
    values", "saved bytes" (at the measured size) and "seconds" (best ``value_and_grad`` call;
    None when not timed). ``drawing`` holds both pictures, one above the other, for ``save``.
    """

    unfused: Any
    fused: Any
    drawings: tuple[Drawing, Drawing]
    drawing: Drawing
    rows: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    measured: str = ""  # what the timing ran on

    @property
    def nodes(self) -> tuple[int, int]:
        return self.rows["forward nodes"]

    @property
    def backward_ops(self) -> tuple[int, int]:
        return self.rows["backward ops"]

    @property
    def saved_bytes(self) -> tuple[int, int]:
        return self.rows["saved bytes"]

    @property
    def seconds(self) -> tuple[float | None, float | None]:
        return self.rows["seconds"]

    def table(self) -> list[tuple[str, str, str]]:
        """The rows as text: (what, unfused, fused)."""
        out = []
        for what, (u, f) in self.rows.items():
            if what == "seconds":
                what, u, f = "value_and_grad time", _time_text(u), _time_text(f)
            elif what == "saved bytes":
                u, f = f"{u:,}", f"{f:,}"
            out.append((what, str(u), str(f)))
        return out

    def __repr__(self) -> str:
        return (
            f"<Comparison {self.fused.title!r}: forward nodes {self.nodes[0]} -> {self.nodes[1]}>"
        )

    def __str__(self) -> str:
        lines = [f"{'':<24}{'unfused':>14}{'fused':>14}"]
        lines += [f"{w:<24}{u:>14}{f:>14}" for w, u, f in self.table()]
        if self.measured:
            lines.append(f"(measured on {self.measured})")
        return "\n".join(lines)

    def save(self, path, dpi: int | None = None):
        """Write both pictures (one above the other) as .svg, .png, .pdf or .dot."""
        return self.drawing.save(path, dpi)

    def _repr_html_(self) -> str:
        from compiler.viz.display import side_by_side

        return side_by_side(
            [("unfused", self.drawings[0]), ("fused", self.drawings[1])],
            self.table(),
            f"measured on {self.measured}" if self.measured else "",
        )


def compare(
    source: Any,
    at: Mapping[str, Any] | None = None,
    *,
    shapes: Mapping[str, Any] | None = None,
    wrt: Sequence[str] | None = None,
    fuse: bool | str | Sequence[str] = True,
    expand: bool = False,
    digits: int = 2,
    elements: int = TIMED_ELEMENTS,
    repeat: int = 10,
) -> Comparison:
    """Compile ``source`` unfused and fused (``fuse=``), draw both, and measure both.

    A scalar function is timed on ``elements`` samples of its point ``at`` (random normal
    samples without one); a tensor program (``shapes=``) at ``at`` itself, and not at all
    without it. ``repeat=0`` skips timing.
    """
    from compiler import api

    dot_program()
    kernels = [
        api.compile_gradient(source, wrt=wrt, shapes=shapes, fuse=f, mode="compiled")
        for f in (False, fuse)
    ]
    report = kernels[1].fusion
    title = kernels[1].title
    wide, tall, singles = Picture(title), Picture(title), [Picture(), Picture()]
    # In the picture of both, dot puts the cluster written last on top when drawing left to
    # right, and the one written first on the left when top to bottom: unfused comes first.
    for pic, k in [(singles[0], 0), (singles[1], 1), (wide, 1), (wide, 0), (tall, 0), (tall, 1)]:
        name = ("unfused", "fused")[k]
        pair = pic is wide or pic is tall
        box = cluster_of(pic, name[0], f"<<b>{name}</b>>") if pair else nullcontext()
        with box:
            draw_into(pic, kernels[k].graph, at, False, expand=expand, wrt=kernels[k].wrt,
                      digits=digits, prefix=name[0])  # fmt: skip
    counts = report.counts
    arrays, measured = _timing_inputs(kernels[1], at, shapes, elements)
    rows = {
        "forward nodes": counts["forward ops"],
        "backward ops": counts["backward ops"],
        "saved values": counts["saved values"],
        "saved bytes": tuple(_saved_bytes(k, arrays) for k in kernels) if arrays else (0, 0),
        "seconds": tuple(_best_time(k, arrays, repeat) for k in kernels),
    }
    drawings = (singles[0].drawing(), singles[1].drawing())
    both = wide.drawing(top_down=tall)
    return Comparison(kernels[0], kernels[1], drawings, both, rows, measured)


def _timing_inputs(kernel, at, shapes, elements: int) -> tuple[dict | None, str]:
    if shapes is not None:
        if at is None:
            return None, ""
        sizes = sh.bind(kernel.shapes, {n: np.asarray(v) for n, v in at.items()})
        named = ", ".join(f"{d}={n}" for d, n in sizes.items())
        return dict(at), f"the point given ({named})" if named else "the point given"
    rng = np.random.default_rng(0)
    arrays = {
        n: np.full(elements, float(at[n])) if at is not None else rng.standard_normal(elements)
        for n in kernel.inputs
    }
    return arrays, f"{elements:,} samples per input"


def _best_time(kernel, arrays: dict | None, repeat: int) -> float | None:
    if arrays is None or repeat <= 0:
        return None
    kernel.value_and_grad(**arrays)  # compiles (or loads) first
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        kernel.value_and_grad(**arrays)
        best = min(best, time.perf_counter() - start)
    return best


def _saved_bytes(kernel, arrays: dict) -> int:
    """float64 bytes a ``vjp``'s forward keeps for its backward at these inputs."""
    adj = kernel.adjoint
    if hasattr(adj, "shapes"):
        sizes = sh.bind(kernel.shapes, {n: np.asarray(v) for n, v in arrays.items()})
        return 8 * sum(math.prod(sh.concrete(adj.shapes[i], sizes)) for i in adj.saved_nodes)
    n = max((np.size(v) for v in arrays.values()), default=1)
    return 8 * n * len(adj.saved)


def _time_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.3f} ms" if seconds < 1 else f"{seconds:.2f} s"

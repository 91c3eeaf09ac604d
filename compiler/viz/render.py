"""Graphviz: the DOT text of a picture, and ``dot`` turning it into SVG or PNG.

Graphviz's ``dot`` program is a real dependency of drawing (Debian's package ``graphviz``); it is
run as a subprocess, so no Python binding is needed. Without it, drawing raises ``DrawError``
saying how to install it.
"""

from __future__ import annotations

import html
import shutil
import subprocess
from pathlib import Path

from compiler.errors import DrawError

INSTALL = (
    "install Graphviz: `apt-get install graphviz` (Debian, Ubuntu), `brew install graphviz` "
    "(macOS) or `conda install graphviz`, so that `dot` is on PATH"
)
FORMATS = ("svg", "png", "pdf", "dot")
#: A picture of more nodes than this is refused: dot's layout time grows quickly with size.
MAX_NODES = 1500


def dot_program() -> str:
    """The path of Graphviz's ``dot``, or a DrawError saying how to install it."""
    path = shutil.which("dot")
    if path is None:
        raise DrawError(f"drawing needs Graphviz's `dot` program, which is not on PATH: {INSTALL}")
    return path


def quote(text: str) -> str:
    """A DOT string literal."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def escape(text: str) -> str:
    """Text inside a DOT HTML-like label."""
    return html.escape(str(text), quote=False)


def attributes(attrs: dict) -> str:
    """``[k="v", label=<...>]``: values starting with "<" are HTML-like labels, kept as given."""
    parts = []
    for k, v in attrs.items():
        if v is None:
            continue
        text = str(v)
        parts.append(f"{k}={text if text.startswith('<') else quote(text)}")
    return f" [{', '.join(parts)}]" if parts else ""


class Drawing:
    """A picture of a graph: its DOT ``source``, rendered by ``dot`` on demand.

    In Jupyter it shows itself (``_repr_svg_``); elsewhere ``save("g.svg")`` (or .png, .pdf,
    .dot) writes it. ``gates`` counts the op nodes drawn (a fused gate is one).
    """

    def __init__(self, source: str, gates: int, title: str = ""):
        self.source = source
        self.gates = gates
        self.title = title
        self._svg: str | None = None

    def __repr__(self) -> str:
        return f"<Drawing {self.title!r} gates={self.gates}>"

    def pipe(self, fmt: str = "svg", dpi: int | None = None) -> bytes:
        """The picture in ``fmt`` (svg, png, pdf) as bytes, from ``dot``."""
        if fmt not in FORMATS:
            raise DrawError(f"unknown picture format {fmt!r}; use one of {', '.join(FORMATS)}")
        if fmt == "dot":
            return self.source.encode()
        command = [dot_program(), f"-T{fmt}"] + ([f"-Gdpi={dpi}"] if dpi else [])
        done = subprocess.run(command, input=self.source.encode(), capture_output=True)
        if done.returncode != 0:
            raise DrawError(f"dot failed: {done.stderr.decode(errors='replace').strip()}")
        return done.stdout

    def svg(self) -> str:
        """The SVG text (cached)."""
        if self._svg is None:
            self._svg = self.pipe("svg").decode()
        return self._svg

    def inline_svg(self) -> str:
        """The SVG element alone, to embed in HTML."""
        svg = self.svg()
        return svg[svg.index("<svg") :]

    def save(self, path: str | Path, dpi: int | None = None) -> Path:
        """Write the picture; its format from the suffix (.svg, .png, .pdf, .dot)."""
        path = Path(path)
        fmt = path.suffix.lstrip(".").lower()
        if fmt not in FORMATS:
            raise DrawError(
                f"cannot tell the format of {str(path)!r}: use .svg, .png, .pdf or .dot"
            )
        data = self.svg().encode() if fmt == "svg" else self.pipe(fmt, dpi or 110)
        path.write_bytes(data)
        return path

    def _repr_svg_(self) -> str:
        return self.svg()

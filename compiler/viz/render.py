"""Graphviz: the DOT text of a picture, and ``dot`` turning it into SVG or PNG.

Graphviz's ``dot`` program is a real dependency of drawing (Debian's package ``graphviz``); it is
run as a subprocess, so no Python binding is needed. Without it, drawing raises ``DrawError``
saying how to install it. ``dot`` runs in a process group of its own under a time limit: on
timeout or Ctrl-C the whole group is killed, so no layout is left running.

A picture is laid out left to right, as the lecture draws it; when that is too wide to read at
a notebook's width (``WIDTH`` px) and top to bottom reads better, it is drawn top to bottom.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from compiler.errors import DrawError

INSTALL = (
    "install Graphviz: `apt-get install graphviz` (Debian, Ubuntu), `brew install graphviz` "
    "(macOS) or `conda install graphviz`, so that `dot` is on PATH"
)
FORMATS = ("svg", "png", "pdf", "dot")
#: Seconds ``dot`` may spend on one picture; ``SYMGRAD_DRAW_TIMEOUT`` (seconds) overrides it.
DOT_TIMEOUT = 30.0
#: A picture whose layout would place more than this many nodes (its nodes plus one per rank
#: each edge crosses, as ``dot`` does) is refused: layout time grows steeply beyond it (3,000
#: took 4 s, 4,200 took 8 s, a 100-term sum's 10,700 over 100 s); such a picture is unreadable.
MAX_LAYOUT = 3000
#: The width (CSS px) a notebook shows a picture at, and the smallest text (px) read there.
WIDTH, MIN_FONT_PX = 900, 8.0


def dot_program() -> str:
    """The path of Graphviz's ``dot``, or a DrawError saying how to install it."""
    path = shutil.which("dot")
    if path is None:
        raise DrawError(f"drawing needs Graphviz's `dot` program, which is not on PATH: {INSTALL}")
    return path


def dot_timeout() -> float:
    """The time limit for one run of ``dot``: ``SYMGRAD_DRAW_TIMEOUT`` or ``DOT_TIMEOUT``."""
    text = os.environ.get("SYMGRAD_DRAW_TIMEOUT")
    if not text:
        return DOT_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0:
        raise DrawError(f"SYMGRAD_DRAW_TIMEOUT={text!r} is not a positive number of seconds")
    return seconds


def run_dot(args: list[str], source: str, timeout: float | None = None) -> bytes:
    """``dot args`` on ``source``: its output, or a DrawError. It runs in a session of its own,
    killed as a group at the time limit or on KeyboardInterrupt (then re-raised)."""
    limit = dot_timeout() if timeout is None else timeout
    program, proc = dot_program(), None
    held = _hold_interrupts()  # a Ctrl-C inside Popen would lose dot's pid: dot ran on
    try:
        proc = subprocess.Popen(
            [program, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        _release_interrupts(held)  # one that came meanwhile is raised here, with proc known
        out, err = proc.communicate(source.encode(), timeout=limit)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise DrawError(
            f"Graphviz's dot did not lay out the picture within {limit:g} s and was stopped: draw "
            "a smaller graph (fewer terms, no backward=True), or allow more time with "
            "draw(..., timeout=seconds) or SYMGRAD_DRAW_TIMEOUT=seconds"
        ) from None
    except BaseException:  # KeyboardInterrupt, or a failed write: leave nothing running
        if proc is not None:
            _kill(proc)
        raise
    finally:
        _release_interrupts(held)
    if proc.returncode != 0:
        raise DrawError(f"dot failed: {err.decode(errors='replace').strip()}")
    return out


def _hold_interrupts() -> list | None:
    """Hold SIGINT back (main thread only: where Python runs signal handlers): ``[handler,
    signals that came, released]``, for ``_release_interrupts``."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    came: list = []
    return [signal.signal(signal.SIGINT, lambda signum, frame: came.append(signum)), came, False]


def _release_interrupts(held: list | None) -> None:
    """Put the SIGINT handler back and deliver a Ctrl-C that came while held (once)."""
    if held is None or held[2]:
        return
    held[2] = True
    handler = held[0] if held[0] is not None else signal.default_int_handler
    signal.signal(signal.SIGINT, handler)
    if held[1]:
        signal.raise_signal(signal.SIGINT)


def _kill(proc: subprocess.Popen) -> None:
    """Kill ``proc``'s process group (dot and anything it started) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.communicate()


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


_SIZE = re.compile(r'<svg width="[\d.]+pt" height="[\d.]+pt"\s+viewBox="[\d.-]+ [\d.-]+ ([\d.]+) ')
_FONT = re.compile(r'font-size="([\d.]+)"')


def legible_px(svg: str, width: int = WIDTH) -> float:
    """The smallest text of ``svg`` in CSS px when it is shown at most ``width`` px wide (a
    browser shows 1 pt as 4/3 px and shrinks a wider picture to fit)."""
    found = _SIZE.search(svg)
    fonts = [float(f) for f in _FONT.findall(svg)]
    if not found or not fonts:
        return float("inf")
    view = float(found.group(1)) or 1.0
    return min(fonts) * min(4 / 3, width / view)


class Drawing:
    """A picture of a graph: its DOT ``source``, rendered by ``dot`` on demand.

    In Jupyter it shows itself (``_repr_svg_``); elsewhere ``save("g.svg")`` (or .png, .pdf,
    .dot) writes it. ``gates`` counts the op nodes drawn (a fused gate is one). ``source`` is
    laid out left to right; ``rankdir`` says how it was drawn ("TB" when that read better).
    """

    def __init__(
        self,
        source: str,
        gates: int,
        title: str = "",
        *,
        top_down: Callable[[], str] | None = None,
        timeout: float | None = None,
    ):
        self.source = source
        self.gates = gates
        self.title = title
        self.timeout = timeout
        self.rankdir = "LR"
        self._top_down = top_down
        self._svg: str | None = None

    def __repr__(self) -> str:
        return f"<Drawing {self.title!r} gates={self.gates}>"

    @property
    def drawn_source(self) -> str:
        """The DOT text as drawn: ``source``, or its top-to-bottom form."""
        self.svg()
        return self._top_down() if self.rankdir == "TB" else self.source

    def pipe(self, fmt: str = "svg", dpi: int | None = None) -> bytes:
        """The picture in ``fmt`` (svg, png, pdf) as bytes, from ``dot``."""
        if fmt not in FORMATS:
            raise DrawError(f"unknown picture format {fmt!r}; use one of {', '.join(FORMATS)}")
        if fmt == "svg":
            return self.svg().encode()
        if fmt == "dot":
            return self.drawn_source.encode()
        args = [f"-T{fmt}"] + ([f"-Gdpi={dpi}"] if dpi else [])
        return run_dot(args, self.drawn_source, self.timeout)

    def svg(self) -> str:
        """The SVG text (cached): left to right, or top to bottom when that is more legible."""
        if self._svg is None:
            svg = run_dot(["-Tsvg"], self.source, self.timeout).decode()
            if self._top_down is not None and legible_px(svg) < MIN_FONT_PX:
                tall = run_dot(["-Tsvg"], self._top_down(), self.timeout).decode()
                if legible_px(tall) > legible_px(svg):
                    svg, self.rankdir = tall, "TB"
            self._svg = svg
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
        data = self.pipe(fmt, dpi or 110)
        try:
            path.write_bytes(data)
        except OSError as e:
            raise DrawError(f"cannot write the picture to {str(path)!r}: {e.strerror or e}") from e
        return path

    def _repr_svg_(self) -> str:
        return self.svg()

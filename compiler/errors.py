"""Exception families raised by the compiler: one type per family, each naming the culprit."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SymgradError(Exception):
    """Base class of every error symgrad raises on purpose."""


class ParseError(SymgradError, ValueError):
    """Text, a SymPy expression or a traced callable uses something outside the supported language.

    ``column`` is the 0-based column of the offending token in the text (None when not from text).
    """

    def __init__(self, message: str, column: int | None = None, token: str | None = None):
        self.column = column
        self.token = token
        if column is not None:
            message = f"{message} (column {column})"
        super().__init__(message)


class CompileError(SymgradError, RuntimeError):
    """Code generation or Numba compilation failed; nothing was cached."""


class InputError(SymgradError, ValueError):
    """Inputs that don't fit the kernel: missing or unknown names, non-numbers, bad shapes."""


class GateError(SymgradError, ValueError):
    """A gate is refused or unknown: its stated gradient or stable form is not what SymPy derives
    from its definition, its name is taken, or ``fuse=`` names a gate that does not exist."""


class ShapeError(InputError):
    """Shapes that do not fit: operands that cannot broadcast, a matmul's inner dimensions, an axis
    out of range, or a dimension name bound to two sizes. The message names the operands and dims."""


class DrawError(SymgradError, RuntimeError):
    """A graph cannot be drawn: Graphviz's ``dot`` is missing or failed, or the graph is too big."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``": did you mean exp?"`` for the closest of ``choices`` (case first), or ``""``: a typo's
    error should name the fix."""
    choices = sorted(set(choices))
    same_case = [c for c in choices if c.lower() == name.lower()]
    close = same_case or difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f": did you mean {close[0]}?" if close else ""

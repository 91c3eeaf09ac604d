"""Python's ``ast.parse``, one thread at a time.

CPython 3.11 keeps the AST constructor's recursion depth in state shared by every thread: two
threads turning parse trees into ``ast`` objects at once (a garbage collection inside one can
hand the interpreter to the other) corrupt it, and a parse then fails with "SystemError: AST
constructor recursion depth mismatch" (cpython gh-106905). symgrad parses on the user's thread
(the text language) and on its background compile thread (the audit of generated code).
"""

from __future__ import annotations

import ast
import threading

_LOCK = threading.RLock()


def parse(source: str, mode: str = "exec") -> ast.AST:
    """``ast.parse(source, mode=mode)``, never alongside another of symgrad's parses."""
    with _LOCK:
        return ast.parse(source, mode=mode)

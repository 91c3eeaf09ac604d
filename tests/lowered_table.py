"""Test helper: the op table with every built-in op's lowering in it.

``compiler/ir/ops/*.py`` hold the entries with lowerings; until the registry collects them
(hA2's switch) this puts them in ``compiler.ir.registry.OPS`` for a test, in place of the entries
of the same name that have none. Once the registry has them it changes nothing.
"""

from __future__ import annotations

import importlib
import pkgutil

import compiler.ir.ops as families
from compiler.ir import registry


def lowered_entries() -> dict:
    """Every entry of ``compiler/ir/ops/*.py`` by name."""
    found = {}
    for info in pkgutil.iter_modules(families.__path__):
        module = importlib.import_module(f"{families.__name__}.{info.name}")
        found.update({op.name: op for op in module.OPS})
    return found


def install(monkeypatch=None) -> None:
    """Put the lowered entries in the table where its entry has no lowering (``monkeypatch``
    undoes it after the test; without one it lasts for the process: child processes)."""
    for name, op in lowered_entries().items():
        current = registry.OPS.get(name)
        if current is not None and current.lower is None:
            if monkeypatch is None:
                registry.OPS[name] = op
            else:
                monkeypatch.setitem(registry.OPS, name, op)

"""The op table's elementwise functions for generated tensor modules, by each op's lowering.

``exp = elementwise("exp")`` in a module is ``compiler.ir.elementwise.apply`` bound to the op's
current table entry: the tensor instant tier's nodes and the compiled tier's scalar nodes then
have the bits the compiled loops give, not NumPy's. Importing this module keeps the loops'
object code in ``runtime.llvm_jit``'s sealed disk cache, keyed like every kernel (symgrad's
sources, versions, CPU: ``runtime.cache.cache_key``) and by the entry's fingerprint, so a new
process loads each loop (about a millisecond) without writing its IR or compiling it at O3.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from compiler.ir import elementwise as _runner
from compiler.ir.lowering import LoweringError
from compiler.ir.opdef import OpDef
from compiler.ir.registry import entry_fingerprint
from runtime import cache, llvm_jit

__all__ = ["elementwise"]


def _key(spec: OpDef, dtype: np.dtype, pattern: tuple[bool, ...], vector: bool) -> str:
    shape = "".join("1" if single else "n" for single in pattern)
    parts = (spec.name, entry_fingerprint(spec), dtype.name, shape, "vector" if vector else "")
    return "elementwise_" + cache.cache_key("elementwise", *parts)


def _read(key: str) -> bytes | None:
    found = llvm_jit.read(key)
    return None if found is None or len(found[1]) != 1 else found[1][0]


def _store(key: str, obj: bytes) -> None:
    llvm_jit.store(key, {"what": "elementwise loop"}, [obj])


_runner.set_object_cache(_key, _read, _store)


def elementwise(op: str) -> Callable:
    """``op`` over numbers and arrays (NumPy's broadcasting and float32/float64 promotion), by
    its lowering; the table entry is looked up at each call (a gate registered anew counts)."""
    from compiler.ir.registry import OPS

    if op not in OPS:
        raise LoweringError(op, "elementwise", "not in the op table")

    def function(*operands):
        return _runner.apply(OPS[op], *operands)

    function.__name__ = function.__qualname__ = op
    return function

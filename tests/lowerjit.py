"""Test harness: run one op's lowering (``compiler.ir.lowering``) alone, in a loop over arrays.

``evaluate(lower, x, y)`` compiles ``out[i] = lower(x[i], y[i])`` with LLVM's O3 pipeline and runs
it; ``optimised_ir(lower, arity)`` is that loop's optimised IR, to check that it vectorises
(``<N x double>`` values, no call of the C library) at whatever vector width this CPU has.
"""

from __future__ import annotations

import ctypes
from functools import cache

import numpy as np
from llvmlite import ir

from compiler.ir.elementwise import loop_ir
from compiler.ir.lowering import DOUBLE, FLOAT
from runtime.llvm_jit import llvm, target_machine

_TYPES = {np.dtype(np.float64): DOUBLE, np.dtype(np.float32): FLOAT}


def loop_module(lower, arity: int, ty: ir.Type = DOUBLE, vector: bool = True) -> str:
    """IR text: ``void run(i64 n, ptr out, ptr a, ptr b, ptr c)``: out[i] = op(a[i], ...)."""
    return loop_ir(lower, arity, ty, vector=vector)


def _optimised(text: str):
    binding = llvm()
    module = binding.parse_assembly(text)
    module.verify()
    machine = target_machine()
    options = binding.create_pipeline_tuning_options(speed_level=3)
    builder = binding.create_pass_builder(machine, options)
    builder.getModulePassManager().run(module, builder)
    return module


def optimised_ir(lower, arity: int, dtype=np.float64, vector: bool = True) -> str:
    """The O3-optimised IR of the loop over ``lower``."""
    return str(_optimised(loop_module(lower, arity, _TYPES[np.dtype(dtype)], vector)))


@cache
def _compiled(lower, arity: int, dtype: np.dtype, vector: bool):
    binding = llvm()
    module = _optimised(loop_module(lower, arity, _TYPES[dtype], vector))
    engine = binding.create_mcjit_compiler(module, target_machine())
    engine.finalize_object()
    address = engine.get_function_address("run")
    run = ctypes.CFUNCTYPE(None, ctypes.c_int64, *[ctypes.c_void_p] * 4)(address)
    return engine, run


def evaluate(lower, *arrays, dtype=np.float64, vector: bool = True) -> np.ndarray:
    """``lower`` applied elementwise to ``arrays`` (broadcast, converted to ``dtype``)."""
    dtype = np.dtype(dtype)
    arrays = [np.ascontiguousarray(a, dtype=dtype) for a in np.broadcast_arrays(*arrays)]
    out = np.empty(arrays[0].shape, dtype=dtype)
    _, run = _compiled(lower, len(arrays), dtype, vector)
    pointers = [a.ctypes.data for a in arrays] + [0] * (4 - len(arrays))
    run(out.size, out.ctypes.data, *pointers)
    return out

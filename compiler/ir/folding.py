"""Constant folding through the op's own lowering: ``exp(2.0)`` in a graph folds to the very
float the kernel would have computed for it, not to NumPy's (which may differ in the last bit).

Each op's lowering (``OpDef.lower``) is compiled once, alone, as a scalar function
``double f(double, double, double)`` by llvmlite's MCJIT, and called through ctypes; compiled
functions are kept per op entry (an entry registered anew under the same name is compiled anew).
Folding runs at float64, the width graphs keep their constants in, with the form the compiled
tiers use (``vector`` as ``runtime.numba_ops`` sets it); the instant tier's scalar exp, sin and
cos (the C library's) may differ from those in the last bit, as they already do at run time.

Measured (``compile_gradient("x*exp(2.0)")``'s first call, warm cache: 28 ms folding with NumPy,
62 ms this way): loading llvmlite's library costs ~30 ms once and each op ~2 ms, while NumPy's
exp, tanh, erf or cbrt differ from the kernels' in the last bit at 5-50% of points. So the ops
whose lowering is one IEEE 754 instruction (``+ - * /`` and negation: correctly rounded, the same
bits whoever computes them) fold with that instruction in Python, and only a graph with another
constant operation (``exp(2.0)``, not ``2 * pi`` or ``1 / 2``) loads llvmlite.
"""

from __future__ import annotations

import ctypes
import operator
import threading
from collections.abc import Callable

import numpy as np

from compiler.ir.lowering import DOUBLE, LoweringError, function_of
from compiler.ir.opdef import OpDef
from compiler.ir.ops import arith

_SIGNATURE = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_double, ctypes.c_double, ctypes.c_double)
_lock = threading.Lock()
# op name -> (the entry compiled, its LLVM context and engine (kept alive), the callable)
_compiled: dict[str, tuple[OpDef, object, Callable[..., float]]] = {}
_initialised: list[bool] = []


def fold(spec: OpDef, *operands: float) -> float:
    """``spec``'s value at the constant ``operands``, computed by its lowering."""
    instruction = _IEEE.get(spec.lower)
    if instruction is not None:
        with np.errstate(all="ignore"):
            return float(instruction(*map(np.float64, operands)))
    return scalar_function(spec)(*operands, *(0.0,) * (3 - len(operands)))


# The lowerings that are one IEEE 754 operation, and that operation on float64 (NumPy's scalars:
# inf and nan where Python's floats would raise). tests/test_folding.py checks them bit for bit.
_IEEE: dict[Callable, Callable[..., float]] = {
    arith.lower_add: operator.add,
    arith.lower_sub: operator.sub,
    arith.lower_mul: operator.mul,
    arith.lower_div: operator.truediv,
    arith.lower_neg: operator.neg,
}


def scalar_function(spec: OpDef) -> Callable[..., float]:
    """``spec``'s lowering as a Python callable of three floats (the unused ones ignored)."""
    with _lock:
        made = _compiled.get(spec.name)
        if made is None or made[0] is not spec:
            made = (spec, *_compile(spec))
            _compiled[spec.name] = made
    return made[2]


def _compile(spec: OpDef) -> tuple[tuple, Callable[..., float]]:
    from llvmlite import ir

    if spec.lower is None:
        raise LoweringError(spec.name, "constant folding")
    lower = spec.lower
    # Numba's choice (runtime.numba_ops): an op with a fast vector form folds by its scalar one.
    module, op = function_of("op", lower, spec.arity, DOUBLE, vector=spec.fast is None)
    fn = ir.Function(module, ir.FunctionType(DOUBLE, [DOUBLE] * 3), "fold")
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    builder.ret(builder.call(op, fn.args[: spec.arity]))
    binding = _binding()
    # A context of its own: LLVM's global one is Numba's, maybe compiling on another thread now.
    context = binding.create_context()
    parsed = binding.parse_assembly(str(module), context=context)
    parsed.verify()
    # The engine owns its target machine (and frees it with itself): one each.
    machine = binding.Target.from_default_triple().create_target_machine(opt=0, jit=True)
    engine = binding.create_mcjit_compiler(parsed, machine)
    engine.finalize_object()
    return (context, engine), _SIGNATURE(engine.get_function_address("fold"))


def _binding():
    """``llvmlite.binding``, its native target initialised once (under ``_lock``). Code is
    generated at O0: one op's scalar function, compiled to run once or a few times."""
    import llvmlite.binding as binding

    if not _initialised:
        binding.initialize_native_target()
        binding.initialize_native_asmprinter()
        _initialised.append(True)
    return binding

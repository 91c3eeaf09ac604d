"""An op applied to numbers and arrays by its own lowering: ``apply(OPS["exp"], x)`` is
``out[i] = exp(x[i])`` compiled from ``OpDef.lower``, so every value computed outside a compiled
kernel — the tensor instant tier's steps, ``compiler.ops`` on numbers, a drawing's numbers, a
graph's constant folding (``fold``) — has the compiled kernels' bits, not NumPy's (NumPy's exp,
tanh, erf or cbrt differ from the lowerings in the last bit at 5-50% of points). NumPy is left
the test oracle (``OpDef.numpy``), the broadcasting and allocation, and ``+ - * /`` and
negation: one IEEE instruction each, correctly rounded, so NumPy's operators give the lowering's
bits with no loop to compile.

Per op entry, float width and operand pattern (each operand an array of the output's shape or a
single element), one loop ``void run(i64 n, ptr out, ptr a, ptr b, ptr c)`` is generated and
compiled with LLVM's O3 pipeline for this CPU, so it vectorises as the Numba kernels' loops do;
the lowering is inlined in the form they use (``vector`` unless the op has a ``fast`` form:
``runtime.numba_ops``; ``apply``'s ``vector`` says which). A single-element operand is loaded
once before the loop; other broadcasts are materialised by NumPy. The loop is called through
ctypes (about 2 µs a call).

Each engine gets its own LLVM context and target machine: LLVM's global context is Numba's,
which may be compiling on its background thread. ``set_object_cache`` lets the runtime
(``runtime.llvm_jit``'s sealed disk cache) keep the object code under a key of its own making
(the op's name and table fingerprint, the width, the pattern, symgrad's sources and the CPU), so
a new process loads a loop without even writing its IR (about a millisecond an op against
15-60 ms at O3); this module sits in ``compiler/ir`` and imports nothing above it.
"""

from __future__ import annotations

import ctypes
import operator
import threading
from collections.abc import Callable

import numpy as np

from compiler.ir import native
from compiler.ir.lowering import DOUBLE, FLOAT, LoweringError, function_of
from compiler.ir.opdef import OpDef
from compiler.ir.ops import arith

_ARGS = 3  # the widest op (where, clip)
_SIGNATURE = ctypes.CFUNCTYPE(None, ctypes.c_int64, *[ctypes.c_void_p] * (1 + _ARGS))
_WIDTHS = {np.dtype(np.float64): DOUBLE, np.dtype(np.float32): FLOAT}
_lock = threading.Lock()
# (op name, dtype, pattern) -> (the entry compiled, engine and context (kept alive), function)
_compiled: dict[tuple, tuple[OpDef, object, Callable]] = {}
#: (key(spec, dtype, pattern, vector) -> str, read(key) -> bytes | None, store(key, bytes)),
#: set by the runtime; None: compile each time.
_object_cache: list = [None]


def set_object_cache(
    key: Callable[[OpDef, np.dtype, tuple[bool, ...], bool], str],
    read: Callable[[str], bytes | None],
    store: Callable[[str, bytes], None],
) -> None:
    """Keep compiled loops' object code with ``store`` under ``key(spec, dtype, pattern,
    vector)`` and look them up with ``read``."""
    _object_cache[0] = (key, read, store)


def apply(spec: OpDef, *operands, vector: bool | None = None):
    """``spec`` elementwise over ``operands`` (numbers or arrays, broadcast as NumPy does), by
    its lowering. The result's dtype is float32 when NumPy's promotion of the operands gives
    float32 (Python numbers are weak), else float64; all-0-d operands give a NumPy scalar.

    ``vector`` is the form of the lowering (``Lower.vector``); by default the Numba kernels'
    (the tensor tiers'): the scalar form for an op with a ``fast`` one (sin, cos). The scalar
    tiers run a graph with sin or cos on LLVM's O3 tier, by the vector form: ``vector=True``
    gives their bits."""
    if len(operands) != spec.arity:
        raise TypeError(f"{spec.name} takes {spec.arity} operand(s), got {len(operands)}")
    dtype = _dtype(operands)
    arrays = [a if type(a) is np.ndarray else np.asarray(a) for a in operands]
    instruction = _IEEE.get(spec.lower)
    if instruction is not None:  # no loop to compile: NumPy's operator has the same bits
        with np.errstate(all="ignore"):
            return instruction(*(a.astype(dtype, copy=False) for a in arrays))
    shape = arrays[0].shape
    if any(a.shape != shape for a in arrays):
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
    out = np.empty(shape, dtype=dtype)
    if out.size:
        prepared = [_prepared(a, shape, dtype) for a in arrays]
        pattern = tuple(p.size == 1 and out.size != 1 for p in prepared)
        run = loop(spec, dtype, pattern, spec.fast is None if vector is None else vector)
        pointers = [native.address(p) for p in prepared] + [None] * (_ARGS - len(prepared))
        run(out.size, native.address(out), *pointers)
    if not shape and all(a.ndim == 0 for a in arrays):
        return out[()]
    return out


def fold(spec: OpDef, *operands: float) -> float:
    """``spec``'s value at the constant ``operands`` (a graph's constant folding): the float
    the kernels compute for it, not NumPy's (which may differ in the last bit)."""
    return float(apply(spec, *map(np.float64, operands)))


# The lowerings that are one IEEE 754 operation, and that operation: correctly rounded, so
# NumPy's operators give their bits (tests/test_elementwise.py checks them bit for bit) without
# a loop to compile, and a graph with no other constant operation (``2 * pi``, ``1 / 2``) never
# loads llvmlite to fold it.
_IEEE: dict[Callable, Callable] = {
    arith.lower_add: operator.add,
    arith.lower_sub: operator.sub,
    arith.lower_mul: operator.mul,
    arith.lower_div: operator.truediv,
    arith.lower_neg: operator.neg,
}


def _dtype(operands) -> np.dtype:
    first = getattr(operands[0], "dtype", None)
    if first in _WIDTHS and all(getattr(a, "dtype", None) == first for a in operands):
        return first  # the common case, without NumPy's promotion machinery
    try:
        promoted = np.result_type(*operands)
    except TypeError:
        promoted = np.result_type(*(np.asarray(a, dtype=np.float64) for a in operands))
    if promoted.kind not in "biuf":  # never a silent cast (complex would lose its imaginary part)
        raise TypeError(f"the op table's functions take real numbers, not {promoted}")
    return np.dtype(np.float32 if promoted == np.float32 else np.float64)


def _prepared(a: np.ndarray, shape: tuple, dtype: np.dtype) -> np.ndarray:
    """``a`` as the loop reads it: one element, or contiguous of the output's shape."""
    if a.dtype == dtype and a.shape == shape and a.flags.c_contiguous:
        return a
    if a.size == 1:
        return np.ascontiguousarray(a, dtype=dtype).reshape(1)
    if a.shape != shape:
        a = np.broadcast_to(a, shape)
    return np.ascontiguousarray(a, dtype=dtype)


def loop(spec: OpDef, dtype, pattern: tuple[bool, ...], vector: bool = True) -> Callable:
    """The compiled loop of ``spec`` at ``dtype``; ``pattern[k]`` says operand k is one element."""
    key = (spec.name, np.dtype(dtype), pattern, vector)
    made = _compiled.get(key)  # a dict read is atomic: no lock once compiled
    if made is not None and made[0] is spec:
        return made[2]
    with _lock:
        made = _compiled.get(key)
        if made is None or made[0] is not spec:
            made = (spec, *_compile(spec, np.dtype(dtype), pattern, vector))
            _compiled[key] = made
    return made[2]


def loop_text(spec: OpDef, dtype, pattern: tuple[bool, ...], vector: bool = True) -> str:
    """IR text of the loop: ``out[i] = op(a[i] or a[0], ...)`` for i < n."""
    if spec.lower is None:
        raise LoweringError(spec.name, "elementwise")
    return loop_ir(spec.lower, spec.arity, _WIDTHS[np.dtype(dtype)], pattern, vector)


def loop_ir(lower: Callable, arity: int, ty, pattern: tuple[bool, ...] = (), vector=True) -> str:
    """``void run(i64 n, ptr out, ptr a, ptr b, ptr c)``: out[i] = lower(a[i], ...), operand k
    read once before the loop where ``pattern[k]`` (none by default), at float type ``ty``."""
    from llvmlite import ir

    module, op = function_of("op", lower, arity, ty, vector=vector)
    ptr = ir.PointerType(ty)
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ir.IntType(64)] + [ptr] * 4), "run")
    for arg in fn.args[1:]:
        arg.add_attribute("noalias")
    n, out, *inputs = fn.args
    entry, body, done = (fn.append_basic_block(s) for s in ("entry", "loop", "done"))
    b = ir.IRBuilder(entry)
    single = {k: b.load(inputs[k]) for k in range(arity) if k < len(pattern) and pattern[k]}
    b.cbranch(b.icmp_signed(">", n, ir.Constant(n.type, 0)), body, done)
    b.position_at_end(body)
    i = b.phi(n.type)
    i.add_incoming(ir.Constant(n.type, 0), entry)
    args = [single[k] if k in single else b.load(b.gep(inputs[k], [i])) for k in range(arity)]
    b.store(b.call(op, args), b.gep(out, [i]))
    after = b.add(i, ir.Constant(n.type, 1))
    i.add_incoming(after, body)
    b.cbranch(b.icmp_signed("<", after, n), body, done)
    b.position_at_end(done)
    b.ret_void()
    return str(module)


def _compile(spec: OpDef, dtype: np.dtype, pattern, vector: bool) -> tuple[tuple, Callable]:
    binding = native.binding()
    cache = _object_cache[0]
    key = cache[0](spec, dtype, pattern, vector) if cache is not None else None
    obj = cache[1](key) if cache is not None else None
    if obj is None:
        obj = _object_code(binding, loop_text(spec, dtype, pattern, vector))
        if cache is not None:
            cache[2](key, obj)
    context = binding.create_context()  # not Numba's global one (see the module's docstring)
    engine = binding.create_mcjit_compiler(
        binding.parse_assembly("", context), native.target_machine()
    )
    engine.add_object_file(binding.ObjectFileRef.from_data(obj))
    engine.finalize_object()
    return (engine, context), _SIGNATURE(engine.get_function_address("run"))


def _object_code(binding, text: str) -> bytes:
    """The loop's object code: LLVM's O3 pipeline (it vectorises), then code generation."""
    context = binding.create_context()
    module = binding.parse_assembly(text, context=context)
    module.verify()
    machine = native.target_machine()
    options = binding.create_pipeline_tuning_options(speed_level=3)
    builder = binding.create_pass_builder(machine, options)
    builder.getModulePassManager().run(module, builder)
    return machine.emit_object(module)

"""This CPU through llvmlite: the binding initialised once, a target machine for the JIT, and the
address of an array for a ctypes call — one place for the compiler's elementwise runner
(``compiler.ir.elementwise``) and the runtime's LLVM code (``runtime.llvm_jit``)."""

from __future__ import annotations

import ctypes
import threading

_lock = threading.Lock()
_cpu: list[str] = []  # this CPU's name and features, asked once (a millisecond each time)


def binding():
    """``llvmlite.binding``, its native target initialised once."""
    import llvmlite.binding as llvm

    with _lock:
        if not _cpu:
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            _cpu.extend([llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()])
    return llvm


def target_machine():
    """This CPU (its vector width), code generation at O2, for the JIT. A new one each call: an
    engine owns (and frees) the machine it is given."""
    llvm = binding()
    target = llvm.Target.from_default_triple()
    return target.create_target_machine(cpu=_cpu[0], features=_cpu[1], opt=2, jit=True)


def address(array) -> int:
    """The address of a C-contiguous array's first element, for a ctypes call: through the
    buffer protocol when the array is writeable (0.7 µs: four times ``array.ctypes.data``,
    which counts for small calls with a dozen arrays). An empty array's is 0: never read."""
    if not array.size:
        return 0
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(array))
    except TypeError:  # read-only
        return array.ctypes.data

"""llvmlite without Numba: IR text to object code, object code to callable machine code, and a
sealed disk cache for it — shared by the compiled tier's large graphs (``runtime.llvm_tier``) and
the instant tier's virtual machine (``runtime.instant``).

Importing llvmlite costs milliseconds where Numba costs a quarter of a second and its first use
another half: code that only needs LLVM goes through here. The object code is cached beside the
Numba kernels (``runtime.cache``), sealed with a SHA-256: a damaged file reads as missing.
"""

from __future__ import annotations

import hashlib
import json
import threading
import weakref
from pathlib import Path

from compiler.errors import CompileError
from compiler.ir import native
from runtime import cache

#: Modules compiled side by side (each gets a thread; llvmlite releases the GIL).
COMPILE_THREADS = 2

_SEAL = b"symgrad-llvm-sha256\0"


#: llvmlite's binding, initialised once; this CPU's target machine (``compiler.ir.native``).
llvm, target_machine = native.binding, native.target_machine


def compile_objects(
    texts: list[str], stopping: threading.Event | None = None, optimise: bool = False
) -> list[bytes]:
    """Object code of each module text, compiled ``COMPILE_THREADS`` at a time on threads;
    between two waves a set ``stopping`` abandons the rest (nothing is stored). ``optimise``
    runs LLVM's O3 pipeline first (loop vectorisation: worth it for code compiled once), else
    its O0 pipeline (which inlines the ``alwaysinline`` op functions)."""
    objects: list[bytes] = []
    for start in range(0, len(texts), COMPILE_THREADS):
        if stopping is not None and stopping.is_set():
            raise CompileError("interpreter exiting: LLVM compile abandoned")
        objects += _compile_wave(texts[start : start + COMPILE_THREADS], optimise)
    return objects


def _compile_wave(texts: list[str], optimise: bool) -> list[bytes]:
    binding = llvm()
    results: list[bytes | BaseException | None] = [None] * len(texts)

    def work(k: int) -> None:
        context = module = None
        try:
            context = binding.create_context()
            module = binding.parse_assembly(texts[k], context=context)
            module.verify()
            machine = target_machine()
            # O0's pipeline is little more than the always-inliner: the ops' functions
            # (``internal alwaysinline``) are inlined into the chunks either way.
            options = binding.create_pipeline_tuning_options(speed_level=3 if optimise else 0)
            builder = binding.create_pass_builder(machine, options)
            builder.getModulePassManager().run(module, builder)
            results[k] = machine.emit_object(module)
        except BaseException as e:  # noqa: BLE001 - raised on the calling thread
            # Freed now, the module before its context: the traceback must not keep them for the
            # garbage collector, which may free them in either order (a crash).
            module = context = None  # noqa: F841
            results[k] = e

    threads = [threading.Thread(target=work, args=(k,)) for k in range(1, len(texts))]
    for t in threads:
        t.start()
    work(0)
    for t in threads:
        t.join()
    for r in results:
        if isinstance(r, (KeyboardInterrupt, SystemExit)):
            raise r  # Ctrl-C is the user's, not a compile error
        if isinstance(r, BaseException):
            raise CompileError(f"LLVM could not compile the kernel: {r}") from r
    return results  # type: ignore[return-value]


address = native.address  # an array's first element, for a ctypes call


class Loaded:
    """Object files linked into one MCJIT engine; ``address(symbol)`` finds a function.

    Keep this object alive as long as its functions are called: the engine owns their code.
    """

    def __init__(self, objects: list[bytes]):
        binding = llvm()
        # Its own LLVM context, as each compile has: safe beside Numba compiling on another thread
        # (Numba drives the global context), so nothing here waits for Numba's compiler lock.
        context = binding.create_context()
        engine = binding.create_mcjit_compiler(
            binding.parse_assembly("", context), target_machine()
        )
        for data in objects:
            engine.add_object_file(binding.ObjectFileRef.from_data(data))
        engine.finalize_object()
        self._engine = engine
        # The engine (and its module) must go before their context, even when this object dies
        # in a reference cycle, where the garbage collector frees objects in any order.
        weakref.finalize(self, _dispose, engine, context)

    def address(self, symbol: str) -> int:
        address = self._engine.get_function_address(symbol)
        if not address:
            raise CompileError(f"LLVM object code lacks {symbol!r}")
        return address


def _dispose(engine, context) -> None:
    engine.close()
    del context  # now the last reference


# ------------------------------------------------------------------------------- disk cache
def path(key: str) -> Path:
    return cache.usable_dir() / f"llvm_{key}.bin"


def _pack(meta: dict, objects: list[bytes]) -> bytes:
    head = json.dumps({**meta, "objects": [len(o) for o in objects]}).encode()
    payload = len(head).to_bytes(8, "little") + head + b"".join(objects)
    return _SEAL + hashlib.sha256(payload).digest() + payload


def _unpack(raw: bytes) -> tuple[dict, list[bytes]] | None:
    start = len(_SEAL) + 32
    payload = raw[start:]
    if not raw.startswith(_SEAL) or hashlib.sha256(payload).digest() != raw[len(_SEAL) : start]:
        return None
    size = int.from_bytes(payload[:8], "little")
    meta = json.loads(payload[8 : 8 + size])
    objects, at = [], 8 + size
    for length in meta.pop("objects"):
        objects.append(payload[at : at + length])
        at += length
    return meta, objects


def read(key: str) -> tuple[dict, list[bytes]] | None:
    """``(meta, objects)`` stored under ``key``, or None (missing or damaged)."""
    try:
        raw = cache.read_private(path(key))  # a regular file of bounded size, else a miss
        return None if raw is None else _unpack(raw)
    except (ValueError, KeyError, TypeError):
        return None


def store(key: str, meta: dict, objects: list[bytes]) -> None:
    """Publish atomically and privately; an unwritable cache directory only costs the next
    process."""
    try:
        cache.write_private(path(key), _pack(meta, objects))
    except OSError:
        pass

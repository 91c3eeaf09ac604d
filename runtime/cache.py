"""On-disk cache of generated kernel modules, shared by processes, with Numba's cache beside them.

A module is a ``.py`` file named by a hash of everything that shapes the machine code (graph,
input kinds, symgrad's code, Numba/NumPy/Python versions, the CPU), with a checksum on its first
line. Writes are atomic (temp file + rename), and a new entry is published only if no other process
published it first, so concurrent compiles of one kernel are harmless and the file Numba's cache is
stamped against stays put. A file whose checksum fails is rebuilt. Numba's own cache files for the
module (``__pycache__/k_<key>.*.nbi/.nbc``) are sealed with a SHA-256 too: Numba trusts them blindly
and a single flipped byte of machine code would crash every later process, so a file whose seal
fails is treated as missing and recompiled. The module is executed from the verified text (no
``.pyc`` of it is written or read). If the cache directory cannot be written, a private temporary
directory serves this process instead, with a warning.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import io
import os
import pickle
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from types import ModuleType

from compiler.errors import CompileError, SymgradError

_HEADER = "# symgrad-sha256: "
_loaded: dict[str, ModuleType] = {}
_fallback: dict[str, Path] = {}  # unwritable cache directory -> this process's private stand-in


def cache_dir() -> Path:
    """``$SYMGRAD_CACHE_DIR``, else the platform's user cache directory + ``symgrad``."""
    override = os.environ.get("SYMGRAD_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        # XDG: a relative XDG_CACHE_HOME is invalid and must be ignored.
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "symgrad"


@lru_cache(maxsize=1)
def environment_fingerprint() -> str:
    """Versions, CPU and symgrad's own code generator: anything that changes the machine code.

    Read without importing Numba (a third of a second): a NumPy-only kernel never needs it."""
    import numpy

    import compiler

    h = hashlib.sha256()
    versions = [compiler.__version__, _version("numba"), _version("llvmlite"), numpy.__version__]
    h.update(f"{'|'.join(versions)}|{sys.version}|{_cpu()}".encode())
    root = Path(__file__).resolve().parent.parent
    # Everything the generated source is written by or imports at run time.
    sources = [
        *sorted((root / "compiler" / "codegen").glob("*.py")),
        root / "compiler/ir/registry.py",
        root / "compiler/ir/tensor_ops.py",
    ]
    sources += [root / "runtime/scalar.py", root / "runtime/jit.py", root / "runtime/blocks.py"]
    sources += [root / "runtime/reductions.py"]
    sources += sorted((root / "runtime" / "instant").glob("*.py"))
    for path in sources:
        if path.exists():
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _version(dist: str) -> str:
    """An installed package's version without importing it (nor importlib.metadata, 40 ms):
    its ``<dist>-<version>.dist-info`` folder beside it, else the metadata."""
    module = sys.modules.get(dist)
    if module is not None:
        return module.__version__
    spec = importlib.util.find_spec(dist)
    if spec is not None and spec.origin:
        found = sorted(Path(spec.origin).parent.parent.glob(f"{dist}-*.dist-info"))
        if len(found) == 1:
            return found[0].name[len(dist) + 1 : -len(".dist-info")]
    from importlib.metadata import version

    return version(dist)


def _cpu() -> str:
    """The CPU's model and features: Linux's /proc/cpuinfo (instant), else LLVM's view."""
    try:
        with open("/proc/cpuinfo") as f:
            first = f.read().split("\n\n", 1)[0]
        pairs = (line.split(":", 1) for line in first.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in pairs}
        return fields["model name"] + "|" + fields["flags"]
    except (OSError, KeyError):
        import llvmlite.binding as llvm

        return f"{llvm.get_host_cpu_name()}|{llvm.get_host_cpu_features().flatten()}"


def cache_key(*parts: str) -> str:
    h = hashlib.sha256(environment_fingerprint().encode())
    for p in parts:
        h.update(b"\0" + p.encode())
    return h.hexdigest()[:40]


def load_module(key: str, make_source: Callable[[], str], prefix: str = "k") -> ModuleType:
    """The kernel module for ``key``: from memory, from disk, or generated and written now.

    ``prefix`` names the file (``k_<key>.py`` kernels, ``vm_<key>.py`` the instant tier's machine).
    """
    if key in _loaded:
        return _loaded[key]
    path = _usable_dir() / f"{prefix}_{key}.py"
    source = _read_verified(path)
    if source is None:
        try:
            source = make_source()
        except SymgradError:
            raise
        except Exception as e:  # nothing is written: no half-built entry
            raise CompileError(f"generating the kernel source failed: {e}") from e
        try:
            source = _publish(path, source)
        except OSError as e:
            path = _fall_back(path.parent, e) / path.name
            source = _publish(path, source)
    module = _import(path, f"_symgrad_{prefix}_{key}", source)
    _loaded[key] = module
    return module


def cached_module(key: str, prefix: str = "k") -> ModuleType | None:
    """The module for ``key`` if it is loaded or on disk already; never generates one."""
    if key in _loaded:
        return _loaded[key]
    path = _usable_dir() / f"{prefix}_{key}.py"
    source = _read_verified(path)
    if source is None:
        return None
    module = _import(path, f"_symgrad_{prefix}_{key}", source)
    _loaded[key] = module
    return module


def source_of(module: ModuleType) -> str:
    """The generated source, without the checksum line."""
    return _read_verified(Path(module.__file__)) or ""


def forget(module: ModuleType) -> None:
    """Drop a module whose Numba cache could not be used: its files go, the next load rebuilds."""
    path = Path(module.__file__)
    for key, m in list(_loaded.items()):
        if m is module:
            del _loaded[key]
    sys.modules.pop(module.__name__, None)
    for f in (path.parent / "__pycache__").glob(f"{path.stem}.*"):
        f.unlink(missing_ok=True)


def discard(module: ModuleType) -> None:
    """Remove a module that failed to compile, so nothing half-built stays cached."""
    forget(module)
    Path(module.__file__).unlink(missing_ok=True)


def _read_verified(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    first, _, body = text.partition("\n")
    if not first.startswith(_HEADER) or first[len(_HEADER) :] != _digest(body):
        return None
    return body


def _usable_dir() -> Path:
    directory = cache_dir()
    return _fallback.get(str(directory), directory)


def _fall_back(directory: Path, error: OSError) -> Path:
    """A private temporary directory standing in for an unwritable cache directory."""
    if str(directory) not in _fallback:
        _fallback[str(directory)] = Path(tempfile.mkdtemp(prefix="symgrad-cache-"))
        atexit.register(shutil.rmtree, _fallback[str(directory)], ignore_errors=True)
        warnings.warn(
            f"symgrad cannot write its kernel cache in {directory} ({error}); using "
            f"{_fallback[str(directory)]} for this process (set SYMGRAD_CACHE_DIR to fix)",
            RuntimeWarning,
            stacklevel=4,
        )
    return _fallback[str(directory)]


def _publish(path: Path, source: str) -> str:
    """Write ``source`` as ``path`` atomically; return the source the entry now holds.

    A new entry is linked into place only if absent, so when two processes compile one kernel
    at once the first one's file stays (same text, and the mtime Numba's cache is stamped with).
    A corrupt entry is replaced.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".py")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"{_HEADER}{_digest(source)}\n{source}")
        try:
            os.link(tmp, path)
        except FileExistsError:
            theirs = _read_verified(path)
            if theirs is not None:
                return theirs
            os.replace(tmp, path)
        except OSError:  # a file system without hard links
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return source


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def _import(path: Path, name: str, source: str) -> ModuleType:
    """Execute the verified ``source`` as the module at ``path`` (never a ``.pyc`` of it)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # Numba's cache locates functions through their module
    # The checksum line is line 1 of the file: keep line numbers (Numba names cache files by them).
    code = compile("\n" + source, str(path), "exec", dont_inherit=True)
    try:
        exec(code, module.__dict__)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    _seal_numba_caches(module)
    return module


# ------------------------------------------------------------------ Numba's cache files, sealed
_SEAL = b"symgrad-seal-sha256\0"


def _sealed(payload: bytes) -> bytes:
    return _SEAL + hashlib.sha256(payload).digest() + payload


def _unsealed(raw: bytes) -> bytes | None:
    """The payload of a sealed file, or None if the seal is missing or broken."""
    start = len(_SEAL) + 32
    if not raw.startswith(_SEAL) or hashlib.sha256(raw[start:]).digest() != raw[len(_SEAL) : start]:
        return None
    return raw[start:]


def _sealed_cache_file_class():
    try:
        from numba.core.caching import IndexDataCacheFile
    except ImportError:  # pragma: no cover - a Numba without this layout: leave it alone
        return None
    needed = ("_load_index", "_save_index", "_load_data", "_save_data", "_open_for_write")
    if not all(hasattr(IndexDataCacheFile, m) for m in needed):  # pragma: no cover
        return None

    class SealedCacheFile(IndexDataCacheFile):
        """Numba's index/data files with a SHA-256 seal; a broken seal reads as a cache miss."""

        def _load_index(self):
            try:
                with open(self._index_path, "rb") as f:
                    payload = _unsealed(f.read())
            except FileNotFoundError:
                return {}
            if payload is None:
                return {}  # corrupt: recompile, and the save rewrites it
            stream = io.BytesIO(payload)
            if pickle.load(stream) != self._version:
                return {}
            stamp, overloads = pickle.loads(stream.read())
            return overloads if stamp == self._source_stamp else {}

        def _save_index(self, overloads):
            stream = io.BytesIO()
            pickle.dump(self._version, stream, protocol=-1)
            stream.write(self._dump((self._source_stamp, overloads)))
            with self._open_for_write(self._index_path) as f:
                f.write(_sealed(stream.getvalue()))

        def _load_data(self, name):
            path = self._data_path(name)
            with open(path, "rb") as f:
                payload = _unsealed(f.read())
            if payload is None:
                # Numba's load() reads an OSError as "no entry": it recompiles and overwrites.
                raise OSError(f"symgrad: corrupt Numba cache file {path}")
            return pickle.loads(payload)

        def _save_data(self, name, data):
            with self._open_for_write(self._data_path(name)) as f:
                f.write(_sealed(self._dump(data)))

    return SealedCacheFile


_sealed_class: list = []  # [class or None], made on first use: Numba is imported lazily


def _seal_numba_caches(module: ModuleType) -> None:
    """Switch the module's Numba dispatchers to sealed cache files (before their first call)."""
    if "numba" not in sys.modules:
        return  # a NumPy-only module (the instant tier of a tensor program): nothing to seal
    if not _sealed_class:
        _sealed_class.append(_sealed_cache_file_class())
    sealed = _sealed_class[0]
    if sealed is None:  # pragma: no cover
        return
    base = sealed.__mro__[1]
    for obj in list(vars(module).values()):
        if getattr(getattr(obj, "py_func", None), "__module__", None) != module.__name__:
            continue  # imported helpers (runtime.scalar) keep Numba's plain files for other users
        cache_file = getattr(getattr(obj, "_cache", None), "_cache_file", None)
        if type(cache_file) is base:
            cache_file.__class__ = sealed

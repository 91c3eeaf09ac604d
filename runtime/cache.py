"""On-disk cache of generated kernel modules, shared by processes, with Numba's cache beside them.

A module is a ``.py`` file named by a hash of everything that shapes the machine code (graph,
input kinds, symgrad's code, Numba/NumPy/Python versions, the CPU), with a checksum on its first
line. Writes are atomic (temp file + rename), so concurrent compiles of one kernel are harmless; a
file whose checksum fails is rebuilt; a module whose Numba cache fails to load is wiped and rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from types import ModuleType

_HEADER = "# symgrad-sha256: "
_loaded: dict[str, ModuleType] = {}


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
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "symgrad"


@lru_cache(maxsize=1)
def environment_fingerprint() -> str:
    """Versions, CPU and symgrad's own code generator: anything that changes the machine code."""
    import llvmlite.binding as llvm
    import numba
    import numpy

    import compiler

    h = hashlib.sha256()
    h.update(f"{compiler.__version__}|{numba.__version__}|{numpy.__version__}|".encode())
    h.update(
        f"{sys.version}|{llvm.get_host_cpu_name()}|{llvm.get_host_cpu_features().flatten()}".encode()
    )
    root = Path(__file__).resolve().parent.parent
    for rel in ("compiler/codegen/numba_source.py", "runtime/scalar.py", "compiler/ir/registry.py"):
        h.update((root / rel).read_bytes())
    return h.hexdigest()


def cache_key(*parts: str) -> str:
    h = hashlib.sha256(environment_fingerprint().encode())
    for p in parts:
        h.update(b"\0" + p.encode())
    return h.hexdigest()[:40]


def load_module(key: str, make_source: Callable[[], str]) -> ModuleType:
    """The kernel module for ``key``: from memory, from disk, or generated and written now."""
    if key in _loaded:
        return _loaded[key]
    path = cache_dir() / f"k_{key}.py"
    if _read_verified(path) is None:
        _write_atomic(path, make_source())
    module = _import(path, f"_symgrad_k_{key}")
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


def _write_atomic(path: Path, source: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".py")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"{_HEADER}{_digest(source)}\n{source}")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def _import(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # Numba's cache locates functions through their module
    spec.loader.exec_module(module)
    return module

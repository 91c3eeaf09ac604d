"""On-disk cache of generated kernel modules, shared by processes, with Numba's cache beside them.

A module is a ``.py`` file named by a hash of everything that shapes the machine code (graph,
input kinds, the whole source of the ``compiler`` and ``runtime`` packages, Numba/NumPy/Python
versions, the CPU), with a checksum on its first line: a changed symgrad never meets an old
kernel. Writes are atomic (temp file + rename), and a new entry is published only if no other
process published it first, so concurrent compiles of one kernel are harmless and the file Numba's
cache is stamped against stays put. Numba's own cache files for the module
(``__pycache__/k_<key>.*.nbi/.nbc``) and the LLVM tier's object code are sealed with a SHA-256 too.
The module is executed from the verified text (no ``.pyc`` of it is written or read).

What the seal protects against: corruption — a torn or truncated write, a flipped byte, a file
from a crashed process; such a file reads as missing and is rebuilt. What it does not: the
checksum is not a signature, so anyone who can write the cache directory can write a valid one,
and a cached module is executed. Hence the directory is private: created with mode 0700, and one
(or a file in it) owned by another user or writable by group or others is refused — this
process then uses a private temporary directory, says so once, and loads nothing from it.

Faults read as misses, never as hangs: only regular files of at most ``MAX_FILE`` bytes are read
(opened without following links or blocking, checked with ``fstat``), so a FIFO, a link to
``/dev/zero`` or a directory in place of an entry is rebuilt and replaced atomically. A full or
read-only disk moves this process to a private directory in memory (``/dev/shm``), else compiles
in memory without Numba's file cache, with one warning; a cache directory deleted mid-compile is
recreated, and a module whose file vanished before Numba saw it compiles in memory.

Loaded modules are held weakly (here and in ``sys.modules``): a kernel the user drops frees its
module, its Numba dispatchers and their compile results. What stays is the code Numba's LLVM
engine compiled (about 1-4 MB a kernel): that engine never unloads a module (Numba disabled it).
"""

from __future__ import annotations

import atexit
import errno
import hashlib
import importlib.util
import io
import linecache
import os
import pickle
import shutil
import stat
import sys
import tempfile
import threading
import warnings
import weakref
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from types import ModuleType

from compiler.errors import CompileError, SymgradError

#: No cache file is larger (a kernel module is kilobytes, its machine code megabytes).
MAX_FILE = 1 << 28

_HEADER = "# symgrad-sha256: "
_loaded: weakref.WeakValueDictionary[str, ModuleType] = weakref.WeakValueDictionary()
_fallback: dict[str, Path | None] = {}  # refused cache directory -> private stand-in (None: memory)
_vetted: set[str] = set()  # cache directories found private in this process
_MEMORY = Path("<symgrad: kernels in memory>")  # where no stand-in could be made: never touched
_lock = threading.RLock()  # the tables here
_key_locks: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
_warned: set[str] = set()
_UID = os.getuid() if hasattr(os, "getuid") else None
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
_READ_FLAGS |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


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
    """Versions, CPU and symgrad's own code: anything that changes the machine code.

    Every ``.py`` of the ``compiler`` and ``runtime`` packages, path included (3 ms): a rule
    changed anywhere (an adjoint, a fusion pass) must never meet a kernel built before it.
    Read without importing Numba (a third of a second): a NumPy-only kernel never needs it."""
    import numpy

    h = hashlib.sha256()
    versions = [_version("numba"), _version("llvmlite"), numpy.__version__]
    h.update(f"{'|'.join(versions)}|{sys.version}|{_cpu()}".encode())
    h.update(source_digest(Path(__file__).resolve().parent.parent))
    return h.hexdigest()


def source_digest(root: Path) -> bytes:
    """A hash of every ``.py`` under ``root``'s ``compiler`` and ``runtime``, paths included."""
    h = hashlib.sha256()
    for name, path in _sources(root):
        h.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.digest()


def _sources(root: Path) -> list[tuple[str, Path]]:
    """Every ``.py`` under ``root``'s ``compiler`` and ``runtime``, by relative path."""
    found = []
    for package in ("compiler", "runtime"):
        for folder, dirs, files in os.walk(root / package):
            dirs[:] = [d for d in dirs if not d.startswith((".", "__pycache__"))]
            for f in files:
                if f.endswith(".py"):
                    path = Path(folder, f)
                    found.append((path.relative_to(root).as_posix(), path))
    return sorted(found)


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


# ------------------------------------------------------------------------------- modules
def load_module(key: str, make_source: Callable[[], str], prefix: str = "k") -> ModuleType:
    """The kernel module for ``key``: from memory, from disk, or generated and written now.

    ``prefix`` names the file (``k_<key>.py`` kernels, ``vm_<key>.py`` the instant tier's machine).
    """
    with _lock_for(key):  # one module per key in a process, however many threads ask at once
        module = _loaded.get(key)
        if module is not None:
            return module
        path, source = _find(f"{prefix}_{key}.py")
        if source is None:
            path, source = _publish_somewhere(path, _generate(make_source))
        return _import(key, path, f"_symgrad_{prefix}_{key}", source)


def cached_module(key: str, prefix: str = "k") -> ModuleType | None:
    """The module for ``key`` if it is loaded or on disk already; never generates one."""
    with _lock_for(key):
        module = _loaded.get(key)
        if module is not None:
            return module
        path, source = _find(f"{prefix}_{key}.py")
        if source is None:
            return None
        return _import(key, path, f"_symgrad_{prefix}_{key}", source)


def on_disk(key: str, prefix: str = "k") -> bool:
    """Whether the module for ``key`` is loaded or whole on disk, without executing it."""
    return key in _loaded or _find(f"{prefix}_{key}.py")[1] is not None


def source_of(module: ModuleType) -> str:
    """The generated source, without the checksum line."""
    return _read_verified(Path(module.__file__)) or ""


def forget(module: ModuleType) -> None:
    """Drop a module whose Numba cache could not be used: its files go, the next load rebuilds."""
    path = Path(module.__file__)
    with _lock:
        for key, m in list(_loaded.items()):
            if m is module:
                del _loaded[key]
        _unregister(module.__name__, module)
    for f in (path.parent / "__pycache__").glob(f"{path.stem}.*"):
        _remove(f)


def discard(module: ModuleType) -> None:
    """Remove a module that failed to compile, so nothing half-built stays cached."""
    forget(module)
    _remove(Path(module.__file__))


def _find(name: str) -> tuple[Path, str | None]:
    """Where the module file ``name`` belongs, and its verified source if it is there."""
    directory = usable_dir()
    source = _read_verified(directory / name)
    if source is None and usable_dir() != directory:  # a foreign file: the directory refused
        directory = usable_dir()
        source = _read_verified(directory / name)
    return directory / name, source


def _lock_for(key: str) -> threading.Lock:
    with _lock:
        lock = _key_locks.get(key)
        if lock is None:
            lock = _key_locks[key] = threading.Lock()
        return lock


def _generate(make_source: Callable[[], str]) -> str:
    try:
        return make_source()
    except SymgradError:
        raise
    except Exception as e:  # nothing is written: no half-built entry
        raise CompileError(f"generating the kernel source failed: {e}") from e


def _read_verified(path: Path) -> str | None:
    raw = read_private(path)
    if raw is None:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    first, _, body = text.partition("\n")
    if not first.startswith(_HEADER) or first[len(_HEADER) :] != _digest(body):
        return None
    return body


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def _publish_somewhere(path: Path, source: str) -> tuple[Path, str]:
    """Publish in the cache directory, else in this process's private stand-in, else nowhere:
    the module then runs from memory (Numba compiles it without its file cache)."""
    if path.parent == _MEMORY:
        return path, source
    try:
        return path, _publish(path, source)
    except OSError as e:
        stand_in = _fall_back(path.parent, str(e))
        if stand_in is not None:
            try:
                return stand_in / path.name, _publish(stand_in / path.name, source)
            except OSError as again:
                _fall_back(stand_in, str(again))
        return path, source


def _publish(path: Path, source: str) -> str:
    """Write ``source`` as ``path`` atomically; return the source the entry now holds.

    A new entry is linked into place only if absent, so when two processes compile one kernel
    at once the first one's file stays (same text, and the mtime Numba's cache is stamped with).
    A damaged entry (or a FIFO, a link, a directory) is replaced. A directory deleted meanwhile
    is made again.
    """
    data = f"{_HEADER}{_digest(source)}\n{source}".encode()
    for attempt in range(3):
        try:
            tmp = _write_temp(path.parent, data, ".py")
            break
        except FileNotFoundError:
            if attempt == 2:
                raise
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            theirs = _read_verified(path)
            if theirs is not None:
                return theirs
            _replace(tmp, path)
        except OSError:  # a file system without hard links
            _replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return source


# ------------------------------------------------------------------------------- files
def usable_dir() -> Path:
    """The cache directory, unless this process refused it (then its private stand-in)."""
    directory = cache_dir()
    name = str(directory)
    with _lock:
        if name in _fallback:
            return _fallback[name] or _MEMORY
        if name not in _vetted:
            problem = _unsafe(directory)
            if problem:
                return _fall_back(directory, problem) or _MEMORY
            if directory.is_dir():  # an absent one is checked again once it exists
                _vetted.add(name)
    return directory


def _unsafe(directory: Path) -> str | None:
    """Why ``directory`` must not be used as a cache (None: it is private or absent)."""
    try:
        link = os.lstat(directory)
        found = os.stat(directory)
    except FileNotFoundError:
        return None  # made private when first written
    except OSError as e:
        return str(e)
    if not stat.S_ISDIR(found.st_mode):
        return "it is not a directory"
    problem = _foreign(link) if stat.S_ISLNK(link.st_mode) else None
    return problem or _foreign(found)


def _foreign(st: os.stat_result) -> str | None:
    """Why a file or directory with this ``stat`` is not ours alone (None: it is)."""
    if _UID is None:  # pragma: no cover - Windows: the user's profile protects it
        return None
    if st.st_uid != _UID:
        return f"it is owned by another user (uid {st.st_uid})"
    if st.st_mode & 0o022:
        return f"it is writable by others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _fall_back(directory: Path, problem: str) -> Path | None:
    """This process's private stand-in for a refused or unwritable cache directory: a temporary
    directory in memory (``/dev/shm``) or on disk; None if none can be made (then modules run
    from memory). One warning per directory."""
    name = str(directory)
    with _lock:
        if name not in _fallback:
            _fallback[name] = _stand_in()
        stand_in = _fallback[name]
    where = f"using {stand_in}" if stand_in else "compiling kernels in memory"
    _warn_once(
        name,
        f"symgrad cannot use its kernel cache in {directory} ({problem}); {where} for this "
        "process (set SYMGRAD_CACHE_DIR to a private directory to fix)",
    )
    return stand_in


def _stand_in() -> Path | None:
    for parent in ("/dev/shm", None):
        if parent is None or os.path.isdir(parent):
            try:
                stand_in = Path(tempfile.mkdtemp(prefix="symgrad-cache-", dir=parent))
            except OSError:
                continue
            atexit.register(shutil.rmtree, stand_in, ignore_errors=True)
            _fallback[str(stand_in)] = None  # and if that fails too: memory
            return stand_in
    return None


def _warn_once(topic: str, message: str) -> None:
    with _lock:
        if topic in _warned:
            return
        _warned.add(topic)
    warnings.warn(message, RuntimeWarning, stacklevel=2)


def read_private(path: Path | str) -> bytes | None:
    """The bytes of the cache file ``path``, or None (a miss) unless it is a regular file of at
    most ``MAX_FILE`` bytes. It is opened without following a link or blocking (a FIFO), checked
    with ``fstat`` before reading; one another user could have written refuses the directory."""
    if Path(path).parent == _MEMORY:
        return None
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE:
            return None
        problem = _foreign(st)
        if problem is not None:
            _fall_back(cache_dir(), f"{path}: {problem}")
            return None
        chunks, left = [], st.st_size + 1  # one more: a file that grew is not the one checked
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        return data if len(data) == st.st_size else None
    except OSError:
        return None
    finally:
        os.close(fd)


def write_private(path: Path, data: bytes) -> None:
    """Publish ``data`` as ``path`` atomically, readable by this user only (OSError if not)."""
    if path.parent == _MEMORY:
        raise OSError(errno.EROFS, "symgrad keeps this process's kernels in memory")
    tmp = _write_temp(path.parent, data, path.suffix)
    try:
        _replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _write_temp(directory: Path, data: bytes, suffix: str) -> str:
    """A new private file (mode 0600) in ``directory`` (made private if absent) holding ``data``."""
    _make_private(directory)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def _make_private(directory: Path) -> None:
    """Create ``directory`` (mode 0700) if it is absent; its parents as usual."""
    if not directory.is_dir():
        directory.parent.mkdir(parents=True, exist_ok=True)
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            pass


def _replace(tmp: str, path: Path) -> None:
    """``os.replace``, also over a directory someone left in the entry's place."""
    try:
        os.replace(tmp, path)
    except OSError as e:
        if e.errno not in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST) or not path.is_dir():
            raise
        aside = tempfile.mkdtemp(dir=path.parent, prefix=".trash-")
        os.replace(path, Path(aside) / "entry")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(tmp, path)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except IsADirectoryError:
        shutil.rmtree(path, ignore_errors=True)
    except OSError:
        pass


# ------------------------------------------------------------------------------- executing
class _Entry:
    """What ``sys.modules`` holds for a kernel module: a weak stand-in. Numba finds a function's
    globals by its module's name (compiling, and loading from its cache), but a strong entry
    would keep every kernel ever loaded, machine code included; this one leaves with the
    module."""

    __slots__ = ("_ref",)

    def __init__(self, module: ModuleType):
        name = module.__name__
        # The function itself is bound now: at interpreter exit this module's globals may
        # already be None when the last kernel modules are collected.
        self._ref = weakref.ref(module, lambda _, forget=_unregister: forget(name, self))

    @property
    def __dict__(self):  # Numba reads ``sys.modules[name].__dict__`` as the globals
        return self._module().__dict__

    def _module(self) -> ModuleType:
        module = self._ref()
        if module is None:
            raise AttributeError("symgrad kernel module already freed")
        return module

    def __getattr__(self, name: str):
        return getattr(self._module(), name)


def _unregister(name: str, entry: object, modules: dict = sys.modules, kind: type = _Entry) -> None:
    """Remove ``sys.modules[name]`` if it is ``entry`` (or a stand-in for it). What it reads is
    bound at definition: it may run at interpreter exit, after this module's globals are gone."""
    found = modules.get(name)
    if found is entry or (isinstance(found, kind) and found._ref() in (entry, None)):
        modules.pop(name, None)


def _import(key: str, path: Path, name: str, source: str) -> ModuleType:
    """Execute the verified ``source`` as the module at ``path`` (never a ``.pyc`` of it)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    # The checksum line is line 1 of the file: keep line numbers (Numba names cache files by them).
    code = compile("\n" + source, str(path), "exec", dont_inherit=True)
    try:  # before Numba makes it (world-readable) when the decorators run
        if path.parent != _MEMORY and path.parent.is_dir():
            _make_private(path.parent / "__pycache__")
    except OSError:
        pass  # a read-only cache: Numba finds its files elsewhere, or compiles without
    sys.modules[name] = _Entry(module)
    try:
        try:
            exec(code, module.__dict__)
        except (RuntimeError, OSError) as e:
            # Numba's cache decorator needs the file (a deleted cache directory, a full disk):
            # run this module from memory, under a name no file has, and Numba compiles it so.
            gone = isinstance(e, OSError) or "no locator available" in str(e)
            if not gone or not _allow_memory_modules():
                raise
            where = f"<symgrad module in memory: {path.name}>"
            exec(compile("\n" + source, where, "exec", dont_inherit=True), module.__dict__)
    except BaseException:
        _unregister(name, module)
        raise
    _seal_numba_caches(module)
    _loaded[key] = module
    return module


# ------------------------------------------------------------------ Numba's cache files, sealed
_SEAL = b"symgrad-seal-sha256\0"


def _sealed(payload: bytes) -> bytes:
    return _SEAL + hashlib.sha256(payload).digest() + payload


def _unsealed(raw: bytes | None) -> bytes | None:
    """The payload of a sealed file, or None if it is missing or its seal broken."""
    start = len(_SEAL) + 32
    if raw is None or not raw.startswith(_SEAL):
        return None
    if hashlib.sha256(raw[start:]).digest() != raw[len(_SEAL) : start]:
        return None
    return raw[start:]


def _numba_classes():
    """Numba's cache, made safe for symgrad's modules (None: a Numba without this layout)."""
    try:
        from numba.core.caching import FunctionCache, IndexDataCacheFile, NullCache
    except ImportError:  # pragma: no cover
        return None
    needed = ("_load_index", "_save_index", "_load_data", "_save_data")
    if not all(hasattr(IndexDataCacheFile, m) for m in needed):  # pragma: no cover
        return None

    class SealedCacheFile(IndexDataCacheFile):
        """Numba's index/data files with a SHA-256 seal, read as regular files of bounded size
        and written privately: anything else reads as a cache miss."""

        def _load_index(self):
            payload = _unsealed(read_private(self._index_path))
            if payload is None:
                return {}  # missing or damaged: recompile, and the save rewrites it
            stream = io.BytesIO(payload)
            if pickle.load(stream) != self._version:
                return {}
            stamp, overloads = pickle.loads(stream.read())
            return overloads if stamp == self._source_stamp else {}

        def _save_index(self, overloads):
            stream = io.BytesIO()
            pickle.dump(self._version, stream, protocol=-1)
            stream.write(self._dump((self._source_stamp, overloads)))
            write_private(Path(self._index_path), _sealed(stream.getvalue()))

        def _load_data(self, name):
            payload = _unsealed(read_private(self._data_path(name)))
            if payload is None:
                # Numba's load() reads an OSError as "no entry": it recompiles and overwrites.
                raise OSError(f"symgrad: unusable Numba cache file {self._data_path(name)}")
            return pickle.loads(payload)

        def _save_data(self, name, data):
            write_private(Path(self._data_path(name)), _sealed(self._dump(data)))

    class SafeFunctionCache(FunctionCache):
        """A cache that cannot fail a compile: an unreadable entry is a miss, an unwritable
        one (a full disk, a deleted directory) is not saved; a full or read-only disk moves the
        process's later kernels to its stand-in (one warning for the directory, as a module
        that cannot be written)."""

        def load_overload(self, sig, target_context):
            try:
                return super().load_overload(sig, target_context)
            except Exception:  # noqa: BLE001 - an entry that cannot be rebuilt: compile again
                return None

        def save_overload(self, sig, data):
            try:
                _make_private(Path(self._cache_path).parent)
                _make_private(Path(self._cache_path))
                super().save_overload(sig, data)
            except FileNotFoundError:
                pass  # the cache directory was deleted meanwhile: the next compile saves it
            except OSError as e:  # a full or read-only disk: this process moves to its
                _fall_back(Path(self._cache_path).parent, str(e))  # stand-in, said once

    return SealedCacheFile, SafeFunctionCache, NullCache


_classes: list = []  # [classes or None], made on first use: Numba is imported lazily


def _seal_numba_caches(module: ModuleType) -> None:
    """Switch the module's Numba dispatchers to sealed, safe cache files (before their first
    call); a module Numba could only locate in memory compiles without a file cache."""
    own = [
        obj
        for obj in vars(module).values()
        # imported helpers (runtime.scalar) keep Numba's plain files for their other users
        if getattr(getattr(obj, "py_func", None), "__module__", None) == module.__name__
    ]
    if not own:
        # A NumPy-only module (the instant tier of a tensor program): nothing to seal, and no
        # import of Numba's caching here, where another thread may be importing Numba right now.
        return
    with _lock:
        if not _classes:
            _classes.append(_numba_classes())
    if _classes[0] is None:  # pragma: no cover
        return
    sealed, safe, null = _classes[0]
    weakref.finalize(module, _release, own, module.__file__)
    for obj in own:
        cache = getattr(obj, "_cache", None)
        locator = getattr(getattr(cache, "_impl", None), "locator", None)
        if isinstance(locator, _InMemory):
            obj._cache = null()
            continue
        if type(cache) is safe.__mro__[1] and type(cache._cache_file) is sealed.__mro__[1]:
            cache.__class__ = safe
            cache._cache_file.__class__ = sealed


def _release(dispatchers: list, filename: str) -> None:
    """Free a dropped module's machine code. Each compiled function's environment holds the
    module's globals, which hold its dispatcher, which holds the function out of the garbage
    collector's sight (and Numba's target context holds it until the dispatcher's finalizer
    runs): the dispatcher would never die. Do what its finalizer would, and forget its code."""
    for dispatcher in dispatchers:
        try:
            dispatcher._make_finalizer()()
            dispatcher._reset_overloads()
        except AttributeError:  # pragma: no cover - a Numba without these: kept, as before
            pass
    linecache.cache.pop(filename, None)  # the source lines Numba read for its annotations


class _InMemory:
    """Numba's last-resort cache locator for symgrad modules without a file (placeholder class:
    the real one subclasses Numba's, see ``_allow_memory_modules``)."""


def _allow_memory_modules() -> bool:
    """Let Numba cache-decorate functions of a symgrad module whose file is gone; their cache
    is then switched off (``_seal_numba_caches``). False without Numba's cache layout."""
    global _InMemory
    try:
        from numba.core.caching import CacheImpl, _CacheLocator
    except ImportError:  # pragma: no cover
        return False
    with _lock:
        if issubclass(_InMemory, _CacheLocator):
            return True

        class InMemory(_CacheLocator):
            def __init__(self, py_file: str):
                self._py_file = py_file

            def ensure_cache_path(self):
                raise OSError(errno.ENOENT, "symgrad: compiled in memory, not cached")

            def get_cache_path(self):
                return os.path.join(os.path.dirname(self._py_file), "__pycache__")

            def get_source_stamp(self):
                return None

            def get_disambiguator(self):
                return "memory"

            @classmethod
            def from_function(cls, py_func, py_file):
                symgrad = str(getattr(py_func, "__module__", "")).startswith("_symgrad_")
                return cls(py_file) if symgrad else None

        _InMemory = InMemory
        CacheImpl._locator_classes.append(InMemory)
    return True

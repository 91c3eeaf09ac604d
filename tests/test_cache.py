"""The on-disk kernel cache: reuse across processes, corruption, concurrency, keys, location.

Every test works in its own temporary cache directory (``SYMGRAD_CACHE_DIR``), in this process
with ``runtime.cache._loaded`` emptied, or in child processes given that directory. Whether a
child recompiled is read from Numba's own dispatcher statistics (``stats.cache_hits`` and
``cache_misses``) and from the files in the directory. Expected values are computed here with
``math`` for f(x, y) = x * tanh(y) + 2 (no sin or cos: those graphs compile with LLVM).
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numba_cache_probe as probe
import numpy as np
import pytest

import compiler
import compiler.codegen.numba_source as numba_source
from runtime import cache

EXPR = "x * tanh(y) + 2"
X, Y = 1.5, 0.3
VALUE = X * math.tanh(Y) + 2
GRADS = {"x": math.tanh(Y), "y": X * (1 - math.tanh(Y) ** 2)}


def start_child(cache_dir: Path, expr: str = EXPR, start_at: float = 0.0) -> subprocess.Popen:
    return probe.start(cache_dir, expr, x=X, y=Y, start_at=start_at)


def finish(proc: subprocess.Popen) -> dict:
    return probe.finish(proc, timeout=120)


def run_child(cache_dir: Path, expr: str = EXPR) -> dict:
    return finish(start_child(cache_dir, expr))


def assert_correct(result: dict) -> None:
    assert result["value"] == pytest.approx(VALUE, rel=1e-14)
    assert result["grads"] == {k: pytest.approx(v, rel=1e-14) for k, v in GRADS.items()}


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``directory``: (size, mtime in ns)."""
    return {
        str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def modules(directory: Path) -> list[Path]:
    return sorted(directory.glob("k_*.py"))


def numba_files(directory: Path, suffix: str) -> list[Path]:
    return sorted((directory / "__pycache__").glob(f"k_*{suffix}"))


def checksum_ok(path: Path) -> bool:
    """The entry's first line is the SHA-256 of the rest (checked here, independently)."""
    first, _, body = path.read_text(encoding="utf-8").partition("\n")
    return first == "# symgrad-sha256: " + hashlib.sha256(body.encode()).hexdigest()


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """A private cache directory for this process, with the in-memory module table emptied.
    These tests are about Numba's kernels on disk: they ask for ``mode="compiled"``."""
    from runtime import background

    assert background.wait_idle(), "an earlier test's background compiles did not finish"
    directory = tmp_path / "cache"
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(directory))
    monkeypatch.setattr(cache, "_loaded", {})
    return directory


def fresh_result(expr: str = EXPR) -> tuple[float, dict]:
    """Compile as a new process would: nothing in memory, everything from disk."""
    cache._loaded.clear()
    return compiler.compile_gradient(expr, mode="compiled").value_and_grad(x=X, y=Y)


# --------------------------------------------------------------------------- (a) reuse
@pytest.fixture(scope="module")
def warm_dir(tmp_path_factory) -> tuple[Path, dict]:
    """A cache directory filled by one child process; returns it and that child's report."""
    directory = tmp_path_factory.mktemp("warm") / "cache"
    return directory, run_child(directory)


def test_first_process_compiles_and_writes(warm_dir):
    directory, first = warm_dir
    assert_correct(first)
    assert first["misses"] >= 1 and first["hits"] == 0
    [entry] = modules(directory)  # one call pattern (all scalars): one module
    assert checksum_ok(entry)
    assert numba_files(directory, ".nbi") and numba_files(directory, ".nbc")


def test_second_process_reuses_without_recompiling(warm_dir, tmp_path):
    # In a copy (copy2 keeps mtimes), which the corruption test below relies on being warm too.
    directory = tmp_path / "copy"
    shutil.copytree(warm_dir[0], directory)
    before = snapshot(directory)
    second = run_child(directory)
    assert_correct(second)
    assert second["misses"] == 0 and second["hits"] >= 1
    assert snapshot(directory) == before  # nothing new, nothing rewritten


# --------------------------------------------------------------------------- (b) corruption
def test_truncated_module_is_rebuilt(cache_dir):
    assert_result(fresh_result())
    [entry] = modules(cache_dir)
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    assert_result(fresh_result())
    assert checksum_ok(entry)


def test_edited_module_is_detected_by_its_checksum(cache_dir):
    assert_result(fresh_result())
    [entry] = modules(cache_dir)
    text = entry.read_text()
    assert "= tanh(" in text  # the op's intrinsic (runtime.numba_ops)
    entry.write_text(text.replace("tanh", "exp"))  # still valid Python, wrong maths
    assert_result(fresh_result())  # tanh again, not exp
    assert checksum_ok(entry) and entry.read_text() == text


@pytest.mark.parametrize("where", ["empty", "garbage", "truncated"])
def test_damaged_module_file_variants(cache_dir, where):
    assert_result(fresh_result())
    [entry] = modules(cache_dir)
    damage = {"empty": b"", "garbage": b"\xff\xfe not python \x00", "truncated": None}[where]
    entry.write_bytes(entry.read_bytes()[:40] if damage is None else damage)
    assert_result(fresh_result())
    assert checksum_ok(entry)


def assert_result(result) -> None:
    value, grads = result
    assert_correct({"value": value, "grads": grads})


def flip_bytes(path: Path, fraction: float) -> bytes:
    data = bytearray(path.read_bytes())
    for k in range(16):  # a run of flipped bytes in the middle of the machine code
        data[int(len(data) * fraction) + k] ^= 0xFF
    path.write_bytes(bytes(data))
    return bytes(data)


DAMAGES = ["nbc_flipped_bytes", "nbc_truncated", "nbi_garbage", "nbi_flipped_bytes"]


def test_corrupt_numba_cache_files_are_detected_and_rebuilt(warm_dir, tmp_path):
    # In child processes: an undetected corrupt .nbc loads broken machine code and crashes.
    # Each kind of damage gets its own copy of the warm cache (copy2 keeps the mtimes Numba
    # checks: test_second_process_reuses_without_recompiling shows such a cache is warm).
    corrupted = {}
    for damage in DAMAGES:
        directory = tmp_path / damage
        shutil.copytree(warm_dir[0], directory)
        [target] = numba_files(directory, ".nbc" if damage.startswith("nbc") else ".nbi")
        if damage == "nbc_truncated":
            target.write_bytes(target.read_bytes()[:100])
        elif damage == "nbi_garbage":
            target.write_bytes(b"garbage")
        else:
            flip_bytes(target, 0.5)
        corrupted[damage] = (target, target.read_bytes())

    procs = {d: start_child(tmp_path / d) for d in DAMAGES}
    for damage, proc in procs.items():
        again = finish(proc)
        assert_correct(again)
        target, bad = corrupted[damage]
        assert again["misses"] >= 1, damage  # the damaged entry was not used...
        assert target.read_bytes() != bad, damage  # ...and it was rewritten

    third = run_child(tmp_path / "nbc_flipped_bytes")
    assert_correct(third)
    assert third["misses"] == 0 and third["hits"] >= 1  # the rebuilt entry is whole


# --------------------------------------------------------------------------- (c) concurrency
def test_concurrent_compiles_of_one_kernel(tmp_path):
    directory = tmp_path / "cache"
    start_at = time.time() + 1.5  # both children have imported by then
    procs = [start_child(directory, start_at=start_at) for _ in range(2)]
    results = [finish(p) for p in procs]
    for r in results:
        assert_correct(r)
    [entry] = modules(directory)
    assert checksum_ok(entry)
    leftovers = [p.name for p in directory.rglob("*") if ".tmp" in p.name]
    assert leftovers == []
    assert len(numba_files(directory, ".nbi")) == 1
    third = run_child(directory)  # the entry they leave is whole and usable
    assert_correct(third)
    assert third["misses"] == 0 and third["hits"] >= 1


# --------------------------------------------------------------------------- (d) keys
@pytest.mark.parametrize(
    "a, b, point, expected_a, expected_b",
    [
        ("x * 2", "x * 3", {"x": 5.0}, 10.0, 15.0),  # constants
        ("x - y", "y - x", {"x": 5.0, "y": 1.0}, 4.0, -4.0),  # edges
        ("x / y + y", "y / x + x", {"x": 4.0, "y": 2.0}, 4.0, 4.5),  # edges, same op counts
    ],
)
def test_key_follows_constants_and_edges(cache_dir, a, b, point, expected_a, expected_b):
    ga, gb = compiler.trace(a), compiler.trace(b)
    assert ga.key() != gb.key()
    assert compiler.compile_gradient(a, mode="compiled")(**point) == expected_a
    assert compiler.compile_gradient(b, mode="compiled")(**point) == expected_b
    assert len(modules(cache_dir)) == 2
    cache._loaded.clear()  # from disk, each still gets its own module
    assert compiler.compile_gradient(b, mode="compiled")(**point) == expected_b
    assert compiler.compile_gradient(a, mode="compiled")(**point) == expected_a


def test_key_is_bit_exact_on_constants(cache_dir):
    # 0.0 and -0.0 compare equal but are different constants: x * -0.0 is -0.0 for x > 0.
    pos, neg = (
        compiler.compile_gradient("x * 0.0", mode="compiled"),
        compiler.compile_gradient("x * -0.0", mode="compiled"),
    )
    assert compiler.trace("x * 0.0").key() != compiler.trace("x * -0.0").key()
    assert not np.signbit(pos(x=1.0)) and np.signbit(neg(x=1.0))


def test_key_follows_wrt(cache_dir):
    both = compiler.compile_gradient("x * y", mode="compiled")
    only_x = compiler.compile_gradient("x * y", wrt=["x"], mode="compiled")
    assert both.grad(x=2.0, y=3.0) == {"x": 3.0, "y": 2.0}
    assert only_x.grad(x=2.0, y=3.0) == {"x": 3.0}
    assert len(modules(cache_dir)) == 2


def test_on_disk_tells_without_loading(cache_dir):
    k = compiler.compile_gradient(EXPR, mode="compiled")
    key = k._key("sss")
    assert not cache.on_disk(key)
    assert_result(k.value_and_grad(x=X, y=Y))
    assert cache.on_disk(key)
    cache._loaded.clear()
    assert cache.on_disk(key) and key not in cache._loaded  # checked, not executed
    [entry] = modules(cache_dir)
    entry.write_text(entry.read_text() + "# damaged\n")
    assert not cache.on_disk(key)


# --------------------------------------------------------------------------- (e) location
def test_location_follows_symgrad_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path / "here"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "here"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", "~/sg")
    assert cache.cache_dir() == tmp_path / "home" / "sg"


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="XDG applies on Linux only")
def test_location_otherwise_follows_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.delenv("SYMGRAD_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "symgrad"
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", "")  # empty means unset
    assert cache.cache_dir() == tmp_path / "xdg" / "symgrad"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # invalid per the XDG spec: ignored
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "symgrad"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "symgrad"


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="XDG applies on Linux only")
def test_kernels_land_in_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.delenv("SYMGRAD_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(cache, "_loaded", {})
    assert_result(compiler.compile_gradient(EXPR, mode="compiled").value_and_grad(x=X, y=Y))
    [entry] = modules(tmp_path / "xdg" / "symgrad")
    assert checksum_ok(entry)


def test_unwritable_location_falls_back_with_a_warning(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(cache, "_loaded", {})
    monkeypatch.setattr(cache, "_fallback", {})
    with pytest.warns(RuntimeWarning, match="cannot use its kernel cache"):
        result = compiler.compile_gradient(EXPR, mode="compiled").value_and_grad(x=X, y=Y)
    assert_result(result)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once is enough
        assert compiler.compile_gradient("x * 7", mode="compiled")(x=1.0) == 7.0


# --------------------------------------------------------------------------- (f) nothing half-built
def test_generation_failure_leaves_nothing(cache_dir, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the generator broke")

    monkeypatch.setattr(numba_source, "generate", broken)
    with pytest.raises(compiler.CompileError, match="the generator broke"):
        compiler.compile_gradient(EXPR, mode="compiled").value_and_grad(x=X, y=Y)
    assert not cache_dir.exists() or list(cache_dir.rglob("*")) == []


def test_generation_interrupted_while_writing_leaves_nothing(cache_dir, monkeypatch):
    def fail_link(src, dst):
        raise KeyboardInterrupt  # as if the process were stopped between write and rename

    monkeypatch.setattr(os, "link", fail_link)
    with pytest.raises(KeyboardInterrupt):
        compiler.compile_gradient(EXPR, mode="compiled").value_and_grad(x=X, y=Y)
    assert [p for p in cache_dir.rglob("*") if p.is_file()] == []


def test_numba_failure_leaves_nothing_and_the_next_compile_works(cache_dir, monkeypatch):
    real = numba_source.generate

    def untypable(*args, **kwargs):
        return real(*args, **kwargs).replace("= tanh(", "= no_such_function(")

    monkeypatch.setattr(numba_source, "generate", untypable)
    with pytest.raises(compiler.CompileError):
        compiler.compile_gradient(EXPR, mode="compiled").value_and_grad(x=X, y=Y)
    assert modules(cache_dir) == []
    assert numba_files(cache_dir, ".nbi") == numba_files(cache_dir, ".nbc") == []
    monkeypatch.setattr(numba_source, "generate", real)
    assert_result(fresh_result())


def test_a_numpy_only_kernel_never_imports_numba(tmp_path):
    """A tensor program on the instant tier is plain NumPy: neither its cache key nor loading it
    imports Numba (a third of a second of a notebook's first result)."""
    script = (
        "import sys, numpy as np, compiler\n"
        "k = compiler.compile_gradient('sum(maximum(0, W @ x)**2)', shapes={'W': ('n', 'n'), 'x': ('n',)},"
        " mode='instant')\n"
        "v, g = k.value_and_grad(W=np.eye(2), x=np.array([1.0, 2.0]))\n"
        "assert v == 5.0 and list(g['x']) == [2.0, 4.0], (v, g)\n"
        "print('numba' in sys.modules)\n"
    )
    env = {**os.environ, "SYMGRAD_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_a_kernel_module_collected_at_interpreter_exit_is_still_forgotten(monkeypatch):
    """At exit, ``runtime.cache``'s globals may be None before the last kernel modules are
    collected: the stand-in's callback must not need them (it printed "Exception ignored")."""
    import gc
    import types

    name = "_symgrad_k_exit_probe"
    module = types.ModuleType(name)
    sys.modules[name] = cache._Entry(module)
    monkeypatch.setattr(cache, "_unregister", None)  # as interpreter exit leaves them
    monkeypatch.setattr(cache, "sys", None)
    monkeypatch.setattr(cache, "_Entry", None)
    del module
    gc.collect()
    assert name not in sys.modules

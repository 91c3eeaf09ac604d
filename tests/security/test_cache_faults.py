"""The kernel cache under faults and attack: stale code, a foreign-writable directory, files that
are not files, a full or read-only disk, a directory deleted mid-compile, memory, concurrency.

Faults run in child processes, bounded in time (``timeout=``) and memory (``RLIMIT_DATA``): a
hang or an unbounded read fails the test instead of stopping the suite. Each child compiles four
kernels, one per cache user — Numba's compiled tier, the LLVM tier (sin), a tensor program (Numba)
and the instant tier (its LLVM virtual machine) — and the answers are checked here against
``math`` and NumPy.
"""

from __future__ import annotations

import errno
import gc
import hashlib
import json
import math
import os
import resource
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
import weakref
from pathlib import Path

import numpy as np
import pytest

import compiler
from runtime import cache

ROOT = Path(__file__).resolve().parents[2]
X, Y = 1.5, 0.3
W = [[0.5, -1.0], [2.0, 0.25]]
V = [1.0, 2.0]
TIMEOUT = 240
ARRAYS = f"W, V = {W!r}, {V!r}\n"  # the children's inputs

# ---------------------------------------------------------------------------------- the child
CHILD = ARRAYS + textwrap.dedent(
    """
    import errno, json, os, sys, warnings
    spec = json.loads(sys.argv[1])
    cache_dir = os.path.realpath(os.environ["SYMGRAD_CACHE_DIR"])

    def ours(fd):  # a regular file under a directory this fault covers
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return False
        return any(target.startswith(d) for d in spec.get("full", []))

    if spec.get("full"):  # a full disk: every write into these directories fails
        spec["full"] = [os.path.realpath(d) if d != "CACHE" else cache_dir for d in spec["full"]]
        real_write = os.write
        def write(fd, data):
            if ours(fd):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(fd, data)
        os.write = write
    if spec.get("budget") is not None:  # a nearly full disk: this many bytes fit, then none
        left = [spec["budget"]]
        real_write_ = os.write
        def write_(fd, data):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                target = ""
            if target.startswith(cache_dir):
                if len(data) > left[0]:
                    left[0] = 0
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                left[0] -= len(data)
            return real_write_(fd, data)
        os.write = write_
    if spec.get("read_only"):  # nothing can be created or written in the cache directory
        real_open, real_mkdir = os.open, os.mkdir
        writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT
        def open_(path, flags, *args, **kwargs):
            inside = os.path.realpath(os.fsdecode(path)).startswith(cache_dir)
            if inside and flags & writing:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
            return real_open(path, flags, *args, **kwargs)
        def mkdir(path, *args, **kwargs):
            if os.path.realpath(os.fsdecode(path)).startswith(cache_dir):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
            return real_mkdir(path, *args, **kwargs)
        os.open, os.mkdir = open_, mkdir

    import numpy as np
    import compiler

    def run(offset):
        out = {}
        k = compiler.compile_gradient(f"x * tanh(y) + {offset}", mode="compiled")
        out["numba"] = k.value_and_grad(x=1.5, y=0.3)
        k = compiler.compile_gradient(f"x * sin(y) + {offset}", mode="compiled")
        out["llvm"] = k.value_and_grad(x=1.5, y=0.3)
        k = compiler.compile_gradient(
            f"sum(tanh(W @ x)**2) + {offset}", shapes={"W": ("n", "n"), "x": ("n",)},
            mode="compiled")
        v, g = k.value_and_grad(W=np.array(W), x=np.array(V))
        out["tensor"] = (v, {n: a.tolist() for n, a in g.items()})
        k = compiler.compile_gradient(f"x * tanh(y) + {offset}", mode="instant")
        out["instant"] = k.value_and_grad(x=1.5, y=0.3)
        return out

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = [run(offset) for offset in spec.get("offsets", [2])]
    print(json.dumps({"results": results, "warnings": [str(w.message) for w in caught]}))
    """
)


def limit_memory() -> None:
    """In the child: 3 GB of data at most, so an unbounded read fails quickly."""
    resource.setrlimit(resource.RLIMIT_DATA, (3 << 30, 3 << 30))


def run_child(cache_dir: Path, script: str = CHILD, arg: str = "{}", path: Path = ROOT) -> dict:
    env = {**os.environ, "SYMGRAD_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(path)}
    done = subprocess.run(
        [sys.executable, "-c", script, arg],
        capture_output=True,
        text=True,
        env=env,
        cwd=path,
        timeout=TIMEOUT,
        preexec_fn=limit_memory,
    )
    assert done.returncode == 0, f"child failed (rc {done.returncode}):\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def expected(offset: float = 2) -> dict:
    """Each kernel's value and gradients, from math and NumPy."""
    t, s, c = math.tanh(Y), math.sin(Y), math.cos(Y)
    w, v = np.array(W), np.array(V)
    u = np.tanh(w @ v)
    du = 2 * u * (1 - u**2)
    return {
        "numba": (X * t + offset, {"x": t, "y": X * (1 - t * t)}),
        "llvm": (X * s + offset, {"x": s, "y": X * c}),
        "tensor": (
            float(np.sum(u**2)) + offset,
            {"W": np.outer(du, v).tolist(), "x": (w.T @ du).tolist()},
        ),
        "instant": (X * t + offset, {"x": t, "y": X * (1 - t * t)}),
    }


def assert_right(report: dict, offsets: list = (2,)) -> None:
    for result, offset in zip(report["results"], offsets, strict=True):
        for tier, (value, grads) in expected(offset).items():
            got_value, got_grads = result[tier]
            assert got_value == pytest.approx(value, rel=1e-12), tier
            assert set(got_grads) == set(grads), tier
            for name in grads:
                assert np.allclose(got_grads[name], grads[name], rtol=1e-12), (tier, name)


def cache_warnings(report: dict) -> list[str]:
    return [w for w in report["warnings"] if "symgrad cannot" in w]


@pytest.fixture(scope="module")
def warm(tmp_path_factory) -> Path:
    """A cache directory filled by one child: modules, Numba's files, LLVM object code."""
    directory = tmp_path_factory.mktemp("warm") / "cache"
    report = run_child(directory)
    assert_right(report)
    assert cache_warnings(report) == []
    return directory


def entries(directory: Path) -> list[Path]:
    """Every cache file: kernel modules, Numba's index and data files, LLVM object code."""
    return sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith("."))


# ------------------------------------------------------------------- 1. stale kernels after a change
STALE_CHILD = ARRAYS + textwrap.dedent(
    """
    import json, compiler, runtime.cache
    k = compiler.compile_gradient("x * tanh(y) + 2", mode="compiled")
    value, grads = k.value_and_grad(x=1.5, y=0.3)
    print(json.dumps({"value": value, "grads": grads, "file": compiler.__file__,
                      "fingerprint": runtime.cache.environment_fingerprint()}))
    """
)


def test_a_changed_adjoint_rule_is_never_served_an_old_kernel(tmp_path):
    # A copy of symgrad whose backward pass doubles every gradient (the seed): compiled into the
    # same cache after the original, it must build its own kernel, not load the original's.
    tree = tmp_path / "tree"
    for package in ("compiler", "runtime"):
        shutil.copytree(
            ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    adjoint = tree / "compiler" / "passes" / "adjoint.py"
    text = adjoint.read_text()
    old = "grads: dict[int, int] = {out: adj.seed()} if needed[out] else {}"
    assert text.count(old) == 1
    new = 'grads: dict[int, int] = {out: adj.add("mul", adj.seed(), adj.const(2.0))} if needed[out] else {}'
    adjoint.write_text(text.replace(old, new))

    shared = tmp_path / "cache"
    before = json.loads(run_stale(shared, ROOT))
    after = json.loads(run_stale(shared, tree))
    fresh = json.loads(run_stale(tmp_path / "fresh", tree))  # the changed code, no cache at all
    t = math.tanh(Y)
    assert Path(after["file"]).is_relative_to(tree) and Path(before["file"]).is_relative_to(ROOT)
    assert before["grads"] == pytest.approx({"x": t, "y": X * (1 - t * t)}, rel=1e-14)
    assert after["fingerprint"] != before["fingerprint"]
    assert after["grads"] == pytest.approx({"x": 2 * t, "y": 2 * X * (1 - t * t)}, rel=1e-14)
    assert after["grads"] == pytest.approx(fresh["grads"], rel=1e-14)
    assert len(list(shared.glob("k_*.py"))) == 2


def run_stale(cache_dir: Path, path: Path) -> str:
    env = {**os.environ, "SYMGRAD_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(path)}
    done = subprocess.run(
        [sys.executable, "-c", STALE_CHILD],
        capture_output=True,
        text=True,
        env=env,
        cwd=path,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout.strip().splitlines()[-1]


def test_the_fingerprint_reads_every_source_file_of_both_packages():
    listed = {name for name, _ in cache._sources(ROOT)}
    found = {
        p.relative_to(ROOT).as_posix()
        for package in ("compiler", "runtime")
        for p in (ROOT / package).rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert listed == found
    assert {
        "compiler/passes/adjoint.py",
        "compiler/passes/fusion/__init__.py",
        "compiler/ir/graph.py",
    } <= listed


def test_the_source_digest_follows_each_file_path_and_content(tmp_path):
    for package in ("compiler", "runtime"):
        (tmp_path / package / "sub").mkdir(parents=True)
    module = tmp_path / "compiler" / "a.py"
    module.write_text("A = 1\n")
    first = cache.source_digest(tmp_path)
    module.write_text("A = 2\n")
    second = cache.source_digest(tmp_path)
    module.rename(tmp_path / "compiler" / "sub" / "a.py")
    third = cache.source_digest(tmp_path)
    (tmp_path / "runtime" / "notes.txt").write_text("not code")  # only .py files count
    assert len({first, second, third}) == 3 and cache.source_digest(tmp_path) == third


# ------------------------------------------------------------------- 2. the seal and privacy
PAYLOAD = "open({marker!r}, 'w').write('pwned')\n"


def plant(directory: Path, marker: Path) -> list[Path]:
    """Rewrite every kernel module in ``directory`` with a payload and a *valid* checksum: what
    anyone who can write the directory can do."""
    planted = []
    for module in sorted(directory.glob("[kt]_*.py")):
        first, _, body = module.read_text().partition("\n")
        body = PAYLOAD.format(marker=str(marker)) + body
        module.write_text(f"# symgrad-sha256: {hashlib.sha256(body.encode()).hexdigest()}\n{body}")
        planted.append(module)
    assert planted
    return planted


NOBODY = 65534


@pytest.mark.parametrize(
    "how",
    ["directory_0777", "directory_0775", "file_0666", "directory_of_nobody", "file_of_nobody"],
)
def test_a_cache_others_can_write_is_refused(warm, tmp_path, how):
    directory = tmp_path / "cache"
    shutil.copytree(warm, directory)
    marker = tmp_path / "marker"
    planted = plant(directory, marker)
    if how.startswith("directory_0"):
        directory.chmod(int(how[-4:], 8))
    elif how == "file_0666":
        for module in planted:
            module.chmod(0o666)
    elif os.getuid() != 0:
        pytest.skip("giving a file to another user needs root")
    elif how == "directory_of_nobody":
        os.chown(directory, NOBODY, NOBODY)
    else:
        for module in planted:
            os.chown(module, NOBODY, NOBODY)
    report = run_child(directory)
    assert_right(report)
    assert not marker.exists()
    [warning] = cache_warnings(report)  # one, and it says why
    assert str(directory) in warning and (
        "writable by others" in warning or "another user" in warning
    )


def test_a_refused_cache_with_no_stand_in_is_never_read(own_cache, tmp_path, monkeypatch):
    # No private directory can be made anywhere: the kernels run from memory, and the refused
    # directory's planted module is still never executed.
    k = compiler.compile_gradient("x * tanh(y) + 12", mode="compiled")
    assert k(x=X, y=Y) == pytest.approx(X * math.tanh(Y) + 12)
    del k
    gc.collect()
    marker = tmp_path / "marker"
    plant(own_cache, marker)
    own_cache.chmod(0o777)
    monkeypatch.setattr(cache, "_vetted", set())

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tempfile, "mkdtemp", no_space)
    with pytest.warns(RuntimeWarning, match="writable by others.*in memory"):
        k = compiler.compile_gradient("x * tanh(y) + 12", mode="compiled")
        value, grads = k.value_and_grad(x=X, y=Y)
    t = math.tanh(Y)
    assert value == pytest.approx(X * t + 12)  # pytest 9.2's approx takes no nested data
    assert grads == pytest.approx({"x": t, "y": X * (1 - t * t)})
    assert not marker.exists()


def test_a_new_cache_directory_and_its_files_are_private(warm):
    assert stat.S_IMODE(warm.stat().st_mode) == 0o700
    for path in entries(warm):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


# ------------------------------------------------------------------- 3. only regular files, bounded
def fifo(path: Path) -> None:
    os.mkfifo(path)


def dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


def directory(path: Path) -> None:
    path.mkdir()
    (path / "inside").write_text("x")


def corrupt(path: Path, data: bytes) -> None:
    damaged = bytearray(data)
    for k in range(min(16, len(damaged))):
        damaged[len(damaged) // 2 + k - 8] ^= 0xFF
    path.write_bytes(bytes(damaged))


def truncated(path: Path, data: bytes) -> None:
    path.write_bytes(data[: len(data) // 3])


FAULTS = {"fifo": fifo, "dev_zero": dev_zero, "directory": directory}
FAULTS_ON_DATA = {"corrupt": corrupt, "truncated": truncated}


@pytest.mark.parametrize("fault", [*FAULTS, *FAULTS_ON_DATA])
def test_every_cache_file_replaced_by_a_non_file_or_damaged(warm, tmp_path, fault):
    directory = tmp_path / "cache"
    shutil.copytree(warm, directory)
    files = entries(directory)
    kinds = {p.suffix for p in files}
    assert {".py", ".nbi", ".nbc", ".bin"} <= kinds  # modules, Numba's files, LLVM object code
    for path in files:
        data = path.read_bytes()
        path.unlink()
        if fault in FAULTS:
            FAULTS[fault](path)
        else:
            FAULTS_ON_DATA[fault](path, data)
    report = run_child(directory)
    assert_right(report)
    assert cache_warnings(report) == []
    for path in files:  # each replaced by a whole, private, regular file
        assert stat.S_ISREG(os.lstat(path).st_mode), path
    assert not [p for p in directory.rglob("*") if p.name.startswith((".tmp", ".trash"))]


def test_a_huge_file_is_not_read(tmp_path, monkeypatch):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(cache.MAX_FILE + 1)  # sparse: no disk used
    assert cache.read_private(big) is None
    small = tmp_path / "small.bin"
    small.write_bytes(b"data")
    assert cache.read_private(small) == b"data"


# ------------------------------------------------------------------- 4. a full or read-only disk
def test_a_full_disk_compiles_in_a_private_stand_in(tmp_path):
    report = run_child(tmp_path / "cache", arg=json.dumps({"full": ["CACHE"], "offsets": [2, 3]}))
    assert_right(report, [2, 3])
    [warning] = cache_warnings(report)  # once, for eight kernels
    assert "No space left on device" in warning


def test_a_disk_filling_up_is_said_once(tmp_path):
    """A nearly full disk: the first small modules fit, then Numba's larger files fail, then the
    modules too. One warning (it was two: Numba's files, then the module folder), and every
    kernel after it compiles in the private stand-in."""
    report = run_child(tmp_path / "cache", arg=json.dumps({"budget": 6000, "offsets": [2, 3]}))
    assert_right(report, [2, 3])
    [warning] = cache_warnings(report)
    assert "No space left on device" in warning


def test_a_disk_full_everywhere_compiles_in_memory(tmp_path):
    full = ["CACHE", "/dev/shm", "/tmp", str(tmp_path)]
    report = run_child(tmp_path / "cache", arg=json.dumps({"full": full, "offsets": [2, 3]}))
    assert_right(report, [2, 3])
    said = cache_warnings(report)
    assert 1 <= len(said) <= 3  # the cache, its stand-in, Numba's files: each said once
    assert any("in memory" in w for w in said)


def test_a_read_only_cache_serves_what_it_holds_and_compiles_the_rest(warm, tmp_path):
    directory = tmp_path / "cache"
    shutil.copytree(warm, directory)
    before = {p: p.read_bytes() for p in entries(directory)}
    report = run_child(directory, arg=json.dumps({"read_only": True, "offsets": [2, 5]}))
    assert_right(report, [2, 5])
    assert len(cache_warnings(report)) == 1  # only for the new kernels
    assert {p: p.read_bytes() for p in entries(directory)} == before


# ------------------------------------------------------------------- 5. a directory deleted meanwhile
@pytest.fixture
def own_cache(tmp_path, monkeypatch) -> Path:
    directory = tmp_path / "cache"
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(directory))
    monkeypatch.setattr(cache, "_loaded", weakref.WeakValueDictionary())
    monkeypatch.setattr(cache, "_fallback", {})
    monkeypatch.setattr(cache, "_vetted", set(), raising=False)
    return directory


def test_the_directory_deleted_between_writing_and_importing_a_module(own_cache, monkeypatch):
    real = cache._publish

    def publish_then_delete(path, source):
        kept = real(path, source)
        shutil.rmtree(own_cache)  # another process clears the cache right now
        return kept

    monkeypatch.setattr(cache, "_publish", publish_then_delete)
    k = compiler.compile_gradient("x * tanh(y) + 11", mode="compiled")
    t = math.tanh(Y)
    value, grads = k.value_and_grad(x=X, y=Y)
    assert value == pytest.approx(X * t + 11)
    assert grads == pytest.approx({"x": t, "y": X * (1 - t * t)})
    k = compiler.compile_gradient(
        "sum(tanh(W @ x)**2) + 11", shapes={"W": ("n", "n"), "x": ("n",)}, mode="compiled"
    )
    value, _ = k.value_and_grad(W=np.array(W), x=np.array(V))
    assert value == pytest.approx(expected(11)["tensor"][0])


DELETER = ARRAYS + textwrap.dedent(
    """
    import json, shutil, sys, threading, warnings
    import numpy as np, compiler
    directory, count = sys.argv[1], int(sys.argv[2])
    done = threading.Event()
    def delete():
        while not done.is_set():
            shutil.rmtree(directory, ignore_errors=True)
    threading.Thread(target=delete, daemon=True).start()
    results = []
    for c in range(count):
        k = compiler.compile_gradient(f"x * tanh(y) + {c}", mode="compiled")
        results.append(k.value_and_grad(x=1.5, y=0.3))
        k = compiler.compile_gradient(
            f"sum(tanh(W @ x)**2) + {c}", shapes={"W": ("n", "n"), "x": ("n",)}, mode="compiled")
        results.append(k.value_and_grad(W=np.array(W), x=np.array(V))[0])
    done.set()
    print(json.dumps(results))
    """
)


def test_compiles_while_another_thread_deletes_the_cache_in_a_loop(tmp_path):
    count = 8
    env = {**os.environ, "SYMGRAD_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", DELETER, str(tmp_path / "cache"), str(count)],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT,
        preexec_fn=limit_memory,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for c in range(count):
        (value, grads), tensor = results[2 * c], results[2 * c + 1]
        want = expected(c)
        assert value == pytest.approx(want["numba"][0]) and grads == pytest.approx(want["numba"][1])
        assert tensor == pytest.approx(want["tensor"][0])


# ------------------------------------------------------------------- 6. memory: kernels are freed
@pytest.mark.parametrize("tensor", [False, True])
def test_a_dropped_kernel_frees_its_module(own_cache, tensor):
    if tensor:
        k = compiler.compile_gradient(
            "sum(tanh(W @ x)**2) + 13", shapes={"W": ("n", "n"), "x": ("n",)}, mode="compiled"
        )
        value, _ = k.value_and_grad(W=np.array(W), x=np.array(V))
        assert value == pytest.approx(expected(13)["tensor"][0])
    else:
        k = compiler.compile_gradient("x * tanh(y) + 13", mode="compiled")
        assert k(x=X, y=Y) == pytest.approx(X * math.tanh(Y) + 13)
    [module] = cache._loaded.values()
    name = module.__name__
    dispatchers = [  # its own, not runtime.jit's shared helpers it imports
        weakref.ref(v)
        for v in vars(module).values()
        if hasattr(v, "py_func") and v.py_func.__module__ == name
    ]
    assert dispatchers
    ref = weakref.ref(module)
    del module, k
    gc.collect()
    assert ref() is None
    assert name not in sys.modules
    assert all(d() is None for d in dispatchers)  # and with them, their machine code


def test_a_kept_kernel_keeps_working_after_collections(own_cache):
    k = compiler.compile_gradient("x * tanh(y) + 14", mode="compiled")
    for _ in range(3):
        gc.collect()
        assert k(x=X, y=Y) == pytest.approx(X * math.tanh(Y) + 14)


# ------------------------------------------------------------------- 7. threads and processes at once
CONCURRENT = ARRAYS + textwrap.dedent(
    """
    import json, math, sys, threading, time
    import numpy as np, compiler
    proc, start_at = int(sys.argv[1]), float(sys.argv[2])
    while time.time() < start_at:
        time.sleep(0.001)
    errors, checked = [], []
    def work(thread):
        try:
            for offset in (1, 10 * proc + thread + 100):  # shared by all, then this thread's own
                k = compiler.compile_gradient(f"x * tanh(y) + {offset}", mode="compiled")
                v, g = k.value_and_grad(x=1.5, y=0.3)
                t = math.tanh(0.3)
                assert abs(v - (1.5 * t + offset)) < 1e-12 and abs(g["x"] - t) < 1e-12, (v, g)
                checked.append(offset)
            k = compiler.compile_gradient(
                "sum(tanh(W @ x)**2)", shapes={"W": ("n", "n"), "x": ("n",)}, mode="compiled")
            w, x = np.array(W), np.array(V)
            v, g = k.value_and_grad(W=w, x=x)
            u = np.tanh(w @ x)
            assert abs(v - np.sum(u**2)) < 1e-12 and np.allclose(g["x"], w.T @ (2*u*(1-u*u))), v
            checked.append("tensor")
        except BaseException as e:
            errors.append(repr(e))
    threads = [threading.Thread(target=work, args=(t,)) for t in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"errors": errors, "checked": len(checked)}))
    """
)


def test_processes_and_threads_compiling_into_one_cache(tmp_path):
    directory = tmp_path / "cache"
    env = {**os.environ, "SYMGRAD_CACHE_DIR": str(directory), "PYTHONPATH": str(ROOT)}
    start_at = time.time() + 3.0  # every child has imported by then
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT, str(p), repr(start_at)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            preexec_fn=limit_memory,
        )
        for p in range(4)
    ]
    try:
        outputs = [p.communicate(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-4000:]
        report = json.loads(out.strip().splitlines()[-1])
        assert report == {"errors": [], "checked": 9}
    assert not [p for p in directory.rglob("*") if ".tmp" in p.name]
    modules = sorted(directory.glob("k_*.py"))
    assert len(modules) == 1 + 12  # the shared kernel once, and each thread's own
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for module in modules:  # every entry whole
            first, _, body = module.read_text().partition("\n")
            assert first == "# symgrad-sha256: " + hashlib.sha256(body.encode()).hexdigest()


MEMORY_CHILD = textwrap.dedent(
    """
    import gc, json, os, sys
    import compiler

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def make(i, text):  # a new kernel, called once, then dropped
        k = compiler.compile_gradient(text.format(i=i), mode="compiled")
        k.value_and_grad(x=0.5, y=0.25)

    out = {}
    for tier, text, count in (("numba", "x * tanh(y) + {i}", 12), ("llvm", "x * sin(y) + {i}", 40)):
        for i in range(4):  # warm-up: imports, the first engine, allocator arenas
            make(1000 + i, text)
        gc.collect()
        before = rss()
        for i in range(count):
            make(i, text)
        gc.collect()
        out[tier] = (rss() - before) / count / 2**20
    print(json.dumps(out))
    """
)


def test_dropped_kernels_give_their_memory_back(tmp_path):
    """1,000 kernels made and dropped grew a process by 4-6 GB (4.1 MB a kernel). The LLVM tier's
    code is freed whole; Numba's engine never unloads machine code (a Numba limitation: about
    1-2 MB a kernel stays, README's Reliability section), everything else goes."""
    env = {**os.environ, "SYMGRAD_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", MEMORY_CHILD], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    grown = json.loads(done.stdout.splitlines()[-1])  # MB per kernel
    assert grown["llvm"] < 0.5, grown
    assert grown["numba"] < 2.5, grown

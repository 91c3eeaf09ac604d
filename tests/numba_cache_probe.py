"""Test harness: compile an expression in a fresh child process and report whether Numba loaded
its kernel from the disk cache, read from Numba's own dispatcher statistics (``stats.cache_hits``
and ``cache_misses``) over the kernel modules the child loaded. Shared by ``test_cache.py`` and
``test_numba_ops.py``.

``start(cache_dir, expr, ...)`` launches the child (``start_at``: a common start time, for
concurrent children), ``finish(proc)`` reads its report — value, gradients, hits, misses and the
kernel's source — and ``run`` does both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent(
    """
    import json, sys, time
    expr, x, y, start_at, fuse = sys.argv[1], *map(float, sys.argv[2:5]), sys.argv[5] == "True"
    import compiler, runtime.cache
    from numba.core.dispatcher import Dispatcher
    while time.time() < start_at:  # a common start line for concurrent children
        time.sleep(0.001)
    k = compiler.compile_gradient(expr, mode="compiled", fuse=fuse)
    value, grads = k.value_and_grad(x=x, y=y)
    hits = misses = 0
    for module in runtime.cache._loaded.values():
        for obj in vars(module).values():
            if isinstance(obj, Dispatcher):
                hits += sum(obj.stats.cache_hits.values())
                misses += sum(obj.stats.cache_misses.values())
    print(json.dumps({"value": value, "grads": grads, "hits": hits, "misses": misses,
                      "source": k.source}))
    """
)


def start(
    cache_dir: Path,
    expr: str,
    *,
    x: float,
    y: float,
    start_at: float = 0.0,
    fuse: bool = True,
) -> subprocess.Popen:
    """A child compiling ``expr`` (mode "compiled") with ``cache_dir`` as its kernel cache and
    calling it at (x, y)."""
    env = {**os.environ, "SYMGRAD_CACHE_DIR": str(cache_dir)}
    args = [expr, repr(x), repr(y), repr(start_at), str(bool(fuse))]
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> dict:
    """The child's report; a failed child fails the test with its stderr."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"child failed (rc {proc.returncode}):\n{err[-3000:]}"
    return json.loads(out.strip().splitlines()[-1])


def run(cache_dir: Path, expr: str, **options) -> dict:
    return finish(start(cache_dir, expr, **options))

"""What the numbers were measured on: CPU, cores, memory, BLAS, thread settings, versions, date."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
import time
from importlib import metadata

from benchmarks.harness import cpu_counters, md_table, others_share

#: Environment variables that change how the contenders run; reported, never changed.
ENV_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "MKL_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "NUMBA_THREADING_LAYER",
    "NUMBA_CACHE_DIR",
    "SYMGRAD_CACHE_DIR",
    "PYTHONDONTWRITEBYTECODE",
)

VERSIONED = ("numpy", "numba", "llvmlite", "sympy", "symengine", "jax", "torch", "pytensor")


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key in ("model name", "flags") and key not in info:
                    info[key] = value
    except OSError:
        pass
    return info


def _meminfo_gib() -> str:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _blas() -> str:
    try:
        from threadpoolctl import threadpool_info

        libs = [
            f"{d.get('internal_api')} {d.get('version')} ({d.get('num_threads')} threads, "
            f"{d.get('architecture', '?')})"
            for d in threadpool_info()
            if d.get("user_api") == "blas"
        ]
        if libs:
            return "; ".join(libs) + " [threadpoolctl]"
    except ImportError:
        pass
    try:
        import numpy as np

        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        conf = blas.get("openblas configuration", "")
        return f"{blas.get('name', '?')} {blas.get('version', '')} {conf}".strip() + " [numpy]"
    except Exception as e:  # pragma: no cover - depends on NumPy's build
        return f"unknown ({e})"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _source_state() -> str:
    """The commit measured, and whether symgrad's code differed from it."""
    import subprocess

    from benchmarks.harness import REPO_ROOT

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "compiler", "runtime")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not head:
        return "unknown (not a git checkout)"
    return f"git {head}" + (" + uncommitted changes in compiler/ or runtime/" if dirty else "")


def describe() -> list[tuple[str, str]]:
    """(item, value) pairs describing this machine and software."""
    cpu = _cpuinfo()
    flags = set(cpu.get("flags", "").split())
    simd = " ".join(f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f") if f in flags)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 0
    import numba

    items = [
        ("date", _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")),
        ("CPU", cpu.get("model name", platform.processor() or "unknown")),
        ("SIMD", simd or "unknown"),
        ("cores", f"{os.cpu_count()} logical, {usable} usable by this process"),
        ("memory", _meminfo_gib()),
        ("load average at start", " ".join(f"{x:.2f}" for x in os.getloadavg())),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("NumPy BLAS", _blas()),
        (
            "Numba threads",
            f"{numba.config.NUMBA_NUM_THREADS} (layer setting: {numba.config.THREADING_LAYER})",
        ),
        ("python", sys.version.split()[0]),
    ]
    for dist in VERSIONED:
        v = _version(dist)
        if v is not None:
            items.append((dist, v))
    items.append(("symgrad", f"{_version('symgrad') or 'not installed'}, {_source_state()}"))
    env = [f"{k}={os.environ[k]}" for k in ENV_VARS if k in os.environ]
    items.append(
        ("environment", ", ".join(env) if env else "none of the thread/cache variables set")
    )
    return items


def markdown() -> str:
    return md_table(["item", "value"], describe())


class CpuMeter:
    """How busy the machine was during a run, apart from us: other processes' share of all
    cores (from /proc/stat minus our own and our children's CPU time) and the hypervisor's steal.
    On a shared 2-core machine this says how much to trust the parallel timings.
    """

    def __init__(self) -> None:
        self.start = cpu_counters()
        self.t0 = time.monotonic()

    def summary(self) -> str:
        end = cpu_counters()
        if self.start is None or end is None:
            return "unknown"
        total, idle, steal, own = (b - a for a, b in zip(self.start, end))
        if total <= 0:
            return "unknown"
        others = others_share(self.start, end)
        return (
            f"{100 * others:.0f}% of all cores busy with other processes (hypervisor steal "
            f"{100 * steal / total:.0f}%), {100 * own / total:.0f}% used by this benchmark "
            f"({time.monotonic() - self.t0:.0f} s wall)"
        )

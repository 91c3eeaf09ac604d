"""Runs ``python -m benchmarks --quick`` in a child process with its own cache, as the benchmark
tests do: one place for the command, its environment and its time limit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_quick(tmp_path: Path, *args: str) -> tuple[str, str]:
    """(the report written, the printed output) of a quick run; fails with the child's stderr."""
    out = tmp_path / "RESULTS.md"
    env = dict(os.environ, SYMGRAD_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", *args, "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out.read_text(encoding="utf-8"), proc.stdout


def section(report: str, name: str) -> str:
    """The text between a workload's section markers in a report."""
    return report.split(f"<!-- section {name} -->")[1].split(f"<!-- end {name} -->")[0]

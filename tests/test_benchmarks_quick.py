"""The benchmark never rots: ``python -m benchmarks --quick`` runs end to end, writes its report
with every table, and every contender that ran agrees with the hand-written NumPy reference."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_runs_and_agrees(tmp_path):
    out = tmp_path / "RESULTS.md"
    env = dict(os.environ, SYMGRAD_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = out.read_text(encoding="utf-8")
    assert report.strip() in proc.stdout  # printed as well as written

    for heading in (
        "## Machine",
        "## Targets",
        "### Time per call",
        "### Agreement with the hand-written NumPy reference",
        "### Cold compile and warm start",
    ):
        assert heading in report
    assert "python -m benchmarks --quick" in report
    for item in ("| CPU |", "| cores |", "| NumPy BLAS |", "| numba |", "| sympy |", "| date |"):
        assert item in report

    # every required contender ran (peers may be skipped, never silently dropped)
    timing = report.split("### Time per call")[1].split("### Agreement")[0]
    for label in (
        "hand-written NumPy",
        "hand-written Numba prange loop",
        "lambdify",
        "symgrad value_and_grad",
        "symgrad value_and_grad(out=)",
        "symgrad forward",
    ):
        rows = [ln for ln in timing.splitlines() if label in ln]
        assert rows, f"no timing row for {label}"
        assert not any("failed" in r or "skipped" in r for r in rows), rows
    for peer in ("JAX", "PyTorch", "PyTensor"):
        assert peer in timing

    # agreement: columns 3-6 are value abs/rel and gradient abs/rel against the reference
    agreement = report.split("### Agreement with the hand-written NumPy reference")[1]
    agreement = agreement.split("###")[0]
    rows = [
        ln
        for ln in agreement.splitlines()
        if ln.startswith("| ") and "max abs" not in ln and "| --- |" not in ln
    ]
    assert len(rows) >= 6
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        for cell in cells[2:6]:
            if cell != "—":
                assert float(cell) < 1e-10, row

    # every target row carries a verdict
    targets = report.split("## Targets")[1].split("\n## ")[0]
    assert re.search(r"\*\*(met|missed)\*\*", targets)

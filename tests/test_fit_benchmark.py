"""H2 never rots: ``python -m benchmarks --quick --only fit`` fits the tiny mixture end to end,
symgrad's fit converges, and where JAX is installed both fits reach the same optimum."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_h2_fits_and_agrees(tmp_path):
    out = tmp_path / "RESULTS.md"
    env = dict(os.environ, SYMGRAD_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "fit", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    section = out.read_text(encoding="utf-8").split("<!-- section fit -->")[1]
    section = section.split("<!-- end fit -->")[0]
    assert "## H2: a trust-exact mixture fit" in section
    targets = section.split("### Targets")[1].split("\n\n")[2]
    converged = [ln for ln in targets.splitlines() if "fit converged" in ln]
    assert converged and "**met**" in converged[0]
    rows = [ln for ln in section.splitlines() if ln.startswith(("| symgrad (", "| JAX ("))]
    assert rows and rows[0].startswith("| symgrad (")
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[7] == "yes", row  # converged
        assert float(cells[9]) <= 1e-6, row  # max |Δθ| from symgrad's optimum
    if importlib.util.find_spec("jax") is not None:
        assert len(rows) == 2
        agree = [ln for ln in targets.splitlines() if "optimum agrees" in ln]
        assert agree and "**met**" in agree[0]

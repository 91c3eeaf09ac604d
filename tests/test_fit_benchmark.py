"""H2 never rots: ``python -m benchmarks --quick --only fit`` fits the tiny mixture end to end,
symgrad's fit converges, and where JAX is installed both fits reach the same optimum."""

from __future__ import annotations

import importlib.util

from quick_benchmarks import run_quick
from quick_benchmarks import section as quick_section


def test_quick_h2_fits_and_agrees(tmp_path):
    report, _ = run_quick(tmp_path, "--only", "fit")
    section = quick_section(report, "fit")
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

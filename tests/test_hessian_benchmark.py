"""H1 never rots: ``python -m benchmarks --quick --only hessian`` runs end to end, every
contender that ran gives the same Hessian, and symgrad's rows are there on both modes."""

from __future__ import annotations

import re

from quick_benchmarks import run_quick
from quick_benchmarks import section as quick_section


def test_quick_h1_runs_and_every_contender_agrees(tmp_path):
    report, _ = run_quick(tmp_path, "--only", "hessian")
    section = quick_section(report, "hessian")
    assert "## H1: Hessians of a mixture likelihood" in section
    rows = [ln for ln in section.splitlines() if re.match(r"\| (2|8) \| ", ln)]
    for label in ("symgrad auto", "symgrad instant"):
        assert sum(label in r for r in rows) == 2, label
    contenders = ("JAX", "SymEngine", "CasADi", "symgrad")
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        if cells[1].startswith(contenders):  # the contenders' table: last, the agreement
            assert float(cells[-1]) < 1e-8, row
    assert "### symgrad alone" in section and "hvp ÷ value_and_grad" in section
    targets = section.split("### Targets")[1].split("###")[0]
    agreement = [ln for ln in targets.splitlines() if "agrees" in ln]
    assert agreement and not any("**missed**" in ln for ln in agreement)
    if any(r.split("|")[2].strip().startswith(contenders[:3]) for r in rows):  # peers installed
        assert "first Hessian ÷ the fastest contender" in targets  # issue 16's time targets

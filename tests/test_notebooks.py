"""The notebooks run top to bottom without an error (executed with nbclient, as Jupyter would).

``python tests/test_notebooks.py --write`` executes them and stores their outputs in place, so
that the pictures show without running them (``--write 05_explore``: that one only).
"""

from __future__ import annotations

import html
import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
#: Seconds one cell may take (the first compile of a kernel included).
CELL_TIMEOUT = 300


def execute(path: Path):
    """The notebook at ``path``, executed in its folder; raises on any cell's error. Its kernel
    imports this checkout's packages (``PYTHONPATH``), not whichever one pip installed."""
    import os

    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), before]))
    try:
        client.execute()
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before
    return notebook


def test_the_five_notebooks_are_there():
    names = [p.stem for p in NOTEBOOKS]
    assert names == [
        "01_backprop_by_hand",
        "02_fused_vs_unfused",
        "03_two_layer_net",
        "04_second_order",
        "05_explore",
    ]


def test_notebook_5_steps_through_the_lectures_examples_1_to_3():
    """Its stored outputs (what a reader sees without running it) hold the lecture's numbers:
    example 1's backward, the neuron's 1/x gate (-0.53) beside the sigmoid gate, the max gate
    routing the upstream 2; and each view is the stepper page."""
    cells = [c for c in stored(ROOT / "notebooks" / "05_explore.ipynb").cells
             if c.cell_type == "code"]  # fmt: skip
    shown = "\n".join(output_text(c) for c in cells)
    assert "mul gate: upstream 1.00 × local z = -4.00 → -4.00 to t0" in shown
    assert "add gate: upstream -4.00 × local 1 = 1.00 → -4.00 to x" in shown
    assert "div gate: upstream 1.00 × local -t7 / t6 = -0.53 → -0.53 to t6" in shown
    assert "sigmoid gate: upstream 1.00 × local t4 * sigmoid(-t3) = 0.20 → 0.20 to t3" in shown
    assert "upstream 2.00 × local heaviside(z - w, 0.5) = 1.00 → 2.00 to z" in shown
    assert "x fans out to 2 gates: its gradient 1.00 + 3.00 = 4.00" in shown
    pages = [o for c in cells for o in c.get("outputs", ()) if "text/html" in o.get("data", {})]
    assert len(pages) >= 4
    assert all(o["data"]["text/html"].startswith("<iframe srcdoc=") for o in pages)


def test_notebook_2_steps_fused_beside_unfused():
    code = [c for c in stored(NOTEBOOKS[1]).cells if c.cell_type == "code"]
    (cell,) = [c for c in code if "symgrad.explore(neuron, at=point)" in c.source]
    assert cell.outputs[0]["data"]["text/html"].startswith("<iframe srcdoc=")
    shown = "\n".join(output_text(c) for c in code)
    assert "| sigmoid gate: t4 = sigmoid(t3) = sigmoid(1.00) = 0.73" in shown


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path):
    pytest.importorskip("nbclient")
    notebook = execute(path)
    errors = [o for c in notebook.cells for o in c.get("outputs", ()) if o.output_type == "error"]
    assert not errors
    # committed with outputs: every code cell of the stored notebook has run
    import nbformat

    stored = nbformat.read(path, as_version=4)
    assert all(c.execution_count for c in stored.cells if c.cell_type == "code")


def stored(path: Path):
    import nbformat

    return nbformat.read(path, as_version=4)


def output_text(cell) -> str:
    """What a reader sees of a cell's stored outputs, as plain text (HTML's tags dropped)."""
    parts = []
    for o in cell.get("outputs", ()):
        parts.append(o.get("text", ""))
        for kind, data in o.get("data", {}).items():
            if kind == "text/plain":
                parts.append(data)
            elif kind == "text/html":
                parts.append(html.unescape(re.sub(r"<[^>]+>", "", data)))
    return "\n".join(parts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_notebooks_import_symgrad_as_the_readme_does(path):
    code = "\n".join(c.source for c in stored(path).cells if c.cell_type == "code")
    assert "import symgrad" in code
    assert not re.search(r"^\s*(import|from) (compiler|runtime)\b", code, re.M)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_module_a_stored_output_imports_exists(path):
    """Stored outputs are what a reader sees without running anything: the generated source they
    show must import modules that exist (runtime.scalar, removed by issue 14, once stayed)."""
    shown = "\n".join(output_text(c) for c in stored(path).cells if c.cell_type == "code")
    modules = set(re.findall(r"^from ([A-Za-z_][\w.]*) import ", shown, re.M))
    for module in sorted(modules):
        assert importlib.util.find_spec(module) is not None, (path.stem, module)


def test_notebook_3_shows_the_measured_figure_the_results_hold():
    """Numbers shown to users come from the measured run (benchmarks/RESULTS.md), as the README's."""
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8").splitlines()
    row = next(ln for ln in results if "F3 symgrad ÷ hand-written NumPy (sigmoid" in ln)
    (cell,) = [c for c in stored(NOTEBOOKS[2]).cells if "measured:" in output_text(c)]
    assert f"python -m benchmarks --only peers measured: {row.split('|')[3].strip()}" in (
        output_text(cell)
    )


if __name__ == "__main__":
    if sys.argv[1:2] != ["--write"]:
        sys.exit("usage: python tests/test_notebooks.py --write [notebook names, e.g. 05_explore]")
    import nbformat

    chosen = [p for p in NOTEBOOKS if not sys.argv[2:] or p.stem in sys.argv[2:]]
    for path in chosen:
        nbformat.write(execute(path), path)
        print("wrote", path)

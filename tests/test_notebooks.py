"""The notebooks run top to bottom without an error (executed with nbclient, as Jupyter would).

``python tests/test_notebooks.py --write`` executes them and stores their outputs in place, so
that the pictures show without running them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
#: Seconds one cell may take (the first compile of a kernel included).
CELL_TIMEOUT = 300


def execute(path: Path):
    """The notebook at ``path``, executed in its folder; raises on any cell's error."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    return notebook


def test_the_three_notebooks_are_there():
    names = [p.stem for p in NOTEBOOKS]
    assert names == ["01_backprop_by_hand", "02_fused_vs_unfused", "03_two_layer_net"]


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


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_notebooks.py --write")
    import nbformat

    for path in NOTEBOOKS:
        nbformat.write(execute(path), path)
        print("wrote", path)

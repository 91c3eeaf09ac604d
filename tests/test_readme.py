"""The README's Python examples run as written, in order, in one namespace (as a reader would
paste them), and the first one prints what the README says it prints."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_the_readme_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything an example writes lands here
    blocks = python_blocks()
    assert len(blocks) >= 5
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)


def test_the_worked_example_shows_the_lecture_numbers():
    namespace: dict = {}
    exec(python_blocks()[0], namespace)
    k = namespace["k"]
    assert k.inputs == ("x", "y", "z")
    assert k(x=-2, y=5, z=-4) == -12.0
    assert k.grad(x=-2, y=5, z=-4) == {"x": -4.0, "y": -4.0, "z": 3.0}
    assert k.value_and_grad(-2, 5, -4, seed=2.0) == (-12.0, {"x": -8.0, "y": -8.0, "z": 6.0})

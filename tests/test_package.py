"""``import symgrad``: the public API in one import, and a clear error when another
distribution's ``compiler`` (PyPI has one) shadows symgrad's own package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import compiler
import runtime
import symgrad

ROOT = Path(__file__).resolve().parent.parent


def test_every_public_name_resolves_to_the_packages_own_object():
    for name in symgrad.__all__:
        value = getattr(symgrad, name)
        if hasattr(compiler, name) and name != "__version__":
            assert value is getattr(compiler, name), name
        elif hasattr(runtime, name):
            assert value is getattr(runtime, name), name
    assert symgrad.__version__ == compiler.__version__


def test_the_lecture_example_through_symgrad():
    k = symgrad.compile_gradient("(x + y) * z")
    assert k.value_and_grad(x=-2, y=5, z=-4) == (-12.0, {"x": -4.0, "y": -4.0, "z": 3.0})


def test_an_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        symgrad.nope  # noqa: B018


@pytest.mark.parametrize("package", ["compiler", "runtime"])
def test_a_shadowing_package_is_named_in_the_error(tmp_path, package):
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("VERSION = 'someone else'\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    run = subprocess.run(
        [sys.executable, "-c", "import symgrad"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    assert f"the package '{package}' imported from {tmp_path / package}" in run.stderr
    assert "is not symgrad's" in run.stderr

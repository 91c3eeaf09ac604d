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


# ------------------------------------------------------------------ the set-up (issue 13)
ROOT = README.parent


def setup_commands() -> list[str]:
    """The set-up section's commands, as a reader copies them (comments dropped)."""
    section = README.read_text(encoding="utf-8").split("## Set-up")[1].split("\n## ")[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


#: What the set-up checks for before installing, and what it installs (Debian's packages): dot
#: draws the graphs, Chromium and its driver run the explorer's browser tests (tests/test_explore.py).
GUARD = "command -v dot >/dev/null && command -v chromedriver >/dev/null"
APT = "apt-get update && apt-get install -y graphviz chromium chromium-driver"


def test_the_set_up_is_two_commands_that_update_apt_before_installing_graphviz():
    first, tests = setup_commands()
    # a fresh Debian has empty package lists: without the update, "Unable to locate package";
    # where dot and chromedriver are installed already, apt is skipped (no root needed)
    assert first == f'{GUARD} || {{ {APT}; }} && pip install -e ".[dev]" && symgrad'
    assert tests == 'pip install -e ".[dev]" && python -m pytest'


def test_the_browser_tests_name_the_packages_the_set_up_installs():
    """When Chromium cannot start, tests/test_explore.py fails naming the packages to install:
    the ones the README's set-up installs."""
    text = (ROOT / "tests" / "test_explore.py").read_text(encoding="utf-8")
    named = re.search(r"PACKAGES = .*?`(chromium [^`]*)`", text, re.S).group(1)
    assert named.split() == APT.split("install -y ")[1].split()[1:]
    assert "pytest.skip" not in text  # a browser test that cannot start Chromium fails


def test_the_notebooks_have_an_extra_and_a_readme_line():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extra = " ".join(project["optional-dependencies"]["notebooks"])
    assert "jupyterlab" in extra and "ipykernel" in extra and "matplotlib" in extra
    section = README.read_text(encoding="utf-8").split("## Set-up")[1].split("\n## ")[0]
    assert '`pip install -e ".[notebooks]" && jupyter lab notebooks/`' in section


def test_every_test_dependency_is_in_the_dev_extra():
    """Nothing may rely on what an earlier session left installed: SciPy (Numba's np.dot in the
    quick benchmark), the notebook runner and the property tests come with ``.[dev]``."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    dev = {re.split(r"[<>=\[ ]", r)[0] for r in project["optional-dependencies"]["dev"]}
    assert {"pytest", "hypothesis", "ruff", "scipy", "nbclient", "nbformat", "ipykernel"} <= dev
    assert {"matplotlib"} <= dev  # the notebooks plot


def test_ci_runs_the_readmes_commands_word_for_word():
    first, tests = setup_commands()
    commands = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    apt, _, rest = first.partition(' && pip install -e ".[dev]"')
    assert apt in commands  # skipped where dot and chromedriver are
    assert 'pip install -e ".[dev]"' + rest in commands  # the main job
    assert commands[-1] == tests  # the README's test command, last, after its install steps
    assert commands.index(apt) < commands.index('pip install -e ".[dev]"' + rest)


def test_no_test_assumes_one_vector_width():
    """CI machines are AVX2 (4 doubles a vector) or AVX-512 (8): a test asserts "vectorised"
    (``<N x double>``, ``@llvm.fma.v\\d+f64``), never one width."""
    one_width = re.compile(r"v(2|4|8|16)f(32|64)\b|<(2|4|8|16) x (double|float)>")
    here = Path(__file__).resolve()
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if path != here:
            text = path.read_text(encoding="utf-8")
            assert not one_width.search(text), (path.name, one_width.search(text).group())


def test_the_readmes_first_hour_figures_are_the_measured_ones():
    """The README quotes the first-hour benchmark's ratios from benchmarks/RESULTS.md's FH
    section (the same run), never figures of its own."""
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    section = results.split("<!-- section first_hour -->")[1].split("<!-- end first_hour -->")[0]
    runs = [
        [float(r) for r in m.split(", ")]
        for m in re.findall(r"every run's per-call time / NumPy's \|[^|]*\|[^|]*\(runs: ([^)]*)\)", section)
    ]  # fmt: skip
    assert len(runs) == 2  # Rosenbrock and the Gaussian NLL
    first = [r[0] for r in runs]
    later = [x for r in runs for x in r[1:]]
    text = README.read_text(encoding="utf-8")
    quoted = re.search(r"first run costs ([\d.]+)–([\d.]+)× NumPy's per call.*?later runs "
                       r"([\d.]+)–([\d.]+)×", text, re.S)  # fmt: skip
    assert quoted, "the README's first-hour sentence"
    got = [float(q) for q in quoted.groups()]
    assert got == [min(first), max(first), min(later), max(later)]

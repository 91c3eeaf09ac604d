"""The ``symgrad`` command, run as a user runs it: in a child process, reading its output.

Expected numbers are the lecture's (shared/LECTURE.md, examples 1 and 2), not symgrad's own.
All invocations start together in one fixture (they share a temporary kernel cache), so the
file's wall time is that of the slowest few, not the sum.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

NEURON_VALUE = 0.731058578630
NEURON_GRADS = {
    "w0": -0.196611933241,
    "x0": 0.393223866483,
    "w1": -0.393223866483,
    "x1": -0.589835799724,
    "w2": 0.196611933241,
}
LANGUAGE = (
    "exp log log1p expm1 sqrt sin cos tan tanh abs sign sigmoid relu maximum minimum pow "
    "heaviside xlogy"
).split()

RUNS = {
    "neuron": [],
    "neuron_no_fuse": ["--no-fuse"],
    "example1": ["(x + y) * z", "--at", "x=-2,y=5,z=-4"],
    "example1_wrt_source": ["(x + y) * z", "--at=x=-2,y=5,z=-4", "--wrt", "x,y", "--source"],
    "leading_minus": ["-x * y", "--at", "x=3,y=2"],
    "bad_expression": ["x +* y", "--at", "x=1,y=2"],
    "hostile_expression": ["__import__('os').system('echo pwned')", "--at", "x=1"],
    "missing_at": ["(x + y) * z"],
    "bad_value": ["x * y", "--at", "x=1,y=abc"],
    "bad_pair": ["x * y", "--at", "x=1,y"],
    "missing_input": ["x * y", "--at", "x=1"],
    "unknown_input": ["x * y", "--at", "x=1,y=2,z=3"],
    "unknown_wrt": ["x * y", "--at", "x=1,y=2", "--wrt", "q"],
    "repeated_at": ["x * y", "--at", "x=1,y=2,x=3"],
    "unwritable_draw": ["x * y", "--at", "x=1,y=2", "--draw", "/nonexistent-symgrad/g.svg"],
    "draw_format": ["x * y", "--at", "x=1,y=2", "--draw", "g.jpg"],
    "unwritable_explore": ["x * y", "--at", "x=1,y=2", "--explore", "/nonexistent-symgrad/x.html"],
    "empty_expression": ["", "--at", "x=1"],
    "help": ["--help"],
    "unknown_option": ["--frobnicate"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    env = {**os.environ, "SYMGRAD_CACHE_DIR": str(tmp_path_factory.mktemp("cli-cache"))}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "runtime.cli", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for name, argv in RUNS.items()
    }
    done = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=180)
        done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done


def numbers(stdout: str) -> tuple[float, dict[str, float]]:
    """The value line ``f(...) = v`` and the ``df/dname = g`` lines."""
    value = float(re.search(r"^f\(.*\) = (\S+)$", stdout, re.M).group(1))
    grads = {m[0]: float(m[1]) for m in re.findall(r"^\s+df/d(\S+) = (\S+)$", stdout, re.M)}
    return value, grads


def section(stdout: str, title: str) -> list[str]:
    """The indented lines under ``title:``."""
    lines = stdout.split(f"\n{title}:\n", 1)[1].splitlines()
    out = []
    for line in lines:
        if not line.startswith("  "):
            break
        out.append(line.strip())
    return out


def ok(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    return run.stdout


def refused(run: subprocess.CompletedProcess) -> str:
    """Exit status 2, nothing on stdout, one line on stderr, no traceback."""
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert run.stdout == ""
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 or lines[0].startswith("usage:") and len(lines) == 2, run.stderr
    assert lines[-1].startswith("symgrad: error: ")
    return lines[-1]


# --------------------------------------------------------------------------- the main job
@pytest.mark.parametrize("name", ["neuron", "neuron_no_fuse"])
def test_no_expression_runs_the_lecture_neuron(runs, name):
    out = ok(runs[name])
    value, grads = numbers(out)
    assert value == pytest.approx(NEURON_VALUE, abs=1e-12)
    assert grads.keys() == NEURON_GRADS.keys()
    for k, expected in NEURON_GRADS.items():
        assert grads[k] == pytest.approx(expected, abs=1e-12), k
    assert "w0=2,x0=-1,w1=-3,x1=-2,w2=-3" in out


def test_neuron_prints_both_graphs(runs):
    out = ok(runs["neuron_no_fuse"])
    forward = section(out, "forward graph")
    # Unfused, the lecture's eight gates: *, *, +, +, *(-1), exp, +1, 1/x, then the return.
    assert len(forward) == 9 and forward[-1].startswith("return ")
    assert any("exp(" in line for line in forward)
    assert not any("sigmoid(" in line for line in forward)
    backward = section(out, "backward graph")
    assert any(line.startswith("# backward") for line in backward)
    assert "seed" in "\n".join(backward)


def test_example_one(runs):
    out = ok(runs["example1"])
    assert numbers(out) == (-12.0, {"x": -4.0, "y": -4.0, "z": 3.0})
    assert section(out, "forward graph") == ["t0 = x + y", "t1 = t0 * z", "return t1"]


def test_wrt_selects_gradients_and_source_prints_valid_python(runs):
    out = ok(runs["example1_wrt_source"])
    assert numbers(out) == (-12.0, {"x": -4.0, "y": -4.0})
    source = out.split("\ngenerated source:\n", 1)[1]
    assert "njit" in source
    compile(source, "<generated>", "exec")


def test_expression_may_start_with_a_minus(runs):
    assert numbers(ok(runs["leading_minus"])) == (-6.0, {"x": -2.0, "y": -3.0})


def test_explore_writes_the_stepper_page(tmp_path):
    """``symgrad --explore out.html``: the lecture's neuron, fused beside unfused, its first
    backward step the lecture's 1/x gate (-0.53)."""
    run = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "--explore", "out.html"],
        capture_output=True, text=True, cwd=tmp_path, timeout=180,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "explorer: out.html" in run.stdout
    page = (tmp_path / "out.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and 'id="sg-next"' in page
    assert 'data-name="unfused"' in page and 'data-name="fused"' in page
    assert "div gate: upstream 1.00 × local -t7 / t6 = -0.53 → -0.53 to t6" in page
    assert "<script src=" not in page and "http" not in page.split("<svg")[0]  # self-contained


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "name, words",
    [
        ("bad_expression", ["'*'", "column 3"]),
        ("hostile_expression", ["named functions", "column 0"]),
        ("missing_at", ["--at", "x, y, z"]),
        ("bad_value", ["'abc'", "not a number"]),
        ("bad_pair", ["name=value", "'y'"]),
        ("missing_input", ["missing", "'y'"]),
        ("unknown_input", ["unknown", "'z'"]),
        ("unknown_wrt", ["wrt", "'q'"]),
        ("repeated_at", ["x", "twice"]),
        ("unwritable_draw", ["cannot write", "/nonexistent-symgrad/g.svg"]),
        ("draw_format", ["format", "g.jpg", ".svg"]),
        ("unwritable_explore", ["cannot write the explorer", "/nonexistent-symgrad/x.html"]),
        ("empty_expression", ["empty"]),
        ("unknown_option", ["--frobnicate"]),
    ],
)
def test_errors_exit_2_with_one_line(runs, name, words):
    line = refused(runs[name])
    for w in words:
        assert w in line, line


def test_hostile_expression_is_not_run(runs):
    assert "pwned" not in runs["hostile_expression"].stdout


# --------------------------------------------------------------------------- help
def test_help_explains_it_all(runs):
    text = ok(runs["help"])
    for needle in ["--at", "--wrt", "--no-fuse", "--source", "--explore", "expression",
                   "SYMGRAD_CACHE_DIR"]:  # fmt: skip
        assert needle in text, needle
    assert "1/(1+exp(-(w0*x0+w1*x1+w2)))" in text  # the default job
    assert "exit status" in text and "2" in text
    for name in LANGUAGE:
        assert re.search(rf"\b{name}\b", text), name
    for words in ["forward graph", "backward graph", "gradient"]:
        assert words in text, words


def test_console_script_is_installed():
    script = shutil.which("symgrad")
    assert script, "the symgrad console script is not on PATH (pip install -e .)"
    run = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "usage: symgrad" in run.stdout


# --------------------------------------------------------------------------- a well-behaved filter
def test_a_closed_pipe_ends_quietly():
    """``symgrad --source | head -1``: the reader goes away before symgrad writes; it stops
    without a traceback, with the status a process killed by SIGPIPE reports (141)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "--source"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    proc.stdout.close()  # before the child has imported anything: its first write fails
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=180) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err

"""Drawing is bounded: Graphviz's ``dot`` runs under a time limit in a process group of its own,
killed whole on timeout or Ctrl-C, and a graph too big to lay out is refused before ``dot`` runs.

Every case runs in a child process with a ``timeout=``, so a hang fails the test instead of
hanging the suite; a fake ``dot`` (a shell script that starts a sleeping child) stands in for a
layout that never ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import compiler

ROOT = Path(__file__).resolve().parents[2]


def interruptible() -> None:
    """In a child before it runs: Ctrl-C as a terminal gives it. A suite started in the
    background by a non-interactive shell ignores SIGINT, and children inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(autouse=True)
def _python_handles_ctrl_c(monkeypatch):
    """This process too: Python's KeyboardInterrupt handler, whatever the suite inherited."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def child(code: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python, with this tree first on the path."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout,
        cwd=ROOT, preexec_fn=interruptible,
    )  # fmt: skip


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its reaper counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def all_gone(pids: list[int], within: float = 10.0) -> bool:
    """Every process has exited, allowing ``within`` seconds for a SIGKILL sent to a group to
    land: on a loaded machine a killed grandchild can still show as running for a moment."""
    deadline = time.monotonic() + within
    while not all(gone(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def slow_dot(tmp_path):
    """A ``dot`` on PATH that never finishes: it records its pid and its child's, then waits."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "dot"
    script.write_text(
        "#!/bin/sh\n"
        f'echo $$ > "{tmp_path}/dot.pid"\n'
        "sleep 300 &\n"
        f'echo $! > "{tmp_path}/sleep.pid"\n'
        "wait\n"
    )
    script.chmod(0o755)
    pids = (tmp_path / "dot.pid", tmp_path / "sleep.pid")
    yield {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, pids
    for f in pids:  # whatever happened, leave nothing behind
        if f.exists() and f.read_text().strip():
            try:
                os.kill(int(f.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass


def recorded(pids) -> list[int]:
    return [int(f.read_text()) for f in pids if f.exists() and f.read_text().strip()]


def test_a_slow_dot_is_killed_with_its_group_at_the_timeout(slow_dot):
    env, pids = slow_dot
    run = child(
        "import compiler\n"
        "try:\n"
        "    compiler.draw('(x + y) * z', at=dict(x=-2, y=5, z=-4)).svg()\n"
        "except compiler.DrawError as e:\n"
        "    print('DrawError:', e)\n",
        {**env, "SYMGRAD_DRAW_TIMEOUT": "1"},
        timeout=60,
    )
    assert run.stdout.startswith("DrawError:"), run.stderr
    assert "within 1 s" in run.stdout and "SYMGRAD_DRAW_TIMEOUT" in run.stdout
    found = recorded(pids)
    assert len(found) == 2  # dot and the child it started
    assert all_gone(found), found


def test_the_timeout_can_be_given_to_draw(slow_dot):
    env, pids = slow_dot
    run = child(
        "import compiler\n"
        "try:\n"
        "    compiler.draw('x * y', timeout=0.5).save('/dev/null/never.png')\n"
        "except compiler.DrawError as e:\n"
        "    print('DrawError:', e)\n",
        env,
        timeout=60,
    )
    assert run.stdout.startswith("DrawError:") and "within 0.5 s" in run.stdout, run.stderr
    assert all_gone(recorded(pids))


def test_ctrl_c_during_layout_kills_dot(slow_dot):
    env, pids = slow_dot
    proc = subprocess.Popen(
        [sys.executable, "-c", "import compiler; compiler.draw('x * y').svg()"],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        preexec_fn=interruptible,
    )
    try:
        deadline = time.monotonic() + 60
        while len(recorded(pids)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(recorded(pids)) == 2, "the fake dot never started"
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
    assert "KeyboardInterrupt" in err  # the interrupt reaches the caller...
    assert all_gone(recorded(pids))  # ...after dot's group was killed


def test_a_huge_graph_is_refused_before_dot_runs():
    # 200 terms sharing 22 inputs: dot would take many minutes (100 terms took over 100 s)
    run = child(
        "import compiler\n"
        "text = ' + '.join(f'sin(x{i % 10} * y{i % 7}) * exp(z{i % 5})' for i in range(200))\n"
        "try:\n"
        "    compiler.draw(text).svg()\n"
        "except compiler.DrawError as e:\n"
        "    print('DrawError:', e)\n",
        timeout=60,
    )
    assert run.stdout.startswith("DrawError:"), run.stderr
    assert "too big" in run.stdout and "limit of 3,000" in run.stdout
    assert "nodes" in run.stdout and "edges" in run.stdout


def test_the_cli_refuses_a_huge_drawing_in_one_line(tmp_path):
    text = " + ".join(f"sin(x{i % 10} * y{i % 7}) * exp(z{i % 5})" for i in range(200))
    at = ",".join(f"{v}{i}=0.5" for v, n in (("x", 10), ("y", 7), ("z", 5)) for i in range(n))
    run = subprocess.run(
        [sys.executable, "-m", "runtime.cli", text, "--at", at, "--draw", str(tmp_path / "g.svg")],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "SYMGRAD_CACHE_DIR": str(tmp_path / "c")},
    )  # fmt: skip
    assert run.returncode == 2 and run.stdout == "", run.stderr
    assert run.stderr.count("\n") == 1 and "too big" in run.stderr
    assert not (tmp_path / "g.svg").exists()


def test_a_bad_timeout_setting_is_an_error():
    run = child(
        "import compiler\n"
        "try:\n"
        "    compiler.draw('x * y').svg()\n"
        "except compiler.DrawError as e:\n"
        "    print('DrawError:', e)\n",
        {"SYMGRAD_DRAW_TIMEOUT": "soon"},
        timeout=60,
    )
    assert run.stdout.startswith("DrawError:") and "'soon'" in run.stdout, run.stderr


def test_ctrl_c_in_the_cli_while_drawing_is_one_line(slow_dot, tmp_path):
    env, pids = slow_dot
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "x * y", "--at", "x=1,y=2", "--draw",
         str(tmp_path / "g.svg")],
        env={**os.environ, "PYTHONPATH": str(ROOT), "SYMGRAD_CACHE_DIR": str(tmp_path / "c"),
             **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        preexec_fn=interruptible,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while len(recorded(pids)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(recorded(pids)) == 2, "the fake dot never started"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and err == "symgrad: interrupted\n", err
    assert all_gone(recorded(pids))


def test_ctrl_c_while_dot_is_starting_still_kills_it(slow_dot, monkeypatch):
    """Ctrl-C after dot has started but before ``Popen`` has returned its handle (a loaded
    machine runs the child first: about 1 run in 5 of the CLI test above) left dot and its child
    running, as nothing held their pid. The interrupt is now held back until the handle exists."""
    from compiler.viz import render

    env, pids = slow_dot
    monkeypatch.setenv("PATH", env["PATH"])

    class InterruptedWhileStarting(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            deadline = time.monotonic() + 60
            while len(recorded(pids)) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            signal.raise_signal(signal.SIGINT)  # as a Ctrl-C landing inside Popen would

    monkeypatch.setattr(render.subprocess, "Popen", InterruptedWhileStarting)
    with pytest.raises(KeyboardInterrupt):
        compiler.draw("x * y").svg()
    assert len(recorded(pids)) == 2
    assert all_gone(recorded(pids))

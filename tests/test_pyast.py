"""symgrad's parses of Python (the text language on the user's thread, the audit of generated
code on the background compile thread) never run at once: CPython 3.11's AST constructor keeps
its recursion depth in state every thread shares (cpython gh-106905)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RACE = textwrap.dedent(
    """
    import gc, threading, time
    import compiler
    from compiler.codegen import audit
    from compiler.frontend import text

    gc.set_threshold(50, 1, 1)  # collections often, inside the AST constructor too

    class Noisy:  # a finaliser runs Python code, where the interpreter may switch threads
        def __del__(self):
            sum(range(50))
            cycle()

    def cycle():
        a = Noisy.__new__(Noisy)
        b = [a]
        b.append(b)

    source = compiler.compile_gradient("exp(x)*sin(y) + x*y", mode="instant").source
    expr = "+".join(f"exp(x*{i})*(y-{i})" for i in range(150))
    errors, stop = [], time.time() + 6

    def worker(parse):
        while time.time() < stop and not errors:
            try:
                for _ in range(20):
                    cycle()
                parse()
            except SystemError as e:
                errors.append(e)

    jobs = [lambda: text.parse(expr), lambda: audit.check_python(source)] * 2
    threads = [threading.Thread(target=worker, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("errors:", errors[:1])
    """
)


def test_parses_on_several_threads_never_corrupt_each_other():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-c", RACE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "errors: []", run.stdout  # before: a SystemError within 0.5 s


def test_the_background_thread_never_parses_python(tmp_path, monkeypatch):
    """The user's thread may be parsing its own code (IPython, pytest) while symgrad compiles
    behind it: so the audit of a module compiled in the background runs before it is queued."""
    import threading

    import numpy as np

    import compiler
    from compiler import pyast

    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path / "cache"))
    threads = []
    real = pyast.parse
    monkeypatch.setattr(
        pyast, "parse", lambda *a, **k: threads.append(threading.current_thread()) or real(*a, **k)
    )
    k = compiler.compile_gradient("x * tanh(y) + 13", mode="auto")
    k.value_and_grad(x=np.ones(10), y=2.0)  # a small call: answered now, compiled behind
    t = compiler.compile_gradient("sum(tanh(W @ v) * 13)", shapes={"W": (3, 2), "v": (2,)})
    t.value_and_grad(W=np.ones((3, 2)), v=np.ones(2))
    assert k.wait(120), [(j.state, repr(j.error)) for j in k._jobs.values()]
    assert t.wait(120), (t._job.state, repr(t._job.error))
    assert threads and all(th is threading.main_thread() for th in threads)

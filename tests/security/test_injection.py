"""No input reaches generated code as code: hostile text, titles, names, gates and shapes.

Every payload tries to create a marker file if it ever runs as Python (it is written to close a
string or a comment of the generated source: triple and single quotes, backslashes, newlines,
``\\r``, Unicode line separators, NUL; LLVM's ``;`` comments and ``"`` quoted names). It goes in
through every input path (text comments, SymPy symbol names, ``inputs=``, gate names and
definitions, dimension names of ``shapes=``) and every tier (compiled, instant, auto and its
background compile, the LLVM tier of large graphs and of sin, tensor programs, the CLI). The test
asserts that no marker appears and that the kernel computes the right value (checked by hand or
with NumPy) or refuses with one of symgrad's errors.

The kernel cache is this module's own temporary directory, shared by its tests, so a module one
test poisoned would be served to the next (the title was once not part of the cache key).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import sympy

import compiler
from compiler.errors import SymgradError
from runtime import cache

ROOT = Path(__file__).resolve().parents[2]

#: Each payload, with ``{p}`` the marker's path as a Python string literal.
PAYLOADS = {
    "triple-double": '"""+str(open({p},"w"))+"""',
    "triple-single": "'''+str(open({p},'w'))+'''",
    "double": '"+str(open({p},"w"))+"',
    "single": "'+str(open({p},'w'))+'",
    "backslash": '\\"""+str(open({p},"w"))+"""\\',
    "newline": '\nopen({p},"w")\n',
    "cr": '\ropen({p},"w")\r',
    "crlf-indent": '\r\n        open({p},"w")\r\n',
    "u2028": '\u2028open({p},"w")\u2028',
    "u0085": '\x85open({p},"w")\x85',
    "nul": '\x00"""+str(open({p},"w"))+"""',
    "llvm": '\n; x\n}}\ndeclare i32 @system(ptr)\n%"a b" = fadd double 0.0, 0.0 ; {p}',
}
TEXT_PAYLOADS = [k for k in PAYLOADS if k != "nul"]  # argv and the parser can't carry NUL

#: Points and expected values, worked out by hand: f = x * y at x = 2, y = 3.
X, Y = 2.0, 3.0


@pytest.fixture(scope="module")
def marks(tmp_path_factory):
    """The directory every marker would land in (shared: a module poisoned by one test and
    served to another writes there too); the kernel cache is the module's own."""
    directory = Path(tempfile.mkdtemp(prefix="sg", dir="/tmp"))  # short: titles were cut at 80
    cache_dir = tmp_path_factory.mktemp("cache")
    saved = os.environ.get("SYMGRAD_CACHE_DIR")
    os.environ["SYMGRAD_CACHE_DIR"] = str(cache_dir)
    yield directory
    if saved is None:
        os.environ.pop("SYMGRAD_CACHE_DIR", None)
    else:
        os.environ["SYMGRAD_CACHE_DIR"] = saved
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def payload(marks, request):
    """(name, text) of one payload aimed at a marker of its own."""
    name = request.param
    marker = marks / str(list(PAYLOADS).index(name))
    yield name, PAYLOADS[name].format(p=f'"{marker}"')
    ran = sorted(list(PAYLOADS)[int(m.name)] for m in marks.iterdir())
    for m in marks.iterdir():
        m.unlink()  # each test reports its own
    assert not ran, f"payloads ran: {ran}"


def run_all_entries(kernel, point: dict, value: float, grads: dict) -> None:
    """Every entry of a scalar kernel at ``point``: forward, value_and_grad and a vjp."""
    assert kernel(**point) == pytest.approx(value)
    v, g = kernel.value_and_grad(**point)
    assert v == pytest.approx(value)
    assert g == pytest.approx(grads)
    v, pullback = kernel.vjp(**point)
    assert pullback(1.0) == pytest.approx(grads)


def compute_or_refuse(make, check) -> None:
    """Build and check a kernel, or accept a refusal with one of symgrad's own errors."""
    try:
        kernel = make()
    except SymgradError:
        return
    check(kernel)


# ---------------------------------------------------------------------- text comments and titles
@pytest.mark.parametrize("mode", ["compiled", "instant", "auto"])
@pytest.mark.parametrize("payload", TEXT_PAYLOADS, indirect=True)
def test_text_comment(payload, mode):
    _, text = payload

    def check(kernel):
        run_all_entries(kernel, {"x": X, "y": Y}, X * Y, {"x": Y, "y": X})
        assert kernel.wait(timeout=300)
        run_all_entries(kernel, {"x": X, "y": Y}, X * Y, {"x": Y, "y": X})
        assert "open(" not in kernel.source

    compute_or_refuse(lambda: compiler.compile_gradient(f"x*y # {text}", mode=mode), check)


def big_text(comment: str = "") -> tuple[str, callable]:
    """More than LLVM_OPS ops (the compiled tier is LLVM's), and its NumPy twin."""
    terms = [f"(x + {k}) * (y - {k}) / ({k} + x * x)" for k in range(1, 30)]
    text = " + ".join(terms)

    def f(x, y):
        return sum((x + k) * (y - k) / (k + x * x) for k in range(1, 30))

    return text + (f" # {comment}" if comment else ""), f


def numeric_grads(f, x: float, y: float, h: float = 1e-6) -> dict:
    return {
        "x": (f(x + h, y) - f(x - h, y)) / (2 * h),
        "y": (f(x, y + h) - f(x, y - h)) / (2 * h),
    }


@pytest.mark.parametrize("mode", ["compiled", "auto"])
@pytest.mark.parametrize("payload", ["triple-double", "newline", "llvm"], indirect=True)
def test_text_comment_large_graph_on_the_llvm_tier(payload, mode):
    _, text = payload
    source, f = big_text(text)

    def check(kernel):
        for _ in range(2):  # auto: the instant tier, then LLVM's
            v, g = kernel.value_and_grad(x=X, y=Y)
            assert v == pytest.approx(f(X, Y))
            assert g == pytest.approx(numeric_grads(f, X, Y), rel=1e-6)
            assert kernel.wait(timeout=300)
        assert "@system" not in ir_code(kernel.llvm_source)

    compute_or_refuse(lambda: compiler.compile_gradient(source, mode=mode), check)


@pytest.mark.parametrize("payload", ["triple-double", "newline", "llvm"], indirect=True)
def test_text_comment_with_sin_on_the_llvm_tier(payload):
    _, text = payload

    def check(kernel):
        v, g = kernel.value_and_grad(x=X, y=Y)
        assert v == pytest.approx(np.sin(X) * Y)
        assert g == pytest.approx({"x": np.cos(X) * Y, "y": np.sin(X)})
        assert "@system" not in ir_code(kernel.llvm_source)

    compute_or_refuse(
        lambda: compiler.compile_gradient(f"sin(x) * y # {text}", mode="compiled"), check
    )


def ir_code(ir: str) -> str:
    """LLVM IR without its comments (a payload may show there, escaped, as text)."""
    return "\n".join(line.split(";", 1)[0] for line in ir.splitlines())


# ---------------------------------------------------------------------- SymPy symbol names
def sympy_kernel(name: str, mode: str, extra: str = ""):
    s, x = sympy.Symbol(name), sympy.Symbol("x")
    body = {"": s * x, "sin": sympy.sin(s) * x}[extra]
    return compiler.compile_gradient(body, mode=mode)


@pytest.mark.parametrize("mode", ["compiled", "instant", "auto"])
@pytest.mark.parametrize("payload", list(PAYLOADS), indirect=True)
def test_sympy_symbol_name(payload, mode):
    """A symbol's name is its input's name: it must work (and print) as data only."""
    _, name = payload
    kernel = sympy_kernel(name, mode)
    point = {name: X, "x": Y}
    run_all_entries(kernel, point, X * Y, {name: Y, "x": X})
    assert kernel.wait(timeout=300)
    run_all_entries(kernel, point, X * Y, {name: Y, "x": X})


@pytest.mark.parametrize(
    "payload", ["triple-double", "newline", "cr", "u2028", "llvm"], indirect=True
)
def test_sympy_symbol_name_on_the_llvm_tier(payload):
    _, name = payload
    kernel = sympy_kernel(name, "compiled", "sin")
    point = {name: X, "x": Y}
    run_all_entries(kernel, point, np.sin(X) * Y, {name: np.cos(X) * Y, "x": np.sin(X)})
    ir = kernel.llvm_source
    assert "@system" not in ir_code(ir) and '"' not in ir
    assert all(line.isascii() and line.isprintable() for line in ir.splitlines())


@pytest.mark.parametrize("payload", ["triple-double", "newline", "llvm"], indirect=True)
def test_declared_input_names(payload):
    """``inputs=`` may name inputs the text does not use: those names are data too."""
    _, name = payload
    make = lambda: compiler.compile_gradient("x*y", inputs=["x", "y", name], mode="compiled")  # noqa: E731
    compute_or_refuse(
        make,
        lambda k: run_all_entries(
            k, {"x": X, "y": Y, name: 1.0}, X * Y, {"x": Y, "y": X, name: 0.0}
        ),
    )


# ---------------------------------------------------------------------- gates
@pytest.mark.parametrize("payload", list(PAYLOADS), indirect=True)
def test_gate_name_is_refused(payload):
    _, text = payload
    with pytest.raises(compiler.GateError):
        compiler.register_gate(f"g{text}", "x*x")


@pytest.mark.parametrize("mode", ["compiled", "instant", "auto"])
@pytest.mark.parametrize("payload", ["triple-double", "newline", "cr"], indirect=True)
def test_gate_definition_comment(payload, mode):
    """A comment in a gate's definition never reaches a note, a listing or the source."""
    name, text = payload
    gate = "gate_" + name.replace("-", "_")
    try:
        compiler.register_gate(gate, f"x*x*x # {text}")
    except SymgradError:
        return
    try:
        kernel = compiler.compile_gradient(f"{gate}(x) * y", mode=mode)
        run_all_entries(kernel, {"x": X, "y": Y}, X**3 * Y, {"x": 3 * X**2 * Y, "y": X**3})
        assert kernel.wait(timeout=300)
        run_all_entries(kernel, {"x": X, "y": Y}, X**3 * Y, {"x": 3 * X**2 * Y, "y": X**3})
    finally:
        compiler.unregister_gate(gate)


# ---------------------------------------------------------------------- tensor programs
SHAPES = {"x": ("n",), "y": ("n",)}
XS, YS = np.array([1.0, 2.0, -0.5]), np.array([3.0, -1.0, 4.0])


def check_tensor(kernel, wait: bool = True) -> None:
    value, grads = kernel.value_and_grad(x=XS, y=YS)
    assert value == pytest.approx(float(np.sum(XS * YS)))
    assert grads["x"] == pytest.approx(YS) and grads["y"] == pytest.approx(XS)
    if wait:
        kernel.wait(timeout=300)
        value, grads = kernel.value_and_grad(x=XS, y=YS)
        assert value == pytest.approx(float(np.sum(XS * YS)))


@pytest.mark.parametrize("mode", ["compiled", "instant", "auto"])
@pytest.mark.parametrize("payload", TEXT_PAYLOADS, indirect=True)
def test_tensor_program_comment(payload, mode):
    _, text = payload
    compute_or_refuse(
        lambda: compiler.compile_gradient(f"sum(x * y) # {text}", shapes=SHAPES, mode=mode),
        check_tensor,
    )


@pytest.mark.parametrize("mode", ["compiled", "instant", "auto"])
@pytest.mark.parametrize("payload", ["triple-double", "newline", "u2028", "llvm"], indirect=True)
def test_tensor_sympy_symbol_name(payload, mode):
    _, name = payload
    s, x = sympy.Symbol(name), sympy.Symbol("x")
    kernel = compiler.compile_gradient(s * x, shapes={name: ("n",), "x": ("n",)}, mode=mode)
    value, grads = kernel.value_and_grad(**{name: XS, "x": YS})
    assert value == pytest.approx(XS * YS)
    assert grads[name] == pytest.approx(YS) and grads["x"] == pytest.approx(XS)


@pytest.mark.parametrize("payload", list(PAYLOADS), indirect=True)
def test_dimension_name_is_refused(payload):
    _, text = payload
    with pytest.raises(compiler.ShapeError):
        compiler.compile_gradient("sum(x * y)", shapes={"x": (f"n{text}",), "y": ("n",)})


@pytest.mark.parametrize("mode", ["compiled", "instant"])
def test_unicode_dimension_names(mode):
    shapes = {"x": ("λ",), "y": ("λ",)}
    check_tensor(compiler.compile_gradient("sum(x * y)", shapes=shapes, mode=mode), wait=False)


# ---------------------------------------------------------------------- processes and the CLI
def run(
    code: str, cache_dir: Path, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess:
    env = {**os.environ, "SYMGRAD_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, *(["-c", code] if code else []), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )


@pytest.mark.parametrize("payload", ["triple-double", "newline", "backslash"], indirect=True)
def test_cli(payload, tmp_path):
    _, text = payload
    done = run("", tmp_path, "-m", "runtime.cli", f"x*y # {text}", "--at", "x=2,y=3", "--source")
    assert done.returncode in (0, 2), done.stderr
    assert "Traceback" not in done.stderr
    if done.returncode == 0:
        assert "f(x=2,y=3) = 6\n" in done.stdout
        assert "df/dx = 3\n" in done.stdout and "df/dy = 2\n" in done.stdout


POISON = """
import sys, compiler
try:
    k = compiler.compile_gradient(sys.argv[1], mode=sys.argv[2])
    k.value_and_grad(x=2.0, y=3.0)
    k.wait(timeout=300)
except compiler.SymgradError:
    pass
"""
PLAIN = """
import sys, compiler
k = compiler.compile_gradient("x*y", mode=sys.argv[1])
print(k.value_and_grad(x=2.0, y=3.0))
"""


@pytest.mark.parametrize("mode", ["compiled", "auto"])
@pytest.mark.parametrize("payload", ["triple-double", "newline"], indirect=True)
def test_a_poisoned_compile_leaves_nothing_for_the_next_process(payload, mode, tmp_path):
    """The plain expression, compiled in a fresh process after a hostile one in the same cache,
    gets a valid module (no payload run, no SyntaxError)."""
    _, text = payload
    for source in (f"x*y # {text}", 'x*y # """'):
        run(POISON, tmp_path, source, mode)
        done = run(PLAIN, tmp_path, mode)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "(6.0, {'x': 3.0, 'y': 2.0})"
    assert cache.cache_dir() != tmp_path  # the module's own cache was not touched


# ---------------------------------------------------------------------- the audit itself
def test_every_op_passes_the_audit():
    """Every function of the language in both writers' modules (generating one audits it), and
    the tensor module runs: the scalar machine and the NumPy module agree."""
    from compiler.ir.registry import FUNCTIONS, OPS

    calls = []
    for name in FUNCTIONS:
        call = f"{name}({', '.join('xyx'[: OPS[FUNCTIONS[name]].arity])})"
        calls.append(f"where({call} == {call}, {call}, 0)")  # ops outside their domain: nan
    text = " + ".join(calls)
    kernel = compiler.compile_gradient(text, mode="instant")
    assert kernel.source.startswith('"""symgrad kernels (generated')
    shapes = {"x": ("n",), "y": ("n",)}
    tensor = compiler.compile_gradient(f"sum({text})", shapes=shapes, mode="instant")
    xs, ys = np.array([0.5, 1.5, 0.25]), np.array([0.3, 0.7, 1.1])
    assert tensor(x=xs, y=ys) == pytest.approx(float(np.sum(kernel(x=xs, y=ys))), rel=1e-12)


GOOD = '"""symgrad kernels (generated: edit the graph, not this file)."""\n\nimport math\n'


@pytest.mark.parametrize(
    "source",
    [
        '"""other docstring"""\n',
        GOOD + 'open("/tmp/x", "w")\n',
        GOOD + "import os\n",
        GOOD + "from os import system\n",
        GOOD + "X = print(1)\n",
        GOOD + "def f(n):\n    return __import__('os')\n",
        GOOD + "def f(n):\n    return n.__class__\n",
        GOOD + "def f(n):\n    return eval('1')\n",
        GOOD + "def f(n):\n    import os\n",
        GOOD + "def f(n):\n    return np.save('/tmp/x', n)\n",
        GOOD + "def f(n):\n    return [m for m in n]\n",
        GOOD + "@decorate\ndef f(n):\n    return n\n",
        GOOD + "class C:\n    pass\n",
        GOOD + '"""+open("/tmp/x")+"""\n',
        GOOD + "X = 1\x00\n",
    ],
)
def test_the_python_audit_refuses(source):
    from compiler.codegen.audit import check_python

    with pytest.raises(compiler.CompileError, match="audit"):
        check_python(source)


@pytest.mark.parametrize(
    "text",
    [
        "declare i32 @system(ptr)\n",
        'define void @forward() {\n  %"a b" = fadd double 0.0, 0.0\n}\n',
        "; comment\u2028declare i32 @system(ptr)\n",
        "define void @forward() {\n  call void @exit(i32 0)\n}\n",
    ],
)
def test_the_llvm_audit_refuses(text):
    from compiler.codegen.audit import check_llvm

    with pytest.raises(compiler.CompileError, match="audit"):
        check_llvm(text, {"forward"}, {"llvm.exp.f64"})


@pytest.mark.parametrize("value", ['"""', "a\nb", "\u2028", "\x00", "\\", "'\"", ("x", "'''")])
def test_data_literals_evaluate_back(value):
    import ast

    from compiler.codegen.audit import data

    literal = data(value)
    assert literal.isprintable() and "\u2028" not in literal and "\x85" not in literal
    assert ast.literal_eval(literal) == value


# ---------------------------------------------------------------------- titles are cheap
TITLES = """
import sys, sympy, compiler
from compiler.api import _title
x = sympy.Symbol("x")
if sys.argv[1] == "deep":
    e = x
    for _ in range(100):
        e = sympy.exp(e / 2) - 1
else:
    e = sympy.Add(*sympy.symbols("x0:20000"))
print(_title(e))
k = compiler.compile_gradient(e, mode="instant") if sys.argv[1] == "deep" else None
print(k(x=0.5) if k else "")
"""


@pytest.mark.parametrize("kind", ["deep", "wide"])
def test_titles_of_large_sympy_expressions_are_cheap(kind, tmp_path):
    """str() of a deep expression raised RecursionError, of a 20,000-term sum took ~54 s."""
    done = run(TITLES, tmp_path, kind, timeout=120)  # str() of the wide one took minutes
    assert done.returncode == 0, done.stderr
    title, value = done.stdout.splitlines()
    assert title.startswith("<SymPy Add") and len(title) <= 80
    if kind == "deep":
        v = 0.5
        for _ in range(100):
            v = np.exp(v / 2) - 1
        assert float(value) == pytest.approx(v, abs=1e-300)


def test_titles_of_small_sympy_expressions_are_their_text():
    from compiler.api import _title

    x, y = sympy.symbols("x y")
    assert _title(sympy.sin(x) * y) == "y*sin(x)"


@pytest.mark.parametrize("name", list(PAYLOADS))
def test_a_comment_is_one_line_of_printable_ascii(name):
    """``comment`` on its own (the audit behind it would also refuse a broken line, so the
    end-to-end tests above pass even without the escaping)."""
    from compiler.codegen.audit import comment

    text = comment(PAYLOADS[name].format(p='"/nonexistent/marker"'))
    assert text.isascii() and text.isprintable() and '"' not in text
    assert len(ast.parse(f"x = 1  # {text}\n").body) == 1

"""The import graph keeps its layers: every ``import`` in compiler/, runtime/ and symgrad/ (function-
local ones included) goes down the table below, never up or sideways.

    base (compiler.errors, compiler.pyast)                    imports nothing of symgrad's
    compiler.ir        the graph, the op table, lowerings     base
    compiler.frontend  text, SymPy, tracing → graphs, and     + ir
      compiler.ops     the functions traced callables call
    compiler.passes    Graph → Graph (adjoint, fusion)        + ir, frontend
    compiler.codegen   a planned graph → source / LLVM IR     + ir, passes
    top of compiler    compiler.gates                         anything in compiler/ below it
    runtime            runs a planned program                 base, ir, codegen
    driver             compiler.api                           all of the above
    presentation       compiler.viz                           + driver (compare compiles kernels)
    entry points       symgrad, compiler (its __init__),      anything
                       runtime.cli

So ``compiler/ir`` imports nothing above it, passes are pure graph to graph, ``compiler/`` never
imports ``runtime/`` but in the driver — ``compiler.api``, the compile step that plans a graph and
binds the plan to an engine (JAX's ``api`` sits the same way over its core and its backends) — and ``runtime/`` never imports ``passes`` or a frontend (the compile step
hands it a planned program). One exception by construction: Jupyter's display methods
(``_repr_html_``, ``_repr_svg_``) may import ``compiler.viz``, the presentation layer, lazily —
displaying an object is what they are for, and nothing else runs them. Imports under
``if TYPE_CHECKING:`` are annotations only (the runtime's ``adj: AdjointGraph``) and never run, so
they are no edges. Read with ``ast``, never imported: a broken module still shows its edges.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("compiler", "runtime", "symgrad")

BASE = "base"
#: layer -> the layers it may import (its own always allowed).
ALLOWED: dict[str, set[str]] = {
    BASE: set(),
    "ir": {BASE},
    "frontend": {BASE, "ir"},
    "passes": {BASE, "ir", "frontend"},
    "codegen": {BASE, "ir", "passes"},
    "top": {BASE, "ir", "frontend", "passes", "codegen"},
    "runtime": {BASE, "ir", "codegen"},
    "driver": {BASE, "ir", "frontend", "passes", "codegen", "top", "runtime"},
    "presentation": {BASE, "ir", "frontend", "passes", "codegen", "top", "driver"},
    "entry": {
        BASE,
        "ir",
        "frontend",
        "passes",
        "codegen",
        "top",
        "runtime",
        "driver",
        "presentation",
    },
}
_BY_PREFIX = (  # most specific first
    ("compiler.errors", BASE),
    ("compiler.pyast", BASE),
    ("compiler.ir", "ir"),
    ("compiler.frontend", "frontend"),
    ("compiler.ops", "frontend"),  # tracing hands numpy calls on traced values to it
    ("compiler.passes", "passes"),
    ("compiler.codegen", "codegen"),
    ("compiler.api", "driver"),
    ("compiler.viz", "presentation"),
    ("compiler", "top"),
    ("runtime.cli", "entry"),
    ("runtime", "runtime"),
    ("symgrad", "entry"),
)
_DISPLAY_HOOKS = ("_repr_html_", "_repr_svg_", "_repr_png_", "_repr_markdown_")


class Edge(NamedTuple):
    source: str  # importing module
    target: str  # imported module (the longest name that is a module of the tree)
    where: str  # path:line
    function: str | None  # the enclosing function, for a function-local import


def layer(module: str) -> str:
    if module == "compiler":  # the package's face: re-exports the driver and the pictures
        return "entry"
    for prefix, name in _BY_PREFIX:
        if module == prefix or module.startswith(prefix + "."):
            return name
    raise AssertionError(f"{module} is in no layer: add it to _BY_PREFIX")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    while name not in known:
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]
    return name


def _imports(tree: ast.AST):
    """(node, imported names, enclosing function) for every absolute import, nested ones too."""
    stack: list[tuple[ast.AST, str | None]] = [(tree, None)]
    while stack:
        node, function = stack.pop()
        if isinstance(node, ast.Import):
            yield node, [a.name for a in node.names], function
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # "from compiler import pyast" imports compiler.pyast: try each name as a module
            yield node, [f"{node.module}.{a.name}" for a in node.names], function
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        if isinstance(node, ast.If) and _type_checking(node.test):
            stack.extend((child, function) for child in node.orelse)
            continue
        stack.extend((child, function) for child in ast.iter_child_nodes(node))


def _type_checking(test: ast.expr) -> bool:
    """``TYPE_CHECKING`` or ``typing.TYPE_CHECKING``."""
    name = test.attr if isinstance(test, ast.Attribute) else getattr(test, "id", None)
    return name == "TYPE_CHECKING"


def edges() -> list[Edge]:
    known = modules()
    found = []
    for source, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, names, function in _imports(tree):
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            for target in dict.fromkeys(_resolve(n, known) for n in names):
                if target is not None and target != source:
                    found.append(Edge(source, target, where, function))
    return found


def allowed(edge: Edge) -> bool:
    source, target = layer(edge.source), layer(edge.target)
    if target == source or target in ALLOWED[source]:
        return True
    return edge.function in _DISPLAY_HOOKS and edge.target.startswith("compiler.viz")


def test_every_module_is_in_a_layer():
    for name in modules():
        layer(name)


def test_the_reader_sees_every_kind_of_import():
    """The checker itself: plain, from-, nested-name and function-local imports all count."""
    source = (
        "import compiler.ir.graph\n"
        "from compiler import pyast\n"
        "def f():\n"
        "    from runtime.kernel import Kernel\n"
        "if TYPE_CHECKING:\n"
        "    import runtime.cache\n"
        "else:\n"
        "    import runtime.cli\n"
    )
    found = [(names, function) for _, names, function in _imports(ast.parse(source))]
    assert (["compiler.ir.graph"], None) in found
    assert (["compiler.pyast"], None) in found
    assert (["runtime.kernel.Kernel"], "f") in found
    assert (["runtime.cli"], None) in found and (["runtime.cache"], None) not in found
    known = modules()
    assert _resolve("runtime.kernel.Kernel", known) == "runtime.kernel"
    assert _resolve("compiler.pyast", known) == "compiler.pyast"


def test_the_table_forbids_what_the_issue_forbids():
    hook = Edge("compiler.ir.graph", "compiler.viz.display", "x:1", "_repr_svg_")
    forbidden = [
        ("compiler.ir.registry", "compiler.frontend.text"),
        ("compiler.ir.graph", "compiler.passes.adjoint"),
        ("compiler.passes.fusion", "compiler.codegen.numba_source"),
        ("compiler.gates", "runtime.kernel"),
        ("compiler.viz.draw", "runtime.kernel"),
        ("compiler.ops", "runtime.reductions"),
        ("runtime.kernel", "compiler.passes.adjoint"),
        ("runtime.instant.program", "compiler.frontend.text"),
    ]
    assert not [pair for pair in forbidden if allowed(Edge(*pair, "x:1", None))]
    assert allowed(hook) and not allowed(hook._replace(function="draw"))


def test_imports_follow_the_layers():
    bad = [e for e in edges() if not allowed(e)]
    lines = [
        f"{e.where}: {e.source} ({layer(e.source)}) imports {e.target} ({layer(e.target)})"
        for e in sorted(bad, key=lambda e: e.where)
    ]
    print("\n".join(lines))
    assert not bad, f"{len(bad)} import(s) against the layers:\n" + "\n".join(lines)

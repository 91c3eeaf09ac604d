"""Everything a listing prints parses back (issue 13, item 5).

The cases are the test suite's own expressions — every string literal in ``tests/*.py`` that the
text language reads, with the ``shapes=`` written beside it — plus one expression per op of the
registries (``compiler.ir.registry.FUNCTIONS``, ``compiler.ir.tensor_ops.TENSOR_OPS``), unfused
and fused. For each graph: ``Graph.to_text()`` parses back to the same graph (the same key once
both are rebuilt in one canonical order), and every line of its listing, its adjoint's listing and
its fusion report parses back to a node of the same op and attributes.
"""

from __future__ import annotations

import ast
import inspect
import re
from functools import cache
from pathlib import Path

import numpy as np
import pytest

import compiler
from compiler import ops
from compiler.errors import ParseError, ShapeError
from compiler.frontend.text import TENSOR_FUNCTIONS, parse
from compiler.ir.graph import Graph, prune
from compiler.ir.registry import FUNCTIONS, OPS
from compiler.ir.tensor import TensorGraph
from compiler.ir.tensor_ops import TENSOR_OPS
from compiler.passes.adjoint import adjoint
from compiler.passes.fusion import fuse

TESTS = Path(__file__).parent
MATRIX = {"A": ("n", "m"), "B": ("n", "m"), "v": ("m",), "Y": ("n", "m"), "L": ("n", 1)}


# ------------------------------------------------------------------------------ the cases
def _literal(node: ast.AST, names: dict[str, ast.AST]):
    """A ``shapes=`` value: a literal, or a module-level name bound to one."""
    if isinstance(node, ast.Name) and node.id in names:
        node = names[node.id]
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def _suite_texts() -> set[tuple[str, tuple | None]]:
    """Every string literal of the test files, with the shapes of the call it is passed to."""
    found: set[tuple[str, tuple | None]] = set()
    for path in sorted(TESTS.glob("**/test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {
            t.id: n.value
            for n in tree.body
            if isinstance(n, ast.Assign)
            for t in n.targets
            if isinstance(t, ast.Name)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add((node.value, None))
            if isinstance(node, ast.Call) and node.args:
                first = node.args[0]
                shapes = next((k.value for k in node.keywords if k.arg == "shapes"), None)
                if isinstance(first, ast.Constant) and isinstance(first.value, str) and shapes:
                    declared = _literal(shapes, names)
                    if isinstance(declared, dict):
                        found.add((first.value, tuple(sorted(declared.items()))))
    return found


def _registry_texts() -> list[tuple[str, tuple | None]]:
    """One expression per op: every function of the text language, scalar and tensor."""
    out = []
    for name, op in FUNCTIONS.items():
        args = ", ".join("xyz"[: OPS[op].arity])
        out.append((f"{name}({args}) * x + 1", None))
        out.append((f"sum({name}({', '.join('ABA'[: OPS[op].arity])}))", MATRIX))
    tensor = {
        "matmul": "sum(matmul(A, v) ** 2)",
        "dot": "dot(v, v) + sum(A @ v)",
        "transpose": "sum(transpose(A) * 2) + sum(A.T @ A)",
        "sum": "sum(A, axis=0) @ v + sum(A, 1, True) * sum(A)",
        "mean": "mean(A * B, axis=(0, 1))",
        "max": "sum(max(A, axis=1)) + max(A)",
        "min": "sum(min(A, axis=0, keepdims=True) * B)",
        "ties": "sum(ties(A, max(A, axis=1), axis=1) * B)",
        "reshape": "sum(reshape(sum(A, axis=1), (n, 1)) * B)",
        "broadcast_to": "sum(broadcast_to(v, (n, m)), axis=0) @ v + sum(L)",
        "sum_to": "sum(sum_to(A * B, (1, m)) ** 2)",
        "logsumexp": "sum(logsumexp(A, axis=1)) + logsumexp(A)",
        "softmax": "sum(softmax(A, axis=1) * Y)",
        "log_softmax": "-sum(Y * log_softmax(A, axis=1))",
        "sumsq": "sumsq(A, axis=(0, 1)) + sum(sumsq(A, axis=0))",
        "take_along_axis": "-mean(take_along_axis(log_softmax(A, axis=1), L, axis=1))",
        "scatter_along_axis": "sum(scatter_along_axis(sum(A, axis=1, keepdims=True), L, "
        "axis=1, shape=(n, m)) * B)",
    }
    assert set(TENSOR_FUNCTIONS) <= set(tensor), "a tensor function without a round-trip case"
    out += [(text, MATRIX) for text in tensor.values()]
    # the forms the fusion passes rewrite
    out += [
        (f, MATRIX)
        for f in (
            "log(sum(exp(A), axis=1))",
            "sum(exp(A) / sum(exp(A), axis=1, keepdims=True) * Y)",
            "-sum(Y * log(exp(A) / sum(exp(A), axis=1, keepdims=True)))",
            "sum(A - log(sum(exp(A), axis=1, keepdims=True)))",
            "sum(max(A, axis=1) + log(sum(exp(A - max(A, axis=1, keepdims=True)), axis=1)))",
            "sum(A * A) + sum((A @ v) ** 2)",
            "sum(1 / (1 + exp(-A)) * B) + sum(log(1 + exp(A)))",
        )
    ]
    return out


def _using(f, arity: int):
    """A callable of x and y applying ``f`` (a parameter default would be traced too)."""
    if arity == 1:
        return lambda x, y: f(x * y) - x
    if arity == 3:  # where(c, a, b), clip(x, lo, hi)
        return lambda x, y: f(x, y, x * y) / (1 + y)
    return lambda x, y: f(x, y) / (1 + y)


def _callables() -> list[tuple[str, object, dict | None]]:
    """Traced callables: every function of ``compiler.ops`` once, scalar and on tensors."""
    out = []
    for name, op in FUNCTIONS.items():
        out.append((f"ops.{name}", _using(getattr(ops, name), OPS[op].arity), None))
    out += [
        (
            "ops.ce",
            lambda A, L: -ops.mean(ops.take_along_axis(ops.log_softmax(A, 1), L, 1)),
            MATRIX,
        ),
        ("ops.softmax", lambda A, Y: ops.sum(ops.softmax(A, axis=0) * Y), MATRIX),
        ("ops.lse", lambda A, v: ops.sum(ops.logsumexp(A, axis=1, keepdims=True) * A @ v), MATRIX),
        (
            "ops.sumsq",
            lambda A: ops.sumsq(ops.reshape(A, ("m", "n")), axis=1) @ ops.sum(A, 0),
            MATRIX,
        ),
        (
            "ops.shapes",
            lambda A, v: ops.sum(ops.sum_to(ops.broadcast_to(v, ("n", "m")) * A, (1, "m"))),
            MATRIX,
        ),
    ]
    return out


def _trace(text: str, shapes) -> Graph | None:
    # A suite's shapes dict often serves several expressions: keep the inputs this text names
    # (a shapes key that names no input is an InputError).
    if shapes is not None:
        shapes = {k: v for k, v in dict(shapes).items() if re.search(rf"\b{re.escape(k)}\b", text)}
    try:
        return compiler.trace(text, None, shapes)
    except (ParseError, ShapeError, TypeError, compiler.GateError):
        return None  # not an expression (a message, a name, a deliberate error)


@cache
def cases() -> list[tuple[str, tuple | None, bool, Graph]]:
    """(text, shapes, fused, graph) for every expression that builds a graph with an op."""
    out = []
    seen = set()
    for text, shapes in sorted(_suite_texts(), key=str) + _registry_texts():
        key = (text, tuple(sorted(dict(shapes).items())) if shapes else None)
        if key in seen or len(text) > 2000:
            continue
        seen.add(key)
        graph = _trace(text, shapes)
        if graph is None or not any(True for _ in graph.op_nodes()):
            continue
        out.append((text, shapes, False, graph))
    for label, fn, shapes in _callables():
        if shapes is not None:  # the callable's own inputs (a shapes key naming none is an error)
            shapes = {k: v for k, v in shapes.items() if k in inspect.signature(fn).parameters}
        out.append((label, shapes, False, compiler.trace(fn, None, shapes)))
    for text, shapes, _, graph in list(out):
        fused, report = fuse(graph, True)
        if report.fused:
            out.append((text, shapes, True, fused))
    return out


def _ids() -> list[str]:
    return [f"{'fused' if f else 'plain'}:{t[:60]}" for t, _, f, _ in cases()]


# ------------------------------------------------------------------------------ helpers
def _empty_like(graph: Graph) -> Graph:
    """A graph of the same kind with the same inputs declared, in order."""
    out = graph.empty_like()
    for name in graph.inputs:
        out.input(name)
    return out


def canonical(graph: Graph) -> Graph:
    """``graph`` rebuilt in one order: declared inputs, then depth-first from the output,
    operands left to right (the order parsing its text builds in); dead nodes dropped."""
    out = _empty_like(graph)
    mapping: dict[int, int] = {}
    stack = [(graph.outputs[0], False)]
    while stack:
        i, ready = stack.pop()
        if i in mapping:
            continue
        node = graph.nodes[i]
        if ready:
            mapping[i] = out.copy_node(node, [mapping[a] for a in node.args])
        else:
            stack.append((i, True))
            stack.extend((a, False) for a in reversed(node.args))
    out.outputs = [mapping[graph.outputs[0]]]
    return out


def _line_parses(graph: Graph, line: str) -> None:
    """``name = body  # comment``: the body, read over ``graph``'s names as inputs of their
    shapes, is one node of the op and attributes the line's node has."""
    target, body = line.split(" = ", 1)
    body = body.split("  # ")[0]
    index = graph.names.index(target) if target in graph.names else None
    if isinstance(graph, TensorGraph):
        shapes = {n: s for n, s in zip(graph.names, graph.shapes)}
        declared = {n: shapes[n] for n in re.findall(r"[^\W\d]\w*", body) if n in shapes}
        declared = {**graph.declared, **declared}
        g = TensorGraph(declared)
    else:
        g = Graph()
    got = parse(body, g).outputs[0]
    if index is None or graph.nodes[index].op not in (*OPS, *TENSOR_OPS):
        return  # an alias line (d_x = d_t0): any name will do
    want = graph.nodes[index]
    assert (g.nodes[got].op, g.nodes[got].value) == (want.op, want.value), line
    if isinstance(graph, TensorGraph):
        assert g.shapes[got] == graph.shapes[index], line


def _listing_lines(text: str) -> list[str]:
    return [s for s in text.splitlines() if " = " in s and not s.startswith("#")]


# ------------------------------------------------------------------------------ the tests
def test_the_cases_cover_the_suite_and_every_op():
    suite = {t for t, _ in _suite_texts()}  # once: the suite's files parsed, not per case
    texts = [c for c in cases() if c[0] in suite]
    assert len(texts) >= 60, len(texts)  # the suite's expressions, not a handful
    used = {n.op for _, _, _, g in cases() for n in g.nodes}
    assert set(OPS) - {"pow"} <= used | {op for op in OPS if OPS[op].origin != "builtin"}
    assert set(TENSOR_OPS) <= used


@pytest.mark.parametrize("index", range(len(cases())), ids=_ids())
def test_to_text_parses_back_to_the_same_graph(index):
    text, shapes, fused, graph = cases()[index]
    written = graph.to_text()
    back = parse(written, _empty_like(graph))
    assert canonical(back).key() == canonical(prune(graph)).key(), (text, written)


@pytest.mark.parametrize("index", range(len(cases())), ids=_ids())
def test_every_listing_line_parses_back(index):
    text, shapes, fused, graph = cases()[index]
    for line in _listing_lines(str(graph)):
        _line_parses(graph, line)
    adj = adjoint(graph)
    for line in _listing_lines(str(adj)):
        _line_parses(adj, line)


def test_the_fusion_report_parses_back():
    shapes = {"S": ("B", "C"), "Y": ("B", "C")}
    text = "-mean(sum(Y * log(exp(S) / sum(exp(S), axis=1, keepdims=True)), axis=1))"
    k = compiler.compile_gradient(text, shapes=shapes, mode="instant")
    line = next(s for s in str(k.fusion).splitlines() if "replaces" in s)
    assert line.strip().startswith("t0 = log_softmax(S, axis=1)  replaces")
    call, replaced = line.strip().split(" = ", 1)[1].split("  replaces  ")
    g = parse(call, TensorGraph(shapes))
    assert g.nodes[g.outputs[0]].op == "log_softmax" and g.nodes[g.outputs[0]].value == (1,)
    fused, _ = fuse(parse(replaced, TensorGraph(shapes)), True)
    assert fused.key() == g.key()


def test_a_listing_s_dimension_size_parses_as_the_dimension():
    g = parse("sum(x) / size_n", TensorGraph({"x": ("n",)}))
    assert g.inputs == ("x",) and "size_n" in str(g)
    assert parse("sum(x) / n", TensorGraph({"x": ("n",)})).key() == g.key()


def test_to_text_writes_precedence_as_python_reads_it():
    for text in ("(x + y) * z", "x - (y - z)", "(-x) ** 2", "-x ** 2", "(x ** y) ** z",
                 "x ** y ** z", "x / (y * z)", "2 ** x - (-3)"):  # fmt: skip
        assert parse(text).to_text() == text


def test_to_text_of_inf_and_nan_constants_parses_back():
    g = Graph()
    x = g.input("x")
    g.outputs = [g.add("add", g.add("mul", x, g.const(np.inf)), g.const(np.nan))]
    back = parse(g.to_text(), _empty_like(g))
    assert canonical(back).key() == canonical(g).key()


def test_to_text_refuses_an_exponential_expression():
    g = Graph()
    node = g.input("x")
    for _ in range(40):  # each level reads the one below twice: 2**40 copies as one expression
        node = g.add("mul", node, g.add("sin", node))
    g.outputs = [node]
    with pytest.raises(ValueError, match="print the listing instead"):
        g.to_text()


# ------------------------------------------------------------------------------ new functions
def test_new_tensor_functions_match_numpy():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(4, 3)) * 30
    shapes = {"A": ("n", "m")}
    m = A.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(A - m).sum(axis=1, keepdims=True)))[:, 0]
    cases = {
        "sum(logsumexp(A, axis=1))": lse.sum(),
        "sum(softmax(A, axis=1) * A)": (np.exp(A - lse[:, None]) * A).sum(),
        "sum(log_softmax(A, axis=0))": (A - np.log(np.exp(A).sum(axis=0))).sum(),
        "sumsq(A)": (A * A).sum(),
        "sum(reshape(A, (m, n)) * reshape(A, (m, n)))": (A * A).sum(),
    }
    for text, expected in cases.items():
        k = compiler.compile_gradient(text, shapes=shapes, mode="instant")
        assert k(A=A) == pytest.approx(expected, rel=1e-12), text


def test_ops_offers_every_tensor_function_of_the_text_language():
    missing = [name for name in TENSOR_FUNCTIONS if not callable(getattr(ops, name, None))]
    assert not missing


def test_options_are_checked_with_the_position():
    shapes = {"A": ("n", "m")}
    with pytest.raises(ParseError, match=r"softmax\(\) needs axis"):
        parse("softmax(A)", TensorGraph(shapes))
    with pytest.raises(ParseError, match="'k' in a shape"):
        parse("reshape(A, (k, 1))", TensorGraph(shapes))
    with pytest.raises(ShapeError, match="cannot reshape"):
        parse("reshape(A, (n, 1))", TensorGraph(shapes))
    with pytest.raises(ParseError, match="needs shapes"):
        parse("logsumexp(x, axis=0)")


# ------------------------------------------------------------------------------ integer labels
CE_SHAPES = {"z": ("B", "C"), "y": ("B", 1)}
CE_TEXT = "-mean(take_along_axis(log_softmax(z, axis=1), y, axis=1))"


def _numpy_cross_entropy(z: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Softmax cross-entropy with integer targets and its gradient, written out in NumPy."""
    shifted = z - z.max(axis=1, keepdims=True)
    p = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    rows = np.arange(len(labels))
    loss = -np.mean(np.log(p[rows, labels]))
    grad = p.copy()
    grad[rows, labels] -= 1
    return loss, grad / len(labels)


@pytest.mark.parametrize("mode", ["instant", "compiled"])
@pytest.mark.parametrize(
    "source", [CE_TEXT, lambda z, y: -ops.mean(ops.take_along_axis(ops.log_softmax(z, 1), y, 1))]
)
def test_softmax_cross_entropy_with_integer_labels(source, mode):
    rng = np.random.default_rng(7)
    z = rng.normal(size=(6, 5)) * 3
    labels = rng.integers(0, 5, size=6)
    k = compiler.compile_gradient(source, shapes=CE_SHAPES, wrt=["z"], mode=mode)
    value, grads = k.value_and_grad(z=z, y=labels[:, None])  # an integer array, as is
    loss, grad = _numpy_cross_entropy(z, labels)
    assert value == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(grads["z"], grad, rtol=1e-10, atol=1e-14)


def test_take_along_axis_gradient_matches_finite_differences():
    """Repeated indices add up (scatter-add), on any axis."""
    shapes = {"a": (4, 3), "i": (2, 3)}
    k = compiler.compile_gradient(
        "sum(take_along_axis(a, i, axis=0) ** 3)", shapes=shapes, wrt=["a"], mode="instant"
    )
    rng = np.random.default_rng(3)
    a = rng.normal(size=(4, 3))
    i = np.array([[0, 3, 3], [0, 1, -1]])  # column 0 picks row 0 twice; -1 is the last row
    grad = k.grad(a=a, i=i)["a"]
    h, fd = 1e-6, np.zeros_like(a)
    for index in np.ndindex(a.shape):
        step = np.zeros_like(a)
        step[index] = h
        fd[index] = (k(a=a + step, i=i) - k(a=a - step, i=i)) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)
    assert grad[0, 0] == pytest.approx(2 * 3 * a[0, 0] ** 2)  # picked twice


@pytest.mark.parametrize("bad", [2.5, 5, -6, np.nan])
def test_take_along_axis_refuses_a_label_that_is_no_index(bad):
    k = compiler.compile_gradient(CE_TEXT, shapes=CE_SHAPES, wrt=["z"], mode="instant")
    y = np.array([[0.0], [bad]])
    with pytest.raises(compiler.InputError, match="not an integer in"):
        k.value_and_grad(z=np.zeros((2, 5)), y=y)


def test_take_along_axis_needs_indices_of_the_arrays_rank():
    with pytest.raises(ShapeError, match="same rank"):
        parse("take_along_axis(z, y, axis=1)", TensorGraph({"z": ("B", "C"), "y": ("B",)}))


def test_a_drawing_s_numbers_for_integer_labels():
    """compiler.viz evaluates the adjoint's scatter_along_axis with its (axis, shape)."""
    from compiler.viz.values import annotate

    z = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    labels = np.array([[1], [2]])
    graph = compiler.trace(CE_TEXT, None, CE_SHAPES)
    numbers = annotate(graph, {"z": z, "y": labels}, wrt=["z"])
    z_node = graph.inputs.index("z")
    _, grad = _numpy_cross_entropy(z, labels[:, 0])
    np.testing.assert_allclose(numbers.grads[z_node], grad, rtol=1e-12)


def test_to_text_refuses_what_python_s_parser_cannot_read_and_writes_what_it_can():
    for depth, readable in ((150, True), (250, False)):
        g = Graph()
        node = g.input("x")
        for _ in range(depth):
            node = g.add("exp", node)
        g.outputs = [node]
        if readable:
            assert canonical(parse(g.to_text())).key() == canonical(g).key()
        else:
            with pytest.raises(ValueError, match="parentheses"):
                g.to_text()


def test_numpys_spellings_on_traced_values_build_the_ops_graphs():
    """``np.take_along_axis``, ``np.reshape`` and ``np.broadcast_to`` on traced values are the
    ``compiler.ops`` functions of the same names."""
    shapes = {"A": ("n", "m"), "L": ("n", 1), "v": ("m",)}

    def with_numpy(A, L, v):
        picked = np.take_along_axis(ops.log_softmax(A, axis=1), L, axis=1)
        return np.sum(np.reshape(picked, ("n",))) + np.sum(np.broadcast_to(v, ("n", "m")) * A)

    def with_ops(A, L, v):
        picked = ops.take_along_axis(ops.log_softmax(A, axis=1), L, axis=1)
        return ops.sum(ops.reshape(picked, ("n",))) + ops.sum(ops.broadcast_to(v, ("n", "m")) * A)

    got = compiler.trace(with_numpy, None, shapes)
    assert got.key() == compiler.trace(with_ops, None, shapes).key()

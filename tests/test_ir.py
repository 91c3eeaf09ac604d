"""The IR: listings, hash-consing, the way back to SymPy, depth, and safe identifiers.

Oracles are independent of symgrad: SymPy expressions written here by hand, SymPy's ``diff``,
and for the deep chains a forward-mode derivative computed in plain Python plus a tiny evaluator
of the adjoint graph built from ``math`` (not from the op registry's own NumPy functions).
"""

from __future__ import annotations

import math
import re
import sys

import numpy as np
import pytest
import sympy as sp

import compiler
from compiler import ops
from compiler.codegen.numba_source import generate
from compiler.ir.graph import CONST, INPUT, SEED

# --------------------------------------------------------------------------- helpers
MATH = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "neg": lambda a: -a,
    "pow": lambda a, b: a**b,
    "sin": math.sin,
    "cos": math.cos,
    "exp": math.exp,
}


def evaluate(graph, point: dict[str, float], seed: float = 1.0) -> list[float]:
    """Every output of ``graph`` at ``point``, node by node with ``math`` (an independent oracle)."""
    values: list[float] = []
    for node in graph.nodes:
        if node.op == INPUT:
            values.append(float(point[node.value]))
        elif node.op == CONST:
            values.append(node.value)
        elif node.op == SEED:
            values.append(seed)
        else:
            assert node.op in MATH, f"the oracle has no {node.op}"
            values.append(MATH[node.op](*(values[a] for a in node.args)))
    return [values[o] for o in graph.outputs]


def op_count(graph, op: str) -> int:
    return sum(1 for n in graph.nodes if n.op == op)


# --------------------------------------------------------------------------- print(graph)
def test_listing_of_the_lecture_example():
    assert str(compiler.trace("(x + y) * z")).splitlines() == [
        "t0 = x + y",
        "t1 = t0 * z",
        "return t1",
    ]


def test_listing_of_the_neuron_has_one_line_per_gate():
    # The lecture's gates: *, *, +, +, *(-1), exp, +1, 1/x: eight lines, then the return.
    g = compiler.trace("1/(1+exp(-(w0*x0+w1*x1+w2)))")
    lines = str(g).splitlines()
    assert len(lines) == 9 and lines[-1].startswith("return ")
    assert [re.sub(r"\bt\d+\b", "t", line) for line in lines] == [
        "t = w0 * x0",
        "t = w1 * x1",
        "t = t + t",
        "t = t + w2",
        "t = -t",
        "t = exp(t)",
        "t = 1 + t",
        "t = 1 / t",
        "return t",
    ]


def assert_ssa_listing(text: str, inputs: tuple[str, ...], functions=("exp", "sin", "cos")):
    """``name = expression`` lines, each name new, each operand defined above."""
    defined = set(inputs) | {"seed"}
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    for line in lines[:-1]:
        name, sep, rhs = line.partition(" = ")
        assert sep and re.fullmatch(r"[A-Za-z_]\w*", name), line
        assert name not in defined, f"{name} assigned twice"
        used = set(re.findall(r"[A-Za-z_]\w*", rhs)) - set(functions)
        assert used <= defined, f"{line}: {used - defined} not defined yet"
        defined.add(name)
    assert lines[-1].startswith("return ")


def test_listings_are_ssa_forward_and_adjoint():
    g = compiler.trace("exp(x*y) * sin(x) + x / (y - 1)")
    assert_ssa_listing(str(g), g.inputs)
    adj = compiler.adjoint(g)
    assert_ssa_listing(str(adj), g.inputs)
    assert "# backward" in str(adj)


# --------------------------------------------------------------------------- hash-consing
def test_shared_subexpressions_are_stored_once():
    g = compiler.trace("exp(x)*exp(x) + exp(x) + sin(x+y) + sin(y+x) + (y - x) * (x - y)")
    assert op_count(g, "exp") == 1
    assert op_count(g, "sin") == 1  # x + y and y + x are one node: add commutes
    assert op_count(g, "add") == 4 + 1  # the four top-level sums and x + y
    assert op_count(g, "sub") == 2  # subtraction does not commute
    assert op_count(g, "input") == 2


def test_traced_callables_share_too():
    def f(x, y):
        a = ops.exp(x * y)
        b = ops.exp(y * x)
        return a * b + (x * y)

    g = compiler.trace(f)
    assert op_count(g, "exp") == 1 and op_count(g, "mul") == 2
    assert op_count(g, "add") == 1


def test_adding_an_existing_node_returns_it():
    g = compiler.Graph()
    x, y = g.input("x"), g.input("y")
    first = g.add("mul", x, y)
    assert g.add("mul", y, x) == first and g.add("mul", x, y) == first
    assert g.add("sub", x, y) != g.add("sub", y, x)
    assert g.input("x") == x and g.const(2.0) == g.const(2)
    assert len(g.nodes) == 2 + 1 + 2 + 1


def test_adjoint_shares_forward_values():
    # d/dx exp(x) is the forward exp node itself: no second exp in the adjoint graph.
    adj = compiler.adjoint(compiler.trace("exp(x) * y"))
    assert op_count(adj, "exp") == 1


# --------------------------------------------------------------------------- to_sympy
x, y, z = sp.symbols("x y z")
w0, x0, w1, x1, w2 = sp.symbols("w0 x0 w1 x1 w2")

ROUND_TRIPS = [
    ("(x + y) * z", (x + y) * z),
    ("1/(1+exp(-(w0*x0+w1*x1+w2)))", 1 / (1 + sp.exp(-(w0 * x0 + w1 * x1 + w2)))),
    ("x**3 - 2*x*y + y/x", x**3 - 2 * x * y + y / x),
    ("sqrt(x) * log(y) + tanh(z)", sp.sqrt(x) * sp.log(y) + sp.tanh(z)),
    ("x**y + pow(y, 2.5)", x**y + y ** sp.Rational(5, 2)),
    ("sin(x)*cos(y) - tan(z)", sp.sin(x) * sp.cos(y) - sp.tan(z)),
    ("log1p(x) + expm1(y)", sp.log(1 + x) + sp.exp(y) - 1),
    ("sigmoid(x) * 2", 2 / (1 + sp.exp(-x))),
    ("-(-(x))", x),
]


@pytest.mark.parametrize("text, expected", ROUND_TRIPS, ids=[t for t, _ in ROUND_TRIPS])
def test_to_sympy_round_trips_text(text, expected):
    back = compiler.trace(text).to_sympy()
    # Constants come back as floats (2.5): read them as the exact numbers they are.
    assert sp.simplify(sp.nsimplify(back) - expected) == 0


KINKED = [
    ("maximum(x, y) + minimum(x, z)", sp.Max(x, y) + sp.Min(x, z)),
    ("relu(x - y) * abs(z)", sp.Max(0, x - y) * sp.Abs(z)),
    ("sign(x) * heaviside(y, 0.5)", sp.sign(x) * sp.Heaviside(y, sp.Rational(1, 2))),
]


@pytest.mark.parametrize("text, expected", KINKED, ids=[t for t, _ in KINKED])
def test_to_sympy_round_trips_kinks_numerically(text, expected):
    back = compiler.trace(text).to_sympy()
    rng = np.random.default_rng(0)
    points = [dict(zip((x, y, z), rng.normal(size=3))) for _ in range(20)]
    points += [{x: 0.0, y: 0.0, z: 0.0}, {x: 1.0, y: 1.0, z: -1.0}]
    for p in points:
        assert float(back.subs(p)) == pytest.approx(float(expected.subs(p)), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(
    "expr",
    [
        sp.exp(x) * sp.sin(y) + x**3 / y - sp.sqrt(x),
        (x - y) ** -2 + sp.Rational(1, 3) * z,
        sp.log(x * y) / (1 + sp.exp(-z)),
    ],
    ids=str,
)
def test_to_sympy_round_trips_sympy(expr):
    assert sp.simplify(compiler.trace(expr).to_sympy() - expr) == 0


# --------------------------------------------------------------------------- depth
DEPTH = 50_000  # u = sin(u) * u, twice per step: a chain 100,000 nodes deep


def sin_chain(u):
    for _ in range(DEPTH):
        u = ops.sin(u) * u
    return u


def forward_mode(x: float, steps: int) -> tuple[float, float]:
    """Value and derivative of the chain, carried forward in plain Python."""
    u, du = x, 1.0
    for _ in range(steps):
        s = math.sin(u)
        u, du = s * u, (math.cos(u) * u + s) * du
    return u, du


@pytest.fixture
def low_recursion_limit():
    """Any recursive traversal of a deep graph fails at once, not by luck of the stack."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    yield
    sys.setrecursionlimit(old)


def test_a_chain_100000_nodes_deep_is_traced_differentiated_and_printed(low_recursion_limit):
    g = compiler.trace(sin_chain)
    assert op_count(g, "sin") == DEPTH and op_count(g, "mul") == DEPTH
    assert len(str(g).splitlines()) == 2 * DEPTH + 1
    g.key()

    adj = compiler.adjoint(g)
    # u*sin(u) creeps towards its fixed point pi/2 from above: the value stays near 1.5708 and
    # the derivative, a product of 50,000 factors just under 1, is small but far from 0.
    x = math.pi / 2 + 0.1
    value, grad = evaluate(adj, {"u": x})
    expected_value, expected_grad = forward_mode(x, DEPTH)
    assert value == pytest.approx(expected_value, rel=1e-9)
    assert grad == pytest.approx(expected_grad, rel=1e-9)
    assert value == pytest.approx(math.pi / 2, abs=1e-3) and grad > 1e-9

    source = generate(adj, g.inputs, "as")
    assert source.count(" = sin(") >= DEPTH  # the intrinsic of sin's lowering
    assert len(source.splitlines()) > 2 * DEPTH
    # Not compiled here (with Numba or Python): that is the scale work's business.


def test_deep_text_within_the_parser_limits(low_recursion_limit):
    # 'x*x*...*x' with 2,000 factors: a chain 1,999 nodes deep, x**2000.
    text = "x" + "*x" * 1999
    g = compiler.trace(text)
    assert op_count(g, "mul") == 1999
    adj = compiler.adjoint(g)
    xv = 1.0003
    value, grad = evaluate(adj, {"x": xv})
    assert value == pytest.approx(xv**2000, rel=1e-11)
    assert grad == pytest.approx(2000 * xv**1999, rel=1e-11)
    source = generate(adj, g.inputs, "as")
    compile(source, "<deep kernel>", "exec")  # valid Python, line after line


def test_deep_nesting_of_calls_within_the_parser_limits(low_recursion_limit):
    # sin(sin(...sin(x)...)) nested 150 deep (Python's parser allows 200 parentheses).
    g = compiler.trace("sin(" * 150 + "x" + ")" * 150)
    adj = compiler.adjoint(g)
    u, du = 0.5, 1.0
    for _ in range(150):
        u, du = math.sin(u), math.cos(u) * du
    value, grad = evaluate(adj, {"x": 0.5})
    assert value == pytest.approx(u, rel=1e-13) and grad == pytest.approx(du, rel=1e-12)


# --------------------------------------------------------------------------- safe identifiers
NASTY = [
    "x[0]",
    "lambda",
    "my var",
    "α",
    "t0",
    "seed",
    "out",
    "n",
    "i",
    "math",
    # and a few more that collide with what the generated code uses or with each other
    "x_0_",
    "x",
    "g_x",
    "d_x",
    "v",
    "None",
    "__class__",
    "0abc",
    "njit",
    "prange",
    "forward",
]


@pytest.fixture(scope="module")
def nasty_kernel():
    symbols = [sp.Symbol(name) for name in NASTY]
    expr = sp.Integer(0)
    for k, s in enumerate(symbols):
        nxt = symbols[(k + 1) % len(symbols)]
        expr += (k + 1) * s * sp.sin(nxt) + s**2 / (k + 2)
    expr *= sp.exp(symbols[0] / 10)
    return expr, symbols, compiler.compile_gradient(expr)


def test_any_input_name_compiles_to_valid_python(nasty_kernel):
    expr, symbols, k = nasty_kernel
    assert sorted(k.inputs) == sorted(NASTY)
    compile(k.source, "<kernel>", "exec")


@pytest.mark.parametrize("arrays", [False, True], ids=["scalars", "arrays"])
def test_any_input_name_runs_correctly(nasty_kernel, arrays):
    expr, symbols, k = nasty_kernel
    point = {name: 0.05 * (j + 1) - 0.4 for j, name in enumerate(NASTY)}
    args = [np.full(3, point[n]) if arrays else point[n] for n in k.inputs]
    # Positional: 'seed' and 'out' are also keyword arguments of value_and_grad.
    value, grads = k.value_and_grad(*args)
    subs = {s: point[s.name] for s in symbols}
    assert np.allclose(value, float(expr.subs(subs)), rtol=1e-13)
    for s in symbols:
        expected = float(sp.diff(expr, s).subs(subs))
        assert np.allclose(grads[s.name], expected, rtol=1e-12), s.name


def test_inputs_named_seed_and_out_go_by_position():
    # seed= and out= are options of the kernel's methods; inputs with those names go by position,
    # and giving them by name is refused with a message that says so.
    k = compiler.compile_gradient(lambda seed, out: seed * out)
    assert k.value_and_grad(2.0, 3.0) == (6.0, {"seed": 3.0, "out": 2.0})
    with pytest.raises(compiler.InputError, match="passed by position"):
        k.value_and_grad(seed=2.0, out=3.0)


def test_names_that_sanitise_alike_stay_apart():
    # 'x[0]', 'x_0_' and 'x(0)' all sanitise towards x_0_: each must keep its own value.
    names = ["x[0]", "x_0_", "x(0)"]
    k = compiler.compile_gradient(lambda a, b, c: a + 10 * b + 100 * c, inputs=names)
    assert k(1.0, 2.0, 3.0) == 321.0
    assert k.grad(1.0, 2.0, 3.0) == {"x[0]": 1.0, "x_0_": 10.0, "x(0)": 100.0}

"""where, comparisons, logic and the integer-valued ops: their entries (definition, gradient,
oracle, lowering), the frontends that write them, and the adjoint's routing of where's gradient.

The expected numbers come from SymPy (exact rationals), NumPy and finite differences; graphs are
evaluated here by a small NumPy walk over their nodes (each op's oracle, itself checked against
its SymPy definition below).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import sympy

from compiler import ops
from compiler.errors import ParseError
from compiler.frontend.sympy_expr import from_sympy
from compiler.frontend.text import parse
from compiler.frontend.tracing import trace_callable
from compiler.ir import registry
from compiler.ir.graph import CONST, INPUT, SEED, Graph
from compiler.ir.ops import logic, rounding
from compiler.passes.adjoint import adjoint, local_gradient_template
from tests.lowerjit import evaluate, optimised_ir

ENTRIES = {op.name: op for op in logic.OPS + rounding.OPS}
A, B, C = sympy.symbols("a b c", real=True)


@pytest.fixture(scope="module", autouse=True)
def registered():
    """This family's entries in the op table. The registry collects compiler/ir/ops/* itself
    (then this adds nothing); on a branch without that, they are entered for this module only."""
    registry._sympy_definitions()
    added = [op for op in ENTRIES.values() if op.name not in registry.OPS]
    for op in added:
        registry.OPS[op.name] = op
        registry.FUNCTIONS[op.name] = op.name
        registry._SYMPY_CACHE[op.name] = definition(op.name)
        ops.install(op.name)
    yield
    for op in added:
        del registry.OPS[op.name], registry.FUNCTIONS[op.name], registry._SYMPY_CACHE[op.name]
        ops.uninstall(op.name)
    local_gradient_template.cache_clear()


def definition(name: str):
    return sympy.sympify(ENTRIES[name].definition, locals={"a": A, "b": B, "c": C})


def exact(name: str, *point) -> float:
    """The SymPy definition at rational ``point``, exactly."""
    subs = {s: sympy.Rational(Fraction(p)) for s, p in zip((A, B, C), point)}
    return float(definition(name).xreplace(subs))


# Points with ties, signed zeros and halves: where NumPy's rules show.
X = [-2.5, -1.5, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 1.5, 2.5, 3.75, -3.0]
Y = [1.0, -1.5, 0.0, 2.0, 0.0, 0.25, -0.5, 1.0, 2.0, 2.5, -1.0, 0.5]
Z = [0.5, 1.0, 2.0, -1.0, 1.0, 3.0, 0.0, 5.0, 1.0, 1.0, -4.0, 2.0]


# ------------------------------------------------------------------ the entries
@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_oracle_is_the_exact_definition(name):
    arity = ENTRIES[name].arity
    for point in zip(X, Y, Z):
        point = point[:arity]
        want = exact(name, *point)
        assert float(ENTRIES[name].numpy(*point)) == want, (name, point)


def test_round_is_half_to_even_and_clip_is_numpys():
    assert [exact("round", v) for v in (0.5, 1.5, 2.5, -0.5, -2.5)] == [0, 2, 2, 0, -2]
    assert np.array_equal(ENTRIES["round"].numpy(np.array(X)), np.round(X))
    with np.errstate(invalid="ignore"):
        assert exact("clip", 5, 3, 1) == 1 == np.clip(5, 3, 1)  # lo > hi gives hi


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_stated_gradient_is_the_exact_difference_quotient(name):
    """Off the kinks every op here is locally linear or constant, so a symmetric difference
    quotient of the exact definition is its derivative, exactly."""
    spec = ENTRIES[name]
    h = Fraction(1, 2**20)
    points = [(0.3, 1.7, -0.6), (-1.2, 0.4, 2.2), (2.6, -0.7, 1.1), (1.45, 3.3, -2.9)]
    if name.startswith(("where", "logical")):
        points.append((0.0, 3.3, -2.9))  # a false condition (elsewhere 0 is a kink)
    for point in points:
        point = [Fraction(p) for p in point[: spec.arity]]
        for k in range(spec.arity):
            up, down = list(point), list(point)
            up[k] += h
            down[k] -= h
            quotient = (exact(name, *up) - exact(name, *down)) / (2 * float(h))
            floats = [float(p) for p in point]
            env = {**dict(zip("abc", floats)), "y": float(spec.numpy(*floats))}
            stated = run(local_gradient_template(name, k), env)
            assert float(stated) == quotient, (name, k, point)


def test_sympy_differentiates_the_definitions():
    """Where SymPy evaluates the derivative it agrees (0 for comparisons and logic)."""
    for name in ("lt", "le", "gt", "ge", "eq", "ne", "logical_and", "logical_or", "logical_not"):
        for symbol in (A, B)[: ENTRIES[name].arity]:
            assert sympy.diff(definition(name), symbol) == 0
    d = sympy.diff(definition("where"), B)
    assert d.subs(A, 2) == 1 and d.subs(A, 0) == 0


SPECIALS = [np.nan, np.inf, -np.inf, -0.0, 0.0, 0.5, 1.5, 2.5, -2.5, 1e300, -7.25, 3.0]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_lowering_matches_numpy_bit_for_bit(name, dtype):
    spec = ENTRIES[name]
    with np.errstate(over="ignore"):  # 1e300 is inf in float32
        grid = np.array(SPECIALS, dtype=dtype)
    mesh = np.meshgrid(*[grid] * spec.arity, indexing="ij")
    args = [m.ravel() for m in mesh]
    got = evaluate(spec.lower, *args, dtype=dtype)
    with np.errstate(all="ignore"):
        want = np.asarray(spec.numpy(*args))
    assert got.dtype == want.dtype == dtype
    assert np.array_equal(got, want, equal_nan=True), name
    assert np.array_equal(np.signbit(got), np.signbit(want)), name  # -0.0 where NumPy has it


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_lowering_vectorises_without_library_calls(name):
    for dtype in (np.float64, np.float32):
        text = optimised_ir(ENTRIES[name].lower, ENTRIES[name].arity, dtype)
        kind = "double" if dtype == np.float64 else "float"
        assert f"x {kind}>" in text, name
        calls = [line for line in text.splitlines() if " call " in line and "@llvm." not in line]
        assert not calls, calls


# ------------------------------------------------------------------ evaluating graphs
def run(graph: Graph, env: dict, output: int = 0, seed: float = 1.0):
    """One output of ``graph`` at ``env``, by each op's NumPy oracle."""
    values: list = []
    with np.errstate(all="ignore"):
        for node in graph.nodes:
            if node.op == INPUT:
                values.append(np.float64(env[node.value]))
            elif node.op == CONST:
                values.append(np.float64(node.value))
            elif node.op == SEED:
                values.append(np.float64(seed))
            else:
                args = [values[a] for a in node.args]
                values.append(np.float64(registry.OPS[node.op].numpy(*args)))
    return values[graph.outputs[output]]


def value_and_grad(text: str, **env):
    adj = adjoint(parse(text))
    return run(adj, env), {w: run(adj, env, 1 + k) for k, w in enumerate(adj.wrt)}


def finite_difference(text: str, name: str, env: dict, h: float = 1e-6) -> float:
    g = parse(text)
    up, down = dict(env), dict(env)
    up[name] += h
    down[name] -= h
    return (run(g, up) - run(g, down)) / (2 * h)


# ------------------------------------------------------------------ the double-where trap
def test_double_where_trap_gives_zero_not_nan():
    # JAX's FAQ and PyTorch's torch.where docs: the gradient of where(x > 0, sqrt(x), 0) at 0
    # is nan there (0 * inf from the unchosen branch). Here it is 0, and sqrt's own elsewhere.
    value, grad = value_and_grad("where(x > 0, sqrt(x), 0)", x=0.0)
    assert value == 0.0 and grad["x"] == 0.0
    value, grad = value_and_grad("where(x > 0, sqrt(x), 0)", x=4.0)
    assert value == 2.0 and grad["x"] == 0.25
    # log of a negative number (nan) and of 0 (-inf), gradients 1/x = -inf or nan: not chosen.
    for x in (0.0, -1.0):
        value, grad = value_and_grad("where(x > 0, log(x), x)", x=x)
        assert value == x and grad["x"] == 1.0
    # JAX's documented fix, written through two wheres: still 0, and no nan at x = 0.
    value, grad = value_and_grad("where(x > 0, sqrt(where(x > 0, x, 1)), 0)", x=0.0)
    assert value == 0.0 and grad["x"] == 0.0


def test_nan_in_the_unchosen_branch_gives_the_chosen_value_and_gradient():
    value, grad = value_and_grad("where(c, a * b, log(b - 10) * sqrt(-a))", c=1.0, a=3.0, b=2.0)
    assert value == 6.0 and grad == {"c": 0.0, "a": 2.0, "b": 3.0}
    value, grad = value_and_grad("where(c, 1 / (a - a), a * b)", c=0.0, a=3.0, b=2.0)
    assert value == 6.0 and grad == {"c": 0.0, "a": 2.0, "b": 3.0}


def test_deep_branches_and_nested_wheres_stay_clean():
    text = "where(x < 1, exp(sqrt(1 - x) * 3), where(x > 5, log(x - 5) ** 2, x * x))"
    for x, branch in ((0.5, 0), (7.0, 1), (3.0, 2), (1.0, 2), (5.0, 2)):
        value, grad = value_and_grad(text, x=x)
        assert math.isfinite(grad["x"]), (x, grad)
        fd = finite_difference(text, "x", {"x": x})
        if x not in (1.0, 5.0):  # boundaries: one-sided
            assert grad["x"] == pytest.approx(fd, rel=1e-6), (x, branch)
    _, grad = value_and_grad(text, x=1.0)
    assert grad["x"] == 2.0  # the branch taken at x = 1 is x * x


def test_ordinary_graphs_keep_ieee_products():
    # No where on the path: 0 * inf is nan, as NumPy (the kink table's sqrt'(0) = inf).
    _, grad = value_and_grad("sqrt(x) * y", x=0.0, y=0.0)
    assert math.isnan(grad["x"]) and grad["y"] == 0.0
    adj = adjoint(parse("sqrt(x) * exp(y)"))
    assert not any(adj.nodes[i].op == "where" for i in adj.backward_nodes())
    # A value read both inside and outside a where: the outside path's inf is the gradient.
    _, grad = value_and_grad("where(x > 0, sqrt(x), 0) + sqrt(x)", x=0.0)
    assert grad["x"] == math.inf


def test_where_condition_gets_no_gradient_and_nan_condition_is_true():
    value, grad = value_and_grad("where(c * 1, a, b)", c=float("nan"), a=2.0, b=3.0)
    assert value == 2.0 and grad == {"c": 0.0, "a": 1.0, "b": 0.0}
    assert np.where(np.nan, 2.0, 3.0) == 2.0  # NumPy's truth of nan


@pytest.mark.parametrize(
    "text",
    [
        "clip(x, y, z) * x",
        "round(x) * x + floor(y) * y - ceil(x * y) + trunc(z) * z",
        "where((x > 0) & ~(y > 1) | (z == 2), x * y, sin(z))",
        "clip(x * x, -1, 2) + where(x != y, exp(y), y)",
    ],
)
def test_gradients_match_finite_differences_off_the_boundaries(text):
    rng = np.random.default_rng(14)
    for _ in range(20):
        env = dict(zip("xyz", rng.uniform(-3, 3, 3)))
        _, grad = value_and_grad(text, **env)
        for name in grad:
            fd = finite_difference(text, name, env)
            assert grad[name] == pytest.approx(fd, rel=1e-5, abs=1e-7), (text, env, name)


def test_integer_valued_ops_and_comparisons_have_zero_gradient():
    _, grad = value_and_grad("floor(x) + ceil(x) + round(x) + trunc(x) + (x < 1) + (x == 2)", x=2)
    assert grad == {"x": 0.0}
    # clip's kink table row: ends go to x; below to lo, above (or lo > hi) to hi.
    for (x, lo, hi), want in {
        (1.0, 1.0, 2.0): (1, 0, 0), (2.0, 1.0, 2.0): (1, 0, 0), (0.0, 1.0, 2.0): (0, 1, 0),
        (3.0, 1.0, 2.0): (0, 0, 1), (1.5, 3.0, 1.0): (0, 0, 1),
    }.items():  # fmt: skip
        _, grad = value_and_grad("clip(x, lo, hi)", x=x, lo=lo, hi=hi)
        assert (grad["x"], grad["lo"], grad["hi"]) == want, (x, lo, hi)


# ------------------------------------------------------------------ text
@pytest.mark.parametrize(
    "text, env, want",
    [
        ("x < y", {"x": 1, "y": 2}, 1.0),
        ("x >= y", {"x": 1, "y": 2}, 0.0),
        ("x != y", {"x": math.nan, "y": math.nan}, 1.0),
        ("x == y", {"x": math.nan, "y": math.nan}, 0.0),
        ("x <= y", {"x": math.nan, "y": 1}, 0.0),
        ("0 < x < 1", {"x": 0.5}, 1.0),
        ("0 < x < 1", {"x": 1.5}, 0.0),
        ("(x > 0) & (y > 0)", {"x": 1, "y": -1}, 0.0),
        ("(x > 0) | (y > 0)", {"x": 1, "y": -1}, 1.0),
        ("~(x > 0)", {"x": -1}, 1.0),
        ("~x", {"x": math.nan}, 0.0),
        ("x > 0 & y", {"x": 1, "y": 3}, 1.0),  # Python: x > (0 & y), and 0 & y is 0
        ("x | y & z", {"x": 0, "y": 1, "z": 0}, 0.0),  # & before |
        ("where(x, y, z)", {"x": -0.0, "y": 1, "z": 2}, 2.0),
        ("(x < y) * 3 + 1", {"x": 1, "y": 2}, 4.0),
    ],
)
def test_text_comparisons_and_logic(text, env, want):
    assert run(parse(text), env) == want


@pytest.mark.parametrize(
    "text",
    [
        "(x < y) * 2",
        "x < (y < z)",
        "(x < y) < z",
        "(x > 0) & ~(y >= 1) | (x != y)",
        "x & (y | z)",
        "-(x < 1) ** 2",
        "where(x > 0, sqrt(x), clip(x, -1, 1)) + round(x)",
        "~(x & y)",
    ],
)
def test_listings_parse_back(text):
    g = parse(text)
    back = parse(g.to_text())
    assert str(back) == str(g)
    env = {"x": 0.7, "y": -1.25, "z": 3.0}
    assert run(back, env) == run(g, env)


@pytest.mark.parametrize(
    "text, words",
    [
        ("x and y", "'and'"),
        ("x or y", "'or'"),
        ("not x", "& | ~"),
        ("x is y", "unsupported comparison (Is)"),
        ("x in y", "unsupported comparison (In)"),
        ("where(x, y)", "where() takes 3 argument(s), got 2"),
    ],
)
def test_text_refusals_say_what_to_write(text, words):
    with pytest.raises(ParseError) as info:
        parse(text)
    assert words in str(info.value)


# ------------------------------------------------------------------ SymPy
def test_piecewise_becomes_nested_where():
    x, y = sympy.symbols("x y", real=True)
    expr = sympy.Piecewise((x**2, x < 0), (sympy.sqrt(x), sympy.And(x > 1, y <= 2)), (y, True))
    g = from_sympy(expr)
    assert sum(n.op == "where" for n in g.nodes) == 2
    f = sympy.lambdify((x, y), expr, modules="math")
    for point in [(-2.0, 0.0), (4.0, 1.0), (4.0, 3.0), (0.5, 7.0), (1.0, 2.0)]:
        assert run(g, dict(zip("xy", point))) == f(*point)
    # the double where of SymPy input: the gradient at 0 ignores the unchosen sqrt
    adj = adjoint(from_sympy(sympy.Piecewise((sympy.sqrt(x), x > 0), (0, True))))
    assert run(adj, {"x": 0.0}, 1) == 0.0


def test_piecewise_without_true_is_nan_where_no_condition_holds():
    x = sympy.Symbol("x", real=True)
    g = from_sympy(sympy.Piecewise((x, x > 0)))
    assert run(g, {"x": 2.0}) == 2.0 and math.isnan(run(g, {"x": -1.0}))


@pytest.mark.parametrize(
    "make, op",
    [
        (lambda x, y: sympy.Lt(x, y), "lt"),
        (lambda x, y: sympy.Le(x, y), "le"),
        (lambda x, y: sympy.Gt(x, y), "gt"),
        (lambda x, y: sympy.Ge(x, y), "ge"),
        (lambda x, y: sympy.Eq(x, y), "eq"),
        (lambda x, y: sympy.Ne(x, y), "ne"),
        (lambda x, y: sympy.Or(x > 0, y > 0), "logical_or"),
        (lambda x, y: sympy.And(x > 0, y > 0), "logical_and"),
        (lambda x, y: sympy.Not(sympy.And(x > 0, y > 0)), "logical_not"),
        (lambda x, y: sympy.floor(x) + y, "floor"),
        (lambda x, y: sympy.ceiling(x) * y, "ceil"),
    ],
)
def test_sympy_relations_logic_and_rounding(make, op):
    x, y = sympy.symbols("x y", real=True)
    expr = make(x, y)
    g = from_sympy(expr)
    assert any(n.op == op for n in g.nodes), str(g)
    for point in [(0.5, 1.5), (2.0, 2.0), (-1.5, 0.25), (3.25, -2.0)]:
        want = expr.subs(dict(zip((x, y), point)))
        want = float(1 if want is sympy.true else 0 if want is sympy.false else want)
        assert run(g, dict(zip("xy", point))) == want, (expr, point)


def test_to_sympy_of_where_and_clip():
    g = parse("where(x > 0, clip(y, -1, 1), floor(y))")
    x, y = sympy.symbols("x y")
    expr = g.to_sympy()
    assert expr.subs({x: 1, y: 5}) == 1 and expr.subs({x: -1, y: 2.5}) == 2


# ------------------------------------------------------------------ traced callables
def traced(fn):
    return trace_callable(fn)


def test_traced_comparisons_logic_and_where():
    g = traced(lambda x, y: ops.where((x > 0) & ~(y >= 1) | (x == y), ops.sqrt(x), 0.0))
    assert run(g, {"x": 4.0, "y": 0.0}) == 2.0
    assert run(g, {"x": -4.0, "y": 0.0}) == 0.0
    assert run(g, {"x": -4.0, "y": -4.0}) != run(g, {"x": -4.0, "y": -4.0})  # sqrt(-4): nan
    assert run(traced(lambda x: 0 < x), {"x": 1.0}) == 1.0  # reflected: x > 0
    assert run(traced(lambda x: x != 1), {"x": 1.0}) == 0.0


def test_numpy_functions_on_traced_values():
    g = traced(lambda x, y: np.where(np.less(x, y), np.floor(x), np.clip(y, -1, 1)) + np.rint(y))
    for x, y in [(0.5, 2.5), (3.0, 2.5), (-1.0, -7.0)]:
        want = np.where(x < y, np.floor(x), np.clip(y, -1, 1)) + np.rint(y)
        assert run(g, {"x": x, "y": y}) == want
    g = traced(lambda x: np.round(x) + np.ceil(x) + np.trunc(x) + np.logical_not(x))
    assert run(g, {"x": -2.5}) == np.round(-2.5) + np.ceil(-2.5) + np.trunc(-2.5) + 0


def test_python_rounding_on_traced_values():
    g = traced(lambda x: round(x) + math.floor(x) * 10 + math.ceil(x) * 100 + math.trunc(x))
    assert run(g, {"x": 2.5}) == round(2.5) + 20 + 300 + 2  # half to even: 2
    with pytest.raises(ParseError, match="ndigits"):
        traced(lambda x: round(x, 2))
    with pytest.raises(ParseError, match="no truth value"):
        traced(lambda x: x if x > 0 else -x)


def test_ops_functions_on_numbers_and_sympy():
    assert ops.where(0.0, 1.0, 2.0) == 2.0 and ops.where(np.nan, 1.0, 2.0) == 1.0
    assert ops.clip(5.0, 0.0, 1.0) == 1.0 and ops.round(2.5) == 2.0
    x = sympy.Symbol("x", real=True)
    assert ops.where(x, 1, 2) == sympy.Piecewise((1, sympy.Ne(x, 0)), (2, True))
    assert ops.clip(x, 0, 1).subs(x, 3) == 1


# ------------------------------------------------------------------ end to end, every tier
MODES = ["instant", "compiled", "auto", "llvm"]


def kernel(source, mode: str, monkeypatch, **kwargs):
    """``source`` compiled on one tier; "llvm" is the compiled mode on the LLVM backend."""
    import compiler
    from runtime import policy

    if mode == "llvm":
        monkeypatch.setattr(policy, "LLVM_OPS", -1)
    k = compiler.compile_gradient(source, mode="compiled" if mode == "llvm" else mode, **kwargs)
    if mode == "llvm":
        assert k._uses_llvm()
    return k


@pytest.fixture
def fresh_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize("mode", MODES)
def test_double_where_on_every_tier(mode, monkeypatch, fresh_cache):
    x = np.array([-1.0, 0.0, 0.25, 4.0, np.inf])
    k = kernel("where(x > 0, sqrt(x), 0) + where(x > 0, log(x), x)", mode, monkeypatch)
    value, grad = k.value_and_grad(x)
    with np.errstate(all="ignore"):
        want = np.where(x > 0, np.sqrt(x), 0) + np.where(x > 0, np.log(x), x)
        slope = np.where(x > 0, 0.5 / np.sqrt(x) + 1 / x, 1.0)  # the chosen branches only
    np.testing.assert_array_equal(value, want)
    np.testing.assert_allclose(grad["x"], slope, rtol=1e-15)
    assert grad["x"][1] == 1.0  # x = 0: sqrt's inf and log's -inf never reach it


@pytest.mark.parametrize("mode", MODES)
def test_unchosen_nan_on_every_tier(mode, monkeypatch, fresh_cache):
    k = kernel("where(c, a * b, log(b - 10) * sqrt(-a))", mode, monkeypatch)
    value, grad = k.value_and_grad(np.array([1.0, 1.0]), np.array([3.0, 2.0]), np.array([2.0, 5.0]))
    np.testing.assert_array_equal(value, [6.0, 10.0])
    np.testing.assert_array_equal(grad["a"], [2.0, 5.0])
    np.testing.assert_array_equal(grad["b"], [3.0, 2.0])
    np.testing.assert_array_equal(grad["c"], [0.0, 0.0])


MIXED = (
    "clip(x * y, -1, 2) + round(x) * y - floor(y) * ceil(x) + trunc(x - y) "
    "+ where((x > 0) & ~(y > 1) | (x == y), exp(y) * x, sin(x * y)) + (x < y) * x"
)


def mixed_numpy(x, y):
    pick = ((x > 0) & ~(y > 1)) | (x == y)
    return (
        np.clip(x * y, -1, 2) + np.round(x) * y - np.floor(y) * np.ceil(x) + np.trunc(x - y)
        + np.where(pick, np.exp(y) * x, np.sin(x * y)) + (x < y) * x
    )  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
def test_values_and_gradients_on_every_tier(mode, monkeypatch, fresh_cache):
    rng = np.random.default_rng(7)
    x, y = rng.uniform(-3, 3, 200), rng.uniform(-3, 3, 200)
    x[:4], y[:4] = [0.5, 1.5, -2.5, 2.0], [2.5, 1.0, 0.0, 2.0]  # ties of round, x == y
    k = kernel(MIXED, mode, monkeypatch)
    value, grad = k.value_and_grad(x, y)
    np.testing.assert_allclose(value, mixed_numpy(x, y), rtol=1e-14, atol=1e-14)
    h = 1e-7
    off = slice(4, None)  # finite differences away from the ties and boundaries
    for name, dx, dy in (("x", h, 0), ("y", 0, h)):
        fd = (mixed_numpy(x + dx, y + dy) - mixed_numpy(x - dx, y - dy)) / (2 * h)
        np.testing.assert_allclose(grad[name][off], fd[off], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["instant", "compiled", "auto"])  # no LLVM tensor tier
def test_tensor_kernels_on_every_tier(mode, monkeypatch, fresh_cache):
    source = "sum(where(x > 0, sqrt(x), 0) * y + clip(x, -1, y) + floor(x) * ((x < y) | ~(y != 0)))"
    x, y = np.array([-1.0, 0.0, 0.5, 2.5, 4.0]), np.array([1.0, 2.0, 0.0, 3.0, -1.0])
    k = kernel(source, mode, monkeypatch, shapes={"x": ("n",), "y": ("n",)})
    value, grad = k.value_and_grad(x=x, y=y)
    with np.errstate(all="ignore"):
        root = np.where(x > 0, np.sqrt(x), 0)
        want = np.sum(root * y + np.clip(x, -1, y) + np.floor(x) * ((x < y) | (y == 0)))
        dx = np.where(x > 0, 0.5 / root * y, 0) + ((x >= -1) & (x <= y))
        dy = root + ((x > y) | (-1 > y))  # clip's hi gets x above it, and all of lo > hi
    assert value == pytest.approx(want, rel=1e-15)
    np.testing.assert_allclose(grad["x"], dx, rtol=1e-15)
    np.testing.assert_allclose(grad["y"], dy, rtol=1e-15)


@pytest.mark.parametrize("mode", ["instant", "compiled"])
def test_callables_and_sympy_compile(mode, monkeypatch, fresh_cache):
    import compiler

    x = np.array([-2.0, 0.0, 0.3, 9.0])
    k = compiler.compile_gradient(lambda x: np.where(x > 0, np.sqrt(x), np.floor(x)), mode=mode)
    value, grad = k.value_and_grad(x)
    np.testing.assert_array_equal(value, [-2.0, 0.0, np.sqrt(0.3), 3.0])
    np.testing.assert_allclose(grad["x"], [0.0, 0.0, 0.5 / np.sqrt(0.3), 1 / 6], rtol=1e-15)
    s = sympy.Symbol("x", real=True)
    k = compiler.compile_gradient(sympy.Piecewise((sympy.sqrt(s), s > 0), (0, True)), mode=mode)
    value, grad = k.value_and_grad(x)
    np.testing.assert_array_equal(grad["x"], [0.0, 0.0, 0.5 / np.sqrt(0.3), 1 / 6])


def test_numpy_signatures_of_clip_round_and_where_on_traced_values():
    g = traced(lambda x, y: np.clip(x, None, y) + np.clip(x, a_min=0, a_max=None) * 10)
    for x, y in [(2.0, 1.0), (-3.0, 5.0), (0.5, 0.25)]:
        assert run(g, {"x": x, "y": y}) == np.clip(x, None, y) + np.clip(x, 0, None) * 10
    for fn, words in [
        (lambda x: np.round(x, 2), "decimals"),
        (lambda x: np.where(x), r"np.where\(condition, x, y\)"),
        (lambda x: np.clip(x, 0, 1, out=x), "out="),
    ]:
        with pytest.raises(ParseError, match=words):
            traced(fn)

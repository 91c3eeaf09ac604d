"""Stabilisations (issue 15): fusion rewrites forms that overflow or lose every digit into the
stable op of the entry that states the rule (``lhs -> rhs`` patterns).

For each rule: fusion finds it in text, SymPy and traced callables, in common variants; values
and gradients at the hostile points and over the domain (hypothesis) match mpmath on the
*original* formula (60 digits; gradients by mpmath's own differences) to a few ulp, on every
tier; ``fuse=False`` keeps the literal graph and its unstable value; the report lists what was
replaced; a shared interior node blocks the rewrite and is reported.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import mpmath
import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import compiler
from compiler.errors import GateError
from compiler.frontend.text import parse
from compiler.ir.registry import OPS
from compiler.passes.fusion import fuse
from compiler.passes.fusion.patterns import compile_pattern
from runtime import cache, policy
from symgrad import ops

mp = mpmath.mp
EPS = np.finfo(np.float64).eps
ULPS = 4
X, Y, A, B, C, D = sp.symbols("x y a b c d")


@dataclass(frozen=True)
class Rule:
    name: str
    op: str  # the op the rule introduces
    gone: str  # an op no longer in the fused graph
    text: str  # the canonical form, compiled on every tier
    oracle: Callable  # the original formula, in mpmath
    domain: dict[str, tuple[float, float]]
    hostile: tuple[dict[str, float], ...]
    unstable: tuple[float, ...]  # the unfused value at each hostile point
    variants: tuple[object, ...]  # other text, SymPy expressions, callables
    conditioned: bool = False  # logaddexp's: a - y cancels, errors ~ max(|y|, |inputs|) ulp

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(self.domain)


M = mpmath
RULES = [
    Rule("logsigmoid", "logsigmoid", "sigmoid", "log(1 - sigmoid(x))",
         lambda x: M.log(1 - 1 / (1 + M.exp(-x))), {"x": (-1e3, 1e3)},
         ({"x": 50.0},), (-math.inf,),
         ("log1p(-sigmoid(x))", "log(-sigmoid(x) + 1)", "log(1 - sigmoid(-2 * x))",
          lambda x: ops.log(1 - ops.sigmoid(x)), lambda x: ops.log1p(-ops.sigmoid(x)))),
    Rule("sigmoid", "sigmoid", "exp", "sigmoid(-x) * exp(x)",
         lambda x: M.exp(x) / (1 + M.exp(x)), {"x": (-700.0, 1e4)},
         ({"x": 800.0},), (math.nan,),
         ("exp(x) * sigmoid(-x)", "sigmoid(-3 * x) * exp(3 * x)", "sigmoid(x) * exp(-x)",
          ops.sigmoid(-X) * sp.exp(X), lambda x: ops.sigmoid(-x) * ops.exp(x))),
    Rule("log1mexp", "log1mexp", "exp", "log(1 - exp(x))",
         lambda x: M.log(1 - M.exp(x)), {"x": (-1e3, -1e-300)},
         ({"x": -(2.0**-55)}, {"x": -500.0}), (-math.inf, 0.0),
         ("log1p(-exp(x))", "log(-exp(x) + 1)", "log(1 - exp(-2 * x))",
          sp.log(1 - sp.exp(X)), lambda x: ops.log(1 - ops.exp(x)))),
    Rule("logaddexp", "logaddexp", "exp", "log(exp(x) + exp(y))",
         lambda x, y: M.log(M.exp(x) + M.exp(y)), {"x": (-1e4, 1e4), "y": (-1e4, 1e4)},
         ({"x": 1e4, "y": 1e4}, {"x": -1e4, "y": -1e4}), (math.inf, -math.inf),
         ("log(exp(y) + exp(x))", "log(exp(-x) + exp(2 * y))", sp.log(sp.exp(X) + sp.exp(Y)),
          lambda x, y: ops.log(ops.exp(x) + ops.exp(y))), conditioned=True),
    Rule("logsumexp3", "logaddexp", "exp", "log(exp(a) + exp(b) + exp(c))",
         lambda a, b, c: M.log(M.exp(a) + M.exp(b) + M.exp(c)),
         {"a": (-1e3, 1e3), "b": (-1e3, 1e3), "c": (-1e3, 1e3)},
         ({"a": 1e4, "b": 1e4, "c": 1e4},), (math.inf,),
         ("log(exp(a) + (exp(b) + exp(c)))", "log((exp(a) + exp(b)) + (exp(c) + exp(d)))",
          "log(exp(a) + exp(b) + exp(c) + exp(d) + exp(x) + exp(y) + exp(-a))",
          sp.log(sp.exp(A) + sp.exp(B) + sp.exp(C) + sp.exp(D) + sp.exp(X)),
          lambda a, b, c, d: ops.log(ops.exp(a) + ops.exp(b) + ops.exp(c) + ops.exp(d))),
         conditioned=True),
    # a softmax of numbers and its log: the numerator's exp(a) is one of the sum's terms,
    # wherever it stands (JAX's log_softmax: x - max - log(sum(exp(x - max))))
    Rule("log_softmax3", "logaddexp", "exp", "log(exp(a) / (exp(a) + exp(b) + exp(c)))",
         lambda a, b, c: M.log(M.exp(a) / (M.exp(a) + M.exp(b) + M.exp(c))),
         {"a": (-1e3, 1e3), "b": (-1e3, 1e3), "c": (-1e3, 1e3)},
         ({"a": 1e3, "b": -1e3, "c": 0.0}, {"a": -800.0, "b": 0.0, "c": 0.0}),
         (math.nan, -math.inf),
         ("log(exp(b) / (exp(a) + exp(b) + exp(d)))", "log(exp(c) / (exp(a) + (exp(b) + exp(c))))",
          "log(exp(2 * a) / (exp(b) + exp(2 * a) + exp(-a)))",
          sp.log(sp.exp(B) / (sp.exp(A) + sp.exp(B) + sp.exp(C))),
          lambda a, b, c: ops.log(ops.exp(a) / (ops.exp(a) + ops.exp(b) + ops.exp(c)))),
         conditioned=True),
    Rule("softmax3", "logaddexp", "div", "exp(b) / (exp(a) + exp(b) + exp(c))",
         lambda a, b, c: M.exp(b) / (M.exp(a) + M.exp(b) + M.exp(c)),
         {"a": (-700.0, 700.0), "b": (-700.0, 700.0), "c": (-700.0, 700.0)},
         ({"a": 0.0, "b": 1e3, "c": 999.0}, {"a": -800.0, "b": -800.0, "c": -801.0}),
         (math.nan, math.nan),
         ("exp(a) / (exp(a) + exp(b) + exp(c))", "exp(c) / (exp(c) + exp(a) + exp(b) + exp(d))",
          sp.exp(A) / (sp.exp(A) + sp.exp(B) + sp.exp(C)),
          lambda a, b, c: ops.exp(b) / (ops.exp(a) + ops.exp(b) + ops.exp(c))),
         conditioned=True),
    Rule("expm1", "expm1", "exp", "exp(x) - 1", lambda x: M.exp(x) - 1, {"x": (-700.0, 700.0)},
         ({"x": 1e-10},), (1.000000082740371e-10,),
         ("-1 + exp(x)", "exp(2 * x) - 1", sp.exp(X) - 1, lambda x: ops.exp(x) - 1)),
    Rule("log1p", "log1p", "log", "log(1 + x)", lambda x: M.log(1 + x), {"x": (-0.999, 1e300)},
         ({"x": 1e-20},), (0.0,),
         ("log(x + 1)", "log(1 + 2 * x)", sp.log(1 + X), lambda x: ops.log(1 + x))),
    Rule("neg_expm1", "expm1", "exp", "1 - exp(-x)", lambda x: 1 - M.exp(-x),
         {"x": (-700.0, 700.0)}, ({"x": 1e-20},), (0.0,),
         ("-exp(-x) + 1", "1 - exp(x)", 1 - sp.exp(-X), lambda x: 1 - ops.exp(-x))),
    Rule("hypot", "hypot", "sqrt", "sqrt(x * x + y * y)", lambda x, y: M.sqrt(x * x + y * y),
         {"x": (-1e300, 1e300), "y": (-1e300, 1e300)},
         ({"x": 1e200, "y": 1e200}, {"x": 3e-200, "y": 4e-200}), (math.inf, 0.0),
         ("sqrt(x ** 2 + y ** 2)", "sqrt(y * y + x ** 2)", "sqrt((2 * x) ** 2 + y * y)",
          sp.sqrt(X**2 + Y**2), lambda x, y: ops.sqrt(x * x + y * y))),
]  # fmt: skip
BY_NAME = {r.name: r for r in RULES}
VARIANTS = [(r, r.text) for r in RULES] + [(r, v) for r in RULES for v in r.variants]


def _id(case) -> str:
    rule, form = case
    kind = "text" if isinstance(form, str) else "sympy" if isinstance(form, sp.Basic) else "call"
    return f"{rule.name}-{kind}-{form if isinstance(form, (str, sp.Basic)) else ''}"


# ------------------------------------------------------------------ (1) fusion finds the rules
@pytest.mark.parametrize("case", VARIANTS, ids=[_id(c) for c in VARIANTS])
def test_fusion_finds_the_rule(case):
    rule, form = case
    graph, report = fuse(compiler.trace(form))
    used = {n.op for n in graph.nodes}
    assert rule.op in used and rule.gone not in used, str(graph)
    assert (report.stabilised or report.fused) and not report.skipped  # SymPy writes
    # sigmoid(-x) * exp(x) as exp(x) / (exp(x) + 1): a gate pattern


@pytest.mark.parametrize(
    "text, n",
    [("log(exp(a) + exp(b))", 2), ("log(exp(a) + exp(b) + exp(c))", 3),
     ("log(((exp(a) + exp(b)) + exp(c)) + exp(d))", 4),
     ("log(exp(a) + (exp(b) + (exp(c) + (exp(d) + exp(x)))))", 5)],
)  # fmt: skip
def test_a_sum_of_n_exps_becomes_a_balanced_nest(text, n):
    graph, _ = fuse(parse(text))
    nodes = [node for node in graph.nodes if node.op == "logaddexp"]
    assert len(nodes) == n - 1 and "exp" not in {node.op for node in graph.nodes}
    assert _depth(graph, graph.outputs[0]) == math.ceil(math.log2(n))


def _depth(graph, i: int) -> int:
    node = graph.nodes[i]
    return 0 if node.op != "logaddexp" else 1 + max(_depth(graph, a) for a in node.args)


@pytest.mark.parametrize(
    "text, op", [("log(exp(b) / (exp(a) + exp(b)))", "logsigmoid"),
                 ("log(exp(a) / (exp(a) + exp(b)))", "logsigmoid"),
                 ("exp(b) / (exp(b) + exp(a))", "sigmoid"), ("exp(a) / (exp(a) + exp(b))", "sigmoid")],
)  # fmt: skip
def test_a_softmax_of_two_numbers_is_a_sigmoid_of_their_difference(text, op):
    graph, report = fuse(parse(text))
    assert [graph.nodes[i].op for i in graph.op_nodes()] == ["sub", op], str(graph)
    k = compiler.compile_gradient(text, mode="instant")
    winner = 1000.0 if text.startswith(("log(exp(a)", "exp(a)")) else -1000.0
    value, grads = k.value_and_grad(a=winner, b=-winner)
    want = 0.0 if op == "logsigmoid" else 1.0  # log(1), 1: the numerator's term wins
    assert float(value) == want and all(np.isfinite(g) for g in grads.values())


def test_sums_with_other_terms_are_not_rewritten():
    for text in ("log(exp(a) + exp(b) + c)", "log(exp(a) + 1)", "log(exp(a) - exp(b))",
                 "exp(a) / (exp(b) + exp(c))", "exp(a) / (exp(2 * a) + exp(b))"):  # fmt: skip
        graph, report = fuse(parse(text))
        assert "logaddexp" not in {n.op for n in graph.nodes}, text


def test_gates_win_over_stabilisations_at_the_same_root():
    """log(1 + exp(x)) is softplus (a gate), not log1p(exp(x)) then softplus."""
    graph, report = fuse(parse("log(1 + exp(x))"))
    assert [graph.nodes[i].op for i in graph.op_nodes()] == ["softplus"]
    assert [f.gate for f in report.fused] == ["softplus"] and not report.stabilised


def test_fuse_names_select_stabilisations():
    graph, report = fuse(parse("log(1 + x) + (exp(y) - 1)"), ["expm1"])
    assert {n.op for n in graph.nodes} >= {"expm1", "log"}
    assert [f.gate for f in report.stabilised] == ["expm1"]


def test_stabilising_ops_stay_ordinary_ops():
    """Carrying patterns does not make expm1 a gate (gate_names, discovery read is_gate)."""
    names = compiler.gate_names()
    for op in ("log1p", "expm1", "hypot", "logaddexp", "log1mexp"):
        assert not OPS[op].is_gate and op not in names


def test_a_replacement_must_compute_the_op_once():
    with pytest.raises(GateError, match="replacement"):
        compile_pattern("expm1", "1 - exp(-x) -> -x")
    with pytest.raises(GateError, match="replacement"):
        compile_pattern("expm1", "1 - exp(-x) -> expm1(-x) * expm1(x)")
    with pytest.raises(GateError, match="each operand"):
        compile_pattern("expm1", "1 - exp(-x) -> expm1(x * x)")
    with pytest.raises(GateError, match="every variable"):
        compile_pattern("hypot", "sqrt(x * x + y * y) -> hypot(x, x)")


# ------------------------------------------------------------------ (2) values and gradients
TIERS = ("instant", "numba", "llvm", "auto")
ANSWERS = {"instant": "vm", "numba": "numba", "llvm": "llvm-O3", "auto": "llvm-O0"}


@contextlib.contextmanager
def on_tier(tier: str):
    """The policy patched so that kernels compiled and called within answer from ``tier``
    (tests/test_oracle.py's way; auto: a fresh cache, so its stand-in answers first)."""
    saved = (policy.LLVM_OPS, policy.LLVM_TRIG, os.environ.get("SYMGRAD_CACHE_DIR"), cache._loaded)
    with tempfile.TemporaryDirectory() as fresh:
        try:
            if tier == "numba":
                policy.LLVM_OPS, policy.LLVM_TRIG = 10**9, False
            elif tier == "llvm":
                policy.LLVM_OPS = -1
            elif tier == "auto":
                os.environ["SYMGRAD_CACHE_DIR"] = fresh
                cache._loaded = {}
            yield "compiled" if tier in ("numba", "llvm") else tier
        finally:
            policy.LLVM_OPS, policy.LLVM_TRIG, directory, cache._loaded = saved
            if directory is None:
                os.environ.pop("SYMGRAD_CACHE_DIR", None)
            else:
                os.environ["SYMGRAD_CACHE_DIR"] = directory


def exact(rule: Rule, point: dict[str, float]) -> tuple[float, dict[str, float]]:
    """The original formula's value and partial derivatives by mpmath (central differences
    with a step far below float64's resolution at the point), with 60 digits more than the
    formula cancels: 1 - exp(-x) loses -log10|x| digits near 0, 1 - sigmoid(x) about x / 2.3."""
    lost = max(_lost(point[v]) for v in rule.inputs)
    with mp.workdps(60 + 2 * lost):
        args = [mp.mpf(point[v]) for v in rule.inputs]
        value = rule.oracle(*args)
        grads = {}
        for j, v in enumerate(rule.inputs):
            h = mp.mpf(10) ** -(30 + lost) * max(abs(args[j]), 1)

            def along(t, j=j):
                return rule.oracle(*(t if k == j else a for k, a in enumerate(args)))

            grads[v] = float(mp.diff(along, args[j], h=h))
        return float(value), grads


def _lost(x: float) -> int:
    if x == 0:
        return 0
    return min(1000, math.ceil(-math.log10(abs(x)) if abs(x) < 1 else abs(x) / 2.3))


def check(kernel, rule: Rule, point: dict[str, float]) -> None:
    got, grads = kernel.value_and_grad(**{v: np.array([point[v]]) for v in rule.inputs})
    want, want_grads = exact(rule, point)
    size = max(abs(want), *(abs(point[v]) for v in rule.inputs))  # the inputs' scale
    ulps = ULPS * size / abs(want) if rule.conditioned and 0 < abs(want) < size else ULPS
    assert close(float(got[0]), want, ulps), (rule.name, point, got, want)
    scale = ULPS * (1 + size) * len(rule.inputs) if rule.conditioned else ULPS
    for v in rule.inputs:
        g = float(grads[v][0])
        assert close(g, want_grads[v], scale), (rule.name, point, v, g, want_grads[v])


def close(got: float, want: float, ulps: float) -> bool:
    if math.isnan(want) or math.isinf(want):
        return got == want or (math.isnan(got) and math.isnan(want))
    return abs(got - want) <= ulps * EPS * abs(want) or (abs(want) < 1e-300 and abs(got) < 1e-300)


def points(rule: Rule):
    return st.fixed_dictionaries(
        {
            v: st.floats(lo, hi, allow_nan=False, allow_infinity=False)
            for v, (lo, hi) in rule.domain.items()
        }
    )


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_values_and_gradients_match_mpmath(rule, tier):
    with on_tier(tier) as mode:
        k = compiler.compile_gradient(rule.text, inputs=list(rule.inputs), mode=mode)
        assert k.fusion.stabilised
        for point in rule.hostile:
            check(k, rule, point)
        assert k.tier == ANSWERS[tier]

        @settings(max_examples=25, deadline=None, derandomize=True, database=None)
        @given(points(rule))
        def over_the_domain(point):
            check(k, rule, point)

        over_the_domain()


def test_the_check_can_fail():
    """The oracle check refuses the unfused forms at the hostile points."""
    for rule in RULES:
        k = compiler.compile_gradient(rule.text, inputs=list(rule.inputs), fuse=False,
                                      mode="instant")  # fmt: skip
        with pytest.raises(AssertionError):
            for point in rule.hostile:
                check(k, rule, point)


# ------------------------------------------------------------------ (3) fuse=False is literal
@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_fuse_false_keeps_the_literal_graph_and_its_unstable_value(rule):
    k = compiler.compile_gradient(rule.text, inputs=list(rule.inputs), fuse=False, mode="instant")
    assert str(k.graph) == str(compiler.trace(rule.text, list(rule.inputs)))
    assert not k.fusion.stabilised and not k.graph.notes
    for point, unstable in zip(rule.hostile, rule.unstable):
        got = float(k(**{v: np.array([point[v]]) for v in rule.inputs})[0])
        assert got == unstable or (math.isnan(got) and math.isnan(unstable)), (point, got)


# ------------------------------------------------------------------ (4) the report
@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_the_report_lists_each_stabilisation(rule):
    _, report = fuse(parse(rule.text))
    text = str(report)
    assert report.stabilised and all(f.gate == rule.op for f in report.stabilised)
    for f in report.stabilised:
        assert f"stabilised: {f.node} = {f.call}  replaces  {f.replaced}" in text
    assert not report.fused


def test_the_report_and_listing_say_what_was_replaced():
    k = compiler.compile_gradient("log(1 - exp(x)) + log(exp(y) + exp(z))", mode="instant")
    text = str(k.fusion)
    assert "stabilised: t0 = log1mexp(x)  replaces  log(1 - exp(x))" in text
    assert "stabilised: t1 = logaddexp(y, z)  replaces  log(exp(y) + exp(z))" in text
    assert "unfused, it overflows at y = -1000, 1000" in text  # probed at y = z
    listing = str(k.graph)
    assert "log1mexp(x)  # fused: log(1 - exp(x))" in listing
    assert "logaddexp(y, z)  # fused: log(exp(y) + exp(z))" in listing
    assert "# fused: log(exp(y[i]) + exp(z[i]))" in k.source


def test_a_negated_replacement_notes_what_its_op_node_replaced():
    graph, report = fuse(parse("1 - exp(-x)"))
    (f,) = report.stabilised
    assert f.gate == "expm1" and f.replaced == f"-(1 - exp({f.operand}))"
    assert str(graph).splitlines()[-2].startswith("t2 = -t1")


# ------------------------------------------------------------------ (5) shared interiors
@pytest.mark.parametrize(
    "text, op",
    [("log(1 - exp(x)) + exp(x)", "log1mexp"), ("log(exp(x) + exp(y)) * exp(y)", "logaddexp"),
     ("sqrt(x * x + y * y) + x * x", "hypot"), ("log(1 - sigmoid(x)) * sigmoid(x)", "logsigmoid"),
     ("log(exp(a) + exp(b) + exp(c)) - (exp(a) + exp(b))", "logaddexp")],
)  # fmt: skip
def test_a_shared_interior_node_is_not_rewritten_and_is_reported(text, op):
    graph, report = fuse(parse(text))
    assert op not in {n.op for n in graph.nodes}
    assert any(f"matches {op} but" in s for s in report.skipped), report.skipped
    assert "skipped: " in str(report)


# ------------------------------------------------------------------ tensor programs
def test_stabilisations_fire_inside_tensor_programs():
    shapes = {"x": ("n",), "v": ("n",), "w": ("n",)}
    k = compiler.compile_gradient("sum(log(1 - exp(x)) + log(exp(v) + exp(w)))", shapes=shapes)
    ops_used = {n.op for n in k.graph.nodes}
    assert {"log1mexp", "logaddexp"} <= ops_used and "exp" not in ops_used
    x, v = np.array([-(2.0**-55), -500.0]), np.array([1e4, -1e4])
    value, grads = k.value_and_grad(x=x, v=v, w=v)
    want = np.log(-np.expm1(x[0])) + np.log1p(-np.exp(x[1])) + np.logaddexp(v, v).sum()
    assert value == pytest.approx(want, rel=4 * EPS)
    np.testing.assert_allclose(grads["v"], [0.5, 0.5], rtol=1e-12)
    unfused = compiler.compile_gradient(
        "sum(log(1 - exp(x)) + log(exp(v) + exp(w)))", shapes=shapes, fuse=False
    )
    assert not np.isfinite(unfused(x=x, v=v, w=v))


def test_log_of_softmax_is_log_softmax_in_tensor_programs():
    shapes = {"S": ("B", "C")}
    for text in ("log(exp(S) / sum(exp(S), axis=1, keepdims=True))", "log(softmax(S, axis=1))"):
        k = compiler.compile_gradient(f"sum({text})", shapes=shapes)
        assert "log_softmax" in {n.op for n in k.graph.nodes}, text
        value = k(S=np.array([[1000.0, 0.0], [0.0, -1000.0]]))
        assert np.isfinite(value)


def test_a_gate_of_two_operands_is_drawn_expanded():
    k = compiler.compile_gradient("log(exp(x) + exp(y))", mode="instant")
    drawing = compiler.draw(k, at={"x": 1.0, "y": 2.0}, expand=True)
    assert "<b>logaddexp</b> (fused) = log(exp(x) + exp(y))" in drawing.source
    assert drawing.source.count("label=<exp>") == 2  # both operands feed the subgraph

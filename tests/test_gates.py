"""The gate registry: built-in gates proved by SymPy, their stable forward and gradient at the
extremes (checked against mpmath at 50 digits), and user registration — proofs, refusals, safety
and cache keys. Expected numbers come from mpmath or SymPy, never from symgrad itself."""

from __future__ import annotations

import ast
import math
import warnings

import mpmath
import numpy as np
import pytest
import sympy

import compiler
from compiler import GateError, ParseError, ops
from compiler.ir import registry
from compiler.ir.registry import FUNCTIONS, OPS
from compiler.passes import gates

mpmath.mp.dps = 50
BUILTIN_GATES = ("sigmoid", "tanh", "softplus", "logsigmoid", "relu")


def mp_sigmoid(x):
    return 1 / (1 + mpmath.exp(-mpmath.mpf(x)))


def mp_softplus(x):
    return mpmath.log1p(mpmath.exp(mpmath.mpf(x)))  # log(1 + tiny) would lose digits even here


@pytest.fixture
def clean_gates():
    """Unregister every user gate a test made, so other tests see the built-in language."""
    before = set(OPS)
    yield
    for name in [n for n in OPS if n not in before and OPS[n].origin == "user"][::-1]:
        compiler.unregister_gate(name)


def no_warnings(fn, *args, **kwargs):
    """Call with every warning an error and NumPy raising on overflow/invalid."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            return fn(*args, **kwargs)


# ------------------------------------------------------------------ the built-in gates
def test_builtin_gates_are_registered_in_the_op_table():
    assert set(BUILTIN_GATES) <= set(compiler.gate_names())
    for name in BUILTIN_GATES:
        spec = OPS[name]
        assert spec.is_gate and spec.patterns and spec.stable and spec.grads
        assert name in FUNCTIONS  # callable from text and compiler.ops
        assert callable(getattr(ops, name))


@pytest.mark.parametrize("name", BUILTIN_GATES)
def test_builtin_gate_is_proved_by_sympy(name):
    proof = gates.verify(OPS[name])
    assert proof.gradient and proof.stable and proof.points >= 10


@pytest.mark.parametrize("name", ["sigmoid", "softplus", "logsigmoid"])
def test_stable_form_is_the_definition_by_cases(name):
    """The stable text (what the helper computes) minus the definition, each sign of x."""
    a = registry.placeholders()[0]
    stable = gates.sympy_text(OPS[name].stable)
    assert gates.prove_zero(stable - registry.sympy_definition(name), a) is not None


POINTS = [-1000, -745, -709.8, -100, -37.43, -20, -1, -1e-8, 0, 1e-8, 0.5, 1, 20, 37.43, 100, 1000]


def helper_values(name: str) -> np.ndarray:
    """The Numba helper (runtime/scalar.py) at every point, through a compiled kernel: that is
    where it runs (the kernel module seals the helpers' Numba cache before their first call)."""
    kernel = compiler.compile_gradient(f"{name}(x)", mode="compiled")
    return kernel(x=np.array(POINTS, dtype=float))


@pytest.mark.parametrize(
    "name, truth",
    [
        ("sigmoid", mp_sigmoid),
        ("softplus", mp_softplus),
        ("logsigmoid", lambda x: -mp_softplus(-x)),
    ],
)
def test_numba_helpers_match_mpmath(name, truth):
    """runtime.scalar's stable forms, to 2 ulp of the 50-digit truth (or 1e-300 absolute)."""
    got = helper_values(name)
    for x, value in zip(POINTS, got):
        assert math.isfinite(value)
        assert value == pytest.approx(float(truth(x)), rel=5e-16, abs=1e-300), (name, x)


@pytest.mark.parametrize("name", ["softplus", "logsigmoid"])
def test_numpy_forms_match_the_helpers(name):
    """The NumPy form rounds log1p(exp(-|x|)) twice; the compiled one takes log(1 + e) straight
    from e in double-double (0.45 ulp at x = -1, where NumPy's is 0.55): they agree to 1 ulp."""
    got = no_warnings(OPS[name].numpy, np.array(POINTS, dtype=float))
    np.testing.assert_array_max_ulp(got, helper_values(name), maxulp=1)


def test_sigmoid_is_rounded_once():
    """sigmoid's lowering is double-double (vecmath.vector_sigmoid): within 0.6 ulp of mpmath
    where the NumPy form e r / (1 + e) rounds three times (2.2 ulp measured); both agree to
    3 ulp."""
    got = helper_values("sigmoid")
    for x, value in zip(POINTS, got):
        exact = mp_sigmoid(x)
        ulp = float(np.spacing(max(abs(float(exact)), np.finfo(float).tiny)))
        assert float(abs(mpmath.mpf(value) - exact)) <= 0.6 * ulp, (x, value)
    numpy_form = no_warnings(OPS["sigmoid"].numpy, np.array(POINTS, dtype=float))
    np.testing.assert_array_max_ulp(numpy_form, got, maxulp=3)


# ------------------------------------------------------------------ stability, compiled
def vg(text, x, **kw):
    k = compiler.compile_gradient(text, **kw)
    return no_warnings(k.value_and_grad, x=x)


@pytest.mark.parametrize("text", ["1/(1+exp(-x))", "exp(x)/(1+exp(x))", "sigmoid(x)"])
def test_fused_sigmoid_at_plus_minus_1000(text):
    for x, expected in ((-1000.0, 0.0), (1000.0, 1.0)):
        value, grads = vg(text, x)
        assert value == expected and grads["x"] == 0.0


def test_unfused_sigmoid_loses_its_gradient_at_minus_1000_and_the_report_says_so():
    _, grads = compiler.compile_gradient("1/(1+exp(-x))", fuse=False).value_and_grad(x=-1000.0)
    assert math.isnan(grads["x"])
    report = compiler.compile_gradient("1/(1+exp(-x))").fusion
    note = report.overflow[report.fused[0].template].format(a="x")
    assert "overflows at x = -1000" in note and "exp(-x) = inf" in note and "nan" in note
    assert "overflows" in str(report)


def test_sigmoid_gradient_is_accurate_where_one_minus_sigma_rounds_to_zero():
    """At x = 37.43, sigma(1 - sigma) is 0 in float64; sigma(x) * sigma(-x) is 5.55e-17."""
    x = 37.43
    truth = float(mp_sigmoid(x) * mp_sigmoid(-x))
    assert truth > 5e-17
    y = compiler.compile_gradient("sigmoid(x)")(x=x)
    assert y * (1 - y) == 0.0  # the lecture's formula, in float64
    for text in ("sigmoid(x)", "1/(1+exp(-x))"):
        _, grads = vg(text, x)
        assert grads["x"] == pytest.approx(truth, rel=1e-14)


@pytest.mark.parametrize("text", ["log(1+exp(x))", "softplus(x)", "log1p(exp(x))"])
def test_softplus_values(text):
    assert vg(text, 1000.0) == (1000.0, {"x": 1.0})
    value, grads = vg(text, 0.0)
    assert grads["x"] == 0.5  # exactly
    assert value == float(mpmath.log(2))
    assert vg(text, -1000.0) == (0.0, {"x": 0.0})
    value, grads = vg(text, -30.0)
    assert value == pytest.approx(float(mp_softplus(-30)), rel=1e-15)
    assert grads["x"] == pytest.approx(float(mp_sigmoid(-30)), rel=1e-14)


@pytest.mark.parametrize("text", ["log(sigmoid(x))", "-log(1+exp(-x))", "logsigmoid(x)"])
def test_logsigmoid_values(text):
    assert vg(text, -1000.0) == (-1000.0, {"x": 1.0})
    assert vg(text, 1000.0) == (0.0, {"x": 0.0})
    value, grads = vg(text, 0.0)
    assert grads["x"] == 0.5 and value == -float(mpmath.log(2))
    value, grads = vg(text, 30.0)
    assert value == pytest.approx(float(-mp_softplus(-30)), rel=1e-14)
    assert grads["x"] == pytest.approx(float(mp_sigmoid(-30)), rel=1e-14)


@pytest.mark.parametrize("text", ["(exp(x)-exp(-x))/(exp(x)+exp(-x))", "2/(1+exp(-2*x))-1"])
def test_fused_tanh_is_stable(text):
    assert vg(text, 1000.0) == (1.0, {"x": 0.0})
    assert vg(text, -1000.0) == (-1.0, {"x": 0.0})
    value, grads = vg(text, 0.3)
    assert value == pytest.approx(float(mpmath.tanh(0.3)), rel=1e-15)
    assert grads["x"] == pytest.approx(float(mpmath.sech(0.3) ** 2), rel=1e-14)
    unfused = compiler.compile_gradient(text, fuse=False)
    assert any(math.isnan(unfused.grad(x=x)["x"]) for x in (-1000.0, 1000.0))


def test_relu_gate_follows_the_kink_table():
    """maximum(0, x) becomes relu: relu'(0) = 0, where maximum's tie rule would give 1/2."""
    assert vg("maximum(0, x)", 0.0) == (0.0, {"x": 0.0})
    assert vg("maximum(0, x)", 0.0, fuse=False) == (0.0, {"x": 0.5})
    assert vg("maximum(0, x)", -2.0) == (0.0, {"x": 0.0})
    assert vg("maximum(x, 0)", 3.0) == (3.0, {"x": 1.0})


# ------------------------------------------------------------------ registration
def test_register_swish_derives_and_proves_its_gradient(clean_gates):
    spec = compiler.register_gate("swish", "x * sigmoid(x)")
    assert spec.origin == "user" and spec.patterns == ("x * sigmoid(x)",)
    assert gates.verify(spec).gradient
    x = sympy.Symbol("x")
    f = x / (1 + sympy.exp(-x))
    for text in ("swish(x)", "x * sigmoid(x)", "x * (1/(1+exp(-x)))"):
        k = compiler.compile_gradient(text)
        assert [n.op for n in k.graph.nodes if n.op not in ("input", "const")] == ["swish"], text
        for p in (-3.0, 0.25, 2.0):
            value, grads = k.value_and_grad(x=p)
            assert value == pytest.approx(float(f.subs(x, p)), rel=1e-14)
            assert grads["x"] == pytest.approx(float(sympy.diff(f, x).subs(x, p)), rel=1e-13)
    # the gate is part of the language now: text, SymPy and traced callables
    assert "swish" in FUNCTIONS and ops.swish(0.0) == 0.0
    assert ops.swish(x) == x / (1 + sympy.exp(-x))
    k = compiler.compile_gradient(lambda t: ops.swish(2 * t))
    assert k.value_and_grad(t=0.5)[0] == pytest.approx(float(f.subs(x, 1.0)), rel=1e-14)


def test_a_gate_gets_its_sympy_definition_at_registration_and_loses_it_when_removed(clean_gates):
    """The op table never parses text: registration parses the definition once and stores it."""
    compiler.register_gate("cube_plus", "x**3 + x")
    a = registry.placeholders()[0]
    assert sympy.expand(registry.sympy_definition("cube_plus") - (a**3 + a)) == 0
    x = sympy.Symbol("x")
    assert compiler.compile_gradient("cube_plus(x)").graph.to_sympy() == x**3 + x
    compiler.unregister_gate("cube_plus")
    with pytest.raises(KeyError, match="cube_plus"):
        registry.sympy_definition("cube_plus")


def test_a_gate_is_lowered_by_composing_its_ops_lowerings(clean_gates):
    """register_gate gives the entry a ``lower`` (compiler.ir.lowering.lower_graph of its stable
    form): every tier runs it; checked alone in an O3 loop against NumPy at both widths."""
    from lowerjit import evaluate

    spec = compiler.register_gate("swish", "x * sigmoid(x)")
    xs = np.array([-40.0, -3.0, -0.5, 0.0, 0.25, 2.0, 40.0])
    truth = xs / (1 + np.exp(-xs))
    np.testing.assert_allclose(evaluate(spec.lower, xs), truth, rtol=1e-15, atol=0)
    got32 = evaluate(spec.lower, xs.astype(np.float32), dtype=np.float32)
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, truth, rtol=4e-7, atol=1e-30)


def test_register_sigmoid2_with_gradient_from_its_output(clean_gates):
    spec = compiler.register_gate("sigmoid2", "1/(1+exp(-x))", grad_in_terms_of_output="y*(1-y)")
    assert spec.grads == ("y * (1 - y)",)
    k = compiler.compile_gradient("1/(1+exp(-(w*x+b)))", fuse=["sigmoid2"])
    assert [f.gate for f in k.fusion.fused] == ["sigmoid2"]
    value, grads = k.value_and_grad(w=2.0, x=-1.0, b=1.5)
    s = mp_sigmoid(-0.5)
    assert value == pytest.approx(float(s), rel=1e-15)
    assert grads["b"] == pytest.approx(float(s * (1 - s)), rel=1e-14)
    # fuse=True prefers the built-in gate for the same subgraph
    assert [f.gate for f in compiler.compile_gradient("1/(1+exp(-x))").fusion.fused] == ["sigmoid"]


def test_registration_with_a_stable_form(clean_gates):
    spec = compiler.register_gate(
        "softplus2", "log(1 + exp(x))", "1 - exp(-y)", stable="maximum(x, 0) + log1p(exp(-abs(x)))"
    )
    # its lowering is the stable form's, composed of its ops' own lowerings
    assert spec.stable is not None and "log1p" in {n.op for n in spec.lower.graph.nodes}
    k = compiler.compile_gradient("softplus2(x)")
    assert no_warnings(k.value_and_grad, x=1000.0) == (1000.0, {"x": 1.0})


@pytest.mark.parametrize(
    "args, words",
    [
        (("bad", "1/(1+exp(-x))", "y*(1+y)"), ["stated gradient", "not d/dx", "at x ="]),
        (("bad", "exp(2*x)", "y"), ["stated gradient", "2*exp(2*a)"]),
        (("bad", "x*x", "2*y"), ["stated gradient"]),
        (("bad", "x", None), ["needs an operation"]),
        (("bad", "3 + 4", None), ["does not depend on x"]),
        (("bad", "x * z", None), ["may only use x", "'z'"]),
        (("bad", "sigmoid(x)", "y * (1 - z)"), ["may only use x and y", "'z'"]),
        (("sin", "sin(x)", None), ["built-in"]),
        (("pi", "x + 1", None), ["reserved"]),
        (("lambda", "x + 1", None), ["reserved"]),
        (("auto_1", "x + 1", None), ["reserved"]),
        (("x", "x + 1", None), ["reserved"]),
        (("1gate", "x + 1", None), ["must be a letter"]),
        (("ga-te", "x + 1", None), ["must be a letter"]),
        ((None, "x + 1", None), ["must be a letter"]),
        (("bad", 42, None), ["must be text"]),
        (("bad", "sqrt(-1 - x*x)", None), ["not a finite real"]),
    ],
)
def test_wrong_gates_are_refused_with_a_clear_error(clean_gates, args, words):
    with pytest.raises(GateError) as info:
        compiler.register_gate(*args)
    for w in words:
        assert w in str(info.value), str(info.value)
    assert "bad" not in OPS and "bad" not in FUNCTIONS


def test_wrong_stable_form_is_refused(clean_gates):
    with pytest.raises(GateError, match="stable form .* does not equal"):
        compiler.register_gate("bad", "log(1+exp(x))", stable="maximum(x, 0) + log1p(exp(-x))")


@pytest.mark.parametrize(
    "text",
    ["__import__('os').system('echo pwned')", "x.__class__", "exec('1')", "lambda: x", "[x]"],
)
def test_hostile_text_is_refused_by_the_parser(clean_gates, text, capfd):
    with pytest.raises(ParseError):
        compiler.register_gate("bad", text)
    with pytest.raises(ParseError):
        compiler.register_gate("bad", "sigmoid(x)", grad_in_terms_of_output=text)
    assert "pwned" not in capfd.readouterr().out


def test_registration_never_sympifies_user_text(clean_gates, monkeypatch):
    registry.placeholders()  # the built-in definitions are parsed (trusted) beforehand

    def refuse(*args, **kwargs):
        raise AssertionError("sympify was called on user text")

    monkeypatch.setattr(sympy, "sympify", refuse)
    monkeypatch.setattr(sympy, "parse_expr", refuse, raising=False)
    compiler.register_gate("safe_gate", "x * exp(-x * x)")


def test_same_gate_twice_is_fine_a_different_one_is_refused(clean_gates):
    first = compiler.register_gate("twice", "2 * sigmoid(x)")
    assert compiler.register_gate("twice", "2 * sigmoid(x)") is first
    with pytest.raises(GateError, match="unregister_gate"):
        compiler.register_gate("twice", "3 * sigmoid(x)")


def test_unregister(clean_gates):
    compiler.register_gate("inner", "2 * sigmoid(x)")
    compiler.register_gate("outer", "inner(x) + x")
    with pytest.raises(GateError, match="used by"):
        compiler.unregister_gate("inner")
    compiler.unregister_gate("outer")
    compiler.unregister_gate("inner")
    assert "inner" not in OPS and "inner" not in FUNCTIONS and not hasattr(ops, "inner")
    with pytest.raises(ParseError, match="unknown function"):
        compiler.trace("inner(x)")
    for name in ("sigmoid", "nonexistent"):
        with pytest.raises(GateError, match="not a user-registered gate"):
            compiler.unregister_gate(name)


def test_a_user_gate_changes_the_cache_key_of_kernels_that_use_it(clean_gates):
    plain = compiler.trace("sigmoid(x) * x").key()
    compiler.register_gate("g1", "2 * sigmoid(x)")
    first = compiler.trace("g1(x)").key()
    assert compiler.trace("sigmoid(x) * x").key() == plain  # others' keys stay
    compiler.unregister_gate("g1")
    compiler.register_gate("g1", "3 * sigmoid(x)")
    second = compiler.trace("g1(x)").key()
    assert first != second
    k = compiler.compile_gradient("g1(x)")
    assert k.value_and_grad(x=0.0) == (1.5, {"x": 0.75})  # 3 * sigma(0), 3 * sigma'(0)


def test_user_gate_runs_in_a_fresh_process_from_the_cache(clean_gates, tmp_path):
    """The generated module is self-contained: a composed gate prints its ops' code inline."""
    import subprocess
    import sys

    script = (
        "import compiler\n"
        "compiler.register_gate('bump', 'exp(-x * x)')\n"
        "k = compiler.compile_gradient('bump(x) * 2')\n"
        "print(repr(k.value_and_grad(x=0.5)))\n"
    )
    env = {"SYMGRAD_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    runs = [
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
        for _ in range(2)
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr
    value, grads = ast.literal_eval(runs[0].stdout)
    assert runs[0].stdout == runs[1].stdout
    assert value == pytest.approx(2 * math.exp(-0.25), rel=1e-15)
    assert grads["x"] == pytest.approx(-2 * math.exp(-0.25), rel=1e-15)


NESTED_EXP_CHILD = """
import json, sys
import compiler
levels = int(sys.argv[1])
definition = "exp(" * levels + "x" + ")" * levels
try:
    compiler.register_gate("tower", definition)
except compiler.GateError as e:
    print(json.dumps({"kind": "GateError", "message": str(e)}))
else:
    k = compiler.compile_gradient("tower(x)", mode="instant")
    value, grads = k.value_and_grad(x=-0.5)
    print(json.dumps({"kind": "accepted", "value": value, "grad": grads["x"]}))
"""


@pytest.mark.parametrize("levels, answer", [(3, "accepted"), (5, "accepted"), (10, "GateError")])
def test_towers_of_exp_get_a_clear_answer_in_bounded_time(levels, answer, tmp_path):
    # exp(exp(exp(x))) raised a raw MemoryError (mpmath building exp(exp(1e13)) digit by digit at
    # the spot check x = 30); five levels ran > 300 s. The answer now: the gate, checked where
    # float64 does not overflow (x <= -0.5 for five levels), or a GateError when too few points
    # are finite (ten levels overflow at every point). In a child with a timeout, so a
    # hang fails rather than blocks.
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    run = subprocess.run(
        [sys.executable, "-c", NESTED_EXP_CHILD, str(levels)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "SYMGRAD_CACHE_DIR": str(tmp_path)},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout)
    assert result["kind"] == answer, result
    if answer == "GateError":
        assert "finite" in result["message"] and "tower" in result["message"]
        return
    value, slope = mpmath.mpf(-0.5), mpmath.mpf(1)  # the chain rule by hand, at 50 digits
    for _ in range(levels):
        value = mpmath.exp(value)
        slope *= value
    assert result["value"] == pytest.approx(float(value), rel=1e-12)
    assert result["grad"] == pytest.approx(float(slope), rel=1e-12)

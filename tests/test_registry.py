"""Every op's stated local gradient is SymPy's derivative of its definition (the registry's proof)."""

import math
import random

import numpy as np
import pytest
import sympy

from compiler.frontend.text import parse
from compiler.ir import registry
from compiler.ir.graph import operand_symbols
from compiler.ir.opdef import entry as entry_of
from compiler.ir.registry import OPS, sympy_definition
from compiler.passes import adjoint as adjoint_pass

# Kink selectors and sign have derivative 0 almost everywhere (SymPy says DiracDelta); SymPy
# leaves floor's derivative unevaluated (tests/test_where.py checks the integer-valued ops by
# exact difference quotients).
DISTRIBUTIONAL = {"sign", "heaviside", "floor", "ceil", "round", "trunc"}
# Operands that are integers (polygamma's order): gradient 0, as integer-valued ops (kink table).
INTEGER_ARGUMENTS = {("polygamma", 0)}


def operands(op: str):
    """The definition's placeholders a, b, c (c: where's and clip's third operand)."""
    return operand_symbols(sympy_definition(op))


def stated_gradient(op: str, k: int):
    """The stated gradient as SymPy, with the output y replaced by the definition."""
    a, b, c = operands(op)
    expr = parse(OPS[op].grads[k]).to_sympy()
    symbols = {sympy.Symbol("a"): a, sympy.Symbol("b"): b, sympy.Symbol("c"): c}
    return expr.xreplace({**symbols, sympy.Symbol("y"): sympy_definition(op)})


def random_points(op: str, count: int = 20):
    rng = random.Random(op)
    for _ in range(count):
        a, b = rng.uniform(0.1, 3.0), rng.uniform(-3.0, 3.0)
        if OPS[op].arity == 2 and op in ("maximum", "minimum", "sub", "heaviside"):
            b = a + rng.choice((-1, 1)) * rng.uniform(0.1, 2.0)  # away from the tie
        if op == "xlogy":
            b = abs(b) + 0.1
        a, b = _in_domain(op, rng, a, b)
        c = rng.uniform(-3.0, 3.0)
        if op == "clip":  # away from its kinks: a below, inside or above [b, c]
            b, c = -1.0, 1.0
            a = rng.choice((-1, 1)) * rng.uniform(1.1, 3.0) if rng.random() < 0.6 else a - 2
        yield a, b, c


def _in_domain(op: str, rng: random.Random, a: float, b: float) -> tuple[float, float]:
    """Points where the new numeric ops (compiler/ir/ops/{special,hyperbolic,...}) are real."""
    if op in ("asin", "acos", "atanh"):
        a = rng.uniform(-0.95, 0.95)
    elif op == "acosh":
        a += 1.0
    elif op == "log1mexp":
        a = -a
    elif op == "xlog1py":
        b = abs(b)
    elif op == "polygamma":  # the order is a natural number
        a, b = float(rng.randint(0, 4)), abs(b) + 0.1
    return a, b


@pytest.mark.parametrize("op", sorted(set(OPS) - DISTRIBUTIONAL))
def test_stated_gradient_is_sympy_derivative(op):
    symbols = operands(op)
    spec = OPS[op]
    assert spec.grads is not None and len(spec.grads) == spec.arity
    for k in range(spec.arity):
        if (op, k) in INTEGER_ARGUMENTS:
            assert spec.grads[k] == "0"
            continue
        truth = sympy.diff(sympy_definition(op), symbols[k])
        stated = stated_gradient(op, k)
        if sympy.simplify(truth - stated) == 0:
            continue
        # Piecewise forms (Heaviside vs its chosen value at the kink) are compared off the kink.
        for point in random_points(op):
            at = dict(zip(symbols, point))
            t = complex(truth.subs(at).evalf())
            s = complex(stated.subs(at).evalf())
            assert abs(t - s) <= 1e-12 * max(1.0, abs(t)), (op, k, point, t, s)


@pytest.mark.parametrize("op", sorted(OPS))
def test_numpy_implementation_matches_definition(op):
    symbols = operands(op)
    f = sympy_definition(op)
    for point in random_points(op, 5):
        if op == "heaviside":
            continue  # SymPy's Heaviside(a, b) with a != 0 is 0/1, checked in test_semantics
        expected = float(f.subs(dict(zip(symbols, point))).evalf())
        args = point[: OPS[op].arity]
        assert math.isclose(float(OPS[op].numpy(*args)), expected, rel_tol=1e-13, abs_tol=1e-300)


def test_an_op_without_stated_gradient_gets_sympys(monkeypatch):
    spec = OPS["sin"]
    unstated = registry.OpDef("sin", 1, "sin(a)", spec.text, np.sin, "sin", None)
    monkeypatch.setitem(OPS, "sin", unstated)
    adjoint_pass.local_gradient_template.cache_clear()
    try:
        template = adjoint_pass.local_gradient_template("sin", 0)
        assert str(template.to_sympy()) == "cos(a)"
    finally:
        adjoint_pass.local_gradient_template.cache_clear()


# ------------------------------------------------------------------ completeness
@pytest.mark.parametrize("op", sorted(OPS))
def test_every_op_is_complete(op):
    """Definition, stated gradients (proved above), a lowering that builds at both widths and
    that LLVM accepts, and a function on the LLVM tier and in the instant tier's machine."""
    from compiler.codegen import llvm_ops
    from compiler.ir.lowering import DOUBLE, FLOAT, function_of
    from runtime import llvm_jit
    from runtime.instant import vm_source

    spec = OPS[op]
    assert spec.definition and spec.grads and len(spec.grads) == spec.arity
    assert spec.lower is not None, f"{op} has no lowering"
    binding = llvm_jit.llvm()
    for ty in (DOUBLE, FLOAT):
        for vector in (False, True):
            module, _ = function_of(f"op.{op}", spec.lower, spec.arity, ty, vector)
            binding.parse_assembly(str(module)).verify()
            if spec.fast is not None:  # (value, needs the exact path)
                function = llvm_ops.op_function(op, vector, fast=True)
                assert function.text.replace(" ", "").startswith("defineinternal{double,i1}")
    for vector in (False, True):
        assert llvm_ops.op_function(op, vector).symbol == f"op.{op}.f64"
    assert op in vm_source.opcodes()
    from runtime import numba_ops

    assert numba_ops.has_lowering(op) and numba_ops.intrinsic(op) is not None


def test_an_op_without_a_lowering_is_a_named_error_on_each_tier(monkeypatch, tmp_path):
    """A table entry without ``lower``: the tiers name it, for it alone ("no lowering for op X on
    tier Y"); other expressions keep working on every tier (the instant tier's machine too)."""
    import compiler
    from compiler.ir.lowering import LoweringError
    from runtime import policy

    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(policy, "LLVM_OPS", -1)
    bare = registry.OpDef("bare_op", 1, "a + 1", "bare_op({a})", lambda a: a + 1, "b", ("1",))
    registry.register(bare)
    try:
        from runtime import numba_ops

        with pytest.raises(LoweringError, match="no lowering for op bare_op on tier numba"):
            numba_ops.intrinsic("bare_op")
        for mode in ("instant", "compiled"):
            with pytest.raises(LoweringError, match="no lowering for op bare_op on tier"):
                compiler.compile_gradient("bare_op(x) * x", mode=mode).value_and_grad(x=[1.0])
            k = compiler.compile_gradient("x * y + exp(x)", mode=mode)
            assert k(x=1.0, y=2.0) == pytest.approx(2 + math.e)
    finally:
        registry.unregister("bare_op")
    assert "bare_op" not in OPS


def test_a_gate_whose_stable_form_uses_itself_is_a_named_error():
    """No recursion: a gate without a lowering whose stable form names the gate itself."""
    from dataclasses import replace

    from compiler.codegen import llvm_ops
    from compiler.ir.lowering import LoweringError

    spec = replace(OPS["sigmoid"], name="loop_gate", text="loop_gate({a})", lower=None,
                   origin="user", stable="loop_gate(a) + 0", patterns=())  # fmt: skip
    registry.register(spec)
    try:
        with pytest.raises(LoweringError, match="loop_gate"):
            llvm_ops.op_function("loop_gate", vector=True)
    finally:
        registry.unregister("loop_gate")


def test_fingerprint_covers_an_entry_added_at_run_time():
    from dataclasses import replace

    assert registry.fingerprint("exp") == ""  # the files' own: symgrad's source digest covers it
    one = replace(OPS["exp"], name="exp_twin")
    registry.register(one)
    try:
        first = registry.fingerprint("exp_twin")
        registry.register(replace(one, lower=lambda L, a: L.intrinsic("exp", a)))
        assert first and registry.fingerprint("exp_twin") not in ("", first)
        registry.register(replace(one, grads=("2 * y",)))
        assert registry.fingerprint("exp_twin") != first
    finally:
        registry.unregister("exp_twin")


def _shifted_exp(shift: float):
    """A lowering ``exp(a) + shift``: two of them differ in what they compute, not in source."""

    def lower(L, a):
        return L.b.fadd(L.intrinsic("exp", a), L.const(shift))

    return lower


@pytest.mark.parametrize("mode", ["instant", "compiled-numba", "compiled-llvm"])
def test_reregistering_an_op_with_another_lowering_compiles_a_new_kernel(
    mode, monkeypatch, tmp_path
):
    """The cache key covers a run-time op's lowering (``registry.fingerprint``: its identity,
    closure included), so the same text after re-registering never gets the old kernel."""
    import compiler
    from runtime import policy

    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path))
    if mode != "instant":
        monkeypatch.setattr(policy, "LLVM_OPS", -1 if mode == "compiled-llvm" else 10**9)
        monkeypatch.setattr(policy, "LLVM_TRIG", False)
    x = np.array([-1.0, 0.0, 0.5, 2.0])
    keys = []
    try:
        for shift in (0.0, 1.0):
            spec = entry_of("exp_probe", "exp(a)", grads=("exp(a)",), numpy=np.exp,
                         lower=_shifted_exp(shift))  # fmt: skip
            registry.register(spec)
            adjoint_pass.local_gradient_template.cache_clear()
            keys.append(registry.fingerprint("exp_probe"))
            k = compiler.compile_gradient("exp_probe(x) * 3", mode=mode.split("-")[0])
            value, grads = k.value_and_grad(x=x)
            np.testing.assert_allclose(value, 3 * (np.exp(x) + shift), rtol=1e-15)
            np.testing.assert_allclose(grads["x"], 3 * np.exp(x), rtol=1e-15)
    finally:
        registry.unregister("exp_probe")
        adjoint_pass.local_gradient_template.cache_clear()
    assert keys[0] != keys[1]


def test_fingerprint_covers_a_given_sympy_form():
    from dataclasses import replace

    one = replace(OPS["exp"], name="exp_twin")
    a = registry.placeholders()[0]
    try:
        registry.register(one, sympy_form=sympy.exp(a))
        first = registry.fingerprint("exp_twin")
        registry.register(one, sympy_form=sympy.exp(a) + 0 * a + sympy.Integer(0) + a - a + 1 - 1)
        assert registry.fingerprint("exp_twin") == first  # SymPy's same expression
        registry.register(one, sympy_form=sympy.exp(2 * a))
        assert registry.fingerprint("exp_twin") != first
    finally:
        registry.unregister("exp_twin")


def test_reregistering_an_op_with_other_gradients_differentiates_by_them(monkeypatch, tmp_path):
    """``register`` alone is enough: the adjoint's gradient caches follow the entry."""
    import compiler
    from compiler.ir.ops.exponential import lower_exp

    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path))
    x = np.array([-1.0, 0.5, 2.0])
    try:
        for factor in (1, 2):
            grads = ("y",) if factor == 1 else ("2 * y",)  # the second is wrong on purpose
            registry.register(
                entry_of("exp_probe", "exp(a)", grads=grads, numpy=np.exp, lower=lower_exp)
            )
            k = compiler.compile_gradient("exp_probe(x)", mode="instant")
            np.testing.assert_allclose(
                k.value_and_grad(x=x)[1]["x"], factor * np.exp(x), rtol=1e-15
            )
    finally:
        registry.unregister("exp_probe")


@pytest.mark.parametrize("op", sorted(n for n, s in OPS.items() if s.smooth_grads is not None))
def test_smooth_gradients_are_sympy_derivatives(op):
    """``smooth_grads`` (what second order differentiates) are exact derivatives too: equal to
    ``sympy.diff`` of the definition at random points, and to the first-order ``grads``."""
    spec = OPS[op]
    assert len(spec.smooth_grads) == spec.arity
    symbols = operands(op)
    sub = {sympy.Symbol("a"): symbols[0], sympy.Symbol("b"): symbols[1]}
    for k in range(spec.arity):
        truth = sympy.diff(sympy_definition(op), symbols[k])
        smooth = (
            parse(spec.smooth_grads[k])
            .to_sympy()
            .xreplace({**sub, sympy.Symbol("y"): sympy_definition(op)})
        )
        for point in random_points(op):
            at = dict(zip(symbols, point))
            t = complex(truth.subs(at).evalf())
            s = complex(smooth.subs(at).evalf())
            assert abs(t - s) <= 1e-12 * max(1.0, abs(t)), (op, k, point, t, s)

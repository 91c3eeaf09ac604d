"""Constant folding computes through the op's own lowering (``compiler.ir.elementwise.fold``): a
folded constant is the float the kernels compute for the same op, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

import compiler
from compiler.ir import elementwise
from compiler.ir.graph import CONST, Graph
from compiler.ir.registry import OPS
from tests import lowerjit

SPECIALS = [0.0, -0.0, 1.0, -1.0, 0.5, 3.0, 1e-310, 1e308, np.inf, -np.inf, np.nan]


def _points(count: int = 200) -> list[float]:
    rng = np.random.default_rng(0)
    return SPECIALS + list(rng.uniform(-50, 50, count)) + list(10.0 ** rng.uniform(-300, 300, 50))


def _same_bits(a: float, b: float) -> bool:
    return np.float64(a).tobytes() == np.float64(b).tobytes() or (np.isnan(a) and np.isnan(b))


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "neg"])
def test_the_ieee_shortcut_is_the_lowering_bit_for_bit(op):
    """The ops folded without compiling give what their compiled lowering gives."""
    spec = OPS[op]
    points = _points()
    pairs = zip(points, points[::-1]) if spec.arity == 2 else ((p,) for p in points)
    for args in pairs:
        want = lowerjit.evaluate(spec.lower, *(np.array([a]) for a in args))[0]
        assert _same_bits(elementwise.fold(spec, *args), want), args


def _folded(text: str) -> float:
    graph = compiler.trace(text)
    node = graph.nodes[graph.outputs[0]]
    assert node.op == CONST, text
    return node.value


@pytest.mark.parametrize("op", ["exp", "tanh", "erf", "cbrt", "log"])
def test_a_folded_constant_is_what_the_compiled_kernel_computes(op, monkeypatch):
    """``op(c)`` folded equals the compiled kernel's ``op(x)`` at x = c, bit for bit, at points
    where NumPy's value differs from it in the last bit (so NumPy could not be the folder)."""
    from runtime import policy

    monkeypatch.setattr(policy, "LLVM_OPS", -1)  # the LLVM tier: compiled in milliseconds
    rng = np.random.default_rng(1)
    xs = rng.uniform(0.05, 4.0, 400)
    kernel = compiler.compile_gradient(f"{op}(x)", mode="compiled")
    computed = np.asarray(kernel(x=xs))
    differs = xs[computed != OPS[op].numpy(xs)][:5]
    chosen = list(differs) + list(xs[:3])
    for c in chosen:
        folded = _folded(f"{op}({float(c)!r})")
        assert _same_bits(folded, float(np.asarray(kernel(x=np.array([c])))[0])), (op, c)


def test_folding_follows_numpy_semantics_for_special_values():
    g = Graph()
    assert g.nodes[g.add("div", g.const(1.0), g.const(0.0))].value == np.inf
    assert np.isnan(g.nodes[g.add("log", g.const(-1.0))].value)
    assert g.nodes[g.add("exp", g.const(-np.inf))].value == 0.0
    assert g.nodes[g.add("sqrt", g.const(4.0))].value == 2.0


def test_a_reregistered_op_folds_with_its_new_lowering():
    from dataclasses import replace

    from compiler.ir import registry

    def lower_one(L, a):
        return L.const(1.0)

    def lower_two(L, a):
        return L.const(2.0)

    try:
        for lower, want in ((lower_one, 1.0), (lower_two, 2.0)):
            registry.register(replace(OPS["exp"], name="fold_probe", lower=lower))
            g = Graph()
            assert g.nodes[g.add("fold_probe", g.const(0.5))].value == want
    finally:
        registry.unregister("fold_probe")


@pytest.mark.parametrize("zero", [0.0, -0.0])
def test_and_with_zero_folds_to_zero_whatever_the_other_operand(zero):
    """``x & 0`` is 0 for every x, nan and inf too (NumPy's logical_and): the node folds away,
    as pow's second derivative at a constant exponent needs."""
    g = Graph()
    x = g.input("x")
    for node in (g.add("logical_and", x, g.const(zero)), g.add("logical_and", g.const(zero), x)):
        assert g.nodes[node].op == CONST and g.constant_value(node) == 0.0
    for v in SPECIALS:
        assert float(np.logical_and(v, zero)) == 0.0

"""One op, one entry: a brand-new op registered at test time works everywhere.

``cube_root_plus(a) = cbrt(a) + a`` is unknown to symgrad; one ``entry(...)`` (definition,
gradient, NumPy oracle, a lowering calling the C library's ``cbrt``) given to
``registry.register`` must make it work through text, Python callables and SymPy input, on every
mode and tier (instant, compiled with Numba and with LLVM at O0 and O3, auto), in tensor kernels,
with fusion around it and in drawings. Values are checked against NumPy, gradients against the
analytic derivative and against finite differences.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy

import compiler
import compiler.ops
from compiler.ir import registry
from compiler.ir.opdef import entry
from compiler.passes import adjoint as adjoint_pass
from runtime import llvm_tier, policy

NAME = "cube_root_plus"
X = np.array([-2.7, -1.0, -0.3, 0.2, 0.5, 1.0, 2.0, 8.0, 27.5])
Y = np.linspace(-1.5, 2.0, X.size)


def _lower(L, a):
    return L.b.fadd(L.libm("cbrt", a), a)


def make_op():
    # d/da = 1 / (3 cbrt(a)^2) + 1, from the output: cbrt(a) = y - a.
    return entry(
        NAME,
        "cbrt(a) + a",
        grads=("1 / (3 * (y - a) ** 2) + 1",),
        numpy=lambda a: np.cbrt(a) + a,
        lower=_lower,
    )


@pytest.fixture
def op(monkeypatch, tmp_path):
    """The op, registered (and offered in ``compiler.ops``) for one test, then withdrawn."""
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path / "cache"))
    spec = make_op()
    registry.register(spec)
    compiler.ops.install(NAME)
    adjoint_pass.local_gradient_template.cache_clear()
    try:
        yield spec
    finally:
        compiler.ops.uninstall(NAME)
        registry.unregister(NAME)
        adjoint_pass.local_gradient_template.cache_clear()
    assert NAME not in registry.OPS and NAME not in registry.FUNCTIONS


def want(x, y):
    """f = cube_root_plus(x) * y + sin(x): value and gradients, by NumPy."""
    c = np.cbrt(x)
    return (c + x) * y + np.sin(x), {"x": (1 / (3 * c * c) + 1) * y + np.cos(x), "y": c + x}


def check(k, x=X, y=Y):
    value, grads = k.value_and_grad(x=x, y=y)
    v, g = want(x, y)
    np.testing.assert_allclose(value, v, rtol=1e-13, atol=1e-14)
    for name in ("x", "y"):
        np.testing.assert_allclose(grads[name], g[name], rtol=1e-12, atol=1e-13)
    # and by finite differences of the kernel's own values (central, h ~ eps^(1/3))
    h = 1e-6
    for name, at in (("x", x), ("y", y)):
        up = k(**{"x": x, "y": y, name: at + h})
        down = k(**{"x": x, "y": y, name: at - h})
        np.testing.assert_allclose(grads[name], (up - down) / (2 * h), rtol=1e-6, atol=1e-6)


TEXT = f"{NAME}(x) * y + sin(x)"


def test_the_entry_is_in_the_table(op):
    assert registry.OPS[NAME] is op and registry.FUNCTIONS[NAME] == NAME
    a, b, _ = registry.placeholders()
    assert registry.sympy_definition(NAME) == sympy.cbrt(a) + a  # sympy's own cbrt: no list
    assert registry.fingerprint(NAME)  # covered by kernels' cache keys


@pytest.mark.parametrize("mode", ["instant", "auto"])
def test_text_on_the_instant_and_auto_modes(op, mode):
    check(compiler.compile_gradient(TEXT, mode=mode))


def test_the_compiled_tier_with_numba(op, monkeypatch):
    monkeypatch.setattr(policy, "LLVM_OPS", 10**9)
    monkeypatch.setattr(policy, "LLVM_TRIG", False)
    k = compiler.compile_gradient(TEXT, mode="compiled")
    check(k)
    assert not k._uses_llvm()


@pytest.mark.parametrize("optimise", [True, False], ids=["O3", "O0"])
def test_the_compiled_tier_with_llvm(op, monkeypatch, optimise):
    monkeypatch.setattr(policy, "LLVM_OPS", -1)
    if not optimise:
        monkeypatch.setattr(llvm_tier, "OPTIMISE_NODES", 0)
    k = compiler.compile_gradient(TEXT, mode="compiled")
    check(k)
    assert k._uses_llvm() and f"call double @op.{NAME}.f64(" in k.llvm_source
    assert k.tier == ("llvm-O3" if optimise else "llvm-O0")


def test_a_python_callable(op):
    def f(x, y):
        return compiler.ops.cube_root_plus(x) * y + compiler.ops.sin(x)

    k = compiler.compile_gradient(f, mode="instant")
    assert NAME in str(k.adjoint)
    check(k)
    # the same function on plain numbers is NumPy's
    np.testing.assert_allclose(f(X, Y), want(X, Y)[0], rtol=1e-15)


def test_sympy_input(op):
    x, y = sympy.symbols("x y", real=True)
    k = compiler.compile_gradient(sympy.Function(NAME)(x) * y + sympy.sin(x), mode="instant")
    check(k)


def test_a_tensor_kernel(op):
    k = compiler.compile_gradient(f"sum({NAME}(x) * y)", shapes={"x": ("n",), "y": ("n",)})
    value, grads = k.value_and_grad(x=X, y=Y)
    assert value == pytest.approx(np.sum((np.cbrt(X) + X) * Y), rel=1e-13)
    np.testing.assert_allclose(grads["x"], (1 / (3 * np.cbrt(X) ** 2) + 1) * Y, rtol=1e-12)
    np.testing.assert_allclose(grads["y"], np.cbrt(X) + X, rtol=1e-13)


@pytest.mark.parametrize("mode", ["instant", "compiled"])
def test_fusion_around_it(op, mode, monkeypatch):
    monkeypatch.setattr(policy, "LLVM_OPS", -1)
    k = compiler.compile_gradient(f"1 / (1 + exp(-{NAME}(x))) * y", fuse=True, mode=mode)
    assert "sigmoid" in str(k.adjoint) and NAME in str(k.adjoint)
    value, grads = k.value_and_grad(x=X, y=Y)
    u = np.cbrt(X) + X
    s = 1 / (1 + np.exp(-u))
    np.testing.assert_allclose(value, s * Y, rtol=1e-13)
    ds = s / (1 + np.exp(u))  # s (1 - s) without 1 - s's rounding near s = 1
    np.testing.assert_allclose(grads["x"], ds * (1 / (3 * np.cbrt(X) ** 2) + 1) * Y, rtol=1e-12)


def test_drawing(op):
    picture = compiler.draw(TEXT, at={"x": 8.0, "y": 1.0})
    assert NAME in picture.source
    assert "10" in picture.source  # cube_root_plus(8) = 10 is on its edge


def test_unregistered_it_is_unknown_again(op):
    registry.unregister(NAME)
    compiler.ops.uninstall(NAME)
    with pytest.raises(compiler.ParseError, match=NAME):
        compiler.compile_gradient(TEXT, mode="instant")
    registry.register(op)  # for the fixture to withdraw
    compiler.ops.install(NAME)


def test_registered_anew_its_elementwise_loop_is_the_new_one(op):
    """The tensor instant tier's loop for the op is kept on disk under the entry's fingerprint:
    the same name with another lowering never loads the old loop."""
    shapes = {"x": ("n",), "y": ("n",)}
    first = compiler.compile_gradient(f"sum({NAME}(x) * y)", shapes=shapes, mode="instant")
    assert first(x=X, y=Y) == pytest.approx(np.sum((np.cbrt(X) + X) * Y), rel=1e-13)
    registry.unregister(NAME)
    registry.register(
        entry(
            NAME,
            "cbrt(a) - a",
            grads=("1 / (3 * (y + a) ** 2) - 1",),
            numpy=lambda a: np.cbrt(a) - a,
            lower=lambda L, a: L.b.fsub(L.libm("cbrt", a), a),
        )  # fmt: skip
    )
    from compiler.ir import elementwise

    elementwise._compiled.clear()  # as a new process: only the disk cache is left
    again = compiler.compile_gradient(f"sum({NAME}(x) * y)", shapes=shapes, mode="instant")
    assert again(x=X, y=Y) == pytest.approx(np.sum((np.cbrt(X) - X) * Y), rel=1e-13)

"""Op names on the op-lowering path: generated Numba source calls each op's intrinsic by a name
(``from runtime.numba_ops import exp``), so an op's name reaches generated code.

An op name that is not a plain identifier is refused before it gets there (by
``compiler.ir.registry.register``, and by ``callable_name`` for an entry put in the table by
hand); two ops never share a callable name (a gate named ``abs_`` once made compiled kernels call
it for ``abs``: a silent wrong answer); an op or gate named like one of the generated module's
own names (``forward``, ``np``, ``OPS``) gets a name of its own; and a gate may not take a name
``compiler.ops`` already uses for something else (``OPS``, ``install``, ``sum`` once replaced
those functions, breaking every later registration). Expected values are NumPy's.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

import compiler
from compiler import ops as functions
from compiler.codegen import entries, numba_source, tensor_source
from compiler.codegen.audit import callable_name, op_of_callable
from compiler.errors import CompileError, GateError
from compiler.ir import registry
from compiler.ir.registry import OPS

X = np.array([-0.5, 0.25, 1.5])
Y = np.array([2.0, -1.0, 0.5])


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    saved = os.environ.get("SYMGRAD_CACHE_DIR")
    os.environ["SYMGRAD_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if saved is None:
        os.environ.pop("SYMGRAD_CACHE_DIR", None)
    else:
        os.environ["SYMGRAD_CACHE_DIR"] = saved


@pytest.fixture
def gate():
    """Registers ``name(x) = x*exp(x)`` for a test, and withdraws it after."""
    made = []

    def register(name: str):
        made.append(name)
        return compiler.register_gate(name, "x*exp(x)")

    yield register
    for name in made:
        if name in OPS and OPS[name].origin == "user":
            compiler.unregister_gate(name)


def xexp(x):
    return x * np.exp(x)


BAD_NAMES = [
    'e(x) or open({p},"w") or exp',
    "exp\nimport os",
    "e x",
    "ẽxp",
    "__import__",
    "_private",
    "1st",
    "",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_register_refuses_an_op_name_that_is_not_an_identifier(name, tmp_path):
    name = name.format(p=repr(str(tmp_path / "marker")))
    op = dataclasses.replace(OPS["exp"], name=name, text=f"{name}({{a}})")
    with pytest.raises(ValueError, match="op name"):
        registry.register(op)
    assert name not in OPS


@pytest.mark.parametrize("mode", ["compiled", "instant"])
@pytest.mark.parametrize("name", BAD_NAMES)
def test_no_odd_op_name_reaches_generated_code(name, mode, tmp_path, monkeypatch):
    """An entry put in the table by hand, past ``register``, is still never written: the
    Numba tier refuses it by name (the LLVM tier and the VM name ops by number)."""
    name = name.format(p=repr(str(tmp_path / "marker")))
    monkeypatch.setitem(OPS, name, dataclasses.replace(OPS["exp"], name=name))
    with pytest.raises(CompileError, match="op name"):
        callable_name(name)
    for shapes in (None, {"x": ("n",)}):
        try:
            k = compiler.compile_gradient(lambda x: x.apply(name, x) * 2, shapes=shapes, mode=mode)
            value = k(x=X)
        except CompileError as e:
            assert "op name" in str(e) and "audit" not in str(e)
        else:
            np.testing.assert_allclose(value, np.sum(2 * np.exp(X)) if shapes else 2 * np.exp(X))
    assert not (tmp_path / "marker").exists()


def test_callable_names_are_distinct_and_invert():
    names = [*OPS, "abs_", "abs__", "forward", "forward_", "np", "np_", "OPS", "x_"]
    called = {}
    for op in names:
        called.setdefault(callable_name(op), []).append(op)
    assert all(len(ops) == 1 for ops in called.values()), called
    for name, [op] in called.items():
        if op in OPS:
            assert op_of_callable(name) == op


def test_a_callable_name_is_never_one_of_the_generated_modules_own():
    own = set(numba_source._RESERVED) | set(tensor_source._RESERVED) | set(entries.ENTRIES)
    own |= {f"{e}_serial" for e in entries.ENTRIES}
    own |= {"INPUTS", "USED", "BACKWARD_READS", "WRT", "SAVED", "SEEDED", "KINDS", "SIGNATURES"}
    for op in [*OPS, *own]:
        assert callable_name(op) not in own, op


@pytest.mark.parametrize("mode", ["compiled", "instant"])
def test_a_gate_named_abs_underscore_leaves_abs_alone(gate, mode):
    gate("abs_")
    k = compiler.compile_gradient("abs_(x) + abs(y)", mode=mode)
    value, grads = k.value_and_grad(x=X, y=Y)
    np.testing.assert_allclose(value, xexp(X) + np.abs(Y), rtol=1e-12)
    np.testing.assert_allclose(grads["x"], (1 + X) * np.exp(X), rtol=1e-12)
    np.testing.assert_allclose(grads["y"], np.sign(Y), rtol=1e-12)
    k = compiler.compile_gradient("abs(x)", mode=mode)
    np.testing.assert_allclose(k(x=X), np.abs(X), rtol=1e-12)


@pytest.fixture
def op_like_exp():
    """Adds a copy of ``exp`` under a name for a test (as ``registry.register`` does for any
    entry), and withdraws it after."""
    made = []

    def register(name: str) -> None:
        made.append(name)
        registry.register(dataclasses.replace(OPS["exp"], name=name, text=f"{name}({{a}})"))

    yield register
    for name in made:
        registry.unregister(name)


@pytest.mark.parametrize(
    "name", ["forward", "np", "OPS", "math", "value_and_grad", "i5", "serial", "INPUTS", "KINDS"]
)
def test_an_op_named_like_generated_code_computes_right(op_like_exp, name):
    op_like_exp(name)
    k = compiler.compile_gradient(f"{name}(x) * y", mode="compiled")
    value, grads = k.value_and_grad(x=X, y=Y)
    np.testing.assert_allclose(value, np.exp(X) * Y, rtol=1e-12)
    np.testing.assert_allclose(grads["x"], np.exp(X) * Y, rtol=1e-12)
    shapes = {"x": ("n",), "y": ("n",)}
    k = compiler.compile_gradient(f"sum({name}(x) * y)", shapes=shapes, mode="compiled")
    value, grads = k.value_and_grad(x=X, y=Y)
    np.testing.assert_allclose(value, np.sum(np.exp(X) * Y), rtol=1e-12)
    np.testing.assert_allclose(grads["x"], np.exp(X) * Y, rtol=1e-12)


@pytest.mark.parametrize("name", ["forward", "backward"])
def test_a_gate_named_like_generated_code_computes_right(gate, name):
    gate(name)
    k = compiler.compile_gradient(f"{name}(x) + y", mode="compiled")
    value, grads = k.value_and_grad(x=X, y=Y)
    np.testing.assert_allclose(value, xexp(X) + Y, rtol=1e-12)
    np.testing.assert_allclose(grads["x"], (1 + X) * np.exp(X), rtol=1e-12)


@pytest.mark.parametrize("name", ["OPS", "install", "sum", "declare", "Var", "matmul"])
def test_a_gate_cannot_take_a_name_compiler_ops_uses(name, gate):
    if name in vars(functions) and not (name in OPS and OPS[name].origin == "user"):
        kept = getattr(functions, name)
        with pytest.raises(GateError, match=name):
            gate(name)
        assert getattr(functions, name) is kept
    gate("gnext")  # registration still works
    np.testing.assert_allclose(functions.gnext(0.5), xexp(0.5), rtol=1e-12)


@pytest.mark.parametrize("mode", ["compiled", "instant"])
def test_a_gate_registered_again_under_its_name_gets_its_new_gradient(mode):
    """The adjoint pass's per-op caches follow the table: a gate withdrawn and registered anew
    with another definition once kept the old one's gradient (22.17 for 12 at x = 2)."""
    x = np.array([2.0, -0.5])
    for definition, value, grad in [
        ("x*exp(x)", x * np.exp(x), (1 + x) * np.exp(x)),
        ("x*x*x", x**3, 3 * x**2),
    ]:
        compiler.register_gate("gagain", definition)
        try:
            k = compiler.compile_gradient("gagain(x) + y", mode=mode)
            v, g = k.value_and_grad(x=x, y=x)
        finally:
            compiler.unregister_gate("gagain")
        np.testing.assert_allclose(v, value + x, rtol=1e-12)
        np.testing.assert_allclose(g["x"], grad, rtol=1e-12)


def test_an_entry_replaced_through_the_registry_gets_its_new_gradient(op_like_exp):
    op_like_exp("eagain")  # exp: d/da = y
    k = compiler.compile_gradient("eagain(x)", mode="instant")
    np.testing.assert_allclose(k.grad(x=X)["x"], np.exp(X), rtol=1e-12)
    registry.register(dataclasses.replace(OPS["sin"], name="eagain", text="eagain({a})"))
    k = compiler.compile_gradient("eagain(x)", mode="instant")
    np.testing.assert_allclose(k.grad(x=X)["x"], np.cos(X), rtol=1e-12)


@pytest.mark.parametrize("mode", ["compiled", "instant"])
@pytest.mark.parametrize("shaped", [False, True])
def test_inputs_named_like_the_ops_they_meet(mode, shaped):
    """SymPy symbols spelled like the ops of their own expression and like those ops' callable
    names (``exp``, ``abs_``, ``sigmoid_``): each is an input, never the op's intrinsic."""
    import sympy

    x = sympy.Symbol("x")
    names = ["exp", "Abs", "abs", "abs_", "sigmoid", "sigmoid_", "exp_", "tanh"]
    s = {n: sympy.Symbol(n) for n in names}
    expr = (
        s["exp"] * sympy.exp(x)
        + (s["abs_"] + s["Abs"]) * sympy.Abs(x)
        + s["abs"] * s["sigmoid_"] / (1 + sympy.exp(-x))
        + s["sigmoid"] * sympy.tanh(s["exp_"])
        + s["tanh"]
    )
    point = {n: np.array([0.3 + 0.1 * k, -0.4 - 0.1 * k]) for k, n in enumerate(names)}
    point["x"] = np.array([0.6, -1.1])
    p, xv = point, point["x"]
    sig = 1 / (1 + np.exp(-xv))
    value = (
        p["exp"] * np.exp(xv)
        + (p["abs_"] + p["Abs"]) * np.abs(xv)
        + p["abs"] * p["sigmoid_"] * sig
        + p["sigmoid"] * np.tanh(p["exp_"])
        + p["tanh"]
    )
    grads = {
        "x": p["exp"] * np.exp(xv)
        + (p["abs_"] + p["Abs"]) * np.sign(xv)
        + p["abs"] * p["sigmoid_"] * sig * (1 - sig),
        "exp": np.exp(xv),
        "abs_": np.abs(xv),
        "sigmoid_": p["abs"] * sig,
        "exp_": p["sigmoid"] * (1 - np.tanh(p["exp_"]) ** 2),
        "tanh": np.ones(2),
    }
    shapes = {n: ("n",) for n in point} if shaped else None
    k = compiler.compile_gradient(expr, shapes=shapes, mode=mode)
    v, g = k.value_and_grad(**point)
    np.testing.assert_allclose(v, value, rtol=1e-12)
    for name, want in grads.items():
        np.testing.assert_allclose(g[name], want, rtol=1e-12, err_msg=name)


@pytest.mark.parametrize("shaped", [False, True])
def test_every_top_level_name_of_a_generated_module_is_known_to_callable_name(shaped):
    """A name a generated module defines, assigns or imports for itself (all but the ops'
    intrinsics) is one ``callable_name`` steers clear of: a new one added to a writer is caught
    here (an op named ``INPUTS`` once replaced the module's constant)."""
    import ast

    shapes = {"x": ("n",), "y": ("n",)} if shaped else None
    text = "sum(x * y * y + exp(x))" if shaped else "x * y * y + exp(x)"
    k = compiler.compile_gradient(text, shapes=shapes, mode="compiled")
    k.value_and_grad(x=X, y=Y)
    tree = ast.parse(k.source)
    names = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module != "runtime.numba_ops":
            names |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    assert "forward" in names and ("fwd_loop0" in names) == shaped
    kept = sorted(n for n in names if callable_name(n) == n)
    assert not kept, f"an op named {kept[0]!r} would take the generated module's name"

"""Every identifier the text language accepts works as an input, on every tier.

Generated code has names of its own (Python's ``n``, ``i``, ``out``, ``temps``, imported modules
and helpers; LLVM's ``%lo``, ``%m``, labels ``entry``/``loop``/``exit``...). An input spelled like
one of them must be renamed in the generated code, never collide: values are checked against
NumPy, gradients against central finite differences.
"""

from __future__ import annotations

import ast
import builtins

import numpy as np
import pytest

import compiler
from compiler.codegen import numba_source, tensor_source

#: Names the generated Python, the LLVM IR and the instant tier's machine use themselves.
AWKWARD = sorted(
    {
        *numba_source._RESERVED,
        *tensor_source._RESERVED,
        # LLVM IR: chunk parameters, labels, the driver's and the machine's values
        *"lo m arrays scalars temps sums entry loop exit first last n partial any rest short".split(),
        *"b next done row code regs n_code addresses block index k op field1 dst a".split(),
        # Python builtins and modules the source calls or might
        *"range float int len print open eval exec np math numba i j i0 i1 out".split(),
        # generated names: entries, buffers, segments, loops, temporaries
        *"forward value_and_grad forward_save backward forward_serial backward_1 seed".split(),
        *"g_x saved_t0 out_t0 out_sum fwd_loop0 vg_loop0 size_n t0 t1 t2 np_exp".split(),
        *"x_1 x1 in_x λ λ_1 in_u03bb _ _x x_ e".split(),
        "sigmoid_",
    }
    - {"x"}
    - {f"i{k}" for k in range(2, 32)}  # the loop indices beyond i1 add nothing but time
)


def _an_input(name: str) -> bool:
    """Whether the text language reads ``name`` as an input (not a function or a constant)."""
    try:
        return compiler.trace(name).inputs == (name,)
    except compiler.ParseError:
        return False


NAMES = [n for n in AWKWARD if _an_input(n)]
assert "m" in NAMES and "entry" in NAMES and "λ" in NAMES

A, B = 0.7, -1.3  # every awkward input is A + k / 10 for its index k; x is B


def expression(names: list[str], trig: bool = False) -> str:
    """One term per name, mixing it with x (and its neighbour) so that every name is read."""
    terms = []
    for k, name in enumerate(names):
        other = names[k - 1] if k else "x"
        terms.append(f"{name} * x + {name} / (1 + {other} * {other})")
    if trig:
        terms.append(f"sin({names[0]}) * x")
    return " + ".join(terms)


def numpy_value(names: list[str], point: dict[str, float], trig: bool = False) -> float:
    total = 0.0
    x = point["x"]
    for k, name in enumerate(names):
        other = point[names[k - 1]] if k else x
        total += point[name] * x + point[name] / (1 + other * other)
    if trig:
        total += np.sin(point[names[0]]) * x
    return total


def check(kernel, names: list[str], trig: bool = False) -> None:
    point = {"x": B, **{n: A + k / 10 for k, n in enumerate(names)}}
    args = [point[n] for n in kernel.inputs]  # by position: "out" and "seed" are keywords too
    value, grads = kernel.value_and_grad(*args)
    assert value == pytest.approx(numpy_value(names, point, trig), rel=1e-12)
    h = 1e-6
    for name in [*names, "x"]:
        up, down = dict(point), dict(point)
        up[name] += h
        down[name] -= h
        fd = (numpy_value(names, up, trig) - numpy_value(names, down, trig)) / (2 * h)
        assert grads[name] == pytest.approx(fd, rel=1e-6, abs=1e-8), name
    assert kernel(*args) == pytest.approx(value, rel=1e-12)


def groups(size: int = 12) -> list[list[str]]:
    """The names in groups small enough for Numba's tier (at most LLVM_OPS ops)."""
    return [NAMES[k : k + size] for k in range(0, len(NAMES), size)]


@pytest.mark.parametrize("name", NAMES)
def test_one_awkward_name_instant(name):
    check(compiler.compile_gradient(expression([name]), mode="instant"), [name])


@pytest.mark.parametrize("name", NAMES)
def test_one_awkward_name_llvm(name):
    """With sin, the compiled tier is LLVM's (milliseconds to compile)."""
    kernel = compiler.compile_gradient(expression([name], trig=True), mode="compiled")
    check(kernel, [name], trig=True)


@pytest.mark.parametrize("mode", ["compiled", "auto"])
@pytest.mark.parametrize("group", range(len(groups())))
def test_awkward_names_numba(group, mode):
    """Numba's tier (auto: LLVM's unoptimised stand-in first, then Numba's kernel)."""
    names = groups()[group]
    kernel = compiler.compile_gradient(expression(names), mode=mode)
    assert kernel.wait(timeout=600)
    check(kernel, names)


def test_awkward_names_numba_segments(monkeypatch):
    """Numba's segmented entries (``block``, ``temps``, ``lo``, ``m``, ``partial``)."""
    monkeypatch.setattr(numba_source, "SPLIT_LINES", 9)  # part of the cache key
    names = groups()[0]
    kernel = compiler.compile_gradient(expression(names), mode="compiled")
    assert "def block(lo, m, temps):" in kernel.source
    check(kernel, names)


@pytest.mark.parametrize("mode", ["compiled", "instant", "auto"])
def test_all_awkward_names_together(mode):
    """All of them in one kernel, so renamings must not collide with each other: more than
    LLVM_OPS ops, so compiled is LLVM's tier, auto the instant tier until LLVM's is ready."""
    from runtime import policy

    assert 4 * len(NAMES) > policy.LLVM_OPS
    kernel = compiler.compile_gradient(expression(NAMES, trig=True), mode=mode)
    check(kernel, NAMES, trig=True)
    assert kernel.wait(timeout=600)
    check(kernel, NAMES, trig=True)


@pytest.mark.parametrize("mode", ["compiled", "instant", "auto"])
def test_tensor_inputs_and_dimensions(mode):
    """Tensor programs: awkward input names, and dimension names like the loops' indices."""
    vectors = ["i0", "i1", "out_t0", "fwd_loop0", "size_i0", "np", "float", "ties", "seed", "λ"]
    shapes = {n: ("i0",) for n in vectors}
    shapes.update(x=("i0",), n=("i1", "i0"))  # n: a matrix, its loops index i0 and i1
    text = " + ".join(f"sum({v} * {v} * x * n)" for v in vectors)
    kernel = compiler.compile_gradient(text, shapes=shapes, mode=mode)
    rng = np.random.default_rng(0)
    point = {v: rng.normal(size=3) for v in [*vectors, "x"]}
    point["n"] = rng.normal(size=(2, 3))
    expected = sum(float(np.sum(point[v] ** 2 * point["x"] * point["n"])) for v in vectors)
    for _ in range(2):
        value, grads = kernel.value_and_grad(*[point[n] for n in kernel.inputs])
        assert value == pytest.approx(expected, rel=1e-12)
        for v in vectors:
            want = 2 * point[v] * point["x"] * point["n"].sum(axis=0)
            assert grads[v] == pytest.approx(want, rel=1e-12)
        assert kernel.wait(timeout=600)


def test_generated_parameters_are_never_builtins():
    """A renamed input keeps its name as data (``INPUTS``) and gets an identifier of its own."""
    names = ["range", "float", "open", "m"]
    kernel = compiler.compile_gradient(expression(names), mode="instant")
    tree = ast.parse(kernel.source)
    params = {a.arg for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) for a in f.args.args}
    assert params and not params & set(dir(builtins))
    assert f"INPUTS = {kernel.inputs!r}" in kernel.source

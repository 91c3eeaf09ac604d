"""Numba kernels compute every op through its one lowering (``runtime/numba_ops.py``).

Checked here: an intrinsic's typing (float32 in, float32 out; float64 and mixes as NumPy
promotes; integers as float64) against NumPy's values; that generated scalar and tensor sources
call each op's intrinsic (plain arithmetic stays infix) and pass the audit, which refuses any
other import from ``runtime.numba_ops``; that an op without a lowering is a named
``CompileError``; and that a fresh process loads a kernel calling intrinsics from Numba's disk
cache without compiling it again. Expected values come from NumPy (each entry's ``numpy``
oracle, or NumPy's own functions).
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numba_cache_probe as probe
import numpy as np
import pytest
from numba import njit, types

import compiler
from compiler.codegen.audit import callable_name, check_python
from compiler.codegen.numba_source import INFIX
from compiler.errors import CompileError
from compiler.ir import registry
from compiler.ir.lowering import LoweringError
from runtime import numba_ops


def lowered_ops() -> list[str]:
    """The built-in ops that kernels call as intrinsics (all but plain arithmetic)."""
    builtin = [name for name, op in registry.OPS.items() if op.origin == "builtin"]
    return sorted(name for name in builtin if name not in INFIX)


# ------------------------------------------------------------------------------ typing
def test_float32_in_float32_out_float64_in_float64_out():
    exp, maximum, log1p = numba_ops.exp, numba_ops.maximum, numba_ops.log1p

    @njit(error_model="numpy")
    def run(x, y, out):
        for i in range(x.size):
            out[i] = maximum(exp(x[i]), log1p(y[i]))

    rng = np.random.default_rng(1)
    x64, y64 = rng.uniform(-5, 5, 257), rng.uniform(0, 50, 257)
    x64[:3], y64[:3] = [np.nan, np.inf, -np.inf], [1.0, np.nan, 0.0]
    for dtype, ulps in ((np.float32, 2), (np.float64, 1)):
        x, y = x64.astype(dtype), y64.astype(dtype)
        out = np.empty_like(x)
        run(x, y, out)
        with np.errstate(all="ignore"):
            expected = np.maximum(np.exp(x), np.log1p(y))
        assert expected.dtype == dtype
        np.testing.assert_array_max_ulp(out, expected, maxulp=ulps, dtype=dtype)
        assert np.array_equal(np.isnan(out), np.isnan(expected))
    signatures = {sig.args[0].dtype for sig in run.nopython_signatures}
    assert signatures == {types.float32, types.float64}


def test_result_types_follow_numpy_promotion():
    maximum, exp = numba_ops.maximum, numba_ops.exp

    @njit
    def both(a, b):
        return maximum(a, b)

    @njit
    def one(a):
        return exp(a)

    def result(dispatcher, *args):
        dispatcher(*args)
        [sig] = [s for s in dispatcher.nopython_signatures if s.args == tuple(map(typeof, args))]
        return sig.return_type

    from numba import typeof

    f32, f64 = np.float32(2.0), np.float64(2.0)
    assert result(both, f32, f32) == types.float32 == numba_type(np.result_type(f32, f32))
    assert result(both, f32, f64) == types.float64 == numba_type(np.result_type(f32, f64))
    assert result(one, 3) == types.float64  # integers as float64, as np.exp(3) is
    assert one(3) == pytest.approx(np.exp(3), rel=1e-15)


def numba_type(dtype):
    return {np.dtype(np.float32): types.float32, np.dtype(np.float64): types.float64}[dtype]


# ------------------------------------------------------------------------------ naming, errors
def test_missing_lowering_is_a_named_compile_error(monkeypatch):
    with pytest.raises(LoweringError, match="no lowering for op nope on tier numba"):
        numba_ops.intrinsic("nope")
    monkeypatch.setitem(registry.OPS, "exp", replace(registry.OPS["exp"], lower=None))
    with pytest.raises(LoweringError, match="no lowering for op exp on tier numba"):
        numba_ops.intrinsic("exp")
    with pytest.raises(AttributeError):
        numba_ops.__getattr__("_make_it")


def test_an_op_without_a_lowering_is_named_at_generation(monkeypatch):
    bare = replace(registry.OPS["log1p"], lower=None)
    monkeypatch.setitem(registry.OPS, "log1p", bare)
    kernel = compiler.compile_gradient("log1p(x) * y", fuse=False, mode="instant")
    with pytest.raises(LoweringError, match="no lowering for op log1p on tier numba"):
        _ = kernel.source


def test_builtin_names_take_an_underscore():
    assert callable_name("abs") == "abs_" and callable_name("exp") == "exp"
    assert numba_ops.abs_ is numba_ops.intrinsic("abs")


def test_a_changed_entry_gets_a_new_intrinsic(monkeypatch):
    first = numba_ops.intrinsic("sqrt")
    assert numba_ops.intrinsic("sqrt") is first
    monkeypatch.setitem(registry.OPS, "sqrt", replace(registry.OPS["sqrt"]))
    assert numba_ops.intrinsic("sqrt") is not first


# ------------------------------------------------------------------------------ generated source
def op_text(op: str) -> str:
    # parenthesized: comparisons and & | bind looser than +
    return "(" + registry.OPS[op].text.format(a="x", b="y", c="x") + ")"  # c: where and clip


def test_lowered_ops_exist():
    ops = lowered_ops()
    assert {"exp", "log", "sin", "cos", "sigmoid", "maximum", "xlogy"} <= set(ops)


@pytest.mark.parametrize("op", lowered_ops())
def test_generated_source_calls_each_ops_lowering(op):
    source = compiler.compile_gradient(f"{op_text(op)} + x * y", fuse=False, mode="instant").source
    name = callable_name(op)
    [imports] = [line for line in source.splitlines() if "runtime.numba_ops" in line]
    assert name in imports.split("import ", 1)[1].split(", ")
    assert re.search(rf"^        \w+ = {name}\(", source, re.M), source
    assert "runtime.scalar" not in source
    # no libm call written as text (the lowering decides); math.inf and math.nan are constants
    assert not re.search(r"math\.(?!inf\b|nan\b)", source), source
    check_python(source)


def test_numpy_semantics_of_division_and_powers(tmp_path, monkeypatch):
    """error_model="numpy": 1/0 = inf, 0/0 = nan; pow as np.power, 0 ** -2 = inf included."""
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path))
    kernel = compiler.compile_gradient("x / y + x ** 2 + y ** -2.0 + x ** y", mode="compiled")
    assert "pow_(" in kernel.source and " ** 2\n" in kernel.source  # x ** 2 multiplies
    x = np.array([1.0, 0.0, -1.5, 2.0, 0.0])
    y = np.array([0.0, 0.0, 3.0, 0.5, 2.0])
    with np.errstate(all="ignore"):
        expected = x / y + np.power(x, 2.0) + np.power(y, -2.0) + np.power(x, y)
    np.testing.assert_array_equal(kernel(x=x, y=y), expected)


def test_plain_arithmetic_stays_infix():
    source = compiler.compile_gradient("(x + y) * (x - y) / -x", fuse=False, mode="instant").source
    assert "runtime.numba_ops" not in source
    for sign in " + ", " - ", " * ", " / ", "= -":
        assert sign in source


def test_every_lowered_op_in_a_compiled_kernel_matches_its_oracle(tmp_path, monkeypatch):
    """One kernel summing every lowered op (forward and gradients compiled by Numba)."""
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path))
    ops = lowered_ops()
    kernel = compiler.compile_gradient(" + ".join(map(op_text, ops)), fuse=False, mode="compiled")
    assert "runtime.numba_ops" in kernel.source
    x = np.linspace(0.25, 3.0, 11)
    y = np.linspace(0.5, 2.0, 11)
    with np.errstate(all="ignore"):
        expected = sum(registry.OPS[op].numpy(*((x, y, x)[: registry.OPS[op].arity])) for op in ops)
    value = kernel(x=x, y=y)
    np.testing.assert_allclose(value, expected, rtol=1e-13)


def test_tensor_loops_call_intrinsics(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path))
    kernel = compiler.compile_gradient(
        "sum(sigmoid(W * x) + exp(-x))", shapes={"W": ("n",), "x": ("n",)}, mode="compiled"
    )
    source = kernel.source
    assert "from runtime.numba_ops import " in source and "runtime.scalar" not in source
    w, x = np.linspace(-2, 2, 7), np.linspace(-1, 3, 7)
    value, grads = kernel.value_and_grad(W=w, x=x)
    s = 1 / (1 + np.exp(-w * x))
    assert value == pytest.approx(np.sum(s + np.exp(-x)), rel=1e-14)
    np.testing.assert_allclose(grads["W"], s * (1 - s) * x, rtol=1e-13)


# ------------------------------------------------------------------------------ the audit
@pytest.mark.parametrize(
    "line",
    [
        "from runtime.numba_ops import intrinsic",  # a function, not an op
        "from runtime.numba_ops import Lower",
        "from runtime.numba_ops import exp as os",  # renamed
        "from runtime.numba_ops import __getattr__",
        "from runtime.numba_ops import *",
        "import runtime.numba_ops",
    ],
)
def test_the_audit_accepts_op_imports_and_nothing_more(line):
    source = compiler.compile_gradient("exp(x) * y", fuse=False, mode="instant").source
    good = "from runtime.numba_ops import exp"
    assert good in source
    check_python(source)
    with pytest.raises(CompileError, match="audit"):
        check_python(source.replace(good, line))


# ------------------------------------------------------------------------------ the disk cache
def run_child(directory: Path, expr: str) -> dict:
    return probe.run(directory, expr, x=1.5, y=0.25, fuse=False)


def test_a_fresh_process_loads_the_cached_kernel(tmp_path):
    expr = "exp(x) * sigmoid(y) + log1p(x * y)"  # no sin or cos: Numba is the compiled tier
    first = run_child(tmp_path, expr)
    second = run_child(tmp_path, expr)
    assert "from runtime.numba_ops import " in first["source"]
    assert first["misses"] >= 1 and first["hits"] == 0
    assert second["misses"] == 0 and second["hits"] >= 1
    x, y = 1.5, 0.25
    s = 1 / (1 + np.exp(-y))
    for result in first, second:
        assert result["value"] == pytest.approx(np.exp(x) * s + np.log1p(x * y), rel=1e-14)
        assert result["grads"]["x"] == pytest.approx(np.exp(x) * s + y / (1 + x * y), rel=1e-14)
        assert result["grads"]["y"] == pytest.approx(
            np.exp(x) * s * (1 - s) + x / (1 + x * y), rel=1e-14
        )

"""The LLVM tier's branch-free exp, sin and cos (the ops' lowerings, ``compiler/ir/ops``, printed by ``compiler/codegen/llvm_ops.py``).

Entries that LLVM's O3 pipeline optimises compute exp, sin and cos branch-free (fma, bit casts
and selects: the chunk loops vectorise); sin and cos flag arguments
beyond ``TRIG_MAX``, and the driver then runs the block again through the chunks' exact twins
(the C library's value there), with the block's partial sums zeroed first. Checked here against
mpmath (ulps), NumPy and the C library, at special values, with huge arguments mixed into blocks
of ordinary ones, on lengths that are not a multiple of the block, and for gradients (SymPy,
finite differences, sums over points for scalar inputs) — with O3 on, with the branch-free forms
compiled without O3, and with the C library's forms (entries beyond ``OPTIMISE_NODES``).
"""

from __future__ import annotations

import math
import re

import mpmath
import numpy as np
import pytest
import sympy
from test_instant import assert_same_results
from test_vecmath import (
    VECTOR_FMA,
    _has_avx2_fma,
    assert_within_an_ulp_of_numpy_exp,
    ulp_errors,
)

import compiler
from compiler.codegen import llvm_ir, llvm_ops
from compiler.ir.ops import trig
from runtime import llvm_tier, policy

RNG = np.random.default_rng(20240611)
MODES = ("o3", "vector-no-o3", "libm")


@pytest.fixture(params=MODES, autouse=True)
def mode(request, monkeypatch, tmp_path):
    """Every compiled kernel is LLVM's, cached in a fresh directory, in one of three forms:
    ``o3`` (the default for entries of up to OPTIMISE_NODES nodes: branch-free forms, O3),
    ``vector-no-o3`` (the same IR compiled without the pipeline: the IR is right by itself) and
    ``libm`` (OPTIMISE_NODES = 0: the C library's exp, sin and cos, no O3)."""
    monkeypatch.setattr(policy, "LLVM_OPS", -1)
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path / "cache"))
    if request.param == "libm":
        monkeypatch.setattr(llvm_tier, "OPTIMISE_NODES", 0)
    elif request.param == "vector-no-o3":
        compile_objects = llvm_tier.compile_objects
        monkeypatch.setattr(
            llvm_tier, "compile_objects", lambda texts, stopping=None, optimise=False: (
                compile_objects(texts, stopping, False)
            )
        )  # fmt: skip
    return request.param


def compiled(source, **kwargs):
    k = compiler.compile_gradient(source, mode="compiled", **kwargs)
    assert k._uses_llvm()
    return k


def values(op, x):
    """op(x) on the LLVM tier, for an array ``x`` of any length."""
    return compiled(f"{op}(x)")(x=np.asarray(x, dtype=np.float64))


def assert_ulps(op, x, got, limit=1.0):
    errors = ulp_errors(op, x, got)
    assert errors.max() <= limit, (x[errors.argmax()], errors.max())


def entry_ir(k, entry: str = "value_and_grad"):
    """The ``EntryIR`` of one entry of ``k`` (array inputs, scalar seed)."""
    return k._llvm_module("a" * len(k.inputs) + "s").ir(entry)


def block(k) -> int:
    """The block length of the kernel's value_and_grad entry."""
    return int(k.llvm_source.split("blocks of ")[1].split(" ")[0])


# ------------------------------------------------------------------ the table itself
def test_the_vm_table_stays_the_c_librarys():
    """The instant tier's machine has no rerun for huge sin and cos arguments: its functions
    (``vector=False``) keep the C library's calls, the EntryWriter alone uses the branch-free
    forms."""
    for op in ("exp", "sin", "cos"):
        text = llvm_ops.op_function(op, vector=False).text
        assert f"call double @llvm.{op}.f64(" in text and "llvm.fma" not in text


def test_which_forms_the_source_uses(mode):
    k = compiled("sin(x) * x + exp(-x * x)")
    source = k.llvm_source
    if mode == "libm":
        assert "@llvm.exp.f64(" in source and ".exact(" not in source
        assert "llvm.fma" not in source
    else:
        assert "@llvm.exp.f64(" not in source and "@llvm.fma.f64(" in source
        # the fast chunks return the flag, the twins call the C library, the driver reruns
        assert "define i1 @value_and_grad.1(" in source
        assert "define void @value_and_grad.1.exact(" in source
        assert "label %exact" in source
    k2 = compiled("exp(x) * x + x * x")  # no sin or cos: no twins, no flag
    assert ".exact" not in k2.llvm_source and "define i1 " not in k2.llvm_source


# ------------------------------------------------------------------ exp
EXP_RANGES = [(-1e-300, 1e-300), (-1, 1), (-30, 30), (-708, 709.78), (700, 709.78), (-745.1, -708)]


def test_exp_ulp():
    x = np.concatenate([RNG.uniform(lo, hi, 300) for lo, hi in EXP_RANGES])
    assert_ulps("exp", x, values("exp", x))


@pytest.mark.filterwarnings("ignore:overflow", "ignore:invalid value")
def test_exp_against_numpy_large_sample():
    x = np.concatenate([RNG.uniform(-745, 710, 100_001), RNG.standard_normal(50_000)])
    assert_within_an_ulp_of_numpy_exp(x, values("exp", x))


EXP_SPECIAL = [0.0, -0.0, np.inf, -np.inf, np.nan, 709.78, 709.79, 710.0, 1e308, -745.13,
               -745.14, -746.0, -1e308, 5e-324, -5e-324, 1e-320, 1.0, -1.0, -708.5, -740.0]  # fmt: skip


@pytest.mark.parametrize("n", [len(EXP_SPECIAL), 1029])
def test_exp_special_values(n):
    x = RNG.uniform(-5, 5, n)
    at = RNG.choice(n, len(EXP_SPECIAL), replace=False)
    x[at] = EXP_SPECIAL
    with np.errstate(all="ignore"):
        got, want = values("exp", x), np.exp(x)
    np.testing.assert_array_equal(got[at], want[at])
    rest = ~np.isin(np.arange(n), at)
    assert np.all(np.abs(got[rest] - want[rest]) <= np.spacing(want[rest]))
    subnormal = x[at][9]  # -745.13: exp is 5e-324
    assert values("exp", [subnormal])[0] == 5e-324


def test_stable_gates_use_it():
    k = compiled("sigmoid(x) + softplus(x) + logsigmoid(x)")
    x = np.array(
        [-1000.0, -745.2, -50.0, -1.0, -0.0, 0.0, 1e-300, 2.5, 40.0, 1000.0, np.inf, np.nan]
    )
    value, grads = k.value_and_grad(x=x)
    with np.errstate(all="ignore"):
        e = np.exp(-np.abs(x))
        sig = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
        want = sig + (np.maximum(x, 0) + np.log1p(e)) + (np.minimum(x, 0) - np.log1p(e))
    np.testing.assert_allclose(value, want, rtol=1e-15, atol=1e-300)
    assert value[0] == -1000.0 and value[-3] == 1001.0 and np.isnan(value[-1])
    assert np.isnan(grads["x"][-1])


# ------------------------------------------------------------------ sin and cos
TRIG_RANGES = [(-1e-300, 1e-300), (-1, 1), (-10, 10), (-1e3, 1e3), (-1e6, 1e6), (-1e12, 1e12)]
HUGE = [1e22, -1e22, 2.0**60, trig.TRIG_MAX * 1.5, np.nextafter(trig.TRIG_MAX, np.inf), 1e300]
EDGE = [trig.TRIG_MAX, -trig.TRIG_MAX, np.nextafter(trig.TRIG_MAX, 0)]


@pytest.mark.parametrize("op", ["sin", "cos"])
def test_trig_ulp(op):
    x = np.concatenate([RNG.uniform(lo, hi, 250) for lo, hi in TRIG_RANGES] + [EDGE])
    assert_ulps(op, x, values(op, x))


@pytest.mark.parametrize("op", ["sin", "cos"])
def test_trig_against_numpy_large_sample(op):
    x = np.concatenate([RNG.uniform(-100, 100, 100_003), RNG.standard_normal(50_000)])
    ref = getattr(np, op)(x)
    assert np.all(np.abs(values(op, x) - ref) <= np.spacing(np.abs(ref)))


@pytest.mark.parametrize("op", ["sin", "cos"])
def test_trig_special_values(op):
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, -5e-324, 1e-310, math.pi / 2,
                  math.pi, -math.pi, 1.0])  # fmt: skip
    got = values(op, x)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(got, getattr(np, op)(x))
    assert math.copysign(1.0, values("sin", [-0.0])[0]) == -1.0  # sin(-0) = -0


@pytest.mark.parametrize("op", ["sin", "cos"])
@pytest.mark.parametrize("n", [11, 2 * 512 + 37])
def test_huge_arguments_in_a_block_of_ordinary_ones(op, n):
    """A block with a huge argument runs again with the C library's value there: the huge
    points are libm's (Payne-Hanek; the fast reduction is wrong there), and every other point
    is what it is in a block without one (the result of a point never depends on its block)."""
    x = RNG.uniform(-20, 20, n)
    plain = values(op, x)
    at = RNG.choice(n, len(HUGE) + 3, replace=False)
    at[-1] = n - 1  # the last, short block
    x[at] = [*HUGE, np.inf, np.nan, -(2.0**60)]
    with np.errstate(invalid="ignore"):
        got = values(op, x)
    rest = np.ones(n, bool)
    rest[at] = False
    np.testing.assert_array_equal(got[rest], plain[rest])
    f = getattr(math, op)
    want = [f(v) if math.isfinite(v) else math.nan for v in x[at]]
    np.testing.assert_array_equal(got[at], want)
    finite = np.isfinite(x[at])
    assert_ulps(op, x[at][finite], got[at][finite])


@pytest.mark.parametrize("mode", ["o3", "vector-no-o3"], indirect=True)  # not libm's sin, cos
def test_sin_and_cos_of_one_argument_share_its_reduction(mode):
    k = compiled("sin(x) * cos(x)")

    def fmas(source: str) -> int:  # in the forward's fast chunk, after O3 (inlined, CSE'd)
        ir = entry_ir(compiled(source, wrt=["x"]), "forward")
        return optimised_chunks(ir, "forward.1")["forward.1"].count("@llvm.fma.")

    # sin and cos of x are inlined side by side: LLVM's CSE keeps one reduction of x
    assert fmas("sin(x) * cos(x)") == fmas("sin(x) * y") < fmas("sin(x) * cos(y)")
    x = np.concatenate([RNG.uniform(-50, 50, 1000), [1e22, 0.0, -0.0]])
    got = k(x=x)
    np.testing.assert_allclose(got, np.sin(x) * np.cos(x), rtol=5e-16, atol=1e-300)
    assert got[-3] == math.sin(1e22) * math.cos(1e22)  # the C library's, both


# ------------------------------------------------------------------ gradients
def _sympy_check(text, x, rtol):
    k = compiled(text)
    s = sympy.Symbol("x")
    expr = sympy.sympify(text)
    f = sympy.lambdify(s, expr, "mpmath")
    df = sympy.lambdify(s, sympy.diff(expr, s), "mpmath")
    value, grads = k.value_and_grad(x=x)
    want = np.array([float(f(mpmath.mpf(v))) for v in x])
    dwant = np.array([float(df(mpmath.mpf(v))) for v in x])
    np.testing.assert_allclose(value, want, rtol=rtol, atol=1e-300)
    np.testing.assert_allclose(grads["x"], dwant, rtol=rtol, atol=1e-13)


@pytest.mark.parametrize(
    "text",
    ["sin(x) * x + exp(-x * x)", "exp(sin(x)) * cos(3 * x)", "cos(exp(x / 4)) - sin(x) ** 2"],
)
def test_gradients_against_sympy(text):
    x = np.concatenate([RNG.uniform(-6, 6, 530), [0.0, -0.0, 1e-300, 6.5]])
    _sympy_check(text, x, 1e-12)


def test_gradients_against_finite_differences():
    text = "exp(-x * x / 3) * sin(2 * x) + cos(x) * exp(x / 5)"
    k = compiled(text)
    x = RNG.uniform(-4, 4, 777)
    h = 1e-6
    _, grads = k.value_and_grad(x=x)
    fd = (k(x=x + h) - k(x=x - h)) / (2 * h)
    np.testing.assert_allclose(grads["x"], fd, rtol=1e-6, atol=1e-8)


def test_the_chain_with_huge_arguments_matches_numpy():
    k = compiled(lambda x: x * 0 + _chain(x, 3))
    n = 3 * block(k) + 11
    x = RNG.uniform(-2, 2, n)
    x[[5, block(k) + 1, n - 1]] = [1e22, 2.0**60, -1e22]
    value, grads = k.value_and_grad(x=x)
    u, du = x.copy(), np.ones(n)
    with np.errstate(all="ignore"):
        for _ in range(3):
            s, e = np.sin(u), np.exp(-u * u)
            u, du = s * u + e, (np.cos(u) * u + s - 2 * u * e) * du
    assert_same_results((value, grads), (u, {"x": du}))


def _chain(u, k):
    for _ in range(k):
        u = compiler.ops.sin(u) * u + compiler.ops.exp(-u * u)
    return u


@pytest.mark.parametrize("work", [0, 1 << 62])  # threads over blocks, and serial
def test_a_scalar_inputs_gradient_is_summed_once(work, monkeypatch):
    """d/da sum(sin(a x) exp(-x^2) + cos(a x)) over the points: the huge x (a block rerun)
    adds nothing to it, so a block counted twice would show."""
    monkeypatch.setattr(policy, "PARALLEL_WORK", work)
    monkeypatch.setattr(llvm_ir, "CHUNK_INSTRUCTIONS", 150)  # several chunks, both kinds
    k = compiled("sin(a * x) * exp(-x * x) + cos(x) * exp(a * -x * x)")
    assert k.llvm_source.count("define ") > 6
    n = 4 * block(k) + 3
    x = RNG.uniform(-3, 3, n)
    x[[3, block(k) * 2 + 7, n - 2]] = [1e22, -(2.0**60), 3e15]
    a = 0.7
    value, grads = k.value_and_grad(x=x, a=a)
    with np.errstate(all="ignore"):
        e = np.exp(-x * x)
        ea = np.exp(a * -x * x)
        want = np.sin(a * x) * e + np.cos(x) * ea
        da = np.nan_to_num(x * np.cos(a * x) * e) - x * x * np.cos(x) * ea
    assert np.all(da[[3, block(k) * 2 + 7, n - 2]] == 0)
    np.testing.assert_allclose(value, want, rtol=1e-14, atol=1e-15)  # a sum of O(1) terms
    assert grads["a"] == pytest.approx(math.fsum(np.nan_to_num(da)), rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(
        grads["x"],
        np.nan_to_num(a * np.cos(a * x) * e - 2 * x * np.sin(a * x) * e)
        - np.sin(x) * ea
        - 2 * a * x * np.cos(x) * ea,
        rtol=1e-12,
        atol=1e-12,
    )


# ------------------------------------------------------------------ vectorisation
def optimised_chunks(ir, prefix: str = "value_and_grad.") -> dict[str, str]:
    """The text of each chunk function of an entry's IR after LLVM's O3 pipeline."""
    from runtime import llvm_jit

    binding = llvm_jit.llvm()
    module = binding.parse_assembly(ir.text, context=binding.create_context())
    options = binding.create_pipeline_tuning_options(speed_level=3)
    builder = binding.create_pass_builder(llvm_jit.target_machine(), options)
    builder.getModulePassManager().run(module, builder)
    return {
        f.name: str(f)
        for f in module.functions
        if f.name.startswith(prefix) and not f.is_declaration
    }


@pytest.mark.skipif(not _has_avx2_fma(), reason="needs a CPU with vector FMA (AVX2 or AVX-512)")
@pytest.mark.parametrize("mode", ["o3"], indirect=True)  # O3 is what vectorises
def test_the_chunk_loops_vectorise(mode):
    k = compiled(lambda x: _chain(x, 2))
    for name, text in optimised_chunks(entry_ir(k)).items():
        if name.endswith(".exact"):
            assert "optnone" in text  # rarely run: not worth O3's time
            continue
        assert VECTOR_FMA.search(text), name  # several points at a time
        assert "@llvm.exp" not in text and "@llvm.sin" not in text


@pytest.mark.skipif(not _has_avx2_fma(), reason="needs a CPU with vector FMA (AVX2 or AVX-512)")
@pytest.mark.parametrize("mode", ["o3"], indirect=True)
def test_a_loop_summing_a_scalar_inputs_gradient_vectorises(mode):
    """The sum over the points of a scalar input's gradient is a reduction LLVM may reassociate:
    a serial chain of additions kept such loops scalar (the Gaussian NLL's, twice as slow)."""
    k = compiled("0.5 * ((x - mu) / sigma) ** 2 + log(sigma) + sin(x)")
    ir = k._llvm_module("ass" + "s").ir("value_and_grad")  # x an array, mu and sigma scalars
    chunks = {n: t for n, t in optimised_chunks(ir).items() if not n.endswith(".exact")}
    assert chunks
    for name, text in chunks.items():
        assert re.search(r"fadd reassoc <\d+ x double>", text), name  # lanes of partial sums
    x = RNG.normal(size=5000)
    value, grads = k.value_and_grad(x=x, mu=0.3, sigma=1.7)
    np.testing.assert_allclose(grads["mu"], math.fsum(-(x - 0.3) / 1.7**2), rtol=1e-12)
    want = math.fsum(-((x - 0.3) ** 2) / 1.7**3 + 1 / 1.7)
    np.testing.assert_allclose(grads["sigma"], want, rtol=1e-12)


def test_outputs_written_over_the_inputs_give_what_fresh_outputs_give(mode):
    """``out=`` may be an input's own memory, as with NumPy's ``out=``: a block run again for a
    huge sin argument (or a later chunk) must still read the inputs as they were."""
    k = compiled(lambda x, y: _chain(x * y, 6))
    x = np.linspace(-1, 1, 3001)
    x[[7, 2900]] = [1e22, -(2.0**60)]
    want_value, want_grads = k.value_and_grad(x=x.copy(), y=0.5)
    a, gx, gy = x.copy(), np.empty_like(x), np.empty(())
    value, grads = k.value_and_grad(x=a, y=0.5, out=(a, {"x": gx, "y": gy}))
    assert value is a
    np.testing.assert_array_equal(a, want_value)
    np.testing.assert_array_equal(gx, want_grads["x"])
    np.testing.assert_array_equal(gy, want_grads["y"])
    a, gy = x.copy(), np.empty(())
    k.value_and_grad(x=a, y=0.5, out=(np.empty_like(x), {"x": a, "y": gy}))
    np.testing.assert_array_equal(a, want_grads["x"])
    b = x.copy()
    np.testing.assert_array_equal(k(x=b, y=0.5, out=b), want_value)

"""exp, sin and cos as Numba kernels compute them (``runtime.numba_ops``: each op's lowering):
ulp error, special values, vectorisation. exp is the branch-free form, which loops vectorise; sin
and cos are LLVM's intrinsics there (their branch-free form branches to the C library beyond
``TRIG_MAX``, which would keep a Numba loop scalar: the LLVM tier vectorises them instead)."""

import math
import re

import mpmath
import numpy as np
import pytest
from numba import njit

from compiler.ir.ops.trig import TRIG_MAX
from runtime import numba_ops

exp, sin, cos = numba_ops.exp, numba_ops.sin, numba_ops.cos

mpmath.mp.prec = 300


@njit(error_model="numpy")
def _exp_loop(x, out):
    for i in range(x.shape[0]):
        out[i] = exp(x[i])


@njit(error_model="numpy")
def _sin_loop(x, out):
    for i in range(x.shape[0]):
        out[i] = sin(x[i])


@njit(error_model="numpy")
def _cos_loop(x, out):
    for i in range(x.shape[0]):
        out[i] = cos(x[i])


LOOPS = {"exp": _exp_loop, "sin": _sin_loop, "cos": _cos_loop}
EXACT = {"exp": mpmath.exp, "sin": mpmath.sin, "cos": mpmath.cos}


def ours(name, x):
    x = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty_like(x)
    LOOPS[name](x, out)
    return out


def ulp_errors(name, x, got):
    """|got - f(x)| in ulps of the exact f(x) (0.5 at most when correctly rounded)."""
    errs = []
    for xi, gi in zip(x, got):
        e = EXACT[name](mpmath.mpf(float(xi)))
        ref = float(e)
        if ref == 0.0 or not math.isfinite(ref):
            errs.append(0.0 if gi == ref else math.inf)
            continue
        ulp = mpmath.mpf(2) ** max(int(mpmath.floor(mpmath.log(abs(e), 2))) - 52, -1074)
        errs.append(float(abs(mpmath.mpf(float(gi)) - e) / ulp))
    return np.array(errs)


RNG = np.random.default_rng(20240607)

EXP_RANGES = [(-1e-300, 1e-300), (-1e-8, 1e-8), (-1, 1), (-30, 30), (-708, 709.78),
              (700, 709.78), (-745.1, -708)]  # fmt: skip


@pytest.mark.parametrize("lo,hi", EXP_RANGES)
def test_exp_ulp(lo, hi):
    x = RNG.uniform(lo, hi, 1500)
    assert ulp_errors("exp", x, ours("exp", x)).max() <= 0.8


@pytest.mark.filterwarnings("ignore:invalid value")
def test_exp_against_numpy_large_sample():
    x = np.concatenate([RNG.uniform(-745, 710, 200_000), RNG.standard_normal(200_000)])
    assert_within_an_ulp_of_numpy_exp(x, ours("exp", x))


def assert_within_an_ulp_of_numpy_exp(x, got):
    """Overflow exactly where NumPy's, normal results within an ulp, subnormal ones within one
    2^-1074 step."""
    with np.errstate(all="ignore"):
        ref = np.exp(x)
    big = ref == np.inf
    np.testing.assert_array_equal(got[big], ref[big])
    normal = (ref >= np.finfo(float).tiny) & ~big
    assert np.all(np.abs(got - ref)[normal] <= np.spacing(ref[normal]))
    tiny = ref < np.finfo(float).tiny
    assert np.all(np.abs(got - ref)[tiny] <= 5e-324)


def test_exp_special_values():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 709.78, 709.79, 710.0, 1e308,
                  -745.13, -745.14, -746.0, -1e308, 5e-324, -5e-324, 1e-320, 1.0, -1.0])  # fmt: skip
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(ours("exp", x), np.exp(x))
    assert ours("exp", [0.0])[0] == 1.0
    assert math.isnan(ours("exp", [math.nan])[0]) and ours("exp", [-math.inf])[0] == 0.0


TRIG_RANGES = [(-1e-300, 1e-300), (-1e-8, 1e-8), (-1, 1), (-10, 10), (-1e3, 1e3), (-1e6, 1e6),
               (-1e9, 1e9), (-1e12, 1e12)]  # fmt: skip


@pytest.mark.parametrize("name", ["sin", "cos"])
@pytest.mark.parametrize("lo,hi", TRIG_RANGES)
def test_trig_ulp(name, lo, hi):
    x = RNG.uniform(lo, hi, 1000)
    assert ulp_errors(name, x, ours(name, x)).max() <= 0.8


def _hard_cases():
    """Doubles nearest to multiples of pi/2 (x = fl(k pi/2)), and the integers p with p / q a
    continued-fraction convergent of pi/2, times powers of two: the worst cancellations."""
    ks = np.unique(np.concatenate([np.arange(1, 200), RNG.integers(1, 2**30, 300)]))
    near = [float(int(k) * mpmath.pi / 2) for k in ks]
    terms, v = [], mpmath.pi / 2
    for _ in range(40):
        a = int(mpmath.floor(v))
        terms.append(a)
        v = 1 / (v - a)
    h0, h1, convergents = 1, terms[0], []
    for a in terms[1:]:
        h0, h1 = h1, a * h1 + h0
        convergents.append(h1)
    conv = [float(p * 2**j) for p in convergents for j in range(12) if p * 2**j <= TRIG_MAX]
    return np.array(near + conv)


@pytest.mark.parametrize("name", ["sin", "cos"])
def test_trig_near_multiples_of_half_pi(name):
    x = _hard_cases()
    x = np.concatenate([x, -x])
    assert ulp_errors(name, x, ours(name, x)).max() <= 0.8


@pytest.mark.parametrize("name", ["sin", "cos"])
def test_trig_huge_arguments_are_libms(name):
    # Beyond TRIG_MAX the result is libm's (Payne-Hanek reduction): right for every input.
    x = np.concatenate([RNG.uniform(-1, 1, 300) * 10.0 ** RNG.uniform(12.05, 308, 300),
                        [np.nextafter(TRIG_MAX, np.inf), 1e22, 1e300, 1.7976931348623157e308,
                         6381956970095103 * 2.0**797]])  # fmt: skip
    got = ours(name, x)
    np.testing.assert_array_equal(got, [getattr(math, name)(v) for v in x])
    # libm itself is 8 ulp off at the hardest case of all, 6381956970095103 * 2**797
    assert ulp_errors(name, x[:-1], got[:-1]).max() <= 1.0
    edge = np.array([TRIG_MAX, -TRIG_MAX, np.nextafter(TRIG_MAX, 0)])
    assert ulp_errors(name, edge, ours(name, edge)).max() <= 0.8


@pytest.mark.parametrize("name", ["sin", "cos"])
def test_trig_against_numpy_large_sample(name):
    x = np.concatenate([RNG.uniform(-100, 100, 200_000), RNG.standard_normal(200_000)])
    ref = getattr(np, name)(x)
    assert np.all(np.abs(ours(name, x) - ref) <= np.spacing(np.abs(ref)))


def test_trig_special_values():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, -5e-324, 1e-310, math.pi / 2,
                  math.pi, -math.pi, 1.0])  # fmt: skip
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(ours("sin", x), np.sin(x))
        np.testing.assert_array_equal(ours("cos", x), np.cos(x))
    assert math.copysign(1.0, ours("sin", [-0.0])[0]) == -1.0  # sin(-0) = -0
    assert ours("cos", [0.0])[0] == 1.0


def _llvm_ir(fn, *args):
    fn(*args)
    return next(iter(fn.inspect_llvm().values()))


#: A vector fused multiply-add of doubles, of any width: what the test means is "vectorised".
VECTOR_FMA = re.compile(r"@llvm\.fma\.v\d+f64\(")


def _has_avx2_fma():
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    return features.get("avx2", False) and features.get("fma", False)


@pytest.mark.skipif(not _has_avx2_fma(), reason="needs a CPU with vector FMA (AVX2 or AVX-512)")
def test_exp_loops_vectorise_without_libm_calls():
    x = np.linspace(-3, 3, 64)
    ir = _llvm_ir(LOOPS["exp"], x, np.empty_like(x))
    assert VECTOR_FMA.search(ir)  # several lanes at a time: 4 on AVX2, 8 on AVX-512
    assert "@llvm.exp" not in ir and "@exp(" not in ir


@pytest.mark.parametrize("name", ["sin", "cos"])
def test_sin_and_cos_are_the_c_librarys_in_numba_loops(name):
    """Bit for bit Numba's own math.sin / math.cos (LLVM's intrinsic), with no branch in the
    loop, so the rest of a kernel's loop may still vectorise."""
    x = np.concatenate([RNG.uniform(-100, 100, 1000), [0.0, -0.0, np.inf, np.nan, 1e300]])
    library = getattr(math, name)

    @njit(error_model="numpy")
    def numbas(x, out):
        for i in range(x.shape[0]):
            out[i] = library(x[i])

    expected = np.empty_like(x)
    numbas(x, expected)
    np.testing.assert_array_equal(ours(name, x), expected)
    ir = _llvm_ir(LOOPS[name], x, np.empty_like(x))
    assert f"@llvm.{name}." in ir


def test_kernel_with_exp_sin_cos_matches_numpy():
    import compiler

    k = compiler.compile_gradient("exp(-x * x) * sin(3 * x) + cos(x * y)")
    x = np.concatenate([RNG.uniform(-30, 30, 5000), [0.0, -0.0, 1e-300, 40.0]])
    y = RNG.uniform(-5, 5, x.size)
    value, grads = k.value_and_grad(x=x, y=y)
    with np.errstate(all="ignore"):
        e, s, c = np.exp(-x * x), np.sin(3 * x), np.cos(x * y)
        ref = e * s + c
        dx = -2 * x * e * s + 3 * e * np.cos(3 * x) - y * np.sin(x * y)
        dy = -x * np.sin(x * y)
    np.testing.assert_allclose(value, ref, rtol=1e-13, atol=1e-300)
    np.testing.assert_allclose(grads["x"], dx, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(grads["y"], dy, rtol=1e-12, atol=1e-13)
    kk = compiler.compile_gradient("exp(x)")
    big = np.array([-np.inf, -800.0, 0.0, 709.0, 710.0, np.inf, np.nan])
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(kk(x=big), np.exp(big))

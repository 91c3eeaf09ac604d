"""Each op's lowering (``compiler/ir/ops/*.py``'s ``lower``), run alone in an O3 loop
(``tests/lowerjit.py``) at float64 and float32.

float64 results must be what the tiers computed before the lowerings existed, bit for bit: the
IEEE operations against NumPy, the C library's functions against the C library itself (ctypes),
and the piecewise ops, gates and the branch-free exp, sin and cos against plain-Python copies of
``runtime/scalar.py``'s helpers (Python floats are IEEE doubles; fma is done exactly with
fractions). float32 results must be within a stated number of float32 ulps of the float64 result
rounded to float32. Loops over exp, sin, cos and the exp gates must vectorise without a call of
the C library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math

import numpy as np
import pytest
from lowerjit import evaluate

from compiler.ir.ops import arith, piecewise

F64, F32 = np.float64, np.float32
INF, NAN = math.inf, math.nan
LIBM = ctypes.CDLL(ctypes.util.find_library("m"))

ENTRIES = {op.name: op for module in (arith, piecewise) for op in module.OPS}


# ------------------------------------------------------------------------------- points
def special(dtype) -> np.ndarray:
    """±0, ±inf, nan, ±1, the smallest subnormal, the smallest normal, the largest finite."""
    info = np.finfo(dtype)
    values = [0.0, 1.0, 0.5, 2.0, 3.0, math.pi, INF, float(info.tiny), float(info.smallest_subnormal),
              float(info.smallest_subnormal) * 3, float(info.tiny) / 3, float(info.max),
              float(info.eps), 1e-20, 1e20]  # fmt: skip
    values = np.array(values, dtype=dtype)
    return np.concatenate([values, -values, np.array([NAN], dtype=dtype)])


def wide(dtype, n: int = 4000, seed: int = 14) -> np.ndarray:
    """Specials, magnitudes spread over the whole exponent range, and ordinary values."""
    rng = np.random.default_rng(seed)
    info = np.finfo(dtype)
    lo, hi = math.log10(float(info.smallest_subnormal)), math.log10(float(info.max))
    magnitudes = 10.0 ** rng.uniform(lo, hi, n)
    ordinary = rng.uniform(-10, 10, n)
    signs = rng.choice([-1.0, 1.0], n)
    with np.errstate(over="ignore"):
        spread = (signs * magnitudes).astype(dtype)
    return np.concatenate([special(dtype), spread, ordinary.astype(dtype)])


def pairs(dtype, n: int = 3000, seed: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of specials (so ±0 ties, nan either side), random pairs and exact ties."""
    s = special(dtype)
    a, b = np.meshgrid(s, s)
    x = wide(dtype, n, seed)
    y = np.random.default_rng(seed + 1).permutation(x)
    return np.concatenate([a.ravel(), x, x]), np.concatenate([b.ravel(), y, x])


# ------------------------------------------------------------------------------- comparisons
def assert_same_bits(got: np.ndarray, want: np.ndarray, *inputs: np.ndarray) -> None:
    """Equal bit for bit (signed zeros told apart); any nan matches any nan."""
    want = np.asarray(want, dtype=got.dtype)
    nan = np.isnan(want)
    bits = np.dtype(f"i{got.dtype.itemsize}")
    bad = (np.isnan(got) != nan) | (~nan & (got.view(bits) != want.view(bits)))
    where = np.flatnonzero(bad)[:5]
    shown = [(*(float(a[i]) for a in inputs), float(got[i]), float(want[i])) for i in where]
    assert not bad.any(), f"{bad.sum()} differ; (inputs..., got, want): {shown}"


def ulps(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """How many floats of ``got``'s type lie between got and want (0 for equal, ±0 equal);
    nan where exactly one is nan, 0 where both are."""
    want = np.asarray(want, dtype=got.dtype)
    bits = np.dtype(f"i{got.dtype.itemsize}")
    low = np.iinfo(bits).min

    def ordered(v):  # the floats' order as integers' (-0.0 and 0.0 both 0)
        i = v.view(bits)
        return np.where(i < 0, low - i, i)

    g, w = ordered(got), ordered(want)
    with np.errstate(over="ignore"):
        same_side = np.abs(g - w).astype(np.float64)  # exact where g, w have one sign
    distance = np.where(
        (g < 0) == (w < 0), same_side, np.abs(g.astype(float)) + np.abs(w.astype(float))
    )
    both, either = np.isnan(got) & np.isnan(want), np.isnan(got) | np.isnan(want)
    return np.where(both, 0.0, np.where(either, NAN, distance))


def assert_within_ulps(got: np.ndarray, want: np.ndarray, bound: float, *inputs) -> None:
    err = ulps(got, want)
    bad = ~(err <= bound)
    where = np.flatnonzero(bad)[:5]
    shown = [(*(float(a[i]) for a in inputs), float(got[i]), float(want[i])) for i in where]
    assert not bad.any(), f"{bad.sum()} beyond {bound} ulps; (inputs..., got, want): {shown}"


def libm(name: str, *arrays: np.ndarray) -> np.ndarray:
    """The C library's float64 ``name`` at each point: what the tiers called before."""
    function = getattr(LIBM, name)
    function.restype, function.argtypes = ctypes.c_double, [ctypes.c_double] * len(arrays)
    return np.array([function(*map(float, p)) for p in zip(*arrays)], dtype=F64)


def rounded(numpy, *arrays: np.ndarray) -> np.ndarray:
    """The float64 oracle at float32 inputs, rounded to float32."""
    with np.errstate(all="ignore"):
        return np.asarray(numpy(*(a.astype(F64) for a in arrays))).astype(F32)


# ------------------------------------------------------------------------------- arithmetic
@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("name", ["add", "sub", "mul", "div"])
def test_infix_ops_are_numpys_bit_for_bit(name, dtype):
    a, b = pairs(dtype)
    with np.errstate(all="ignore"):
        assert_same_bits(
            evaluate(ENTRIES[name].lower, a, b, dtype=dtype), ENTRIES[name].numpy(a, b), a, b
        )


@pytest.mark.parametrize("dtype", [F64, F32])
def test_neg_flips_the_sign_bit(dtype):
    x = wide(dtype)
    assert_same_bits(evaluate(ENTRIES["neg"].lower, x, dtype=dtype), -x, x)


def test_pow_is_the_c_librarys():
    a, b = pairs(F64, 1500)
    got = evaluate(ENTRIES["pow"].lower, a, b)
    assert_same_bits(got, libm("pow", a, b), a, b)
    with np.errstate(all="ignore"):
        assert_within_ulps(got, np.power(a, b), 1, a, b)


def test_pow_float32_within_an_ulp():
    a, b = pairs(F32, 1500)
    with np.errstate(all="ignore"):
        assert_within_ulps(
            evaluate(ENTRIES["pow"].lower, a, b, dtype=F32), rounded(np.power, a, b), 1, a, b
        )


# ------------------------------------------------------------------------------- piecewise
# runtime/scalar.py's helpers as they were, in plain Python (the float64 oracle of "unchanged").
def _sign(x):
    return 1.0 if x > 0 else -1.0 if x < 0 else x * 0.0


def _heaviside(x, h):
    return 1.0 if x > 0 else 0.0 if x < 0 else h if x == 0 else x


def _maximum(a, b):
    return a + b if a != a or b != b else a if a >= b else b


def _minimum(a, b):
    return a + b if a != a or b != b else a if a <= b else b


def _relu(x):
    return x if x > 0 or x != x else 0.0


def elementwise(function, *arrays) -> np.ndarray:
    out = [function(*map(float, p)) for p in zip(*arrays)]
    return np.array(out, dtype=arrays[0].dtype)


@pytest.mark.parametrize("dtype", [F64, F32])
def test_abs_clears_the_sign_bit(dtype):
    x = wide(dtype)
    assert_same_bits(evaluate(ENTRIES["abs"].lower, x, dtype=dtype), np.abs(x), x)


@pytest.mark.parametrize("dtype", [F64, F32])
def test_sign_as_before(dtype):
    x = wide(dtype)
    got = evaluate(ENTRIES["sign"].lower, x, dtype=dtype)
    assert_same_bits(got, elementwise(_sign, x), x)
    np.testing.assert_array_equal(got, np.sign(x))  # NumPy's values (its sign(-0.0) is +0.0)


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("name,before", [("maximum", _maximum), ("minimum", _minimum),
                                         ("heaviside", _heaviside)])  # fmt: skip
def test_binary_piecewise_as_before_and_as_numpy(name, before, dtype):
    a, b = pairs(dtype)
    got = evaluate(ENTRIES[name].lower, a, b, dtype=dtype)
    assert_same_bits(got, elementwise(before, a, b), a, b)
    # NumPy's values; a tie of ±0 keeps the first operand (NumPy's maximum keeps the second)
    np.testing.assert_array_equal(got, ENTRIES[name].numpy(a, b))


def test_maximum_and_minimum_ties_of_signed_zeros_keep_the_first_operand():
    a, b = np.array([0.0, -0.0]), np.array([-0.0, 0.0])
    for name in ("maximum", "minimum"):
        assert np.signbit(evaluate(ENTRIES[name].lower, a, b)).tolist() == [False, True]

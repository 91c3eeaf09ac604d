"""Ops applied to arrays by their own lowering (``compiler.ir.elementwise``), not by NumPy.

- every op of the table (read from the registry: no hand-kept list), at float64 and float32,
  gives bit for bit what the op's lowering gives when ``tests/lowerjit.py`` compiles it alone
  (nan where it gives nan), over broadcast shapes, 0-d, empty and non-contiguous operands;
- the tensor instant tier, ``compiler.ops`` on plain numbers and the values a drawing shows
  equal the compiled tier's bits (NumPy's exp, tanh or erf differ in the last bit: the check
  could fail). sin and cos have two compiled forms: the tensor tiers' Numba loops run their
  scalar form, the scalar tiers run graphs with them on LLVM's O3 tier by the vector form; the
  tensor instant tier follows the first, ``compiler.ops`` and scalar drawings the second;
- the audit admits the generated modules' ``from runtime.elementwise import elementwise`` and
  ``elementwise("<op of the table>")`` and refuses any other import or binding.
"""

from __future__ import annotations

import numpy as np
import pytest

import compiler
from compiler import ops
from compiler.codegen.audit import TENSOR_DOCSTRING, check_python
from compiler.codegen.numba_source import INFIX
from compiler.errors import CompileError
from compiler.ir import elementwise
from compiler.ir.registry import OPS
from compiler.viz import values
from tests import lowerjit

DTYPES = (np.float64, np.float32)
_BITS = {np.dtype(np.float64): np.uint64, np.dtype(np.float32): np.uint32}
# Ordinary points and the edges: signed zeros, infinities, nan, huge, tiny, integers, halves.
POINTS = np.array(
    [0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 2.5, -3.5, 0.3, -0.7, 1e-300, 1e300, -1e300, 7.0, 40.0,
     -40.0, 1e-5, 3.0, 0.999, -2.0, np.inf, -np.inf, np.nan, 123.456]
)  # fmt: skip


def same_bits(got, want) -> None:
    """Equal bit for bit where ``want`` is a number; nan exactly where ``want`` is nan."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    bits = _BITS[want.dtype]
    np.testing.assert_array_equal(got[~nan].view(bits), want[~nan].view(bits))


def oracle(spec, *arrays, dtype):
    """The op's lowering alone, in the form Numba's kernels inline it (``runtime.numba_ops``)."""
    return lowerjit.evaluate(spec.lower, *arrays, dtype=dtype, vector=spec.fast is None)


def _operands(arity: int, shape: tuple, dtype, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    made = []
    for _ in range(arity):
        picks = rng.choice(POINTS, size=size) * rng.choice([1.0, 1.5, 0.25], size=size)
        with np.errstate(over="ignore"):  # float64 points beyond float32's range become inf
            made.append(picks.reshape(shape).astype(dtype))
    return made


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("op", sorted(INFIX))
def test_infix_ops_written_as_operators_give_their_lowerings_bits(op, dtype):
    """The tensor modules write these as NumPy's operators (one IEEE instruction each)."""
    a, b = _operands(2, (40, 24), dtype, seed=len(op))
    operands = (a, b)[: OPS[op].arity]
    code = INFIX[op].format(a="a", b="b")
    with np.errstate(all="ignore"):
        got = eval(code, {"a": a, "b": b})  # noqa: S307 - the module's own line, on arrays
    same_bits(got, oracle(OPS[op], *operands, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("op", sorted(OPS))
def test_every_op_gives_its_lowerings_bits(op, dtype):
    spec = OPS[op]
    dtype = np.dtype(dtype)
    same = _operands(spec.arity, (7, 9), dtype, seed=len(op))
    same_bits(elementwise.apply(spec, *same), oracle(spec, *same, dtype=dtype))
    # broadcast: a column against a row (materialised) and a single element (read once)
    column = _operands(1, (7, 1), dtype, seed=1)[0]
    rows = _operands(spec.arity, (9,), dtype, seed=2)
    mixed = [column, *rows[1:]] if spec.arity > 1 else [column]
    same_bits(elementwise.apply(spec, *mixed), oracle(spec, *mixed, dtype=dtype))
    single = [dtype.type(0.5), *same[1:]] if spec.arity > 1 else [same[0][:1, :1]]
    same_bits(elementwise.apply(spec, *single), oracle(spec, *single, dtype=dtype))
    # non-contiguous: a transposed and a strided view
    views = [same[0].T, *(a.T for a in same[1:])]
    same_bits(elementwise.apply(spec, *views), oracle(spec, *views, dtype=dtype))
    strided = [a[:, ::2] for a in same]
    same_bits(elementwise.apply(spec, *strided), oracle(spec, *strided, dtype=dtype))
    if spec.fast is not None:  # the scalar tiers' (LLVM O3) form of sin and cos
        want = lowerjit.evaluate(spec.lower, *same, dtype=dtype, vector=True)
        same_bits(elementwise.apply(spec, *same, vector=True), want)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("op", sorted(OPS))
def test_zero_d_and_empty_operands(op, dtype):
    spec = OPS[op]
    dtype = np.dtype(dtype)
    scalars = [dtype.type(v) for v in (0.75, -1.5, 2.0)[: spec.arity]]
    got = elementwise.apply(spec, *scalars)
    assert isinstance(got, np.generic) and got.dtype == dtype  # as a ufunc answers 0-d
    same_bits(got, oracle(spec, *scalars, dtype=dtype).reshape(()))
    empty = [np.empty((0, 3), dtype=dtype)] * spec.arity
    out = elementwise.apply(spec, *empty)
    assert out.shape == (0, 3) and out.dtype == dtype


def test_the_dtype_follows_numpys_promotion():
    mul = OPS["mul"]
    f32 = np.ones(3, np.float32)
    assert elementwise.apply(mul, f32, 2.0).dtype == np.float32  # a Python float is weak
    assert elementwise.apply(mul, f32, np.ones(3)).dtype == np.float64
    assert elementwise.apply(mul, np.arange(3), 2).dtype == np.float64  # integers: float64
    assert type(elementwise.apply(mul, 2.0, 3.0)) is np.float64


@pytest.mark.parametrize("value", [1j, np.array([1.0 + 2j]), np.array(["a"])])
def test_operands_that_are_not_real_numbers_are_refused(value):
    with pytest.raises(TypeError, match="real numbers"):
        elementwise.apply(OPS["exp"], value)


def test_a_wrong_operand_count_is_named():
    with pytest.raises(TypeError, match="exp takes 1 operand"):
        elementwise.apply(OPS["exp"], 1.0, 2.0)


# ------------------------------------------------------------------------------ the tiers agree
TEXT = "sum(exp(x) * tanh(y) + erf(x) / cbrt(y) + log1p(x * x) + sin(y) * cos(x))"
SHAPES = {"x": ("n",), "y": ("n",)}


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_the_tensor_instant_tier_has_the_compiled_tiers_bits(dtype):
    rng = np.random.default_rng(3)
    x = rng.uniform(-3, 3, 257).astype(dtype)
    y = rng.uniform(0.2, 4, 257).astype(dtype)
    instant = compiler.compile_gradient(TEXT, shapes=SHAPES, mode="instant", fuse=False)
    compiled = compiler.compile_gradient(TEXT, shapes=SHAPES, mode="compiled", fuse=False)
    assert "from runtime.elementwise import elementwise" in instant.source
    assert "OPS[" not in instant.source
    value, grads = instant.value_and_grad(x=x, y=y)
    want, want_grads = compiled.value_and_grad(x=x, y=y)
    for name in ("x", "y"):
        same_bits(grads[name], want_grads[name])
    # NumPy's own functions would not do: they differ from the lowerings somewhere here
    numpy_exp = OPS["exp"].numpy(x)
    assert not np.array_equal(numpy_exp, elementwise.apply(OPS["exp"], x)) or dtype == np.float32


@pytest.mark.parametrize("name", ["exp", "tanh", "erf", "cbrt", "sin", "log1p"])
def test_compiler_ops_on_numbers_give_the_compiled_tiers_bits(name):
    x = np.random.default_rng(5).uniform(-4, 4, 500)
    kernel = compiler.compile_gradient(f"{name}(x)", mode="compiled", fuse=False)
    same_bits(getattr(ops, name)(x), np.asarray(kernel(x=x)))
    same_bits(np.asarray(getattr(ops, name)(float(x[0]))), np.asarray(kernel(x=x[:1]))[0])


def test_a_drawings_values_are_the_compiled_tiers():
    text = "exp(x) * tanh(y) + erf(x) * cbrt(y)"
    x = np.random.default_rng(6).uniform(-3, 3, 300)
    y = np.random.default_rng(7).uniform(0.1, 3, 300)
    graph = compiler.trace(text)
    drawn = values.evaluate(graph, {"x": x, "y": y})[graph.outputs[0]]
    kernel = compiler.compile_gradient(text, mode="compiled", fuse=False)
    same_bits(drawn, np.asarray(kernel(x=x, y=y)))


# ------------------------------------------------------------------------------ the audit
HEAD = f'"""{TENSOR_DOCSTRING}"""\n\n'


def test_the_audit_admits_the_runner():
    source = (
        HEAD + 'from runtime.elementwise import elementwise\n\nlowered_exp = elementwise("exp")\n'
    )
    assert check_python(source) == source


@pytest.mark.parametrize(
    "lines",
    [
        "from runtime.elementwise import apply\n",
        "from runtime.llvm_jit import llvm\n",
        "from compiler.ir.elementwise import apply\n",
        "from compiler.ir.registry import OPS\n",
        "from runtime.elementwise import elementwise\nf = elementwise('no such op')\n",
        "from runtime.elementwise import elementwise\nf = elementwise(__name__)\n",
        "from runtime.elementwise import elementwise\nf = elementwise('exp', 'os')\n",
        "from runtime.elementwise import elementwise as e\n",
    ],
)
def test_the_audit_refuses_anything_else(lines):
    with pytest.raises(CompileError):
        check_python(HEAD + lines)


# ------------------------------------------------------------------------------ the disk cache
def test_loops_are_kept_in_the_disk_cache_and_load_with_the_same_bits(monkeypatch, tmp_path):
    from runtime import elementwise as runtime_elementwise  # installs the disk cache
    from runtime import llvm_jit

    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(elementwise, "_compiled", {})
    spec, x = OPS["tanh"], np.linspace(-3, 3, 101, dtype=np.float32)
    key = runtime_elementwise._key(spec, x.dtype, (False,), spec.fast is None)
    assert llvm_jit.read(key) is None
    compiled = runtime_elementwise.elementwise("tanh")(x)
    assert llvm_jit.read(key) is not None  # stored for the next process
    monkeypatch.setattr(elementwise, "_compiled", {})
    same_bits(runtime_elementwise.elementwise("tanh")(x), compiled)  # loaded, not compiled
    same_bits(compiled, oracle(spec, x, dtype=np.float32))


def test_an_input_named_like_the_runner_keeps_its_name_apart():
    x = np.linspace(0.5, 2, 5)
    text = "sum(exp(elementwise) * OPS)"
    shapes = {"elementwise": ("n",), "OPS": ("n",)}
    instant = compiler.compile_gradient(text, shapes=shapes, mode="instant", fuse=False)
    compiled = compiler.compile_gradient(text, shapes=shapes, mode="compiled", fuse=False)
    got = instant.value_and_grad(elementwise=x, OPS=x)[1]
    want = compiled.value_and_grad(elementwise=x, OPS=x)[1]
    for name in shapes:
        same_bits(got[name], want[name])

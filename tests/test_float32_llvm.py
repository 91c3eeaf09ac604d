"""float32 kernels on the LLVM tier and the instant VM (``dtype="float32"``).

``LLVMModule(..., dtype="float32")`` and ``InstantModule(..., dtype="float32")`` take and give
float32 arrays (scalar inputs as Python floats): the entries' IR is written at ``float`` width,
each node a call of its op's ``@op.<name>.f32`` (the same lowering as at float64), constants
rounded once to float32, and the sums of scalar inputs' gradients accumulated in float64 and
rounded to float32 once. Checked here, driving the modules directly (as ``runtime.kernel`` does),
on O3 and O0 code and the VM, against SymPy's derivatives evaluated by NumPy/SciPy in float64 at
the same (float32) points:

- float32 tolerance: ``|got - want| <= RTOL32 * (|want| + scale)``, ``scale`` the largest
  ``|want|`` of that output (gradients lose relative accuracy where their terms cancel, as any
  float32 evaluation does); sums over points: ``RTOL32`` of the sum of the terms' magnitudes;
- float64 modules: the same oracle to 1e-10, and explicitly float64 is the default, bit for bit
  (its IR text is the one the tier wrote before float32 existed);
- exact float32 arithmetic: plain ``+ - * /`` bit for bit NumPy's float32, constants rounded once
  (0.1, 1/3; 1e300 becomes inf, 1e-50 zero, as NumPy rounds them);
- the partial sums: a scalar input's gradient over 300,001 points is the float64 sum rounded
  once (bit for bit), serial and threaded;
- the hot ops vectorise at float32 (``<N x float>`` values, no C library call, any N);
- every built-in op, alone, through each tier at float32 gives what its lowering gives alone;
- the float32 machine is built once (a second machine beside float64's) and cached on disk under
  its own key; the LLVM tier's cache keys hold the dtype; a bad dtype or an array of the wrong
  dtype is a clear error, never a wrong answer.
"""

from __future__ import annotations

import hashlib
import math
import re

import numpy as np
import pytest
import sympy as sp
from lowerjit import evaluate
from test_vecmath import _has_avx2_fma

import compiler
import runtime.instant as instant
from compiler.api import plan as adjoint_of
from compiler.codegen import llvm_ir, llvm_ops
from compiler.codegen.entries import plan
from compiler.ir.graph import INPUT, SEED, Graph
from compiler.ir.registry import OPS
from runtime import llvm_jit
from runtime.instant import InstantModule, vm_source
from runtime.llvm_tier import LLVMModule

F32, F64 = np.float32, np.float64
#: The float32 tolerance (relative, see the module's docstring): 16 float32 epsilons (2^-19,
#: 1.9e-6). Measured on these expressions and tiers: at most 3 epsilons (3.5e-7, a gradient of
#: trig-and-gates); most outputs within one.
RTOL32 = 16 * float(np.finfo(np.float32).eps)
RTOL64 = 1e-10
TIERS = ("O3", "O0", "vm")
N = 2001  # not a multiple of any block length

x, y, w, b, mu, sigma = sp.symbols("x y w b mu sigma", real=True)


def _piecewise_sqrt(v):
    return sp.Piecewise((sp.sqrt(v), v > 0), (0, True))


#: name -> (symgrad text, SymPy oracle, inputs' ranges, kinds of the inputs (seed: scalar)).
CASES = {
    "neuron": ("tanh(w*x + b)", sp.tanh(w * x + b), {"w": (-2, 2), "x": (-2, 2), "b": (-1, 1)}),
    "neuron-scalar-weights": (
        "tanh(w*x + b)",
        sp.tanh(w * x + b),
        {"w": 0.7, "x": (-2, 2), "b": -0.3},
    ),
    "rosenbrock": (
        "(1 - x)**2 + 100*(y - x**2)**2",
        (1 - x) ** 2 + 100 * (y - x**2) ** 2,
        {"x": (-2, 2), "y": (-1, 3)},
    ),
    "many-ops": (
        "where(x > 0, sqrt(x), 0) + clip(y, -1, 2) + erf(x*y) + lgamma(abs(x) + 1)"
        " + atan2(x, y) + hypot(x, y) * exp(-x*x)",
        _piecewise_sqrt(x)
        + sp.Min(sp.Max(y, -1), 2)
        + sp.erf(x * y)
        + sp.loggamma(sp.Abs(x) + 1)
        + sp.atan2(x, y)
        + sp.sqrt(x**2 + y**2) * sp.exp(-x * x),
        {"x": (-3, 3), "y": (-3, 3)},
    ),
    "trig-and-gates": (
        "sin(3*x) * cos(y) + sigmoid(x*y) + softplus(x) - logsigmoid(y) + log1p(y*y)",
        sp.sin(3 * x) * sp.cos(y)
        + 1 / (1 + sp.exp(-x * y))
        + sp.log(1 + sp.exp(x))
        + sp.log(1 + sp.exp(-y))
        + sp.log(1 + y * y),
        {"x": (-4, 4), "y": (-4, 4)},
    ),
    "gaussian-nll-scalar-params": (
        "0.5 * ((x - mu) / sigma) ** 2 + log(sigma)",
        sp.Rational(1, 2) * ((x - mu) / sigma) ** 2 + sp.log(sigma),
        {"x": (-3, 3), "mu": 0.3, "sigma": 1.7},
    ),
}


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """This file's kernels (and the machines' object code) in a cache of its own."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SYMGRAD_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


# ------------------------------------------------------------------ driving the modules
def module(tier: str, adj, inputs, kinds: str, dtype: str, name: str = ""):
    """The tier's module for ``adj`` at ``dtype``: LLVM at O3 or O0, or the VM."""
    if tier == "vm":
        return InstantModule(adj, inputs, kinds, dtype=dtype)
    key = hashlib.sha256(f"{name}|{inputs}|{kinds}".encode()).hexdigest()
    return LLVMModule(adj, inputs, kinds, key, optimise=tier == "O3", dtype=dtype)


def run_entry(m, adj, inputs, kinds, entry: str, n: int, given: dict, dtype) -> list[np.ndarray]:
    """Call ``entry`` with ``given`` (node -> array or Python float); its outputs, in order."""
    e = {e.name: e for e in plan(adj, inputs, kinds)[1]}[entry]
    args = [given[node] for node, _ in e.given]
    outs = [np.empty(n, dtype) if kind == "a" else np.zeros(1, dtype) for _, kind in e.outputs]
    m.run(entry, n, *args, *outs)
    return outs


def points(ranges: dict, n: int, seed: int = 14) -> dict:
    """float32 arrays drawn in each array input's range; scalar inputs as Python floats."""
    rng = np.random.default_rng(seed)
    return {
        name: rng.uniform(*r, n).astype(F32) if isinstance(r, tuple) else float(F32(r))
        for name, r in ranges.items()
    }


def oracle(expr, values: dict, wrt: tuple[str, ...]) -> tuple[np.ndarray, dict]:
    """The value and gradients of ``expr`` in float64 (SymPy's ``diff``, evaluated by NumPy and
    SciPy) at ``values`` widened exactly to float64."""
    symbols = [sp.Symbol(name, real=True) for name in values]
    args = [np.asarray(v, F64) for v in values.values()]

    def at(e):
        f = sp.lambdify(symbols, e, modules=["scipy", "numpy"])
        with np.errstate(all="ignore"):  # where's and clip's unselected branches
            return np.broadcast_to(np.asarray(f(*args), F64), np.broadcast(*args).shape)

    return at(expr), {name: at(sp.diff(expr, sp.Symbol(name, real=True))) for name in wrt}


def assert_close(got, want, rtol: float, what: str) -> None:
    """``|got - want| <= rtol * (|want| + max |want|)``, nan where the oracle is nan."""
    got, want = np.asarray(got, F64), np.asarray(want, F64)
    scale = float(np.nanmax(np.abs(want))) if want.size else 0.0
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=what)
    ok = ~np.isnan(want)
    bound = rtol * (np.abs(want[ok]) + scale)
    error = np.abs(got[ok] - want[ok])
    assert np.all(error <= bound), (what, float(np.max(error / bound)))


def assert_sum_close(got, terms, rtol: float, what: str) -> None:
    """A scalar input's gradient: the sum of ``terms``, within ``rtol`` of their magnitudes."""
    want = math.fsum(terms.tolist())
    assert abs(float(got[0]) - want) <= rtol * math.fsum(np.abs(terms).tolist()), (what, got, want)


def setup(case: str):
    text, expr, ranges = CASES[case]
    k = compiler.compile_gradient(text, mode="instant")
    adj, inputs = k.adjoint, k.inputs
    kinds = "".join("a" if isinstance(ranges[i], tuple) else "s" for i in inputs) + "s"
    return adj, inputs, kinds, expr, ranges


def givens(adj, values: dict, dtype) -> dict:
    """node -> value for the inputs (arrays as ``dtype``) and the seed (1.0)."""
    out: dict = {}
    for i, node in enumerate(adj.nodes):
        if node.op == INPUT:
            v = values[node.value]
            out[i] = v.astype(dtype) if isinstance(v, np.ndarray) else v
        elif node.op == SEED:
            out[i] = 1.0
    return out


def check_outputs(outs, kinds_of: dict, wrt, want, grads, terms, rtol, dtype) -> None:
    """``outs`` = value then the gradients in ``wrt`` order, against the oracle."""
    assert all(o.dtype == dtype for o in outs)
    assert_close(outs[0], want, rtol, "value")
    for name, g in zip(wrt, outs[1:]):
        if kinds_of[name] == "s":
            assert_sum_close(g, terms[name], rtol, name)
        else:
            assert_close(g, grads[name], rtol, name)


# ------------------------------------------------------------------ against the float64 oracle
@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_entry_matches_the_float64_oracle(case, tier, dtype):
    """value_and_grad, forward, and forward_save's residuals fed to backward, at ``dtype``."""
    adj, inputs, kinds, expr, ranges = setup(case)
    values = points(ranges, N)
    want, grads = oracle(expr, values, adj.wrt)
    terms = {name: np.broadcast_to(g, (N,)) for name, g in grads.items()}
    rtol, np_dtype = (RTOL32, F32) if dtype == "float32" else (RTOL64, F64)
    kinds_of = dict(zip(inputs, kinds))
    m = module(tier, adj, inputs, kinds, dtype, case)
    given = givens(adj, values, np_dtype)

    def call(entry, extra=None):
        return run_entry(m, adj, inputs, kinds, entry, N, {**given, **(extra or {})}, np_dtype)

    check_outputs(call("value_and_grad"), kinds_of, adj.wrt, want, grads, terms, rtol, np_dtype)
    assert_close(call("forward")[0], want, rtol, "forward")
    value, *saved = call("forward_save")
    assert_close(value, want, rtol, "forward_save")
    residuals = dict(zip(adj.saved_nodes, saved))
    back = call("backward", residuals)
    check_outputs([value, *back], kinds_of, adj.wrt, want, grads, terms, rtol, np_dtype)


@pytest.mark.parametrize("tier", TIERS)
def test_sin_and_cos_beyond_float32s_trig_max(tier):
    """Huge arguments (beyond 2**21, float32's TRIG_MAX) in blocks of ordinary ones: the fast
    chunks flag them and the block runs again through the exact twins (O3), or the C library's
    sinf and cosf answer (O0, the VM)."""
    text, expr = "sin(x) + cos(x) * y", sp.sin(x) + sp.cos(x) * y
    k = compiler.compile_gradient(text, mode="instant")
    adj, inputs = k.adjoint, k.inputs
    values = points({"x": (-10, 10), "y": (-1, 1)}, N)
    values["x"][[3, 700, 1999]] = [F32(2.0**21 + 5), F32(-3.0e7), F32(1.0e30)]
    want, grads = oracle(expr, values, adj.wrt)
    m = module(tier, adj, inputs, "aas", "float32", "huge-trig")
    outs = run_entry(m, adj, inputs, "aas", "value_and_grad", N, givens(adj, values, F32), F32)
    check_outputs(outs, {"x": "a", "y": "a"}, adj.wrt, want, grads, {}, RTOL32, F32)
    if tier == "O3":
        assert "define void @value_and_grad.1.exact(" in m.source


# ------------------------------------------------------------------ float64 unchanged
@pytest.mark.parametrize("tier", TIERS)
def test_float64_is_the_default_bit_for_bit(tier):
    adj, inputs, kinds, expr, ranges = setup("many-ops")
    values = points(ranges, N)
    given = givens(adj, values, F64)
    default = (
        InstantModule(adj, inputs, kinds)
        if tier == "vm"
        else LLVMModule(adj, inputs, kinds, "default-f64", optimise=tier == "O3")
    )
    explicit = module(tier, adj, inputs, kinds, "float64", "explicit-f64")
    a = run_entry(default, adj, inputs, kinds, "value_and_grad", N, given, F64)
    b = run_entry(explicit, adj, inputs, kinds, "value_and_grad", N, given, F64)
    for u, v in zip(a, b):
        assert u.dtype == F64 and u.tobytes() == v.tobytes()
    if tier != "vm":
        for entry in ("forward", "value_and_grad", "backward"):
            assert default.ir(entry).text == explicit.ir(entry).text
            assert " float " not in explicit.ir(entry).text and ".f32" not in default.source


# ------------------------------------------------------------------ exact float32 arithmetic
@pytest.mark.parametrize("tier", TIERS)
def test_plain_arithmetic_is_numpys_float32_bit_for_bit(tier):
    """IEEE operations are correctly rounded at float32: NumPy's float32 is the oracle, with
    the constants rounded once to float32 (0.1 and 1/3 are not float32 numbers)."""
    k = compiler.compile_gradient("x * 0.1 + y / 3", mode="instant")
    adj, inputs = k.adjoint, k.inputs
    values = points({"x": (-100, 100), "y": (-100, 100)}, N)
    xs, ys = values["x"], values["y"]
    m = module(tier, adj, inputs, "aas", "float32", "arith")
    value, dx, dy = run_entry(
        m, adj, inputs, "aas", "value_and_grad", N, givens(adj, values, F32), F32
    )
    np.testing.assert_array_equal(value, xs * F32(0.1) + ys / F32(3))
    np.testing.assert_array_equal(dx, np.full(N, F32(0.1)))
    np.testing.assert_array_equal(dy, np.full(N, F32(1 / 3)))  # the graph's 1/3, rounded once


@pytest.mark.parametrize("tier", TIERS)
def test_constants_beyond_float32s_range_round_as_numpy_rounds_them(tier):
    k = compiler.compile_gradient("x * 1e300 + y * 1e-50", mode="instant")
    adj, inputs = k.adjoint, k.inputs
    xs = np.array([1.0, -2.0, 0.0, 0.5], F32)
    ys = np.array([3.0, -1.0, 7.0, -0.0], F32)
    m = module(tier, adj, inputs, "aas", "float32", "range")
    given = givens(adj, {"x": xs, "y": ys}, F32)
    with np.errstate(invalid="ignore"):
        value, dx, dy = run_entry(m, adj, inputs, "aas", "value_and_grad", 4, given, F32)
    with np.errstate(over="ignore", invalid="ignore"):
        big, tiny = F32(1e300), F32(1e-50)  # inf and 0: NumPy's rounding
        np.testing.assert_array_equal(value, xs * big + ys * tiny)
    np.testing.assert_array_equal(dx, np.full(4, np.inf, F32))
    np.testing.assert_array_equal(dy, np.zeros(4, F32))


def test_float32_ir_is_float_throughout_but_the_sums():
    adj, inputs, kinds, _, _ = setup("gaussian-nll-scalar-params")  # x array, mu, sigma scalars
    m = module("O3", adj, inputs, kinds, "float32", "ir")
    ir = m.ir("value_and_grad")
    assert ir.dtype == "float32" and ir.header.endswith(", float32")
    for text in ir.ops:  # each op's lowering at float width
        assert re.match(r"define internal float @op\.\w+(\.fast)?\.f32\(float", text), text
    chunks = "\n".join(ir.functions)
    assert "load float, ptr %x.at" in chunks and "store float" in chunks
    for line in chunks.split("\n"):  # double: only the sums of mu's and sigma's gradients
        if "double" in line:
            assert re.search(r"%\.s\d+\.", line), line
    assert re.search(r"fpext float %\S+ to double", chunks)
    arrays_only = module("O3", adj, inputs, "aaas", "float32", "ir-a").ir("value_and_grad")
    assert "double" not in "\n".join(arrays_only.functions)  # no sums: no double at all


def literal_of(value: float, dtype: str) -> str:
    return llvm_ir.literal(float(np.asarray(value, dtype)))


def test_a_constant_is_written_as_the_double_equal_to_its_float32():
    assert llvm_ir.literal_at(0.1, "float32") == literal_of(0.1, "float32") == "0x3FB99999A0000000"
    assert llvm_ir.literal_at(0.1, "float64") == llvm_ir.literal(0.1)
    assert llvm_ir.literal_at(1e300, "float32") == llvm_ir.literal(math.inf)
    assert llvm_ir.literal_at(-1e-50, "float32") == llvm_ir.literal(-0.0)


# ------------------------------------------------------------------ sums of scalars' gradients
@pytest.mark.parametrize("parallel", [True, False], ids=["threads", "serial"])
@pytest.mark.parametrize("tier", TIERS)
def test_a_scalar_inputs_gradient_is_summed_in_float64_and_rounded_once(tier, parallel):
    """f = w * x: the gradient of the scalar w is the sum of x over 300,001 points. Summed in
    float64 (error ~1e-11 relative, far below float32's half ulp) and rounded once, it is the
    exact sum rounded to float32, bit for bit; a float32 running sum would be ~1e-4 off."""
    k = compiler.compile_gradient("w * x", mode="instant")
    adj, inputs = k.adjoint, k.inputs  # (w, x)
    n = 300_001
    xs = np.random.default_rng(3).uniform(0, 1, n).astype(F32)
    m = module(tier, adj, inputs, "sas", "float32", "sum")
    e = {e.name: e for e in plan(adj, inputs, "sas")[1]}["value_and_grad"]
    given = givens(adj, {"w": 0.5, "x": xs}, F32)
    args = [given[node] for node, _ in e.given]
    value, dw, dx = np.empty(n, F32), np.zeros(1, F32), np.empty(n, F32)
    m.run("value_and_grad", n, *args, value, dw, dx, parallel=parallel)
    assert dw.dtype == F32 and dw[0] == F32(math.fsum(xs.astype(F64).tolist()))
    np.testing.assert_array_equal(value, F32(0.5) * xs)
    np.testing.assert_array_equal(dx, np.full(n, F32(0.5)))


# ------------------------------------------------------------------ vectorisation
HOT = "exp(x) + log(y) + sin(x) + cos(y) + tanh(x*y) + erf(x) + sigmoid(y) + softplus(x)"
LIBM_INTRINSICS = re.compile(r"llvm\.(exp|exp2|log|log2|log10|sin|cos|tan|pow)\.")


def optimised_chunks(text: str, prefix: str) -> dict[str, str]:
    """Each chunk function of an entry's IR after LLVM's O3 pipeline."""
    binding = llvm_jit.llvm()
    mod = binding.parse_assembly(text, context=binding.create_context())
    options = binding.create_pipeline_tuning_options(speed_level=3)
    builder = binding.create_pass_builder(llvm_jit.target_machine(), options)
    builder.getModulePassManager().run(mod, builder)
    return {
        f.name: str(f) for f in mod.functions if f.name.startswith(prefix) and not f.is_declaration
    }


@pytest.mark.skipif(not _has_avx2_fma(), reason="needs a CPU with vector FMA (AVX2 or AVX-512)")
@pytest.mark.parametrize("source", [HOT, "logsigmoid(x) + log1p(x*y) + expm1(y)"])
def test_hot_ops_vectorise_at_float32(source):
    k = compiler.compile_gradient(source, mode="instant")
    adj, inputs = k.adjoint, k.inputs
    ir = module("O3", adj, inputs, "aas", "float32", source).ir("value_and_grad")
    chunks = optimised_chunks(ir.text, "value_and_grad.")
    assert any(not name.endswith(".exact") for name in chunks)
    for name, text in chunks.items():
        if name.endswith(".exact"):
            continue  # rarely run (a huge sin or cos argument): the C library's, not optimised
        assert re.search(r"<\d+ x float>", text), name  # several points at a time
        callees = set(re.findall(r"call [^@]*@([\w.$]+)\(", text))
        assert all(c.startswith("llvm.") and not LIBM_INTRINSICS.match(c) for c in callees), (
            name,
            callees,
        )


# ------------------------------------------------------------------ every op through each tier
def one_op(name: str) -> tuple:
    """A graph computing ``name`` of its operands (inputs a, b, c), forward only."""
    g = Graph()
    operands = [g.input(p) for p in "abc"[: OPS[name].arity]]
    g.outputs = [g.add(name, *operands)]
    return adjoint_of(g, ()), g.inputs


def op_points(name: str) -> list[np.ndarray]:
    """Specials and ordinary values for each operand (polygamma's order: small naturals, as
    its loop runs about n steps)."""
    rng = np.random.default_rng(OPS[name].arity)
    special = np.array([0.0, -0.0, 1.0, -1.0, 0.5, 2.5, np.inf, -np.inf, np.nan, 1e30, 3e7])
    arrays = [
        np.concatenate([special, rng.normal(0, 3, 300), np.roll(special, k)]).astype(F32)
        for k in range(OPS[name].arity)
    ]
    if name == "polygamma":
        arrays[0] = rng.integers(0, 6, len(arrays[0])).astype(F32)
    return arrays


@pytest.mark.parametrize("name", [op.name for op in vm_source.builtin_ops()])
def test_every_builtin_op_at_float32_is_its_lowering_bit_for_bit(name):
    """Each tier runs the op's own lowering at float width: the same bits as the lowering
    compiled alone (whose accuracy against NumPy/SciPy is ``test_op_lowerings``'s and
    ``test_new_ops``'s), with O3's branch-free forms and the VM's and O0's C library forms."""
    adj, inputs = one_op(name)
    arrays = op_points(name)
    n = len(arrays[0])
    given = givens(adj, dict(zip(inputs, arrays)), F32)
    for tier in TIERS:
        kinds = "a" * len(inputs) + "s"
        m = module(tier, adj, inputs, kinds, "float32", f"op-{name}")
        with np.errstate(all="ignore"):
            (got,) = run_entry(m, adj, inputs, kinds, "forward", n, given, F32)
            want = evaluate(OPS[name].lower, *arrays, dtype=F32, vector=tier == "O3")
        assert got.dtype == F32
        same = (got.view(np.int32) == want.view(np.int32)) | (np.isnan(got) & np.isnan(want))
        assert same.all(), (tier, [(float(a[~same][0]) for a in arrays)], got[~same], want[~same])


# ------------------------------------------------------------------ the machine and the caches
def test_the_float32_machine_is_built_once_and_cached_apart(monkeypatch, tmp_path):
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(instant, "_machines", {})
    compiled: list[str] = []
    real = llvm_jit.compile_objects

    def counting(texts, stopping=None, optimise=False):
        compiled.extend(texts)
        return real(texts, stopping, optimise)

    monkeypatch.setattr(llvm_jit, "compile_objects", counting)
    for case in ("neuron", "rosenbrock", "gaussian-nll-scalar-params"):
        adj, inputs, kinds, expr, ranges = setup(case)
        values = points(ranges, 100)
        given = givens(adj, values, F32)
        m = InstantModule(adj, inputs, kinds, dtype="float32")
        for entry in ("forward", "value_and_grad"):
            run_entry(m, adj, inputs, kinds, entry, 100, given, F32)
    assert len(compiled) == 1 and "load float, ptr %load.array.p" in compiled[0]
    run32 = instant.machine(dtype="float32")
    assert instant.machine(dtype="float32") is run32
    assert instant.machine() is not run32 and len(compiled) == 2  # float64's: a second machine
    assert "load double, ptr %load.array.p" in compiled[1]
    assert len(list(tmp_path.glob("llvm_*.bin"))) == 2  # one object file each, keys apart
    monkeypatch.setattr(instant, "_machines", {})  # a new process: both load from the disk
    assert instant.machine(dtype="float32") is not None and instant.machine() is not None
    assert len(compiled) == 2


def test_the_llvm_cache_key_holds_the_dtype():
    adj, inputs, kinds, expr, ranges = setup("rosenbrock")
    a = LLVMModule(adj, inputs, kinds, "same-key", dtype="float64")
    b = LLVMModule(adj, inputs, kinds, "same-key", dtype="float32")
    assert a.key("value_and_grad") != b.key("value_and_grad")
    values = points(ranges, 50)
    want, _ = oracle(expr, values, adj.wrt)
    for m, dtype in ((a, F64), (b, F32), (LLVMModule(adj, inputs, kinds, "same-key"), F64)):
        given = givens(adj, values, dtype)
        (value,) = run_entry(m, adj, inputs, kinds, "forward", 50, given, dtype)
        assert_close(value, want, RTOL32, "forward")


def test_a_bad_dtype_or_an_array_of_the_wrong_dtype_is_a_clear_error():
    adj, inputs, kinds, _, ranges = setup("rosenbrock")
    for make in (
        lambda: LLVMModule(adj, inputs, kinds, "k", dtype="float16"),
        lambda: InstantModule(adj, inputs, kinds, dtype="float16"),
        lambda: instant.machine(dtype="int64"),
        lambda: llvm_ops.op_function("exp", True, dtype="float16"),
    ):
        with pytest.raises(ValueError, match="dtype must be 'float64' or 'float32'"):
            make()
    values = points(ranges, 10)
    for tier in ("O0", "vm"):
        m = module(tier, adj, inputs, kinds, "float32", "wrong")
        given = givens(adj, values, F64)  # float64 arrays for a float32 module
        with pytest.raises(TypeError, match="float64.*float32"):
            run_entry(m, adj, inputs, kinds, "forward", 10, given, F32)

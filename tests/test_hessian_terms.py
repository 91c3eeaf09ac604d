"""The Hessian as a sum of outer products of tangents (``compiler.passes.hessian``, issue 16).

Oracles: the exact second-order forward mode of random expressions, composed from each op's
second partials by ``sympy.diff`` of its definition at 30 digits (``tests/test_oracle.py``'s
``local`` and ``second``: never symgrad's templates); SymPy's own ``hessian``; central
differences of the first-order gradient kernel. The two ways the program sums a term — in the
kernel's loop, or per sample and then by a matrix product — must agree with each other and with
the oracles, in one block of samples or many.
"""

from __future__ import annotations

import threading

import mpmath
import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import compiler
from compiler.ir import registry
from compiler.passes import hessian as terms
from runtime import hessian as runtime_hessian
from tests.test_oracle import VARS, expressions, local, numpy_value, second

WRT = ("x", "y")  # the parameters; z is an array of samples


def exact_hessian(e, point: dict) -> tuple:
    """Value, gradient and Hessian over ``WRT`` of the tree ``e`` at ``point`` (mpmath, 30
    digits), and each entry's magnitude (the sum of the absolute values of its terms: the
    scale its rounding error is measured against)."""
    if e.op is None:
        value = mpmath.mpf(point[e.var]) if e.var else mpmath.mpf(e.value)
        grad = [mpmath.mpf(int(e.var == w)) for w in WRT]
        zero = [[mpmath.mpf(0)] * len(WRT) for _ in WRT]
        return value, grad, zero, zero
    args = [exact_hessian(a, point) for a in e.args]
    value_fn, first, n = local(e.op)
    at = [a[0] for a in args]
    p = [first[k](*at) for k in range(n)]
    s = [[second(e.op)[k][m](*at) for m in range(n)] for k in range(n)]
    grad = [sum(p[k] * args[k][1][i] for k in range(n)) for i in range(len(WRT))]
    hess, mag = [], []
    for i in range(len(WRT)):
        row, row_mag = [], []
        for j in range(len(WRT)):
            parts = [p[k] * args[k][2][i][j] for k in range(n)]
            parts += [s[k][m] * args[k][1][i] * args[m][1][j] for k in range(n) for m in range(n)]
            row.append(sum(parts))
            row_mag.append(
                sum(abs(p[k]) * args[k][3][i][j] for k in range(n)) + sum(abs(q) for q in parts[n:])
            )
        hess.append(row)
        mag.append(row_mag)
    return value_fn(*at), grad, hess, mag


def _summed(e, x: float, y: float, zs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The exact Hessian summed over the samples ``zs``, and its entries' magnitudes."""
    mpmath.mp.dps = 30
    hess, mag = np.zeros((2, 2)), np.zeros((2, 2))
    for z in zs:
        _, _, h, m = exact_hessian(e, {"x": x, "y": y, "z": float(z)})
        hess += np.array(h, dtype=float)
        mag += np.array(m, dtype=float)
    return hess, mag


@pytest.fixture(params=["in the loop", "per sample"])
def route(request, monkeypatch):
    """Every term summed in the kernel's loop, or every term read out per sample and summed
    by matrix products (over blocks of a few samples, so that a call takes several)."""
    if request.param == "in the loop":
        monkeypatch.setattr(terms, "SMALL_TERM", 10**9)
    else:
        monkeypatch.setattr(terms, "SMALL_TERM", 0)
        monkeypatch.setattr(runtime_hessian, "BLOCK_BYTES", 8 * 3 * 16)
    return request.param


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(e=expressions(), data=st.data())
def test_random_expressions_against_the_exact_second_order(route, e, data):
    """H summed over samples of z, with respect to x and y, against the exact forward mode of
    second order, at points where every node is smooth and finite."""
    assume(e.ops())
    x = data.draw(st.floats(-2.0, 2.0), label="x")
    y = data.draw(st.floats(-2.0, 2.0), label="y")
    zs = np.array(data.draw(st.lists(st.floats(-2.0, 2.0), min_size=1, max_size=5), label="z"))
    env = {"x": np.full(len(zs), x), "y": np.full(len(zs), y), "z": zs}
    _, ok = numpy_value(e, env)
    assume(ok.all())
    want, mag = _summed(e, x, y, zs)
    assume(np.isfinite(want).all() and np.abs(mag).max() < 1e8)
    h = compiler.compile_hessian(e.text, wrt=list(WRT), inputs=VARS, mode="instant")
    _, _, got = h(x=x, y=y, z=zs)
    assert np.array_equal(got, got.T)
    tolerance = 1e-9 * (mag + 1.0)
    assert (np.abs(got - want) <= tolerance).all(), (e.text, got, want)


def _mixture(k: int) -> tuple[str, list[str]]:
    terms_ = " + ".join(f"exp(a{i} - s{i} - 0.5*((x - m{i})*exp(-s{i}))**2)" for i in range(k))
    norm = " + ".join(f"exp(a{i})" for i in range(k))
    return f"-log({terms_}) + log({norm})", [f"{p}{i}" for p in "ams" for i in range(k)]


@pytest.mark.parametrize("fuse", [True, False], ids=["logaddexp nests", "sums of exps"])
def test_the_mixture_against_finite_differences_of_the_gradient(route, fuse):
    """K = 4 over 300 samples, fused (nests of logaddexp, each taken as one node) and not (the
    log of a sum of exps): each column of H is the central difference of the gradient kernel."""
    text, names = _mixture(4)
    rng = np.random.default_rng(11)
    theta = dict(zip(names, rng.normal(0.0, 0.5, len(names)).tolist()))
    x = rng.normal(0.0, 1.5, 300)
    h = compiler.compile_hessian(text, wrt=names, fuse=fuse, mode="instant")
    k = compiler.compile_gradient(text, wrt=names, fuse=fuse, mode="instant")
    value, grad, hess = h(**theta, x=x)
    v, g = k.value_and_grad(**theta, x=x)
    np.testing.assert_array_equal(value, v)
    step = 1e-5
    for j, n in enumerate(names):
        assert grad[n] == float(np.sum(g[n])), n  # first order's own gradient
        plus = k.grad(**{**theta, n: theta[n] + step}, x=x)
        minus = k.grad(**{**theta, n: theta[n] - step}, x=x)
        column = np.array([np.sum(plus[m] - minus[m]) / (2 * step) for m in names])
        np.testing.assert_allclose(hess[:, j], column, rtol=1e-6, atol=1e-6 * np.abs(hess).max())


def test_a_nest_read_twice_is_not_one_node():
    """An inner logaddexp read elsewhere too is a leaf of the outer nest, not part of it: H
    against SymPy's."""
    x, y, z = sp.symbols("x y z", real=True)
    inner = sp.log(sp.exp(x) + sp.exp(y))
    expr = sp.log(sp.exp(inner) + sp.exp(z)) + inner**2 * z
    h = compiler.compile_hessian(
        "logaddexp(logaddexp(x, y), z) + logaddexp(x, y)**2 * z", wrt=["x", "y", "z"]
    )
    point = {"x": 0.3, "y": -1.2, "z": 0.7}
    _, _, got = h(**point)
    at = {x: point["x"], y: point["y"], z: point["z"]}
    want = np.array(sp.hessian(expr, [x, y, z]).subs(at).evalf(30).tolist(), dtype=float)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)


def test_blocks_of_samples_add_up_to_one_block(monkeypatch):
    """Many blocks of samples (the per-sample readers' buffers reused) give the one-block H to
    rounding, and the same value and gradient."""
    text, names = _mixture(5)
    rng = np.random.default_rng(5)
    theta = dict(zip(names, rng.normal(0.0, 0.5, len(names)).tolist()))
    x = rng.normal(0.0, 1.5, 1001)
    h = compiler.compile_hessian(text, wrt=names, mode="instant")
    assert h.terms  # the log of the sum over the components is read out per sample
    one = h(**theta, x=x)
    monkeypatch.setattr(runtime_hessian, "BLOCK_BYTES", 8 * len(h.per_sample) * 97)
    many = h(**theta, x=x)
    np.testing.assert_array_equal(many[0], one[0])
    np.testing.assert_allclose(many[2], one[2], rtol=1e-13, atol=1e-13 * np.abs(one[2]).max())
    for n in names:
        assert abs(many[1][n] - one[1][n]) <= 1e-12 * max(1.0, abs(one[1][n]))


def test_float32_samples():
    """float32 samples: the dense terms' products are summed in float64 and H rounded once."""
    text, names = _mixture(3)
    theta = dict(zip(names, np.linspace(-0.5, 0.5, len(names)).tolist()))
    x = np.linspace(-2, 2, 64)
    h = compiler.compile_hessian(text, wrt=names, mode="instant")
    _, _, want = h(**theta, x=x)
    value, grad, got = h(**{n: np.float32(t) for n, t in theta.items()}, x=x.astype(np.float32))
    assert got.dtype == np.float32 and value.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())


def test_the_mixture_program_is_linear_in_k():
    """The program grows with the graph, not with the triangle: H1's K = 32 program (96
    parameters, 4,656 entries) has under 5,000 live nodes (42,579 as one sweep per row), and
    its dense part is two terms (the log of each sum over the components)."""
    from compiler.gates import fuse

    sizes = {}
    for k in (8, 32):
        text, names = _mixture(k)
        graph, _ = fuse(compiler.trace(text), True, wrt=names)
        plan = terms.hessian(graph, names)
        sizes[k] = sum(plan.program.reachable(plan.program.outputs))
        assert len(plan.terms) == 2
    assert sizes[32] < 5_000 and sizes[32] < 4.5 * sizes[8], sizes


@pytest.mark.parametrize("name", [n for n, op in registry.OPS.items() if op.nest_weight])
def test_a_nest_weight_is_the_nests_gradient_and_its_hessian_diag_minus_outer(name):
    """What ``nest_weight`` states, checked by SymPy on a nest of three leaves: the gradient in
    each leaf is the weight at (leaf, nest value), and the Hessian is diag(w) - w wᵀ."""
    leaves = sp.symbols("l0:3", real=True)
    a, b = sp.symbols("a b", real=True)
    definition = registry.sympy_definition(name)
    names = {s.name: s for s in definition.free_symbols}
    op = sp.Lambda((a, b), definition.xreplace({names["a"]: a, names["b"]: b}))
    nest = op(op(leaves[0], leaves[1]), leaves[2])
    weight = sp.sympify(registry.OPS[name].nest_weight, locals={"a": a, "y": sp.Symbol("y")})
    w = [weight.subs({a: leaf, sp.Symbol("y"): nest}) for leaf in leaves]
    point = {leaves[0]: 0.4, leaves[1]: -1.1, leaves[2]: 2.0}
    for leaf, wi in zip(leaves, w):
        assert abs(float((sp.diff(nest, leaf) - wi).subs(point).evalf(30))) < 1e-25
    hess = sp.hessian(nest, leaves)
    for i in range(3):
        for j in range(3):
            claim = (w[i] if i == j else 0) - w[i] * w[j]
            assert abs(float((hess[i, j] - claim).subs(point).evalf(30))) < 1e-25


def test_concurrent_calls_agree_and_leave_blas_as_it_was():
    """Calls from several threads (Dask's threaded scheduler) give the one-thread answer, and
    BLAS's thread count (limited to one while the dense terms' products run) is restored."""
    from threadpoolctl import threadpool_info

    text, names = _mixture(5)
    rng = np.random.default_rng(2)
    theta = dict(zip(names, rng.normal(0.0, 0.5, len(names)).tolist()))
    x = rng.normal(0.0, 1.5, 3000)
    h = compiler.compile_hessian(text, wrt=names, mode="instant")
    want = h(**theta, x=x)[2]
    before = [lib["num_threads"] for lib in threadpool_info()]
    got: list[np.ndarray] = []

    def work() -> None:
        got.extend(h(**theta, x=x)[2] for _ in range(10))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 40 and all(np.array_equal(g, want) for g in got)
    assert [lib["num_threads"] for lib in threadpool_info()] == before

"""``Kernel.scipy``: a kernel as SciPy's flat-vector objective (issue 16).

Optima are checked against closed forms (a Gaussian's maximum likelihood: the sample mean and
the population standard deviation; a shrunk least squares), the derivatives against central
finite differences of the objective — never against the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest

scipy_optimize = pytest.importorskip("scipy.optimize")

import compiler  # noqa: E402
from compiler.errors import InputError  # noqa: E402

#: The Gaussian's negative log-likelihood per sample, its scale as s = log(sigma).
GAUSS = "0.5*((x - m)*exp(-s))**2 + s"
RNG = np.random.default_rng(16)
SAMPLES = RNG.normal(1.5, 0.7, size=200)
MEAN, STD = SAMPLES.mean(), SAMPLES.std()  # the closed-form optimum: m, exp(s)


def _objective(mode: str = "instant"):
    k = compiler.compile_gradient(GAUSS, mode=mode)
    return k.scipy(like={"m": 0.0, "s": 0.0}, data={"x": SAMPLES})


@pytest.mark.parametrize("method", ["trust-exact", "Newton-CG", "BFGS", "trust-krylov"])
def test_minimize_finds_the_closed_form_optimum(method):
    obj = _objective()
    second = {"trust-exact": {"hess": obj.hess}, "Newton-CG": {"hessp": obj.hessp}}
    second["trust-krylov"] = {"hessp": obj.hessp}
    result = scipy_optimize.minimize(
        obj.fun,
        obj.x0,
        jac=obj.jac,
        method=method,
        options={"xtol": 1e-12} if method == "Newton-CG" else {"gtol": 1e-10},
        **second.get(method, {}),
    )
    fit = obj.unpack(result.x)
    assert fit["m"] == pytest.approx(MEAN, rel=1e-7)
    assert np.exp(fit["s"]) == pytest.approx(STD, rel=1e-7)


def test_fun_and_jac_at_one_x_run_the_kernel_once(monkeypatch):
    obj = _objective()
    calls = []
    original = obj.kernel.value_and_grad
    monkeypatch.setattr(
        obj.kernel, "value_and_grad", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    x = np.array([0.3, -0.2])
    value, grad = obj.fun(x), obj.jac(x)
    assert len(calls) == 1 and obj.evaluations == 1
    x[0] = 0.4  # SciPy may change its array in place: the cache kept a copy
    assert obj.fun(x) != value and len(calls) == 2
    assert obj.fun_and_jac(np.array([0.3, -0.2]))[0] == value and len(calls) == 2  # recent
    assert np.array_equal(obj.jac(np.array([0.3, -0.2])), grad) and len(calls) == 2
    for step in range(1, 12):  # RECENT = 8 newer points push it out
        obj.fun(np.array([0.3 + step, -0.2]))
    assert obj.fun(np.array([0.3, -0.2])) == value and len(calls) == 14


def test_a_point_asked_for_again_gets_its_first_numbers(monkeypatch):
    """An ``auto`` kernel swaps the instant tier for the compiled one mid-fit, and the two may
    differ in the last bit. A backtracking line search that shrank its step back to its start
    then saw f(x) > f(x) and halved forever (notebook 04 hung so in CI): a recent point's
    value and gradient are the ones computed there first."""
    obj = _objective()
    original = obj.kernel.value_and_grad
    calls = []

    def drifting(*a, **k):  # each call one ulp-ish higher, as after a tier swap
        value, grads = original(*a, **k)
        calls.append(1)
        return value * (1 + 1e-15 * len(calls)), grads

    monkeypatch.setattr(obj.kernel, "value_and_grad", drifting)
    xk = np.array([1.0, 0.1])
    f, g = obj.fun_and_jac(xk)
    step, halvings = 1e-3, 0
    while obj.fun(xk - step * g) > f - 0.5 * step * (g @ g):  # the notebook's first loop
        step, halvings = step / 2, halvings + 1
        assert halvings < 200, "the line search never ended"
    assert obj.fun(xk) == f and obj.jac(xk) @ g == g @ g


def _fd_grad(fun, x, h=1e-6):
    return np.array([(fun(x + h * e) - fun(x - h * e)) / (2 * h) for e in np.eye(len(x))])


@pytest.mark.parametrize("mode", ["instant", "compiled"])
def test_derivatives_against_finite_differences(mode):
    obj = _objective(mode)
    x = np.array([1.1, -0.4])
    np.testing.assert_allclose(obj.jac(x), _fd_grad(obj.fun, x), rtol=1e-6)
    hess = obj.hess(x)
    np.testing.assert_allclose(
        hess, np.array([_fd_grad(obj.jac, x)[:, j] for j in range(2)]).T, rtol=1e-6
    )
    assert np.array_equal(hess, hess.T)
    p = np.array([0.3, -2.0])
    np.testing.assert_allclose(obj.hessp(x, p), hess @ p, rtol=1e-12)


def test_array_parameters_and_a_scalar_one():
    """u per sample, c shared: f = Σ (u - y)² + (u - c)² + c² is least at u = (y + c)/2,
    c = mean(y)/3. The dense Hessian comes from one H·v per column."""
    y = RNG.normal(size=5)
    k = compiler.compile_gradient("(u - y)**2 + (u - c)**2 + c**2")
    obj = k.scipy(like={"u": np.zeros(5), "c": 0.0}, data={"y": y})
    assert obj.size == 6 and obj.x0.shape == (6,)
    hess = obj.hess(obj.x0)
    want = np.zeros((6, 6))
    want[:5, :5] = 4 * np.eye(5)
    want[:5, 5] = want[5, :5] = -2
    want[5, 5] = 2 * 5 + 2 * 5  # (u - c)² and c², each summed over the 5 samples
    np.testing.assert_allclose(hess, want, atol=1e-12)
    result = scipy_optimize.minimize(
        obj.fun, obj.x0, jac=obj.jac, hess=obj.hess, method="trust-exact"
    )
    fit = obj.unpack(result.x)
    assert fit["c"] == pytest.approx(y.mean() / 3, abs=1e-8)
    np.testing.assert_allclose(fit["u"], (y + fit["c"]) / 2, atol=1e-8)


def test_pack_and_unpack_round_trip():
    k = compiler.compile_gradient("a*b + c")
    obj = k.scipy(like={"b": np.ones((2, 3)), "a": 2.0}, data={"c": 1.0})
    assert obj.names == ("b", "a") and obj.size == 7
    point = obj.unpack(np.arange(7.0))
    assert point["a"] == 6.0 and point["b"].shape == (2, 3)
    assert np.array_equal(obj.pack(point), np.arange(7.0))


@pytest.mark.parametrize(
    "like, data, message",
    [
        ({"m": 0.0, "q": 1.0}, {"x": 1.0, "s": 0.0}, "'q' is not an input"),
        ({"m": 0.0}, {"x": 1.0}, r"\['s'\] are neither"),
        ({"m": 0.0, "s": 0.0}, {"x": 1.0, "m": 2.0}, "both as parameters"),
        ({}, {"x": 1.0, "m": 0.0, "s": 0.0}, "no parameter"),
    ],
)
def test_bad_names_are_refused(like, data, message):
    k = compiler.compile_gradient(GAUSS)
    with pytest.raises(InputError, match=message):
        k.scipy(like=like, data=data)


def test_a_parameter_the_kernel_does_not_differentiate_is_refused():
    k = compiler.compile_gradient(GAUSS, wrt=["m"])
    with pytest.raises(InputError, match="not differentiated"):
        k.scipy(like={"m": 0.0, "s": 0.0}, data={"x": SAMPLES})


def test_a_vector_of_the_wrong_length_is_refused():
    with pytest.raises(InputError, match="flat vector of 2"):
        _objective().fun(np.zeros(3))

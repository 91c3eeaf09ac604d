"""Dask arrays in, lazy Dask arrays out (``runtime.dask_arrays``): per-block kernel calls give
the in-memory call's numbers, on the threaded scheduler and on a ``LocalCluster`` of worker
processes (one of them killed mid-run)."""

from __future__ import annotations

import os
import pickle
import re
import signal
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

import symgrad
from symgrad import InputError

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

NEURON = "1/(1+exp(-(w0*x0+w1*x1+w2)))"
W = {"w0": 2.0, "w1": -3.0, "w2": -3.0}


@pytest.fixture(scope="module")
def neuron():
    return symgrad.compile_gradient(NEURON)


def _samples(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=n), rng.normal(size=n)


def _close(lazy, eager, rtol=1e-12):
    """Sums over blocks agree to rounding, elementwise results to the last bit or so (a small
    block may run on another engine than the whole array: ``runtime.policy``)."""
    got = np.asarray(lazy)
    assert got.shape == np.shape(eager)
    np.testing.assert_allclose(got, eager, rtol=rtol, atol=0)


def test_value_and_grad_are_lazy_and_match_the_in_memory_call(neuron):
    x0, x1 = _samples(1000)
    X0, X1 = da.from_array(x0, chunks=300), da.from_array(x1, chunks=250)  # misaligned
    value, grads = neuron.value_and_grad(x0=X0, x1=X1, **W)
    assert isinstance(value, da.Array) and all(isinstance(g, da.Array) for g in grads.values())
    assert grads["w0"].shape == () and grads["x0"].shape == (1000,)
    value, grads = dask.compute(value, grads)
    want_value, want_grads = neuron.value_and_grad(x0=x0, x1=x1, **W)
    _close(value, want_value, rtol=1e-15)
    for name, want in want_grads.items():
        _close(grads[name], want)
    _close(neuron(x0=X0, x1=X1, **W).compute(), want_value, rtol=1e-15)
    _close(neuron.grad(x0=X0, x1=x1, **W)["w2"].compute(), want_grads["w2"])  # NumPy beside Dask


def test_broadcasting_in_two_dimensions_sums_each_gradient_to_its_input():
    k = symgrad.compile_gradient("a * sin(b) + c * b")
    rng = np.random.default_rng(1)
    a, b, c = rng.normal(size=(6, 1)), rng.normal(size=(6, 8)), rng.normal(size=8)
    A, B = da.from_array(a, chunks=(4, 1)), da.from_array(b, chunks=(3, 5))
    value, grads = dask.compute(*k.value_and_grad(a=A, b=B, c=c))
    want_value, want_grads = k.value_and_grad(a=a, b=b, c=c)
    _close(value, want_value, rtol=1e-15)
    for name in "abc":
        _close(grads[name], want_grads[name])


def test_one_block_beside_single_numbers_keeps_the_blocks_shape(neuron):
    x0, x1 = _samples(300)
    value, grads = dask.compute(*neuron.value_and_grad(x0=da.from_array(x0), x1=x1, **W))
    want_value, want_grads = neuron.value_and_grad(x0=x0, x1=x1, **W)
    _close(value, want_value, rtol=1e-15)
    _close(grads["w0"], want_grads["w0"])


def test_a_dask_seed_and_float32_inputs():
    k = symgrad.compile_gradient("x * exp(y)")
    x = np.linspace(-1, 1, 500, dtype=np.float32)
    seed = np.linspace(0, 2, 500)
    value, grads = k.value_and_grad(
        x=da.from_array(x, chunks=128), y=np.float32(0.5), seed=da.from_array(seed, chunks=200)
    )
    assert value.dtype == np.float32 and grads["y"].dtype == np.float32
    value, grads = dask.compute(value, grads)
    want_value, want_grads = k.value_and_grad(x=x, y=np.float32(0.5), seed=seed)
    _close(value, want_value, rtol=1e-15)
    _close(grads["x"], want_grads["x"], rtol=1e-15)
    _close(grads["y"], want_grads["y"], rtol=2e-7)


def test_hessian_and_hvp_over_blocks_match_the_in_memory_call():
    src = "-log(exp(a - 0.5*(x - m)**2) + exp(b - 0.5*(x + m)**2)) + log(exp(a) + exp(b))"
    point = {"a": 0.1, "b": -0.2, "m": 0.7}
    x = np.random.default_rng(2).normal(size=5000)
    X = da.from_array(x, chunks=700)
    h = symgrad.compile_hessian(src, wrt=list(point))
    value, grad, hess = h(x=X, **point)
    assert hess.shape == (3, 3) and len(hess.__dask_graph__()) < 200  # no task per entry
    value, grad, hess = dask.compute(value, grad, hess)
    want_value, want_grad, want_hess = h(x=x, **point)
    _close(value, want_value, rtol=1e-15)
    _close(hess, want_hess)
    assert (hess == hess.T).all()
    for w in point:
        _close(grad[w], want_grad[w])
    # the summed path: one vector per task, H from its upper triangle
    total, tgrad, thess = h.total(x=X, **point, now=True)
    assert total == pytest.approx(want_value.sum(), rel=1e-12)
    _close(thess, want_hess)
    assert (thess == thess.T).all()
    for w in point:
        _close(tgrad[w], want_grad[w])
    lazy = h.total(x=X, **point)
    _close(lazy[2].compute(), thess, rtol=1e-15)
    k = symgrad.compile_gradient(src)
    got = dask.compute(k.hvp(x=X, **point, v={"a": 1.0, "m": -0.5}))[0]
    want = k.hvp(x=x, **point, v={"a": 1.0, "m": -0.5})
    _close(got[0], want[0], rtol=1e-15)
    for w in ("a", "b", "m", "x"):
        _close(got[1][w], want[1][w])
        _close(got[2][w], want[2][w])


def test_bad_dask_inputs_are_named():
    k = symgrad.compile_gradient("x * y")
    X = da.ones(10, chunks=5)
    with pytest.raises(InputError, match=r"do not broadcast.*x: \(10,\).*y: \(3,\)"):
        k(x=X, y=np.ones(3))
    with pytest.raises(InputError, match="out= buffers cannot take Dask results"):
        k(x=X, y=1.0, out=np.empty(10))
    with pytest.raises(InputError, match="Dask Delayed"):
        k(x=dask.delayed(np.ones)(3), y=1.0)
    unknown = X[X > 0]
    with pytest.raises(InputError, match="unknown chunk sizes"):
        k(x=unknown, y=1.0)
    with pytest.raises(InputError, match="v names 'z'"):
        k.hvp(x=X, y=1.0, v={"z": 1.0})


def test_a_tensor_program_refuses_dask_arrays_rather_than_computing_them():
    k = symgrad.compile_gradient("sum(W @ x)", shapes={"W": (2, 3), "x": (3,)})
    with pytest.raises(InputError, match="tensor program.*not Dask arrays"):
        k.value_and_grad(W=da.ones((2, 3), chunks=1), x=np.ones(3))


def test_an_error_in_a_block_names_the_block_and_the_inputs():
    k = symgrad.compile_gradient("x * y")
    strings = da.from_array(np.array(["a", "b"]), chunks=1).map_blocks(
        lambda b: b.astype(float) if b[0] != "b" else b, dtype=float
    )  # the second block is not numbers
    value = k(x=strings, y=2.0)  # lazy: nothing runs yet
    with pytest.raises(InputError, match=r"in block \(1,\) \(inputs x\[1\], y\[1\]\)"):
        value.compute()


def _gaussian_totals(x: np.ndarray, m: float, s: float) -> tuple[float, dict]:
    """GAUSSIAN's value summed over x and its gradient, by hand (an oracle apart from symgrad)."""
    z = (x - m) * np.exp(-s)
    return float(np.sum(0.5 * z * z + s)), {
        "m": float(np.sum(-z * np.exp(-s))),
        "s": float(np.sum(1 - z * z)),
    }


def test_the_summed_value_and_gradient_are_a_few_numbers_per_task():
    from runtime import dask_arrays

    k = symgrad.compile_gradient(GAUSSIAN)
    x = np.random.default_rng(9).normal(1.5, 0.7, 600_000)
    X = da.from_array(x, chunks=10_000)  # 60 blocks, at least 8 tasks
    value, grads = k.total_value_and_grad(x=X, m=1.2, s=-0.1)
    assert value.shape == () and set(grads) == {"m", "s"}  # x is differentiated, not a number
    keys = list(value.__dask_graph__())
    tasks = [key for key in keys if re.fullmatch(r"symgrad-total-\w+", key[0])]
    assert len(tasks) == 9  # groups of 60 // 8 = 7 blocks, not a task per block and result
    # the parameters travel inside the tasks, never as keys of their own (a fetch per pass)
    arrays = {key[0] for key in keys if key[0].startswith("array-")}
    assert arrays == {X.name}
    now = k.total_value_and_grad(x=X, m=1.2, s=-0.1, now=True)  # computed: one vector fetched
    assert isinstance(now[0], np.floating) and isinstance(now[1]["m"], np.floating)
    value, grads = dask.compute(value, grads)
    want_value, want_grads = _gaussian_totals(x, 1.2, -0.1)
    assert value == pytest.approx(want_value, rel=1e-12)
    for w in ("m", "s"):
        assert grads[w] == pytest.approx(want_grads[w], rel=1e-10)
        assert now[1][w] == grads[w]
    assert now[0] == value
    eager = k.total_value_and_grad(x=x, m=1.2, s=-0.1, wrt=["s"])  # NumPy in, numbers out
    assert eager[0] == pytest.approx(want_value, rel=1e-12) and set(eager[1]) == {"s"}
    assert eager[1]["s"] == pytest.approx(want_grads["s"], rel=1e-10)
    # float32 data: summed in float64, rounded once to float32
    value32, grads32 = dask.compute(
        *k.total_value_and_grad(x=X.astype(np.float32), m=np.float32(1.2), s=np.float32(-0.1))
    )
    assert value32.dtype == np.float32 and value32 == pytest.approx(want_value, rel=1e-6)
    assert dask_arrays.CALL_EVENTS < 600_000  # the walk in slices was exercised


def test_the_summed_path_refuses_array_gradients_and_names_a_bad_block():
    k = symgrad.compile_gradient(GAUSSIAN)
    X = da.ones(100, chunks=50)
    with pytest.raises(InputError, match="single-number inputs; 'x' has shape"):
        k.total_value_and_grad(x=X, m=0.0, s=0.0, wrt=["x"])
    with pytest.raises(InputError, match="'q' is not differentiated"):
        k.total_value_and_grad(x=X, m=0.0, s=0.0, wrt=["q"])
    strings = da.from_array(np.array(["1", "b"]), chunks=1).map_blocks(
        lambda b: b.astype(float) if b[0] != "b" else b, dtype=float
    )
    value, _ = k.total_value_and_grad(x=strings, m=0.0, s=0.0)
    with pytest.raises(InputError, match=r"in block \(1,\) \(inputs x\[1\], m\[1\], s\[1\]\)"):
        value.compute()


def test_a_kernel_pickles_as_its_graph_and_is_rebuilt_once(neuron):
    data = pickle.dumps(neuron)
    assert len(data) < 4096 and b"numba" not in data.lower()
    first, second = pickle.loads(data), pickle.loads(data)
    assert first is second  # one kernel per process, however many tasks carry it
    x0, x1 = _samples(50)
    _close(first(x0=x0, x1=x1, **W), neuron(x0=x0, x1=x1, **W), rtol=1e-15)
    hvp = pickle.loads(pickle.dumps(neuron.hvp_kernel))
    assert hvp.inputs == neuron.hvp_kernel.inputs


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    distributed = pytest.importorskip("distributed")
    # Workers inherit this process's environment: they share one fresh cache directory.
    old = os.environ.get("SYMGRAD_CACHE_DIR")
    os.environ["SYMGRAD_CACHE_DIR"] = str(tmp_path_factory.mktemp("shared-cache"))
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()
    if old is None:
        os.environ.pop("SYMGRAD_CACHE_DIR")
    else:
        os.environ["SYMGRAD_CACHE_DIR"] = old


def _restored() -> int:
    from runtime import kernel

    return len(kernel._RESTORED)


def test_a_local_cluster_of_processes_gives_the_in_memory_results(cluster, neuron):
    X0 = da.random.default_rng(3).normal(size=400_000, chunks=25_000)
    X1 = da.random.default_rng(4).normal(size=400_000, chunks=25_000)
    value, grads = neuron.value_and_grad(x0=X0, x1=X1, **W)
    total, grads = dask.compute(value.sum(), grads)
    x0, x1 = dask.compute(X0, X1)
    want_value, want_grads = neuron.value_and_grad(x0=x0, x1=x1, **W)
    _close(total, want_value.sum())
    for name, want in want_grads.items():
        _close(grads[name], want)
    assert set(cluster.run(_restored).values()) == {1}  # 16 tasks per worker, one kernel each
    total, sums = dask.compute(*neuron.total_value_and_grad(x0=X0, x1=X1, **W))
    _close(total, want_value.sum())
    for name in W:
        _close(sums[name], want_grads[name])


def test_a_worker_killed_mid_run_is_retried_and_the_result_is_right(cluster, neuron):
    def slow(block):
        time.sleep(0.05)
        return block

    x0, x1 = _samples(128_000, seed=5)  # 64 blocks of 50 ms: 1.6 s on 2 workers
    X0 = da.from_array(x0, chunks=2000).map_blocks(slow)
    X1 = da.from_array(x1, chunks=2000)
    grads = neuron.grad(x0=X0, x1=X1, **W)
    before = cluster.run(os.getpid)
    victim = before[sorted(before)[0]]
    killed = []
    killer = threading.Timer(0.5, lambda: killed.append(os.kill(victim, signal.SIGKILL)))
    killer.start()
    got = dask.compute(grads)[0]
    assert killed, "the worker was to be killed while the run was still going"
    killer.join()
    want = neuron.grad(x0=x0, x1=x1, **W)
    for name in W:
        _close(got[name], want[name])
    cluster.wait_for_workers(2, timeout=30)
    assert victim not in cluster.run(os.getpid).values()  # the nanny started a new worker


GAUSSIAN = "0.5*((x - m)*exp(-s))**2 + s"  # -log N(x; m, exp(s)) + const: the fit's optimum
# is the sample's mean and (biased) standard deviation, in closed form


@pytest.mark.parametrize("method", ["BFGS", "trust-exact"])
def test_a_scipy_fit_over_dask_data_makes_one_pass_per_evaluation(method):
    scipy_optimize = pytest.importorskip("scipy.optimize")
    x = np.random.default_rng(6).normal(1.5, 0.7, 40_000)
    obj = symgrad.compile_gradient(GAUSSIAN).scipy(
        like={"m": 0.0, "s": 0.0}, data={"x": da.from_array(x, chunks=7_000)}
    )
    computes = []
    with dask.config.set(scheduler=_counting(computes)):
        hess = obj.hess if method == "trust-exact" else None
        fit = scipy_optimize.minimize(
            obj.fun, obj.x0, jac=obj.jac, hess=hess, method=method, options={"gtol": 1e-3}
        )  # a sum over 40,000 events: f resolves no step once |g| < ~1e-4
    assert fit.success, fit.message
    got = obj.unpack(fit.x)
    assert got["m"] == pytest.approx(x.mean(), rel=1e-7)
    assert got["s"] == pytest.approx(np.log(x.std()), rel=1e-6)
    # fun and jac at one x are one pass; a Hessian is one more pass that also gives them
    assert len(computes) == obj.evaluations + (fit.nhev if hess else 0)


def _counting(calls: list) -> Callable:
    """A Dask scheduler (the synchronous one) that counts the graphs it runs."""

    def get(graph, keys, **kwargs):
        calls.append(keys)
        return dask.get(graph, keys, **kwargs)

    return get


def test_a_scipy_fit_on_the_cluster(cluster):
    scipy_optimize = pytest.importorskip("scipy.optimize")
    x = da.random.default_rng(8).normal(1.5, 0.7, size=200_000, chunks=50_000)
    obj = symgrad.compile_gradient(GAUSSIAN).scipy(like={"m": 0.0, "s": 0.0}, data={"x": x})
    fit = scipy_optimize.minimize(
        obj.fun, obj.x0, jac=obj.jac, hess=obj.hess, method="trust-exact", options={"gtol": 1e-3}
    )
    assert fit.success, fit.message
    values = x.compute()
    got = obj.unpack(fit.x)
    assert got["m"] == pytest.approx(values.mean(), rel=1e-7)
    assert got["s"] == pytest.approx(np.log(values.std()), rel=1e-6)

"""An H·v kernel goes through LLVM's O3 pipeline up to ``REUSED_OPTIMISE_NODES``, past the
first-order ``OPTIMISE_NODES``: an optimiser calls it many times a point, so the pipeline's
compile is paid once (H1, K = 32: 77 ms per call without it, 14 ms with it)."""

from __future__ import annotations

import numpy as np
import pytest

import compiler
from runtime import llvm_tier

K = 16  # the mixture of H1 with K components: its H·v entry (about 2,800 nodes since fusion
# writes log-sum-exp as logaddexp, whose accurate gradient is longer) is past OPTIMISE_NODES


def mixture(k: int) -> str:
    terms = " + ".join(f"exp(a{i} - s{i} - 0.5*((x - m{i})*exp(-s{i}))**2)" for i in range(k))
    return f"-log({terms}) + log({' + '.join(f'exp(a{i})' for i in range(k))})"


def test_the_hvp_kernel_is_optimised_past_the_first_order_limit():
    wrt = [f"{p}{i}" for p in "ams" for i in range(K)]
    rng = np.random.default_rng(0)
    point = {w: float(v) for w, v in zip(wrt, rng.normal(0, 0.3, 3 * K))}
    x = rng.normal(0, 2, 500)
    v = {w: float(c) for w, c in zip(wrt, rng.normal(size=3 * K))}
    compiled = compiler.compile_gradient(mixture(K), wrt=wrt, mode="compiled")
    instant = compiler.compile_gradient(mixture(K), wrt=wrt, mode="instant")
    got = compiled.hvp(**point, x=x, v=v)
    want = instant.hvp(**point, x=x, v=v)
    kernel = compiled.hvp_kernel
    (module,) = kernel._llvm.values()
    size = len(module._entries["value_and_grad"].nodes)
    assert llvm_tier.OPTIMISE_NODES < size <= llvm_tier.REUSED_OPTIMISE_NODES
    assert kernel.tier == "llvm-O3"
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
    for name in wrt:
        assert got[1][name] == pytest.approx(want[1][name], rel=1e-10, abs=1e-12)
        assert got[2][name] == pytest.approx(want[2][name], rel=1e-10, abs=1e-12)


def test_first_order_kernels_keep_their_limit():
    k = compiler.compile_gradient("x*y")
    assert k._optimise_nodes is None  # the module's OPTIMISE_NODES applies

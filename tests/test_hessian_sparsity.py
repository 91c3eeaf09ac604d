"""``HessianKernel.sparsity`` and ``sparse=True`` (issue 16): which entries of H can be nonzero.

The expected pattern is SymPy's: an entry of its symbolic Hessian that simplifies to 0 must be
structurally zero here on a separable function (blocks that share no parameter), and every
entry SymPy finds nonzero must be allowed.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import compiler

scipy_sparse = pytest.importorskip("scipy.sparse")

K = 3
#: A separable sum of K softplus terms, each over its own (a_i, b_i, c_i): H is block-diagonal.
TEXT = " + ".join(f"log(1 + exp(a{i}*x - b{i}))*c{i}" for i in range(K))
WRT = [f"{p}{i}" for i in range(K) for p in "abc"]


def _sympy_pattern(text: str, wrt: list[str]) -> np.ndarray:
    expr = sp.sympify(text)
    hess = sp.hessian(expr, [sp.Symbol(w) for w in wrt])
    return np.array([[sp.simplify(e) != 0 for e in row] for row in hess.tolist()])


@pytest.mark.parametrize("mode", ["instant", "compiled"])
def test_a_separable_function_has_a_block_diagonal_pattern(mode):
    h = compiler.compile_hessian(TEXT, wrt=WRT, mode=mode)
    pattern = h.sparsity
    assert pattern.dtype == bool and pattern.shape == (3 * K, 3 * K)
    assert np.array_equal(pattern, pattern.T)
    want = _sympy_pattern(TEXT, WRT)
    assert np.array_equal(pattern, want)  # c_i's own entry is 0: the term is linear in c_i
    blocks = np.kron(np.eye(K, dtype=bool), np.ones((3, 3), dtype=bool))
    assert not (pattern & ~blocks).any()


@pytest.mark.parametrize("mode", ["instant", "compiled"])
def test_sparse_equals_dense_on_the_pattern(mode):
    h = compiler.compile_hessian(TEXT, wrt=WRT, mode=mode)
    rng = np.random.default_rng(3)
    point = {w: rng.normal() for w in WRT}
    samples = rng.normal(size=50)
    value, grad, dense = h(**point, x=samples)
    value_s, grad_s, sparse = h(**point, x=samples, sparse=True)
    assert isinstance(sparse, scipy_sparse.csr_array)
    assert np.array_equal(value_s, value) and grad_s == grad
    assert np.array_equal(sparse.toarray(), dense)
    assert sparse.nnz == h.sparsity.sum()
    assert not dense[~h.sparsity].any()  # what the pattern rules out is 0 in the dense H too


def test_a_dense_function_has_a_full_pattern_and_zeros_are_structural():
    h = compiler.compile_hessian("exp(x*y*z)")
    assert h.sparsity.all()
    h = compiler.compile_hessian("x*y + z")  # bilinear: only the x-y entry
    assert np.array_equal(h.sparsity, [[0, 1, 0], [1, 0, 0], [0, 0, 0]])
    # structural, not numerical: the entry stays allowed where its value is 0
    assert h(x=0.0, y=0.0, z=0.0)[2][0, 1] == 1.0
    assert compiler.compile_hessian("exp(x*y)").sparsity[0, 0]  # y² exp(xy): 0 at y = 0


def test_the_pattern_is_a_copy():
    h = compiler.compile_hessian("x*y")
    h.sparsity[:] = False
    assert h.sparsity[0, 1]

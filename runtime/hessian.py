"""``HessianKernel``: value, gradient and the dense Hessian of a scalar function in one pass,
from the program ``compiler.passes.second_order.hessian`` plans (built by ``compiler.api``).

That program returns the gradient and each entry of the Hessian's upper triangle as the gradient
of an input of its own (``v_<name>``, ``h_<j>_<k>``, given as 0): so every tier runs it unchanged,
and with arrays of samples each entry is summed over the samples in the loop, as the gradient of
a single-number input is — no per-sample Hessian is ever stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from compiler.errors import InputError
from runtime import dask_arrays
from runtime.inputs import bind, dtype_of, match
from runtime.kernel import Grads, Kernel

if TYPE_CHECKING:
    from runtime.tensor_kernel import TensorKernel


class HessianKernel:
    """``h(**point)`` gives ``(value, {input: gradient}, H)``, H a dense NumPy array of shape
    ``(len(wrt), len(wrt))`` in ``wrt`` order.

    The differentiated inputs must be single numbers (the parameters); the others may be arrays
    of samples, and then H is the sum over the samples of each sample's Hessian (as the gradient
    of a single-number input is the sum of its per-sample gradients).

    H is exactly symmetric by construction: only its upper triangle is computed (``H[j, k]``,
    ``j <= k``: the adjoint of ``∂f/∂wrt_j`` with respect to ``wrt_k``), and ``H[k, j]`` is the
    same float.
    """

    def __init__(self, kernel: Kernel, inputs: tuple[str, ...], wrt: tuple[str, ...], title: str):
        self.kernel = kernel
        self.inputs = inputs
        self.wrt = wrt
        self.title = title
        self._sparsity: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"<HessianKernel {self.title!r} inputs={self.inputs} wrt={self.wrt}>"

    @property
    def mode(self) -> str:
        return self.kernel.mode

    @property
    def tier(self) -> str | None:
        """The engine that answered the latest call (``Kernel.tier``)."""
        return self.kernel.tier

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for background compiles (``Kernel.wait``)."""
        return self.kernel.wait(timeout)

    @property
    def sparsity(self) -> np.ndarray:
        """Which entries of H can be nonzero: a boolean ``(len(wrt), len(wrt))`` array, symmetric.

        Structural, read from the program: an entry whose node is the constant 0 (no path from
        ``∂f/∂wrt_j`` to ``wrt_k``, as between the blocks of a separable function) is False;
        every other entry is True, even where its value happens to be 0 at a point."""
        if self._sparsity is None:
            program = self.kernel.adjoint
            n = len(self.wrt)
            nodes = iter(program.outputs[1 + n :])  # after the value and the gradient's readers
            pattern = np.zeros((n, n), dtype=bool)
            for j in range(n):
                for k in range(j, n):
                    node = next(nodes)
                    pattern[j, k] = pattern[k, j] = program.constant_value(node) != 0
            self._sparsity = pattern
        return self._sparsity.copy()

    def __call__(self, *args, sparse: bool = False, **kwargs) -> tuple[Any, Grads, Any]:
        """``(value, {input: gradient}, H)``; with ``sparse=True`` H is a ``scipy.sparse``
        CSR array holding exactly the entries ``sparsity`` allows (an input named ``sparse``
        is then passed by position)."""
        value, grad, hess = self._dense(*args, **kwargs)
        if not sparse:
            return value, grad, hess
        from scipy.sparse import csr_array

        rows, cols = np.nonzero(self.sparsity)
        return value, grad, csr_array((hess[rows, cols], (rows, cols)), shape=hess.shape)

    def _dense(self, *args, **kwargs) -> tuple[Any, Grads, np.ndarray]:
        if dask_arrays.any_lazy(args, kwargs):  # lazy: value, gradient and H as Dask arrays
            point = match(self.inputs, args, kwargs)
            self._check_numbers({w: np.shape(point[w]) for w in self.wrt})
            return dask_arrays.hessian(self, point)
        point = bind(self.inputs, args, kwargs)
        self._check_numbers({w: point[w].shape for w in self.wrt})
        n, dtype = len(self.wrt), dtype_of(point)
        readers = self.kernel.inputs[len(self.inputs) :]  # v_<name>..., h_<j>_<k>...: given 0
        value, grads = self.kernel.value_and_grad(*point.values(), *np.zeros(len(readers), dtype))
        grad = {w: grads[r] for w, r in zip(self.wrt, readers)}
        hess = np.empty((n, n), dtype)
        upper = iter(readers[n:])
        for j in range(n):
            for k in range(j, n):
                hess[j, k] = hess[k, j] = grads[next(upper)]
        return value, grad, hess

    def total(self, *args, now: bool = False, **kwargs) -> tuple[Any, Grads, Any]:
        """``(value summed over the samples, {input: gradient}, H)`` of that sum: a fit's
        objective, gradient and Hessian. Over Dask inputs it is ``Kernel.total_value_and_grad``'s
        summed path (one float64 vector per task: value, gradient and H's upper triangle), lazy,
        or computed at once with ``now=True``."""
        point = match(self.inputs, args, kwargs)
        self._check_numbers({w: np.shape(point[w]) for w in self.wrt})
        readers = self.kernel.inputs[len(self.inputs) :]  # v_<name>..., h_<j>_<k>...: given 0
        zeros = dict.fromkeys(readers, 0.0)
        value, grads = self.kernel.total_value_and_grad(**point, **zeros, wrt=readers, now=now)
        n = len(self.wrt)
        grad = {w: grads[r] for w, r in zip(self.wrt, readers)}
        upper = iter(readers[n:])
        entries = [[None] * n for _ in range(n)]
        for j in range(n):
            for k in range(j, n):
                entries[j][k] = entries[k][j] = grads[next(upper)]
        if dask_arrays.is_lazy(value):
            import dask.array as da

            return value, grad, da.stack([da.stack(row) for row in entries])
        return value, grad, np.array(entries, dtype=np.asarray(value).dtype)

    def _check_numbers(self, shapes: dict[str, tuple[int, ...]]) -> None:
        for name, shape in shapes.items():
            if shape:
                raise InputError(
                    f"the Hessian is taken with respect to single numbers: input '{name}' is an "
                    f"array of shape {shape} (arrays of samples may be given for the inputs not "
                    f"in wrt={list(self.wrt)})"
                )


class TensorHessianKernel:
    """``h(**point)`` gives ``(value, {input: gradient}, H)`` of a tensor program's scalar
    output, H dense over the ``wrt`` inputs flattened: in ``wrt`` order, each input's elements
    in C order (``np.concatenate([a.ravel() for a in ...])``'s order).

    Built from Hessian-vector products (``TensorKernel.hvp``), one per column (H·e_j): a
    tensor program's parameters are whole arrays, so the one-pass triangle of ``HessianKernel``
    (an input per entry) would not fit. N columns cost N passes over the program; H is
    returned symmetrised, ``0.5 (H + Hᵀ)``, which only rounds away the columns' differences.
    """

    def __init__(self, kernel: TensorKernel, title: str):
        self.kernel = kernel
        self.inputs = kernel.inputs
        self.wrt = kernel.wrt
        self.title = title

    def __repr__(self) -> str:
        return f"<TensorHessianKernel {self.title!r} inputs={self.inputs} wrt={self.wrt}>"

    @property
    def mode(self) -> str:
        return self.kernel.mode

    @property
    def tier(self) -> str | None:
        """The engine that answered the latest call (the Hessian-vector kernel's ``tier``)."""
        return self.kernel.hvp_kernel.tier

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the Hessian-vector kernel's background compile (``TensorKernel.wait``)."""
        return self.kernel.hvp_kernel.wait(timeout)

    def __call__(self, *args, **kwargs) -> tuple[Any, Grads, np.ndarray]:
        """``(value, {input: gradient}, H)``, H of shape ``(N, N)``, N the wrt inputs' total
        number of elements."""
        value, grad, _ = self.kernel.hvp(*args, v={}, **kwargs)  # the gradient gives the shapes
        shapes = [np.shape(grad[w]) for w in self.wrt]
        sizes = [int(np.prod(s)) for s in shapes]
        dtype = np.asarray(value).dtype
        hess = np.empty((sum(sizes), sum(sizes)), dtype)
        for j in range(hess.shape[0]):
            unit = np.zeros(hess.shape[0], dtype)
            unit[j] = 1.0
            v = dict(zip(self.wrt, _split(unit, shapes, sizes)))
            _, _, hv = self.kernel.hvp(*args, v=v, **kwargs)
            hess[:, j] = np.concatenate([np.ravel(hv[w]) for w in self.wrt])
        return value, grad, 0.5 * (hess + hess.T)


def _split(flat: np.ndarray, shapes: list[tuple[int, ...]], sizes: list[int]) -> list:
    """``flat`` cut into arrays of ``shapes`` (``sizes`` their element counts), in order."""
    ends = np.cumsum(sizes)[:-1]
    return [part.reshape(shape) for part, shape in zip(np.split(flat, ends), shapes)]

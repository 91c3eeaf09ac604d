"""``HessianKernel``: value, gradient and the dense Hessian of a scalar function, from its
Hessian-vector product kernel (``Kernel.hvp``'s program, built by ``compiler.api``).

H is assembled column by column, ``H·e_j`` for each differentiated input ``j``: every tier runs
that program unchanged, and the inputs of samples are handled as for gradients — each sample's
Hessian is summed in the loop, never stored.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from compiler.errors import InputError
from runtime.inputs import bind, dtype_of
from runtime.kernel import Grads, Kernel


class HessianKernel:
    """``h(**point)`` gives ``(value, {input: gradient}, H)``, H a dense NumPy array of shape
    ``(len(wrt), len(wrt))`` in ``wrt`` order.

    The differentiated inputs must be single numbers (the parameters); the others may be arrays
    of samples, and then H is the sum over the samples of each sample's Hessian (as the gradient
    of a single-number input is the sum of its per-sample gradients).

    H is exactly symmetric by construction: it is built from its upper triangle, ``H[j, k]``
    for ``j <= k`` being component ``j`` of ``H·e_k``, and ``H[k, j]`` is the same float.
    """

    def __init__(self, hvp: Kernel, inputs: tuple[str, ...], wrt: tuple[str, ...], title: str):
        self.hvp_kernel = hvp
        self.inputs = inputs
        self.wrt = wrt
        self.title = title

    def __repr__(self) -> str:
        return f"<HessianKernel {self.title!r} inputs={self.inputs} wrt={self.wrt}>"

    @property
    def mode(self) -> str:
        return self.hvp_kernel.mode

    @property
    def tier(self) -> str | None:
        """The engine that answered the latest call (``Kernel.tier``)."""
        return self.hvp_kernel.tier

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for background compiles (``Kernel.wait``)."""
        return self.hvp_kernel.wait(timeout)

    def __call__(self, *args, **kwargs) -> tuple[Any, Grads, np.ndarray]:
        point = bind(self.inputs, args, kwargs)
        for name in self.wrt:
            if point[name].ndim:
                raise InputError(
                    f"the Hessian is taken with respect to single numbers: input '{name}' is an "
                    f"array of shape {point[name].shape} (arrays of samples may be given for the "
                    f"inputs not in wrt={list(self.wrt)})"
                )
        n, dtype = len(self.wrt), dtype_of(point)
        if not n:
            return self.hvp_kernel(*point.values()), {}, np.zeros((0, 0), dtype)
        columns = np.empty((n, n), dtype)
        value, grad, column = self._column(point, 0, dtype)
        columns[:, 0] = [column[w] for w in self.wrt]
        for j in range(1, n):
            column = self._column(point, j, dtype)[2]
            columns[:, j] = [column[w] for w in self.wrt]
        return value, grad, np.triu(columns) + np.triu(columns, 1).T

    def _column(self, point: dict[str, np.ndarray], j: int, dtype: np.dtype):
        """``(value, gradient, H·e_j)`` at ``point``."""
        unit = np.zeros(len(self.wrt), dtype)
        unit[j] = 1
        value, grads = self.hvp_kernel.value_and_grad(*point.values(), *unit)
        given = self.hvp_kernel.inputs[len(self.inputs) :]  # the directions, in wrt order
        grad = {w: grads[d] for w, d in zip(self.wrt, given)}
        return value, grad, {w: grads[w] for w in self.wrt}

"""``JacobianKernel``: the values and the Jacobian of several outputs in one pass, from the
program ``compiler.passes.forward.jacobian`` plans (built by ``compiler.api.compile_jacobian``).

The program reads each output's value and each entry out as the gradient of an input of its own
(``out_<i>``, ``jac_<i>_<j>``), given here as zeros of the call's broadcast shape: so every tier
runs it unchanged and each entry is per point, as the value is.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from runtime.inputs import bind, dtype_of
from runtime.kernel import Kernel


class JacobianKernel:
    """``j(**point)`` gives ``(values, J)``: ``values[..., i]`` output i's value, ``J[..., i, k]``
    the derivative of output i with respect to ``wrt[k]``, per point (the leading axes are the
    inputs' broadcast shape; none for single numbers).

    ``by`` is how the entries were built: ``"rows"`` (one reverse sweep per output) or
    ``"columns"`` (one forward sweep per input), the fewer sweeps unless asked otherwise.
    """

    def __init__(
        self,
        kernel: Kernel,
        inputs: tuple[str, ...],
        wrt: tuple[str, ...],
        outputs: int,
        by: str,
        title: str,
    ):
        self.kernel = kernel
        self.inputs = inputs
        self.wrt = wrt
        self.outputs = outputs
        self.by = by
        self.title = title

    def __repr__(self) -> str:
        return (
            f"<JacobianKernel {self.title!r} outputs={self.outputs} inputs={self.inputs} "
            f"wrt={self.wrt} by={self.by!r}>"
        )

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

    def __call__(self, *args, **kwargs) -> tuple[np.ndarray, np.ndarray]:
        point = bind(self.inputs, args, kwargs)
        shape = np.broadcast_shapes(*(p.shape for p in point.values()))
        readers = self.kernel.inputs[len(self.inputs) :]  # out_<i>..., jac_<i>_<k>...: given 0
        zeros = np.zeros(shape, dtype_of(point))
        _, grads = self.kernel.value_and_grad(*point.values(), *(zeros for _ in readers))
        read: list[Any] = [grads[r] for r in readers]
        m, n = self.outputs, len(self.wrt)
        values = np.stack(np.broadcast_arrays(*read[:m]), axis=-1)
        entries = np.stack(np.broadcast_arrays(*read[m:]), axis=-1) if n else np.zeros((*shape, 0))
        return values, entries.reshape(*shape, m, n)

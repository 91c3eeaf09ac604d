"""``Kernel.scipy(like=..., data=...)``: a kernel as the flat-vector objective SciPy's
optimisers call.

``scipy.optimize.minimize`` works on one float64 vector x; a kernel on named inputs, scalars or
arrays. ``Objective`` maps between them (each parameter's shape from ``like``, in ``like``'s
order) and holds the fixed inputs (``data``: the samples). The objective is the sum of the
kernel's value over the samples, as the gradient of a single-number parameter already is.

SciPy asks for ``fun(x)`` and then ``jac(x)`` at the same x: both are read from one
``value_and_grad`` call, kept for the last ``RECENT`` points (keyed by x's bits: SciPy may
change its array in place). A point asked for again gets the numbers it got first: an
``auto`` kernel's compiled tier may differ from the instant tier in the last bit, and a line
search that came back to its start and saw a different value could halve its step forever.
``hess`` is the dense Hessian of ``compile_hessian``'s one-pass program (single-number
parameters) or, with array parameters, one Hessian-vector product per column; ``hessp`` is one
``Kernel.hvp``. Nothing here imports SciPy: the adapter only speaks NumPy.

With Dask arrays as ``data`` each of these is one pass over the blocks (``runtime.dask_arrays``):
the summed value, the gradient and H (or H·p) are computed together, on whatever scheduler or
cluster is current. ``fun``/``jac`` with single-number parameters take the summed path
(``Kernel.total_value_and_grad``): each task sends back one vector, never the samples' values.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from compiler.errors import InputError, did_you_mean
from runtime.dask_arrays import concrete, is_lazy

if TYPE_CHECKING:
    from runtime.hessian import HessianKernel
    from runtime.kernel import Kernel

#: How many recent points keep their value and gradient (see the module's docstring).
RECENT = 8


class Objective:
    """``fun``, ``jac``, ``hess`` and ``hessp`` of a kernel's summed value over a flat vector.

    ``x0`` is ``like`` packed; ``unpack(x)`` gives the named parameters back. ``evaluations``
    counts the kernel's ``value_and_grad`` runs (one per distinct x asked for by fun or jac).
    """

    def __init__(
        self,
        kernel: Kernel,
        like: Mapping[str, Any],
        data: Mapping[str, Any] | None,
        hessian: Callable[[tuple[str, ...]], HessianKernel] | None,
    ):
        self.kernel = kernel
        self.data = _data(kernel, like, data or {})
        self.names = tuple(like)
        self.shapes = {n: np.shape(like[n]) for n in self.names}
        sizes = [int(np.prod(self.shapes[n], dtype=int)) for n in self.names]
        self.offsets = np.concatenate([[0], np.cumsum(sizes, dtype=int)]).tolist()
        self.size = self.offsets[-1]
        self.x0 = self.pack({n: np.asarray(like[n], dtype=np.float64) for n in self.names})
        self.evaluations = 0
        self._summed = any(map(is_lazy, self.data.values())) and all(
            self.shapes[n] == () for n in self.names
        )
        self._hessian_factory = hessian
        self._hessian: HessianKernel | None = None
        self._recent: OrderedDict[bytes, tuple[float, np.ndarray]] = OrderedDict()

    def __repr__(self) -> str:
        return f"<Objective of {self.kernel.title!r}: {self.size} parameters {list(self.names)}>"

    # ------------------------------------------------------------ packing
    def unpack(self, x: Any) -> dict[str, Any]:
        """The named parameters of a flat vector (floats for single numbers)."""
        x = self._vector(x)
        out: dict[str, Any] = {}
        for name, lo, hi in zip(self.names, self.offsets, self.offsets[1:]):
            shape = self.shapes[name]
            out[name] = float(x[lo]) if shape == () else x[lo:hi].reshape(shape).copy()
        return out

    def pack(self, values: Mapping[str, Any]) -> np.ndarray:
        """A flat float64 vector of named values (each broadcast to its parameter's shape)."""
        x = np.empty(self.size)
        for name, lo, hi in zip(self.names, self.offsets, self.offsets[1:]):
            x[lo:hi] = np.broadcast_to(
                np.asarray(values[name], dtype=np.float64), self.shapes[name]
            ).ravel()
        return x

    # ------------------------------------------------------------ what SciPy calls
    def fun(self, x: Any) -> float:
        """The objective: the kernel's value summed over the samples."""
        return self._evaluate(x)[0]

    def jac(self, x: Any) -> np.ndarray:
        """The gradient as a flat vector (from the same kernel run as ``fun`` at this x)."""
        return self._evaluate(x)[1].copy()

    def fun_and_jac(self, x: Any) -> tuple[float, np.ndarray]:
        """``(fun, jac)``: for ``minimize(obj.fun_and_jac, x0, jac=True)``."""
        value, grad = self._evaluate(x)
        return value, grad.copy()

    def hess(self, x: Any) -> np.ndarray:
        """The dense (size × size) Hessian, exactly symmetric."""
        point = self.unpack(x)
        if all(self.shapes[n] == () for n in self.names) and self._hessian_factory is not None:
            if self._summed:  # Dask data: one vector per task (value, gradient, H's triangle)
                value, grad, hess = self._hessian_kernel().total(**point, **self.data, now=True)
            else:
                value, grad, hess = self._hessian_kernel()(**point, **self.data)
                value, grad, hess = concrete(_total(value), grad, hess)
            self._remember(x, float(value), self.pack(grad))
            return np.asarray(hess)
        columns = [self.hessp(x, e) for e in np.eye(self.size)]
        return 0.5 * (np.array(columns) + np.array(columns).T)  # H·e_j are H's columns

    def hessp(self, x: Any, p: Any) -> np.ndarray:
        """H·p as a flat vector: one Hessian-vector product (value and gradient come free)."""
        value, grad, hv = self.kernel.hvp(**self.unpack(x), **self.data, v=self.unpack(p))
        value, grad, hv = concrete(_total(value), grad, hv)
        self._remember(x, float(value), self.pack(grad))
        return self.pack(hv)

    # ------------------------------------------------------------ internals
    def _evaluate(self, x: Any) -> tuple[float, np.ndarray]:
        x = self._vector(x)
        known = self._recent.get(x.tobytes())
        if known is not None:
            return known
        if self._summed:  # Dask data, single-number parameters: a few numbers per task back
            value, grads = self.kernel.total_value_and_grad(
                **self.unpack(x), **self.data, wrt=self.names, now=True
            )
        else:
            value, grads = self.kernel.value_and_grad(**self.unpack(x), **self.data)
            value, grads = concrete(_total(value), grads)
        self.evaluations += 1
        return self._remember(x, float(value), self.pack(grads))

    def _remember(self, x: Any, value: float, grad: np.ndarray) -> tuple[float, np.ndarray]:
        """The numbers at x, the first ones computed there if it is still a recent point."""
        key = self._vector(x).tobytes()
        known = self._recent.setdefault(key, (value, grad))
        self._recent.move_to_end(key)
        while len(self._recent) > RECENT:
            self._recent.popitem(last=False)
        return known

    def _vector(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.size,):
            raise InputError(
                f"expected a flat vector of {self.size} parameters {list(self.names)}, "
                f"got shape {x.shape}"
            )
        return x

    def _hessian_kernel(self) -> HessianKernel:
        if self._hessian is None:
            self._hessian = self._hessian_factory(self.names)
        return self._hessian


def _total(value: Any) -> Any:
    """The value summed over the samples (lazily, for Dask data)."""
    return value.sum() if is_lazy(value) else np.sum(value)


def _data(kernel: Kernel, like: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` checked: ``like`` names differentiated inputs, ``like`` and ``data`` together
    name every input once."""
    inputs = list(kernel.inputs)
    for name in (*like, *data):
        if name not in inputs:
            raise InputError(
                f"'{name}' is not an input of the kernel; its inputs are {inputs}"
                f"{did_you_mean(str(name), inputs)}"
            )
    both = sorted(set(like) & set(data))
    if both:
        raise InputError(f"{both} given both as parameters (like) and as data")
    fixed = [n for n in like if n not in kernel.wrt]
    if fixed:
        raise InputError(
            f"parameters {fixed} are not differentiated by the kernel (wrt={list(kernel.wrt)})"
        )
    missing = [n for n in inputs if n not in like and n not in data]
    if missing:
        raise InputError(f"inputs {missing} are neither parameters (like) nor data")
    if not like:
        raise InputError("like names no parameter: give at least one")
    return dict(data)

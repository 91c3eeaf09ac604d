"""``HessianKernel``: value, gradient and the dense Hessian of a scalar function in one pass,
from the program ``compiler.passes.hessian`` plans (built by ``compiler.api``).

That program returns the gradient and the Hessian's terms as the gradients of inputs of their own
(``v_<name>``, ``h_<j>_<k>``, ..., given as 0): so every tier runs it unchanged. Given as single
numbers they are summed over the samples in the loop, as a parameter's gradient is (the small
entries); given as arrays, per sample (the dense terms' coefficients and tangents, which a matrix
product over each block of samples sums) — no per-sample Hessian is ever stored.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from compiler.errors import InputError
from runtime import dask_arrays
from runtime.blocks import in_parallel
from runtime.inputs import arrange, bind, dtype_of, match
from runtime.kernel import Grads, Kernel

if TYPE_CHECKING:
    from compiler.passes.hessian import HessianPlan
    from runtime.tensor_kernel import TensorKernel

#: The per-sample readers of a block of samples take about this many bytes (the block's
#: length follows): a block's matrix products read them from cache.
BLOCK_BYTES = 2**23


class HessianKernel:
    """``h(**point)`` gives ``(value, {input: gradient}, H)``, H a dense NumPy array of shape
    ``(len(wrt), len(wrt))`` in ``wrt`` order.

    The differentiated inputs must be single numbers (the parameters); the others may be arrays
    of samples, and then H is the sum over the samples of each sample's Hessian (as the gradient
    of a single-number input is the sum of its per-sample gradients).

    The program (``compiler.passes.hessian``) sums the small terms of H in its loop and reads
    the dense ones out per sample, a block of samples at a time (``BLOCK_BYTES`` of them):
    each dense term is then one matrix product over the block, Aᵀ diag(c) B. No per-sample
    Hessian is ever stored. H is exactly symmetric: its upper triangle is computed and mirrored.
    """

    def __init__(
        self,
        kernel: Kernel,
        inputs: tuple[str, ...],
        wrt: tuple[str, ...],
        title: str,
        plan: HessianPlan,
    ):
        self.kernel = kernel
        self.inputs = inputs
        self.wrt = wrt
        self.title = title
        self.entries = plan.entries
        self.vectors = plan.vectors
        self.terms = plan.terms
        self.per_sample = plan.per_sample
        self._local = threading.local()

    def __getstate__(self) -> dict:  # a Dask task carries it: its buffers stay behind
        return {k: v for k, v in self.__dict__.items() if k != "_local"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

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

        Structural, read from the program: an entry no term reaches (no path from ``∂f/∂wrt_j``
        to ``wrt_k``, as between the blocks of a separable function) is False; every other
        entry is True, even where its value happens to be 0 at a point."""
        n = len(self.wrt)
        pattern = np.zeros((n, n), dtype=bool)
        for j, k in self.entries:
            pattern[j, k] = pattern[k, j] = True
        for term in self.terms:
            a, b = self.vectors[term.a].support, self.vectors[term.b].support
            pattern[np.ix_(a, b)] = pattern[np.ix_(b, a)] = True
        return pattern

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
        return self._evaluate(point)

    def _evaluate(self, point: dict[str, np.ndarray]) -> tuple[Any, Grads, np.ndarray]:
        """The kernel run over the samples a block at a time: the summed readers added up, the
        dense terms' matrix products accumulated; then H assembled and mirrored."""
        dtype = dtype_of(point)
        shape = np.broadcast_shapes(*(v.shape for v in point.values()))
        size = math.prod(shape)
        flat = {
            name: v if v.size == 1 else np.broadcast_to(v, shape).reshape(-1)
            for name, v in point.items()
        }
        readers = self.kernel.wrt
        summed = readers[: len(readers) - len(self.per_sample)]
        step = max(1, min(size, BLOCK_BYTES // (8 * max(1, len(self.per_sample)))))
        value = np.empty(max(size, 1), dtype)
        sums = np.zeros(len(summed))
        blocks = [np.zeros((len(self.vectors[t.a].support), len(self.vectors[t.b].support)))
                  for t in self.terms]  # fmt: skip
        rows, scaled = self._workspace(step, dtype)
        scalar_zero = np.zeros((), dtype)
        for start in range(0, max(size, 1), step):
            m = min(step, max(size, 1) - start)
            values = {n: v if v.size == 1 else v[start : start + m] for n, v in flat.items()}
            zeros = np.zeros(m, dtype)
            values.update(dict.fromkeys(summed, scalar_zero))
            values.update(dict.fromkeys(self.per_sample, zeros))
            lay = arrange(values)
            buffers = {r: (np.empty(1, dtype), None) for r in summed}
            buffers.update({r: (rows[i, :m], None) for i, r in enumerate(self.per_sample)})
            self.kernel._value_and_grad_pass(lay, None, "", value[start : start + m], buffers)
            sums += [buffers[r][0][0] for r in summed]
            self._accumulate(rows[:, :m], scaled[:, :m], blocks)
        return self._assemble(value, shape, dtype, sums, blocks)

    def _workspace(self, step: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """This thread's buffers for a block of samples (kept: fresh ones page-fault on every
        call): the per-sample readers, and one tangent scaled by its coefficient (float64)."""
        key = (step, np.dtype(dtype))
        space = getattr(self._local, "space", None)
        if space is None or space[0] != key:
            widest = max((len(v.support) for v in self.vectors), default=0)
            rows = np.empty((len(self.per_sample), step), dtype)
            space = self._local.space = (key, rows, np.empty((widest, step)))
        return space[1], space[2]

    def _accumulate(self, rows: np.ndarray, scaled: np.ndarray, blocks: list) -> None:
        """Each dense term's ``Aᵀ diag(c) B`` over a block of samples (``rows``: the per-sample
        readers, coefficients first, then the tangents' entries), in float64: the samples
        split over symgrad's threads (``runtime.blocks``), one BLAS thread each, the parts
        added in order."""
        if not self.terms:
            return
        rows = rows.astype(np.float64, copy=False)
        starts = np.cumsum([len(self.terms)] + [len(v.support) for v in self.vectors])

        def products(lo: int, hi: int) -> list[np.ndarray]:
            out = []
            for t, term in enumerate(self.terms):
                a = rows[starts[term.a] : starts[term.a + 1], lo:hi]
                b = rows[starts[term.b] : starts[term.b + 1], lo:hi]
                out.append(np.multiply(a, rows[t, lo:hi], out=scaled[: len(a), lo:hi]) @ b.T)
            return out

        with _one_blas_thread:
            for part in in_parallel(rows.shape[1], products):
                for block, product in zip(blocks, part):
                    block += product

    def _assemble(self, value, shape, dtype, sums, blocks) -> tuple[Any, Grads, np.ndarray]:
        n = len(self.wrt)
        grad = {w: _number(sums[i], dtype) for i, w in enumerate(self.wrt)}
        full = np.zeros((n, n))
        cross = np.zeros((n, n))
        for term, block in zip(self.terms, blocks):
            a, b = self.vectors[term.a].support, self.vectors[term.b].support
            (full if term.square else cross)[np.ix_(a, b)] += block
        full += cross + cross.T
        for (j, k), total in zip(self.entries, sums[n:]):
            full[j, k] += total
        upper = np.triu(full)
        hess = (upper + np.triu(upper, 1).T).astype(dtype)
        value = (
            _number(value[0], dtype) if shape == () else value[: math.prod(shape)].reshape(shape)
        )
        return value, grad, hess

    def total(self, *args, now: bool = False, **kwargs) -> tuple[Any, Grads, Any]:
        """``(value summed over the samples, {input: gradient}, H)`` of that sum: a fit's
        objective, gradient and Hessian. Over Dask inputs each is lazy (one pass over the
        blocks, the partial sums added by a tree), or computed at once with ``now=True``."""
        point = match(self.inputs, args, kwargs)
        self._check_numbers({w: np.shape(point[w]) for w in self.wrt})
        value, grad, hess = self._dense(**point)
        if not dask_arrays.is_lazy(value):
            return _number(np.sum(value, dtype=np.float64), np.asarray(value).dtype), grad, hess
        total = value.sum(dtype=np.float64).astype(value.dtype)
        if now:
            return dask_arrays.concrete(total, grad, hess)
        return total, grad, hess

    def _check_numbers(self, shapes: dict[str, tuple[int, ...]]) -> None:
        for name, shape in shapes.items():
            if shape:
                raise InputError(
                    f"the Hessian is taken with respect to single numbers: input '{name}' is an "
                    f"array of shape {shape} (arrays of samples may be given for the inputs not "
                    f"in wrt={list(self.wrt)})"
                )


class _OneBlasThread:
    """A context in which BLAS runs on the calling thread only (threadpoolctl's handles on the
    BLAS libraries): OpenBLAS's own threads would spin after each product and slow the kernel's
    threads that run next. Counted, so that concurrent calls (Dask's threads) set one thread at
    the first entry and restore the threads once, after the last."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved: list[tuple[Any, int]] = []
        self._libraries: list | None = None

    def __enter__(self) -> None:
        with self._lock:
            if self._users == 0:
                self._saved = [(lib, lib.get_num_threads()) for lib in self._blas()]
                for lib, _ in self._saved:
                    lib.set_num_threads(1)
            self._users += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                for lib, threads in self._saved:
                    lib.set_num_threads(threads)

    def _blas(self) -> list:
        if self._libraries is None:
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError:  # not installed: BLAS as configured
                self._libraries = []
            else:
                self._libraries = ThreadpoolController().select(user_api="blas").lib_controllers
        return self._libraries


_one_blas_thread = _OneBlasThread()


def _number(x: Any, dtype: np.dtype) -> Any:
    """A single number of the call's dtype: a Python float in float64, ``np.float32`` else."""
    return float(x) if dtype == np.float64 else dtype.type(x)


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

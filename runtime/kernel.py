"""``Kernel``: a function and its gradient, called like a NumPy function, on one of three modes.

It binds and checks arguments, picks the code for the inputs' kinds, runs the serial or the
parallel loop by size, and shapes the results: the value has the broadcast shape, each gradient its
input's shape. ``mode`` is what was asked for; ``tier`` names the engine that answered the latest
call (``runtime.policy`` chooses it, one table for every kernel; ``runtime.tiers`` keeps the state
it reads, the same for ``TensorKernel``):

- ``"compiled"``: the final engine — the generated Numba module (compiled once per call pattern,
  cached on disk), or LLVM's O3 code for graphs with sin/cos or beyond ``LLVM_OPS`` ops;
- ``"instant"``: the same entries run as data by the virtual machine of ``runtime.instant``, which
  is compiled once per machine (LLVM IR, no Numba) — a new expression answers at once;
- ``"auto"`` (the default): the final engine if it is loaded or on disk. Else a large call
  (``policy.large_call``) waits for LLVM's O3 code (a tenth of a second) and a small one answers
  from LLVM's unoptimised code (the virtual machine for large graphs), while the final engine
  compiles on a background thread and takes over once ready.

The engines take the same arguments and give the same numbers to rounding, so a call pattern can
change engine between two calls (or between a ``vjp``'s forward and its pullback).

A call pattern is the inputs' kinds and the call's dtype (``runtime.inputs.call_dtype``: NumPy's
promotion): float32 inputs run float32 modules and give float32 outputs, cached apart from the
float64 ones, on every engine (each module takes a ``dtype``; float64 modules are as before).
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from compiler.errors import CompileError, InputError, did_you_mean
from compiler.ir.graph import Graph
from runtime import background, cache, dask_arrays, policy
from runtime.inputs import (
    Layout,
    arrange,
    arrange_seed,
    as_real_array,
    bind,
    dtype_of,
    match,
    sum_to,
)
from runtime.tiers import MODES, Tiers

__all__ = ["MODES", "Kernel", "Pool"]

#: Output arrays of at least this many bytes come from a kernel's ``Pool``: a new one costs a page
#: fault per 4 KiB on first write (at 10^6 points, three fresh outputs cost 4-10 ms against the
#: O3 kernel's 3 ms of work), a reused one none. Smaller ones come from malloc's free lists
#: (this is glibc's default threshold for giving each allocation its own fresh pages).
POOL_MIN_BYTES = 128 << 10

#: At most this many bytes of output arrays are kept per kernel for reuse.
POOL_BYTES = 64 << 20

Grads = dict[str, Any]
#: A call pattern: the inputs' and the seed's kinds, and the dtype (``"float64"``, ``"float32"``).
Pattern = tuple[str, str]
_FLOAT64 = np.dtype(np.float64)


class Kernel:
    """Value and gradients of one compiled expression.

    >>> import compiler
    >>> k = compiler.compile_gradient("(x + y) * z")
    >>> k(x=-2, y=5, z=-4)
    -12.0
    >>> k.grad(x=-2, y=5, z=-4)
    {'x': -4.0, 'y': -4.0, 'z': 3.0}
    """

    def __init__(
        self,
        graph: Graph,
        wrt: tuple[str, ...],
        title: str = "",
        mode: str = "auto",
        *,
        plan: Callable[[], Any],
        second_order: Callable[[], Kernel] | None = None,
        hessian: Callable[[tuple[str, ...]], Any] | None = None,
        forward: Callable[[], Kernel] | None = None,
        optimise_nodes: int | None = None,
    ):
        """``plan()`` gives the forward + backward graph (``compiler.api.plan``), on first use:
        a kernel whose code is all on disk never needs it. ``second_order()`` gives the kernel
        of the Hessian-vector product program (``compiler.api.hvp_kernel``), on first ``hvp``;
        ``hessian(wrt)`` a ``HessianKernel`` of the same function (for ``scipy``'s ``hess``);
        ``forward()`` the kernel of the forward-mode program (``compiler.api.jvp_kernel``).
        ``optimise_nodes``: the largest entry LLVM's O3 pipeline takes (default
        ``runtime.llvm_tier.OPTIMISE_NODES``; more for kernels called many times a point)."""
        self.graph = graph
        self._forward = forward
        self._optimise_nodes = optimise_nodes
        self._jvp: Kernel | None = None
        self._second_order = second_order
        self._hessian = hessian
        self._hvp: Kernel | None = None
        self.inputs: tuple[str, ...] = graph.inputs
        self.wrt = wrt
        self.title = title
        self.fusion = None  # what gate fusion did (a FusionReport), set by compile_gradient
        self._plan = plan  # the adjoint, planned by the compile step (compiler.api) on first use
        self._graph_key = graph.key()
        self._keys: dict[Pattern, str] = {}
        self._ops = max(1, sum(1 for _ in graph.op_nodes()))
        trig = any(graph.nodes[i].op in ("sin", "cos") for i in graph.op_nodes())
        self._stats = policy.Stats(self._ops, trig)
        self._tiers = Tiers(_Engines(self), self._stats, mode, title)
        self._lock = self._tiers.lock
        self._adjoint = None
        self._checked: set[tuple[str, str]] = set()
        self._instant: dict[Pattern, Any] = {}  # pattern -> InstantModule
        self._llvm: dict[tuple[Pattern, bool], Any] = {}  # (pattern, optimise) -> LLVMModule
        self._numba: dict[Pattern, ModuleType] = {}  # the cache holds modules weakly: ours
        self._pool = Pool()

    def __reduce__(self):
        """Pickled as its graph and how to plan it, never as compiled code: a Dask worker
        rebuilds the kernel once (``_restore``) and loads its code from the disk cache."""
        factories = {
            "plan": self._plan,
            "second_order": self._second_order,
            "hessian": self._hessian,
            "forward": self._forward,
            "optimise_nodes": self._optimise_nodes,
        }
        return _restore, (self.graph, self.wrt, self.title, self.mode, factories)

    def __repr__(self) -> str:
        return f"<Kernel {self.title!r} inputs={self.inputs} wrt={self.wrt} mode={self.mode!r}>"

    @property
    def mode(self) -> str:
        """The mode asked for: ``"auto"``, ``"instant"`` or ``"compiled"``."""
        return self._tiers.mode

    @property
    def requested_mode(self) -> str:
        """The mode asked for (an alias of ``mode``, kept for older code)."""
        return self.mode

    @property
    def tier(self) -> str | None:
        """The engine that answered the latest call (``runtime.policy.ENGINES``: ``"numba"``,
        ``"llvm-O3"``, ``"llvm-O0"`` or ``"vm"``); None before any call."""
        return self._tiers.tier

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the background compiles started so far; True if they all succeeded.

        Only ``mode="auto"`` compiles in the background; the next call after a success runs the
        compiled kernel.
        """
        return self._tiers.wait(timeout)

    @property
    def _jobs(self) -> dict:
        """The background compiles, by ((kinds, dtype), entry)."""
        return self._tiers.jobs

    # ------------------------------------------------------------ inspection
    @property
    def adjoint(self):
        """The forward + backward graph (``AdjointGraph``), built on first use."""
        if self._adjoint is None:
            self._adjoint = self._plan()
        return self._adjoint

    @property
    def source(self) -> str:
        """The generated Python/Numba source (array inputs, scalar seed).

        For a graph of more than ``runtime.policy.LLVM_OPS`` ops the compiled tier runs the
        same nodes compiled by LLVM directly: ``llvm_source`` shows that IR.
        """
        from compiler.codegen.numba_source import generate

        return generate(self.adjoint, self.inputs, "a" * len(self.inputs) + "s", self.title)

    def source_for(self, dtype: str = "float64") -> str:
        """``source`` for a dtype: ``"float32"`` shows the float32 module."""
        from compiler.codegen.numba_source import generate

        kinds = "a" * len(self.inputs) + "s"
        return generate(self.adjoint, self.inputs, kinds, self.title, dtype=dtype)

    @property
    def llvm_source(self) -> str:
        """The LLVM IR of each entry (array inputs, scalar seed), one SSA value per node named
        after it: what the compiled tier runs for graphs of more than ``LLVM_OPS`` ops."""
        return self._llvm_module(("a" * len(self.inputs) + "s", "float64")).source

    # ------------------------------------------------------------ calling
    def __call__(self, *args, out: np.ndarray | None = None, **kwargs):
        """The value, with NumPy broadcasting over the inputs (a Dask array among them makes
        the value a Dask array: ``runtime.dask_arrays``)."""
        if dask_arrays.any_lazy(args, kwargs):
            _no_out(out)
            return dask_arrays.value(self, args, kwargs)
        lay = arrange(bind(self.inputs, args, kwargs))
        module = self._module(lay, "s", "forward")
        value = _value_buffer(lay, out, self._pool.empty)
        _unalias(lay, out)
        self._run(module, "forward", lay.n, *_used(module, lay), value)
        return _shape_value(lay, value, out)

    def value_and_grad(self, *args, seed: Any = None, out: tuple | None = None, **kwargs):
        """``(value, {input: gradient})`` in one pass over memory.

        ``seed`` is the upstream gradient (default 1), broadcastable to the value's shape.
        ``out=(value_buffer, {input: buffer})`` reuses preallocated arrays of the call's dtype
        (float64, or float32 for float32 inputs: ``runtime.inputs``) and returns them.
        With Dask arrays among the inputs (or as the seed) the results are lazy Dask arrays.
        """
        if dask_arrays.any_lazy(args, kwargs) or dask_arrays.is_lazy(seed):
            _no_out(out if out is None or any(o is not None for o in out) else None)
            return dask_arrays.value_and_grad(self, args, kwargs, seed)
        lay = arrange(bind(self.inputs, args, kwargs))
        value_out, grads_out = _split_out(out)
        value = _value_buffer(lay, value_out, self._pool.empty)
        grads = _grad_buffers(lay, self.wrt, grads_out, self._pool.empty)
        _unalias(lay, value_out, *(grads_out or {}).values())
        self._value_and_grad_pass(lay, seed, "", value, grads)
        return _shape_value(lay, value, value_out), _shape_grads(lay, grads, grads_out)

    def total_value_and_grad(
        self, *args, wrt: Sequence[str] | None = None, now: bool = False, **kwargs
    ):
        """``(value summed over the samples, {input: its gradient})`` for the single-number
        inputs ``wrt`` (default: every differentiated input that is a single number) — a fit's
        objective and gradient. With Dask inputs both are lazy 0-d Dask arrays of one pass that
        returns a few numbers per task, never an array of the samples' size
        (``runtime.dask_arrays.total_value_and_grad``); ``dask.compute`` them together, or
        give ``now=True`` to compute them at once (one vector fetched: a fit's loop)."""
        if dask_arrays.any_lazy(args, kwargs):
            return dask_arrays.total_value_and_grad(self, args, kwargs, wrt, now)
        lay = arrange(bind(self.inputs, args, kwargs))
        names = dask_arrays.summed_wrt(self, {w: lay.shapes[w] for w in self.wrt}, wrt)
        # The value summed in the loop (the pattern's last "s": compiler.codegen.entries), as
        # the gradients of single numbers are: no per-point values written, then read again
        # by np.sum: D1's losses 6.1 -> 5.8 (logistic), 7.7 -> 7.2 ns per event (serial).
        total = np.zeros(1, lay.dtype)
        grads = _grad_buffers(lay, self.wrt, None, self._pool.empty)
        self._value_and_grad_pass(lay, None, "s", total, grads)
        shaped = _shape_grads(lay, grads, None)
        return total[0], {w: shaped[w] for w in names}

    def _value_and_grad_pass(self, lay: Layout, seed: Any, value_kind: str, value, grads) -> None:
        """One ``value_and_grad`` run into ``value`` and ``grads``' buffers; ``value_kind``
        "s" sums the value in the loop (the pattern's last kind: ``compiler.codegen.entries``),
        "" writes it per point."""
        seed_kind, seed_flat = arrange_seed(seed, lay.shape, lay.dtype)
        module = self._module(lay, seed_kind + value_kind, "value_and_grad")
        seed_args = (seed_flat,) if module.SEEDED else ()
        buffers = (g for g, _ in grads.values())
        self._run(module, "value_and_grad", lay.n, *_used(module, lay), *seed_args, value, *buffers)

    def grad(self, *args, seed: Any = None, out: dict | None = None, **kwargs) -> Grads:
        """``{input: gradient}``; see ``value_and_grad``."""
        return self.value_and_grad(*args, seed=seed, out=(None, out), **kwargs)[1]

    def vjp(self, *args, **kwargs) -> tuple[Any, Callable[..., Grads]]:
        """``(value, pullback)``: the forward runs now and keeps its residuals;
        ``pullback(cotangent)`` runs only the backward, as often as wanted.
        """
        lay = arrange(bind(self.inputs, args, kwargs))
        module = self._module(lay, "s", "forward_save")
        value = self._pool.empty(max(lay.n, 1), lay.dtype)
        saved = [self._pool.empty(max(lay.n, 1), lay.dtype) for _ in module.SAVED]
        self._run(module, "forward_save", lay.n, *_used(module, lay), value, *saved)
        # The caller may change its arrays before pulling back: keep the inputs the backward reads.
        kept = {n: _own(lay.flat[n]) for n in module.BACKWARD_READS}

        def pullback(cotangent: Any = None) -> Grads:
            seed_kind, seed_flat = arrange_seed(cotangent, lay.shape, lay.dtype)
            back = self._module(lay, seed_kind, "backward")
            grads = _grad_buffers(lay, self.wrt, None, self._pool.empty)
            if grads:
                reads = (kept[n] if n in kept else lay.flat[n] for n in back.BACKWARD_READS)
                seed_args = (seed_flat,) if back.SEEDED else ()
                self._run(
                    back,
                    "backward",
                    lay.n,
                    *saved,
                    *reads,
                    *seed_args,
                    *(g for g, _ in grads.values()),
                )
            return _shape_grads(lay, grads, None)

        return _shape_value(lay, value, None), pullback

    def hvp(self, *args, v: Mapping[str, Any], **kwargs) -> tuple[Any, Grads, Grads]:
        """``(value, {input: gradient}, {input: (H·v)})``: the Hessian-vector product in the
        same pass as the value and the gradient (reverse over reverse:
        ``compiler.passes.second_order``).

        ``v`` maps differentiated inputs to their direction's component, broadcastable to the
        input's shape; inputs it leaves out get 0. As for gradients, an input given as one
        number while others are arrays of samples gets ``Σ_samples H_i·v``.
        """
        if dask_arrays.any_lazy(args, kwargs) or dask_arrays.any_lazy((), _mapping(v)):
            point = match(self.inputs, args, kwargs)
            directions = dask_arrays.directions(_checked_v(v, self.wrt), point, self.wrt)
        else:
            point = bind(self.inputs, args, kwargs)
            directions = _directions(v, point, self.wrt)
        kernel = self.hvp_kernel
        value, grads = kernel.value_and_grad(*point.values(), *directions)
        given = kernel.inputs[len(self.inputs) :]  # the directions' names, in wrt order
        grad = {w: grads[d] for w, d in zip(self.wrt, given)}
        return value, grad, {w: grads[w] for w in self.wrt}

    def jvp(self, *args, tangent: Mapping[str, Any], **kwargs) -> tuple[Any, Any]:
        """``(value, directional derivative)``: ``Σ_w ∂f/∂w · tangent[w]`` per point, by forward
        mode (``compiler.passes.forward``: one sweep, no backward pass).

        ``tangent`` maps differentiated inputs to their component, broadcastable to the input's
        shape (the tangent of an array of samples is per sample); inputs it leaves out get 0.
        The derivative has the value's shape.
        """
        point = bind(self.inputs, args, kwargs)
        tangents = _directions(tangent, point, self.wrt, "tangent")
        kernel = self.jvp_kernel
        shape = np.broadcast_shapes(*(p.shape for p in point.values()))
        reader = np.zeros(shape, dtype_of(point))  # read out per point: the value's shape
        value, grads = kernel.value_and_grad(*point.values(), *tangents, reader)
        return value, grads[kernel.wrt[0]]

    @property
    def jvp_kernel(self) -> Kernel:
        """The kernel ``jvp`` runs, built on first use: the forward-mode program of
        ``compiler.passes.forward``."""
        if self._forward is None:
            raise TypeError(f"{self!r} was built without forward mode")
        with self._lock:
            if self._jvp is None:
                self._jvp = self._forward()
            return self._jvp

    @property
    def hvp_kernel(self) -> Kernel:
        """The kernel ``hvp`` runs (its own ``tier``, ``source``, ``adjoint``), built on first
        use: the Hessian-vector program of ``compiler.passes.second_order``."""
        if self._second_order is None:
            raise TypeError(f"{self!r} was built without second derivatives")
        with self._lock:
            if self._hvp is None:
                self._hvp = self._second_order()
            return self._hvp

    def scipy(self, like: Mapping[str, Any], data: Mapping[str, Any] | None = None):
        """A ``runtime.scipy_adapter.Objective`` for ``scipy.optimize.minimize``: ``obj.fun``,
        ``obj.jac``, ``obj.hess``, ``obj.hessp`` over one flat vector, ``obj.x0`` its start.

        ``like`` maps the parameters to their starting values (their shapes and the vector's
        order); ``data`` gives every other input, held fixed. The objective is the value summed
        over the samples; ``fun`` and ``jac`` at one x run the kernel once.
        """
        from runtime.scipy_adapter import Objective

        return Objective(self, like, data, self._hessian)

    # ------------------------------------------------------------ engines (``runtime.tiers``)
    def _module(self, lay: Layout, seed_kind: str, entry: str):
        """The module that runs ``entry`` now (``runtime.tiers``: the policy's choice; in
        ``auto`` the final engine's compile is queued behind it if the policy says so)."""
        kinds = "".join(lay.kinds[n] for n in self.inputs) + seed_kind
        return self._tiers.answer(((kinds, lay.dtype_name), entry), lay.n)

    def _uses_llvm(self) -> bool:
        """Whether the final engine is LLVM's rather than Numba's: for large graphs, and for
        graphs with sin or cos, which LLVM's code vectorises and Numba's calls one at a time."""
        return self._tiers.goal == "llvm-O3"

    def _llvm_module(self, pattern: Pattern, optimise: bool | None = None):
        """LLVM's code for ``pattern``: by default the compiled tier's (O3 when LLVM is that
        tier); ``optimise=False`` for a stand-in, which must compile at once."""
        optimise = self._uses_llvm() if optimise is None else optimise
        pattern = _pattern(pattern)
        kinds, dtype = pattern
        with self._lock:
            if (pattern, optimise) not in self._llvm:
                from runtime.llvm_tier import LLVMModule

                width = {} if dtype == "float64" else {"dtype": dtype}
                if self._optimise_nodes is not None:
                    width["optimise_nodes"] = self._optimise_nodes
                self._llvm[pattern, optimise] = LLVMModule(
                    self.adjoint,
                    self.inputs,
                    kinds,
                    self._key(pattern),
                    self.title,
                    optimise,
                    **width,
                )
            return self._llvm[pattern, optimise]

    def _engine(self, name: str, pattern: Pattern):
        """The module of engine ``name`` (``runtime.policy.ENGINES``) for ``pattern``."""
        pattern = _pattern(pattern)
        if name == "vm":
            return self._instant_module(pattern)
        if name == "numba":
            background.import_numba()
            if (
                pattern not in self._numba
            ):  # the cache holds modules weakly: the kernel keeps its own
                self._numba[pattern] = cache.load_module(
                    self._key(pattern), self._source_maker(pattern)
                )
            return self._numba[pattern]
        return self._llvm_module(pattern, optimise=name == "llvm-O3")

    def _auto(self, pattern: Pattern, entry: str, points: int):
        """The module ``mode="auto"`` answers a call of ``points`` elements with."""
        return self._tiers.answer((pattern, entry), points)

    def _instant_module(self, pattern: Pattern):
        pattern = _pattern(pattern)
        kinds, dtype = pattern
        with self._lock:
            if pattern not in self._instant:
                from runtime.instant import InstantModule, machine

                width = {} if dtype == "float64" else {"dtype": dtype}
                machine(**width)
                self._instant[pattern] = InstantModule(self.adjoint, self.inputs, kinds, **width)
            return self._instant[pattern]

    def _key(self, pattern: Pattern) -> str:
        """The cache key of this kernel's module for ``pattern`` (hashed once per pattern; a
        float64 pattern's key is what it was before float32 kernels existed)."""
        pattern = _pattern(pattern)
        if pattern not in self._keys:
            from compiler.codegen import numba_source

            kinds, dtype = pattern
            split = repr(numba_source.SPLIT_LINES)
            parts = (self._graph_key, repr(self.inputs), repr(self.wrt), kinds, split)
            parts += () if dtype == "float64" else (dtype,)
            self._keys[pattern] = cache.cache_key(*parts)
        return self._keys[pattern]

    def _source_maker(self, pattern: Pattern) -> Callable[[], str]:
        kinds, dtype = pattern

        def make_source() -> str:
            from compiler.codegen import numba_source

            width = {} if dtype == "float64" else {"dtype": dtype}
            return numba_source.generate(self.adjoint, self.inputs, kinds, self.title, **width)

        return make_source

    def _module_for(self, pattern: Pattern):
        """The final engine's module for ``pattern``."""
        return self._engine(self._tiers.goal, pattern)

    def _drop(self, module: ModuleType) -> None:
        """Forget a damaged Numba module wherever this kernel keeps it."""
        with self._lock:
            self._numba = {k: m for k, m in self._numba.items() if m is not module}
        self._tiers.forget(module)

    def _run(self, module, entry: str, n: int, *args) -> None:
        name = entry if policy.parallel(self._stats, n) else f"{entry}_serial"
        if not isinstance(module, ModuleType) or (module.__name__, name) in self._checked:
            getattr(module, name)(n, *args)
            return
        try:
            getattr(module, name)(n, *args)
        except Exception:
            # A first call compiles or loads from Numba's cache: a failure there means a damaged
            # cache entry. Rebuild it once; a second failure is ours, and nothing stays cached.
            self._drop(module)
            cache.forget(module)
            module = self._module_for((module.KINDS, getattr(module, "DTYPE", "float64")))
            try:
                getattr(module, name)(n, *args)
            except Exception as e:
                self._drop(module)
                cache.discard(module)
                raise CompileError(f"compiling {name} for {self.title!r} failed: {e}") from e
        self._checked.add((module.__name__, name))

    def _repr_html_(self) -> str | None:  # Jupyter: the graph drawn, the source (compiler.viz)
        from compiler.viz.display import kernel_html

        return kernel_html(self)


class _Engines:
    """A ``Kernel``'s engines as ``runtime.tiers.Tiers`` asks for them, by key (kinds, entry)."""

    def __init__(self, kernel: Kernel):
        # A proxy: a cycle would keep a dropped kernel (and its modules' machine code) alive
        # until a second garbage collection.
        self.k = weakref.proxy(kernel)

    def engine(self, name: str, key: tuple[str, str]):
        """The module of engine ``name`` for ``key`` = (pattern, entry); LLVM's code for the
        entry is compiled now (a stand-in must answer; O3 is waited for)."""
        pattern, entry = key
        module = self.k._engine(name, pattern)
        if name.startswith("llvm"):
            module.compiled(entry)
        return module

    def on_disk(self, key: tuple[str, str]):
        """The final engine's module if it is loaded or on disk, else None; LLVM's O3 code for
        the entry is loaded too if it is on disk (it answers while Numba's kernel loads).

        Numba's kernel counts only once Numba is imported: importing it costs 0.3-0.5 s, which
        the background thread pays, loading the kernel from disk, while LLVM's code answers."""
        pattern, entry = key
        o3 = self.k._llvm_module(pattern, optimise=True)
        if o3.cached(entry) and self.k._uses_llvm():
            return o3
        if self.k._uses_llvm() or not background.numba_imported():
            return None
        background.import_numba()
        module = cache.cached_module(self.k._key(pattern))
        if module is not None and background.load_cached(module, entry):
            return module
        return None

    def ready(self, key: tuple[str, str]) -> frozenset[str]:
        """``{"llvm-O3"}`` once LLVM's O3 code for the entry is loaded (as fast as Numba's)."""
        pattern, entry = key
        o3 = self.k._llvm.get((pattern, True))
        return frozenset({"llvm-O3"} if o3 is not None and o3.loaded(entry) else ())

    def job(self, key: tuple[str, str]) -> background.Job:
        """The final engine's compile, for the background thread."""
        pattern, entry = key
        if self.k._uses_llvm():
            from runtime.llvm_tier import Job

            return Job(self.k._llvm_module(pattern), entry)
        source = background.on_this_thread(self.k._key(pattern), self.k._source_maker(pattern))
        return background.Job(self.k._key(pattern), source, entry)

    def label(self, name: str, module: Any, key: tuple[str, str]) -> str:
        """The engine a module is: LLVM's O3 code of an entry too large for the pipeline is
        compiled without it."""
        return _label(module, key[1])


class Pool:
    """Output arrays handed out again once the caller has let them go (see ``POOL_MIN_BYTES``).

    An array is free when only the pool refers to it (CPython's reference count): whatever the
    caller still holds — the array, a view of it, a pullback's residuals — is never handed out
    again. Every array handed out is written whole by the kernel before the caller sees it.
    """

    def __init__(self) -> None:
        self._arrays: list[np.ndarray] = []
        self._lock = threading.Lock()

    def empty(self, n: int, dtype: np.dtype = _FLOAT64) -> np.ndarray:
        """An array of ``n`` elements of ``dtype`` (float64 or float32), contents undefined (as
        ``np.empty``); arrays of each dtype are pooled apart."""
        if n * dtype.itemsize < POOL_MIN_BYTES:
            return np.empty(n, dtype)
        with self._lock:
            for array in self._arrays:
                if array.shape[0] == n and array.dtype == dtype and sys.getrefcount(array) == _FREE:
                    return array
            array = np.empty(n, dtype)
            if sum(a.nbytes for a in self._arrays) + array.nbytes <= POOL_BYTES:
                self._arrays.append(array)
            return array


#: Kernels rebuilt from pickles in this process, by what defines them: each worker of a
#: cluster builds a kernel once, however many tasks carry it.
_RESTORED: dict[tuple, Kernel] = {}
_RESTORE_LOCK = threading.Lock()


def _restore(graph: Graph, wrt, title, mode, factories: dict) -> Kernel:
    key = (graph.key(), tuple(wrt), mode, factories["optimise_nodes"])
    with _RESTORE_LOCK:
        kernel = _RESTORED.get(key)
        if kernel is None:
            kernel = Kernel(graph, wrt, title, mode, **factories)
            _RESTORED[key] = kernel
        return kernel


def _no_out(out: Any) -> None:
    if out is not None:
        raise InputError("out= buffers cannot take Dask results: the call is lazy (leave out=)")


def _directions(
    v: Any, point: dict[str, np.ndarray], wrt: tuple[str, ...], label: str = "v"
) -> list:
    """``v`` as one array per ``wrt`` input, of that input's shape and the call's dtype (so a
    direction has its input's kind: the ``v`` of an input of samples is per sample). ``label``
    names the argument in messages."""
    _checked_v(v, wrt, label)
    dtype = dtype_of(point)
    out = []
    for name in wrt:
        shape = point[name].shape
        value = as_real_array(f"{label}['{name}']", v.get(name, 0.0)).astype(dtype)
        try:
            out.append(np.array(np.broadcast_to(value, shape)))
        except ValueError:
            raise InputError(
                f"{label}['{name}'] of shape {value.shape} does not broadcast to the shape {shape} "
                f"of input '{name}'"
            ) from None
    return out


def _mapping(v: Any) -> Mapping:
    return v if isinstance(v, Mapping) else {}


def _checked_v(v: Any, wrt: tuple[str, ...], label: str = "v") -> Mapping[str, Any]:
    """``hvp``'s ``v`` (or ``jvp``'s ``tangent``): a mapping from differentiated inputs to
    directions."""
    if not isinstance(v, Mapping):
        raise InputError(f"{label} must map input names to numbers, not a {type(v).__name__}")
    for name in v:
        if name not in wrt:
            raise InputError(
                f"{label} names '{name}', which is not a differentiated input; they are "
                f"{list(wrt)}{did_you_mean(str(name), list(wrt))}"
            )
    return v


def _pattern(pattern: Pattern | str) -> Pattern:
    """A pattern; kinds alone (as tests and benchmarks name one) are float64's."""
    return (pattern, "float64") if isinstance(pattern, str) else pattern


def _free_count() -> int:
    """The reference count ``Pool.empty`` sees for an array that only the pool holds, measured
    with the same loop (so an interpreter counting otherwise never makes a used array look free).
    """
    arrays, count = [np.empty(1)], 0
    for array in arrays:
        count = sys.getrefcount(array)
    return count


_FREE = _free_count()


def _label(module: Any, entry: str) -> str:
    """The engine a module is (``runtime.policy.ENGINES``)."""
    if isinstance(module, ModuleType):
        return "numba"
    if hasattr(module, "optimised"):
        return "llvm-O3" if module.optimised(entry) else "llvm-O0"
    return "vm"


def _own(value: np.ndarray | float) -> np.ndarray | float:
    """A private copy of an array input (a float is immutable already)."""
    return value.copy() if isinstance(value, np.ndarray) else value


def _used(module: ModuleType, lay: Layout) -> list:
    return [lay.flat[n] for n in module.USED]


def _unalias(lay: Layout, *buffers: np.ndarray | None) -> None:
    """Copy each input that may share memory with an output buffer, as NumPy's ufuncs do: the
    compiled code may read an input after writing an output (a later chunk, or a block run again
    for sin/cos of a huge argument)."""
    buffers = tuple(b for b in buffers if b is not None)
    if not buffers:
        return
    for name, value in lay.flat.items():
        if isinstance(value, np.ndarray) and any(np.may_share_memory(value, b) for b in buffers):
            lay.flat[name] = value.copy()


def _split_out(out) -> tuple[np.ndarray | None, dict | None]:
    if out is None:
        return None, None
    form = "out must be (value_buffer, {input: gradient_buffer})"
    if not (isinstance(out, tuple) and len(out) == 2):
        raise InputError(form)
    if out[1] is not None and not isinstance(out[1], dict):
        got = type(out[1]).__name__
        raise InputError(f"{form}: the gradients by input name in a dict, not a {got}")
    _disjoint(
        {"the value": out[0], **{f"the gradient of '{n}'": b for n, b in (out[1] or {}).items()}}
    )
    return out


def _disjoint(buffers: dict[str, Any]) -> None:
    """Refuse output buffers that share memory: each would overwrite another's results."""
    arrays = [(what, b) for what, b in buffers.items() if isinstance(b, np.ndarray)]
    for i, (what, a) in enumerate(arrays):
        for other, b in arrays[i + 1 :]:
            if np.may_share_memory(a, b):
                raise InputError(
                    f"out buffers for {what} and {other} share memory: give each its own array"
                )


def _check_buffer(what: str, buf: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``buf``, flat, if the kernel may write it: of the call's dtype, shape, C order, writeable."""
    ok = (
        isinstance(buf, np.ndarray)
        and buf.dtype == dtype
        and buf.shape == shape
        and buf.flags.c_contiguous
        and buf.flags.writeable
    )
    if not ok:
        got = f"{getattr(buf, 'dtype', type(buf).__name__)} {getattr(buf, 'shape', '')}"
        raise InputError(
            f"out buffer for {what} must be a writeable C-contiguous {dtype} array "
            f"of shape {shape} (the call's dtype, from its inputs), got {got}"
        )
    return buf.reshape(-1)


def _value_buffer(lay: Layout, out: np.ndarray | None, empty=np.empty) -> np.ndarray:
    if out is None:
        return empty(max(lay.n, 1), lay.dtype)
    if not lay.n:
        return np.empty(1, lay.dtype)
    return _check_buffer("the value", out, lay.shape, lay.dtype)


def _grad_buffers(lay: Layout, wrt: tuple[str, ...], out: dict | None, empty=np.empty) -> dict:
    """Per input: (flat buffer the loop writes, the user's buffer or None)."""
    if out is not None and set(out) != set(wrt):
        raise InputError(f"out gradients must be given for exactly {list(wrt)}, got {list(out)}")
    buffers = {}
    for name in wrt:
        user = out[name] if out is not None else None
        if user is not None:
            _check_buffer(f"the gradient of '{name}'", user, lay.shapes[name], lay.dtype)
        if lay.kinds[name] == "s":
            flat = user.reshape(-1) if user is not None else np.empty(1, lay.dtype)
        elif name in lay.expanded or user is None:
            flat = empty(lay.n, lay.dtype)
        else:
            flat = user.reshape(-1)
        buffers[name] = (flat, user)
    return buffers


def _number(x: np.floating) -> float | np.floating:
    """A single-number result: a Python float in float64 (as always), a ``np.float32`` in
    float32 (as NumPy's float32 arithmetic gives: the dtype survives)."""
    return float(x) if x.dtype == _FLOAT64 else x


def _shape_value(lay: Layout, flat: np.ndarray, out: np.ndarray | None):
    if out is not None:
        return out
    if lay.shape == ():
        return _number(flat[0])
    return flat[: lay.n].reshape(lay.shape)


def _shape_grads(lay: Layout, buffers: dict, out: dict | None) -> Grads:
    grads = {}
    for name, (flat, user) in buffers.items():
        shape = lay.shapes[name]
        if lay.kinds[name] == "s":
            g = flat[:1].reshape(shape)
        elif name in lay.expanded:
            g = sum_to(flat.reshape(lay.shape), shape)
        else:
            g = flat.reshape(shape)
        if user is not None:
            if not np.shares_memory(g, user):
                user[...] = g
            grads[name] = user
        else:
            grads[name] = _number(g[()]) if shape == () else g
    return grads

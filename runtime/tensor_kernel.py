"""``TensorKernel``: a tensor program's value and gradients, called like a NumPy function.

It binds the inputs, checks them against their declared shapes (binding each dimension name to
one size for the call), and runs the generated module (``compiler.codegen.tensor_source``): BLAS
for the matrix products, fused Numba loops for the elementwise regions. ``mode`` is the mode asked
for, ``tier`` the engine that answered the latest call (``runtime.policy``): ``"compiled"`` runs
``numba`` (each region is a small function that compiles in about a second, once, then comes from
the disk cache), ``"instant"`` runs ``numpy`` (the same steps as NumPy calls: nothing to
compile). ``"auto"`` answers with the compiled module when it is loaded or on disk, else with
NumPy's steps while a background thread compiles every entry (by calling it once on inputs
whose every named dimension is 1: the same Numba types as any call), and switches when done
(``runtime.tiers``: the state machine ``Kernel`` uses too).

The dtype follows the inputs as for ``Kernel`` (``runtime.inputs.call_dtype``): float32 inputs
run a float32 module (its own cache entry and background compile) and give float32 results.

``hvp`` runs a second ``TensorKernel``, of the Hessian-vector product program
(``compiler.passes.second_order.hvp``), built on first use with the same mode.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

import numpy as np

from compiler.errors import CompileError, InputError
from compiler.ir import shapes as sh
from compiler.ir.tensor import TensorGraph
from runtime import background, cache, dask_arrays, policy
from runtime.inputs import as_float_array, bind, dtype_of
from runtime.kernel import _directions
from runtime.quiet import ignore_errors
from runtime.tiers import Tiers

Grads = dict[str, Any]
_FLOAT64 = np.dtype(np.float64)
_FLOAT32 = np.dtype(np.float32)


class TensorKernel:
    """Value and gradients of one tensor program.

    >>> import compiler, numpy as np
    >>> k = compiler.compile_gradient("sum((W @ x)**2)", shapes={"W": ("n", "n"), "x": ("n",)})
    >>> value, grads = k.value_and_grad(W=[[0.1, 0.5], [-0.3, 0.8]], x=[0.2, 0.4])
    >>> round(value, 12), np.round(grads["x"], 12)
    (0.116, array([-0.112,  0.636]))
    """

    def __init__(
        self,
        graph: TensorGraph,
        wrt: tuple[str, ...],
        title: str = "",
        mode: str = "auto",
        *,
        plan: Callable[[], Any],
        second_order: Callable[[], TensorKernel] | None = None,
    ):
        """``plan()`` gives the forward + backward program (``compiler.api.plan``), on first
        use: a program compiled before never needs it. ``second_order()`` gives the kernel of
        the Hessian-vector product program (``compiler.api.hvp_kernel``), on first ``hvp``."""
        self.graph = graph
        self._second_order = second_order
        self._hvp: TensorKernel | None = None
        self._hvp_lock = threading.Lock()
        self.inputs: tuple[str, ...] = graph.inputs
        self.shapes = {n: graph.declared.get(n, ()) for n in self.inputs}
        self.wrt = wrt
        self.title = title
        self.fusion = None
        self._plan = plan  # the adjoint, planned by the compile step (compiler.api) on first use
        self._adjoint = None
        self._modules: dict[tuple[bool, str], ModuleType] = {}  # (fused, dtype) -> module
        self._stats = policy.Stats(sum(1 for _ in graph.op_nodes()), tensor=True)
        self._tiers = Tiers(_Engines(self), self._stats, mode, title, behind_first=False)
        self._checked: set[tuple[tuple[bool, str], str]] = set()
        self._sizes: dict[tuple, dict[str, int]] = {}  # input shapes -> dimension sizes, checked
        self._scalar_inputs = not all(self.shapes.values())
        # max/min reductions and the dims they reduce: an empty one has no value (NumPy raises).
        self._extremes = [
            (
                graph.nodes[i].op,
                [graph.shapes[graph.nodes[i].args[0]][k] for k in graph.nodes[i].value],
            )
            for i in graph.op_nodes()
            if graph.nodes[i].op in ("max", "min")
        ]

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}{sh.text(s)}" for n, s in self.shapes.items())
        return f"<TensorKernel {self.title!r} inputs=({shapes}) wrt={self.wrt} mode={self.mode!r}>"

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
        """The engine that answered the latest call: ``"numba"`` (the compiled module) or
        ``"numpy"`` (the instant one); None before any call."""
        return self._tiers.tier

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the background compile started so far (``mode="auto"``); True if it
        succeeded (also when nothing had to compile)."""
        return self._tiers.wait(timeout)

    @property
    def _job(self) -> background.Job | None:
        """The background compile of every entry, once started."""
        return self._tiers.jobs.get(EVERY_ENTRY)

    @property
    def adjoint(self):
        """The forward + backward graph (a ``TensorAdjointGraph``), built on first use."""
        if self._adjoint is None:
            self._adjoint = self._plan()
        return self._adjoint

    @property
    def source(self) -> str:
        """The generated Python/Numba source of the compiled tier (of the NumPy-only instant
        module with ``mode="instant"``)."""
        return self._source_maker(self.mode != "instant", "float64")()

    # ------------------------------------------------------------ calling
    def __call__(self, *args, **kwargs):
        """The value: a float for a scalar output, else an array of the output's shape."""
        values, _ = self._bind(args, kwargs)
        return self._run("forward", values)

    def value_and_grad(self, *args, seed: Any = None, **kwargs) -> tuple[Any, Grads]:
        """``(value, {input: gradient})``. Without a seed, the gradient of the sum of the
        output's elements (for a scalar output: its gradient)."""
        values, sizes = self._bind(args, kwargs)
        seed = self._seed(seed, sizes, _dtype(values))
        value, grads = self._run("value_and_grad", [*values, seed])
        return value, dict(zip(self.wrt, grads))

    def grad(self, *args, seed: Any = None, **kwargs) -> Grads:
        return self.value_and_grad(*args, seed=seed, **kwargs)[1]

    def vjp(self, *args, **kwargs) -> tuple[Any, Callable[..., Grads]]:
        """``(value, pullback)``: ``pullback(seed)`` is the vector-Jacobian product. The forward
        runs once, keeping what the backward reads (``adjoint.saved``)."""
        values, sizes = self._bind(args, kwargs)
        value, saved = self._run("forward_save", values)
        # The caller may change its arrays before pulling back: the pullback keeps its own.
        mine = [v.copy() if isinstance(v, np.ndarray) else v for v in values]
        saved = [_unshared(s, values) for s in saved]
        values, dtype = mine, _dtype(values)

        def pullback(seed: Any = None) -> Grads:
            grads = self._run("backward", [*values, *saved, self._seed(seed, sizes, dtype)])
            return dict(zip(self.wrt, grads))

        return value, pullback

    def hvp(self, *args, v: Mapping[str, Any], **kwargs) -> tuple[Any, Grads, Grads]:
        """``(value, {input: gradient}, {input: (H·v)})`` of a scalar output, in one pass
        (reverse over reverse: ``compiler.passes.second_order.hvp``), as ``Kernel.hvp``.

        ``v`` maps differentiated inputs to their direction, broadcastable to the input's
        shape; inputs it leaves out get 0. An unknown name or a shape that does not broadcast
        is an InputError naming it.
        """
        values, _ = self._bind(args, kwargs)  # shapes checked (and Dask arrays refused) here
        point = {n: np.asarray(x) for n, x in zip(self.inputs, values)}
        directions = _directions(v, point, self.wrt)
        kernel = self.hvp_kernel
        given = kernel.inputs[len(self.inputs) :]  # the directions' names, in wrt order
        named = dict(zip(given, directions))
        value, grads = kernel.value_and_grad(**point, **named)
        grad = {w: grads[d] for w, d in zip(self.wrt, given)}
        return value, grad, {w: grads[w] for w in self.wrt}

    @property
    def hvp_kernel(self) -> TensorKernel:
        """The kernel ``hvp`` runs (its own ``tier``, ``source``, ``adjoint``), built on first
        use: the Hessian-vector program of ``compiler.passes.second_order``."""
        if self._second_order is None:
            raise TypeError(f"{self!r} was built without second derivatives")
        with self._hvp_lock:
            if self._hvp is None:
                self._hvp = self._second_order()
            return self._hvp

    # ------------------------------------------------------------ binding
    def _bind(self, args: tuple, kwargs: dict) -> tuple[list, dict[str, int]]:
        fast = self._bind_checked(args, kwargs)
        if fast is not None:
            return fast
        if dask_arrays.any_lazy(args, kwargs):
            raise InputError(
                "a tensor program (shapes=) takes NumPy arrays, not Dask arrays: its matrix "
                "products and reductions span whole axes, so blocks cannot be run apart. Map it "
                "over blocks of a batch axis yourself (dask.array.map_blocks), or use an "
                "elementwise kernel, which takes Dask arrays"
            )
        arrays = bind(self.inputs, args, kwargs)
        key = tuple(a.shape for a in arrays.values())
        sizes = self._sizes.get(key)
        if sizes is None:  # a new pattern of shapes: check it once
            sizes = self._sizes[key] = self._check(arrays)
        number = float if dtype_of(arrays) == _FLOAT64 else np.float32
        values = [
            number(arrays[n]) if not self.shapes[n] else np.ascontiguousarray(arrays[n])
            for n in self.inputs
        ]
        return values, sizes

    def _bind_checked(self, args: tuple, kwargs: dict) -> tuple[list, dict[str, int]] | None:
        """The common call, for little Python work (it runs between BLAS calls, at a fraction
        of its usual speed): every input by name, C-contiguous arrays all float64 (or all
        float32) of a shape pattern already checked. None for anything else, which ``_bind``
        handles in full."""
        if args or len(kwargs) != len(self.inputs):
            return None
        try:
            values = [kwargs[n] for n in self.inputs]
        except KeyError:
            return None
        shapes = []
        dtype = values[0].dtype if values and type(values[0]) is np.ndarray else _FLOAT64
        if dtype is not _FLOAT64 and dtype != _FLOAT32:
            return None
        for v in values:
            if type(v) is not np.ndarray or v.dtype is not dtype or not v.flags.c_contiguous:
                return None
            shapes.append(v.shape)
        sizes = self._sizes.get(tuple(shapes))
        if sizes is None:
            return None
        if self._scalar_inputs:
            number = float if dtype is _FLOAT64 else np.float32
            values = [v if self.shapes[n] else number(v) for n, v in zip(self.inputs, values)]
        return values, sizes

    def _check(self, arrays: dict) -> dict[str, int]:
        """The dimension sizes these arrays bind, or an InputError naming the culprit."""
        sizes = sh.bind(self.shapes, arrays)
        for op, dims in self._extremes:
            empty = [d for d in dims if sh.concrete((d,), sizes) == (0,)]
            if empty:
                raise InputError(
                    f"{op} over an empty axis: dimension {empty[0]!r} has size 0 (in inputs "
                    f"{[n for n, s in self.shapes.items() if empty[0] in s]}); it has no {op}"
                )
        return sizes

    def _seed(self, seed: Any, sizes: dict[str, int], dtype: np.dtype = _FLOAT64):
        """The seed in the call's dtype (a seed never changes the dtype the inputs chose)."""
        declared = self.graph.shapes[self.graph.outputs[0]]
        number = float if dtype == _FLOAT64 else np.float32
        if seed is None and declared == ():
            return number(1.0)  # a scalar loss: the common case, with no shape to work out
        shape = sh.concrete(declared, sizes)
        if seed is None:
            return np.ones(shape, dtype)
        array = as_float_array("seed", seed, dtype)
        if array.shape != shape:
            try:
                array = np.broadcast_to(array, shape)
            except ValueError:
                raise InputError(
                    f"seed of shape {array.shape} does not broadcast to the output's {shape}"
                ) from None
        return number(array) if not shape else np.ascontiguousarray(array)

    # ------------------------------------------------------------ running
    def _key(self, fused: bool, dtype: str = "float64") -> str:
        """The cache key of the module (a float64 module's key is what it was before float32)."""
        parts = ("tensor", self.graph.key(), repr(self.inputs), repr(self.wrt), repr(fused))
        parts += () if dtype == "float64" else (dtype,)
        return cache.cache_key(*parts)

    def _source_maker(self, fused: bool, dtype: str = "float64") -> Callable[[], str]:
        def make_source() -> str:
            from compiler.codegen.tensor_source import generate_tensor

            width = {} if dtype == "float64" else {"dtype": dtype}
            return generate_tensor(self.adjoint, self.title, fused, **width)

        return make_source

    def _module(self, fused: bool, dtype: str = "float64") -> ModuleType:
        if (fused, dtype) not in self._modules:
            if fused:
                background.import_numba()
            self._modules[fused, dtype] = cache.load_module(
                self._key(fused, dtype), self._source_maker(fused, dtype), prefix="t"
            )
        return self._modules[fused, dtype]

    def _run(self, entry: str, args: list):
        points = _points(args) if self.mode == "auto" else 0
        dtype = "float64" if _dtype(args) is _FLOAT64 else "float32"  # (np.dtype.name is slow)
        module = self._tiers.answer(every_entry(dtype), points)
        fused = module is not self._modules.get((False, dtype))
        with ignore_errors():  # NumPy's nan and inf, without its warnings
            if not fused:
                result = getattr(module, entry)(*args)
                self._tiers.answered(every_entry(dtype))  # the compile behind, if owed, starts now
                return result
            if ((fused, dtype), entry) in self._checked:
                return getattr(module, entry)(*args)
            from numba.core.errors import NumbaError

            try:
                result = getattr(module, entry)(*args)
            except NumbaError as e:
                # The first call compiles (or loads from Numba's cache): a failure here is a
                # damaged cache entry or our bug. Nothing half-built stays cached.
                cache.discard(module)
                self._modules.pop((fused, dtype), None)
                self._tiers.forget(module)
                raise CompileError(f"compiling {entry} of {self.title!r} failed: {e}") from e
        self._checked.add(((fused, dtype), entry))
        return result

    def _tiny_call(self, dtype: str = "float64") -> tuple[list, Any]:
        """Inputs whose named dimensions are all 1, and the matching seed: they give Numba the
        same types as any call (dimensions, dtype, layout), at no cost."""
        arrays = {
            n: np.ones(tuple(d if isinstance(d, int) else 1 for d in shape), dtype)
            for n, shape in self.shapes.items()
        }
        values, sizes = self._bind((), arrays)
        return values, self._seed(None, sizes, np.dtype(dtype))

    def _repr_html_(self) -> str | None:  # Jupyter: the graph drawn, the source (compiler.viz)
        from compiler.viz.display import kernel_html

        return kernel_html(self)


#: A tensor program's one call pattern per dtype: its background job compiles every entry at once.
EVERY_ENTRY = "every entry"


def every_entry(dtype: str) -> str:
    """The call pattern of a dtype: ``EVERY_ENTRY`` for float64, as always."""
    return EVERY_ENTRY if dtype == "float64" else f"{EVERY_ENTRY} {dtype}"


def _key_dtype(key: str) -> str:
    return "float64" if key == EVERY_ENTRY else key.rsplit(" ", 1)[1]


def _dtype(values: list) -> np.dtype:
    """A bound call's dtype (``_bind`` gives every value the same): float64 without inputs."""
    for v in values:
        if type(v) is float:
            return _FLOAT64
        if isinstance(v, (np.ndarray, np.float32)):
            return _FLOAT64 if v.dtype == _FLOAT64 else _FLOAT32
    return _FLOAT64


class _Engines:
    """A ``TensorKernel``'s engines as ``runtime.tiers.Tiers`` asks for them (one key)."""

    def __init__(self, kernel: TensorKernel):
        # A proxy: a cycle would keep a dropped kernel (and its modules' machine code) alive
        # until a second garbage collection.
        self.k = weakref.proxy(kernel)

    def engine(self, name: str, key: str) -> ModuleType:
        return self.k._module(name == "numba", _key_dtype(key))

    def on_disk(self, key: str) -> ModuleType | None:
        """The compiled module if it is loaded, or on disk (loading it costs what a look
        would). Only once Numba is imported: importing it (0.3-0.5 s) is the background
        thread's work."""
        dtype = _key_dtype(key)
        if (True, dtype) in self.k._modules:
            return self.k._modules[True, dtype]
        if not background.numba_imported():
            return None
        background.import_numba()
        if cache.on_disk(self.k._key(True, dtype), prefix="t"):
            return self.k._module(True, dtype)
        return None

    def ready(self, key: str) -> frozenset[str]:
        return frozenset()

    def job(self, key: str) -> _WarmUp:
        return _WarmUp(self.k, _key_dtype(key))

    def label(self, name: str, module: ModuleType, key: str) -> str:
        return name


def _points(args: list) -> int:
    """A call's size for the policy: its largest array."""
    return max((a.size for a in args if isinstance(a, np.ndarray)), default=1)


def _unshared(saved: Any, values: list) -> Any:
    """A residual, copied if it is a view of an input (a reshape or a transpose)."""
    if isinstance(saved, np.ndarray) and any(
        isinstance(v, np.ndarray) and np.may_share_memory(saved, v) for v in values
    ):
        return saved.copy()
    return saved


class _WarmUp:
    """A background job (``runtime.background``): load the compiled module and call each entry
    once on tiny inputs, so every fused loop is compiled (or loaded from Numba's cache)."""

    def __init__(self, kernel: TensorKernel, dtype: str = "float64"):
        self.kernel, self.entry, self.dtype = kernel, every_entry(dtype), dtype
        self.key, make = kernel._key(True, dtype), kernel._source_maker(True, dtype)
        self.make_source = background.on_this_thread(self.key, make, prefix="t")
        self.state = "pending"
        self.module: ModuleType | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self, stopping: threading.Event) -> None:
        k, module = self.kernel, None
        try:
            background.import_numba()
            module = cache.load_module(self.key, self.make_source, prefix="t")
            values, seed = k._tiny_call(self.dtype)
            with ignore_errors():
                module.forward(*values)
                module.value_and_grad(*values, seed)
                if k.wrt:
                    _, saved = module.forward_save(*values)
                    module.backward(*values, *saved, seed)
            background.mark(module, self.key, self.entry, prefix="t")
            self.module, self.state = module, "ready"
        except BaseException as e:  # noqa: BLE001 - the instant tier keeps answering
            if module is not None:
                cache.discard(module)
            self.error, self.state = e, "failed"
        finally:
            self.done.set()

    def on_disk(self) -> bool:
        """Whether every loop was warmed up into Numba's cache by an earlier run: this job then
        only loads, and an exiting interpreter need not wait for it (``runtime.background``)."""
        return background.marked(self.key, self.entry, prefix="t")

"""``Kernel``: a compiled function and its gradient, called like a NumPy function.

It binds and checks arguments, picks the generated module for the inputs' kinds (compiled once,
cached on disk), runs the serial or the parallel loop by size, and shapes the results: the value has
the broadcast shape, each gradient its input's shape.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from compiler.errors import CompileError, InputError
from compiler.ir.graph import Graph
from runtime import cache
from runtime.inputs import Layout, arrange, arrange_seed, bind, sum_to

#: Below this much work (elements x forward ops) a call runs the serial loop: waking threads costs
#: ~3 us here. Measured with the neuron (8 ops): threads win from about 1,000 elements.
PARALLEL_WORK = 8192

Grads = dict[str, Any]


class Kernel:
    """Value and gradients of one compiled expression.

    >>> import compiler
    >>> k = compiler.compile_gradient("(x + y) * z")
    >>> k(x=-2, y=5, z=-4)
    -12.0
    >>> k.grad(x=-2, y=5, z=-4)
    {'x': -4.0, 'y': -4.0, 'z': 3.0}
    """

    def __init__(self, graph: Graph, wrt: tuple[str, ...], title: str = ""):
        self.graph = graph
        self.inputs: tuple[str, ...] = graph.inputs
        self.wrt = wrt
        self.title = title
        self.fusion = None  # what gate fusion did (a FusionReport), set by compile_gradient
        self._graph_key = graph.key()
        self._ops = max(1, sum(1 for _ in graph.op_nodes()))
        self._adjoint = None
        self._checked: set[tuple[str, str]] = set()

    def __repr__(self) -> str:
        return f"<Kernel {self.title!r} inputs={self.inputs} wrt={self.wrt}>"

    # ------------------------------------------------------------ inspection
    @property
    def adjoint(self):
        """The forward + backward graph (``AdjointGraph``), built on first use."""
        if self._adjoint is None:
            from compiler.passes.adjoint import adjoint

            self._adjoint = adjoint(self.graph, self.wrt)
        return self._adjoint

    @property
    def source(self) -> str:
        """The generated Python/Numba source (array inputs, scalar seed)."""
        from compiler.codegen.numba_source import generate

        return generate(self.adjoint, self.inputs, "a" * len(self.inputs) + "s", self.title)

    # ------------------------------------------------------------ calling
    def __call__(self, *args, out: np.ndarray | None = None, **kwargs):
        """The value, with NumPy broadcasting over the inputs."""
        lay = arrange(bind(self.inputs, args, kwargs))
        module = self._module(lay, "s")
        value = _value_buffer(lay, out)
        self._run(module, "forward", lay.n, *_used(module, lay), value)
        return _shape_value(lay, value, out)

    def value_and_grad(self, *args, seed: Any = None, out: tuple | None = None, **kwargs):
        """``(value, {input: gradient})`` in one pass over memory.

        ``seed`` is the upstream gradient (default 1), broadcastable to the value's shape.
        ``out=(value_buffer, {input: buffer})`` reuses preallocated float64 arrays and returns them.
        """
        lay = arrange(bind(self.inputs, args, kwargs))
        seed_kind, seed_flat = arrange_seed(seed, lay.shape)
        module = self._module(lay, seed_kind)
        value_out, grads_out = _split_out(out)
        value = _value_buffer(lay, value_out)
        grads = _grad_buffers(lay, self.wrt, grads_out)
        seed_args = (seed_flat,) if module.SEEDED else ()
        self._run(
            module,
            "value_and_grad",
            lay.n,
            *_used(module, lay),
            *seed_args,
            value,
            *(g for g, _ in grads.values()),
        )
        return _shape_value(lay, value, value_out), _shape_grads(lay, grads, grads_out)

    def grad(self, *args, seed: Any = None, out: dict | None = None, **kwargs) -> Grads:
        """``{input: gradient}``; see ``value_and_grad``."""
        return self.value_and_grad(*args, seed=seed, out=(None, out), **kwargs)[1]

    def vjp(self, *args, **kwargs) -> tuple[Any, Callable[..., Grads]]:
        """``(value, pullback)``: the forward runs now and keeps its residuals;
        ``pullback(cotangent)`` runs only the backward, as often as wanted.
        """
        lay = arrange(bind(self.inputs, args, kwargs))
        module = self._module(lay, "s")
        value = np.empty(max(lay.n, 1))
        saved = [np.empty(max(lay.n, 1)) for _ in module.SAVED]
        self._run(module, "forward_save", lay.n, *_used(module, lay), value, *saved)

        def pullback(cotangent: Any = None) -> Grads:
            seed_kind, seed_flat = arrange_seed(cotangent, lay.shape)
            back = self._module(lay, seed_kind)
            grads = _grad_buffers(lay, self.wrt, None)
            if grads:
                reads = (lay.flat[n] for n in back.BACKWARD_READS)
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

    # ------------------------------------------------------------ machinery
    def _module(self, lay: Layout, seed_kind: str) -> ModuleType:
        return self._module_for("".join(lay.kinds[n] for n in self.inputs) + seed_kind)

    def _module_for(self, kinds: str) -> ModuleType:
        key = cache.cache_key(self._graph_key, repr(self.inputs), repr(self.wrt), kinds)

        def make_source() -> str:
            from compiler.codegen.numba_source import generate

            return generate(self.adjoint, self.inputs, kinds, self.title)

        return cache.load_module(key, make_source)

    def _run(self, module: ModuleType, entry: str, n: int, *args) -> None:
        name = entry if n * self._ops >= PARALLEL_WORK else f"{entry}_serial"
        if (module.__name__, name) in self._checked:
            getattr(module, name)(n, *args)
            return
        try:
            getattr(module, name)(n, *args)
        except Exception:
            # A first call compiles or loads from Numba's cache: a failure there means a damaged
            # cache entry. Rebuild it once; a second failure is ours, and nothing stays cached.
            cache.forget(module)
            module = self._module_for(module.KINDS)
            try:
                getattr(module, name)(n, *args)
            except Exception as e:
                cache.discard(module)
                raise CompileError(f"compiling {name} for {self.title!r} failed: {e}") from e
        self._checked.add((module.__name__, name))


def _used(module: ModuleType, lay: Layout) -> list:
    return [lay.flat[n] for n in module.USED]


def _split_out(out) -> tuple[np.ndarray | None, dict | None]:
    if out is None:
        return None, None
    if not (isinstance(out, tuple) and len(out) == 2):
        raise InputError("out must be (value_buffer, {input: gradient_buffer})")
    return out


def _check_buffer(what: str, buf: Any, shape: tuple[int, ...]) -> np.ndarray:
    ok = (
        isinstance(buf, np.ndarray)
        and buf.dtype == np.float64
        and buf.shape == shape
        and buf.flags.c_contiguous
        and buf.flags.writeable
    )
    if not ok:
        got = f"{getattr(buf, 'dtype', type(buf).__name__)} {getattr(buf, 'shape', '')}"
        raise InputError(
            f"out buffer for {what} must be a writeable C-contiguous float64 array "
            f"of shape {shape}, got {got}"
        )
    return buf.reshape(-1)


def _value_buffer(lay: Layout, out: np.ndarray | None) -> np.ndarray:
    if out is None:
        return np.empty(max(lay.n, 1))
    return _check_buffer("the value", out, lay.shape) if lay.n else np.empty(1)


def _grad_buffers(lay: Layout, wrt: tuple[str, ...], out: dict | None) -> dict:
    """Per input: (flat buffer the loop writes, the user's buffer or None)."""
    if out is not None and set(out) != set(wrt):
        raise InputError(f"out gradients must be given for exactly {list(wrt)}, got {list(out)}")
    buffers = {}
    for name in wrt:
        user = out[name] if out is not None else None
        if user is not None:
            _check_buffer(f"the gradient of '{name}'", user, lay.shapes[name])
        if lay.kinds[name] == "s":
            flat = user.reshape(-1) if user is not None else np.empty(1)
        elif name in lay.expanded or user is None:
            flat = np.empty(lay.n)
        else:
            flat = user.reshape(-1)
        buffers[name] = (flat, user)
    return buffers


def _shape_value(lay: Layout, flat: np.ndarray, out: np.ndarray | None):
    if out is not None:
        return out
    return float(flat[0]) if lay.shape == () else flat[: lay.n].reshape(lay.shape)


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
            grads[name] = float(g) if shape == () else g
    return grads

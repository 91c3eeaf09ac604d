"""``Kernel``: a function and its gradient, called like a NumPy function, on one of three modes.

It binds and checks arguments, picks the code for the inputs' kinds, runs the serial or the
parallel loop by size, and shapes the results: the value has the broadcast shape, each gradient its
input's shape. ``mode`` is what was asked for; ``tier`` names the engine that answered the latest
call (``runtime.policy`` chooses it, one table for every kernel):

- ``"compiled"``: the final engine — the generated Numba module (compiled once per call pattern,
  cached on disk), or LLVM's O3 code for graphs with sin/cos or beyond ``LLVM_OPS`` ops;
- ``"instant"``: the same entries run as data by the virtual machine of ``runtime.instant``, which
  is compiled once per machine (LLVM IR, no Numba) — a new expression answers at once;
- ``"auto"`` (the default): the final engine if it is loaded or on disk. Else a large call
  (``policy.WAIT_WORK``) waits for LLVM's O3 code (a tenth of a second) and a small one answers
  from LLVM's unoptimised code (the virtual machine for large graphs), while the final engine
  compiles on a background thread and takes over once ready.

The engines take the same arguments and give the same numbers to rounding, so a call pattern can
change engine between two calls (or between a ``vjp``'s forward and its pullback).
"""

from __future__ import annotations

import sys
import threading
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from compiler.errors import CompileError, InputError
from compiler.ir.graph import Graph
from runtime import background, cache, policy
from runtime.inputs import Layout, arrange, arrange_seed, bind, sum_to

#: Output arrays of at least this many bytes come from a kernel's ``Pool``: a new one costs a page
#: fault per 4 KiB on first write (at 10^6 points, three fresh outputs cost 4-10 ms against the
#: O3 kernel's 3 ms of work), a reused one none. Smaller ones come from malloc's free lists
#: (this is glibc's default threshold for giving each allocation its own fresh pages).
POOL_MIN_BYTES = 128 << 10

#: At most this many bytes of output arrays are kept per kernel for reuse.
POOL_BYTES = 64 << 20

#: Below this much work (elements x forward ops) a call runs the serial loop: waking threads costs
#: ~3 us here. Measured with the neuron (8 ops): threads win from about 1,000 elements.
PARALLEL_WORK = 8192

MODES = ("auto", "instant", "compiled")

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

    def __init__(self, graph: Graph, wrt: tuple[str, ...], title: str = "", mode: str = "auto"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.graph = graph
        self.inputs: tuple[str, ...] = graph.inputs
        self.wrt = wrt
        self.title = title
        self.mode = mode
        self.fusion = None  # what gate fusion did (a FusionReport), set by compile_gradient
        self._graph_key = graph.key()
        self._keys: dict[str, str] = {}
        self._ops = max(1, sum(1 for _ in graph.op_nodes()))
        self._trig = any(graph.nodes[i].op in ("sin", "cos") for i in graph.op_nodes())
        self._stats = policy.Stats(self._ops, self._trig)
        self._final: dict[tuple[str, str], Any] = {}  # auto: (kinds, entry) -> final module
        self._adjoint = None
        self._checked: set[tuple[str, str]] = set()
        self._tier: str | None = None  # the engine that answered the latest call
        self._instant: dict[str, Any] = {}  # kinds -> InstantModule
        self._llvm: dict[tuple[str, bool], Any] = {}  # (kinds, optimise) -> LLVMModule
        self._numba: dict[str, ModuleType] = {}  # kinds -> module (the cache holds it weakly)
        self._jobs: dict[tuple[str, str], background.Job] = {}  # (kinds, entry) -> compile
        self._reported: set[int] = set()  # failed jobs already warned about
        self._lock = threading.RLock()
        self._pool = Pool()

    def __repr__(self) -> str:
        return f"<Kernel {self.title!r} inputs={self.inputs} wrt={self.wrt} mode={self.mode!r}>"

    @property
    def requested_mode(self) -> str:
        """The mode asked for (an alias of ``mode``, kept for older code)."""
        return self.mode

    @property
    def tier(self) -> str | None:
        """The engine that answered the latest call (``runtime.policy.ENGINES``: ``"numba"``,
        ``"llvm-O3"``, ``"llvm-O0"`` or ``"vm"``); None before any call."""
        return self._tier

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the background compiles started so far; True if they all succeeded.

        Only ``mode="auto"`` compiles in the background; the next call after a success runs the
        compiled kernel.
        """
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            if not job.done.wait(timeout):
                return False
        return all(job.state == "ready" for job in jobs)

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
        """The generated Python/Numba source (array inputs, scalar seed).

        For a graph of more than ``runtime.llvm_tier.LLVM_OPS`` ops the compiled tier runs the
        same nodes compiled by LLVM directly: ``llvm_source`` shows that IR.
        """
        from compiler.codegen.numba_source import generate

        return generate(self.adjoint, self.inputs, "a" * len(self.inputs) + "s", self.title)

    @property
    def llvm_source(self) -> str:
        """The LLVM IR of each entry (array inputs, scalar seed), one SSA value per node named
        after it: what the compiled tier runs for graphs of more than ``LLVM_OPS`` ops."""
        return self._llvm_module("a" * len(self.inputs) + "s").source

    # ------------------------------------------------------------ calling
    def __call__(self, *args, out: np.ndarray | None = None, **kwargs):
        """The value, with NumPy broadcasting over the inputs."""
        lay = arrange(bind(self.inputs, args, kwargs))
        module = self._module(lay, "s", "forward")
        value = _value_buffer(lay, out, self._pool.empty)
        _unalias(lay, out)
        self._run(module, "forward", lay.n, *_used(module, lay), value)
        return _shape_value(lay, value, out)

    def value_and_grad(self, *args, seed: Any = None, out: tuple | None = None, **kwargs):
        """``(value, {input: gradient})`` in one pass over memory.

        ``seed`` is the upstream gradient (default 1), broadcastable to the value's shape.
        ``out=(value_buffer, {input: buffer})`` reuses preallocated float64 arrays and returns them.
        """
        lay = arrange(bind(self.inputs, args, kwargs))
        seed_kind, seed_flat = arrange_seed(seed, lay.shape)
        module = self._module(lay, seed_kind, "value_and_grad")
        value_out, grads_out = _split_out(out)
        value = _value_buffer(lay, value_out, self._pool.empty)
        grads = _grad_buffers(lay, self.wrt, grads_out, self._pool.empty)
        _unalias(lay, value_out, *(grads_out or {}).values())
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
        module = self._module(lay, "s", "forward_save")
        value = self._pool.empty(max(lay.n, 1))
        saved = [self._pool.empty(max(lay.n, 1)) for _ in module.SAVED]
        self._run(module, "forward_save", lay.n, *_used(module, lay), value, *saved)
        # The caller may change its arrays before pulling back: keep the inputs the backward reads.
        kept = {n: _own(lay.flat[n]) for n in module.BACKWARD_READS}

        def pullback(cotangent: Any = None) -> Grads:
            seed_kind, seed_flat = arrange_seed(cotangent, lay.shape)
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

    # ------------------------------------------------------------ tiers
    def _module(self, lay: Layout, seed_kind: str, entry: str):
        """The module that runs ``entry`` now, as ``runtime.policy`` chooses."""
        kinds = "".join(lay.kinds[n] for n in self.inputs) + seed_kind
        if self.mode == "auto":
            module = self._auto(kinds, entry, lay.n)
        else:
            choice = policy.choose(self._stats, lay.n, self.mode, frozenset(), "idle")
            module = self._engine(choice.now, kinds)
        self._tier = _label(module, entry)
        return module

    def _uses_llvm(self) -> bool:
        """Whether the final engine is LLVM's rather than Numba's: for large graphs, and for
        graphs with sin or cos, which LLVM's code vectorises and Numba's calls one at a time."""
        return policy.final(self._stats) == "llvm-O3"

    def _llvm_module(self, kinds: str, optimise: bool | None = None):
        """LLVM's code for ``kinds``: by default the compiled tier's (O3 when LLVM is that
        tier); ``optimise=False`` for a stand-in, which must compile at once."""
        optimise = self._uses_llvm() if optimise is None else optimise
        with self._lock:
            if (kinds, optimise) not in self._llvm:
                from runtime.llvm_tier import LLVMModule

                self._llvm[kinds, optimise] = LLVMModule(
                    self.adjoint, self.inputs, kinds, self._key(kinds), self.title, optimise
                )
            return self._llvm[kinds, optimise]

    def _engine(self, name: str, kinds: str):
        """The module of engine ``name`` (``runtime.policy.ENGINES``) for ``kinds``."""
        if name == "vm":
            return self._instant_module(kinds)
        if name == "numba":
            background.import_numba()
            if kinds not in self._numba:  # the cache holds modules weakly: the kernel keeps its own
                self._numba[kinds] = cache.load_module(self._key(kinds), self._source_maker(kinds))
            return self._numba[kinds]
        return self._llvm_module(kinds, optimise=name == "llvm-O3")

    def _auto(self, kinds: str, entry: str, points: int):
        """``auto``: the final engine once it is ready (or on disk), else what the policy
        answers with while the final engine compiles in the background."""
        key, goal = (kinds, entry), policy.final(self._stats)
        with self._lock:
            if key not in self._final:  # the disk, looked at once per pattern
                self._final[key] = self._on_disk(kinds, entry)
            job = self._jobs.get(key)
            if self._final[key] is None and job is not None and job.state == "ready":
                self._final[key] = job.module
            if self._final[key] is not None:
                return self._final[key]
            o3 = self._llvm.get((kinds, True))
            ready = frozenset({"llvm-O3"} if o3 is not None and o3.loaded(entry) else ())
            state = "idle" if job is None else job.state
            choice = policy.choose(self._stats, points, "auto", ready, state)
            if choice.behind is not None:
                self._jobs[key] = background.submit(self._job(kinds, entry))
        if state == "failed":
            self._report(job)
        module = self._engine(choice.now, kinds)
        if choice.now == goal == "llvm-O3":  # waited for: it answers from now on
            module.compiled(entry)
            with self._lock:
                self._final[key] = module
        return module

    def _on_disk(self, kinds: str, entry: str):
        """The final engine's module if it is loaded or on disk, else None; LLVM's O3 code for
        ``entry`` is loaded too if it is on disk (it answers while Numba's kernel loads).

        Numba's kernel counts only once Numba is imported: importing it costs 0.3-0.5 s, which
        the background thread pays, loading the kernel from disk, while LLVM's code answers."""
        o3 = self._llvm_module(kinds, optimise=True)
        if o3.cached(entry) and self._uses_llvm():
            return o3
        if self._uses_llvm() or not background.numba_imported():
            return None
        background.import_numba()
        module = cache.cached_module(self._key(kinds))
        if module is not None and background.load_cached(module, entry):
            return module
        return None

    def _job(self, kinds: str, entry: str) -> background.Job:
        """The final engine's compile, for the background thread."""
        if self._uses_llvm():
            from runtime.llvm_tier import Job

            return Job(self._llvm_module(kinds), entry)
        key = self._key(kinds)
        return background.Job(key, background.on_this_thread(key, self._source_maker(kinds)), entry)

    def _report(self, job: background.Job) -> None:
        """Warn once, on the user's thread, that a background compile failed."""
        with self._lock:
            if id(job) in self._reported:
                return
            self._reported.add(id(job))
        warnings.warn(
            f"symgrad: compiling {job.entry} of {self.title!r} in the background failed "
            f"({type(job.error).__name__}: {job.error}); the {self._tier} engine keeps answering",
            RuntimeWarning,
            stacklevel=5,
        )

    def _instant_module(self, kinds: str):
        with self._lock:
            if kinds not in self._instant:
                from runtime.instant import InstantModule, machine

                machine()
                self._instant[kinds] = InstantModule(self.adjoint, self.inputs, kinds)
            return self._instant[kinds]

    def _key(self, kinds: str) -> str:
        """The cache key of this kernel's module for ``kinds`` (hashed once per kinds)."""
        if kinds not in self._keys:
            from compiler.codegen import numba_source

            split = repr(numba_source.SPLIT_LINES)
            parts = (self._graph_key, repr(self.inputs), repr(self.wrt), kinds, split)
            self._keys[kinds] = cache.cache_key(*parts)
        return self._keys[kinds]

    def _source_maker(self, kinds: str) -> Callable[[], str]:
        def make_source() -> str:
            from compiler.codegen import numba_source

            return numba_source.generate(self.adjoint, self.inputs, kinds, self.title)

        return make_source

    def _module_for(self, kinds: str):
        return self._engine(policy.final(self._stats), kinds)

    def _drop(self, module: ModuleType) -> None:
        """Forget a damaged Numba module wherever this kernel keeps it."""
        with self._lock:
            self._numba = {k: m for k, m in self._numba.items() if m is not module}
            self._final = {k: m for k, m in self._final.items() if m is not module}

    def _run(self, module, entry: str, n: int, *args) -> None:
        name = entry if n * self._ops >= PARALLEL_WORK else f"{entry}_serial"
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
            module = self._module_for(module.KINDS)
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


class Pool:
    """Output arrays handed out again once the caller has let them go (see ``POOL_MIN_BYTES``).

    An array is free when only the pool refers to it (CPython's reference count): whatever the
    caller still holds — the array, a view of it, a pullback's residuals — is never handed out
    again. Every array handed out is written whole by the kernel before the caller sees it.
    """

    def __init__(self) -> None:
        self._arrays: list[np.ndarray] = []
        self._lock = threading.Lock()

    def empty(self, n: int) -> np.ndarray:
        """A float64 array of ``n`` elements, contents undefined (as ``np.empty``)."""
        if n * 8 < POOL_MIN_BYTES:
            return np.empty(n)
        with self._lock:
            for array in self._arrays:
                if array.shape[0] == n and sys.getrefcount(array) == _FREE:
                    return array
            array = np.empty(n)
            if sum(a.nbytes for a in self._arrays) + array.nbytes <= POOL_BYTES:
                self._arrays.append(array)
            return array


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


def _value_buffer(lay: Layout, out: np.ndarray | None, empty=np.empty) -> np.ndarray:
    if out is None:
        return empty(max(lay.n, 1))
    return _check_buffer("the value", out, lay.shape) if lay.n else np.empty(1)


def _grad_buffers(lay: Layout, wrt: tuple[str, ...], out: dict | None, empty=np.empty) -> dict:
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
            flat = empty(lay.n)
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

"""The two entry points: ``trace`` (anything → Graph) and ``compile_gradient`` (→ Kernel)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from compiler.errors import InputError, ParseError, did_you_mean
from compiler.ir.graph import Graph, copy_nodes, gc_paused, prune

if TYPE_CHECKING:
    from runtime.hessian import HessianKernel, TensorHessianKernel
    from runtime.jacobian import JacobianKernel
    from runtime.kernel import Kernel

Source = Any  # str | sympy.Expr | Callable


def trace(
    source: Source, inputs: Sequence[str] | None = None, shapes: Mapping[str, Any] | None = None
) -> Graph:
    """The forward graph of text, a SymPy expression or a Python callable.

    ``shapes`` declares array inputs (``{"W": ("n", "m"), "x": ("m",)}``; undeclared inputs are
    scalars): the result is then a ``TensorGraph`` and the text may use ``@``, ``.T``, ``sum``...

    ``inputs`` fixes the input names and their order. The default: for text, order of first
    appearance; for SymPy (which reorders terms), names sorted naturally (x2 before x10); for a
    callable, its parameters. Names the expression uses but ``inputs`` lacks are an error.

    >>> print(trace("(x + y) * z"))
    t0 = x + y
    t1 = t0 * z
    return t1
    """
    if shapes is not None:
        return _trace_tensor(source, inputs, shapes)
    if isinstance(source, str):
        from compiler.frontend.text import parse

        graph = parse(source)
    elif _is_sympy(source):
        from compiler.frontend.sympy_expr import from_sympy

        graph = from_sympy(source)
        if inputs is None:  # SymPy reorders arguments, so "first appearance" means nothing: sort
            inputs = sorted(graph.inputs, key=_natural)
    elif callable(source):
        from compiler.frontend.tracing import trace_callable

        return prune(trace_callable(source, inputs))
    else:
        raise ParseError(f"cannot trace a {type(source).__name__}: give text, SymPy or a callable")
    return prune(_declare(graph, inputs)) if inputs is not None else prune(graph)


def _trace_tensor(source: Source, inputs: Sequence[str] | None, shapes: Mapping[str, Any]):
    """``trace`` for inputs with declared shapes: a pruned ``TensorGraph``."""
    from compiler.frontend.text import parse
    from compiler.frontend.tracing import trace_callable
    from compiler.ir.graph import copy_nodes
    from compiler.ir.shapes import declare
    from compiler.ir.tensor import TensorGraph, from_elementwise

    if not isinstance(shapes, Mapping):
        raise InputError(f"shapes must map input names to shapes, not {type(shapes).__name__}")
    declared = {str(name): declare(str(name), spec) for name, spec in shapes.items()}
    if isinstance(source, str):
        graph = parse(source, TensorGraph(declared))
    elif callable(source) and not _is_sympy(source):
        graph = trace_callable(source, inputs, TensorGraph(declared))
    else:
        graph = from_elementwise(trace(source, inputs), declared)
    names = list(graph.inputs) if inputs is None else list(inputs)
    extra = [n for n in graph.inputs if n not in names]
    if extra:
        raise InputError(f"the expression uses {extra}, which inputs={names} does not declare")
    _check_shape_keys(declared, names)
    out = TensorGraph(declared)  # declared inputs first, in order; only what the output needs
    for name in names:
        out.input(name)
    mapping = copy_nodes(graph, out, {}, keep=graph.reachable(graph.outputs))
    out.outputs = [mapping[o] for o in graph.outputs]
    return out


def _check_shape_keys(declared: Mapping[str, Any], names: list[str]) -> None:
    """A ``shapes`` key that names no input is a typo (``"X"`` for ``x``), not something to
    ignore: the input it meant would silently stay a scalar."""
    for key in declared:
        if key not in names:
            raise InputError(
                f"shapes names '{key}', which is not an input of the expression (its inputs "
                f"are {names}){did_you_mean(key, names)}"
            )


@gc_paused
def compile_gradient(
    source: Source,
    *,
    wrt: Sequence[str] | None = None,
    inputs: Sequence[str] | None = None,
    shapes: Mapping[str, Any] | None = None,
    fuse: bool | Sequence[str] | str = True,
    mode: str = "auto",
) -> Kernel:
    """A ``runtime.Kernel`` computing the value and gradients of ``source``.

    ``wrt`` names the inputs to differentiate (default: all). ``fuse`` selects gate fusion
    (``compiler.fuse``): True fuses every registered gate (``1/(1+exp(-x))`` becomes one stable
    ``sigmoid`` node), False keeps every primitive, a list fuses only the gates it names, "auto"
    also discovers gates. What fusion did is ``kernel.fusion``, a ``FusionReport``.

    ``mode`` picks the execution tier: "compiled" (the final engine for this expression),
    "instant" (a virtual machine compiled once, no wait per expression) or "auto" (the default:
    ``runtime/policy.py`` chooses per call, by the call's work and what is cached);
    ``kernel.tier`` names the engine that answered the latest call.

    ``shapes`` makes a tensor program (``trace``): its kernel is a ``runtime.TensorKernel``,
    whose elementwise regions run as fused Numba loops and whose matrix products go to BLAS.
    Without a seed, the gradient of a non-scalar output is that of the sum of its elements.
    """
    from compiler.gates import fuse as fuse_gates
    from runtime.kernel import Kernel

    _check_fuse(fuse)
    _check_mode(mode)
    graph = trace(source, inputs, shapes)
    wrt = _check_wrt(graph, wrt)
    fused, report = fuse_gates(graph, fuse, wrt=wrt)
    program = partial(plan, fused, wrt)
    if shapes is not None:
        from runtime.tensor_kernel import TensorKernel

        title = _title(source)
        second = partial(hvp_kernel, fused, wrt, title, mode)
        kernel = TensorKernel(fused, wrt, title, mode=mode, plan=program, second_order=second)
    else:
        title = _title(source)
        second = partial(hvp_kernel, fused, wrt, title, mode)
        hess = partial(_hessian_of, fused, title, mode)
        forward = partial(jvp_kernel, fused, wrt, title, mode)
        kernel = Kernel(
            fused,
            wrt,
            title,
            mode=mode,
            plan=program,
            second_order=second,
            hessian=hess,
            forward=forward,
        )
    kernel.fusion = report
    return kernel


@gc_paused
def compile_hessian(
    source: Source,
    *,
    wrt: Sequence[str] | None = None,
    inputs: Sequence[str] | None = None,
    shapes: Mapping[str, Any] | None = None,
    fuse: bool | Sequence[str] | str = True,
    mode: str = "auto",
) -> HessianKernel | TensorHessianKernel:
    """A ``runtime.HessianKernel``: its call gives ``(value, {input: gradient}, H)``, H the dense
    ``(len(wrt), len(wrt))`` Hessian of ``source`` (scalar inputs; exactly symmetric).

    ``wrt`` names the parameters (default: all inputs), which must be given as single numbers;
    the other inputs may be arrays of samples, and H is then the sum of the per-sample
    Hessians. Options as ``compile_gradient``'s.

    With ``shapes`` (a tensor program of scalar output) it is a ``runtime.TensorHessianKernel``:
    H is over the ``wrt`` inputs flattened (``wrt`` order, each in C order), one Hessian-vector
    product per column, symmetrised.
    """
    from compiler.gates import fuse as fuse_gates
    from runtime.hessian import TensorHessianKernel

    if shapes is not None:
        kernel = compile_gradient(
            source, wrt=wrt, inputs=inputs, shapes=shapes, fuse=fuse, mode=mode
        )
        return TensorHessianKernel(kernel, f"Hessian of {kernel.title}")
    _check_fuse(fuse)
    _check_mode(mode)
    graph = trace(source, inputs)
    wrt = _check_wrt(graph, wrt)
    fused, _ = fuse_gates(graph, fuse, wrt=wrt)
    title = _title(source)
    return hessian_kernel(fused, wrt, title, mode)


@gc_paused
def compile_jacobian(
    sources: Sequence[Source] | Source,
    *,
    wrt: Sequence[str] | None = None,
    inputs: Sequence[str] | None = None,
    by: str = "auto",
    fuse: bool | Sequence[str] | str = True,
    mode: str = "auto",
    shapes: Mapping[str, Any] | None = None,
) -> JacobianKernel:
    """A ``runtime.JacobianKernel`` of several outputs: its call gives ``(values, J)``, J of
    shape ``(..., len(sources), len(wrt))``, per point.

    ``sources`` is a list or tuple of expressions (text, SymPy or callables; a SymPy Matrix is
    read element by element, row by row) over shared inputs: by default the inputs in order of
    first appearance (sorted naturally if any source is SymPy). ``by`` builds the entries by
    ``"rows"`` (one reverse sweep per output), ``"columns"`` (one forward sweep per input) or
    ``"auto"``: rows when there are fewer outputs than ``wrt`` inputs, else columns. Options as
    ``compile_gradient``'s; tensor programs (``shapes=``) are not supported.
    """
    from compiler.gates import fuse as fuse_gates
    from compiler.passes.forward import jacobian
    from runtime.jacobian import JacobianKernel
    from runtime.kernel import Kernel

    if shapes is not None:
        raise NotImplementedError(
            "Jacobians of tensor programs (shapes=) are not supported yet: give a list of "
            "elementwise expressions, one per output"
        )
    _check_fuse(fuse)
    _check_mode(mode)
    sources = _sources(sources)
    graph = _merge([trace(s) for s in sources], inputs, any(_is_sympy(s) for s in sources))
    wrt = _check_wrt(graph, wrt)
    parts = [fuse_gates(_output(graph, i), fuse, wrt=wrt)[0] for i in range(len(sources))]
    fused = _merge(parts, graph.inputs)
    title = ", ".join(_title(s) for s in sources)
    title = title if len(title) <= 80 else title[:77] + "..."
    if by == "auto":
        by = "rows" if len(sources) < len(wrt) else "columns"
    program = jacobian(fused, wrt, by)
    kernel = Kernel(
        program, program.wrt, f"Jacobian of {title}", mode=mode, plan=partial(_given, program)
    )
    return JacobianKernel(kernel, graph.inputs, wrt, len(sources), by, title)


def _sources(sources: Any) -> list:
    """``compile_jacobian``'s outputs as a list: a list or tuple, or a SymPy Matrix's elements."""
    if _is_sympy(sources) and hasattr(sources, "shape"):
        return list(sources)
    if not isinstance(sources, (list, tuple)) or not sources:
        raise InputError(
            "compile_jacobian takes a non-empty list or tuple of expressions (one per output), "
            f"not {type(sources).__name__}"
        )
    return list(sources)


def _merge(graphs: list[Graph], inputs: Sequence[str] | None = None, natural: bool = False):
    """One graph of several outputs over shared inputs (``inputs``, or their first appearance,
    sorted naturally if ``natural``): each graph's output is one output."""
    names = list(dict.fromkeys(n for g in graphs for n in g.inputs))
    if inputs is None:
        inputs = sorted(names, key=_natural) if natural else names
    out = _declare(Graph._with_outputs(graphs[0], graphs[0].outputs), inputs)
    for g in graphs[1:]:
        extra = [n for n in g.inputs if n not in inputs]
        if extra:
            raise InputError(
                f"the expression uses {extra}, which inputs={list(inputs)} does not declare"
            )
        out.outputs.append(copy_nodes(g, out, {})[g.outputs[0]])
    return out


def _output(graph: Graph, i: int) -> Graph:
    """``graph`` with only its output ``i`` (pruned, every input kept)."""
    return prune(Graph._with_outputs(graph, [graph.outputs[i]]))


def _hessian_of(graph: Graph, title: str, mode: str, wrt: Sequence[str]) -> HessianKernel:
    """A ``HessianKernel`` of an already fused graph (what ``Kernel.scipy``'s ``hess`` runs)."""
    return hessian_kernel(graph, tuple(wrt), title, mode)


def hessian_kernel(graph: Graph, wrt: Sequence[str], title: str, mode: str) -> HessianKernel:
    """The ``HessianKernel`` of ``graph``'s one-pass Hessian program (``passes.hessian``)."""
    from compiler.passes.hessian import hessian
    from runtime.hessian import HessianKernel
    from runtime.kernel import Kernel
    from runtime.llvm_tier import REUSED_OPTIMISE_NODES

    plan = hessian(graph, wrt)
    program = plan.program
    kernel = Kernel(
        program,
        program.wrt,
        f"Hessian of {title}",
        mode=mode,
        plan=partial(_given, program),
        optimise_nodes=REUSED_OPTIMISE_NODES,  # an optimiser asks for one per iteration
    )
    return HessianKernel(kernel, graph.inputs, tuple(wrt), title, plan)


def hvp_kernel(graph: Graph, wrt: Sequence[str], title: str, mode: str) -> Kernel:
    """The kernel of ``graph``'s Hessian-vector product program (``passes.second_order``):
    inputs ``graph``'s then one direction per ``wrt`` input; its ``value_and_grad`` gives f and,
    by its ``wrt``, ``H·v`` then ``∇f``. A ``TensorKernel`` for a tensor program."""
    from compiler.ir.tensor import TensorGraph
    from compiler.passes.second_order import hvp
    from runtime.kernel import Kernel
    from runtime.llvm_tier import REUSED_OPTIMISE_NODES

    program = hvp(graph, wrt)
    if isinstance(graph, TensorGraph):
        from runtime.tensor_kernel import TensorKernel

        return TensorKernel(
            program, program.wrt, f"H·v of {title}", mode=mode, plan=partial(_given, program)
        )
    return Kernel(
        program,
        program.wrt,
        f"H·v of {title}",
        mode=mode,
        plan=partial(_given, program),
        optimise_nodes=REUSED_OPTIMISE_NODES,  # an optimiser calls it many times a point
    )


def _given(program: Graph) -> Graph:
    """A program planned already (a plain function: kernels pickle their ``plan``)."""
    return program


def jvp_kernel(graph: Graph, wrt: Sequence[str], title: str, mode: str) -> Kernel:
    """The kernel of ``graph``'s forward-mode program (``passes.forward.jvp``): inputs
    ``graph``'s, one tangent per ``wrt`` input, then the reader whose gradient is the
    directional derivative."""
    from compiler.passes.forward import jvp
    from runtime.kernel import Kernel

    program = jvp(graph, wrt)
    return Kernel(program, program.wrt, f"JVP of {title}", mode=mode, plan=partial(_given, program))


@gc_paused
def plan(graph: Graph, wrt: Sequence[str]):
    """The program a kernel runs: the forward + backward graph (an ``AdjointGraph``, or a
    ``TensorAdjointGraph`` for a tensor program). The runtime receives it planned, through a
    callable it calls on first use (a kernel whose code is all on disk never needs it), and never
    runs a compiler pass itself."""
    from compiler.passes.adjoint import adjoint

    return adjoint(graph, tuple(wrt))


def _declare(graph: Graph, inputs: Sequence[str]) -> Graph:
    """Re-home ``graph`` so its inputs are exactly ``inputs``, in that order."""
    inputs = list(inputs)
    extra = [n for n in graph.inputs if n not in inputs]
    if extra:
        raise InputError(f"the expression uses {extra}, which inputs={inputs} does not declare")
    if len(set(inputs)) != len(inputs):
        raise InputError(f"inputs {inputs} has duplicates")
    out = Graph()
    for name in inputs:
        out.input(name)
    mapping = copy_nodes(graph, out, {})
    out.outputs = [mapping[o] for o in graph.outputs]
    return out


def _natural(name: str) -> tuple:
    """Sort key putting x2 before x10, as SymPy's ``ordered`` does."""
    import re

    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def _is_sympy(obj: object) -> bool:
    # Classes SymPy makes at run time (sympy.Function("f")) have __module__ None: ask the MRO.
    return any((c.__module__ or "").startswith("sympy") for c in type(obj).__mro__)


#: A SymPy expression of more nodes than this is titled by its class and size, not its text:
#: SymPy's ``str`` is recursive (a deep expression raises RecursionError) and slow on big ones.
TITLE_NODES = 60


def _title(source: Source) -> str:
    """A short name for the kernel's repr and messages (never part of generated code), cheap
    whatever the source: SymPy's text only for small expressions (a bounded iterative count)."""
    if isinstance(source, str):
        return source if len(source) <= 80 else source[:77] + "..."
    if callable(source) and not _is_sympy(source):
        return str(getattr(source, "__name__", "function"))
    if _is_sympy(source) and not _small(source, TITLE_NODES):
        args = getattr(source, "args", ())
        return f"<SymPy {type(source).__name__} of {len(args)} terms>"
    try:
        text = str(source)
    except Exception:  # a SymPy printer failing on an odd object: the title is only a label
        text = f"<SymPy {type(source).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _small(expr: Any, limit: int) -> bool:
    """Whether ``expr`` has at most ``limit`` nodes: a walk that stops after ``limit``."""
    stack, seen = [expr], 0
    while stack:
        seen += 1
        if seen > limit:
            return False
        stack.extend(getattr(stack.pop(), "args", ()))
    return True


def _check_mode(mode: str) -> None:
    if mode not in ("auto", "instant", "compiled"):
        raise ValueError(f"mode must be 'auto', 'instant' or 'compiled', not {mode!r}")


def _check_wrt(graph: Graph, wrt: Sequence[str] | str | None) -> tuple[str, ...]:
    """``wrt`` as a tuple of distinct input names (default: all inputs)."""
    wrt = tuple(graph.inputs if wrt is None else ([wrt] if isinstance(wrt, str) else wrt))
    unknown = [w for w in wrt if w not in graph.inputs]
    if unknown or len(set(wrt)) != len(wrt):
        raise InputError(f"wrt {list(wrt)} must name distinct inputs among {list(graph.inputs)}")
    return wrt


def _check_fuse(fuse: object) -> None:
    if isinstance(fuse, (bool, str)) or (
        isinstance(fuse, (list, tuple)) and all(isinstance(f, str) for f in fuse)
    ):
        return
    raise TypeError(f"fuse must be True, False, 'auto' or a list of gate names, not {fuse!r}")

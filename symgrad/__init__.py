"""symgrad: compile a mathematical function into fast gradient kernels.

The one import users need: it re-exports the public API of symgrad's two packages, ``compiler``
(text, SymPy or a callable -> graph -> adjoint -> generated code) and ``runtime`` (the kernels).

>>> import symgrad
>>> k = symgrad.compile_gradient("(x + y) * z")
>>> k.value_and_grad(x=-2, y=5, z=-4)
(-12.0, {'x': -4.0, 'y': -4.0, 'z': 3.0})
"""

from __future__ import annotations

from pathlib import Path


def _check_not_shadowed() -> None:
    """Fail with a clear message if another distribution's ``compiler`` or ``runtime`` package
    (PyPI has one named ``compiler``) is imported in place of symgrad's own."""
    import importlib

    here = Path(__file__).resolve().parent.parent
    for name in ("compiler", "runtime"):
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            raise ImportError(f"symgrad cannot import its package '{name}': {e}") from e
        origin = Path(getattr(module, "__file__", None) or "").resolve().parent.parent
        if origin != here or not getattr(module, "__symgrad__", False):
            where = getattr(module, "__file__", None) or "a namespace package"
            raise ImportError(
                f"the package '{name}' imported from {where} is not symgrad's (expected it in "
                f"{here}): another installed distribution or a folder on sys.path shadows it; "
                f"uninstall that distribution or remove it from sys.path"
            )


_check_not_shadowed()

from compiler import (  # noqa: E402
    AdjointGraph,
    CompileError,
    DrawError,
    FusionReport,
    GateError,
    Graph,
    InputError,
    ParseError,
    ShapeError,
    SymgradError,
    __version__,
    adjoint,
    compile_gradient,
    compile_hessian,
    compile_jacobian,
    fuse,
    gate_names,
    ops,
    register_gate,
    trace,
    unregister_gate,
)
from runtime import GradcheckResult, Kernel, gradcheck  # noqa: E402
from runtime.hessian import HessianKernel, TensorHessianKernel  # noqa: E402
from runtime.jacobian import JacobianKernel  # noqa: E402
from runtime.tensor_kernel import TensorKernel  # noqa: E402

__all__ = [
    "AdjointGraph",
    "CompileError",
    "DrawError",
    "FusionReport",
    "GateError",
    "GradcheckResult",
    "HessianKernel",
    "JacobianKernel",
    "Graph",
    "InputError",
    "Kernel",
    "ParseError",
    "ShapeError",
    "SymgradError",
    "TensorHessianKernel",
    "TensorKernel",
    "__version__",
    "adjoint",
    "compare",
    "compile_gradient",
    "compile_hessian",
    "compile_jacobian",
    "draw",
    "explore",
    "fuse",
    "gate_names",
    "gradcheck",
    "ops",
    "register_gate",
    "trace",
    "unregister_gate",
    "viz",
]


def __getattr__(name: str):
    # symgrad.draw, symgrad.compare, symgrad.explore and symgrad.viz load the drawing code on first use.
    if name in ("draw", "compare", "explore", "viz"):
        import compiler

        return getattr(compiler, name)
    raise AttributeError(f"module 'symgrad' has no attribute {name!r}")

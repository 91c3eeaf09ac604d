"""symgrad's compiler: text, SymPy or a Python callable → graph → adjoint graph → Numba source.

>>> import compiler
>>> k = compiler.compile_gradient("(x + y) * z")
>>> k.value_and_grad(x=-2, y=5, z=-4)
(-12.0, {'x': -4.0, 'y': -4.0, 'z': 3.0})
"""

__version__ = "0.1.0"
__symgrad__ = True  # marks this package as symgrad's (symgrad/__init__.py checks it)

from compiler import ops  # noqa: E402
from compiler.api import compile_gradient, compile_hessian, compile_jacobian, trace  # noqa: E402
from compiler.errors import (  # noqa: E402
    CompileError,
    DrawError,
    GateError,
    InputError,
    ParseError,
    ShapeError,
    SymgradError,
)
from compiler.gates import fuse, gate_names, register_gate, unregister_gate  # noqa: E402
from compiler.ir.graph import Graph  # noqa: E402
from compiler.passes.adjoint import AdjointGraph, adjoint  # noqa: E402
from compiler.passes.fusion import FusionReport  # noqa: E402

__all__ = [
    "AdjointGraph",
    "CompileError",
    "DrawError",
    "FusionReport",
    "GateError",
    "Graph",
    "InputError",
    "ParseError",
    "ShapeError",
    "SymgradError",
    "adjoint",
    "compare",
    "compile_gradient",
    "compile_hessian",
    "compile_jacobian",
    "draw",
    "explore",
    "fuse",
    "gate_names",
    "ops",
    "register_gate",
    "trace",
    "unregister_gate",
]


def __getattr__(name: str):
    # compiler.draw, compiler.compare, compiler.explore and compiler.viz load the drawing code on first use.
    if name in ("draw", "compare", "explore", "viz"):
        import compiler.viz

        return compiler.viz if name == "viz" else getattr(compiler.viz, name)
    raise AttributeError(f"module 'compiler' has no attribute {name!r}")

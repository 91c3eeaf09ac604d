"""symgrad's compiler: text, SymPy or a Python callable → graph → adjoint graph → Numba source.

>>> import compiler
>>> k = compiler.compile_gradient("(x + y) * z")
>>> k.value_and_grad(x=-2, y=5, z=-4)
(-12.0, {'x': -4.0, 'y': -4.0, 'z': 3.0})
"""

__version__ = "0.1.0"

from compiler import ops  # noqa: E402
from compiler.api import compile_gradient, trace  # noqa: E402
from compiler.errors import (  # noqa: E402
    CompileError,
    GateError,
    InputError,
    ParseError,
    ShapeError,
    SymgradError,
)
from compiler.ir.gates import gate_names, register_gate, unregister_gate  # noqa: E402
from compiler.ir.graph import Graph  # noqa: E402
from compiler.passes.adjoint import AdjointGraph, adjoint  # noqa: E402
from compiler.passes.fusion import FusionReport, fuse  # noqa: E402

__all__ = [
    "AdjointGraph",
    "CompileError",
    "FusionReport",
    "GateError",
    "Graph",
    "InputError",
    "ParseError",
    "ShapeError",
    "SymgradError",
    "adjoint",
    "compile_gradient",
    "fuse",
    "gate_names",
    "ops",
    "register_gate",
    "trace",
    "unregister_gate",
]

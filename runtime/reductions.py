"""The NumPy helpers generated tensor kernels import (``from runtime.reductions import ...``):
defined with the op semantics in ``compiler.ir.reductions``, named here for the kernels."""

from compiler.ir.reductions import *  # noqa: F403
from compiler.ir.reductions import __all__  # noqa: F401

"""symgrad's runtime: compiled kernels, their on-disk cache, and the gradient checker."""

from compiler.errors import CompileError, InputError
from runtime.gradcheck import GradcheckResult, gradcheck
from runtime.kernel import Kernel

__all__ = ["CompileError", "GradcheckResult", "InputError", "Kernel", "gradcheck"]

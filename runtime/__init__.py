"""symgrad's runtime: compiled kernels, their on-disk cache, and the gradient checker."""

__symgrad__ = True  # marks this package as symgrad's (symgrad/__init__.py checks it)

from compiler.errors import CompileError, InputError
from runtime import elementwise as _elementwise  # noqa: F401 - ops' loops kept on disk
from runtime.gradcheck import GradcheckResult, gradcheck
from runtime.kernel import Kernel

__all__ = ["CompileError", "GradcheckResult", "InputError", "Kernel", "gradcheck"]

"""Compilation flags shared by generated kernels, and their serial twins."""

import types

from numba import njit

#: No fastmath: nan and inf must survive, as NumPy computes them.
FLAGS = dict(cache=True, error_model="numpy")


def serial(kernel):
    """The same loop compiled without threads, for calls too small to pay for them.

    It is a copy of the parallel kernel's Python function under another name, so Numba's on-disk
    cache keeps the two apart (``prange`` runs as ``range`` without ``parallel=True``).
    """
    py = kernel.py_func
    twin = types.FunctionType(
        py.__code__, py.__globals__, py.__name__ + "_serial", py.__defaults__, py.__closure__
    )
    twin.__qualname__ = py.__qualname__ + "_serial"
    twin.__module__ = py.__module__
    return njit(**FLAGS)(twin)

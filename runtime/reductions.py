"""NumPy helpers that generated tensor kernels call for the VJPs of reductions and broadcasts."""

from __future__ import annotations

import numpy as np

from runtime.inputs import sum_to

__all__ = ["sum_to", "ties"]


def ties(x: np.ndarray, extreme: np.ndarray, axes: int | tuple[int, ...]) -> np.ndarray:
    """Each element's share of a max/min reduction's gradient: 1/count where ``x`` equals the
    reduced ``extreme`` along ``axes``, 0 elsewhere (ties split equally, as JAX does)."""
    axes = (axes,) if isinstance(axes, int) else axes
    hit = x == np.expand_dims(extreme, axes)
    return hit / np.sum(hit, axis=axes, keepdims=True)

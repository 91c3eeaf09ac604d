"""Checking analytic gradients against central finite differences, as the lecture insists."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.inputs import bind


@dataclass
class GradcheckResult:
    """The worst entry: ``max_error`` = |a − n| / max(|a|, |n|) at ``worst`` = (input, index)."""

    max_error: float
    worst: tuple[str, tuple[int, ...]] | None
    analytic: float
    numeric: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_error <= self.tolerance

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        where = f"d/d{self.worst[0]}{list(self.worst[1])}" if self.worst else "no entries"
        return (
            f"gradcheck {verdict}: worst relative error {self.max_error:.2e} at {where} "
            f"(analytic {self.analytic:.10g}, numeric {self.numeric:.10g})"
        )


def relative_error(a: float, n: float) -> float:
    """|a − n| / max(|a|, |n|), and 0 when both are 0."""
    scale = max(abs(a), abs(n))
    return 0.0 if scale == 0 else abs(a - n) / scale


def gradcheck(
    kernel, *args, eps: float = 1e-6, tolerance: float = 1e-6, **kwargs
) -> GradcheckResult:
    """Compare ``kernel.grad`` with central differences of ``sum(kernel(...))``, entry by entry.

    The step is ``eps * max(1, |x|)``; nan/inf entries are skipped (no finite difference exists).
    Inputs are taken in float64 (float32 ones too: a 1e-6 step is below float32's resolution).
    """
    values = {n: v.astype(np.float64) for n, v in bind(kernel.inputs, args, kwargs).items()}
    grads = kernel.grad(**values)
    worst = GradcheckResult(0.0, None, 0.0, 0.0, tolerance)
    for name in kernel.wrt:
        x = values[name].copy()
        analytic = np.asarray(grads[name], dtype=float)
        for index in np.ndindex(x.shape):
            h = eps * max(1.0, abs(x[index]))
            numeric = (
                _total(kernel, values, name, x, index, h)
                - _total(kernel, values, name, x, index, -h)
            ) / (2 * h)
            a = float(analytic[index])
            if not (np.isfinite(a) and np.isfinite(numeric)):
                continue
            err = relative_error(a, numeric)
            if worst.worst is None or err > worst.max_error:
                worst = GradcheckResult(err, (name, index), a, numeric, tolerance)
    return worst


def _total(kernel, values, name, x, index, step) -> float:
    shifted = x.copy()
    shifted[index] += step
    return float(np.sum(kernel(**{**values, name: shifted})))

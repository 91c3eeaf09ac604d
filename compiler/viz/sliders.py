"""``explore(k, at=..., sliders=True)``: input sliders (ipywidgets) over the stepper.

Moving a slider recomputes through the compiled kernel (its ``value_and_grad``, shown above the
view) and rebuilds the view at the new point, so every label, caption and hover text changes.
This needs a live kernel and ipywidgets; without ipywidgets the static stepper is returned with
a note saying how to get the sliders.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

#: What the static stepper says when ipywidgets is missing.
NO_WIDGETS = (
    "Sliders need ipywidgets and a live Jupyter kernel (pip install ipywidgets): showing the "
    "static stepper."
)


def kernel_line(kernel: Any, at: Mapping[str, Any], digits: int = 4) -> str:
    """The compiled kernel's value and gradients at ``at``, as one line."""
    from compiler.viz.steps import text

    value, grads = kernel.value_and_grad(**{n: at[n] for n in kernel.inputs})
    parts = [f"f = {text(value, digits)}"]
    parts += [f"∂f/∂{n} = {text(g, digits)}" for n, g in grads.items()]
    return "compiled kernel: " + ", ".join(parts)


class Sliders:
    """The sliders, the compiled kernel's numbers and the view, as one widget (``widget``).
    ``explorer`` is the view at the sliders' point; ``sliders`` the FloatSlider of each scalar
    input; ``move(name=value, ...)`` sets sliders as a user would."""

    def __init__(self, kernel, at: Mapping[str, Any], build: Callable[[dict], Any], widgets):
        self.kernel = kernel
        self.build = build
        self.point = dict(at)
        self.sliders = {}
        for name in kernel.inputs:
            value = at[name]
            if np.ndim(value) != 0:
                continue  # a tensor input keeps its value
            v = float(value)
            span = max(1.0, 2 * abs(v))
            self.sliders[name] = widgets.FloatSlider(
                value=v, min=v - span, max=v + span, step=span / 100, description=name,
                continuous_update=False, readout_format=".2f",
            )  # fmt: skip
            self.sliders[name].observe(self._moved, names="value")
        self.check = widgets.HTML()
        self.view = widgets.HTML()
        note = "" if self.sliders else "This function has no scalar input to slide."
        self.widget = widgets.VBox(
            [widgets.HBox(list(self.sliders.values()), layout={"flex_flow": "row wrap"}),
             self.check, self.view]
        )  # fmt: skip
        self._note = note
        self._update()

    def _moved(self, change) -> None:
        for name, slider in self.sliders.items():
            self.point[name] = slider.value
        self._update()

    def _update(self) -> None:
        import html

        line = kernel_line(self.kernel, self.point)
        self.explorer = self.build(self.point)
        self.explorer.kernel_line = line
        self.explorer.note = self._note
        self.check.value = f"<code>{html.escape(line)}</code>"
        self.view.value = self.explorer.iframe()

    def move(self, **values: float) -> None:
        """Set sliders (each move recomputes, as dragging one does)."""
        for name, value in values.items():
            if name not in self.sliders:
                raise KeyError(f"no slider {name!r}; the sliders are {list(self.sliders)}")
            self.sliders[name].value = value

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return f"<Sliders {list(self.sliders)} over {self.explorer!r}>"


def with_sliders(kernel, at: Mapping[str, Any], build: Callable[[dict], Any]):
    """Sliders over the view, or the static view with a note when ipywidgets is missing."""
    try:
        import ipywidgets as widgets
    except ImportError:
        warnings.warn(f"symgrad: {NO_WIDGETS}", RuntimeWarning, stacklevel=3)
        explorer = build(dict(at))
        explorer.note = NO_WIDGETS
        return explorer
    return Sliders(kernel, at, build, widgets)

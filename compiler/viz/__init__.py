"""Pictures of graphs, in the lecture's style, with Graphviz (``dot``).

``draw`` (``compiler.draw``) renders a graph or kernel with values and gradients on its edges;
``compare`` (``compiler.compare``) puts the unfused and fused graphs of one function side by side
with their costs; ``explore`` (``compiler.explore``) steps through backprop gate by gate, fused
beside unfused, in a self-contained HTML page; ``source`` shows generated code highlighted. Graph, Kernel, TensorKernel and
FusionReport show themselves in Jupyter through ``compiler.viz.display``.
"""

from compiler.errors import DrawError
from compiler.viz.compare import Comparison, compare
from compiler.viz.display import Source, source
from compiler.viz.draw import draw
from compiler.viz.explore import Explorer, explore
from compiler.viz.render import Drawing

__all__ = ["Comparison", "DrawError", "Drawing", "Explorer", "Source", "compare", "draw",
           "explore", "source"]  # fmt: skip

"""AdjointGraph → Python source of Numba kernels, written to be read.

Each kernel is a *point* function — one line per node, named after the node, scalars in and out —
and a loop that maps it over the flattened, broadcast inputs (``prange`` for large arrays, ``range``
for small calls, so small calls don't pay for threads). Four entries:

- ``forward``: the value;
- ``value_and_grad``: value and gradients in a single pass over memory;
- ``forward_save``: the value plus the forward values the backward reads (the residuals);
- ``backward``: gradients from residuals, the inputs it reads and the seed.

An input's *kind* is ``"a"`` (a flat array indexed per element) or ``"s"`` (one scalar shared by
every element, whose gradient is summed over the loop).
"""

from __future__ import annotations

import keyword
import math
import re
from dataclasses import dataclass

from compiler.ir.graph import CONST, INPUT, SEED
from compiler.ir.registry import OPS
from compiler.passes.adjoint import AdjointGraph

ENTRIES = ("forward", "value_and_grad", "forward_save", "backward")
POINT_FLAGS = 'cache=True, error_model="numpy"'
LOOP_FLAGS = 'cache=True, error_model="numpy"'


class Namer:
    """Hands out unique, safe Python identifiers, whatever the names it is given."""

    def __init__(self, reserved: set[str]):
        self.taken = set(reserved)

    def claim(self, name: str) -> str:
        base = name if name.isidentifier() and name.isascii() else _sanitise(name)
        if keyword.iskeyword(base) or base.startswith("__"):
            base = "in_" + base.strip("_")
        ident, k = base, 1
        while ident in self.taken:
            ident, k = f"{base}_{k}", k + 1
        self.taken.add(ident)
        return ident


def _sanitise(name: str) -> str:
    ascii_name = re.sub(r"\W", "_", name.encode("ascii", "backslashreplace").decode())
    return "in_" + ascii_name.strip("_") if not ascii_name[:1].isalpha() else ascii_name


def literal(value: float, exponent: bool = False) -> str:
    """A constant as Numba source; integral exponents stay ints so ``x ** 2`` multiplies."""
    if math.isnan(value):
        return "math.nan"
    if math.isinf(value):
        return "math.inf" if value > 0 else "(-math.inf)"
    if exponent and value == int(value) and abs(value) <= 64:
        text = str(int(value))
    else:
        text = repr(value)
    return f"({text})" if text.startswith("-") else text


@dataclass
class Layout:
    """What the generated module's entries take and give, by input name."""

    inputs: tuple[str, ...]
    used: tuple[str, ...]  # inputs the forward reads
    backward_reads: tuple[str, ...]  # inputs the backward reads
    wrt: tuple[str, ...]
    saved: tuple[str, ...]  # display names of the residuals


class ModuleWriter:
    """Writes one module for one graph and one pattern of input kinds."""

    def __init__(self, adj: AdjointGraph, inputs: tuple[str, ...], kinds: str, title: str):
        self.adj, self.inputs, self.title = adj, inputs, title
        self.kind = dict(zip(inputs, kinds))
        self.seed_kind = kinds[len(inputs)]
        helpers = sorted({OPS[n.op].helper for n in adj.nodes if n.op in OPS} - {None})
        self.helpers = helpers
        reserved = {"math", "njit", "prange", "n", "i", "v", "out", *helpers}
        reserved.update(f"{e}_{s}" for e in ENTRIES for s in ("point", "parallel", "serial"))
        self.namer = Namer(reserved)
        self.ident = [""] * len(adj.nodes)
        input_nodes = {
            adj.nodes[i].value: i for i in range(len(adj.nodes)) if adj.nodes[i].op == INPUT
        }
        self.input_ident = {name: self.namer.claim(name) for name in inputs}
        for name, i in input_nodes.items():
            self.ident[i] = self.input_ident[name]
        for i, node in enumerate(adj.nodes):
            if node.op not in (INPUT, CONST):
                self.ident[i] = self.namer.claim(adj.names[i])
        self.layout = self._layout(input_nodes)

    def _layout(self, input_nodes) -> Layout:
        adj = self.adj
        fwd_live = adj.reachable(adj.outputs[:1])
        bwd_reads = {a for i in adj.backward_nodes() for a in adj.nodes[i].args}
        bwd_reads.update(adj.outputs[1:])
        return Layout(
            inputs=self.inputs,
            used=tuple(n for n in self.inputs if n in input_nodes and fwd_live[input_nodes[n]]),
            backward_reads=tuple(n for n in self.inputs if input_nodes.get(n) in bwd_reads),
            wrt=adj.wrt,
            saved=tuple(adj.names[i] for i in adj.saved),
        )

    # ----------------------------------------------------------------- text
    def operand(self, i: int, exponent: bool = False) -> str:
        node = self.adj.nodes[i]
        return literal(node.value, exponent) if node.op == CONST else self.ident[i]

    def node_line(self, i: int) -> str:
        node = self.adj.nodes[i]
        spec = OPS[node.op]
        ops = {
            k: self.operand(a, exponent=(node.op == "pow" and k == "b"))
            for k, a in zip("ab", node.args)
        }
        return f"    {self.ident[i]} = {spec.code.format(**ops)}"

    def body(self, nodes) -> list[str]:
        lines = []
        for i in nodes:
            if i == self.adj.n_forward and lines:
                lines.append("    # backward: upstream gradient x local gradient, summed at forks")
            lines.append(self.node_line(i))
        return lines

    def point(self, entry: str, params: list[int], outputs: list[int]) -> list[str]:
        """One scalar function: ``params`` in, ``outputs`` out, the live nodes between them."""
        adj = self.adj
        given = set(params)
        live = [False] * len(adj.nodes)
        for o in outputs:
            live[o] = True
        for i in range(len(adj.nodes) - 1, -1, -1):  # stop at the given values
            if live[i] and i not in given:
                for a in adj.nodes[i].args:
                    live[a] = True
        nodes = [
            i
            for i in range(len(adj.nodes))
            if live[i] and i not in given and adj.nodes[i].op not in (INPUT, CONST, SEED)
        ]
        args = ", ".join(self.ident[p] for p in params)
        ret = ", ".join(self.operand(o) for o in outputs)
        return [
            f"@njit({POINT_FLAGS})",
            f"def {entry}_point({args}):",
            *self.body(nodes),
            f"    return {ret}" + ("," if len(outputs) == 1 and entry != "forward" else ""),
            "",
        ]

    def loop(
        self, entry: str, ins: list[tuple[str, str]], outs: list[tuple[str, str]], parallel: bool
    ) -> list[str]:
        """Map the point function over the flat index: ``ins`` and ``outs`` are (ident, kind)."""
        variant = "parallel" if parallel else "serial"
        params = ["n", *(a for a, _ in ins), *(b for b, _ in outs)]
        call_args = ", ".join(f"{a}[i]" if k == "a" else a for a, k in ins)
        lines = [
            f"@njit({'parallel=True, ' if parallel else ''}{LOOP_FLAGS})",
            f"def {entry}_{variant}({', '.join(params)}):",
        ]
        lines += [f"    {b}_sum = 0.0" for b, k in outs if k == "s"]
        lines += [
            f"    for i in {'prange' if parallel else 'range'}(n):",
            f"        v = {entry}_point({call_args})",
        ]
        if entry == "forward":
            lines.append(f"        {outs[0][0]}[i] = v")
        else:
            for k, (b, kind) in enumerate(outs):
                lines.append(
                    f"        {b}[i] = v[{k}]" if kind == "a" else f"        {b}_sum += v[{k}]"
                )
        lines += [f"    {b}[0] = {b}_sum" for b, k in outs if k == "s"]
        return lines + [""]

    # ----------------------------------------------------------------- module
    def module(self) -> str:
        adj, lay = self.adj, self.layout
        idx = {n.value: i for i, n in enumerate(adj.nodes) if n.op == INPUT}
        seed = next((i for i, n in enumerate(adj.nodes) if n.op == SEED), None)
        used = [idx[n] for n in lay.used]
        bwd_in = [idx[n] for n in lay.backward_reads]
        seed_params = [seed] if seed is not None else []
        value, grads = adj.outputs[0], adj.outputs[1:]

        def ins(names):
            return [(self.input_ident[n], self.kind[n]) for n in names]

        seed_in = [(self.ident[seed], self.seed_kind)] if seed is not None else []
        grad_outs = [(f"g_{self.input_ident[w]}", self.kind[w]) for w in lay.wrt]
        saved_outs = [(self.ident[s], "a") for s in adj.saved]
        out = [("out", "a")]
        specs = {
            "forward": (used, [value], ins(lay.used), out),
            "value_and_grad": (
                used + seed_params,
                [value, *grads],
                ins(lay.used) + seed_in,
                out + grad_outs,
            ),
            "forward_save": (used, [value, *adj.saved], ins(lay.used), out + saved_outs),
            "backward": (
                list(adj.saved) + bwd_in + seed_params,
                grads,
                saved_outs + ins(lay.backward_reads) + seed_in,
                grad_outs,
            ),
        }
        lines = [
            f'"""symgrad kernels for {self.title!r} (generated: edit the graph, not this file)."""',
            "",
            "import math",
            "",
            "from numba import njit, prange",
            *([f"from runtime.scalar import {', '.join(self.helpers)}"] if self.helpers else []),
            "",
            f"INPUTS = {lay.inputs!r}",
            f"USED = {lay.used!r}",
            f"BACKWARD_READS = {lay.backward_reads!r}",
            f"WRT = {lay.wrt!r}",
            f"SAVED = {lay.saved!r}",
            f"SEEDED = {seed is not None}",
            f"KINDS = {''.join(self.kind[n] for n in self.inputs) + self.seed_kind!r}",
            "",
        ]
        for entry, (params, outputs, loop_ins, loop_outs) in specs.items():
            if entry == "backward" and not grads:
                continue
            lines += self.point(entry, params, outputs)
            lines += self.loop(entry, loop_ins, loop_outs, parallel=True)
            lines += self.loop(entry, loop_ins, loop_outs, parallel=False)
        return "\n".join(lines).rstrip() + "\n"


def generate(adj: AdjointGraph, inputs: tuple[str, ...], kinds: str, title: str = "") -> str:
    """Source of the kernel module for ``adj`` with the given input kinds (plus the seed's)."""
    if len(kinds) != len(inputs) + 1 or set(kinds) - {"a", "s"}:
        raise ValueError(f"kinds must be one of 'a'/'s' per input plus the seed: {kinds!r}")
    return ModuleWriter(adj, inputs, kinds, title).module()

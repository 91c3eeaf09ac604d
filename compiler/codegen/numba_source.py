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
    """A constant as Numba source; integral exponents stay ints so ``x ** 2`` multiplies.

    Only non-negative ones: Numba's integer power raises ``ZeroDivisionError`` for ``0.0 ** -2``
    whatever the error model, where NumPy gives ``inf``; a float exponent calls ``pow``, which does.
    """
    if math.isnan(value):
        return "math.nan"
    if math.isinf(value):
        return "math.inf" if value > 0 else "(-math.inf)"
    if exponent and value == int(value) and 0 <= value <= 64:
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
        helpers = sorted({h for n in adj.nodes if n.op in OPS for h in OPS[n.op].helpers})
        self.helpers = helpers
        reserved = {"math", "njit", "prange", "FLAGS", "serial", "n", "i", "out", *helpers}
        reserved.update(ENTRIES)
        reserved.update(f"{e}_serial" for e in ENTRIES)
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
        self.indexed: set[int] = set()

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
        if node.op == CONST:
            return literal(node.value, exponent)
        return f"{self.ident[i]}[i]" if i in self.indexed else self.ident[i]

    def node_line(self, i: int) -> str:
        node = self.adj.nodes[i]
        spec = OPS[node.op]
        ops = {
            k: self.operand(a, exponent=(node.op == "pow" and k == "b"))
            for k, a in zip("ab", node.args)
        }
        line = f"        {self.ident[i]} = {spec.code.format(**ops)}"
        note = self.adj.notes.get(i)  # the subgraph a fused gate replaced (passes/fusion.py)
        return f"{line}  # fused: {note.format(**ops)}" if note else line

    def kernel(
        self,
        entry: str,
        given: list[tuple[int, str]],
        outputs: list[tuple[int, str]],
        results: list[str],
    ) -> list[str]:
        """One loop over the flat index: ``given`` (node, kind) in, ``outputs`` written to the
        ``results`` buffers (kind "s": summed, as a scalar input's gradient is)."""
        adj = self.adj
        self.indexed = {g for g, kind in given if kind == "a"}
        given_nodes = {g for g, _ in given}
        live = [False] * len(adj.nodes)
        for o, _ in outputs:
            live[o] = True
        for i in range(len(adj.nodes) - 1, -1, -1):  # stop at the given values
            if live[i] and i not in given_nodes:
                for a in adj.nodes[i].args:
                    live[a] = True
        body, backward = [], False
        for i, node in enumerate(adj.nodes):
            if not live[i] or i in given_nodes or node.op in (INPUT, CONST, SEED):
                continue
            if i >= adj.n_forward and not backward and entry != "backward":
                body.append(
                    "        # backward: upstream gradient x local gradient, summed at forks"
                )
                backward = True
            body.append(self.node_line(i))
        sums = {r: self.namer.claim(f"{r}_sum") for r, (_, k) in zip(results, outputs) if k == "s"}
        stores = [
            f"        {sums[r]} += {self.operand(o)}"
            if r in sums
            else f"        {r}[i] = {self.operand(o)}"
            for r, (o, _) in zip(results, outputs)
        ]
        params = ["n", *(self.ident[g] for g, _ in given), *results]
        return [
            "@njit(parallel=True, **FLAGS)",
            f"def {entry}({', '.join(params)}):",
            *(f"    {total} = 0.0" for total in sums.values()),
            "    for i in prange(n):",
            *body,
            *stores,
            *(f"    {r}[0] = {total}" for r, total in sums.items()),
            "",
            "",
            f"{entry}_serial = serial({entry})",
            "",
            "",
        ]

    # ----------------------------------------------------------------- module
    def module(self) -> str:
        adj, lay = self.adj, self.layout
        idx = {n.value: i for i, n in enumerate(adj.nodes) if n.op == INPUT}
        seed = next((i for i, n in enumerate(adj.nodes) if n.op == SEED), None)
        value, grads = adj.outputs[0], adj.outputs[1:]

        def ins(names):
            return [(idx[n], self.kind[n]) for n in names]

        seed_in = [(seed, self.seed_kind)] if seed is not None else []
        saved = [(s, "a") for s in adj.saved]
        grad_outs = [(g, self.kind[w]) for g, w in zip(grads, lay.wrt)]
        grad_names = [self.namer.claim(f"g_{self.input_ident[w]}") for w in lay.wrt]
        saved_names = [self.namer.claim(f"saved_{self.ident[s]}") for s in adj.saved]
        out = "out"
        specs = {
            "forward": (ins(lay.used), [(value, "a")], [out]),
            "value_and_grad": (
                ins(lay.used) + seed_in,
                [(value, "a"), *grad_outs],
                [out, *grad_names],
            ),
            "forward_save": (ins(lay.used), [(value, "a"), *saved], [out, *saved_names]),
            "backward": (saved + ins(lay.backward_reads) + seed_in, grad_outs, grad_names),
        }
        lines = [
            f'"""symgrad kernels for {self.title!r} (generated: edit the graph, not this file)."""',
            "",
            "import math",
            "",
            "from numba import njit, prange",
            "",
            "from runtime.jit import FLAGS, serial",
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
            "",
        ]
        for entry, (given, outputs, results) in specs.items():
            if entry == "backward" and not grads:
                continue
            lines += self.kernel(entry, given, outputs, results)
        return "\n".join(lines).rstrip() + "\n"


def generate(adj: AdjointGraph, inputs: tuple[str, ...], kinds: str, title: str = "") -> str:
    """Source of the kernel module for ``adj`` with the given input kinds (plus the seed's)."""
    if len(kinds) != len(inputs) + 1 or set(kinds) - {"a", "s"}:
        raise ValueError(f"kinds must be one of 'a'/'s' per input plus the seed: {kinds!r}")
    return ModuleWriter(adj, inputs, kinds, title).module()

"""A kernel entry as a program for the virtual machine: an instruction array over registers.

The entry's nodes are the very ones the Numba writer prints (``compiler.codegen.entries``), in the
same order, so both tiers compute the same thing op for op. Registers are recycled as soon as
their value is dead, inputs and constants are loaded just before their first use, and outputs are
stored as soon as they are computed, so the register file holds only what is live at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from compiler.codegen.entries import Entry, block_length
from compiler.ir.graph import CONST, Graph, gc_paused
from compiler.ir.lowering import LoweringError
from compiler.ir.registry import OPS
from runtime.instant.vm_source import PLACEHOLDERS, opcodes, table_key, width

if TYPE_CHECKING:
    from compiler.passes.adjoint import AdjointGraph

#: The register file of one block is at most this many doubles (2 MiB: it stays in cache), with
#: MAX_BLOCK elements per block (numexpr's choice) unless that is too many for the registers.
REGISTER_BUDGET = 1 << 18
MIN_BLOCK, MAX_BLOCK = 32, 512


@dataclass(frozen=True)
class Program:
    """One entry for the machine, and how the entry's arguments feed it.

    The entry is called with its given values then its output buffers (``Entry.given`` then
    ``Entry.outputs``); ``arrays`` lists the positions of those whose addresses the machine reads
    (``LOAD_ARRAY``/``STORE`` operand k is ``arrays[k]``), ``scalars`` the positions of scalar
    inputs (``LOAD_SCALAR`` operands 0, 1, ...; the constants follow), ``sums`` the positions of
    the one-element buffers that receive the machine's totals.
    """

    code: np.ndarray
    n_regs: int
    block: int
    constants: tuple[float, ...]
    arrays: tuple[int, ...]
    scalars: tuple[int, ...]
    sums: tuple[int, ...]
    table: str = ""  # the op table its op codes number (``vm_source.table_key``)


class _Emitter:
    """Instructions, registers and constants, handed out as the program is written."""

    def __init__(self, n_scalars: int) -> None:
        self.codes = opcodes()
        self.code: list[list[int]] = []
        self.free: list[int] = []
        self.n_regs = 0
        self.n_scalars = n_scalars  # LOAD_SCALAR operands below this are scalar inputs
        self.constants: dict[str, tuple[int, float]] = {}  # exact text -> (operand, value)
        self.expanding: list[str] = []  # gates being expanded, innermost last

    def allocate(self) -> int:
        return self.free.pop() if self.free else self.new_register()

    def new_register(self) -> int:
        self.n_regs += 1
        return self.n_regs - 1

    def emit(self, op: str, *fields: int) -> None:
        self.code.append([self.codes[op], *fields])

    def constant(self, value: float) -> int:
        """A new register holding ``value``."""
        key = value.hex() if value == value else "nan"
        operand = self.constants.setdefault(key, (self.n_scalars + len(self.constants), value))[0]
        r = self.allocate()
        self.emit("LOAD_SCALAR", r, operand)
        return r

    def op(self, name: str, operands: list[int]) -> int:
        """A new register holding ``name(*operands)``; a gate the machine lacks is expanded."""
        if name in self.codes:
            r = self.allocate()
            self.emit(name, r, *operands)
            return r
        spec = OPS.get(name)
        if spec is None or spec.origin == "builtin" or name in self.expanding:
            why = "its stable form uses itself" if name in self.expanding else ""
            raise LoweringError(name, "instant", why)
        self.expanding.append(name)
        try:
            return self.expand(_template(name), operands)
        finally:
            self.expanding.pop()

    def expand(self, template: Graph, operands: list[int]) -> int:
        """Emit ``template`` (a graph over placeholders a, b) on the operands' registers."""
        reg = {template.input(p): r for p, r in zip(PLACEHOLDERS, operands) if p in template.inputs}
        mine: set[int] = set()  # registers of the template's own values, freed when dead
        steps = list(template.op_nodes())
        last = {a: k for k, t in enumerate(steps) for a in template.nodes[t].args}
        for k, t in enumerate(steps):
            node = template.nodes[t]
            for a in node.args:
                if a not in reg:  # a constant
                    reg[a] = self.constant(template.nodes[a].value)
                    mine.add(a)
            reg[t] = self.op(node.op, [reg[a] for a in node.args])
            mine.add(t)
            for a in set(node.args):
                if a in mine and last[a] == k:
                    self.free.append(reg[a])
        result = template.outputs[0]
        if result in mine:
            return reg[result]
        if result in reg:  # an operand itself: copy it (x * 1 keeps nan, inf and -0)
            return self.op("mul", [reg[result], self.constant(1.0)])
        return self.constant(template.nodes[result].value)


def constants_at(values: tuple[float, ...], dtype: str) -> tuple[float, ...]:
    """A program's constants for a ``dtype`` machine: at float32 each rounded once to float32
    (beyond its range ±inf, as NumPy rounds), kept as the Python floats equal to those float32
    values so that passing them to the machine rounds nothing again and warns of nothing."""
    if dtype == "float64" or not values:
        return values
    with np.errstate(over="ignore"):
        return tuple(np.array(values, dtype=np.float64).astype(np.float32).tolist())


def _template(name: str) -> Graph:
    """A gate the machine lacks, as the graph its lowering computes (``lower_graph``'s)."""
    graph = getattr(OPS[name].lower, "graph", None)
    if graph is None:
        raise LoweringError(name, "instant", "a gate without the graph of its stable form")
    return graph


@gc_paused
def compile_program(adj: AdjointGraph, entry: Entry) -> Program:
    """The machine program of ``entry``, for the op table as it is now."""
    nodes = adj.nodes
    n_given = len(entry.given)
    given = {node: (pos, kind) for pos, (node, kind) in enumerate(entry.given)}
    arrays = [pos for pos, (_, kind) in enumerate(entry.given) if kind == "a"]
    scalars = [pos for pos, (_, kind) in enumerate(entry.given) if kind == "s"]
    stores: dict[int, list[tuple[str, int]]] = {}  # node -> [(instruction, operand)]
    sums: list[int] = []
    for q, (node, kind) in enumerate(entry.outputs):
        if kind == "a":
            arrays.append(n_given + q)
            stores.setdefault(node, []).append(("STORE", len(arrays) - 1))
        else:
            sums.append(n_given + q)
            stores.setdefault(node, []).append(("SUM", len(sums) - 1))
    array_index = {pos: k for k, pos in enumerate(arrays)}
    scalar_index = {pos: k for k, pos in enumerate(scalars)}
    last_use = {a: pos for pos, i in enumerate(entry.nodes) for a in nodes[i].args}
    out = _Emitter(len(scalars))
    reg: dict[int, int] = {}

    def load(node: int) -> None:
        if node not in given:
            assert nodes[node].op == CONST, nodes[node]
            reg[node] = out.constant(nodes[node].value)
            return
        reg[node] = r = out.allocate()
        pos, kind = given[node]
        if kind == "a":
            out.emit("LOAD_ARRAY", r, array_index[pos])
        else:
            out.emit("LOAD_SCALAR", r, scalar_index[pos])

    def finish(node: int) -> None:
        """Store ``node`` where the outputs want it; free its register if nothing reads it."""
        for instruction, operand in stores.get(node, ()):
            out.emit(instruction, reg[node], operand)
        if node not in last_use:
            out.free.append(reg.pop(node))

    computed = set(entry.nodes)
    for node in stores:  # outputs that are inputs, residuals or constants
        if node not in computed:
            load(node)
            finish(node)
    codes, free = out.codes, out.free
    for pos, i in enumerate(entry.nodes):  # the hot loop of the instant tier's set-up
        op, args = nodes[i].op, nodes[i].args
        for a in args:
            if a not in reg:
                load(a)
        operands = [reg[a] for a in args]
        code = codes.get(op)
        if code is not None:  # an operand dead here may hold the result (elementwise)
            for a in args:
                if last_use[a] == pos and a in reg:
                    free.append(reg.pop(a))
            reg[i] = r = free.pop() if free else out.new_register()
            out.code.append([code, r, *operands])
        else:
            reg[i] = out.op(op, operands)
            for a in args:
                if last_use[a] == pos and a in reg:
                    free.append(reg.pop(a))
        finish(i)

    columns = width()
    code = np.zeros((len(out.code), columns), dtype=np.int64)
    if out.code:
        code[:] = [fields + [0] * (columns - len(fields)) for fields in out.code]
    return Program(
        code=code,
        n_regs=max(out.n_regs, 1),
        block=block_length(out.n_regs, REGISTER_BUDGET, MIN_BLOCK, MAX_BLOCK),
        constants=tuple(value for _, value in out.constants.values()),
        arrays=tuple(arrays),
        scalars=tuple(scalars),
        sums=tuple(sums),
        table=table_key(),
    )

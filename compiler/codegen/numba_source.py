"""AdjointGraph → Python source of Numba kernels, written to be read.

Each entry (see ``entries``) is a loop over the flattened, broadcast inputs whose body has one line
per node, named after the node (``prange`` for large arrays, a ``range`` twin for small calls, so
small calls don't pay for threads):

- ``forward``: the value;
- ``value_and_grad``: value and gradients in a single pass over memory;
- ``forward_save``: the value plus the forward values the backward reads (the residuals);
- ``backward``: gradients from residuals, the inputs it reads and the seed.

A node line is Python's operator for plain arithmetic (``+ - * /``, unary ``-``, ``x ** 3``)
and otherwise a call of its op's intrinsic (``from runtime.numba_ops import exp, sigmoid``):
the op's one lowering (``compiler.ir.lowering``), inlined into the loop by Numba.

**float32.** A module written for ``dtype="float32"`` has float32 signatures and outputs, and its
constants are module-level float32 numbers (``c1 = np.float32(0.1)``): a Python float literal is a
float64 in Numba and would promote the whole line to float64. A gradient summed over the elements
(that of a single-number input) accumulates in float64 and is rounded to float32 once, at the end:
within half a float32 ulp of the exact sum, where NumPy's float32 pairwise sum is off by up to
about one (0.66 ulp measured over 10^6 uniform numbers) and a float32 running sum by hundreds.
float64 modules are written as they always were.

**Bounded functions.** Numba's compile time grows faster than linearly with the size of one
function (a ``prange`` body most of all: 300 lines ≈ 2 s, 1,000 ≈ 8 s, 3,000 ≈ 43 s). An entry with
more than ``SPLIT_LINES`` node lines is therefore written as *segments*: plain functions of at most
``SPLIT_LINES`` lines, each a loop over one block of elements, called in turn by a parallel loop
over blocks. A value computed in one segment and read in a later one passes through the block's
temporaries (``temps[slot, j]``, rows reused once their value is dead). Every function then has a
bounded size, so compiling grows linearly with the node count; small entries stay one loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from compiler.codegen import rows
from compiler.codegen.audit import (
    NUMBA_DOCSTRING,
    Namer,
    callable_name,
    check_python,
    comment,
    data,
)
from compiler.codegen.entries import ENTRIES, Entry, Layout, block_length, check_kinds, plan
from compiler.ir.graph import CONST, INPUT, LEAVES
from compiler.ir.lowering import LoweringError
from compiler.ir.registry import OPS
from compiler.passes.adjoint import AdjointGraph

__all__ = ["ENTRIES", "INFIX", "SPLIT_LINES", "Layout", "Namer", "Calls", "generate", "literal"]

#: Node lines per function before an entry is split into segments. Measured (benchmarks/RESULTS.md,
#: "Compile latency and scale": a 2,000-node chain and a 1,800-node random DAG, value_and_grad,
#: 5,600 nodes, CPU seconds): 125 lines 48/64 s, 250 lines 40/51 s, 500 lines 44/57 s, 1,000
#: lines 94/86 s. Smaller segments pay Numba's per-function overhead and more traffic through the
#: temporaries; larger ones its super-linear growth.
SPLIT_LINES = 250

#: Temporaries per block, in doubles: the block length is this divided by the number of rows, so
#: the block's working set stays in cache, within [MIN_BLOCK, MAX_BLOCK] elements (at least 64, so
#: Python's calls of the segments, about a microsecond each, stay small against their loops).
TEMP_BUDGET = 1 << 16
MIN_BLOCK, MAX_BLOCK = 64, 512


def literal(value: float) -> str:
    """A constant as Numba source: a float literal (whole exponents of ``**``: ``Calls.text``)."""
    if math.isnan(value):
        return "math.nan"
    if math.isinf(value):
        return "math.inf" if value > 0 else "(-math.inf)"
    text = repr(value)
    return f"({text})" if text.startswith("-") else text


#: Plain arithmetic stays Python's infix operators in generated source: Numba compiles each to the
#: one IEEE instruction the op's lowering would write (with ``error_model="numpy"``, 1/0 = inf).
INFIX = {"add": "{a} + {b}", "sub": "{a} - {b}", "mul": "{a} * {b}", "div": "{a} / {b}"}
INFIX["neg"] = "-{a}"


def typed_constant(value: float, dtype: str, constants: dict[str, str], namer: Namer) -> str:
    """``value`` in code of ``dtype``: its literal in float64; in float32 the name of a
    module-level float32 number (``constants``: literal -> name, one per value)."""
    text = literal(value)
    if dtype == "float64":
        return text
    if text not in constants:
        constants[text] = namer.claim(f"c{len(constants) + 1}")
    return constants[text]


class Calls:
    """How generated Numba source computes each op, and what it imports for that: plain
    arithmetic (``INFIX``) as Python's operators, every other op as a call of its intrinsic
    (``runtime.numba_ops``: the op's lowering, inlined). An op without a lowering is a
    ``LoweringError`` naming it and the tier.

    One exception, measured: a power with a whole constant exponent in [0, 64] stays Numba's
    ``x ** 3``, multiplications (as before the lowerings; ``pow``'s lowering calls the C
    library's pow there, ~100x slower in a loop). Negative ones go through the lowering: Numba's
    integer power raises ``ZeroDivisionError`` for ``0.0 ** -2``, where NumPy gives ``inf``.
    """

    def __init__(self, ops=()):
        self.used: set[str] = set()  # callable names imported from runtime.numba_ops
        for op in set(ops):
            self.check(op)

    @staticmethod
    def check(op: str) -> None:
        """``LoweringError`` unless the Numba tier can compute ``op``."""
        spec = OPS.get(op)
        if op not in INFIX and (spec is None or spec.lower is None):
            raise LoweringError(op, "numba", "" if spec else "not in the op table")

    def text(self, op: str, operands: list[str], exponent: float | None = None) -> str:
        """``op`` over the operands' text; ``exponent`` is pow's constant exponent, if any."""
        if op in INFIX:
            return INFIX[op].format(**dict(zip("ab", operands)))
        if op == "pow" and exponent is not None and exponent == int(exponent):
            if 0 <= exponent <= 64:
                return f"{operands[0]} ** {int(exponent)}"
        self.check(op)
        name = callable_name(op)
        self.used.add(name)
        return f"{name}({', '.join(operands)})"

    def imports(self) -> list[str]:
        names = sorted(self.used)
        return [f"from runtime.numba_ops import {', '.join(names)}"] if names else []


def exponent_of(nodes, node) -> float | None:
    """A ``pow`` node's constant exponent, else None."""
    if node.op != "pow" or nodes[node.args[1]].op != CONST:
        return None
    return nodes[node.args[1]].value


# Names the generated code uses itself; node and input names never take them.
_RESERVED = {"math", "np", "njit", "prange", "FLAGS", "serial", "n", "i", "j", "lo", "m", "out"}
_RESERVED |= {"block", "temps", "partial", "parallel", "run_blocks"}
_RESERVED |= {"blk", "blocks", "parts", "row", "rows", "get_thread_id"}
_RESERVED |= {"BLOCK", "THREADS", "add_lanes", "in_order"}
_BODY = " " * 8
_TYPES = {"a": "float64[::1]", "s": "float64"}
#: The widths a module may be written for (``runtime.inputs.call_dtype`` picks one per call).
DTYPES = ("float64", "float32")


@dataclass
class _Segment:
    """One bounded function of a split entry."""

    name: str
    nodes: list[int]
    loads: list[tuple[int, int]]  # (node, slot): values from earlier segments
    stores: list[tuple[int, int]]  # (node, slot): values later segments read
    after: int  # the last node of the previous segment (-1 for the first)


class ModuleWriter:
    """Writes one module for one graph and one pattern of input kinds."""

    def __init__(
        self,
        adj: AdjointGraph,
        inputs: tuple[str, ...],
        kinds: str,
        split_lines: int | None = None,
        dtype: str = "float64",
    ):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, not {dtype!r}")
        self.adj, self.inputs = adj, inputs
        self.kinds, self.dtype = kinds, dtype
        self.types = {k: t.replace("float64", dtype) for k, t in _TYPES.items()}
        self.constants: dict[str, str] = {}  # float32 only: literal text -> module-level name
        self.split_lines = SPLIT_LINES if split_lines is None else split_lines
        self.layout, self.entries = plan(adj, inputs, kinds)
        ops = {n.op for n in adj.nodes if n.op not in LEAVES}
        self.calls = Calls(ops)
        reserved = {*_RESERVED, *map(callable_name, ops), *ENTRIES}
        reserved |= {f"{e}_serial" for e in ENTRIES}
        self.namer = Namer(reserved)
        self.ident = [""] * len(adj.nodes)
        input_nodes = {n.value: i for i, n in enumerate(adj.nodes) if n.op == INPUT}
        self.input_ident = {name: self.namer.claim(name) for name in inputs}
        for name, i in input_nodes.items():
            self.ident[i] = self.input_ident[name]
        for i, node in enumerate(adj.nodes):
            if node.op not in (INPUT, CONST):
                self.ident[i] = self.namer.claim(adj.names[i])
        # Buffer names, shared by the entries that write them (claimed in this order: stable text).
        self.grad_names = [self.namer.claim(f"g_{self.input_ident[w]}") for w in adj.wrt]
        self.saved_names = [self.namer.claim(f"saved_{self.ident[s]}") for s in adj.saved_nodes]
        self.indexed: set[int] = set()
        self.split = False
        self.blocked = False  # an entry sums over blocks (``blocked_loop``)
        self.signatures: dict[str, dict[str, str]] = {e.name: {} for e in self.entries}
        self._scalars: dict[str, set[str]] = {}  # entry -> idents of its scalar parameters
        self._given_at: dict[str, dict[int, int]] = {}  # entry -> {given node: position}

    # ----------------------------------------------------------------- text
    def operand(self, i: int) -> str:
        node = self.adj.nodes[i]
        if node.op == CONST:
            return self.constant(node.value)
        return f"{self.ident[i]}[i]" if i in self.indexed else self.ident[i]

    def constant(self, value: float) -> str:
        """A constant: a literal in float64; in float32 a module-level float32 number, named
        once per value (a literal would make its line float64)."""
        return typed_constant(value, self.dtype, self.constants, self.namer)

    def load(self, a: int, slot: int) -> str:
        """A value read back from the block's temporaries (float64 rows: exact for float32)."""
        value = f"temps[{slot}, j]"
        return value if self.dtype == "float64" else f"np.float32({value})"

    def node_line(self, i: int) -> str:
        node = self.adj.nodes[i]
        ops = {k: self.operand(a) for k, a in zip("abc", node.args)}
        code = self.calls.text(node.op, list(ops.values()), exponent_of(self.adj.nodes, node))
        line = f"{_BODY}{self.ident[i]} = {code}"
        note = self.adj.notes.get(i)  # the subgraph a fused gate replaced (passes/fusion.py)
        return f"{line}  # fused: {comment(note.format(**ops))}" if note else line

    def body(self, entry: Entry, nodes: list[int], after: int = -1) -> list[str]:
        """The node lines, with a comment where the backward part starts (``after``: the node
        printed just before these, in an earlier segment)."""
        lines = []
        backward = entry.name == "backward" or after >= self.adj.n_forward
        for i in nodes:
            if i >= self.adj.n_forward and not backward:
                lines.append(
                    f"{_BODY}# backward: upstream gradient x local gradient, summed at forks"
                )
                backward = True
            lines.append(self.node_line(i))
        return lines

    def results(self, entry: Entry) -> list[str]:
        """Names of the output buffers: ``out``, then gradients or residuals."""
        return {
            "forward": ["out"],
            "value_and_grad": ["out", *self.grad_names],
            "forward_save": ["out", *self.saved_names],
            "backward": self.grad_names,
        }[entry.name]

    def kernel(self, entry: Entry) -> list[str]:
        """One entry: a single loop, or segments when it is longer than ``split_lines``."""
        results = self.results(entry)
        self.indexed = {g for g, kind in entry.given if kind == "a"}
        if len(entry.nodes) > self.split_lines:
            self.split = True
            return self.segmented(entry, results)
        lines = self.one_loop(entry, results)
        params = ["n", *(self.ident[g] for g, _ in entry.given), *results]
        signature = self._signature(entry, params[1:])
        for name in (entry.name, f"{entry.name}_serial"):
            self.signatures[entry.name][name] = "(int64, " + signature[1:]
        return [*lines, "", "", f"{entry.name}_serial = serial({entry.name})", "", ""]

    def one_loop(self, entry: Entry, results: list[str]) -> list[str]:
        """The whole entry as one loop over the flat index."""
        sums = self._sums(entry, results)
        if sums and "a" in self.kinds:  # a call over points (a backward's residuals alone: one)
            return self.blocked_loop(entry, results, sums)
        stores = [
            f"{_BODY}{sums[r]} += {self.operand(o)}"
            if r in sums
            else f"{_BODY}{r}[i] = {self.operand(o)}"
            for r, (o, _) in zip(results, entry.outputs)
        ]
        params = ["n", *(self.ident[g] for g, _ in entry.given), *results]
        return [
            "@njit(parallel=True, **FLAGS)",
            f"def {entry.name}({', '.join(params)}):",
            *(f"    {total} = 0.0" for total in sums.values()),
            "    for i in prange(n):",
            *self.body(entry, list(entry.nodes)),
            *stores,
            *(f"    {r}[0] = {total}" for r, total in sums.items()),
        ]

    def blocked_loop(self, entry: Entry, results: list[str], sums: dict[str, str]) -> list[str]:
        """The entry's loop when it sums gradients (of single-number inputs) over the points:
        blocks of ``BLOCK`` points, each point's terms written to one row per sum, each row then
        summed in eight lanes (``runtime.jit.add_lanes``) and the blocks' sums added in order.
        LLVM vectorises both loops, where a running sum is a chain of adds it may not reorder
        (no fast-math): that kept such loops scalar, 4-7x slower. The bits depend on neither the
        vector width nor the number of threads."""
        self.blocked = True
        row = {r: k for k, r in enumerate(sums)}
        inner = _BODY + "    "
        stores = [
            f"{inner}row[{row[r]}, j] = {self.operand(o)}"
            if r in sums
            else f"{inner}{r}[i] = {self.operand(o)}"
            for r, (o, _) in zip(results, entry.outputs)
        ]
        params = ["n", *(self.ident[g] for g, _ in entry.given), *results]
        return [
            "@njit(parallel=True, **FLAGS)",
            f"def {entry.name}({', '.join(params)}):",
            "    blocks = (n + BLOCK - 1) // BLOCK",
            f"    parts = np.empty((blocks, {len(sums)}))  # each block's sums",
            f"    rows = np.empty((THREADS, {len(sums)}, BLOCK))  # each thread's terms",
            "    for blk in prange(blocks):",
            "        row = rows[get_thread_id() % THREADS]",
            "        lo = blk * BLOCK",
            "        m = n - lo if n - lo < BLOCK else BLOCK",
            "        for j in range(m):",
            "            i = lo + j",
            *("    " + line for line in self.body(entry, list(entry.nodes))),
            *stores,
            "        add_lanes(row, m, parts[blk])",
            *(f"    {r}[0] = in_order(parts[:, {row[r]}])" for r in sums),
        ]

    def _sums(self, entry: Entry, results: list[str]) -> dict[str, str]:
        return {
            r: self.namer.claim(f"{r}_sum") for r, (_, k) in zip(results, entry.outputs) if k == "s"
        }

    # ----------------------------------------------------------------- segments
    def segmented(self, entry: Entry, results: list[str]) -> list[str]:
        """The entry as segments of at most ``split_lines`` nodes, run block by block by
        ``runtime.blocks.run_blocks`` (a Python function: see there why not a jitted one)."""
        segments, rows = self._segments(entry)
        sums = self._sums(entry, results)
        lines: list[str] = []
        calls: list[str] = []
        for k, seg in enumerate(segments):
            last = k == len(segments) - 1
            params = ["lo", "m", *self._segment_params(entry, seg, results if last else [])]
            lines += self._segment(entry, seg, results if last else [], sums if last else {})
            self.signatures[entry.name][seg.name] = self._signature(entry, params)
            calls.append(f"        {'return ' if last else ''}{seg.name}({', '.join(params)})")
        length = block_length(rows, TEMP_BUDGET, MIN_BLOCK, MAX_BLOCK)
        params = ["n", *(self.ident[g] for g, _ in entry.given), *results]
        totals = f"{', '.join(f'{r}[0]' for r in sums)}{',' * (len(sums) == 1)} = " if sums else ""
        lines += [
            f"def {entry.name}({', '.join(params)}, parallel=True):",
            f'    """{len(entry.nodes)} nodes in {len(segments)} segments; {rows} temporary rows, '
            f'blocks of {length} elements."""',
            "",
            "    def block(lo, m, temps):",
            *calls,
            "",
            f"    {totals}run_blocks(n, block, {rows}, {length}, {len(sums)}, parallel)",
            "",
            "",
            f"{entry.name}_serial = partial({entry.name}, parallel=False)",
            "",
            "",
        ]
        return lines

    @staticmethod
    def _listing(signatures: dict[str, str]) -> str:
        return (
            "".join(f"\n        {data(name)}: {data(sig)}," for name, sig in signatures.items())
            + "\n    "
        )

    def _signature(self, entry: Entry, params: list[str]) -> str:
        """The Numba signature a function of ``entry`` is called with (compiled ahead of a call):
        scalar inputs are numbers of the module's dtype, every other parameter a contiguous array
        of it (the temporaries are float64 rows in every module: ``runtime.blocks``)."""
        scalars = self._scalar_params(entry)
        types = {"lo": "int64", "m": "int64", "temps": "float64[:, ::1]"}
        return (
            "("
            + ", ".join(types.get(p, self.types["s" if p in scalars else "a"]) for p in params)
            + ")"
        )

    def _scalar_params(self, entry: Entry) -> set[str]:
        if entry.name not in self._scalars:
            self._scalars[entry.name] = {self.ident[g] for g, k in entry.given if k == "s"}
        return self._scalars[entry.name]

    def _segments(self, entry: Entry) -> tuple[list[_Segment], int]:
        """Cut the entry's nodes into segments and give each crossing value a temporary row
        (``compiler.codegen.rows``, the one allocator).

        A segment loads all its reads at the top of its loop body and stores at the bottom, so
        the segment that reads a value last may reuse its row: the allocator is told that the
        value's last use is the segment before.
        """
        nodes, size = list(entry.nodes), self.split_lines
        chunks = [nodes[k : k + size] for k in range(0, len(nodes), size)]
        where = {i: k for k, chunk in enumerate(chunks) for i in chunk}
        args = {i: self.adj.nodes[i].args for i in nodes}
        last_use = rows.last_uses(chunks, args)
        final = len(chunks) - 1  # the last segment writes every output
        for o, _ in entry.outputs:
            if where.get(o, final) < final:
                last_use[o] = final
        slot, n_rows = rows.allocate(chunks, {v: k - 1 for v, k in last_use.items()})
        segments = []
        for k, chunk in enumerate(chunks):
            reads = [a for i in chunk for a in args[i] if where.get(a, k) < k]
            if k == final:
                reads += [o for o, _ in entry.outputs if where.get(o, final) < final]
            loads = [(a, slot[a]) for a in dict.fromkeys(reads)]
            stores = [(i, slot[i]) for i in chunk if i in last_use]
            name = self.namer.claim(f"{entry.name}_{k + 1}")
            after = chunks[k - 1][-1] if k else -1
            segments.append(_Segment(name, chunk, loads, stores, after))
        return segments, n_rows

    def _segment_params(self, entry: Entry, seg: _Segment, results: list[str]) -> list[str]:
        """Given values the segment reads (in the entry's order), the temporaries, the buffers."""
        if entry.name not in self._given_at:
            self._given_at[entry.name] = {g: k for k, (g, _) in enumerate(entry.given)}
        position = self._given_at[entry.name]
        read = {a for i in seg.nodes for a in self.adj.nodes[i].args}
        if results:
            read.update(o for o, _ in entry.outputs)
        given = sorted((g for g in read if g in position), key=position.get)
        return [*(self.ident[g] for g in given), "temps", *results]

    def _segment(
        self, entry: Entry, seg: _Segment, results: list[str], sums: dict[str, str]
    ) -> list[str]:
        params = self._segment_params(entry, seg, results)
        reads = {a for i in seg.nodes for a in self.adj.nodes[i].args}
        reads.update(o for o, _ in entry.outputs[: len(results)])
        indexed = bool(reads & self.indexed) or any(
            k == "a" for _, k in entry.outputs[: len(results)]
        )
        stores = [f"{_BODY}temps[{s}, j] = {self.ident[i]}" for i, s in seg.stores]
        for r, (o, _) in zip(results, entry.outputs):
            value = self.operand(o)
            stores.append(
                f"{_BODY}{sums[r]} += {value}" if r in sums else f"{_BODY}{r}[i] = {value}"
            )
        totals = list(sums.values())
        returns = [f"    return ({', '.join(totals)}{',' * (len(totals) == 1)})"] if totals else []
        return [
            "@njit(nogil=True, **FLAGS)",
            f"def {seg.name}({', '.join(['lo', 'm', *params])}):",
            *(f"    {t} = 0.0" for t in totals),
            "    for j in range(m):",
            *([f"{_BODY}i = lo + j"] if indexed else []),
            *(f"{_BODY}{self.ident[a]} = {self.load(a, s)}" for a, s in seg.loads),
            *self.body(entry, seg.nodes, seg.after),
            *stores,
            *returns,
            "",
            "",
        ]

    # ----------------------------------------------------------------- module
    def module(self) -> str:
        lay = self.layout
        kernels: list[str] = []
        for entry in self.entries:
            kernels += self.kernel(entry)
        c = self.constants
        numba, jit = "njit, prange", "FLAGS, serial"
        if self.blocked:  # an entry sums over blocks (``blocked_loop``)
            numba, jit = (
                f"get_thread_id, {numba}",
                "BLOCK, FLAGS, THREADS, add_lanes, in_order, serial",
            )
        header = [
            f'"""{NUMBA_DOCSTRING}"""',
            "",
            "import math",
            *(["from functools import partial"] if self.split else []),
            *(["", "import numpy as np"] if self.dtype != "float64" or self.blocked else []),
            "",
            f"from numba import {numba}",
            "",
            *(["from runtime.blocks import run_blocks"] if self.split else []),
            f"from runtime.jit import {jit}",
            *self.calls.imports(),
            "",
            f"INPUTS = {data(lay.inputs)}",
            f"USED = {data(lay.used)}",
            f"BACKWARD_READS = {data(lay.backward_reads)}",
            f"WRT = {data(lay.wrt)}",
            f"SAVED = {data(lay.saved)}",
            f"SEEDED = {data(lay.seeded)}",
            f"KINDS = {data(self.kinds)}",
            *([f"DTYPE = {data(self.dtype)}"] if self.dtype != "float64" else []),
            *(
                ["", "# The constants, as float32 numbers (a literal is a float64 in Numba)."]
                * bool(c)
            ),
            *(f"{name} = np.float32({text})" for text, name in c.items()),
            "",
            "",
        ]
        footer = [
            "# Numba signatures of each entry's jitted functions, to compile them ahead of a call.",
            "SIGNATURES = {",
            *(
                f"    {data(entry)}: {{{self._listing(sigs)}}},"
                for entry, sigs in self.signatures.items()
            ),
            "}",
        ]
        return "\n".join(header + kernels + footer).rstrip() + "\n"


def generate(
    adj: AdjointGraph,
    inputs: tuple[str, ...],
    kinds: str,
    title: str = "",
    split_lines: int | None = None,
    dtype: str = "float64",
) -> str:
    """Source of the kernel module for ``adj`` with the given input kinds (plus the seed's),
    computing in ``dtype`` (``"float64"`` or ``"float32"``).

    ``split_lines`` overrides ``SPLIT_LINES`` (tests force small graphs to split with it).
    ``title`` is accepted and ignored: no text of the user's reaches generated code
    (``compiler.codegen.audit``), which passes ``check_python`` before it is returned.
    """
    check_kinds(inputs, kinds)
    return check_python(ModuleWriter(adj, inputs, kinds, split_lines, dtype).module())

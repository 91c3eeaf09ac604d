"""One kernel entry → LLVM IR text, for the compiled tier's large graphs (``runtime.llvm_tier``).

Numba spends most of a large kernel's compile in its own Python pipeline (bytecode analysis,
type inference, lowering: milliseconds per generated line), before LLVM sees anything. This
writer skips all of that: it prints the entry's nodes (``compiler.codegen.entries``, the same ones
the Numba writer prints and the instant tier runs) straight as LLVM IR, one SSA value per node,
named after the node, so the time to a first result is LLVM's own, linear in the node count.

Shape of the module, for an entry of N nodes:

- *chunks*: ``noinline`` functions of at most ``CHUNK_INSTRUCTIONS`` instructions, each a
  loop over one block of points ``[lo, lo + m)``. LLVM's optimiser and code generator work per
  function, so bounded functions keep compile time linear (one huge loop body is not: its register
  allocation grows faster). An O3 entry of up to ``WHOLE_CHUNKS`` chunks' worth is one chunk: a
  small loss runs faster as one loop (no temporaries; LLVM hoists and shares work across it).
  A value read by a later chunk passes through the block's temporaries
  (one row of ``block`` doubles per value, rows reused once the value is dead), as in Numba's
  segments (``numba_source``);
- the *driver* ``@<entry>(first, last, n, arrays, scalars, temps, partial)`` runs blocks
  ``[first, last)`` of ``range(n)`` through the chunks in order. ``arrays`` holds the address of
  every array argument (inputs, then outputs), ``scalars`` the scalar inputs, ``temps`` the
  calling thread's temporaries, ``partial`` one row of sums per block (gradients of scalar inputs,
  added in block order by the caller, as the instant tier does);
- for a chunk using an op with a fast form (sin, cos), an *exact twin*: the fast chunk also
  returns whether any point needs the exact path (sin and cos: an argument beyond ``TRIG_MAX``;
  an or-reduction, vectorised with the loop); if one did, the driver zeroes the block's partial
  sums and runs the block again, the twins in place of the flagged chunks. The rerun rewrites the block's outputs and temporaries and adds its sums once.

Each node is one call, ``%t = call double @op.<name>.f64(...)``, of its op's lowering printed
once per module as an ``internal alwaysinline`` function (``compiler.codegen.llvm_ops``): the op
table is the only place an op is written. ``vector`` (entries going through O3) asks the
lowerings for their branch-free forms, which LLVM's loop vectoriser takes; an op with a ``fast``
form (sin, cos) is called through it in the fast chunks and through ``lower`` in the exact twins.
Chunk costs are the instructions of the op functions, counted once per op. The driver and the
entry's modules: ``compiler.codegen.llvm_driver``; the temporary rows: ``compiler.codegen.rows``.

*float32* (``dtype="float32"``): the same module at ``float`` width — arrays, scalar inputs,
temporaries and op functions (``@op.<name>.f32``, the same lowerings) are ``float``, constants
are rounded once to float32. Only the sums of scalar inputs' gradients stay ``double``: each
point's value is widened and added in double, and the caller rounds the total once (a float32
running sum over a million points would lose digits NumPy's pairwise sum keeps).
"""

from __future__ import annotations

import struct

import numpy as np

from compiler.codegen import llvm_ops
from compiler.codegen.audit import Namer, check_llvm, comment
from compiler.codegen.entries import Entry, block_length
from compiler.codegen.llvm_driver import MEMSET, EntryIR, driver, own_symbols, prototype
from compiler.codegen.rows import allocate, last_uses
from compiler.ir.graph import CONST
from compiler.ir.registry import OPS
from compiler.passes.adjoint import AdjointGraph

__all__ = ["CHUNK_INSTRUCTIONS", "EntryIR", "EntryWriter", "generate_entry"]

#: Instructions per chunk function (measured: see ``runtime/llvm_tier.py``).
CHUNK_INSTRUCTIONS = 400

#: An O3 entry of up to this many times ``CHUNK_INSTRUCTIONS`` instructions is one chunk: no
#: temporary rows between chunks, and LLVM sees the whole loop (it hoists the nodes of scalar
#: inputs alone out of it, and shares what two ops compute alike). Measured (serial, 4M events):
#: D1's mixture (3 chunks at 400) 12.6 -> 9.5 ns per event, a 4-component mixture (4 chunks)
#: 38 -> 27 ns, each compiling faster as one function (72 against 81 ms, 114 against 171 ms).
#: Larger entries keep chunks of ``CHUNK_INSTRUCTIONS``: one chunk of a 635-node entry (a
#: 16-component mixture) compiled in 2.2 s against 0.7 s (register allocation grows faster).
WHOLE_CHUNKS = 5

#: Temporaries per block, in doubles: the block length is this divided by the number of rows
#: (the block's working set stays in cache), a power of two in [MIN_BLOCK, MAX_BLOCK]. Unlike
#: Numba's segments, which Python calls block by block, the chunks are called by the driver in
#: machine code (nanoseconds a call), so blocks may be short: measured on the 10,000-node chain
#: (6,663 rows), blocks of 64 points (3.4 MB of temporaries) ran 3x slower than blocks of 8.
TEMP_BUDGET = 1 << 16
MIN_BLOCK, MAX_BLOCK = 4, 512


def literal(value: float) -> str:
    """A double as LLVM writes it exactly: the hex of its bits."""
    return "0x" + struct.pack(">d", value).hex().upper()


def literal_at(value: float, dtype: str) -> str:
    """A constant of a ``dtype`` kernel: at float32 rounded once to float32 (NumPy's rounding;
    beyond float32's range it is ±inf), written as the hex of the double that is exactly that
    float, as LLVM writes ``float`` constants."""
    if dtype == "float32":
        with np.errstate(over="ignore"):
            value = float(np.float32(value))
    return literal(value)


ZERO = literal(0.0)


def has_fast(op: str) -> bool:
    """Whether ``op`` has a fast form with an exact path (sin, cos)."""
    spec = OPS.get(op)
    return spec is not None and spec.fast is not None


#: LLVM local names the chunks use themselves (parameters and labels); the writer's other
#: names start with a dot or hang off a node's own (``%t5.e``), so never collide with a node's.
_RESERVED = {"lo", "m", "arrays", "scalars", "temps", "sums", "entry", "loop", "exit"}


class _Chunk:
    """One chunk function being written."""

    def __init__(self) -> None:
        self.body: list[str] = []
        self.pre: list[str] = []  # entry block: scalar and base-pointer loads, temp rows
        self.phis: list[str] = []
        self.exit: list[str] = []
        self.names: dict[int, str] = {}  # node -> operand text, in this chunk
        self.bases: set[int] = set()  # array positions whose base pointer is loaded
        self.rows: set[int] = set()
        self.indexed = False
        self.sums: dict[int, str] = {}  # sum column -> accumulator name
        self.instructions = 0


class EntryWriter:
    """Writes one entry of one kernel as an LLVM module."""

    def __init__(
        self,
        adj: AdjointGraph,
        entry: Entry,
        title: str = "",
        chunk: int | None = None,
        vector: bool = True,
        dtype: str = "float64",
    ):
        self.adj, self.entry, self.vector = adj, entry, vector  # the title is not written
        self.dtype, self.t = dtype, llvm_ops.type_name(dtype)  # "double" or "float"
        self.limit = CHUNK_INSTRUCTIONS if chunk is None else chunk
        self.costs: dict[str, int] = {}
        self.functions: dict[tuple[str, bool], llvm_ops.OpFunction] = {}
        nodes = adj.nodes
        n_given = len(entry.given)
        self.given = {node: (pos, kind) for pos, (node, kind) in enumerate(entry.given)}
        self.arrays = [pos for pos, (_, kind) in enumerate(entry.given) if kind == "a"]
        self.scalars = [pos for pos, (_, kind) in enumerate(entry.given) if kind == "s"]
        self.sums: list[int] = []
        self.stores: dict[int, list[tuple[str, int]]] = {}  # node -> [("a"|"s", column)]
        for q, (node, kind) in enumerate(entry.outputs):
            if kind == "a":
                self.arrays.append(n_given + q)
                self.stores.setdefault(node, []).append(("a", len(self.arrays) - 1))
            else:
                self.sums.append(n_given + q)
                self.stores.setdefault(node, []).append(("s", len(self.sums) - 1))
        self.array_index = {pos: k for k, pos in enumerate(self.arrays)}
        self.scalar_index = {pos: k for k, pos in enumerate(self.scalars)}
        namer = Namer(_RESERVED)
        self.ident = {
            i: namer.claim(adj.names[i]) for i in [g for g, _ in entry.given] + list(entry.nodes)
        }
        self.nodes = nodes
        self.ops: set[str] = set()  # ops called through their function (``lower``)
        self.fast_ops: set[str] = set()  # ops called through their fast form
        # The chunk being written: whether it is an exact twin, and the flags of its fast
        # forms (a point needs the exact path).
        self.exact = False
        self.flags: list[str] = []

    # ------------------------------------------------------------------ emitting one op
    def op_lines(self, op: str, dst: str, operands: list[str]) -> list[str]:
        """IR defining ``%dst`` as ``op(*operands)``: a call of the op's function. In a fast
        chunk an op with a fast form also defines ``%dst.big``, collected in ``self.flags``."""
        t = self.t
        args = ", ".join(f"{t} {o}" for o in operands)
        if self.vector and not self.exact and has_fast(op):
            f = self.function(op, True)
            self.fast_ops.add(op)
            self.flags.append(f"%{dst}.big")
            kind = llvm_ops.fast_type(self.dtype)
            return [
                f"%{dst}.f = call {kind} @{f.symbol}({args})",
                f"%{dst} = extractvalue {kind} %{dst}.f, 0",
                f"%{dst}.big = extractvalue {kind} %{dst}.f, 1",
            ]
        f = self.function(op, False)
        self.ops.add(op)
        return [f"%{dst} = call {t} @{f.symbol}({args})"]

    def function(self, op: str, fast: bool) -> llvm_ops.OpFunction:
        """The op's printed function (looked up once per op and writer)."""
        key = (op, fast)
        if key not in self.functions:
            self.functions[key] = llvm_ops.op_function(op, self.vector, fast, dtype=self.dtype)
        return self.functions[key]

    def cost(self, op: str) -> int:
        """Instructions of the op's function (its fast form where fast chunks call that)."""
        if op not in self.costs:
            fast = self.vector and has_fast(op)
            self.costs[op] = 1 + self.function(op, fast).instructions
        return self.costs[op]

    # ------------------------------------------------------------------ chunks
    def cut(self) -> list[list[int]]:
        """The entry's nodes in chunks of at most ``self.limit`` instructions; one chunk for a
        small O3 entry (``WHOLE_CHUNKS``)."""
        costs = [self.cost(self.nodes[i].op) for i in self.entry.nodes]
        if self.vector and sum(costs) <= WHOLE_CHUNKS * self.limit:
            return [list(self.entry.nodes)]
        chunks: list[list[int]] = [[]]
        size = 0
        for i, c in zip(self.entry.nodes, costs):
            if chunks[-1] and size + c > self.limit:
                chunks.append([])
                size = 0
            chunks[-1].append(i)
            size += c
        return chunks

    def write(self) -> EntryIR:
        entry, nodes = self.entry, self.nodes
        chunks = self.cut()
        slot, rows = allocate(chunks, last_uses(chunks, {i: nodes[i].args for i in entry.nodes}))
        block = block_length(rows, TEMP_BUDGET, MIN_BLOCK, MAX_BLOCK)
        prefix = entry.name  # one of ENTRIES
        functions: list[str] = []
        prototypes: list[str] = []
        flagged: list[bool] = []  # chunks returning whether a sin or cos argument was huge
        for k, chunk in enumerate(chunks):
            after = chunks[k - 1][-1] if k else -1
            name = f"{prefix}.{k + 1}"
            functions.append(self.chunk(name, k, chunk, slot, after, block))
            flagged.append(bool(self.flags))
            prototypes.append(prototype("i1" if self.flags else "void", name))
            if self.flags:
                functions.append(self.chunk(f"{name}.exact", k, chunk, slot, after, block, True))
                prototypes.append(prototype("void", f"{name}.exact"))
        driver_text = driver(prefix, flagged, block, len(self.sums))
        twins = f" (+{sum(flagged)} exact twins)" if any(flagged) else ""
        header = (
            f"; symgrad {entry.name}: {len(entry.nodes)} nodes in {len(chunks)} "
            f"chunks{twins}, {rows} temporary rows, blocks of {block} points"
        ) + ("" if self.dtype == "float64" else f", {self.dtype}")
        ops = llvm_ops.functions_for(
            sorted(self.ops), self.vector, sorted(self.fast_ops), dtype=self.dtype
        )
        declared = llvm_ops.declarations(ops)
        if any(flagged) and self.sums:
            declared[MEMSET[0]] = MEMSET[1]
        declarations = tuple(declared.values())
        op_texts = tuple(f.text for f in ops)
        text = "\n".join([header, *declarations, *op_texts, *functions, *prototypes, driver_text])
        own = own_symbols(prefix, len(chunks)) | {f.symbol for f in ops}
        check_llvm(text, own, set(declared))
        return EntryIR(
            header=header,
            declarations=declarations,
            ops=op_texts,
            functions=tuple(functions),
            prototypes=tuple(prototypes),
            driver=driver_text,
            symbol=prefix,
            block=block,
            rows=rows,
            arrays=tuple(self.arrays),
            scalars=tuple(self.scalars),
            sums=tuple(self.sums),
            dtype=self.dtype,
        )

    def chunk(self, name, k, chunk, slot, after, block, exact=False) -> str:
        """The chunk's function; with sin or cos (``self.flags`` set), the fast form returns
        whether any point needs the exact path, the ``exact`` twin nothing."""
        c = _Chunk()
        nodes, t = self.nodes, self.t
        self.exact, self.flags = exact, []

        def base(pos: int) -> str:
            column = self.array_index[pos]
            if column not in c.bases:
                c.bases.add(column)
                c.pre += [
                    f"%.a{column}.at = getelementptr ptr, ptr %arrays, i64 {column}",
                    f"%.a{column} = load ptr, ptr %.a{column}.at",
                ]
            return f"%.a{column}"

        def operand(a: int) -> str:
            if a in c.names:
                return c.names[a]
            node = nodes[a]
            if node.op == CONST:
                return literal_at(node.value, self.dtype)
            ident = self.ident[a]
            if a in self.given:
                pos, kind = self.given[a]
                if kind == "s":
                    at = self.scalar_index[pos]
                    c.pre += [
                        f"%{ident}.at = getelementptr {t}, ptr %scalars, i64 {at}",
                        f"%{ident} = load {t}, ptr %{ident}.at",
                    ]
                else:
                    c.indexed = True
                    c.body += [
                        f"%{ident}.at = getelementptr {t}, ptr {base(pos)}, i64 %.i",
                        f"%{ident} = load {t}, ptr %{ident}.at",
                    ]
            else:  # computed by an earlier chunk: its temporary row
                s = slot[a]
                c.pre.append(f"%.row{s} = getelementptr {t}, ptr %temps, i64 {s * block}")
                c.body += [
                    f"%{ident}.at = getelementptr {t}, ptr %.row{s}, i64 %.j",
                    f"%{ident} = load {t}, ptr %{ident}.at",
                ]
            c.names[a] = f"%{ident}"
            return c.names[a]

        def store(node: int) -> None:
            value = operand(node)
            for what, column in self.stores.get(node, ()):
                tag = f"%.o{column}{what}{node}"
                if what == "a":
                    c.indexed = True
                    out = base(self.arrays[column])
                    c.body += [
                        f"{tag}.at = getelementptr {t}, ptr {out}, i64 %.i",
                        f"store {t} {value}, ptr {tag}.at",
                    ]
                else:
                    acc = c.sums.get(column)
                    new = f"%.s{column}.n{len(c.body)}"
                    if acc is None:
                        c.phis.append((column, new))
                        acc = f"%.s{column}.0"
                    term = value
                    if t != "double":  # sums are double at any width: the value is widened
                        term = f"{new}.w"
                        c.body.append(f"{term} = fpext {t} {value} to double")
                    # reassoc on the sum alone lets O3 keep one partial sum per vector lane:
                    # a serial chain of fadds is what kept loops with a scalar's gradient
                    # scalar (2x slower); only the order of the additions (rounding) changes.
                    c.body.append(f"{new} = fadd reassoc double {acc}, {term}")
                    c.sums[column] = new

        if k == 0:  # outputs that are given values or constants
            computed = set(self.entry.nodes)
            for node in self.stores:
                if node not in computed:
                    store(node)
        backward = self.entry.name == "backward" or after >= self.adj.n_forward
        for i in chunk:
            node = nodes[i]
            if i >= self.adj.n_forward and not backward:
                c.body.append("; backward: upstream gradient x local gradient, summed at forks")
                backward = True
            operands = [operand(a) for a in node.args]
            ident = self.ident[i]
            lines = self.op_lines(node.op, ident, operands)
            note = self.adj.notes.get(i)
            if note or OPS[node.op].is_gate:
                text = self.adj.line(i) if hasattr(self.adj, "line") else ident
                c.body.append(f"; {comment(text)}")  # the line ends with the fused note
            c.body += lines
            c.names[i] = f"%{ident}"
            if i in slot:
                s = slot[i]
                c.pre.append(f"%.row{s} = getelementptr {t}, ptr %temps, i64 {s * block}")
                c.body += [
                    f"%.t{ident}.at = getelementptr {t}, ptr %.row{s}, i64 %.j",
                    f"store {t} %{ident}, ptr %.t{ident}.at",
                ]
            if i in self.stores:
                store(i)

        phis = [
            f"%.s{column}.0 = phi double [{ZERO}, %entry], [{c.sums[column]}, %loop]"
            for column, _ in c.phis
        ]
        exits = [
            f"%.s{column}.total = phi double [{ZERO}, %entry], [{c.sums[column]}, %loop]"
            for column, _ in c.phis
        ]
        for column, _ in c.phis:
            exits += [
                f"%.s{column}.at = getelementptr double, ptr %sums, i64 {column}",
                f"%.s{column}.old = load double, ptr %.s{column}.at",
                f"%.s{column}.new = fadd double %.s{column}.old, %.s{column}.total",
                f"store double %.s{column}.new, ptr %.s{column}.at",
            ]
        returns, flag = "void", []
        if self.flags and not exact:  # any |x| > TRIG_MAX in the block: an or-reduction
            returns, acc = "i1", "%.f"
            for j, big in enumerate(self.flags):
                c.body.append(f"%.f{j} = or i1 {acc}, {big}")
                acc = f"%.f{j}"
            phis.append(f"%.f = phi i1 [false, %entry], [{acc}, %loop]")
            exits.insert(0, f"%.flag = phi i1 [false, %entry], [{acc}, %loop]")
            flag = ["  ret i1 %.flag"]
        # An exact twin runs only for blocks with a huge sin or cos argument: not worth O3's time.
        attributes = "noinline nounwind" + (" optnone" if exact else "")
        pre = list(dict.fromkeys(c.pre))
        lines = [
            f"define {returns} @{name}(i64 %lo, i64 %m, ptr noalias %arrays, "
            f"ptr noalias %scalars, ptr noalias %temps, ptr noalias %sums) {attributes} {{",
            "entry:",
            *(f"  {line}" for line in pre),
            "  %.any = icmp sgt i64 %m, 0",
            "  br i1 %.any, label %loop, label %exit",
            "loop:",
            "  %.j = phi i64 [0, %entry], [%.j.next, %loop]",
            *(f"  {line}" for line in phis),
            *(["  %.i = add i64 %lo, %.j"] if c.indexed else []),
            *(f"  {line}" for line in c.body),
            "  %.j.next = add i64 %.j, 1",
            "  %.done = icmp eq i64 %.j.next, %m",
            "  br i1 %.done, label %exit, label %loop",
            "exit:",
            *(f"  {line}" for line in exits),
            *(flag or ["  ret void"]),
            "}",
            "",
        ]
        return "\n".join(lines)


def generate_entry(
    adj: AdjointGraph,
    entry: Entry,
    title: str = "",
    chunk: int | None = None,
    vector: bool = True,
    dtype: str = "float64",
) -> EntryIR:
    """The LLVM module of ``entry`` (``chunk`` overrides ``CHUNK_INSTRUCTIONS``) at ``dtype``
    (``"float64"`` or ``"float32"``: the element type of its arrays and scalar inputs; the
    partial sums are double either way).

    ``vector`` prints exp, sin and cos branch-free (``VECTOR_OPS``), for loops that LLVM's O3
    pipeline vectorises (2x faster on sin/exp chains); without that pipeline, in scalar code, the
    C library's are faster (measured on a 3,400-node chain: 0.8x the speed, 3x the compile time).
    The tier asks for it exactly when it runs O3 (``runtime.llvm_tier.OPTIMISE_NODES``).
    """
    return EntryWriter(adj, entry, title, chunk, vector, dtype).write()

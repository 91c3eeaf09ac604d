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
  allocation grows faster). A value read by a later chunk passes through the block's temporaries
  (one row of ``block`` doubles per value, rows reused once the value is dead), as in Numba's
  segments (``numba_source``);
- the *driver* ``@<entry>(first, last, n, arrays, scalars, temps, partial)`` runs blocks
  ``[first, last)`` of ``range(n)`` through the chunks in order. ``arrays`` holds the address of
  every array argument (inputs, then outputs), ``scalars`` the scalar inputs, ``temps`` the
  calling thread's temporaries, ``partial`` one row of sums per block (gradients of scalar inputs,
  added in block order by the caller, as the instant tier does).

Numerics follow the Numba tier op for op, with NumPy's semantics and no fast-math flags: LLVM
intrinsics for exp, log, sqrt, sin, cos, fabs and pow (calls of the C library's functions, as
Numba's); the C library's log1p, expm1, tan and tanh; ``fcmp`` + ``select`` for the piecewise ops,
written exactly as ``runtime/scalar.py`` computes them (nan propagation, ties, the kink table).
A gate the table here lacks (a user's or a discovered one) is expanded into the graph of its stable
form, as the instant tier does.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

from compiler.codegen.entries import Entry, block_length
from compiler.ir.graph import CONST
from compiler.passes.adjoint import AdjointGraph

#: Instructions per chunk function (measured: see ``runtime/llvm_tier.py``).
CHUNK_INSTRUCTIONS = 400

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


ZERO, ONE, MINUS_ONE, MINUS_ZERO = literal(0.0), literal(1.0), literal(-1.0), literal(-0.0)

# ------------------------------------------------------------------------------------- op table
# Each builtin op: a function (dst, operands) -> IR lines defining %dst, and the external
# functions it calls. Helpers' names hang off the node's own (``%t5.e``), so they stay unique.
_INTRINSICS = {
    "exp": "llvm.exp.f64",
    "log": "llvm.log.f64",
    "sqrt": "llvm.sqrt.f64",
    "sin": "llvm.sin.f64",
    "cos": "llvm.cos.f64",
    "abs": "llvm.fabs.f64",
    "log1p": "log1p",
    "expm1": "expm1",
    "tan": "tan",
    "tanh": "tanh",
}
DECLARATIONS = {
    name: f"declare double @{name}(double{', double' if name == 'llvm.pow.f64' else ''})"
    for name in [*_INTRINSICS.values(), "llvm.pow.f64"]
}

Emit = Callable[[str, list[str]], list[str]]


def _binary(instruction: str) -> Emit:
    return lambda d, o: [f"{d} = {instruction} double {o[0]}, {o[1]}"]


def _call(function: str) -> Emit:
    return lambda d, o: [f"{d} = call double @{function}(double {o[0]})"]


def _exp_minus_abs(d: str, x: str) -> list[str]:
    """%d.e = exp(-|x|)"""
    return [
        f"{d}.abs = call double @llvm.fabs.f64(double {x})",
        f"{d}.neg = fneg double {d}.abs",
        f"{d}.e = call double @llvm.exp.f64(double {d}.neg)",
    ]


def _sigmoid(d: str, o: list[str]) -> list[str]:
    x = o[0]  # e = exp(-|x|); r = 1 / (1 + e); x >= 0 ? r : e * r
    return [
        *_exp_minus_abs(d, x),
        f"{d}.den = fadd double {ONE}, {d}.e",
        f"{d}.r = fdiv double {ONE}, {d}.den",
        f"{d}.er = fmul double {d}.e, {d}.r",
        f"{d}.pos = fcmp oge double {x}, {ZERO}",
        f"{d} = select i1 {d}.pos, double {d}.r, double {d}.er",
    ]


def _softplus_like(positive: bool) -> Emit:
    # softplus: (x > 0 ? x : 0) + log1p(exp(-|x|)); logsigmoid: (x < 0 ? x : 0) - log1p(...)
    def emit(d: str, o: list[str]) -> list[str]:
        x = o[0]
        return [
            *_exp_minus_abs(d, x),
            f"{d}.l = call double @log1p(double {d}.e)",
            f"{d}.c = fcmp {'ogt' if positive else 'olt'} double {x}, {ZERO}",
            f"{d}.p = select i1 {d}.c, double {x}, double {ZERO}",
            f"{d} = {'fadd' if positive else 'fsub'} double {d}.p, {d}.l",
        ]

    return emit


def _extremum(order: str) -> Emit:
    # np.maximum/np.minimum: a + b (nan) if either is nan, else a >= b ? a : b (a <= b for min)
    def emit(d: str, o: list[str]) -> list[str]:
        a, b = o
        return [
            f"{d}.nan = fcmp uno double {a}, {b}",
            f"{d}.sum = fadd double {a}, {b}",
            f"{d}.c = fcmp {order} double {a}, {b}",
            f"{d}.m = select i1 {d}.c, double {a}, double {b}",
            f"{d} = select i1 {d}.nan, double {d}.sum, double {d}.m",
        ]

    return emit


def _sign(d: str, o: list[str]) -> list[str]:
    x = o[0]  # x > 0 ? 1 : x < 0 ? -1 : x * 0 (0 for ±0, nan for nan)
    return [
        f"{d}.z = fmul double {x}, {ZERO}",
        f"{d}.lt = fcmp olt double {x}, {ZERO}",
        f"{d}.n = select i1 {d}.lt, double {MINUS_ONE}, double {d}.z",
        f"{d}.gt = fcmp ogt double {x}, {ZERO}",
        f"{d} = select i1 {d}.gt, double {ONE}, double {d}.n",
    ]


def _heaviside(d: str, o: list[str]) -> list[str]:
    x, h = o  # x > 0 ? 1 : x < 0 ? 0 : x == 0 ? h : x (nan)
    return [
        f"{d}.eq = fcmp oeq double {x}, {ZERO}",
        f"{d}.h = select i1 {d}.eq, double {h}, double {x}",
        f"{d}.lt = fcmp olt double {x}, {ZERO}",
        f"{d}.l = select i1 {d}.lt, double {ZERO}, double {d}.h",
        f"{d}.gt = fcmp ogt double {x}, {ZERO}",
        f"{d} = select i1 {d}.gt, double {ONE}, double {d}.l",
    ]


def _relu(d: str, o: list[str]) -> list[str]:
    x = o[0]  # x > 0 or x is nan ? x : 0
    return [
        f"{d}.c = fcmp ugt double {x}, {ZERO}",
        f"{d} = select i1 {d}.c, double {x}, double {ZERO}",
    ]


def _xlogy(d: str, o: list[str]) -> list[str]:
    x, y = o  # x == 0 and y is not nan ? 0 : x * log(y)
    return [
        f"{d}.log = call double @llvm.log.f64(double {y})",
        f"{d}.p = fmul double {x}, {d}.log",
        f"{d}.z = fcmp oeq double {x}, {ZERO}",
        f"{d}.o = fcmp ord double {y}, {ZERO}",
        f"{d}.c = and i1 {d}.z, {d}.o",
        f"{d} = select i1 {d}.c, double {ZERO}, double {d}.p",
    ]


OPS: dict[str, Emit] = {
    "add": _binary("fadd"),
    "sub": _binary("fsub"),
    "mul": _binary("fmul"),
    "div": _binary("fdiv"),
    "pow": lambda d, o: [f"{d} = call double @llvm.pow.f64(double {o[0]}, double {o[1]})"],
    "neg": lambda d, o: [f"{d} = fneg double {o[0]}"],
    **{name: _call(function) for name, function in _INTRINSICS.items()},
    "sign": _sign,
    "sigmoid": _sigmoid,
    "softplus": _softplus_like(True),
    "logsigmoid": _softplus_like(False),
    "relu": _relu,
    "maximum": _extremum("oge"),
    "minimum": _extremum("ole"),
    "heaviside": _heaviside,
    "xlogy": _xlogy,
}

#: Instructions each op costs, for cutting chunks (a gate's expansion counts its ops).
_COST = {name: len(emit("%d", ["%a", "%b"])) for name, emit in OPS.items()}


@dataclass(frozen=True)
class EntryIR:
    """One entry's LLVM IR and how the entry's arguments feed its driver.

    The entry is called with its given values then its output buffers (``Entry.given`` then
    ``Entry.outputs``); ``arrays`` lists the positions of those whose addresses go in the
    driver's ``arrays`` table, ``scalars`` the positions of scalar inputs, ``sums`` the positions
    of the one-element buffers that receive the totals (``partial`` has ``len(sums)`` columns).
    ``functions`` are the chunks' definitions, ``driver`` the driver's (``symbol``): ``text``
    is them as one module, ``modules(k)`` as ``k`` modules to compile side by side.
    """

    header: str
    declarations: tuple[str, ...]
    functions: tuple[str, ...]
    driver: str
    symbol: str
    block: int
    rows: int
    arrays: tuple[int, ...]
    scalars: tuple[int, ...]
    sums: tuple[int, ...]

    @property
    def text(self) -> str:
        return "\n".join([self.header, "", *self.declarations, "", *self.functions, self.driver])

    def modules(self, count: int) -> list[str]:
        """The entry as ``count`` modules (fewer if it has fewer chunks): contiguous runs of
        chunks, the driver in the first, which declares the chunks the others define."""
        count = max(1, min(count, len(self.functions)))
        bounds = [len(self.functions) * k // count for k in range(count + 1)]
        common = [self.header, *self.declarations, ""]
        texts = []
        for k in range(count):
            texts.append("\n".join([*common, *self.functions[bounds[k] : bounds[k + 1]]]))
        chunk_decls = [
            f"declare void @{self.symbol}.{c + 1}(i64, i64, ptr, ptr, ptr, ptr)"
            for c in range(bounds[1], len(self.functions))
        ]
        texts[0] = "\n".join([texts[0], *chunk_decls, "", self.driver, ""])
        return texts


def _ident(name: str) -> str:
    """An LLVM local name for a node: letters, digits and underscores (never a leading dot,
    which the writer's own names use)."""
    ident = re.sub(r"[^A-Za-z0-9_]", "_", name.encode("ascii", "backslashreplace").decode())
    return ident or "v"


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

    def __init__(self, adj: AdjointGraph, entry: Entry, title: str = "", chunk: int | None = None):
        self.adj, self.entry, self.title = adj, entry, title
        self.limit = CHUNK_INSTRUCTIONS if chunk is None else chunk
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
        taken: set[str] = set()
        self.ident: dict[int, str] = {}
        wanted = [g for g, _ in entry.given] + list(entry.nodes)
        for i in wanted:
            base = _ident(adj.names[i])
            ident, k = base, 1
            while ident in taken:
                ident, k = f"{base}_{k}", k + 1
            taken.add(ident)
            self.ident[i] = ident
        self.declared: set[str] = set()
        self.nodes = nodes

    # ------------------------------------------------------------------ emitting one op
    def op_lines(self, op: str, dst: str, operands: list[str]) -> list[str]:
        """IR defining ``%dst`` as ``op(*operands)``; a gate the table lacks is expanded."""
        emit = OPS.get(op)
        if emit is not None:
            lines = emit(f"%{dst}", operands)
            for line in lines:
                for name in re.findall(r"@([\w.]+)\(", line):
                    self.declared.add(name)
            return lines
        from runtime.instant.program import _template

        template = _template(op)
        values: dict[int, str] = {}
        placeholders = dict(zip("abc", operands))
        for t, node in enumerate(template.nodes):
            if node.op == "input":
                values[t] = placeholders[node.value]
            elif node.op == CONST:
                values[t] = literal(node.value)
        lines: list[str] = []
        for t in template.op_nodes():
            node = template.nodes[t]
            name = f"{dst}.g{t}"
            lines += self.op_lines(node.op, name, [values[a] for a in node.args])
            values[t] = f"%{name}"
        result = values[template.outputs[0]]
        lines.append(f"%{dst} = fadd double {result}, {MINUS_ZERO}")  # x + -0 is x, even -0
        return lines

    def cost(self, op: str) -> int:
        if op in _COST:
            return _COST[op]
        from runtime.instant.program import _template

        template = _template(op)
        return 1 + sum(self.cost(template.nodes[t].op) for t in template.op_nodes())

    # ------------------------------------------------------------------ chunks
    def cut(self) -> list[list[int]]:
        chunks: list[list[int]] = [[]]
        size = 0
        for i in self.entry.nodes:
            c = self.cost(self.nodes[i].op)
            if chunks[-1] and size + c > self.limit:
                chunks.append([])
                size = 0
            chunks[-1].append(i)
            size += c
        return chunks

    def write(self) -> EntryIR:
        entry, nodes = self.entry, self.nodes
        chunks = self.cut()
        where = {i: k for k, chunk in enumerate(chunks) for i in chunk}
        last_use: dict[int, int] = {}  # computed node read by a later chunk -> last such chunk
        for k, chunk in enumerate(chunks):
            for i in chunk:
                for a in nodes[i].args:
                    if a in where and where[a] < k:
                        last_use[a] = k
        # Temporary rows: a row is free for the chunks after the one that reads its value last
        # (that chunk reads it where it needs it, so it must not write the row itself).
        frees: dict[int, list[int]] = {}
        for a, k in last_use.items():
            frees.setdefault(k, []).append(a)
        slot: dict[int, int] = {}
        free: list[int] = []
        rows = 0
        for k, chunk in enumerate(chunks):
            for i in chunk:
                if i in last_use:
                    if free:
                        slot[i] = free.pop()
                    else:
                        slot[i], rows = rows, rows + 1
            free += sorted((slot[a] for a in frees.get(k, ())), reverse=True)
        block = block_length(rows, TEMP_BUDGET, MIN_BLOCK, MAX_BLOCK)
        prefix = _ident(entry.name)
        functions: list[str] = []
        for k, chunk in enumerate(chunks):
            after = chunks[k - 1][-1] if k else -1
            functions.append(self.chunk(f"{prefix}.{k + 1}", k, chunk, slot, after, block))
        driver = self.driver(prefix, len(chunks), block)
        title = self.title.replace("\n", " ")
        header = (
            f"; symgrad {entry.name} for {title!r}: {len(entry.nodes)} nodes in {len(chunks)} "
            f"chunks, {rows} temporary rows, blocks of {block} points"
        )
        return EntryIR(
            header=header,
            declarations=tuple(DECLARATIONS[name] for name in sorted(self.declared)),
            functions=tuple(functions),
            driver=driver,
            symbol=prefix,
            block=block,
            rows=rows,
            arrays=tuple(self.arrays),
            scalars=tuple(self.scalars),
            sums=tuple(self.sums),
        )

    def chunk(self, name, k, chunk, slot, after, block) -> str:
        c = _Chunk()
        nodes = self.nodes

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
                return literal(node.value)
            ident = self.ident[a]
            if a in self.given:
                pos, kind = self.given[a]
                if kind == "s":
                    at = self.scalar_index[pos]
                    c.pre += [
                        f"%{ident}.at = getelementptr double, ptr %scalars, i64 {at}",
                        f"%{ident} = load double, ptr %{ident}.at",
                    ]
                else:
                    c.indexed = True
                    c.body += [
                        f"%{ident}.at = getelementptr double, ptr {base(pos)}, i64 %.i",
                        f"%{ident} = load double, ptr %{ident}.at",
                    ]
            else:  # computed by an earlier chunk: its temporary row
                s = slot[a]
                c.pre.append(f"%.row{s} = getelementptr double, ptr %temps, i64 {s * block}")
                c.body += [
                    f"%{ident}.at = getelementptr double, ptr %.row{s}, i64 %.j",
                    f"%{ident} = load double, ptr %{ident}.at",
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
                        f"{tag}.at = getelementptr double, ptr {out}, i64 %.i",
                        f"store double {value}, ptr {tag}.at",
                    ]
                else:
                    acc = c.sums.get(column)
                    new = f"%.s{column}.n{len(c.body)}"
                    if acc is None:
                        c.phis.append((column, new))
                        acc = f"%.s{column}.0"
                    c.body.append(f"{new} = fadd double {acc}, {value}")
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
            if len(lines) > 1 or note:
                text = self.adj.line(i) if hasattr(self.adj, "line") else ident
                c.body.append(f"; {text}{'  # fused: ' + note if note else ''}")
            c.body += lines
            c.names[i] = f"%{ident}"
            if i in slot:
                s = slot[i]
                c.pre.append(f"%.row{s} = getelementptr double, ptr %temps, i64 {s * block}")
                c.body += [
                    f"%.t{ident}.at = getelementptr double, ptr %.row{s}, i64 %.j",
                    f"store double %{ident}, ptr %.t{ident}.at",
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
        pre = list(dict.fromkeys(c.pre))
        lines = [
            f"define void @{name}(i64 %lo, i64 %m, ptr noalias %arrays, "
            "ptr noalias %scalars, ptr noalias %temps, ptr noalias %sums) noinline nounwind {",
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
            "  ret void",
            "}",
            "",
        ]
        return "\n".join(lines)

    def driver(self, name: str, chunks: int, block: int) -> str:
        n_sums = len(self.sums)
        calls = [
            f"  call void @{name}.{k + 1}(i64 %lo, i64 %m, ptr %arrays, ptr %scalars, "
            "ptr %temps, ptr %sums)"
            for k in range(chunks)
        ]
        lines = [
            f"define void @{name}(i64 %first, i64 %last, i64 %n, ptr %arrays, ptr %scalars, "
            "ptr %temps, ptr %partial) nounwind {",
            "entry:",
            "  %any = icmp slt i64 %first, %last",
            "  br i1 %any, label %loop, label %exit",
            "loop:",
            "  %b = phi i64 [%first, %entry], [%b.next, %loop]",
            f"  %lo = mul i64 %b, {block}",
            "  %rest = sub i64 %n, %lo",
            f"  %short = icmp slt i64 %rest, {block}",
            f"  %m = select i1 %short, i64 %rest, i64 {block}",
            f"  %row = mul i64 %b, {n_sums}",
            "  %sums = getelementptr double, ptr %partial, i64 %row",
            *calls,
            "  %b.next = add i64 %b, 1",
            "  %done = icmp eq i64 %b.next, %last",
            "  br i1 %done, label %exit, label %loop",
            "exit:",
            "  ret void",
            "}",
        ]
        return "\n".join(lines)


def generate_entry(
    adj: AdjointGraph, entry: Entry, title: str = "", chunk: int | None = None
) -> EntryIR:
    """The LLVM module of ``entry`` (``chunk`` overrides ``CHUNK_INSTRUCTIONS``)."""
    return EntryWriter(adj, entry, title, chunk).write()

"""Source of the instant tier's virtual machine: LLVM IR generated from the op table.

One op, one place: each op's case in the dispatch loop calls the op's lowering
(``compiler.codegen.llvm_ops``: ``OpDef.lower`` printed as an ``internal alwaysinline`` function,
with ``vector=False``: the C library's exp, sin and cos, faster in this scalar dispatch loop; the
machine has no per-block rerun for a fast form's exact path) on the elements of block registers,
and its op code is its position in the table. Adding an op there adds it here with no edit: the
machine is built for the table as it is (``table_key``), so an op registered at run time gets
a machine that has it. The machine is compiled once per machine by llvmlite with LLVM's
O3 pipeline (its loops are vectorised), cached on disk as object code (``runtime.llvm_jit``): a
new process loads it in milliseconds and needs no Numba at all.

The machine follows numexpr's design. A *program* is an int64 array of instructions
``[op, dst, a, b, ...]`` over registers; a register holds one block of elements. ``run`` splits
the index range into blocks; each block runs the whole program on its register file. Four
instructions besides the ops move data: ``LOAD_ARRAY`` (a block of an input array),
``LOAD_SCALAR`` (a scalar input or a constant, broadcast), ``STORE`` (a register into an output
array) and ``SUM`` (a register's sum into the block's partial sums, for gradients of scalar
inputs; the partial sums are added in block order, so totals don't depend on threads).

A float32 machine (``generate("float32")``) is a second machine, the same text at ``float``
width: its registers, arrays, scalars and constants are float32 and its cases call the ops'
``@op.<name>.f32`` functions (the same lowerings). ``SUM`` widens each value and adds in double
into the double partial sums, which the caller rounds to float32 once.
"""

from __future__ import annotations

import hashlib

from compiler.codegen import llvm_ops
from compiler.codegen.audit import check_llvm
from compiler.ir.registry import OPS, OpDef, fingerprint, version

#: Data-moving instructions, numbered after the ops.
MACHINE = ("LOAD_ARRAY", "LOAD_SCALAR", "STORE", "SUM")
PLACEHOLDERS = "abc"
SYMBOL = "symgrad_vm"

#: ``run``'s arguments, in order (all i64 or pointers).
ARGUMENTS = (
    "ptr %code, i64 %n_code, i64 %block, i64 %first, i64 %last, i64 %n, "
    "ptr %addresses, ptr %scalars, ptr %partial, i64 %n_sums, ptr %regs"
)


def builtin_ops() -> list[OpDef]:
    """The ops the machine implements: the table's entries with a lowering that are not gates
    made at run time (ops ``registry.register`` adds included). An entry without a lowering is
    left out, so it fails alone (``LoweringError`` when a program uses it), not the machine.

    Gates a user registers or fusion discovers at run time are not among them — the machine would
    otherwise be recompiled for each — the program expands them into the ops they are made of.
    """
    return [op for op in OPS.values() if op.origin == "builtin" and op.lower is not None]


def table_key() -> str:
    """The table the machine is built for: its ops and the fingerprints of those added at run
    time (``registry.fingerprint``): a machine is made for each table it meets."""
    # The version moves with register/unregister; the size also catches an entry put in the
    # table by hand (a test's monkeypatch), which shifts the op codes of what follows it.
    now = (version(), len(OPS))
    if now not in _TABLE_KEY:  # once per change of the table (a call reads it)
        text = "|".join(f"{op.name}:{fingerprint(op.name)}" for op in builtin_ops())
        _TABLE_KEY.clear()
        _TABLE_KEY[now] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return _TABLE_KEY[now]


_TABLE_KEY: dict[tuple[int, int], str] = {}


def opcodes() -> dict[str, int]:
    """Op code of every built-in op and machine instruction (registry order, then ``MACHINE``)."""
    names = [*(op.name for op in builtin_ops()), *MACHINE]
    return {name: code for code, name in enumerate(names)}


def width() -> int:
    """Columns of an instruction: op, destination, then the widest op's operands."""
    return 2 + max(1, *(op.arity for op in builtin_ops()))


def _loop(label: str, body: list[str], before: tuple[str, ...] = (), after: tuple[str, ...] = ()):
    """Case ``label``: ``before``, then ``for j in range(m): body`` (``%{label}.j`` is j), then
    ``after``, then on to the next instruction."""
    j = f"%{label}.j"
    return [
        f"{label}:",
        *(f"  {line}" for line in before),
        f"  %{label}.none = icmp sle i64 %m, 0",
        f"  br i1 %{label}.none, label %{label}.done, label %{label}.loop",
        f"{label}.loop:",
        f"  {j} = phi i64 [ 0, %{label} ], [ %{label}.next, %{label}.loop ]",
        *(f"  {line}" for line in body),
        f"  %{label}.next = add nuw nsw i64 {j}, 1",
        f"  %{label}.more = icmp slt i64 %{label}.next, %m",
        f"  br i1 %{label}.more, label %{label}.loop, label %{label}.done",
        f"{label}.done:",
        *(f"  {line}" for line in after),
        "  br label %next",
    ]


def _at(label: str, base: str, index: str, t: str = "double") -> str:
    """``%{label}.{base}.p = &base[index]`` (elements of type ``t``); ``array`` is the case's
    own (``_array``)."""
    pointer = f"%{label}.array" if base == "array" else f"%{base}"
    return f"%{label}.{base}.p = getelementptr inbounds {t}, ptr {pointer}, i64 {index}"


def _op_case(label: str, name: str, dtype: str = "float64") -> list[str]:
    """``dst[j] = op(a[j], b[j])``: a call of the op's function."""
    t = llvm_ops.type_name(dtype)
    body: list[str] = []
    operands = []
    for p in PLACEHOLDERS[: OPS[name].arity]:
        body += [_at(label, p, f"%{label}.j", t), f"%{label}.{p}.v = load {t}, ptr %{label}.{p}.p"]
        operands.append(f"{t} %{label}.{p}.v")
    function = llvm_ops.op_function(name, vector=False, tier="instant", dtype=dtype)
    body += [
        f"%{label}.r = call {t} @{function.symbol}({', '.join(operands)})",
        _at(label, "dst", f"%{label}.j", t),
        f"store {t} %{label}.r, ptr %{label}.dst.p",
    ]
    return _loop(label, body)


def _array(label: str) -> tuple[str, ...]:
    """``%{label}.array``: the array whose address is entry ``field2`` of ``addresses``."""
    return (
        f"%{label}.q = getelementptr inbounds i64, ptr %addresses, i64 %field2",
        f"%{label}.a = load i64, ptr %{label}.q",
        f"%{label}.array = inttoptr i64 %{label}.a to ptr",
    )


def _machine_cases(t: str = "double") -> dict[str, list[str]]:
    """The data-moving instructions' cases at element type ``t``; ``field2`` is their operand.
    ``SUM`` adds in double whatever ``t``."""
    load_array = [
        "%load.i = add i64 %lo, %load.j",
        _at("load", "array", "%load.i", t),
        f"%load.v = load {t}, ptr %load.array.p",
        _at("load", "dst", "%load.j", t),
        f"store {t} %load.v, ptr %load.dst.p",
    ]
    scalar = (
        f"%value.q = getelementptr inbounds {t}, ptr %scalars, i64 %field2",
        f"%value = load {t}, ptr %value.q",
    )
    broadcast = [_at("bcast", "dst", "%bcast.j", t), f"store {t} %value, ptr %bcast.dst.p"]
    store = [
        _at("store", "dst", "%store.j", t),
        f"%store.v = load {t}, ptr %store.dst.p",
        "%store.i = add i64 %lo, %store.j",
        _at("store", "array", "%store.i", t),
        f"store {t} %store.v, ptr %store.array.p",
    ]
    widen = [] if t == "double" else [f"%sum.w = fpext {t} %sum.v to double"]
    total = [
        "%sum.acc = phi double [ 0.0, %sum ], [ %sum.acc.next, %sum.loop ]",
        _at("sum", "dst", "%sum.j", t),
        f"%sum.v = load {t}, ptr %sum.dst.p",
        *widen,
        f"%sum.acc.next = fadd double %sum.acc, %sum.{'w' if widen else 'v'}",
    ]
    add_total = (
        "%sum.t = phi double [ 0.0, %sum ], [ %sum.acc.next, %sum.loop ]",
        "%sum.q = getelementptr inbounds double, ptr %sums, i64 %field2",
        "%sum.old = load double, ptr %sum.q",
        "%sum.new = fadd double %sum.old, %sum.t",
        "store double %sum.new, ptr %sum.q",
    )
    return {
        "LOAD_ARRAY": _loop("load", load_array, before=_array("load")),
        "LOAD_SCALAR": _loop("bcast", broadcast, before=scalar),
        "STORE": _loop("store", store, before=_array("store")),
        "SUM": _loop("sum", total, after=add_total),
    }


def generate(dtype: str = "float64") -> str:
    """The machine's module: ``@symgrad_vm`` runs a program on blocks [first, last) of range(n)
    with the register file ``regs`` (n_regs × block elements of ``dtype``: ``"float64"`` or
    ``"float32"``, as are the arrays and ``scalars``); block i adds its SUMs into the doubles
    ``partial[i * n_sums + q]``."""
    t = llvm_ops.type_name(dtype)
    codes, columns = opcodes(), width()
    cases: list[str] = []
    for op in builtin_ops():
        cases += _op_case(f"op{codes[op.name]}", op.name, dtype)
    names = [op.name for op in builtin_ops()]
    functions = llvm_ops.functions_for(names, False, tier="instant", dtype=dtype)
    declared = llvm_ops.declarations(functions)
    for lines in _machine_cases(t).values():
        cases += lines
    labels = {op.name: f"op{codes[op.name]}" for op in builtin_ops()}
    labels.update(LOAD_ARRAY="load", LOAD_SCALAR="bcast", STORE="store", SUM="sum")
    switch = " ".join(f"i64 {codes[name]}, label %{label}" for name, label in labels.items())
    fields = []
    for f in range(1, columns):
        fields += [
            f"  %field{f}.p = getelementptr inbounds i64, ptr %row, i64 {f}",
            f"  %field{f} = load i64, ptr %field{f}.p",
        ]
    registers = ["dst", *PLACEHOLDERS[: columns - 2]]
    for r, name in enumerate(registers):
        fields += [
            f"  %{name}.o = mul i64 %field{r + 1}, %block",
            f"  %{name} = getelementptr inbounds {t}, ptr %regs, i64 %{name}.o",
        ]
    lines = [
        "; symgrad's instant-tier virtual machine (generated from the op table: edit the table,",
        "; not this text). No fast-math flags: nan and inf come out as NumPy computes them.",
        *(
            []
            if dtype == "float64"
            else [f"; {dtype}: registers, arrays and scalars; sums in double."]
        ),
        "",
        *declared.values(),
        "",
        *(f.text for f in functions),
        "",
        f"define void @{SYMBOL}({ARGUMENTS}) {{",
        "entry:",
        "  br label %blocks",
        "blocks:",
        "  %index = phi i64 [ %first, %entry ], [ %index.next, %block.end ]",
        "  %any = icmp slt i64 %index, %last",
        "  br i1 %any, label %block.start, label %exit",
        "block.start:",
        "  %lo = mul i64 %index, %block",
        "  %rest = sub i64 %n, %lo",
        "  %short = icmp slt i64 %rest, %block",
        "  %m = select i1 %short, i64 %rest, i64 %block",
        "  %sums.o = mul i64 %index, %n_sums",
        "  %sums = getelementptr inbounds double, ptr %partial, i64 %sums.o",
        "  br label %fetch",
        "fetch:",
        "  %k = phi i64 [ 0, %block.start ], [ %k.next, %next ]",
        "  %more = icmp slt i64 %k, %n_code",
        "  br i1 %more, label %decode, label %block.end",
        "decode:",
        f"  %row.o = mul i64 %k, {columns}",
        "  %row = getelementptr inbounds i64, ptr %code, i64 %row.o",
        "  %op = load i64, ptr %row",
        *fields,
        f"  switch i64 %op, label %next [ {switch} ]",
        *cases,
        "next:",
        "  %k.next = add nuw nsw i64 %k, 1",
        "  br label %fetch",
        "block.end:",
        "  %index.next = add nsw i64 %index, 1",
        "  br label %blocks",
        "exit:",
        "  ret void",
        "}",
    ]
    text = "\n".join(lines) + "\n"
    own = {SYMBOL, *(f.symbol for f in functions)}
    return check_llvm(text, own, set(declared))  # no input's text is in it: a guard

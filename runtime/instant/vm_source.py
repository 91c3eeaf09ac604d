"""Source of the instant tier's virtual machine, generated from the op registry.

One op, one place: each op's case in the dispatch loop is its registry ``code`` template applied
to block registers (``a[j]``), and its op code is its position in the registry. Adding an op to
the registry adds it here with no edit; the generated module is cached on disk, keyed by the
registry's content, and compiled by Numba once per machine.

The machine follows numexpr's design. A *program* is an int64 array of instructions
``[op, dst, a, b, ...]`` over registers; a register holds one block of elements. ``run`` splits the
index range into blocks, spread over threads with ``prange``; each block gets its own register file
and runs the whole program. Four instructions besides the ops move data: ``LOAD_ARRAY`` (a block of
an input array), ``LOAD_SCALAR`` (a scalar input or a constant, broadcast), ``STORE`` (a register
into an output array) and ``SUM`` (a register's sum into the block's partial sums, for gradients
of scalar inputs; the partial sums are added in block order, so totals don't depend on threads).
"""

from __future__ import annotations

import hashlib

from compiler.ir.registry import OPS, OpDef

#: Data-moving instructions, numbered after the ops.
MACHINE = ("LOAD_ARRAY", "LOAD_SCALAR", "STORE", "SUM")
PLACEHOLDERS = "abc"


def builtin_ops() -> list[OpDef]:
    """The ops the machine implements: the registry's built-in entries.

    Gates a user registers or fusion discovers at run time are not among them — the machine would
    otherwise be recompiled for each — the program expands them into the ops they are made of.
    """
    return [op for op in OPS.values() if op.origin == "builtin"]


def opcodes() -> dict[str, int]:
    """Op code of every built-in op and machine instruction (registry order, then ``MACHINE``)."""
    names = [*(op.name for op in builtin_ops()), *MACHINE]
    return {name: code for code, name in enumerate(names)}


def width() -> int:
    """Columns of an instruction: op, destination, then the widest op's operands."""
    return 2 + max(1, *(op.arity for op in builtin_ops()))


def registry_key() -> str:
    """What the generated machine depends on in the registry: names, arities, code, helpers."""
    text = repr([(op.name, op.arity, op.code, op.helpers) for op in builtin_ops()])
    return hashlib.sha256(text.encode()).hexdigest()


def _op_case(code: int, name: str) -> list[str]:
    spec = OPS[name]
    names = PLACEHOLDERS[: spec.arity]
    operands = {p: f"{p}[j]" for p in names}
    return [
        f"            elif op == {code}:  # {name}: {spec.text.format(**{p: p for p in names})}",
        *(f"                {p} = regs[code[k, {2 + q}]]" for q, p in enumerate(names)),
        "                for j in range(m):",
        f"                    dst[j] = {spec.code.format(**operands)}",
    ]


def generate() -> str:
    """The machine's module source."""
    codes = opcodes()
    ops = builtin_ops()
    helpers = sorted({h for op in ops for h in op.helpers})
    cases: list[str] = []
    for op in ops:
        cases += _op_case(codes[op.name], op.name)
    lines = [
        '"""symgrad\'s instant-tier virtual machine (generated from the op registry: edit the',
        'registry, not this file)."""',
        "",
        "import math",
        "",
        "import numpy as np",
        "from numba import njit",
        "",
        "from runtime.instant.memory import as_array",
        *([f"from runtime.scalar import {', '.join(helpers)}"] if helpers else []),
        "",
        "# No fastmath: nan and inf survive as NumPy computes them; nogil: a background compile",
        "# can run while the machine does.",
        'FLAGS = dict(cache=True, error_model="numpy", nogil=True)',
        f"OPCODES = {codes!r}",
        f"WIDTH = {width()}",
        "",
        "",
        "@njit(**FLAGS)",
        "def run(code, n_regs, block, first, last, n, addresses, scalars, partial):",
        '    """Run the program on blocks [first, last) of range(n), one register file for all;',
        '    block number i adds its SUMs into partial[i]."""',
        "    regs = np.empty((n_regs, block))",
        "    for index in range(first, last):",
        "        lo = index * block",
        "        m = min(block, n - lo)",
        "        sums = partial[index]",
        "        for k in range(code.shape[0]):",
        "            op = code[k, 0]",
        "            dst = regs[code[k, 1]]",
        f"            if op == {codes['LOAD_ARRAY']}:  # dst = input[lo:lo + m]",
        "                src = as_array(addresses[code[k, 2]], n)",
        "                for j in range(m):",
        "                    dst[j] = src[lo + j]",
        f"            elif op == {codes['LOAD_SCALAR']}:  # dst = scalar (broadcast)",
        "                value = scalars[code[k, 2]]",
        "                for j in range(m):",
        "                    dst[j] = value",
        f"            elif op == {codes['STORE']}:  # output[lo:lo + m] = register",
        "                out = as_array(addresses[code[k, 2]], n)",
        "                for j in range(m):",
        "                    out[lo + j] = dst[j]",
        f"            elif op == {codes['SUM']}:  # sums[q] += sum(register)",
        "                total = 0.0",
        "                for j in range(m):",
        "                    total += dst[j]",
        "                sums[code[k, 2]] += total",
        *cases,
    ]
    return "\n".join(lines) + "\n"

"""The driver of an entry's LLVM module: runs blocks of points through the chunk functions.

``@<entry>(first, last, n, arrays, scalars, temps, partial)`` runs blocks ``[first, last)`` of
``range(n)`` through the chunks in order; a chunk with a fast form (sin, cos) returns whether a
point of the block needs the exact path, and then the block runs again through the chunks'
exact twins. ``EntryIR`` holds the whole module and cuts it into modules compiled side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

#: What the driver declares when a block may run again (it zeroes the block's partial sums).
MEMSET = ("llvm.memset.p0.i64", "declare void @llvm.memset.p0.i64(ptr, i8, i64, i1)")


@dataclass(frozen=True)
class EntryIR:
    """One entry's LLVM IR and how the entry's arguments feed its driver.

    The entry is called with its given values then its output buffers (``Entry.given`` then
    ``Entry.outputs``); ``arrays`` lists the positions of those whose addresses go in the
    driver's ``arrays`` table, ``scalars`` the positions of scalar inputs, ``sums`` the positions
    of the one-element buffers that receive the totals (``partial`` has ``len(sums)`` columns).
    ``functions`` are the chunks' definitions (a chunk using sin or cos followed by its exact
    twin), ``ops`` the op functions they call, ``prototypes`` the chunks' declarations, ``driver`` the driver's (``symbol``): ``text``
    is them as one module, ``modules(k)`` as ``k`` modules to compile side by side.
    """

    header: str
    declarations: tuple[str, ...]
    ops: tuple[str, ...]  # the op functions (``compiler.codegen.llvm_ops``), in every module
    functions: tuple[str, ...]
    prototypes: tuple[str, ...]
    driver: str
    symbol: str
    block: int
    rows: int
    arrays: tuple[int, ...]
    scalars: tuple[int, ...]
    sums: tuple[int, ...]
    dtype: str = "float64"  # of the arrays and scalars (the partial sums are double)

    @property
    def text(self) -> str:
        parts = [self.header, "", *self.declarations, "", *self.ops, "", *self.functions]
        return "\n".join([*parts, self.driver])

    def modules(self, count: int) -> list[str]:
        """The entry as ``count`` modules (fewer if it has fewer chunks): contiguous runs of
        chunks, the driver in the first, which declares the chunks the others define."""
        count = max(1, min(count, len(self.functions)))
        bounds = [len(self.functions) * k // count for k in range(count + 1)]
        common = [self.header, *self.declarations, "", *self.ops, ""]
        texts = []
        for k in range(count):
            texts.append("\n".join([*common, *self.functions[bounds[k] : bounds[k + 1]]]))
        chunk_decls = self.prototypes[bounds[1] :]
        texts[0] = "\n".join([texts[0], *chunk_decls, "", self.driver, ""])
        return texts


def driver(name: str, flagged: list[bool], block: int, n_sums: int) -> str:
    """Runs each block through the chunks; if a chunk flags a huge sin or cos argument, runs
    the block again with the exact twins. Outputs and temporaries are simply written again;
    the block's partial sums are zeroed first so that nothing is counted twice."""
    args = "(i64 %lo, i64 %m, ptr %arrays, ptr %scalars, ptr %temps, ptr %sums)"
    calls, rerun, huge = [], [], "false"
    for k, flags in enumerate(flagged):
        chunk = f"@{name}.{k + 1}"
        if flags:
            calls += [f"  %f{k + 1} = call i1 {chunk}{args}"]
            calls += [f"  %huge{k + 1} = or i1 {huge}, %f{k + 1}"]
            huge = f"%huge{k + 1}"
        else:
            calls.append(f"  call void {chunk}{args}")
        rerun.append(f"  call void {chunk}{'.exact' if flags else ''}{args}")
    exact: list[str] = []
    if any(flagged):
        zero = f"  call void @llvm.memset.p0.i64(ptr %sums, i8 0, i64 {8 * n_sums}, i1 false)"
        exact = [
            f"  br i1 {huge}, label %exact, label %next",
            "exact:",
            *([zero] if n_sums else []),
            *rerun,
        ]
    lines = [
        f"define void @{name}(i64 %first, i64 %last, i64 %n, ptr %arrays, ptr %scalars, "
        "ptr %temps, ptr %partial) nounwind {",
        "entry:",
        "  %any = icmp slt i64 %first, %last",
        "  br i1 %any, label %loop, label %exit",
        "loop:",
        "  %b = phi i64 [%first, %entry], [%b.next, %next]",
        f"  %lo = mul i64 %b, {block}",
        "  %rest = sub i64 %n, %lo",
        f"  %short = icmp slt i64 %rest, {block}",
        f"  %m = select i1 %short, i64 %rest, i64 {block}",
        f"  %row = mul i64 %b, {n_sums}",
        "  %sums = getelementptr double, ptr %partial, i64 %row",
        *calls,
        *exact,
        "  br label %next",
        "next:",
        "  %b.next = add i64 %b, 1",
        "  %done = icmp eq i64 %b.next, %last",
        "  br i1 %done, label %exit, label %loop",
        "exit:",
        "  ret void",
        "}",
    ]
    return "\n".join(lines)


def own_symbols(prefix: str, chunks: int) -> set[str]:
    """The functions the module of entry ``prefix`` with ``chunks`` chunks may define."""
    names = {prefix, *(f"{prefix}.{k + 1}" for k in range(chunks))}
    return names | {f"{name}.exact" for name in names}


def prototype(returns: str, name: str) -> str:
    """A chunk's declaration, for the modules that call it without defining it."""
    return f"declare {returns} @{name}(i64, i64, ptr, ptr, ptr, ptr)"

"""What each kernel entry takes, computes and gives: shared by both execution tiers.

A kernel has four entries (``forward``, ``value_and_grad``, ``forward_save``, ``backward``). Each
is a map over the flat index: some nodes are *given* (inputs, the seed, saved residuals), some are
*outputs* (written per element, or summed when their kind is ``"s"``), and the op nodes between
them are computed. The Numba writer prints those nodes as source; the instant tier turns the same
nodes into an instruction array — so both tiers take the same arguments in the same order.

An input's *kind* is ``"a"`` (a flat array indexed per element) or ``"s"`` (one scalar shared by
every element, whose gradient is summed over the loop). A pattern of kinds may end with one more
kind, the value's: ``"s"`` sums the value over the loop too (``forward`` and ``value_and_grad``),
for a total (``Kernel.total_value_and_grad``) that never writes the per-point values.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.ir.graph import INPUT, LEAVES, SEED
from compiler.passes.adjoint import AdjointGraph

ENTRIES = ("forward", "value_and_grad", "forward_save", "backward")


@dataclass(frozen=True)
class Layout:
    """What the entries take and give, by input name."""

    inputs: tuple[str, ...]
    used: tuple[str, ...]  # inputs the forward and value_and_grad read
    backward_reads: tuple[str, ...]  # inputs the backward reads
    wrt: tuple[str, ...]
    saved: tuple[str, ...]  # display names of the residuals
    seeded: bool  # whether the gradients read the seed (a constant function's do not)


@dataclass(frozen=True)
class Entry:
    """One entry: ``given`` (node, kind) are its parameters after ``n``, in order; ``outputs``
    (node, kind) the buffers after them. ``nodes`` are the op nodes it computes, in order."""

    name: str
    given: tuple[tuple[int, str], ...]
    outputs: tuple[tuple[int, str], ...]
    nodes: tuple[int, ...]


def check_kinds(inputs: tuple[str, ...], kinds: str) -> None:
    if len(kinds) not in (len(inputs) + 1, len(inputs) + 2) or set(kinds) - {"a", "s"}:
        raise ValueError(
            f"kinds must be one of 'a'/'s' per input plus the seed (and the value): {kinds!r}"
        )


def value_kind(inputs: tuple[str, ...], kinds: str) -> str:
    """The value's kind: ``"s"`` (summed over the points) if the pattern says so, else ``"a"``."""
    return kinds[len(inputs) + 1] if len(kinds) > len(inputs) + 1 else "a"


def plan(adj: AdjointGraph, inputs: tuple[str, ...], kinds: str) -> tuple[Layout, list[Entry]]:
    """The layout and the entries of a kernel for ``adj`` with these input kinds (+ the seed's).

    ``backward`` is left out when there is nothing to differentiate.
    """
    check_kinds(inputs, kinds)
    kind = dict(zip(inputs, kinds))
    idx = {n.value: i for i, n in enumerate(adj.nodes) if n.op == INPUT}
    seed = next((i for i, n in enumerate(adj.nodes) if n.op == SEED), None)
    value, grads = adj.outputs[0], adj.outputs[1:]
    # The inputs any output reads: for a first-order graph exactly those the value reads (its
    # gradients are built from the value's nodes); a Hessian-vector graph's gradients also read
    # the direction ``v``, which its value (f) does not.
    fwd_live = adj.reachable(adj.outputs)
    bwd_reads = {a for i in adj.backward_nodes() for a in adj.nodes[i].args}
    bwd_reads.update(grads)
    layout = Layout(
        inputs=inputs,
        used=tuple(n for n in inputs if n in idx and fwd_live[idx[n]]),
        backward_reads=tuple(n for n in inputs if idx.get(n) in bwd_reads),
        wrt=adj.wrt,
        saved=adj.saved,
        seeded=seed is not None,
    )

    def ins(names):
        return [(idx[n], kind[n]) for n in names]

    seed_in = [(seed, kinds[len(inputs)])] if seed is not None else []
    saved = [(s, "a") for s in adj.saved_nodes]
    grad_outs = [(g, kind[w]) for g, w in zip(grads, adj.wrt)]
    out = (value, value_kind(inputs, kinds))
    specs = {
        "forward": (ins(layout.used), [out]),
        "value_and_grad": (ins(layout.used) + seed_in, [out, *grad_outs]),
        "forward_save": (ins(layout.used), [(value, "a"), *saved]),
        "backward": (saved + ins(layout.backward_reads) + seed_in, grad_outs),
    }
    entries = [
        Entry(name, tuple(given), tuple(outputs), computed(adj, given, outputs))
        for name, (given, outputs) in specs.items()
        if name != "backward" or grads
    ]
    return layout, entries


def computed(adj: AdjointGraph, given, outputs) -> tuple[int, ...]:
    """The op nodes between ``given`` and ``outputs``, in order (a backward sweep that stops at
    the given values, so the backward entry does not recompute the residuals it is handed)."""
    given_nodes = {g for g, _ in given}
    live = [False] * len(adj.nodes)
    for o, _ in outputs:
        live[o] = True
    for i in range(len(adj.nodes) - 1, -1, -1):
        if live[i] and i not in given_nodes:
            for a in adj.nodes[i].args:
                live[a] = True
    return tuple(
        i
        for i, node in enumerate(adj.nodes)
        if live[i] and i not in given_nodes and node.op not in LEAVES
    )


def block_length(rows: int, budget: int, smallest: int, largest: int) -> int:
    """Points per block when each of ``rows`` values keeps a row of temporaries: the largest
    power of two in [smallest, largest] whose rows fit in ``budget`` doubles (they stay in cache)."""
    length = smallest
    while length * 2 <= min(budget // max(rows, 1), largest):
        length *= 2
    return length

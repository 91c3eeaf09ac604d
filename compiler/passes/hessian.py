"""The Hessian of a scalar graph as a sum of outer products of tangents (edge pushing).

For f built of nodes y = φ(a, b, ...), second order is, exactly::

    ∇²f = Σ_nodes ȳ · Σ_{k,l} ∂²φ/∂a_k∂a_l · ∇a_k ∇a_lᵀ

ȳ the node's adjoint (first order's reverse sweep), ∇a the operand's tangent (forward mode,
one sparse vector per node: only the parameters it depends on). Linear nodes (+, −, × by a
constant) add nothing. So the Hessian is a short list of *terms* c · A Bᵀ, each a coefficient
per sample and two sparse tangents, and its cost is the terms' sizes, not the triangle's
(reverse over reverse sweeps the gradient program once per row: ~10 nodes per entry).

A term on a few parameters (a mixture component's own 3 × 3 block) is summed in the kernel's
loop, entry by entry, as a single number's gradient is. A term on many (the log of a sum over
every component: its tangent is dense) is read out per sample — the coefficient and the two
tangents — and summed by the runtime as one matrix product per block of samples, Aᵀ diag(c) B
(``runtime.hessian``): BLAS does the triangle's multiply-adds, the program stays linear in the
graph. Second partials ∂²φ/∂a_k∂a_l come from the op table's ``smooth_grads`` (or ``grads``)
differentiated once more in forward mode, on a one-node graph per op: one place states every
derivative.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from compiler.errors import InputError
from compiler.ir.graph import CONST, INPUT, SEED, Graph, copy_nodes
from compiler.ir.registry import OPS, version
from compiler.ir.tensor import TensorGraph
from compiler.passes.adjoint import AdjointGraph, backpropagate, instantiate_gradient, sweep
from compiler.passes.forward import scaled

#: A term c · A Bᵀ with |A| · |B| up to this many entries is summed in the kernel's loop;
#: a larger one is read out per sample and summed as a matrix product.
SMALL_TERM = 36

Tangent = dict[int, int]  # wrt index -> node


@dataclass(frozen=True)
class Term:
    """A dense term ``c (A Bᵀ + B Aᵀ)`` (``square``: ``c A Aᵀ``, B is A) read out per sample:
    ``c`` through reader ``coefficient``, A and B through the tangents ``a`` and ``b``
    (indices into ``HessianPlan.vectors``)."""

    coefficient: str
    a: int
    b: int
    square: bool


@dataclass(frozen=True)
class Vector:
    """A tangent read out per sample: the wrt indices it covers, and each entry's reader."""

    support: tuple[int, ...]
    readers: tuple[str, ...]


@dataclass
class HessianPlan:
    """What ``hessian`` built: the program, and how its readers make H.

    The program's inputs are the graph's, then ``v_<w>`` (the gradient, summed), ``h_<j>_<k>``
    for the entries summed in the loop (``entries``, j <= k), then the per-sample readers of
    the dense terms: ``hc<t>`` each term's coefficient and ``hu<v>_<i>`` each tangent's
    entries. All are read out as gradients (given 0); the program's ``wrt`` lists them."""

    program: AdjointGraph
    entries: tuple[tuple[int, int], ...]
    vectors: tuple[Vector, ...]
    terms: tuple[Term, ...]

    @property
    def per_sample(self) -> tuple[str, ...]:
        """The readers read per sample (the dense terms'); the others are summed."""
        readers = [t.coefficient for t in self.terms]
        for vector in self.vectors:
            readers.extend(vector.readers)
        return tuple(readers)


def hessian(graph: Graph, wrt: Sequence[str]) -> HessianPlan:
    """The program of ``graph``'s value, gradient and Hessian terms in one pass (see the
    module docstring); ``wrt`` the parameters (inputs of ``graph``)."""
    from compiler.passes.second_order import direction_names

    if isinstance(graph, TensorGraph):
        raise NotImplementedError(
            "the one-pass Hessian program takes elementwise graphs of scalars only; for a "
            "tensor program (shapes=) use hvp, or compile_hessian (one hvp per column)"
        )
    directions = direction_names(graph.inputs, wrt)
    work, adjoints, small, dense = _terms_of(graph, wrt)
    entries = sorted(small)
    keys = [tuple(sorted(t.items())) for _, a, b, _ in dense for t in (a, b)]
    vectors = list(dict.fromkeys(keys))  # each tangent read out once, whatever reads it
    readers = _readers(graph.inputs, entries, len(dense), [len(v) for v in vectors])
    plan = HessianPlan(
        AdjointGraph(),
        tuple(entries),
        tuple(Vector(tuple(j for j, _ in v), r) for v, r in zip(vectors, readers["tangents"])),
        tuple(
            Term(c, vectors.index(keys[2 * t]), vectors.index(keys[2 * t + 1]), term[3])
            for t, (c, term) in enumerate(zip(readers["coefficients"], dense))
        ),
    )
    read = [_sum(work, small[e]) for e in entries]  # each reader's node, in ``work``
    read += [coef for coef, *_ in dense]
    read += [node for v in vectors for _, node in v]
    names = [*readers["entries"], *plan.per_sample]
    zero = work.const(0.0)
    grads = {d: adjoints.get(work.input(w), zero) for w, d in directions.items()}
    _read_out(plan.program, graph.inputs, work, {**grads, **dict(zip(names, read))})
    return plan


def _terms_of(graph: Graph, wrt: Sequence[str]) -> tuple[AdjointGraph, dict, dict, list]:
    """``graph`` copied into a work graph with its adjoints (first order's own sweep: its
    gradient is the kernel's) and tangents, and its terms there: the small ones summed entry by
    entry (``{(j, k): [product nodes]}``), the dense ones as ``(coefficient, tangent A,
    tangent B, square)``."""
    work = AdjointGraph()
    f = work.copy_forward(graph)
    work.outputs, work.n_forward = [f], len(work.nodes)
    params = {work.input(w): j for j, w in enumerate(wrt)}
    guarded: dict[int, bool] = {}
    adjoints = sweep(work, set(params), guarded) if params else {}
    nests = _nests(work)
    tangents = _tangents(work, params, work.n_forward, nests)
    small: dict[tuple[int, int], list[int]] = {}
    dense: list[tuple[int, Tangent, Tangent, bool]] = []
    for v in range(work.n_forward):
        if v not in adjoints or v not in tangents or work.nodes[v].op in (INPUT, CONST, SEED):
            continue
        terms = _nest_terms if v in nests else _terms
        guard = adjoints[v] if guarded.get(v) else None
        for coef, a, b, square in terms(work, v, adjoints[v], tangents, nests):
            coef = _guard(work, guard, coef)
            ta, tb = _guarded(work, guard, tangents[a]), _guarded(work, guard, tangents[b])
            if len(ta) * len(tb) <= SMALL_TERM:
                _accumulate(work, small, coef, ta, tb, square)
            else:
                dense.append((coef, ta, tb, square))
    return work, adjoints, small, dense


def _read_out(adj: AdjointGraph, inputs: Sequence[str], work: AdjointGraph, read: dict) -> None:
    """Fill ``adj``: ``work``'s value, and each node of ``work`` in ``read`` (the seed there is
    1) read out through the input named by its key, given 0, as that input's gradient."""
    for name in (*inputs, *read):
        adj.input(name)
    bound = {work.seed(): adj.const(1.0)} if SEED in {n.op for n in work.nodes} else {}
    roots = [work.outputs[0], *read.values()]
    copied = copy_nodes(work, adj, bound, keep=work.reachable(roots))
    total = adj.const(0.0)
    for name, node in read.items():
        total = adj.add("add", total, adj.add("mul", adj.input(name), copied[node]))
    backpropagate(adj, total, list(read), value=copied[work.outputs[0]])


def _nests(g: AdjointGraph) -> dict[int, list[int] | None]:
    """The nests of ops with a ``nest_weight`` in ``g``'s forward part: ``{root: its leaves}``,
    and ``{inner node: None}`` for the nodes a root stands for (each read only by the next)."""
    readers: list[list[int]] = [[] for _ in range(g.n_forward)]
    for i in range(g.n_forward):
        for a in g.nodes[i].args:
            readers[a].append(i)
    nests: dict[int, list[int] | None] = {}
    for i in range(g.n_forward - 1, -1, -1):
        op = g.nodes[i].op
        if op not in OPS or OPS[op].nest_weight is None or i in nests:
            continue
        leaves, stack = [], list(g.nodes[i].args)
        while stack:
            a = stack.pop()
            if g.nodes[a].op == op and len(readers[a]) == 1 and a not in g.outputs:
                nests[a] = None
                stack.extend(g.nodes[a].args)
            else:
                leaves.append(a)
        nests[i] = leaves
    return nests


def _tangents(
    g: Graph, params: dict[int, int], upto: int, nests: dict | None = None, smooth: bool = False
) -> dict[int, Tangent]:
    """The tangent of each node before ``upto``: ``{wrt index: node}`` over the parameters
    (``{node: wrt index}``) it depends on — forward mode with sparse vectors, from the ops'
    local gradients (first order's, shared with its sweep; ``smooth``: the forms to
    differentiate) and a nest's root from its leaves, by the nest's weights."""
    one = g.const(1.0)
    nests = nests or {}
    tangents: dict[int, Tangent] = {p: {j: one} for p, j in params.items()}
    for i in range(upto):
        node = g.nodes[i]
        if i in tangents or node.op in (INPUT, CONST, SEED) or nests.get(i, ()) is None:
            continue
        parts: dict[int, list[int]] = {}
        for local, a in _locals(g, i, nests, smooth):
            if not tangents.get(a):
                continue
            for j, t in tangents[a].items():
                parts.setdefault(j, []).append(scaled(g, local, t))
        if parts:
            tangents[i] = {j: _sum(g, terms) for j, terms in parts.items()}
    return tangents


def _locals(g: Graph, i: int, nests: dict, smooth: bool = False):
    """Node ``i``'s ``(local gradient, operand)`` pairs (structural zeros left out); a nest's
    root has one per leaf, its weight."""
    node = g.nodes[i]
    if i in nests:
        for leaf in nests[i]:
            yield _weight(g, i, leaf), leaf
        return
    for k, a in enumerate(node.args):
        local = instantiate_gradient(g, node.op, k, node.args, i, smooth)
        if g.constant_value(local) != 0:
            yield local, a


def _weight(g: Graph, root: int, leaf: int) -> int:
    """The nest weight of ``leaf`` under ``root`` (the op's ``nest_weight`` over a, y)."""
    template = _nest_template(OPS[g.nodes[root].op].nest_weight)
    bound = {template.input("a"): leaf, template.input("y"): root}
    return copy_nodes(template, g, bound)[template.outputs[0]]


@cache
def _nest_template(text: str) -> Graph:
    from compiler.frontend.text import parse

    return parse(text)


def _guard(g: Graph, adjoint: int | None, node: int) -> int:
    """``where(ȳ, node, 0)`` on a guarded node (its adjoint exactly 0 wherever a ``where``
    chose against it: the unchosen branch's inf or nan stays out of H, as in first order)."""
    if adjoint is None or g.constant_value(node) is not None:
        return node
    return g.add("where", adjoint, node, g.const(0.0))


def _guarded(g: Graph, adjoint: int | None, tangent: Tangent) -> Tangent:
    return {j: _guard(g, adjoint, t) for j, t in tangent.items()}


def _sum(g: Graph, nodes: Sequence[int]) -> int:
    total = nodes[0]
    for n in nodes[1:]:
        total = g.add("add", total, n)
    return total


def _nest_terms(g: Graph, v: int, adjoint: int, tangents: dict[int, Tangent], nests: dict):
    """A nest's terms: its Hessian in the leaves is diag(w) - w wᵀ, so ȳ w_i per leaf (its own
    small block) and -ȳ times the outer product of the nest's own tangent, w's combination."""
    for local, leaf in _locals(g, v, nests):
        if tangents.get(leaf):
            yield g.add("mul", adjoint, local), leaf, leaf, True
    yield g.add("neg", adjoint), v, v, True


def _terms(g: Graph, v: int, adjoint: int, tangents: dict[int, Tangent], nests: dict):
    """Node ``v``'s terms ``(coefficient, operand a, operand b, square)``: ȳ · ∂²φ/∂a_k∂a_l
    for each pair of operands with tangents, k <= l."""
    node = g.nodes[v]
    args = node.args
    live = [k for k, a in enumerate(args) if tangents.get(a)]
    if not live:
        return
    second = _second_partials(g, v)
    for k in live:
        for m in live:
            if m < k or second.get((k, m)) is None:
                continue
            coef = g.add("mul", adjoint, second[(k, m)])
            yield coef, args[k], args[m], k == m


def _second_partials(g: Graph, v: int) -> dict[tuple[int, int], int]:
    """``{(k, l): ∂²φ/∂a_k∂a_l}`` (k <= l, structural zeros left out) of node ``v``, built in
    ``g`` over its operands from the op's template (``_second_template``)."""
    node = g.nodes[v]
    consts = tuple(g.constant_value(a) for a in node.args)
    mini, found = _second_template(node.op, consts, version())
    if not found:
        return {}
    mapping = {mini.input(f"x{k}"): a for k, a in enumerate(node.args) if consts[k] is None}
    mapping = copy_nodes(mini, g, mapping, keep=mini.reachable(found.values()))
    return {key: mapping[n] for key, n in found.items()}


@cache
def _second_template(op: str, consts: tuple, _version: int) -> tuple[Graph, dict]:
    """The op's second partials on a graph of one node over inputs ``x<k>`` (the operands
    that are not the constants ``consts``): its local gradients differentiated once more in
    forward mode. Cached per op, constant operands and version of the table."""
    mini = Graph()
    xs = [mini.input(f"x{k}") if c is None else mini.const(c) for k, c in enumerate(consts)]
    y = mini.add(op, *xs)
    found: dict[tuple[int, int], int] = {}
    if mini.nodes[y].op != op:  # folded away (never for a node of a built graph)
        return mini, found
    locals_ = {
        k: instantiate_gradient(mini, op, k, tuple(xs), y, smooth=True)
        for k, c in enumerate(consts)
        if c is None
    }
    upto = len(mini.nodes)
    for m in locals_:
        derivatives = _tangents(mini, {xs[m]: 0}, upto, smooth=True)
        for k, local in locals_.items():
            d = derivatives.get(local, {}).get(0)
            if k <= m and d is not None and mini.constant_value(d) != 0:
                found[(k, m)] = d
    return mini, found


def _accumulate(g: Graph, entries: dict, coef: int, a: Tangent, b: Tangent, square: bool) -> None:
    """Add the term ``c A Aᵀ`` (``square``) or ``c (A Bᵀ + B Aᵀ)`` to the upper triangle's
    entries summed in the loop."""
    two = g.const(2.0)
    for j, aj in a.items():
        scaled = g.add("mul", coef, aj)
        for k, bk in b.items():
            if square and k < j:
                continue
            product = g.add("mul", scaled, bk)
            if not square and j == k:
                product = g.add("mul", two, product)
            entries.setdefault((min(j, k), max(j, k)), []).append(product)


def _readers(
    inputs: Sequence[str], entries: list, n_terms: int, sizes: list[int]
) -> dict[str, list]:
    """The readers' names: ``h_<j>_<k>`` per entry, ``hc<t>`` per dense term, ``hu<v>_<i>``
    per dense tangent's entry; refused if an input already has one of these names."""
    names = {
        "entries": [f"h_{j}_{k}" for j, k in entries],
        "coefficients": [f"hc{t}" for t in range(n_terms)],
        "tangents": [tuple(f"hu{v}_{i}" for i in range(n)) for v, n in enumerate(sizes)],
    }
    every = set(names["entries"]) | set(names["coefficients"])
    every.update(r for group in names["tangents"] for r in group)
    taken = sorted(every & set(inputs))
    if taken:
        raise InputError(
            f"a Hessian's entries are read out through inputs named h_<j>_<k>, hc<t> and "
            f"hu<v>_<i>, but input(s) {taken} already use such names: rename them"
        )
    return names

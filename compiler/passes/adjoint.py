"""Reverse mode: the adjoint (backprop) graph of a forward graph.

Each forward node, visited in reverse order, multiplies its upstream gradient by its local
gradient — instantiated from the op registry — and sends the product to its operands; where a
value fans out the products add up. On a ``TensorGraph`` the same pass runs with the tensor ops'
VJP rules (``compiler.ir.tensor_ops``), and each elementwise contribution is summed back over the
axes its operand was broadcast along: no Jacobian is ever built. Only nodes between the ``wrt`` inputs and the output get an
adjoint, structural zeros are never built, and hash-consing shares common subexpressions (the local
gradient of ``exp`` *is* the forward ``exp`` node).

``where(c, a, b)`` routes its upstream gradient to the chosen branch (``where(c, upstream, 0)``,
a select, not a product), and on the nodes whose every path to the output runs through such a
routing each product absorbs a zero upstream (``where(upstream, upstream * local, 0)``): the
unchosen branch's inf or nan never reaches the gradient (the "double where" trap, where JAX and
PyTorch give nan). Everywhere else products stay IEEE's, as NumPy's: 0 * inf is nan.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import cache

from compiler.errors import InputError
from compiler.ir import shapes as sh
from compiler.ir.graph import CONST, INPUT, SEED, Graph, copy_nodes
from compiler.ir.registry import OPS, placeholders, sympy_definition, version
from compiler.ir.tensor import TENSOR_LEAVES, TensorGraph
from compiler.ir.tensor_ops import TENSOR_OPS


class AdjointGraph(Graph):
    """Forward nodes first (``n_forward`` of them), then the backward nodes.

    ``outputs`` is ``[value, d_wrt0, d_wrt1, ...]``; ``saved_nodes`` lists the values a separate
    forward pass (a ``vjp``) keeps for the backward part, ``saved`` their names.
    """

    n_forward: int = 0
    wrt: tuple[str, ...] = ()
    saved_nodes: tuple[int, ...] = ()
    #: local gradients from the ops' ``smooth_grads`` (a gradient to differentiate again)
    smooth: bool = False

    @property
    def saved(self) -> tuple[str, ...]:
        """The names of what a ``vjp``'s forward keeps for its backward (``saved_nodes``: the
        node indices)."""
        return tuple(self.names[i] for i in self.saved_nodes)

    @property
    def reads(self) -> tuple[str, ...]:
        """The forward values and inputs the backward part reads (returned ones included): what
        the listing's last line reports."""
        n, live = self.n_forward, self.reachable(self.outputs)
        read = {a for i in self.backward_nodes() if live[i] for a in self.nodes[i].args if a < n}
        read.update(o for o in self.outputs[1:] if o < n)
        return tuple(self.names[i] for i in sorted(read) if self.nodes[i].op not in (CONST, SEED))

    def _next_name(self) -> str:
        if not self.n_forward:
            return super()._next_name()
        return f"b{len(self.nodes) - self.n_forward}"

    def backward_nodes(self) -> range:
        return range(self.n_forward, len(self.nodes))

    def copy_forward(self, graph: Graph) -> int:
        """Copy what ``graph``'s first output depends on (declared inputs first); its node here."""
        for name in graph.inputs:
            self.input(name)
        mapping = copy_nodes(graph, self, {}, keep=graph.reachable(graph.outputs[:1]))
        return mapping[graph.outputs[0]]

    def contribution(self, i: int, upstream: int, k: int, guarded: bool = False) -> int | None:
        """What node ``i`` sends to its operand ``k``: upstream × local gradient (None: zero)."""
        return self.routed_contribution(i, upstream, k, guarded)[0]

    def routed_contribution(
        self, i: int, upstream: int, k: int, guarded: bool = False
    ) -> tuple[int | None, bool]:
        """What node ``i`` sends to its operand ``k`` (None: zero), and whether that is exactly
        0 wherever a ``where`` chose against the path (see ``sweep``).

        Upstream × local gradient; a local gradient that selects (``where(c, 1, 0)``, ``where``'s
        and ``clip``'s) routes the upstream instead: ``where(c, upstream, 0)``, never 0 × inf. On
        a ``guarded`` node (every path to the output through a routing) the product absorbs a
        zero upstream — ``where(upstream, upstream × local, 0)`` — so the unchosen branch's
        inf or nan stays out of the gradient (the "double where" trap)."""
        node = self.nodes[i]
        local = instantiate_gradient(self, node.op, k, node.args, i, self.smooth)
        c = self.constant_value(local)
        if c == 0:
            return None, True  # a structural zero: no gradient flows on this edge
        routed = self._route(local, upstream)
        if routed is not None:
            return routed, True
        if c == 1:
            return upstream, guarded
        if c is not None and math.isfinite(c):
            return self.add("mul", upstream, local), guarded  # 0 × c is 0
        product = self.add("mul", upstream, local)
        if not guarded:
            return product, False  # IEEE, as NumPy: 0 × inf is nan (the kink table)
        return self.add("where", upstream, product, self.const(0.0)), True

    def _route(self, local: int, upstream: int) -> int | None:
        """``where(c, upstream, 0)`` for a local gradient ``where(c, 1, 0)`` (or its mirror),
        else None."""
        node = self.nodes[local]
        if node.op != "where":
            return None
        cond, *branches = node.args
        picks = [self.constant_value(b) for b in branches]
        if not all(p in (0.0, 1.0) for p in picks):
            return None
        zero = self.const(0.0)
        return self.add("where", cond, *(upstream if p == 1 else zero for p in picks))

    def zero_gradient(self, node: int) -> int:
        return self.const(0.0)

    def __str__(self) -> str:
        live = self.reachable(self.outputs)  # not the broadcasts a sum absorbed, say
        forward = [self.line(i) for i in self.op_nodes() if i < self.n_forward]
        backward = [self.line(i) for i in self.op_nodes() if i >= self.n_forward and live[i]]
        outs = [self.operand_text(self.outputs[0])]
        for name, o in zip(self.wrt, self.outputs[1:]):  # each gradient under its input's name
            want = f"d_{name}"
            if self.names[o] != want or self.nodes[o].op in (CONST, INPUT):
                backward.append(self.alias_line(want, o))
            outs.append(want)
        return "\n".join(
            [
                "# forward",
                *forward,
                "# backward (seed = upstream gradient)",
                *backward,
                f"return {', '.join(outs)}",
                f"# the backward reads: {', '.join(self.reads) or 'nothing'}",
                f"# a vjp's forward keeps: {', '.join(self.saved) or 'nothing'}",
            ]
        )

    def alias_line(self, name: str, i: int) -> str:
        """``d_x = d_t0``: node ``i`` under another name."""
        line = f"{name} = {self.operand_text(i)}"
        return f"{line}  # {sh.text(self.shapes[i])}" if isinstance(self, TensorGraph) else line


class TensorAdjointGraph(AdjointGraph, TensorGraph):
    """The adjoint of a TensorGraph: elementwise contributions fitted to their operand's shape,
    tensor ops through their VJP rules."""

    def copy_forward(self, graph: Graph) -> int:
        self.seed_shape = graph.shapes[graph.outputs[0]]
        return super().copy_forward(graph)

    def routed_contribution(
        self, i: int, upstream: int, k: int, guarded: bool = False
    ) -> tuple[int | None, bool]:
        node = self.nodes[i]
        if node.op in TENSOR_OPS:  # its VJP's products are IEEE's: no guard past a tensor op
            return TENSOR_OPS[node.op].vjp(self, i, upstream, k), False
        c, clean = super().routed_contribution(i, upstream, k, guarded)
        return (None, True) if c is None else (self.fit(c, self.shapes[node.args[k]]), clean)

    def zero_gradient(self, node: int) -> int:
        return self.fit(self.const(0.0), self.shapes[node])


def adjoint(graph: Graph, wrt: Sequence[str] | None = None, smooth: bool = False) -> AdjointGraph:
    """The value and the gradients of ``graph.outputs[0]`` with respect to ``wrt`` (default: all);
    ``smooth``: from the ops' ``smooth_grads`` (gradients to differentiate again)."""
    wrt = tuple(graph.inputs if wrt is None else wrt)
    unknown = [w for w in wrt if w not in graph.inputs]
    if unknown:
        raise InputError(f"wrt names unknown input(s) {unknown}; inputs are {list(graph.inputs)}")
    # The forward part: what the value depends on, copied once (declared inputs first, in order).
    adj = TensorAdjointGraph(graph.declared) if isinstance(graph, TensorGraph) else AdjointGraph()
    adj.smooth = smooth
    return backpropagate(adj, adj.copy_forward(graph), wrt)


def backpropagate(
    adj: AdjointGraph,
    output: int,
    wrt: Sequence[str],
    value: int | None = None,
    given: Mapping[str, int] | None = None,
) -> AdjointGraph:
    """Complete ``adj``, whose forward part is built: append the backward nodes of ``output``'s
    gradients with respect to ``wrt`` (inputs of ``adj``). The kernel's value is ``value``
    (default: ``output`` itself). Apart so that a second-order pass can differentiate one node
    (``Σ ∇f·v``) while its kernel returns another (``f``): see ``passes.second_order``.
    ``given``: forward nodes returned, times the seed, as the gradients of these ``wrt`` inputs
    instead of derived ones (the product's first-order gradient, exact, beside its smooth form)."""
    given = dict(given or {})
    adj.outputs = [output]
    adj.n_forward, adj.wrt = len(adj.nodes), tuple(wrt)
    grads = sweep(adj, {adj.input(w) for w in wrt if w not in given})
    for name, node in given.items():
        grads[adj.input(name)] = adj.add("mul", adj.seed(), node)
    adj.outputs = [output if value is None else value]
    for name in wrt:
        node = adj.input(name)
        adj.outputs.append(grads[node] if node in grads else adj.zero_gradient(node))
        _name_adjoint(adj, node, grads)
    adj.saved_nodes = _saved(adj)
    return adj


def sweep(
    adj: AdjointGraph, sources: set[int], guarded: dict[int, bool] | None = None
) -> dict[int, int]:
    """Adjoints of every node on a path from ``sources`` to the output: one backward sweep
    (``backpropagate`` names the results). ``guarded``, if given, is filled with whether each
    node's adjoint is exactly 0 wherever a ``where`` chose against its path (see below): the
    Hessian pass guards that node's terms alike."""
    n = adj.n_forward
    needed = [False] * n  # depends on some wrt input
    for i in sources:
        needed[i] = True
    for i, node in enumerate(adj.nodes[:n]):  # the forward part: a second-order pass may
        for a in node.args:  # sweep one graph again from another output
            if needed[a]:
                needed[i] = True
                break
    out = adj.outputs[0]
    grads: dict[int, int] = {out: adj.seed()} if needed[out] else {}
    # guarded[i]: every contribution to node i so far is exactly 0 where a where() chose the
    # other branch (a routing, or a guarded node's zero-absorbing product). Its readers come
    # after it, so it is final when i is reached. The output itself is not guarded.
    guarded = {} if guarded is None else guarded
    guarded[out] = False
    for i in range(n - 1, -1, -1):
        node = adj.nodes[i]
        if i not in grads or node.op in TENSOR_LEAVES:
            continue
        _name_adjoint(adj, i, grads)
        upstream = grads[i]
        for k, arg in enumerate(node.args):
            if not needed[arg]:
                continue
            contribution, clean = adj.routed_contribution(i, upstream, k, guarded.get(i, False))
            if contribution is None:
                continue
            guarded[arg] = guarded.get(arg, True) and clean
            grads[arg] = (
                contribution if arg not in grads else adj.add("add", grads[arg], contribution)
            )
    return grads


def _name_adjoint(adj: AdjointGraph, node: int, grads: dict[int, int]) -> None:
    """Give a node's finished adjoint the lecture's name ``d_<node>`` if it has no better one."""
    g = grads.get(node)
    if g is not None and g >= adj.n_forward and adj.names[g][:2] not in ("d_", "se"):
        adj.names[g] = f"d_{adj.names[node]}"


def _saved(adj: AdjointGraph) -> tuple[int, ...]:
    """What a separate forward keeps for the backward: the forward values the backward reads,
    or — when that costs no more memory — the *residuals* the seed-dependent part reads: the
    local gradients themselves (σ(x)σ(−x) rather than x and σ(x)), so a pullback only
    multiplies. On tensors a view (a transpose, a reshape) is recomputed from what it views, and
    residuals are kept only when their shapes pair off one to one with the values' shapes."""
    n = adj.n_forward
    read = {a for i in adj.backward_nodes() for a in adj.nodes[i].args if a < n}
    read.update(o for o in adj.outputs[1:] if o < n)
    values = tuple(sorted(i for i in read if adj.nodes[i].op not in TENSOR_LEAVES))
    residuals = _residuals(adj)
    if len(residuals) > len(values):
        return values
    if isinstance(adj, TensorGraph):
        spare = [adj.shapes[v] for v in values]
        for r in residuals:
            if adj.shapes[r] not in spare:
                return values
            spare.remove(adj.shapes[r])
    return residuals


def _residuals(adj: AdjointGraph) -> tuple[int, ...]:
    """The seed-independent non-leaf nodes that seed-dependent live nodes (or outputs) read."""
    seeded: set[int] = set()  # a set: the forward part, most of the graph, has no seeded node
    for i, node in enumerate(adj.nodes):
        if node.op == SEED or not seeded.isdisjoint(node.args):
            seeded.add(i)
    live = adj.reachable(adj.outputs[1:])
    read = {o for o in adj.outputs[1:] if o not in seeded}
    for i in adj.backward_nodes():
        if live[i] and i in seeded:
            for a in adj.nodes[i].args:
                if a not in seeded:
                    read.add(a)
    kept: set[int] = set()
    while read:
        i = read.pop()
        node = adj.nodes[i]
        if node.op in VIEWS:
            read.update(node.args)
        elif node.op not in TENSOR_LEAVES:
            kept.add(i)
    return tuple(sorted(kept))


#: Ops whose result is a view of their operand: free to recompute in the backward.
VIEWS = ("transpose", "reshape")


def instantiate_gradient(
    g: Graph, op: str, k: int, args: tuple[int, ...], output: int, smooth: bool = False
) -> int:
    """Node ``∂ op(args) / ∂ args[k]`` built in ``g``; ``output`` is the op's own node (``y``);
    ``smooth``: the op's ``smooth_grads`` where it states them."""
    steps, result = _gradient_steps(op, k, smooth and OPS[op].smooth_grads is not None)
    operands = (*args, output)  # what the template's inputs a, (b,) y stand for
    made: dict[int, int] = {}

    def build(s: int) -> int:
        # as copy_nodes would, without its generality (once per edge); a where whose condition
        # folds to a constant builds its chosen branch only (pow's d/da at a constant b: no
        # dead nodes of the other in the listing)
        if s in made:
            return made[s]
        head, ref = steps[s]
        if head == INPUT:
            node = operands[ref]
        elif head == CONST:
            node = g.const(ref)
        elif head == "where":
            condition = build(ref[0])
            value = g.constant_value(condition)
            if value is None:
                node = g.add("where", condition, build(ref[1]), build(ref[2]))
            else:  # nan is true, as the lowering's
                node = build(ref[1]) if value != 0 else build(ref[2])
        else:
            node = g.add(head, *[build(r) for r in ref])
        made[s] = node
        return node

    return build(result)


def _gradient_steps(op: str, k: int, smooth: bool = False) -> tuple[tuple[tuple, ...], int]:
    """The local gradient template as steps: (input, its position among the op's operands and
    its output), (const, value) or (op, step refs)."""
    return _steps(op, k, version(), smooth)


@cache
def _steps(op: str, k: int, _version: int, smooth: bool) -> tuple[tuple[tuple, ...], int]:
    template = _template(op, k, _version, smooth)
    names = {name: i for i, name in enumerate(("a", "b", "c")[: OPS[op].arity] + ("y",))}
    steps = tuple(
        (n.op, names[n.value]) if n.op == INPUT else (n.op, n.value if n.op == CONST else n.args)
        for n in template.nodes
    )
    return steps, template.outputs[0]


def local_gradient_template(op: str, k: int) -> Graph:
    """∂op/∂(operand k) as a small graph over inputs ``a``, ``b`` and the output ``y``.

    Stated in the registry where given, else ``sympy.diff`` of the op's definition. Cached per
    version of the table: an entry registered anew under its name (a gate withdrawn and defined
    again) gets its own gradient, never the old entry's.
    """
    return _template(op, k, version())


@cache
def _template(op: str, k: int, _version: int, smooth: bool = False) -> Graph:
    spec = OPS[op]
    stated = spec.smooth_grads if smooth and spec.smooth_grads is not None else spec.grads
    if stated is not None:
        from compiler.frontend.text import parse

        return parse(stated[k])
    import sympy

    from compiler.frontend.sympy_expr import from_sympy

    a, b, y = placeholders()
    derivative = sympy.diff(sympy_definition(op), (a, b)[k])
    template = from_sympy(derivative, bind={})
    assert set(template.inputs) <= {"a", "b", "y"}, template.inputs
    return template


local_gradient_template.cache_clear = _template.cache_clear  # type: ignore[attr-defined]

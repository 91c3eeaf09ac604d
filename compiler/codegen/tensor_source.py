"""Tensor adjoint graph → Python source: BLAS for matrix products, fused Numba loops in between.

Each entry (``forward``, ``value_and_grad``) is a plain Python function, one line per node, in an
order that runs every elementwise *region* as one jitted loop: the elementwise nodes of one shape
between the same matrix products and reductions, forward and backward together, so a value is read
from memory once however many nodes use it. Matrix products, reductions and reshapes are NumPy
calls (BLAS does the heavy work). Every other elementwise op outside a loop (all of them in the
instant tier's module, ``fused=False``; scalar nodes in the compiled tier's) is a call of the op's
lowering over arrays (``lowered_exp = elementwise("exp")``, ``runtime.elementwise``), never
NumPy's function (the test oracle, which differs in the last bit): every tier gives the compiled
loops' bits; ``+ - * /`` are written as operators (one IEEE instruction: the same bits). Why regions by (shape,
level): a node's *level* counts the tensor ops on its longest path from the inputs, and nodes of one
shape and level can never need each other through a tensor op, so each region runs in one pass.

**float32** (``dtype="float32"``): the same steps on float32 arrays, NumPy's float32 arithmetic
(Python-float constants are weak, NEP 50: they keep float32); scalars are ``np.float32`` numbers,
the loops' constants module-level float32 numbers (a literal is a float64 in Numba) and their
outputs float32; the ops' elementwise calls keep float32 (NumPy's promotion); the few NumPy steps
that would give float64 (``ties``, ``scatter_along_axis``) are cast back with ``np.float32``.
float64 modules are as they always were.

A region reads operands of smaller shapes by NumPy's broadcasting (a bias (n,) in a (b, n)
region is indexed ``bias[i1]``), so broadcasts are never materialised.
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass, field

from compiler.codegen.audit import TENSOR_DOCSTRING, callable_name, check_python, comment, data
from compiler.codegen.numba_source import (
    INFIX,
    Calls,
    Namer,
    exponent_of,
    literal,
    typed_constant,
)
from compiler.ir import reductions  # the names runtime.reductions gives generated kernels
from compiler.ir.graph import CONST, INPUT, SEED
from compiler.ir.registry import OPS
from compiler.ir.shapes import Shape
from compiler.ir.tensor import DIM, TENSOR_LEAVES, TensorGraph
from compiler.ir.tensor_ops import AXES_OPS, AXIS_SHAPE_OPS, TENSOR_OPS

ENTRIES = ("forward", "value_and_grad", "forward_save", "backward")
_PREFIX = {"forward": "fwd", "value_and_grad": "vg", "forward_save": "fs", "backward": "bwd"}
# Names the generated code uses itself (with Python's builtins, which the Namer never hands out):
# modules and imports, the reductions and helpers, the entries, the loops' indices.
_RESERVED = {"math", "np", "njit", "FLAGS", "elementwise", "ties", "sum_to", *reductions.__all__}
_RESERVED |= set(ENTRIES)
_RESERVED |= {f"i{k}" for k in range(32)}
_VIEWS = ("transpose", "reshape", "broadcast_to")  # results that may share an operand's memory
#: Tensor ops whose NumPy code gives float64 whatever its operands (bool / int; np.zeros).
_WIDENING = frozenset({"ties", "scatter_along_axis"})


@dataclass
class Region:
    """Elementwise nodes of one shape run as one loop; ``inputs`` are read, ``outputs`` kept."""

    name: str
    shape: Shape
    nodes: list[int] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)


#: Ops written as infix arithmetic: one IEEE-754 instruction in their lowering, so every
#: implementation rounds them alike. On arrays NumPy's operators; on scalars Python's floats
#: (IEEE doubles, inf and nan included, without a ufunc call's microsecond: between BLAS calls a
#: microsecond of Python costs several), but a division by zero (which raises in Python): the
#: lowering's there. The other ops are calls of their lowerings (``runtime.elementwise``).
_INFIX_OPS = frozenset(INFIX)  # add sub mul div neg


def _is_loop_node(g: TensorGraph, i: int) -> bool:
    return g.nodes[i].op in OPS and g.shapes[i] != ()


def schedule(
    g: TensorGraph,
    outputs: list[int],
    prefix: str,
    fused: bool = True,
    given: frozenset[int] = frozenset(),
) -> list[int | Region]:
    """The live nodes of ``outputs`` as steps: tensor ops and scalar nodes, and regions (none
    when not ``fused``: every node is then one NumPy call). ``given`` nodes are parameters."""
    live = _live(g, outputs, given)
    level = [0] * len(g.nodes)
    regions: dict[tuple, Region] = {}
    unit: dict[int, int | Region] = {}
    for i, n in enumerate(g.nodes):
        if not live[i] or n.op in TENSOR_LEAVES or i in given:
            continue
        top = max((level[a] for a in n.args), default=0)
        level[i] = top + (n.op in TENSOR_OPS)
        if fused and _is_loop_node(g, i):
            key = (g.shapes[i], level[i])
            if key not in regions:
                regions[key] = Region(f"{prefix}_loop{len(regions)}", g.shapes[i])
            regions[key].nodes.append(i)
            unit[i] = regions[key]
        else:
            unit[i] = i
    _connect(g, regions.values(), unit, outputs)
    return _order(g, unit)


def _live(g: TensorGraph, outputs: list[int], given: frozenset[int] | set[int]) -> list[bool]:
    """What ``outputs`` need, not looking behind the ``given`` nodes."""
    live = [False] * len(g.nodes)
    for o in outputs:
        live[o] = True
    for i in range(len(g.nodes) - 1, -1, -1):
        if live[i] and i not in given:
            for a in g.nodes[i].args:
                live[a] = True
    return live


def _connect(g: TensorGraph, regions, unit: dict, outputs: list[int]) -> None:
    """Each region's inputs (read from outside) and outputs (read outside, or returned)."""
    read_outside = set(outputs)
    for i, u in unit.items():
        for a in g.nodes[i].args:
            if unit.get(a) is not u:
                read_outside.add(a)
    for r in regions:
        members = set(r.nodes)
        inputs = {a for i in r.nodes for a in g.nodes[i].args if a not in members}
        r.inputs = sorted(a for a in inputs if g.nodes[a].op != CONST)
        r.outputs = [i for i in r.nodes if i in read_outside]


def _order(g: TensorGraph, unit: dict) -> list[int | Region]:
    """Topological order of the steps (Kahn's), earliest first node first."""
    steps = list({id(u): u for u in unit.values()}.values())
    first = {id(s): (s.nodes[0] if isinstance(s, Region) else s) for s in steps}
    needs: dict[int, set[int]] = {id(s): set() for s in steps}
    users: dict[int, list] = {id(s): [] for s in steps}
    for s in steps:
        for i in s.nodes if isinstance(s, Region) else [s]:
            for a in g.nodes[i].args:
                dep = unit.get(a)
                if dep is not None and dep is not s and id(dep) not in needs[id(s)]:
                    needs[id(s)].add(id(dep))
                    users[id(dep)].append(s)
    ready = [(first[id(s)], id(s), s) for s in steps if not needs[id(s)]]
    heapq.heapify(ready)
    order = []
    while ready:
        _, _, s = heapq.heappop(ready)
        order.append(s)
        for u in users[id(s)]:
            needs[id(u)].discard(id(s))
            if not needs[id(u)]:
                heapq.heappush(ready, (first[id(u)], id(u), u))
    assert len(order) == len(steps), "regions formed a cycle"
    return order


class TensorWriter:
    """Writes the module of one tensor adjoint graph."""

    def __init__(self, adj: TensorGraph, fused: bool = True, dtype: str = "float64"):
        if dtype not in ("float64", "float32"):
            raise ValueError(f"dtype must be 'float64' or 'float32', not {dtype!r}")
        self.adj, self.fused, self.dtype = adj, fused, dtype
        #: A scalar's conversion: to a Python float (float64), or to a NumPy float32.
        self.number = "float" if dtype == "float64" else "np.float32"
        self.constants: dict[str, str] = {}  # float32 loops: literal text -> module-level name
        ops = {n.op for n in adj.nodes if n.op in OPS}
        self.namer = Namer(_RESERVED | {callable_name(op) for op in ops})
        self.input_ident = {n: self.namer.claim(n) for n in adj.inputs}
        self.dim_ident: dict[str, str] = {}
        for name in adj.inputs:
            for d in adj.declared.get(name, ()):
                if isinstance(d, str) and d not in self.dim_ident:
                    self.dim_ident[d] = self.namer.claim(f"size_{d}")
        self.ident: dict[int, str] = {}
        for i, n in enumerate(adj.nodes):
            if n.op == INPUT:
                self.ident[i] = self.input_ident[n.value]
            elif n.op == DIM:
                self.ident[i] = self.dim_ident[n.value]
            elif n.op != CONST:
                self.ident[i] = self.namer.claim(adj.names[i])
        self.calls = Calls()  # what the loops call: noted as they are written
        self.lowered_ops: dict[str, str] = {}  # op -> the name of its elementwise function
        self.outs: dict[int, str] = {}  # node -> the name of a loop's output array
        self.loops: list[str] = []

    # ----------------------------------------------------------------- text
    def operand(self, i: int) -> str:
        node = self.adj.nodes[i]
        return literal(node.value) if node.op == CONST else self.ident[i]

    def shape_code(self, shape: Shape) -> str:
        dims = [data(d) if isinstance(d, int) else self.dim_ident[d] for d in shape]
        return f"({', '.join(dims)},)" if len(dims) == 1 else f"({', '.join(dims)})"

    def attrs_code(self, op: str, attrs) -> str:
        if op in AXES_OPS:
            return data(attrs[0]) if len(attrs) == 1 else data(tuple(attrs))
        if op in AXIS_SHAPE_OPS:  # (axis, shape)
            return f"{data(attrs[0])}, {self.shape_code(attrs[1])}"
        return self.shape_code(attrs)

    def step_line(self, i: int) -> str:
        """A tensor op or a scalar node as one line of the entry."""
        node = self.adj.nodes[i]
        operands = {k: self.operand(a) for k, a in zip("abc", node.args)}
        if node.op in TENSOR_OPS:
            spec = TENSOR_OPS[node.op]
            attrs = "" if node.value is None else self.attrs_code(node.op, node.value)
            code = spec.code.format(**operands, attrs=attrs)
            if self.adj.shapes[i] == ():  # a float, whatever NumPy returns (loops take floats)
                code = f"{self.number}({code})"
            elif self.dtype == "float32" and node.op in _WIDENING:
                code = f"np.float32({code})"
            note = self.adj.notes.get(i)
            remark = f"  # fused: {comment(note.format(**operands))}" if note else ""
            return f"    {self.ident[i]} = {code}{remark}"
        if node.op in _INFIX_OPS and self.adj.shapes[i] == ():
            return f"    {self.ident[i]} = {self.python_scalar(i, operands)}"
        if node.op in _INFIX_OPS:  # NumPy's array arithmetic: IEEE's, as the lowering's
            return f"    {self.ident[i]} = {INFIX[node.op].format(**operands)}"
        call = f"{self.lowered(node.op)}({', '.join(operands.values())})"  # the op's lowering
        if self.adj.shapes[i] != ():
            return f"    {self.ident[i]} = {call}"
        return f"    {self.ident[i]} = {self.number}({call})"

    def python_scalar(self, i: int, operands: dict[str, str]) -> str:
        """A scalar op as Python arithmetic (``_INFIX_OPS``); a division by a value that
        may be zero falls back to NumPy's there (inf or nan where Python raises)."""
        node = self.adj.nodes[i]
        code = f"{self.number}({INFIX[node.op].format(**operands)})"
        if node.op != "div":
            return code
        divisor = self.adj.nodes[node.args[1]]
        if divisor.op == CONST and divisor.value != 0:
            return code
        a, b = operands.values()
        return f"{code} if {b} else {self.number}({self.lowered('div')}({a}, {b}))"

    def lowered(self, op: str) -> str:
        """The name of ``op``'s elementwise function in the module, made from its lowering
        (``lowered_exp = elementwise("exp")``, ``runtime.elementwise``): NumPy's own functions
        differ from the compiled loops' in the last bit, and serve only as the test oracle."""
        if op not in self.lowered_ops:
            self.lowered_ops[op] = self.namer.claim(f"lowered_{op}")
        return self.lowered_ops[op]

    # ----------------------------------------------------------------- loops
    def element(self, i: int, region: Region, rank: int) -> str:
        """How the loop reads operand ``i``: its element, broadcast against the region."""
        node = self.adj.nodes[i]
        if node.op == CONST:
            return self.loop_constant(node.value)
        shape = self.adj.shapes[i]
        if not shape or i in region.nodes:
            return self.ident[i]
        lead = rank - len(shape)
        index = [
            f"i{lead + k}" if d == region.shape[lead + k] else "0" for k, d in enumerate(shape)
        ]
        return f"{self.ident[i]}[{', '.join(index)}]"

    def loop(self, region: Region) -> list[str]:
        adj, rank = self.adj, len(region.shape)
        assert rank <= 32, "loop indices i0..i31 are reserved"
        dims = sorted({d for d in region.shape if isinstance(d, str)})
        params = [self.ident[a] for a in region.inputs] + [self.dim_ident[d] for d in dims]
        outs = [self.out_name(o) for o in region.outputs]
        size = self.shape_code(region.shape)
        index = ", ".join(f"i{k}" for k in range(rank))
        lines = [
            "@njit(**FLAGS)",
            f"def {region.name}({', '.join(params)}):",
            *(f"    {o} = np.empty({size}{self.empty_dtype})" for o in outs),
        ]
        for k, d in enumerate(region.shape):
            bound = data(d) if isinstance(d, int) else self.dim_ident[d]
            lines.append(f"{'    ' * (k + 1)}for i{k} in range({bound}):")
        body = "    " * (rank + 1)
        for i in region.nodes:
            node = adj.nodes[i]
            ops = {
                k: self.element(a, region, rank)
                if adj.nodes[a].op != CONST
                else self.loop_constant(adj.nodes[a].value)
                for k, a in zip("abc", node.args)
            }
            code = self.calls.text(node.op, list(ops.values()), exponent_of(adj.nodes, node))
            line = f"{body}{self.ident[i]} = {code}"
            note = adj.notes.get(i)
            lines.append(f"{line}  # fused: {comment(note.format(**ops))}" if note else line)
        lines += [f"{body}{o}[{index}] = {self.ident[r]}" for o, r in zip(outs, region.outputs)]
        lines.append(f"    return {', '.join(outs)}{',' if len(outs) == 1 else ''}")
        return lines

    @property
    def empty_dtype(self) -> str:
        return "" if self.dtype == "float64" else ", np.float32"

    def loop_constant(self, value: float) -> str:
        """A constant in a loop: a literal in float64; in float32 a module-level float32
        number (``numba_source``'s reason: a literal would make its line float64)."""
        return typed_constant(value, self.dtype, self.constants, self.namer)

    def out_name(self, i: int) -> str:
        if i not in self.outs:
            self.outs[i] = self.namer.claim(f"out_{self.ident[i]}")
        return self.outs[i]

    def call_region(self, region: Region) -> str:
        args = [self.region_arg(a) for a in region.inputs]
        dims = sorted({d for d in region.shape if isinstance(d, str)})
        args += [self.dim_ident[d] for d in dims]
        targets = ", ".join(self.ident[o] for o in region.outputs)
        comma = "," if len(region.outputs) == 1 else ""
        return f"    {targets}{comma} = {region.name}({', '.join(args)})"

    def region_arg(self, i: int) -> str:
        """An operand passed to a loop: one compiled signature, so views become C-contiguous."""
        if self.adj.shapes[i] == ():
            return self.ident[i]
        if self.adj.nodes[i].op in ("transpose", "broadcast_to"):
            return f"np.ascontiguousarray({self.ident[i]})"
        return self.ident[i]

    # ----------------------------------------------------------------- entries
    def entry(self, name: str, outputs: list[int], given: tuple[int, ...] = ()) -> list[str]:
        """One entry: the inputs (then ``given`` saved values, then the seed if it needs one) in,
        ``outputs`` out."""
        adj = self.adj
        live = _live(adj, outputs, set(given))
        params = [self.input_ident[n] for n in adj.inputs] + [self.ident[i] for i in given]
        if name in ("value_and_grad", "backward"):
            seeds = [i for i, n in enumerate(adj.nodes) if n.op == SEED]
            params.append(self.ident[seeds[0]] if seeds else self.namer.claim("seed"))
        lines = [f"def {name}({', '.join(params)}):", *self.sizes()]
        for step in schedule(adj, outputs, _PREFIX[name], self.fused, frozenset(given)):
            if isinstance(step, Region):
                step.name = self.namer.claim(step.name)
                self.loops += [*self.loop(step), "", ""]
                lines.append(self.call_region(step))
            else:
                lines.append(self.step_line(step))
        results = [self.result(o) for o in outputs]
        if name == "forward":
            lines.append(f"    return {results[0]}")
        elif name == "backward":
            lines.append(f"    return ({', '.join(results)}{',' if len(results) == 1 else ''})")
        else:
            rest = ", ".join(results[1:]) + ("," if len(results) == 2 else "")
            lines.append(f"    return {results[0]}, ({rest})")
        assert all(live[o] for o in outputs)
        return lines

    def sizes(self) -> list[str]:
        """``size_n = W.shape[0]``: each named dimension from the first input declaring it."""
        lines, done = [], set()
        for name in self.adj.inputs:
            for axis, d in enumerate(self.adj.declared.get(name, ())):
                if isinstance(d, str) and d not in done:
                    done.add(d)
                    lines.append(
                        f"    {self.dim_ident[d]} = {self.input_ident[name]}.shape[{axis}]"
                    )
        return lines

    def result(self, i: int) -> str:
        """A returned value: a float for a scalar, an array of its own otherwise."""
        node = self.adj.nodes[i]
        if node.op == CONST:
            value = literal(node.value)
            if self.adj.shapes[i] == ():
                return value if self.dtype == "float64" else f"np.float32({value})"
            return f"np.full((), {value}{self.empty_dtype})"
        if self.adj.shapes[i] == ():
            return f"{self.number}({self.ident[i]})"
        if node.op in (INPUT, SEED, *_VIEWS):
            return f"np.array({self.ident[i]})"  # a copy: never hand out the caller's memory
        return self.ident[i]

    def module(self) -> str:
        adj = self.adj
        value, grads, saved = adj.outputs[0], list(adj.outputs[1:]), list(adj.saved_nodes)
        entries = [
            *self.entry("forward", [value]),
            "",
            "",
            *self.entry("value_and_grad", [value, *grads]),
            "",
            "",
            "# A vjp: forward_save keeps what the backward reads; backward starts from there.",
            *self.entry("forward_save", [value, *saved]),
            "",
            "",
            *self.entry("backward", grads, given=tuple(saved)),
        ]
        body = "\n".join([*self.loops, *entries])
        uses = [h for h in reductions.__all__ if re.search(rf"\b{h}\(", body)]
        header = [
            f'"""{TENSOR_DOCSTRING}"""',
            "",
            *(["import math", ""] if "math." in body + "".join(self.constants) else []),
            "import numpy as np",
            *(
                ["from numba import njit", "", "from runtime.jit import FLAGS"]
                if self.loops
                else []
            ),
            *([f"from runtime.reductions import {', '.join(uses)}"] if uses else []),
            *self.calls.imports(),  # Numba's: a NumPy-only module has no loops, so none
        ]
        if self.lowered_ops:
            header += ["from runtime.elementwise import elementwise", ""]
            header += [
                f"{name} = elementwise({data(op)})" for op, name in sorted(self.lowered_ops.items())
            ]
        if self.constants:
            header += ["", "# The loops' constants, as float32 numbers (a literal is a float64)."]
            header += [f"{name} = np.float32({text})" for text, name in self.constants.items()]
        return "\n".join([*header, "", "", *self.loops, *entries]).rstrip() + "\n"


def generate_tensor(
    adj: TensorGraph, title: str = "", fused: bool = True, dtype: str = "float64"
) -> str:
    """Source of the module with the entries ``forward(*inputs)`` and
    ``value_and_grad(*inputs, seed)`` → ``(value, (gradients...))`` for ``adj``, computing in
    ``dtype`` (``"float64"`` or ``"float32"``: the inputs' and outputs' dtype).

    ``fused=False`` writes the instant tier's module: NumPy calls only, nothing to compile.
    ``title`` is accepted and ignored: no text of the user's reaches generated code
    (``compiler.codegen.audit``), which passes ``check_python`` before it is returned.
    """
    return check_python(TensorWriter(adj, fused, dtype).module())

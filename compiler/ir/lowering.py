"""Lowering: how an op becomes machine code, written once per op and used by every tier.

An op's lowering is a plain function ``lower(L, *operands) -> value`` that writes LLVM IR with
llvmlite's ``IRBuilder`` (``L.b``), generic over the float width (``L.ty`` is ``double`` or
``float``). The same function is

- printed into the LLVM tier's modules and the instant tier's machine as an ``internal
  alwaysinline`` function (``compiler.codegen.llvm_ops``), and
- called by Numba kernels as a ``numba.extending.intrinsic`` (``runtime.numba_ops``), so the
  Numba kernels stay Numba-jitted while the op's arithmetic is the one written here.

``L.vector`` says whether the code it lands in is meant for LLVM's loop vectoriser (a call of a
C library function keeps a loop scalar): ops like exp write branch-free forms then, and may call
the C library where scalar code is faster. JAX's ``lax`` lowerings and Numba's own ``mathimpl``
work the same way: one builder function per op and per target.

Example, ``np.maximum`` (nan if either operand is nan)::

    def lower_maximum(L: Lower, a, b):
        bigger = L.select(L.cmp(">=", a, b), a, b)
        return L.select(L.cmp("uno", a, b), L.b.fadd(a, b), bigger)
"""

from __future__ import annotations

from llvmlite import ir

from compiler.errors import CompileError

DOUBLE, FLOAT = ir.DoubleType(), ir.FloatType()


class Lower:
    """The builder an op's lowering writes with: ``b`` (an ``IRBuilder``), the float type ``ty``
    and a few helpers that pick the right intrinsic, C function and integer type for it."""

    def __init__(self, builder: ir.IRBuilder, ty: ir.Type = DOUBLE, vector: bool = True):
        self.b, self.ty, self.vector = builder, ty, vector
        self.bits = 64 if isinstance(ty, ir.DoubleType) else 32
        self.int = ir.IntType(self.bits)  # the integer type of the same width (bit casts)

    @property
    def suffix(self) -> str:
        """LLVM's intrinsic suffix for the float type: ``f64`` or ``f32``."""
        return f"f{self.bits}"

    # ------------------------------------------------------------------ constants
    def const(self, value: float) -> ir.Constant:
        """A float constant of the op's width (rounded once to it)."""
        return ir.Constant(self.ty, float(value))

    def int_const(self, value: int) -> ir.Constant:
        return ir.Constant(self.int, int(value))

    # ------------------------------------------------------------------ calls
    def _function(self, name: str, arity: int) -> ir.Function:
        module = self.b.module
        existing = module.globals.get(name)
        if existing is not None:
            return existing
        return ir.Function(module, ir.FunctionType(self.ty, [self.ty] * arity), name)

    def intrinsic(self, name: str, *args: ir.Value) -> ir.Value:
        """``llvm.<name>.f64`` (or ``.f32``): fabs, sqrt, exp, log, sin, cos, pow, floor, ceil,
        trunc, round, rint, copysign, fma, ... LLVM may vectorise the cheap ones (fabs, sqrt,
        floor, fma); exp, log, sin and cos become calls of the C library."""
        return self.b.call(self._function(f"llvm.{name}.{self.suffix}", len(args)), args)

    def libm(self, name: str, *args: ir.Value) -> ir.Value:
        """The C library's ``name`` (``namef`` at float width): log1p, expm1, tanh, erf, ..."""
        return self.b.call(self._function(name if self.bits == 64 else f"{name}f", len(args)), args)

    # ------------------------------------------------------------------ arithmetic shorthands
    def fma(self, a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
        """``a * b + c`` rounded once."""
        return self.b.fma(a, b, c)

    def cmp(self, op: str, a: ir.Value, b: ir.Value) -> ir.Value:
        """An ordered comparison (false if either is nan): ``<``, ``<=``, ``==``, ``!=``, ``>=``,
        ``>``, ``ord``; ``uno`` is true if either is nan."""
        if op == "uno":
            return self.b.fcmp_unordered("uno", a, b)
        return self.b.fcmp_ordered(op, a, b)

    def ucmp(self, op: str, a: ir.Value, b: ir.Value) -> ir.Value:
        """An unordered comparison (true if either is nan)."""
        return self.b.fcmp_unordered(op, a, b)

    def select(self, condition: ir.Value, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.b.select(condition, a, b)

    def to_bits(self, x: ir.Value) -> ir.Value:
        """The float's bit pattern as an integer of the same width."""
        return self.b.bitcast(x, self.int)

    def from_bits(self, i: ir.Value) -> ir.Value:
        """The float with this bit pattern."""
        return self.b.bitcast(i, self.ty)


def function_of(name: str, lower, arity: int, ty: ir.Type = DOUBLE, vector: bool = True):
    """``lower`` as a module holding one ``internal alwaysinline`` function ``name``: how the
    LLVM tiers print an op (``str(module)``), and how tests run a lowering alone."""
    module = ir.Module()
    fn = ir.Function(module, ir.FunctionType(ty, [ty] * arity), name)
    fn.linkage = "internal"
    fn.attributes.add("alwaysinline")
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    builder.ret(lower(Lower(builder, ty, vector), *fn.args))
    return module, fn


class LoweringError(CompileError):
    """An op has no lowering for a tier (a table entry without ``lower`` whose stable form does
    not lower either): named, never a KeyError or a recursion."""

    def __init__(self, op: str, tier: str, why: str = ""):
        self.op, self.tier = op, tier
        super().__init__(f"no lowering for op {op} on tier {tier}" + (f": {why}" if why else ""))


def lowering_of(op: str, tier: str = "llvm"):
    """The op's lowering (``OpDef.lower``), or ``LoweringError`` naming the op and the tier."""
    from compiler.ir.registry import OPS  # the registry's op modules import this module

    spec = OPS.get(op)
    if spec is None or spec.lower is None:
        raise LoweringError(op, tier)
    return spec.lower


def lower_graph(template, tier: str = "llvm", resolve=None):
    """A lowering for a gate given as a small ``Graph`` of its stable form over placeholders
    ``a``, ``b``: each node through its own op's lowering, constants by ``L.const``. An op of
    the graph without a lowering (the gate's own name included: no recursion) is a
    ``LoweringError`` now, when the lowering is made, not when a tier prints it. ``resolve``
    (op name -> lowering) replaces ``lowering_of`` for the graph's ops."""
    resolve = resolve or (lambda op: lowering_of(op, tier))
    lowerings = {template.nodes[i].op: resolve(template.nodes[i].op) for i in template.op_nodes()}

    def lower(L: Lower, *operands: ir.Value) -> ir.Value:
        given = dict(zip("abc", operands))
        values: dict[int, ir.Value] = {}
        for i, node in enumerate(template.nodes):
            if node.op == "input":
                values[i] = given[node.value]
            elif node.op == "const":
                values[i] = L.const(node.value)
            else:
                values[i] = lowerings[node.op](L, *(values[a] for a in node.args))
        return values[template.outputs[0]]

    lower.graph = template  # what the lowering computes: the instant tier expands it
    return lower

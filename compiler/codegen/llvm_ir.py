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
  added in block order by the caller, as the instant tier does);
- for a chunk using sin or cos, an *exact twin*: the fast chunk also returns whether any point's
  argument was beyond ``TRIG_MAX`` (an or-reduction, vectorised with the loop); if one did, the
  driver zeroes the block's partial sums and runs the block again, the twins in place of the
  flagged chunks. The rerun rewrites the block's outputs and temporaries and adds its sums once.

Numerics follow the Numba tier op for op, with NumPy's semantics and no fast-math flags: exp,
sin and cos (and the exp in sigmoid, softplus and logsigmoid) branch-free as ``runtime/scalar.py``
computes them, so that LLVM vectorises the loops (``VECTOR_OPS``; in entries without LLVM's O3
pipeline, and in ``OPS``, which the instant tier's machine reads, they are the C library's, faster
in scalar code); LLVM intrinsics for log, sqrt, fabs and pow (calls of the C library's functions,
as Numba's); the C library's log1p, expm1, tan and tanh; ``fcmp`` + ``select`` for the piecewise
ops, written exactly as ``runtime/scalar.py`` computes them (nan propagation, ties, the kink table).
A gate the table here lacks (a user's or a discovered one) is expanded into the graph of its stable
form, as the instant tier does.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

from compiler.codegen.audit import Namer, check_llvm, comment
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
    **{name: f"declare double @{name}(double)" for name in _INTRINSICS.values()},
    "llvm.pow.f64": "declare double @llvm.pow.f64(double, double)",
    "llvm.fma.f64": "declare double @llvm.fma.f64(double, double, double)",
    "llvm.memset.p0.i64": "declare void @llvm.memset.p0.i64(ptr, i8, i64, i1)",
}

Emit = Callable[[str, list[str]], list[str]]


def _binary(instruction: str) -> Emit:
    return lambda d, o: [f"{d} = {instruction} double {o[0]}, {o[1]}"]


def _call(function: str) -> Emit:
    return lambda d, o: [f"{d} = call double @{function}(double {o[0]})"]


def _exp_minus_abs(d: str, x: str, exp: Emit) -> list[str]:
    """%d.e = exp(-|x|)"""
    return [
        f"{d}.abs = call double @llvm.fabs.f64(double {x})",
        f"{d}.neg = fneg double {d}.abs",
        *exp(f"{d}.e", [f"{d}.neg"]),
    ]


def _sigmoid(exp: Emit) -> Emit:
    def emit(d: str, o: list[str]) -> list[str]:
        x = o[0]  # e = exp(-|x|); r = 1 / (1 + e); x >= 0 ? r : e * r
        return [
            *_exp_minus_abs(d, x, exp),
            f"{d}.den = fadd double {ONE}, {d}.e",
            f"{d}.r = fdiv double {ONE}, {d}.den",
            f"{d}.er = fmul double {d}.e, {d}.r",
            f"{d}.pos = fcmp oge double {x}, {ZERO}",
            f"{d} = select i1 {d}.pos, double {d}.r, double {d}.er",
        ]

    return emit


def _softplus_like(positive: bool, exp: Emit) -> Emit:
    # softplus: (x > 0 ? x : 0) + log1p(exp(-|x|)); logsigmoid: (x < 0 ? x : 0) - log1p(...)
    def emit(d: str, o: list[str]) -> list[str]:
        x = o[0]
        return [
            *_exp_minus_abs(d, x, exp),
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
    "sigmoid": _sigmoid(_call("llvm.exp.f64")),
    "softplus": _softplus_like(True, _call("llvm.exp.f64")),
    "logsigmoid": _softplus_like(False, _call("llvm.exp.f64")),
    "relu": _relu,
    "maximum": _extremum("oge"),
    "minimum": _extremum("ole"),
    "heaviside": _heaviside,
    "xlogy": _xlogy,
}

# ------------------------------------------------------------ vectorisable exp, sin and cos
# ``OPS`` calls the C library for exp, sin and cos: one point at a time, so a chunk's loop using
# them is not vectorised. The EntryWriter prints them instead as ``runtime/scalar.py`` computes
# them for Numba (read it for the derivations and accuracy): fma, bit casts and selects only,
# which LLVM's loop vectoriser turns into AVX2 code. ``OPS`` itself stays the scalar table that
# the instant tier's machine (``runtime/instant/vm_source.py``) builds its cases from: it has no
# per-block rerun for sin and cos of huge arguments. The constants are scalar.py's, copied
# because importing it imports Numba, which the LLVM tiers never need (a test checks them).
_SHIFT = 6755399441055744.0  # x + 1.5 * 2**52: x rounded to an integer, kept in the low bits
_INV_LN2, _LN2_HI, _LN2_LO = 1.4426950408889634, 0.6931471805599453, 2.3190468138462996e-17
_EXP_TAYLOR = [1 / math.factorial(n) for n in range(13, 1, -1)]  # 1/13! .. 1/2
_TWO_OVER_PI = 0.6366197723675814
_PIO2 = (1.5707963267948966, 6.123233995736766e-17, -1.4973849048591698e-33)
_S = (-1.66666666666666324348e-01, 8.33333333332248946124e-03, -1.98412698298579493134e-04,
      2.75573137070700676789e-06, -2.50507602534068634195e-08, 1.58969099521155010221e-10)  # fmt: skip
_C = (4.16666666666666019037e-02, -1.38888888888741095749e-03, 2.48015872894767294178e-05,
      -2.75573143513906633035e-07, 2.08757232129817482790e-09, -1.13596475577881948265e-11)  # fmt: skip
#: Beyond this |x| (and at ±inf) sin and cos are the C library's (Payne-Hanek reduction).
TRIG_MAX = 2.0**40


def _fma(d: str, a: str, b: str, c: str) -> str:
    """``d = a * b + c`` rounded once."""
    return f"{d} = call double @llvm.fma.f64(double {a}, double {b}, double {c})"


def _vector_exp(d: str, o: list[str]) -> list[str]:
    """np.exp within 0.75 ulp without a call (scalar.exp): x = k ln2 + r, Cody-Waite, e^r by
    its Taylor polynomial, times 2^k as 2^(k/2) 2^(k - k/2) so overflow gives inf and subnormal
    results round once; nan, ±inf and ±0 exactly as NumPy."""
    x, L = o[0], literal
    lines = [
        f"{d}.hi = fcmp ogt double {x}, {L(709.8)}",  # clamps keep nan
        f"{d}.x1 = select i1 {d}.hi, double {L(709.8)}, double {x}",
        f"{d}.lo = fcmp olt double {d}.x1, {L(-745.2)}",
        f"{d}.x = select i1 {d}.lo, double {L(-745.2)}, double {d}.x1",
        _fma(f"{d}.kd", f"{d}.x", L(_INV_LN2), L(_SHIFT)),
        f"{d}.k = fsub double {d}.kd, {L(_SHIFT)}",
        f"{d}.nk = fneg double {d}.k",
        _fma(f"{d}.rh", f"{d}.nk", L(_LN2_HI), f"{d}.x"),  # exact
        f"{d}.c = fmul double {d}.nk, {L(_LN2_LO)}",
        f"{d}.r = fadd double {d}.rh, {d}.c",  # r + t = rh + c
        f"{d}.t0 = fsub double {d}.rh, {d}.r",
        f"{d}.t = fadd double {d}.t0, {d}.c",
        _fma(f"{d}.q1", f"{d}.r", L(_EXP_TAYLOR[0]), L(_EXP_TAYLOR[1])),
    ]
    for n, coefficient in enumerate(_EXP_TAYLOR[2:], 2):
        lines.append(_fma(f"{d}.q{n}", f"{d}.q{n - 1}", f"{d}.r", L(coefficient)))
    q = f"{d}.q{len(_EXP_TAYLOR) - 1}"
    return lines + [
        f"{d}.h1 = fadd double {ONE}, {d}.r",  # e^r = h1 + l + r^2 q + t, rounded once
        f"{d}.l0 = fsub double {ONE}, {d}.h1",
        f"{d}.l = fadd double {d}.l0, {d}.r",
        f"{d}.lt = fadd double {d}.l, {d}.t",
        f"{d}.r2 = fmul double {d}.r, {d}.r",
        _fma(f"{d}.p", f"{d}.r2", q, f"{d}.lt"),
        f"{d}.y = fadd double {d}.h1, {d}.p",
        f"{d}.k2 = fmul double {d}.k, {L(0.5)}",  # k / 2 in the low bits of h
        f"{d}.k2s = fadd double {d}.k2, {L(_SHIFT)}",
        f"{d}.h = bitcast double {d}.k2s to i64",
        f"{d}.kb = bitcast double {d}.kd to i64",
        f"{d}.e1 = add i64 {d}.h, 1023",
        f"{d}.b1 = shl i64 {d}.e1, 52",  # drops the shift's own bits
        f"{d}.s1 = bitcast i64 {d}.b1 to double",
        f"{d}.e2a = sub i64 {d}.kb, {d}.h",
        f"{d}.e2 = add i64 {d}.e2a, 1023",
        f"{d}.b2 = shl i64 {d}.e2, 52",
        f"{d}.s2 = bitcast i64 {d}.b2 to double",
        f"{d}.ys = fmul double {d}.y, {d}.s1",
        f"{d} = fmul double {d}.ys, {d}.s2",
    ]


def _reduce(p: str, x: str) -> list[str]:
    """scalar._sincos: ``%p.s``, ``%p.c`` = sin and cos of r where x = k pi/2 + r, ``%p.kb``
    with k's low bits, and ``%p.big`` = |x| > TRIG_MAX (the reduction is exact below it)."""
    L = literal
    return [
        _fma(f"{p}.kd", x, L(_TWO_OVER_PI), L(_SHIFT)),
        f"{p}.kb = bitcast double {p}.kd to i64",
        f"{p}.k = fsub double {p}.kd, {L(_SHIFT)}",
        f"{p}.nk = fneg double {p}.k",
        _fma(f"{p}.r1", f"{p}.nk", L(_PIO2[0]), x),  # exact for |k| < 2**51
        f"{p}.c0 = fmul double {p}.nk, {L(_PIO2[1])}",
        f"{p}.mc = fneg double {p}.c0",
        _fma(f"{p}.ce", f"{p}.nk", L(_PIO2[1]), f"{p}.mc"),  # c0's rounding error, exactly
        f"{p}.r = fadd double {p}.r1, {p}.c0",  # two-sum: r + t = r1 + c0
        f"{p}.b = fsub double {p}.r, {p}.r1",
        f"{p}.rb = fsub double {p}.r, {p}.b",
        f"{p}.t1 = fsub double {p}.r1, {p}.rb",
        f"{p}.t2 = fsub double {p}.c0, {p}.b",
        f"{p}.t3 = fadd double {p}.t1, {p}.t2",
        f"{p}.t4 = fadd double {p}.t3, {p}.ce",
        _fma(f"{p}.t", f"{p}.nk", L(_PIO2[2]), f"{p}.t4"),
        f"{p}.z = fmul double {p}.r, {p}.r",
        f"{p}.w = fmul double {p}.z, {p}.z",
        f"{p}.zr = fmul double {p}.z, {p}.r",
        # fdlibm's __kernel_sin(r, t)
        _fma(f"{p}.sa", f"{p}.z", L(_S[3]), L(_S[2])),
        _fma(f"{p}.sb", f"{p}.z", f"{p}.sa", L(_S[1])),
        _fma(f"{p}.sc", f"{p}.z", L(_S[5]), L(_S[4])),
        f"{p}.zw = fmul double {p}.z, {p}.w",
        f"{p}.sd = fmul double {p}.zw, {p}.sc",
        f"{p}.sp = fadd double {p}.sb, {p}.sd",
        f"{p}.ht = fmul double {p}.t, {L(0.5)}",
        f"{p}.vs = fmul double {p}.zr, {p}.sp",
        f"{p}.se = fsub double {p}.ht, {p}.vs",
        f"{p}.sf = fmul double {p}.z, {p}.se",
        f"{p}.sg = fsub double {p}.sf, {p}.t",
        f"{p}.vs1 = fmul double {p}.zr, {L(_S[0])}",
        f"{p}.sh = fsub double {p}.sg, {p}.vs1",
        f"{p}.s = fsub double {p}.r, {p}.sh",
        # fdlibm's __kernel_cos(r, t)
        _fma(f"{p}.ca", f"{p}.z", L(_C[2]), L(_C[1])),
        _fma(f"{p}.cb", f"{p}.z", f"{p}.ca", L(_C[0])),
        f"{p}.cc = fmul double {p}.z, {p}.cb",
        _fma(f"{p}.cd", f"{p}.z", L(_C[5]), L(_C[4])),
        _fma(f"{p}.ce2", f"{p}.z", f"{p}.cd", L(_C[3])),
        f"{p}.ww = fmul double {p}.w, {p}.w",
        f"{p}.cf = fmul double {p}.ww, {p}.ce2",
        f"{p}.cp = fadd double {p}.cc, {p}.cf",
        f"{p}.hz = fmul double {p}.z, {L(0.5)}",
        f"{p}.c1 = fsub double {ONE}, {p}.hz",
        f"{p}.cg = fsub double {ONE}, {p}.c1",
        f"{p}.ch = fsub double {p}.cg, {p}.hz",
        f"{p}.zc = fmul double {p}.z, {p}.cp",
        f"{p}.rt = fmul double {p}.r, {p}.t",
        f"{p}.ci = fsub double {p}.zc, {p}.rt",
        f"{p}.cj = fadd double {p}.ch, {p}.ci",
        f"{p}.c = fadd double {p}.c1, {p}.cj",
        f"{p}.ax = call double @llvm.fabs.f64(double {x})",
        f"{p}.big = fcmp ogt double {p}.ax, {L(TRIG_MAX)}",
    ]


def _pick(op: str, d: str, p: str) -> list[str]:
    """sin or cos of x from its reduction ``p``: the quadrant k picks s or c and the sign."""
    first, second, turn = ("c", "s", "") if op == "sin" else ("s", "c", "1")
    k = f"{p}.kb"
    lines = [
        f"{d}.k1 = and i64 {k}, 1",
        f"{d}.odd = icmp ne i64 {d}.k1, 0",
        f"{d}.v = select i1 {d}.odd, double {p}.{first}, double {p}.{second}",
    ]
    if turn:  # cos: negative where (k + 1) & 2
        lines.append(f"{d}.kt = add i64 {k}, 1")
        k = f"{d}.kt"
    return lines + [
        f"{d}.k2 = and i64 {k}, 2",
        f"{d}.neg = icmp ne i64 {d}.k2, 0",
        f"{d}.nv = fneg double {d}.v",
        f"{d} = select i1 {d}.neg, double {d}.nv, double {d}.v",
    ]


#: The EntryWriter's forms of the ops using exp (sin and cos: ``EntryWriter.trig``).
VECTOR_OPS: dict[str, Emit] = {
    "exp": _vector_exp,
    "sigmoid": _sigmoid(_vector_exp),
    "softplus": _softplus_like(True, _vector_exp),
    "logsigmoid": _softplus_like(False, _vector_exp),
}
TRIG = ("sin", "cos")

#: Instructions each op costs, for cutting chunks (a gate's expansion counts its ops), with
#: ``OPS``'s calls and with the vector forms (sin and cos count their own reduction).
_COST = {name: len(emit("%d", ["%a", "%b"])) for name, emit in OPS.items()}
_VECTOR_COST = {**_COST, **{name: len(emit("%d", ["%a"])) for name, emit in VECTOR_OPS.items()}}
_VECTOR_COST.update({op: len(_reduce("%p", "%a")) + len(_pick(op, "%d", "%p")) for op in TRIG})


@dataclass(frozen=True)
class EntryIR:
    """One entry's LLVM IR and how the entry's arguments feed its driver.

    The entry is called with its given values then its output buffers (``Entry.given`` then
    ``Entry.outputs``); ``arrays`` lists the positions of those whose addresses go in the
    driver's ``arrays`` table, ``scalars`` the positions of scalar inputs, ``sums`` the positions
    of the one-element buffers that receive the totals (``partial`` has ``len(sums)`` columns).
    ``functions`` are the chunks' definitions (a chunk using sin or cos followed by its exact
    twin), ``prototypes`` their declarations, ``driver`` the driver's (``symbol``): ``text``
    is them as one module, ``modules(k)`` as ``k`` modules to compile side by side.
    """

    header: str
    declarations: tuple[str, ...]
    functions: tuple[str, ...]
    prototypes: tuple[str, ...]
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
        chunk_decls = self.prototypes[bounds[1] :]
        texts[0] = "\n".join([texts[0], *chunk_decls, "", self.driver, ""])
        return texts


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
    ):
        self.adj, self.entry, self.vector = adj, entry, vector  # the title is not written
        self.limit = CHUNK_INSTRUCTIONS if chunk is None else chunk
        self.costs = _VECTOR_COST if vector else _COST
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
        self.declared: set[str] = set()
        self.nodes = nodes
        # The chunk being written: whether it is an exact twin, the sin/cos reductions it has
        # computed (operand -> their prefix) and their |x| > TRIG_MAX flags.
        self.exact = False
        self.reduced: dict[str, str] = {}
        self.flags: list[str] = []

    # ------------------------------------------------------------------ emitting one op
    def op_lines(self, op: str, dst: str, operands: list[str]) -> list[str]:
        """IR defining ``%dst`` as ``op(*operands)``; a gate the table lacks is expanded."""
        emit = (self.vector and VECTOR_OPS.get(op)) or OPS.get(op)
        if emit is not None:
            if self.vector and op in TRIG:
                lines = self.trig(op, f"%{dst}", operands[0])
            else:
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

    def trig(self, op: str, d: str, x: str) -> list[str]:
        """sin or cos: branch-free, exact for |x| <= TRIG_MAX. The fast chunk flags points
        beyond (a select of the C library's value would call it for every point); the driver
        then runs the block again through the exact twins, which take the C library's value
        there, so a point's result never depends on its neighbours. sin(x) and cos(x) in one
        chunk share x's reduction."""
        lines: list[str] = []
        p = self.reduced.get(x)
        if p is None:
            p = self.reduced[x] = d
            lines += _reduce(p, x)
            self.flags.append(f"{p}.big")
        if not self.exact:
            return lines + _pick(op, d, p)
        return lines + [
            *_pick(op, f"{d}.fast", p),
            f"{d}.lib = call double @llvm.{op}.f64(double {x})",
            f"{d} = select i1 {p}.big, double {d}.lib, double {d}.fast",
        ]

    def cost(self, op: str) -> int:
        if op in self.costs:
            return self.costs[op]
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
        prefix = entry.name  # one of ENTRIES
        functions: list[str] = []
        prototypes: list[str] = []
        flagged: list[bool] = []  # chunks returning whether a sin or cos argument was huge
        for k, chunk in enumerate(chunks):
            after = chunks[k - 1][-1] if k else -1
            name = f"{prefix}.{k + 1}"
            functions.append(self.chunk(name, k, chunk, slot, after, block))
            flagged.append(bool(self.flags))
            prototypes.append(_prototype("i1" if self.flags else "void", name))
            if self.flags:
                functions.append(self.chunk(f"{name}.exact", k, chunk, slot, after, block, True))
                prototypes.append(_prototype("void", f"{name}.exact"))
        driver = self.driver(prefix, flagged, block)
        twins = f" (+{sum(flagged)} exact twins)" if any(flagged) else ""
        header = (
            f"; symgrad {entry.name}: {len(entry.nodes)} nodes in {len(chunks)} "
            f"chunks{twins}, {rows} temporary rows, blocks of {block} points"
        )
        declarations = tuple(DECLARATIONS[name] for name in sorted(self.declared))
        text = "\n".join([header, *declarations, *functions, *prototypes, driver])
        check_llvm(text, _own(prefix, len(chunks)), set(DECLARATIONS))
        return EntryIR(
            header=header,
            declarations=declarations,
            functions=tuple(functions),
            prototypes=tuple(prototypes),
            driver=driver,
            symbol=prefix,
            block=block,
            rows=rows,
            arrays=tuple(self.arrays),
            scalars=tuple(self.scalars),
            sums=tuple(self.sums),
        )

    def chunk(self, name, k, chunk, slot, after, block, exact=False) -> str:
        """The chunk's function; with sin or cos (``self.flags`` set), the fast form returns
        whether any point's argument was beyond TRIG_MAX, the ``exact`` twin nothing."""
        c = _Chunk()
        nodes = self.nodes
        self.exact, self.reduced, self.flags = exact, {}, []

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
                    # reassoc on the sum alone lets O3 keep one partial sum per vector lane:
                    # a serial chain of fadds is what kept loops with a scalar's gradient
                    # scalar (2x slower); only the order of the additions (rounding) changes.
                    c.body.append(f"{new} = fadd reassoc double {acc}, {value}")
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
                c.body.append(f"; {comment(text)}")  # the line ends with the fused note
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

    def driver(self, name: str, flagged: list[bool], block: int) -> str:
        """Runs each block through the chunks; if a chunk flags a huge sin or cos argument, runs
        the block again with the exact twins. Outputs and temporaries are simply written again;
        the block's partial sums are zeroed first so that nothing is counted twice."""
        n_sums = len(self.sums)
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
            self.declared.add("llvm.memset.p0.i64")
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


def _own(prefix: str, chunks: int) -> set[str]:
    """The functions the module of entry ``prefix`` with ``chunks`` chunks may define."""
    names = {prefix, *(f"{prefix}.{k + 1}" for k in range(chunks))}
    return names | {f"{name}.exact" for name in names}


def _prototype(returns: str, name: str) -> str:
    """A chunk's declaration, for the modules that call it without defining it."""
    return f"declare {returns} @{name}(i64, i64, ptr, ptr, ptr, ptr)"


def generate_entry(
    adj: AdjointGraph,
    entry: Entry,
    title: str = "",
    chunk: int | None = None,
    vector: bool = True,
) -> EntryIR:
    """The LLVM module of ``entry`` (``chunk`` overrides ``CHUNK_INSTRUCTIONS``).

    ``vector`` prints exp, sin and cos branch-free (``VECTOR_OPS``), for loops that LLVM's O3
    pipeline vectorises (2x faster on sin/exp chains); without that pipeline, in scalar code, the
    C library's are faster (measured on a 3,400-node chain: 0.8x the speed, 3x the compile time).
    The tier asks for it exactly when it runs O3 (``runtime.llvm_tier.OPTIMISE_NODES``).
    """
    return EntryWriter(adj, entry, title, chunk, vector).write()

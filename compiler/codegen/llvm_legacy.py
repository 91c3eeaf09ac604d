"""The LLVM IR strings of the ops that have no ``lower`` in the op table yet (transitional).

Each op here is a function ``(dst, operands) -> IR lines defining dst``; ``compiler.codegen.
llvm_ops`` wraps each into an ``internal alwaysinline`` function, exactly as it prints an entry's
``lower``. Once every built-in entry has its lowering (``compiler/ir/ops/*.py``), this file goes.
The branch-free exp, sin and cos are ``runtime/scalar.py``'s (read it for the derivations).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable


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


def body(op: str, vector: bool, fast: bool) -> list[str] | None:
    """IR lines computing ``%r`` from ``%a`` (and ``%b``) for ``op``, or None if it has none
    here; ``fast`` (sin and cos) also defines ``%p.big``: |a| > TRIG_MAX."""
    if fast:
        return _reduce("%p", "%a") + _pick(op, "%r", "%p") if op in TRIG else None
    if vector and op in TRIG:  # exact everywhere: the C library's value where |a| is huge
        return _reduce("%p", "%a") + [
            *_pick(op, "%r.fast", "%p"),
            f"%r.lib = call double @llvm.{op}.f64(double %a)",
            "%r = select i1 %p.big, double %r.lib, double %r.fast",
        ]
    emit = (vector and VECTOR_OPS.get(op)) or OPS.get(op)
    return None if emit is None else emit("%r", ["%a", "%b"])

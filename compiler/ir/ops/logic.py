"""Selection, comparisons and logic: ``where(c, a, b)``, ``<`` ... ``!=``, ``&``, ``|``, ``~``.

Truth values are floats, as NumPy's comparisons cast to float: a comparison gives 1.0 or 0.0, and
an operand of ``where`` or of the logical ops is true when it is nonzero (nan is nonzero, as
``bool(np.nan)``). A comparison with nan is false, except ``!=``, which is true (IEEE, NumPy).

Their gradients are 0 (the kink table): a comparison or a truth value is piecewise constant. The
gradient of ``where`` goes to the chosen branch only, and ``where``'s gradients are selections
(``where(a, 1, 0)``), which the adjoint pass turns into routings of the upstream gradient rather
than products: the other branch's inf or nan never reaches it (``compiler.passes.adjoint``).
"""

from __future__ import annotations

import numpy as np

from compiler.ir.lowering import Lower
from compiler.ir.opdef import OpDef, entry


def _float(mask, *operands):
    """A boolean mask as floats of the operands' type (float32 stays float32), as NumPy casts."""
    dtype = np.result_type(*(np.asarray(x).dtype for x in operands))
    return np.asarray(mask).astype(dtype if dtype.kind == "f" else np.float64)


def _where(c, a, b):
    with np.errstate(invalid="ignore"):
        return np.where(np.asarray(c) != 0, a, b)


def lower_where(L: Lower, c, a, b):
    # une: true if c is nonzero or nan (bool(nan) is True)
    return L.select(L.ucmp("!=", c, L.const(0.0)), a, b)


def _truth(L: Lower, x):
    """``x != 0`` as an i1 (nan is true)."""
    return L.ucmp("!=", x, L.const(0.0))


def _as_float(L: Lower, bit):
    return L.b.uitofp(bit, L.ty)


def _comparison(name: str, sign: str, ufunc, ordered: bool = True) -> OpDef:
    """``a <sign> b`` as 1.0 or 0.0; ordered (false with nan), or unordered for ``!=``."""

    def lower(L: Lower, a, b):
        return _as_float(L, L.cmp(sign, a, b) if ordered else L.ucmp(sign, a, b))

    def numpy(a, b):
        with np.errstate(invalid="ignore"):
            return _float(ufunc(a, b), a, b)

    relation = {"==": "Eq(a, b)", "!=": "Ne(a, b)"}.get(sign, f"a {sign} b")
    lower.__name__ = f"lower_{name}"
    return entry(
        name, f"Piecewise((1, {relation}), (0, True))", arity=2, grads=("0", "0"),
        numpy=numpy, lower=lower, text=f"{{a}} {sign} {{b}}", symbol=sign,
        commutative=sign in ("==", "!="), kinks=("a - b",), truth=True,
    )  # fmt: skip


def lower_logical_and(L: Lower, a, b):
    return _as_float(L, L.b.and_(_truth(L, a), _truth(L, b)))


def lower_logical_or(L: Lower, a, b):
    return _as_float(L, L.b.or_(_truth(L, a), _truth(L, b)))


def lower_logical_not(L: Lower, a):
    return _as_float(L, L.cmp("==", a, L.const(0.0)))


# fmt: off
OPS: list[OpDef] = [
    # where(c, a, b): a where c is nonzero (or nan), else b. Operands a, b, c of the entry are
    # the condition and the two branches. Its gradients are selections: the adjoint routes.
    entry("where", "Piecewise((b, Ne(a, 0)), (c, True))", arity=3,
          grads=("0", "where(a, 1, 0)", "where(a, 0, 1)"),
          numpy=_where, lower=lower_where, text="where({a}, {b}, {c})",
          domain=("truth", "", "")),
    _comparison("lt", "<", np.less),
    _comparison("le", "<=", np.less_equal),
    _comparison("gt", ">", np.greater),
    _comparison("ge", ">=", np.greater_equal),
    _comparison("eq", "==", np.equal),
    _comparison("ne", "!=", np.not_equal, ordered=False),
    entry("logical_and", "Piecewise((1, Ne(a, 0) & Ne(b, 0)), (0, True))", arity=2,
          grads=("0", "0"), numpy=lambda a, b: _float(np.logical_and(a, b), a, b),
          lower=lower_logical_and, text="{a} & {b}", symbol="&", commutative=True,
          domain=("truth", "truth"), truth=True),
    entry("logical_or", "Piecewise((1, Ne(a, 0) | Ne(b, 0)), (0, True))", arity=2,
          grads=("0", "0"), numpy=lambda a, b: _float(np.logical_or(a, b), a, b),
          lower=lower_logical_or, text="{a} | {b}", symbol="|", commutative=True,
          domain=("truth", "truth"), truth=True),
    entry("logical_not", "Piecewise((1, Eq(a, 0)), (0, True))", grads=("0",),
          numpy=lambda a: _float(np.logical_not(a), a), lower=lower_logical_not,
          text="~{a}", symbol="~", domain=("truth",), truth=True),
]
# fmt: on

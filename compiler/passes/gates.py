"""Gates as graphs: a gate's table entry built from its definition, and its proof by SymPy.

- ``make_spec`` / ``discovered_spec`` turn a definition (a graph over ``x``), the forward the
  kernels compute and the local gradient (over ``x`` and the output ``y``) into an ``OpDef``:
  lowered by ``lower_graph`` of its forward (its ops' own lowerings), with a NumPy oracle;
- ``verify`` proves one: the stated gradient, with ``y`` substituted, is ``diff`` of the
  definition, and the stable forward equals the definition; numeric spot checks against 30-digit
  evaluation back the proof up; ``output_gradient`` finds the gradient discovery fuses by.

Pure: nothing here writes the op table (``compiler.gates`` registers; fusion returns what it
discovered). User text is read by symgrad's own parser only (never ``sympify``), and SymPy is
imported only when a gate is proved.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from compiler.errors import GateError, ParseError
from compiler.frontend.text import parse
from compiler.ir import registry
from compiler.ir.graph import SEED, Graph, copy_nodes
from compiler.ir.lowering import lower_graph
from compiler.ir.opdef import OpDef
from compiler.ir.printing import evaluate, text_of
from compiler.passes.adjoint import adjoint

#: Points (besides a few random ones) where registration compares a gate with its definition.
SPOT_CHECKS = (-30.0, -10.0, -3.0, -1.0, -0.5, -0.125, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0)


def make_spec(name: str, body: Graph, forward: Graph, gradient: Graph, origin: str) -> OpDef:
    """A table entry for a gate defined by ``body`` (over x), computed as ``forward``, whose
    local gradient is ``gradient`` (over x and y). Its lowering composes its ops' own;
    ``LoweringError`` if one of them has no lowering."""
    over_a = {"x": "a"}
    return OpDef(
        name=name,
        arity=1,
        definition=text_of(body, over_a),
        text=f"{name}({{a}})",
        numpy=_numpy_function(forward, name),
        symbol=name,
        grads=(text_of(gradient, over_a),),
        patterns=(text_of(body),) if origin == "user" else (),
        stable=text_of(forward, over_a) if forward is not body else None,
        origin=origin,
        lower=lower_graph(_over_a(forward)),
    )


def _over_a(graph: Graph) -> Graph:
    """The graph with its input ``x`` renamed ``a``: the placeholder lowerings read."""
    renamed = Graph()
    mapping = copy_nodes(graph, renamed, {graph.input("x"): renamed.input("a")})
    renamed.outputs = [mapping[o] for o in graph.outputs]
    return renamed


def chain_rule_gradient(forward: Graph) -> Graph:
    """d/dx of ``forward`` (over x) through its ops' own local gradients, as a graph over x and
    y, with y standing for the forward's output wherever the backward reads it."""
    adj = adjoint(forward, ["x"])
    grad = Graph()
    mapping = {adj.input("x"): grad.input("x"), adj.outputs[0]: grad.input("y")}
    mapping.update({i: grad.const(1.0) for i, n in enumerate(adj.nodes) if n.op == SEED})
    out = adj.outputs[1]
    copy_nodes(adj, grad, mapping, keep=adj.reachable([out]))
    grad.outputs = [mapping[out]]
    return grad


def discovered_spec(body: Graph, gradient: Graph) -> OpDef:
    """The entry for a chain fusion discovered, named by a hash of its content (so the same
    chain is the same gate in every process). ``body`` is over ``x``; ``gradient`` over ``y``
    (and possibly ``x``), already proved with SymPy (``output_gradient``)."""
    text = text_of(body, {"x": "a"}) + "\0" + text_of(gradient, {"x": "a"})
    name = "auto_" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return make_spec(name, body, body, gradient, origin="discovered")


def _numpy_function(graph: Graph, name: str) -> Callable:
    out = graph.outputs[0]

    def function(a):
        return evaluate(graph, {"x": a})[out]

    function.__name__ = name
    return function


def same(old: OpDef, new: OpDef) -> bool:
    fields = ("definition", "grads", "stable", "patterns", "origin")
    return all(getattr(old, f) == getattr(new, f) for f in fields)


def output_gradient(body: Graph) -> Graph | None:
    """d/dx of ``body`` (over x) written in terms of its output y alone, proved by SymPy; None if
    SymPy finds no such form (the region is not invertible, or only special functions invert it).

    SymPy solves y = f(x) for x, substitutes into f'(x), simplifies, and the result must prove
    equal to f'(x) once y = f(x) is put back.
    """
    import sympy

    from compiler.frontend.sympy_expr import from_sympy

    a, _, y = registry.placeholders()
    f = body.to_sympy().xreplace({sympy.Symbol("x"): a})
    derivative = sympy.diff(f, a)
    for form in dict.fromkeys((f, f.rewrite(sympy.exp))):
        try:
            solutions = sympy.solve(sympy.Eq(y, form), a)
        except (NotImplementedError, ValueError, TypeError):
            continue
        for x_of_y in solutions:
            if not _elementary(x_of_y):
                continue
            g = sympy.simplify(derivative.xreplace({a: x_of_y}))
            if g.free_symbols != {y} or not _elementary(g):
                continue
            if prove_zero(g.xreplace({y: f}) - derivative, a) is None:
                continue
            try:
                graph = from_sympy(g)
            except ParseError:
                continue
            if set(graph.inputs) == {"y"}:
                return graph
    return None


def _elementary(expr) -> bool:
    """Real, and built from exp, log and Abs only (what the language can print back)."""
    import sympy

    if expr.has(sympy.I, sympy.zoo, sympy.nan):
        return False
    return all(isinstance(f, (sympy.exp, sympy.log, sympy.Abs)) for f in expr.atoms(sympy.Function))


def parse_over(text: str, allowed: set[str], what: str) -> Graph:
    if not isinstance(text, str):
        raise GateError(f"{what} must be text, got {type(text).__name__}")
    try:
        graph = parse(text)
    except ParseError as e:
        error = ParseError(f"{what}: {e}")  # the message already names the column
        error.column, error.token = e.column, e.token
        raise error from None
    extra = sorted(set(graph.inputs) - allowed)
    if extra:
        names = " and ".join(sorted(allowed))
        raise GateError(f"{what} may only use {names}; it uses {extra}")
    if "x" in allowed and "y" not in allowed and "x" not in graph.inputs:
        raise GateError(f"{what} does not depend on x")
    return graph


# ------------------------------------------------------------------------------ proofs
@dataclass(frozen=True)
class Proof:
    """How a gate was verified: the method SymPy succeeded with, per claim, and the spot checks."""

    gradient: str
    stable: str
    points: int


def verify(spec: OpDef) -> Proof:
    """Prove a gate: stated gradient == d/dx definition (with y := definition), stable form ==
    definition, then spot checks of ``spec.numpy`` and the gradient at 30 digits.

    Raises ``GateError`` naming the claim that failed and a point where it fails.
    """
    try:
        return _verify(spec)
    except (MemoryError, RecursionError):
        raise GateError(
            f"gate '{spec.name}': SymPy ran out of memory or depth proving {spec.definition}; "
            "a gate this large cannot be verified"
        ) from None


def _verify(spec: OpDef) -> Proof:
    import sympy

    a, _, y = registry.placeholders()
    f = _definition(spec)
    rng = np.random.default_rng(0)
    points = [p for p in (*SPOT_CHECKS, *rng.uniform(-5, 5, 8)) if _in_range(spec, p)]
    how_stable = "same as the definition"
    if spec.stable is not None:  # first: a derived gradient comes from the stable form
        how_stable = prove_zero(sympy_text(spec.stable) - f, a)
        if how_stable is None:
            where = _counterexample(sympy_text(spec.stable), f, a, points)
            raise GateError(
                f"gate '{spec.name}': the stable form {spec.stable} does not equal the "
                f"definition {spec.definition}{where}"
            )
    derivative = sympy.diff(f, a)
    stated = sympy_text(spec.grads[0]).xreplace({y: f})
    how_gradient = prove_zero(stated - derivative, a)
    if how_gradient is None:
        where = _counterexample(stated, derivative, a, points)
        raise GateError(
            f"gate '{spec.name}': the stated gradient {spec.grads[0]} is not d/dx of "
            f"{spec.definition} (y = the gate's output){where}; SymPy's derivative is "
            f"{sympy.simplify(derivative)}"
        )
    checked = _spot_check(spec, f, derivative, a, points)
    return Proof(how_gradient, how_stable, checked)


def prove_zero(expr, a) -> str | None:
    """How SymPy shows ``expr`` (over the real ``a``) is identically 0, or None if it cannot.

    Tried in turn: ``simplify``, ``simplify`` of the exp form, each sign of ``a`` on its own (Abs,
    Max, Min and Heaviside resolve then), and SymPy's own ``equals(0)``.
    """
    import sympy

    for form in (expr, expr.rewrite(sympy.exp)):
        if sympy.simplify(form) == 0:
            return "simplify"
    p = sympy.Symbol("p", positive=True)
    if all(sympy.simplify(expr.xreplace({a: s}).rewrite(sympy.exp)) == 0 for s in (p, -p)):
        return "simplify, each sign of x"
    if expr.equals(0) is True:
        return "equals(0)"
    return None


def _definition(spec: OpDef):
    if spec.origin == "builtin":
        return registry.sympy_definition(spec.name)
    return sympy_text(spec.definition)


def sympy_text(text: str):
    """Text over a, y (or x) in the language → SymPy over the real placeholders (our parser,
    no eval)."""
    import sympy

    a, _, y = registry.placeholders()
    symbols = {sympy.Symbol("a"): a, sympy.Symbol("x"): a, sympy.Symbol("y"): y}
    return parse(text).to_sympy().xreplace(symbols)


def _in_range(spec: OpDef, point: float) -> bool:
    """Whether the definition, the stable form and the stated gradient stay finite in float64
    at ``point``, every intermediate included. Where one overflows (exp(exp(exp(x))) at x = 30)
    float64 has no answer to check, and SymPy's exact evaluation would take unbounded time and
    memory (mpmath builds exp(exp(1e13)) digit by digit): such points are skipped."""
    try:
        forms = [_template_of(spec.definition)]
    except ParseError:
        return True  # a built-in's definition, in SymPy's syntax: trusted, and tame
    if spec.stable is not None:
        forms.append(_template_of(spec.stable))
    env = {"a": np.float64(point)}
    for graph in forms:
        values = evaluate(graph, env)
        if not all(np.all(np.isfinite(v) | np.isnan(v)) for v in values):
            return False
        env.setdefault("y", values[graph.outputs[0]])
    gradient = _template_of(spec.grads[0])
    return all(np.all(np.isfinite(v) | np.isnan(v)) for v in evaluate(gradient, env))


def _exact(expr, a, point: float) -> float | None:
    """``expr`` at ``a = point`` to 30 digits, or None where it is not a finite real."""
    try:
        value = complex(expr.subs(a, point).evalf(30))
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if value.imag != 0 or not math.isfinite(value.real):
        return None
    return value.real


def _counterexample(stated, truth, a, points) -> str:
    for p in (p for p in SPOT_CHECKS if p in points):
        s, t = _exact(stated, a, p), _exact(truth, a, p)
        if s is not None and t is not None and not math.isclose(s, t, rel_tol=1e-9, abs_tol=1e-12):
            return f": at x = {p:g} it gives {s:.12g}, not {t:.12g}"
    return ""


def _spot_check(spec: OpDef, f, derivative, a, points: list[float]) -> int:
    """Compare the forward (``spec.numpy``) and the stated gradient, evaluated with NumPy from
    the forward's own output, with the definition and its derivative at 30 digits, at the
    ``points`` where float64 does not overflow (``_in_range``)."""
    grad_template = _template_of(spec.grads[0])
    checked = 0
    for p in points:
        value, slope = _exact(f, a, p), _exact(derivative, a, p)
        if value is None or slope is None:
            continue
        got = float(spec.numpy(np.float64(p)))
        env = {"a": p, "y": got}
        got_slope = float(evaluate(grad_template, env)[grad_template.outputs[0]])
        # Absolute slack at the function's own scale: y * (1 - y) near y = 1 is only that good.
        slack = 1e-12 * max(1.0, abs(value))
        for what, mine, truth in (("value", got, value), ("gradient", got_slope, slope)):
            if not math.isclose(mine, truth, rel_tol=1e-9, abs_tol=slack):
                raise GateError(
                    f"gate '{spec.name}': numeric check failed at x = {p:g}: its {what} is "
                    f"{mine!r}, the definition's is {truth!r}"
                )
        checked += 1
    if checked < 3:
        raise GateError(f"gate '{spec.name}': its definition is not a finite real number in "
                        f"float64 at enough of the points checked "
                        f"({', '.join(f'{p:g}' for p in SPOT_CHECKS)})")  # fmt: skip
    return checked


def _template_of(text: str) -> Graph:
    return parse(text)

"""Gates: ops with a verified local gradient that fusion builds out of smaller subgraphs.

A gate is an entry of the op table (``compiler/ir/registry.py``) like any other op: frontends,
the adjoint pass, codegen and fusion read it from there. This module

- proves gates correct with SymPy (``verify``): the stated local gradient, with the gate's output
  ``y`` substituted, is ``diff`` of the definition, and the stable forward equals the definition;
  numeric spot checks against 30-digit evaluation back the proof up;
- registers users' gates (``register_gate``) after that proof, and the gates fusion discovers;
- prints small graphs as text and as Numba code, and evaluates them with NumPy, so that a gate made
  of other ops needs no new helper: its code is the composition of theirs.

User text is read by symgrad's own parser only (never ``sympify``), and SymPy is imported only when
a gate is verified: compiling with built-in or already registered gates never needs it.
"""

from __future__ import annotations

import hashlib
import keyword
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from compiler.errors import GateError, ParseError
from compiler.ir import registry
from compiler.ir.graph import CONST, INPUT, SEED, Graph, copy_nodes, format_const
from compiler.ir.registry import CONSTANTS, FUNCTIONS, OPS, OpDef

#: Points (besides a few random ones) where registration compares a gate with its definition.
SPOT_CHECKS = (-30.0, -10.0, -3.0, -1.0, -0.5, -0.125, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0)
_RESERVED = {"x", "y", "a", "b", "seed", "auto", "pi", "inf", "nan", "math"}
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")
_CALL_HEAD = re.compile(r"[\w.]+\(")


def gate_names(origin: str | None = None) -> tuple[str, ...]:
    """Registered gates in table order (built-ins first), optionally of one origin."""
    return tuple(
        name
        for name, spec in OPS.items()
        if spec.is_gate and (origin is None or spec.origin == origin)
    )


# ------------------------------------------------------------------------------ printing
def render(
    graph: Graph,
    root: int,
    leaves: dict[int, tuple[str, int]],
    kind: str = "text",
    templates: dict[int, str] | None = None,
) -> str:
    """``root`` as one expression: ``kind`` "text" (the language) or "code" (Numba source).

    ``leaves`` maps nodes to (text, precedence) pairs printed as given; ``templates`` overrides
    the op's template for some unary nodes (a fused gate prints what it replaced). Operands are
    parenthesised where precedence needs it. Iterative, in node order; for gate-sized graphs.
    """
    templates = templates or {}
    texts = dict(leaves)
    needed = _cone(graph, root, set(leaves))
    for i in sorted(needed):
        node = graph.nodes[i]
        if node.op == CONST:
            texts[i] = (_const_text(node.value, kind), ATOM)
        elif node.op in (INPUT, SEED):
            texts[i] = (str(node.value) if node.op == INPUT else "seed", ATOM)
        else:
            template = templates.get(i) or getattr(OPS[node.op], kind)
            level = precedence(template)
            operands = {}
            for k, arg in zip("ab", node.args):
                text, inner = texts[arg]
                if (
                    kind == "code"
                    and node.op == "pow"
                    and k == "b"
                    and graph.nodes[arg].op == CONST
                ):
                    text = _const_text(graph.nodes[arg].value, kind, exponent=True)
                operands[k] = f"({text})" if _needs_parentheses(level, inner, k) else text
            texts[i] = (template.format(**operands), level)
    return texts[root][0]


# Binding strength of a template, as Python's (and the language's) grammar has it.
ATOM, POWER, UNARY, PRODUCT, SUM = 5, 4, 3, 2, 1
_INFIX = {"**": POWER, "*": PRODUCT, "/": PRODUCT, "+": SUM, "-": SUM}
_BINARY = re.compile(r"\{a\} (\*\*|\*|/|\+|-) \{b\}")


def precedence(template: str) -> int:
    """ATOM for a call, then POWER, UNARY, PRODUCT, SUM; 0 for anything else (a composed
    gate's code), which is always parenthesised as an operand."""
    if _is_call(template):
        return ATOM
    if template == "-{a}":
        return UNARY
    infix = _BINARY.fullmatch(template)
    return _INFIX[infix.group(1)] if infix else 0


def _needs_parentheses(outer: int, inner: int, side: str) -> bool:
    if outer == ATOM:  # a call's operands sit between parentheses and commas
        return False
    if outer == 0:
        return inner < ATOM
    if outer == POWER:  # (-x) ** 2, (a ** b) ** c
        return inner <= POWER if side == "a" else inner < UNARY
    return inner < outer or (inner == outer and side == "b" and outer != UNARY)


def _is_call(template: str) -> bool:
    """``name(...)`` as a whole, whose first parenthesis closes at the very end: no parentheses
    needed around it as an operand."""
    head = _CALL_HEAD.match(template)
    if not head or not template.endswith(")"):
        return False
    depth = 0
    for k in range(head.end() - 1, len(template)):
        depth += {"(": 1, ")": -1}.get(template[k], 0)
        if depth == 0:
            return k == len(template) - 1
    return False


def _cone(graph: Graph, root: int, stop: set[int]) -> set[int]:
    seen, stack = set(), [root]
    while stack:
        i = stack.pop()
        if i in seen or i in stop:
            continue
        seen.add(i)
        stack.extend(graph.nodes[i].args)
    return seen


def _const_text(value: float, kind: str, exponent: bool = False) -> str:
    if kind == "code":
        from compiler.codegen.numba_source import literal

        return literal(value, exponent)
    if math.isnan(value):
        return "(1e999 - 1e999)"  # folds back to nan when parsed
    if math.isinf(value):
        return "1e999" if value > 0 else "(-1e999)"
    text = format_const(value)
    return f"({text})" if text.startswith("-") else text


def text_of(graph: Graph, names: dict[str, str] | None = None) -> str:
    """The graph's output as text in the language, inputs renamed by ``names``."""
    names = names or {}
    leaves = {graph.input(n): (names.get(n, n), ATOM) for n in graph.inputs}
    return render(graph, graph.outputs[0], leaves)


def evaluate(graph: Graph, env: dict[str, object], seed: float = 1.0) -> list:
    """Every node's value, with NumPy and NumPy's float semantics (no warnings)."""
    values: list = []
    with np.errstate(all="ignore"):
        for node in graph.nodes:
            if node.op == INPUT:
                values.append(np.asarray(env[node.value], dtype=np.float64))
            elif node.op == CONST:
                values.append(np.float64(node.value))
            elif node.op == SEED:
                values.append(np.float64(seed))
            else:
                values.append(OPS[node.op].numpy(*(values[a] for a in node.args)))
    return values


def _numpy_function(graph: Graph, name: str) -> Callable:
    out = graph.outputs[0]

    def function(a):
        return evaluate(graph, {"x": a})[out]

    function.__name__ = name
    return function


# ------------------------------------------------------------------------------ registration
def register_gate(
    name: str,
    definition: str,
    grad_in_terms_of_output: str | None = None,
    *,
    stable: str | None = None,
) -> OpDef:
    """Add a gate ``name(x) = definition`` after proving it with SymPy; return its table entry.

    ``definition`` is text over ``x`` in symgrad's language (it may call built-in and registered
    gates). ``grad_in_terms_of_output`` states d/dx over ``y`` (the gate's output) and ``x``; by
    default it is the chain rule through the definition's own ops (so stable pieces stay stable).
    ``stable`` is an optional equivalent formula the generated code computes instead of the
    definition. Fusion then turns the definition's subgraph into the gate, and text, SymPy and
    traced callables (``compiler.ops.<name>``) can call it.

    Raises ``GateError`` if the name is taken or unusable, or if SymPy refutes (or cannot prove)
    the stated gradient or the stable form; ``ParseError`` for text outside the language.

    >>> import compiler
    >>> compiler.register_gate("sigmoid2", "1/(1+exp(-x))", grad_in_terms_of_output="y*(1-y)").grads
    ('y * (1 - y)',)
    """
    _check_name(name)
    body = _parse_over(definition, {"x"}, f"the definition of {name}")
    if body.nodes[body.outputs[0]].op in (INPUT, CONST):
        raise GateError(f"the definition of {name} is {definition!r}: a gate needs an operation")
    forward = _parse_over(stable, {"x"}, f"the stable form of {name}") if stable else body
    if grad_in_terms_of_output is None:
        gradient = chain_rule_gradient(forward)
    else:
        gradient = _parse_over(grad_in_terms_of_output, {"x", "y"}, f"the gradient of {name}")
    spec = make_spec(name, body, forward, gradient, origin="user")
    if name in OPS:
        if _same(OPS[name], spec):
            return OPS[name]  # the same gate again: nothing to do
        raise GateError(f"a different gate '{name}' is registered; unregister_gate it first")
    verify(spec)
    _install(spec, callable_by_name=True)
    return spec


def unregister_gate(name: str) -> None:
    """Remove a user's gate (kernels compiled with it keep the code they were compiled with)."""
    spec = OPS.get(name)
    if spec is None or spec.origin != "user":
        raise GateError(f"'{name}' is not a user-registered gate")
    call = re.compile(rf"\b{re.escape(name)}\(")
    users = [
        other.name
        for other in OPS.values()
        if other.origin != "builtin"
        and other.name != name
        and any(call.search(t) for t in (other.definition, *(other.grads or ()), *other.patterns))
    ]
    if users:
        raise GateError(f"gate '{name}' is used by gate(s) {users}; unregister those first")
    del OPS[name]
    FUNCTIONS.pop(name, None)
    _forget(name)


def register_discovered(body: Graph, gradient: Graph) -> OpDef:
    """The gate for a chain fusion discovered (named by a hash of its content), registered once.

    ``body`` is over ``x``; ``gradient`` over ``y`` (and possibly ``x``), already proved by the
    caller with SymPy.
    """
    text = text_of(body, {"x": "a"}) + "\0" + text_of(gradient, {"x": "a"})
    name = "auto_" + hashlib.sha256(text.encode()).hexdigest()[:8]
    if name not in OPS:
        _install(make_spec(name, body, body, gradient, origin="discovered"), callable_by_name=False)
    return OPS[name]


def make_spec(name: str, body: Graph, forward: Graph, gradient: Graph, origin: str) -> OpDef:
    """A table entry for a gate defined by ``body`` (over x), computed as ``forward``, whose
    local gradient is ``gradient`` (over x and y). Its code composes its ops' code."""
    x_leaf = {forward.input("x"): ("{a}", ATOM)}
    code = render(forward, forward.outputs[0], x_leaf, kind="code")
    calls = tuple(sorted({h for n in forward.nodes if n.op in OPS for h in OPS[n.op].helpers}))
    over_a = {"x": "a"}
    return OpDef(
        name=name,
        arity=1,
        definition=text_of(body, over_a),
        text=f"{name}({{a}})",
        code=code,
        numpy=_numpy_function(forward, name),
        symbol=name,
        grads=(text_of(gradient, over_a),),
        patterns=(text_of(body),) if origin == "user" else (),
        stable=text_of(forward, over_a) if forward is not body else None,
        calls=calls,
        origin=origin,
    )


def chain_rule_gradient(forward: Graph) -> Graph:
    """d/dx of ``forward`` (over x) through its ops' own local gradients, as a graph over x and
    y, with y standing for the forward's output wherever the backward reads it."""
    from compiler.passes.adjoint import adjoint

    adj = adjoint(forward, ["x"])
    grad = Graph()
    mapping = {adj.input("x"): grad.input("x"), adj.outputs[0]: grad.input("y")}
    mapping.update({i: grad.const(1.0) for i, n in enumerate(adj.nodes) if n.op == SEED})
    out = adj.outputs[1]
    copy_nodes(adj, grad, mapping, keep=adj.reachable([out]))
    grad.outputs = [mapping[out]]
    return grad


def _same(old: OpDef, new: OpDef) -> bool:
    fields = ("definition", "code", "grads", "stable", "patterns", "calls", "origin")
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


def _install(spec: OpDef, callable_by_name: bool) -> None:
    OPS[spec.name] = spec
    if callable_by_name:
        FUNCTIONS[spec.name] = spec.name
        import compiler.ops

        compiler.ops.install(spec.name)
    _forget(spec.name, keep_function=callable_by_name)


def _forget(name: str, keep_function: bool = False) -> None:
    """Drop everything derived from an entry that changed (templates, SymPy form, ops.<name>)."""
    from compiler.passes.adjoint import local_gradient_template

    local_gradient_template.cache_clear()
    registry.forget_sympy_definition(name)
    if not keep_function:
        import compiler.ops

        compiler.ops.uninstall(name)


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise GateError(
            f"gate name {name!r} must be a letter then up to 39 letters, digits or underscores"
        )
    if keyword.iskeyword(name) or name in _RESERVED or name.startswith("auto_"):
        raise GateError(f"gate name '{name}' is reserved")
    if name in CONSTANTS or (name in OPS and OPS[name].origin != "user"):
        raise GateError(f"'{name}' is already a built-in op or constant")


def _parse_over(text: str, allowed: set[str], what: str) -> Graph:
    from compiler.frontend.text import parse

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
        how_stable = prove_zero(_sympy_text(spec.stable) - f, a)
        if how_stable is None:
            where = _counterexample(_sympy_text(spec.stable), f, a, points)
            raise GateError(
                f"gate '{spec.name}': the stable form {spec.stable} does not equal the "
                f"definition {spec.definition}{where}"
            )
    derivative = sympy.diff(f, a)
    stated = _sympy_text(spec.grads[0]).xreplace({y: f})
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
    return _sympy_text(spec.definition)


def _sympy_text(text: str):
    """Text over a, y in the language → SymPy over the real placeholders (our parser, no eval)."""
    import sympy

    from compiler.frontend.text import parse

    a, _, y = registry.placeholders()
    return parse(text).to_sympy().xreplace({sympy.Symbol("a"): a, sympy.Symbol("y"): y})


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
    from compiler.frontend.text import parse

    return parse(text)

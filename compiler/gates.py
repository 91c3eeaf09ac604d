"""Gates in the op table: users' gates registered after their SymPy proof, and the gates fusion
discovered made available to the kernels that use them.

This is the one place that writes gates into the global op table (``compiler.ir.registry``):
the passes stay pure (``compiler.passes.gates`` builds and proves entries, fusion returns what it
discovered in its report), and the compile step installs what a kernel needs (``fuse``).
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Sequence

from compiler import ops as functions
from compiler.errors import GateError
from compiler.ir import registry
from compiler.ir.graph import CONST, INPUT, Graph
from compiler.ir.opdef import OpDef
from compiler.ir.registry import CONSTANTS, FUNCTIONS, OPS
from compiler.passes import gates as proofs
from compiler.passes.fusion import FusionReport, Gates
from compiler.passes.fusion import fuse as fuse_pass

_RESERVED = {"x", "y", "a", "b", "seed", "auto", "pi", "inf", "nan", "math"}
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")


def gate_names(origin: str | None = None) -> tuple[str, ...]:
    """Registered gates in table order (built-ins first), optionally of one origin."""
    return tuple(
        name
        for name, spec in OPS.items()
        if spec.is_gate and (origin is None or spec.origin == origin)
    )


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
    body = proofs.parse_over(definition, {"x"}, f"the definition of {name}")
    if body.nodes[body.outputs[0]].op in (INPUT, CONST):
        raise GateError(f"the definition of {name} is {definition!r}: a gate needs an operation")
    forward = proofs.parse_over(stable, {"x"}, f"the stable form of {name}") if stable else body
    if grad_in_terms_of_output is None:
        gradient = proofs.chain_rule_gradient(forward)
    else:
        gradient = proofs.parse_over(grad_in_terms_of_output, {"x", "y"}, f"the gradient of {name}")
    spec = proofs.make_spec(name, body, forward, gradient, origin="user")
    if name in OPS:
        if proofs.same(OPS[name], spec):
            return OPS[name]  # the same gate again: nothing to do
        raise GateError(f"a different gate '{name}' is registered; unregister_gate it first")
    proofs.verify(spec)
    install(spec, callable_by_name=True)
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
    registry.unregister(name)
    _forget(name)


def fuse(
    graph: Graph, gates: Gates = True, *, wrt: Sequence[str] | None = None
) -> tuple[Graph, FusionReport]:
    """Fusion (``compiler.passes.fusion.fuse``) for a graph that is compiled next: the gates it
    discovered are installed in the op table, where the kernel's code, cache key and drawings
    find them. The same chain is the same entry (named by its content), so installing is
    idempotent."""
    fused, report = fuse_pass(graph, gates, wrt=wrt)
    install_discovered(report)
    return fused, report


def install_discovered(report: FusionReport) -> None:
    """Make the gates ``report`` discovered part of the op table (each once)."""
    for spec in report.discovered_ops.values():
        if spec.name not in OPS:
            install(spec, callable_by_name=False)


def install(spec: OpDef, callable_by_name: bool) -> None:
    """Put a proved gate into the table, with its SymPy definition (parsed once, here: the
    table never reads a gate's text)."""
    registry.register(spec, sympy_form=proofs.sympy_text(spec.definition))
    _forget(spec.name, keep_function=callable_by_name)
    if callable_by_name:
        functions.install(spec.name)
    else:  # a discovered gate is named by a hash: fusion makes it, users never write it
        FUNCTIONS.pop(spec.name, None)


def _forget(name: str, keep_function: bool = False) -> None:
    """Drop ``compiler.ops.<name>`` (the registry itself forgets what it derived from the entry:
    gradient templates, SymPy form)."""
    if not keep_function:
        functions.uninstall(name)


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise GateError(
            f"gate name {name!r} must be a letter then up to 39 letters, digits or underscores"
        )
    if keyword.iskeyword(name) or name in _RESERVED or name.startswith("auto_"):
        raise GateError(f"gate name '{name}' is reserved")
    if name in CONSTANTS or (name in OPS and OPS[name].origin != "user"):
        raise GateError(f"'{name}' is already a built-in op or constant")
    if name in vars(functions) and not (name in OPS and OPS[name].origin == "user"):
        # compiler.ops.<name> would replace one of that module's own (sum, OPS, install)
        raise GateError(f"'{name}' is already a function or name of compiler.ops")

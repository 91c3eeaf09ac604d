"""A1 — accuracy (issue 15): every op's forward and local gradients, in ulps against mpmath,
float64 and float32, beside JAX's and PyTorch's on the same points
(``benchmarks/accuracy_core.py`` says how points, references and ulps are made).

``python -m benchmarks --only accuracy`` writes the table into README.md (between the
``accuracy-table`` markers) and the figures into ``benchmarks/accuracy.json``, which
``tests/test_accuracy.py`` holds symgrad to.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import numpy as np

from benchmarks import accuracy_core as core
from benchmarks.harness import Target, md_table
from benchmarks.workloads import Options, Section, Workload

ROOT = Path(__file__).resolve().parents[2]
JSON = ROOT / "benchmarks" / "accuracy.json"
README = ROOT / "README.md"
COMMAND = "python -m benchmarks --only accuracy"
BEGIN, END = "<!-- accuracy-table -->", "<!-- end accuracy-table -->"
GOAL = 2.0  # ulps


# ------------------------------------------------------------------ the peers' formulas
def _jax_table():
    import jax
    import jax.numpy as jnp
    import jax.scipy.special as jss

    jax.config.update("jax_enable_x64", True)

    def f(c):
        return lambda *args: c(*args).astype(args[0].dtype)

    return jax, {
        "abs": jnp.abs, "acos": jnp.arccos, "acosh": jnp.arccosh, "add": jnp.add,
        "asin": jnp.arcsin, "asinh": jnp.arcsinh, "atan": jnp.arctan, "atan2": jnp.arctan2,
        "atanh": jnp.arctanh, "cbrt": jnp.cbrt, "ceil": jnp.ceil, "clip": jnp.clip,
        "cos": jnp.cos, "cosh": jnp.cosh, "digamma": jss.digamma, "div": jnp.divide,
        "eq": f(jnp.equal), "erf": jss.erf, "erfc": jss.erfc, "exp": jnp.exp, "exp2": jnp.exp2,
        "expm1": jnp.expm1, "floor": jnp.floor, "ge": f(jnp.greater_equal), "gt": f(jnp.greater),
        "heaviside": jnp.heaviside, "hypot": jnp.hypot, "le": f(jnp.less_equal),
        "lgamma": jss.gammaln, "log": jnp.log, "log10": jnp.log10, "log1p": jnp.log1p,
        "log2": jnp.log2, "logaddexp": jnp.logaddexp, "logical_and": f(jnp.logical_and),
        "logical_not": f(jnp.logical_not), "logical_or": f(jnp.logical_or),
        "logsigmoid": jax.nn.log_sigmoid, "lt": f(jnp.less), "maximum": jnp.maximum,
        "minimum": jnp.minimum, "mul": jnp.multiply, "ne": f(jnp.not_equal), "neg": jnp.negative,
        "polygamma": jss.polygamma, "pow": jnp.power, "reciprocal": jnp.reciprocal,
        "relu": jax.nn.relu, "round": jnp.round, "sigmoid": jax.nn.sigmoid, "sign": jnp.sign,
        "sin": jnp.sin, "sinh": jnp.sinh, "softplus": jax.nn.softplus, "sqrt": jnp.sqrt,
        "square": jnp.square, "sub": jnp.subtract, "tan": jnp.tan, "tanh": jnp.tanh,
        "trunc": jnp.trunc, "where": lambda c, a, b: jnp.where(c != 0, a, b),
        "xlog1py": jss.xlog1py, "xlogy": jss.xlogy,
    }  # fmt: skip


def _torch_table():
    import torch
    import torch.nn.functional as F

    def f(c):
        return lambda *args: c(*args).to(args[0].dtype)

    return torch, {
        "abs": torch.abs, "acos": torch.acos, "acosh": torch.acosh, "add": torch.add,
        "asin": torch.asin, "asinh": torch.asinh, "atan": torch.atan, "atan2": torch.atan2,
        "atanh": torch.atanh, "ceil": torch.ceil, "clip": torch.clamp, "cos": torch.cos,
        "cosh": torch.cosh, "digamma": torch.special.digamma, "div": torch.div,
        "eq": f(torch.eq), "erf": torch.erf, "erfc": torch.erfc, "exp": torch.exp,
        "exp2": torch.exp2, "expm1": torch.expm1, "floor": torch.floor, "ge": f(torch.ge),
        "gt": f(torch.gt), "heaviside": torch.heaviside, "hypot": torch.hypot, "le": f(torch.le),
        "lgamma": torch.lgamma, "log": torch.log, "log10": torch.log10, "log1p": torch.log1p,
        "log2": torch.log2, "logaddexp": torch.logaddexp,
        "logical_and": f(torch.logical_and), "logical_not": f(torch.logical_not),
        "logical_or": f(torch.logical_or), "logsigmoid": F.logsigmoid, "lt": f(torch.lt),
        "maximum": torch.maximum, "minimum": torch.minimum, "mul": torch.mul,
        "ne": f(torch.ne), "neg": torch.neg, "pow": torch.pow,
        "reciprocal": torch.reciprocal, "relu": torch.relu, "round": torch.round,
        "sigmoid": torch.sigmoid, "sign": torch.sign, "sin": torch.sin, "sinh": torch.sinh,
        "softplus": F.softplus, "sqrt": torch.sqrt, "square": torch.square, "sub": torch.sub,
        "tan": torch.tan, "tanh": torch.tanh, "trunc": torch.trunc,
        "where": lambda c, a, b: torch.where(c != 0, a, b),
        "xlog1py": torch.special.xlog1py, "xlogy": torch.special.xlogy,
    }  # fmt: skip


def jax_outputs(table):
    jax, fns = table

    def outputs(op, args, dtype):
        fn = fns.get(op)
        if fn is None:
            return None
        import jax.numpy as jnp

        xs = [jnp.asarray(a, dtype=dtype) for a in args]
        out = []
        try:
            out.append(np.asarray(jax.vmap(fn)(*xs), dtype=np.float64))
        except Exception:  # noqa: BLE001 - a peer lacking a case is "—"
            out.append(None)
        for k in range(len(args)):
            try:
                g = jax.vmap(jax.grad(fn, argnums=k))(*xs)
                out.append(np.asarray(g, dtype=np.float64))
            except Exception:  # noqa: BLE001
                out.append(None)
        return out

    return outputs


def torch_outputs(table):
    torch, fns = table

    def outputs(op, args, dtype):
        fn = fns.get(op)
        if fn is None:
            return None
        tdt = getattr(torch, dtype)
        out = []
        try:
            xs = [torch.tensor(a, dtype=tdt, requires_grad=True) for a in args]
            y = fn(*xs)
            out.append(y.detach().numpy().astype(np.float64))
        except Exception:  # noqa: BLE001
            return None
        for x in xs:
            try:
                (g,) = torch.autograd.grad(y.sum(), x, retain_graph=True, allow_unused=True)
                out.append(np.zeros(len(args[0])) if g is None else g.numpy().astype(np.float64))
            except Exception:  # noqa: BLE001
                out.append(None)
        return out

    return outputs


# ------------------------------------------------------------------ the run
def ops() -> list[str]:
    from compiler.ir.registry import OPS

    return sorted(name for name, spec in OPS.items() if spec.origin == "builtin")


def measure_all(log, tiers=core.TIERS, size: str = "full", only=None) -> dict:
    peers = {}
    for name, make in (("jax", lambda: jax_outputs(_jax_table())),
                       ("torch", lambda: torch_outputs(_torch_table()))):  # fmt: skip
        try:
            peers[name] = make()
        except ImportError:
            log(f"accuracy: {name} not installed")
    result: dict = {"command": COMMAND, "tiers": list(tiers), "ops": {}}
    for name in peers:
        result[name] = {}
    for op in only or ops():
        t0 = time.perf_counter()
        result["ops"][op] = core.symgrad_measure(op, size, tiers)
        for name, outputs in peers.items():
            result[name][op] = core.measure(op, outputs, size)
        log(f"accuracy: {op} in {time.perf_counter() - t0:.1f} s")
    return result


def _fmt(x: float | None) -> str:
    if x is None:
        return "—"
    if math.isinf(x):
        return "inf"
    if x >= 1e6:
        return f"{x:.1e}"
    return f"{x:.1f}" if x < 100 else f"{x:.0f}"


def _cell(res, dtype, key):
    cell = res.get(dtype, {}).get(key) if res else None
    return None if cell is None else cell["ulp"]


def rows(result) -> tuple[list[list[str]], list[str], list[str]]:
    """Table rows; ops over the goal; (op, value) worse than a peer."""
    from compiler.ir.registry import OPS

    table, over, worse = [], [], []
    for op, res in result["ops"].items():
        arity = OPS[op].arity
        for key in ["f"] + [f"d{k}" for k in range(arity)]:
            label = "value" if key == "f" else (f"d/d{'abc'[int(key[1])]}" if arity > 1 else "d/da")
            line = [f"`{op}`", label]
            specials = []
            for dtype in core.DTYPES:
                ours = _cell(res, dtype, key)
                theirs = [_cell(result.get(p, {}).get(op), dtype, key) for p in ("jax", "torch")]
                line += [_fmt(ours), *(_fmt(t) for t in theirs)]
                cell = res.get(dtype, {}).get(key)
                if cell:
                    specials.append(f"{cell['special'][0]}/{cell['special'][1]}")
                if ours is not None and ours > GOAL:
                    over.append(f"{op} {label} {dtype}")
                if ours is not None and any(t is not None and ours > max(t, GOAL) for t in theirs):
                    worse.append(f"{op} {label} {dtype}")
            line.append(", ".join(specials))
            table.append(line)
    return table, sorted(set(over)), sorted(set(worse))


HEADERS = ["op", "of", "float64", "JAX", "PyTorch", "float32", "JAX", "PyTorch",
           "special values ok (64, 32)"]  # fmt: skip


def markdown(result, elapsed: float) -> str:
    table, over, worse = rows(result)
    lines = [
        BEGIN,
        f"Produced by `{COMMAND}` ({elapsed:.0f} s; `benchmarks/accuracy.json` holds the "
        f"figures, `tests/test_accuracy.py` holds symgrad to them). Worst error in ulps of the "
        f"result's dtype against mpmath (50+ digits) over a dense sample of each op's domain "
        f"(every binade from the subnormals up, both signs, a grid near 0, the domain's ends): "
        f"symgrad's worst over the tiers {', '.join(result['tiers'])}, beside JAX's and "
        f"PyTorch's formulas on the same points (`jax.vmap(jax.grad)`, `torch.autograd`; — "
        f"where they lack the op or the gradient). Exact values below the smallest normal "
        f"number are scored apart (`benchmarks/accuracy.json`: `underflow`); special values "
        f"(±0, ±inf, nan operands, results beyond the dtype's range) count matches of the "
        f"right value, or NumPy's where mathematics has none. Goal: ≤ {GOAL:g} ulp.",
        "",
        f"Over {GOAL:g} ulp: {', '.join(over) or 'none'}.",
        "",
        f"Worse than JAX or PyTorch (and over {GOAL:g}): {', '.join(worse) or 'none'}.",
        "",
        md_table(HEADERS, table),
        END,
    ]
    return "\n".join(lines)


def write_readme(text: str) -> None:
    readme = README.read_text(encoding="utf-8")
    block = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if block.search(readme):
        readme = block.sub(lambda m: text, readme)
    else:
        readme = readme.rstrip("\n") + "\n\n" + text + "\n"
    README.write_text(readme, encoding="utf-8")


def run(opts: Options, log) -> Section:
    t0 = time.perf_counter()
    result = measure_all(log, size="small" if opts.quick else "full")
    elapsed = time.perf_counter() - t0
    text = markdown(result, elapsed)
    if not opts.quick:
        JSON.write_text(json.dumps(_json(result), indent=1, sort_keys=True) + "\n")
        write_readme(text)
    table, over, worse = rows(result)
    n = sum(1 for _ in table)
    targets = [
        Target(f"values and gradients within {GOAL:g} ulp (of {n} per dtype)",
               1 - len(over) / (2 * n), 1.0, at_most=False, unit="",
               why=f"over: {', '.join(over)}"),
        Target("never worse than JAX or PyTorch (past the goal)", 1 - len(worse) / (2 * n), 1.0,
               at_most=False, unit="", why=f"worse: {', '.join(worse)}"),
    ]  # fmt: skip
    return Section("A1", "A1 — accuracy of every op and local gradient", text, targets)


def _json(result):
    """Rounded up to 0.01 ulp (a bound stays a bound)."""

    def up(x):
        return x if not math.isfinite(x) else math.ceil(x * 100) / 100

    def clean(res):
        return {
            d: {k: {**c, "ulp": up(c["ulp"]), "underflow": up(c["underflow"])}
                for k, c in row.items()}
            for d, row in res.items()
        }  # fmt: skip

    out = {"command": result["command"], "tiers": result["tiers"]}
    for part in ("ops", "jax", "torch"):
        if part in result:
            out[part] = {op: clean(res) for op, res in result[part].items()}
    return out


WORKLOAD = Workload("A1", "accuracy", "Accuracy of every op's value and local gradients", run)

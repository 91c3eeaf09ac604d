"""The ``symgrad`` command: compile an expression, evaluate value and gradients at a point, and
print the forward and backward graphs (and, on request, the generated source).

With no expression it runs the lecture's neuron at the lecture's point.
"""

from __future__ import annotations

import argparse
import sys

NEURON = "1/(1+exp(-(w0*x0+w1*x1+w2)))"
NEURON_AT = "w0=2,x0=-1,w1=-3,x1=-2,w2=-3"

EPILOG = f"""\
examples:
  symgrad                                   the lecture's neuron: {NEURON} at {NEURON_AT}
  symgrad "(x + y) * z" --at x=-2,y=5,z=-4
  symgrad "maximum(x, y) * z" --at x=2,y=-1,z=3 --wrt x,y --source

The language: numbers, names, + - * / **, parentheses, and the functions
exp log log1p expm1 sqrt sin cos tan tanh abs sign sigmoid relu maximum minimum pow.
Kernels are cached in $SYMGRAD_CACHE_DIR (default: the platform's cache directory).
"""


def parse_point(text: str) -> dict[str, float]:
    """``"x=-2,y=5"`` → ``{"x": -2.0, "y": 5.0}``."""
    point = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--at expects name=value pairs separated by commas, got {item!r}")
        try:
            point[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--at: {name.strip()}={value!r} is not a number") from None
    return point


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="symgrad",
        description="Compile a function into Numba value-and-gradient kernels and evaluate them.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "expression",
        nargs="?",
        help="the function, e.g. '(x + y) * z' (default: the lecture's neuron)",
    )
    p.add_argument("--at", help="the point, e.g. x=-2,y=5,z=-4 (required with an expression)")
    p.add_argument("--wrt", help="inputs to differentiate, comma-separated (default: all)")
    p.add_argument("--no-fuse", action="store_true", help="keep every primitive node")
    p.add_argument("--source", action="store_true", help="also print the generated Numba source")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import compiler

    expression = args.expression or NEURON
    at = args.at if args.at is not None else (NEURON_AT if args.expression is None else None)
    try:
        kernel = compiler.compile_gradient(
            expression,
            wrt=[w.strip() for w in args.wrt.split(",")] if args.wrt else None,
            fuse=not args.no_fuse,
        )
        if at is None:
            raise compiler.InputError(
                f"--at is required: give values for {', '.join(kernel.inputs)}"
            )
        value, grads = kernel.value_and_grad(**parse_point(at))
    except (compiler.SymgradError, ValueError) as e:
        print(f"symgrad: error: {e}", file=sys.stderr)
        return 2
    print(f"f({at}) = {value:.12g}")
    for name, g in grads.items():
        print(f"  df/d{name} = {g:.12g}")
    print("\nforward graph:")
    print(_indent(str(kernel.graph)))
    print("\nbackward graph:")
    print(_indent(str(kernel.adjoint)))
    if args.source:
        print("\ngenerated source:")
        print(kernel.source)
    return 0


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


if __name__ == "__main__":
    sys.exit(main())

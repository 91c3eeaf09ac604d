"""The ``symgrad`` command: compile an expression, evaluate value and gradients at a point, and
print the forward and backward graphs (and, on request, the generated source).

With no expression it runs the lecture's neuron at the lecture's point.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

NEURON = "1/(1+exp(-(w0*x0+w1*x1+w2)))"
NEURON_AT = "w0=2,x0=-1,w1=-3,x1=-2,w2=-3"

EPILOG = f"""\
output:
  the value f(point), each gradient df/d<input> (for the inputs in --wrt), the forward graph
  (one line per node: t3 = t1 * z) and the backward graph (each gate's upstream gradient times
  its local gradient, summed where a value fans out), and with --source the generated Numba code.

examples:
  symgrad                                   the lecture's neuron: {NEURON} at {NEURON_AT}
  symgrad "(x + y) * z" --at x=-2,y=5,z=-4
  symgrad "maximum(x, y) * z" --at x=2,y=-1,z=3 --wrt x,y --source
  symgrad "-x * y" --at x=1,y=2             an expression may start with a minus sign
  symgrad --draw neuron.svg                 also draw the graph, values and gradients on its edges
  symgrad --explore neuron.html             also write a page that steps through backprop gate
                                            by gate, fused beside unfused (open it in a browser)

the language:
  numbers, names, + - * / **, unary minus, parentheses, the constants pi and e, and the functions
  {{functions}}.
  Values follow NumPy in float64 (1/0 = inf, log(-1) = nan). At kinks: relu'(0) = 0, abs'(0) = 0,
  maximum/minimum at a tie give each operand half, sqrt'(0) = inf.

exit status:
  0 on success; 2 for a bad expression, point or picture (a one-line message on stderr);
  130 when interrupted; 141 when the reader of the output goes away (symgrad ... | head -1).

drawing runs Graphviz's dot for at most $SYMGRAD_DRAW_TIMEOUT seconds (default 30).

Kernels are cached in $SYMGRAD_CACHE_DIR (default: $XDG_CACHE_HOME/symgrad or ~/.cache/symgrad).
"""


def parse_point(text: str) -> dict[str, float]:
    """``"x=-2,y=5"`` → ``{"x": -2.0, "y": 5.0}``."""
    point = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--at expects name=value pairs separated by commas, got {item!r}")
        if name.strip() in point:
            raise ValueError(f"--at gives {name.strip()} twice")
        try:
            point[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--at: {name.strip()}={value!r} is not a number") from None
    return point


def build_parser() -> argparse.ArgumentParser:
    from compiler.ir.registry import FUNCTIONS

    p = argparse.ArgumentParser(
        prog="symgrad",
        usage="%(prog)s [-h] [expression] [--at AT] [--wrt WRT] [--no-fuse] [--source] [--draw PATH] [--explore PATH]",
        description="Compile a function into Numba value-and-gradient kernels and evaluate them.",
        epilog=EPILOG.format(functions=" ".join(FUNCTIONS)),
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
    p.add_argument(
        "--draw",
        metavar="PATH",
        help="also draw the graph with values and gradients at the point into PATH "
        "(.svg, .png or .pdf; needs Graphviz's dot)",
    )
    p.add_argument(
        "--explore",
        metavar="PATH",
        help="also write an HTML page (PATH, e.g. neuron.html) stepping through backprop at the "
        "point gate by gate, fused beside unfused (needs Graphviz's dot)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """The command; its exit status. A closed output pipe or Ctrl-C ends it quietly, without a
    traceback, as a well-behaved filter does. A command computes one point: it leaves no
    background compile to finish at exit (``runtime.background.abandon``)."""
    from runtime import background

    try:
        status = _run(sys.argv[1:] if argv is None else list(argv))
        sys.stdout.flush()
        return status
    except BrokenPipeError:  # `symgrad | head -1`: the reader has gone
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit does not fail again
        return 128 + int(signal.SIGPIPE)
    except KeyboardInterrupt:
        print("symgrad: interrupted", file=sys.stderr)
        return 130
    finally:
        background.abandon()


def _run(argv: list[str]) -> int:
    args = build_parser().parse_args(_shield_expression(argv))
    import compiler

    expression = NEURON if args.expression is None else args.expression
    if expression.startswith(_SHIELD):
        expression = expression[len(_SHIELD) :]
    at = args.at if args.at is not None else (NEURON_AT if args.expression is None else None)
    try:
        kernel = compiler.compile_gradient(
            expression,
            wrt=[w.strip() for w in args.wrt.split(",") if w.strip()] if args.wrt else None,
            fuse=not args.no_fuse,
        )
        if at is None:
            raise compiler.InputError(
                f"--at is required: give values for {', '.join(kernel.inputs)}"
            )
        value, grads = kernel.value_and_grad(**parse_point(at))
        if args.draw:
            compiler.draw(kernel, at=parse_point(at)).save(args.draw)
        if args.explore:
            compiler.explore(kernel, at=parse_point(at)).save(args.explore)
    except (compiler.SymgradError, ValueError, OSError) as e:
        print(f"symgrad: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except (RecursionError, MemoryError):
        print("symgrad: error: the expression is too large or too deeply nested", file=sys.stderr)
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
    if args.draw:
        print(f"\npicture: {args.draw}")
    if args.explore:
        print(f"\nexplorer: {args.explore} (open it in a browser: next, or the → key, steps)")
    return 0


_SHIELD = "\x00"  # marks an expression argparse would take for an option; never valid text


def _shield_expression(argv: list[str]) -> list[str]:
    """Let the expression start with a minus sign: ``symgrad "-x * y" --at x=1,y=2``.

    argparse reads any argument starting with "-" as an option; one with a single leading "-"
    that is not -h nor the value of --at/--wrt is the expression, so it is marked to pass as
    positional. (An expression starting with "--" still needs "--" before it.)
    """
    out, expects_value = [], False
    for k, arg in enumerate(argv):
        if arg == "--":
            return out + argv[k:]
        single_dash = arg.startswith("-") and not arg.startswith("--") and len(arg) > 1
        if single_dash and not expects_value and arg != "-h":
            arg = _SHIELD + arg
        expects_value = arg in ("--at", "--wrt", "--draw", "--explore")
        out.append(arg)
    return out


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


if __name__ == "__main__":
    sys.exit(main())

"""The text frontend under fuzzing and at its worst: every text either parses or raises
``compiler.ParseError`` with a column, in bounded time and memory.

Hypothesis draws random strings over the language's alphabet plus hostile characters (NUL, lone
surrogates, look-alike letters, bidi controls), random token soups and deep nestings; each case runs
under a wall-clock alarm, in a child process whose address space is capped, so a hang or a runaway
allocation fails the case instead of the machine. The worst inputs known (megabytes of tokens, which took 130 s and
2.4 GB before) run in a child process with a timeout and ``RLIMIT_AS`` of its baseline plus ten
times the input plus a fixed allowance for the largest text the parser accepts.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import compiler

ROOT = Path(__file__).resolve().parents[2]
# The AST of a text at the token cap (~500 B a token; the densest, tuple_at_the_cap, needs between
# 48 and 64 MB) and its graph: a fixed allowance, since the cap bounds it whatever the length.
ALLOWANCE = 96 << 20


@contextmanager
def within(seconds: float):
    """Fail the body with TimeoutError past ``seconds`` of wall time."""

    def expired(signum, frame):
        raise TimeoutError(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def parses_or_refuses(text: str, shapes: dict | None = None) -> None:
    """The contract: a graph, or a ParseError (ShapeError or InputError for shapes) naming a
    column of the text and a token from it, on one line."""
    try:
        with within(5.0):
            compiler.trace(text, shapes=shapes)
    except compiler.ParseError as e:
        assert isinstance(e.column, int) and e.column >= 0, (text, str(e))
        longest = max(len(line) for line in text.replace("\r", "\n").split("\n"))
        assert e.column <= max(longest, 0), (text, str(e))
        assert e.token is None or isinstance(e.token, str)
        assert "\n" not in str(e) and "\r" not in str(e), (text, str(e))
    except (compiler.ShapeError, compiler.InputError):
        assert shapes is not None, text


# ------------------------------------------------------------------ strategies
LANGUAGE = "xyzeWpi0123456789.+-*/() ,_"
OTHER_ASCII = "^%@<>=!~&|[]{}:;'\"\\#\t\n\r`$?"
HOSTILE = [
    "\0",
    "\ud800",
    "\udfff",
    "\U0001d431",  # MATHEMATICAL BOLD SMALL X: 'x' after NFKC
    "\uff58",  # FULLWIDTH x
    "\ufb01",  # the ligature fi
    "\u2081",  # SUBSCRIPT ONE
    "\u200b",  # ZERO WIDTH SPACE
    "\u202e",  # RIGHT-TO-LEFT OVERRIDE
    "\u00a0",  # NO-BREAK SPACE
    "\u212f",  # SCRIPT SMALL E: 'e' after NFKC
    "\u03c0",  # pi
    "\ufeff",
    "\x0c",
    "\x85",
    "\u2028",
]
TOKENS = [
    "x", "y", "W", "e", "pi", "1", "2.5", "1e308", "1e999", "0", "10**400", "+", "-", "*", "/",
    "**", "//", "%", "@", "^", "(", ")", ",", ".T", "exp", "log", "maximum", "sum", "max", "min",
    "sigmoid", "axis=0", "keepdims=True", "lambda", "if", "else", "not", "[", "]", "'", "#", "\n",
    "__import__", "os", ".", "=", ":=", "*x", "None", "True",
]  # fmt: skip

characters = st.text(
    alphabet=st.sampled_from(list(LANGUAGE) * 3 + list(OTHER_ASCII) + HOSTILE), max_size=120
)
soups = st.lists(st.sampled_from(TOKENS), max_size=40).flatmap(
    lambda tokens: st.sampled_from(["", " "]).map(lambda sep: sep.join(tokens))
)
WRAPPERS = [("(", ")"), ("exp(", ")"), ("-", ""), ("x+", ""), ("maximum(x, ", ")"), ("x**", "")]
nestings = st.tuples(
    st.lists(st.sampled_from(WRAPPERS), min_size=1, max_size=4),
    st.integers(1, 3000),
    st.sampled_from(["x", "y * 2", ")", "", "x,", "\ud800"]),
).map(lambda t: "".join(o * t[1] for o, _ in t[0]) + t[2] + "".join(c * t[1] for _, c in t[0]))

FUZZ = settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


@FUZZ
@given(characters)
def fuzz_random_characters(text):
    parses_or_refuses(text)


@FUZZ
@given(soups)
def fuzz_token_soups(text):
    parses_or_refuses(text)


@settings(FUZZ, max_examples=60)
@given(nestings)
def fuzz_deep_nestings(text):
    parses_or_refuses(text)


@settings(FUZZ, max_examples=100)
@given(soups)
def fuzz_token_soups_with_shapes(text):
    parses_or_refuses(text, shapes={"W": ("n", "m"), "x": ("m",)})


# Each fuzz runs in a child whose address space is capped (baseline + 256 MB): a runaway case
# fails there with MemoryError, and nothing else in the test process (a background compile
# thread, say) meets the limit.
FUZZ_CHILD = textwrap.dedent(
    """
    import resource, sys
    sys.path.insert(0, sys.argv[1])
    import test_fuzz_text as fuzz
    with open("/proc/self/status") as status:
        vm = int(next(e for e in status if e.startswith("VmSize:")).split()[1]) * 1024
    limit = vm + (256 << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    getattr(fuzz, "fuzz_" + sys.argv[2])()
    """
)


@pytest.mark.parametrize(
    "fuzz", ["random_characters", "token_soups", "deep_nestings", "token_soups_with_shapes"]
)
def test_fuzz(fuzz):
    run = subprocess.run(
        [sys.executable, "-c", FUZZ_CHILD, str(Path(__file__).parent), fuzz],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-4000:]


# ------------------------------------------------------------------ the worst, in a child
CHILD = textwrap.dedent(
    """
    import json, resource, sys
    import compiler
    compiler.trace("x")  # every lazy import done: what follows is the parse alone
    text = eval(sys.argv[1])  # the test's own builders below, not user text
    with open("/proc/self/status") as status:
        vm = int(next(e for e in status if e.startswith("VmSize:")).split()[1]) * 1024
    limit = vm + 10 * len(text) + int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    try:
        compiler.trace(text)
        out = {"kind": "ok"}
    except compiler.ParseError as e:
        out = {"kind": "ParseError", "column": e.column, "token": e.token, "msg": str(e)[:300]}
    except MemoryError:
        out = {"kind": "MemoryError"}
    print(json.dumps(out))
    """
)

WORST = {
    "tuple_2MB": ("'(' + 'x,' * 10**6 + ')'", "ParseError", 100_000),
    "tuple_10MB": ("'(' + 'x,' * (5 * 10**6 - 1) + ')'", "ParseError", 100_000),
    "sum_10MB": ("'x+' * (5 * 10**6 - 1) + 'x'", "ParseError", 100_000),
    "calls_10MB": ("'exp(x)*' * (10**7 // 7)", "ParseError", 7 * 20_000),
    "lines_10MB": ("'(' + 'x\\n+' * (3 * 10**6) + 'x)'", "ParseError", 0),
    "too_long": ("'x' * (10**7 + 1)", "ParseError", 10**7),
    "name_10MB": ("'x' * 10**7", "ok", None),
    "spaces_10MB": ("' ' * (10**7 - 1) + 'x'", "ok", None),
    "tuple_at_the_cap": ("'(' + 'x,' * 49_999 + ')'", "ParseError", 0),
    "balanced_at_the_cap": (
        "(lambda s: [s := '(' + s + '+' + s + ')' for _ in range(14)][-1])('x')",
        "ok",
        None,
    ),
    "chain_at_the_cap": ("'x+' * 49_000 + 'x'", "ParseError", None),
    "parens_at_the_cap": ("'(' * 99_000", "ParseError", 200),
    "unary_in_parens_at_the_cap": ("'(' * 150 + '-' * 90_000 + 'x' + ')' * 150", "ParseError", None),
    "lookalikes_at_the_cap": ("'\\U0001d431+' * 49_000 + 'x'", "ParseError", 98_000),
    "greek_names_at_the_cap": ("'+'.join('\\u03b1%d' % i for i in range(30_000))", "ParseError", None),
    "surrogate_after_4MB": ("'x+' * (2 * 10**6) + '\\ud800'", "ParseError", 4 * 10**6),
    "null_after_2MB": ("'x ' * 10**6 + '\\0'", "ParseError", 2 * 10**6),
}  # fmt: skip


@pytest.mark.parametrize("name", list(WORST))
def test_worst_texts_are_answered_in_bounded_time_and_memory(name):
    builder, kind, column = WORST[name]
    run = subprocess.run(
        [sys.executable, "-c", CHILD, builder, str(ALLOWANCE)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert run.returncode == 0, f"the child died (rc {run.returncode}): {run.stderr[-2000:]}"
    result = json.loads(run.stdout)
    assert result["kind"] == kind, result
    if kind == "ParseError":
        assert isinstance(result["column"], int), result
        if column is not None:
            assert result["column"] == column, result

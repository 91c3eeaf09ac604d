"""``python -m benchmarks [--quick] [--only NAME] [--out benchmarks/RESULTS.md]``

Runs the workloads (all, or those named by ``--only``: id ``F1`` or name ``neuron``), prints the
markdown report and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from pathlib import Path

from benchmarks import machine
from benchmarks.harness import md_table
from benchmarks.workloads import Options, select

DEFAULT_OUT = Path(__file__).resolve().parent / "RESULTS.md"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="symgrad against hand-written NumPy/Numba, SymPy and (if installed) peers.",
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes, few repeats (< 1 minute)")
    p.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only this workload (id like F1 or name like neuron); may repeat or use commas",
    )
    p.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"report file (default {DEFAULT_OUT})"
    )
    p.add_argument(
        "--repeats", type=int, help="quiet interleaved rounds wanted (default: per workload)"
    )
    p.add_argument(
        "--budget",
        type=float,
        help="seconds to go on waiting for quiet rounds on a busy machine (default: per workload)",
    )
    p.add_argument("--no-startup", action="store_true", help="skip cold/warm start-up processes")
    p.add_argument("--seed", type=int, default=0, help="seed for the random inputs")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    only = [x.strip() for item in args.only or [] for x in item.split(",") if x.strip()]
    workloads = select(only)
    opts = Options(
        quick=args.quick,
        repeats=args.repeats,
        budget=args.budget,
        startup=not args.no_startup,
        seed=args.seed,
    )

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    machine_md = machine.markdown()  # before the runs: load average at start
    meter = machine.CpuMeter()
    command = "python -m benchmarks " + shlex.join(sys.argv[1:] if argv is None else argv)
    t0 = time.perf_counter()
    sections = [w.run(opts, log) for w in workloads]
    elapsed = time.perf_counter() - t0
    contention = meter.summary()

    targets = [t for s in sections for t in s.targets]
    met = sum(t.met for t in targets)
    measured = sum(not math.isnan(t.value) for t in targets)
    lines = [
        "# symgrad benchmarks",
        "",
        f"Produced by `{command.strip()}` in {elapsed:.0f} s"
        + (" (quick mode: tiny sizes, few repeats — not for conclusions)." if args.quick else "."),
        "All contenders of a workload run in one process, interleaved; times are per call.",
        "",
        "## Machine",
        "",
        machine_md,
        "",
        f"CPU use during the run: {contention}.",
        "",
        "## Targets",
        "",
        f"{met} of {measured} measured targets met.",
        "",
        md_table(
            ["target", "limit", "measured (spread)", "verdict", "note"], [t.row() for t in targets]
        ),
    ]
    missed = [t for t in targets if not t.met and not math.isnan(t.value) and t.why]
    if missed:
        lines += ["", "### Why the missed targets are missed (measured in this run)", ""]
        lines += [f"- **{t.what}**: {t.why}" for t in missed]
    for s in sections:
        lines += ["", f"## {s.title}", "", s.markdown]
    report = "\n".join(lines) + "\n"

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report, encoding="utf-8")
    print(report)
    log(f"report written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

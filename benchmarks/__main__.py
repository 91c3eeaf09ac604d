"""``python -m benchmarks [--quick] [--only NAME] [--out benchmarks/RESULTS.md]``

Runs the workloads (all, or those named by ``--only``: id ``F1`` or name ``neuron``), prints the
markdown report and merges it into ``--out`` (default ``benchmarks/RESULTS.md``; a ``--quick`` run
writes nothing unless ``--out`` is given): each workload's section replaces its earlier version,
and the other sections stay, so workloads can be refreshed one at a time.
"""

from __future__ import annotations

import argparse
import math
import re
import shlex
import sys
import time
from pathlib import Path

from benchmarks import machine
from benchmarks.harness import md_table
from benchmarks.workloads import Options, all_workloads, select

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
        "--out",
        type=Path,
        help=f"report file (default {DEFAULT_OUT}; a --quick run writes none unless given)",
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

    blocks = {
        w.name: _block(w.name, sec, command, machine_md, contention, elapsed, args.quick)
        for w, sec in zip(workloads, sections)
    }
    report = HEADER + "".join(blocks.values())
    out = report_path(args)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(merged(out, blocks), encoding="utf-8")
    print(report)
    log(f"report written to {out}" if out else "quick run: report printed only (--out to keep it)")
    return 0


def report_path(args: argparse.Namespace) -> Path | None:
    """Where the report is merged: ``--out``, else the tracked RESULTS.md, except for a
    ``--quick`` run, whose tiny-size numbers must never replace the measured ones."""
    if args.out is not None:
        return args.out
    return None if args.quick else DEFAULT_OUT


HEADER = (
    "# symgrad benchmarks\n\n"
    "Each section was produced by the command it names, on the machine it describes; "
    "`python -m benchmarks --only NAME` refreshes one section and keeps the others. All "
    "contenders of a workload run in one process, interleaved; times are per call.\n"
)


def _block(name, section, command, machine_md, contention, elapsed, quick) -> str:
    """One workload's part of the report, between markers that ``merged`` finds again."""
    targets = section.targets
    met = sum(t.met for t in targets)
    measured = sum(not math.isnan(t.value) for t in targets)
    lines = [
        f"<!-- section {name} -->",
        f"## {section.title}",
        "",
        f"Produced by `{command.strip()}` in {elapsed:.0f} s"
        + (" (quick mode: tiny sizes, few repeats — not for conclusions)." if quick else ".")
        + f" CPU use during the run: {contention}.",
        "",
        "### Machine",
        "",
        machine_md,
        "",
        "### Targets",
        "",
        f"{met} of {measured} measured targets met.",
        "",
        md_table(
            ["target", "limit", "measured (spread)", "verdict", "note"], [t.row() for t in targets]
        ),
    ]
    missed = [t for t in targets if not t.met and not math.isnan(t.value) and t.why]
    if missed:
        lines += ["", "#### Why the missed targets are missed (measured in this run)", ""]
        lines += [f"- **{t.what}**: {t.why}" for t in missed]
    lines += ["", section.markdown, f"<!-- end {name} -->", ""]
    return "\n" + "\n".join(lines)


_LEGACY = "## Earlier results (before per-section reports)"
_BLOCK = re.compile(r"\n<!-- section (\S+) -->\n.*?<!-- end \1 -->\n", re.S)


def merged(path: Path, blocks: dict[str, str]) -> str:
    """The report file with ``blocks`` replacing their earlier versions; other sections stay,
    in workload order (sections from before the markers existed are kept, last)."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    found = {m.group(1): m.group(0) for m in _BLOCK.finditer(old)}
    rest = _BLOCK.sub("", old)
    legacy = rest.split("\n", 1)[1].strip() if rest.startswith("# symgrad benchmarks") else rest
    legacy = legacy.removeprefix(HEADER.split("\n", 1)[1].strip()).strip()
    legacy = legacy.removeprefix(_LEGACY).strip()
    found.update(blocks)
    order = [w.name for w in all_workloads()]
    names = sorted(found, key=lambda n: order.index(n) if n in order else len(order))
    text = HEADER + "".join(found[n] for n in names)
    if legacy:
        text += f"\n{_LEGACY}\n\n{legacy}\n"
    return text


if __name__ == "__main__":
    raise SystemExit(main())

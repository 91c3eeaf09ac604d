"""Two source trees of symgrad side by side: the steady state of the peers' problems, A/B.

``python -m benchmarks.trees BEFORE AFTER [--rounds 5]``: for each problem, a fresh child process
per tree and round (``PYTHONPATH`` the tree, a cache directory per tree), alternating which tree
goes first; each child compiles the problem's kernel (``mode="compiled"``, fused), warms it up,
times 60 calls and prints their median. Reported: the median over rounds per tree and the ratio
after / before. For a refactor's "no regression" check, where one process cannot hold both
versions; noise on a shared machine is what the alternation and the medians are for.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

PROBLEMS = (
    "neuron(1_000_000)",
    "network(True, 100, 4096, 100, 10)",
    "network(False, 64, 1000, 100, 10)",
    "chain(8, 100_000)",
    "chain(32, 100_000)",
)

_CHILD = """
import json, statistics, time
from benchmarks.workloads import peers as P
p = P.{problem}
run = P._symgrad(p, "compiled", True)(p.make_data(0))
for _ in range(10):
    run()
times = []
for _ in range(60):
    t0 = time.perf_counter()
    run()
    times.append(time.perf_counter() - t0)
print(json.dumps(statistics.median(times)))
"""


def child_median(tree: str, cache: str, problem: str) -> float:
    env = dict(os.environ, PYTHONPATH=tree, SYMGRAD_CACHE_DIR=cache)
    code = _CHILD.format(problem=problem)
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tree, capture_output=True,
                         text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    trees = {"before": args.before, "after": args.after}
    caches = {k: tempfile.mkdtemp(prefix=f"symgrad-{k}-") for k in trees}
    print("| problem | before (ms) | after (ms) | after ÷ before |\n| --- | --- | --- | --- |")
    for problem in PROBLEMS:
        times: dict[str, list[float]] = {k: [] for k in trees}
        for r in range(args.rounds):
            for k in list(trees)[:: 1 if r % 2 == 0 else -1]:
                times[k].append(child_median(trees[k], caches[k], problem))
        b, a = (statistics.median(times[k]) for k in trees)
        print(f"| {problem} | {b * 1e3:.3f} | {a * 1e3:.3f} | {a / b:.2f} |", flush=True)


if __name__ == "__main__":
    main()

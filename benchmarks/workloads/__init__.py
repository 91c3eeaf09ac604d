"""The workloads. Each module defines ``WORKLOAD``: an id (``F1``), a name (``neuron``), a title,
and ``run(options, log) -> Section``.

Adding a workload (issue 7's F2–F4) is one module here plus one line in ``ALL``: build the inputs,
list the contenders (``harness.Contender``; peers with ``requires=("jax",)`` and so on are skipped
when not installed), call ``harness.run_contenders`` and render with ``harness.timing_table`` /
``harness.agreement_table``, and return the targets it checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from benchmarks.harness import Target


@dataclass
class Options:
    quick: bool = False
    repeats: int | None = None  # quiet rounds wanted; overrides the workload's own choice
    budget: float | None = None  # seconds to wait for quiet rounds; overrides the workload's
    startup: bool = True  # run the cold/warm start-up subprocesses
    seed: int = 0


@dataclass
class Section:
    """A workload's part of the report."""

    id: str
    title: str
    markdown: str
    targets: list[Target] = field(default_factory=list)
    #: worst relative disagreement with the reference over all contenders that ran
    worst_rel: float = 0.0


@dataclass
class Workload:
    id: str
    name: str
    title: str
    run: Callable[[Options, Callable[[str], None]], Section]


def all_workloads() -> list[Workload]:
    from benchmarks.workloads import (
        accuracy,
        cluster,
        first_hour,
        fit,
        fusion,
        hessian,
        network,
        neuron,
        peers,
        scale,
    )

    return [
        neuron.WORKLOAD,
        fusion.WORKLOAD,
        scale.WORKLOAD,
        network.WORKLOAD,
        peers.WORKLOAD,
        first_hour.WORKLOAD,
        hessian.WORKLOAD,
        fit.WORKLOAD,
        cluster.WORKLOAD,
        accuracy.WORKLOAD,
    ]


def select(only: list[str] | None) -> list[Workload]:
    """Workloads matching ``only`` by id or name (case-insensitive); all when ``only`` is empty."""
    workloads = all_workloads()
    if not only:
        return workloads
    wanted = {w.lower() for w in only}
    chosen = [w for w in workloads if w.id.lower() in wanted or w.name.lower() in wanted]
    known = {w.id.lower() for w in workloads} | {w.name.lower() for w in workloads}
    unknown = sorted(wanted - known)
    if unknown:
        names = ", ".join(f"{w.id} ({w.name})" for w in workloads)
        raise SystemExit(f"unknown workload(s) {unknown}; known: {names}")
    return chosen

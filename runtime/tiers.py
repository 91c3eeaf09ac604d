"""The one auto/background state machine, shared by ``Kernel`` and ``TensorKernel``.

``runtime.policy`` says which engine answers a call and what compiles behind it; ``Tiers`` keeps
the state that choice reads and changes, per call pattern (a ``key``: the inputs' kinds and the
entry for a ``Kernel``, one key for a tensor program): the final engine once it is known (on disk
at the first look, waited for, or compiled behind), the background job, the engine that answered
the latest call (``k.tier``), and the failures already reported. A kernel supplies its engines
(``Engines``); the background thread and its at-exit behaviour are ``runtime.background``'s.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from collections.abc import Hashable
from typing import Any, Protocol

from runtime import background, policy

MODES = ("auto", "instant", "compiled")


class Engines(Protocol):
    """What a kernel tells the state machine about its engines, per call pattern ``key``."""

    def engine(self, name: str, key: Hashable) -> Any:
        """The module of engine ``name`` (``policy.ENGINES``), compiled or loaded now."""

    def on_disk(self, key: Hashable) -> Any | None:
        """The final engine's module if it is loaded or on disk (no compile), else None."""

    def ready(self, key: Hashable) -> frozenset[str]:
        """Engines other than the final one that answer without compiling."""

    def job(self, key: Hashable) -> background.Job:
        """The final engine's compile, for the background thread."""

    def label(self, name: str, module: Any, key: Hashable) -> str:
        """The engine that answers with ``module`` (``name``, unless the module knows better)."""


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")


class Tiers:
    """One kernel's tier state: which module answers each call, and the compiles behind it."""

    def __init__(
        self,
        engines: Engines,
        stats: policy.Stats,
        mode: str,
        title: str = "",
        behind_first: bool = True,
    ):
        """``behind_first``: queue the compile behind a call before running it (an elementwise
        kernel: the background thread starts at once, while the stand-in answers), else when the
        kernel says the call has its answer (``answered``; a tensor program: writing its module,
        on the user's thread, would delay a NumPy answer)."""
        check_mode(mode)
        self.engines, self.stats, self.mode, self.title = engines, stats, mode, title
        self.behind_first = behind_first
        self.goal = policy.final(stats)
        self.tier: str | None = None  # the engine that answered the latest call
        self.jobs: dict[Hashable, background.Job] = {}  # key -> the final engine's compile
        self.lock = threading.RLock()  # the kernel's modules are built under it too
        self._final: dict[Hashable, Any] = {}  # key -> the final engine's module, or None
        self._reported: set[int] = set()  # failed jobs already warned about
        self._owed: set[Hashable] = set()  # keys whose compile starts once the call answers

    def answer(self, key: Hashable, points: int) -> Any:
        """The module that answers a call of ``points`` elements now. The final engine's
        compile, if the policy wants it, is queued now (``behind_first``) or owed until the
        kernel calls ``answered``."""
        choice, module = self.pick(key, points)
        if choice.behind is not None and not self.behind_first:
            self._owed.add(key)
        return module

    def answered(self, key: Hashable) -> None:
        """The call has its answer: queue the compile it owes, if any."""
        if key in self._owed:
            self._owed.discard(key)
            self._submit(key)

    def pick(self, key: Hashable, points: int) -> tuple[policy.Choice, Any]:
        """The policy's choice for this call and the module that answers it; sets ``tier``."""
        if self.mode == "auto":
            choice, module = self._auto(key, points)
        else:
            choice = policy.choose(self.stats, points, self.mode, frozenset(), "idle")
            module = self.engines.engine(choice.now, key)
        self.tier = self.engines.label(choice.now, module, key)
        return choice, module

    def final(self, key: Hashable) -> Any | None:
        """The final engine's module for ``key`` if it answers without compiling: on disk at the
        first look (the disk is looked at once per key), or compiled behind since."""
        with self.lock:
            if key not in self._final:
                self._final[key] = self.engines.on_disk(key)
            job = self.jobs.get(key)
            if self._final[key] is None and job is not None and job.state == "ready":
                self._final[key] = job.module
            return self._final[key]

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the background compiles started so far; True if they all succeeded."""
        with self.lock:
            jobs = list(self.jobs.values())
        return all(job.done.wait(timeout) for job in jobs) and all(
            job.state == "ready" for job in jobs
        )

    def forget(self, module: Any) -> None:
        """A damaged module is no final engine: it is built again on the next call."""
        with self.lock:
            self._final = {k: m for k, m in self._final.items() if m is not module}

    def _auto(self, key: Hashable, points: int) -> tuple[policy.Choice, Any]:
        module = self.final(key)
        if module is not None:
            return policy.Choice(self.goal), module
        with self.lock:
            job = self.jobs.get(key)
            state = "idle" if job is None else job.state
            choice = policy.choose(self.stats, points, "auto", self.engines.ready(key), state)
            if choice.behind is not None and self.behind_first:
                self._submit(key)
        if state == "failed":
            self._report(job, choice.now)
        module = self.engines.engine(choice.now, key)
        if choice.now == self.goal:  # waited for (compiled now): it answers from now on
            with self.lock:
                self._final[key] = module
        return choice, module

    def _submit(self, key: Hashable) -> None:
        """Queue the final engine's compile for ``key``, once."""
        with self.lock:
            if key in self.jobs:
                return
            self.jobs[key] = background.submit(self.engines.job(key))

    def _report(self, job: background.Job, now: str) -> None:
        """Warn once, on the user's thread, that a background compile failed."""
        with self.lock:
            if id(job) in self._reported:
                return
            self._reported.add(id(job))
        warnings.warn(
            f"symgrad: compiling {job.entry} of {self.title!r} in the background failed "
            f"({type(job.error).__name__}: {job.error}); the {now} engine keeps answering",
            RuntimeWarning,
            stacklevel=_callers_level(),
        )


_RUNTIME = os.path.dirname(os.path.abspath(__file__))


def _callers_level() -> int:
    """The ``stacklevel`` naming the first frame outside symgrad's runtime, so a warning points
    at the user's line whatever the path to it."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_RUNTIME):
        frame, level = frame.f_back, level + 1
    return level

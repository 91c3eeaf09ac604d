"""Compiling kernels behind the user's back, for ``mode="auto"``.

One daemon thread serves every kernel: Numba compiles under a single global lock anyway, so more
threads would only queue. A job loads (or generates) the kernel module, then compiles the entry's
jitted functions one at a time — for a split kernel, segment by segment — with the exact
signatures a call uses, loading each from Numba's disk cache when it is there. Between two
functions the worker checks whether it must stop. An exiting interpreter lets the compiles queued so
far finish (a script's first run leaves its kernels cached), for at most ``EXIT_WAIT`` seconds,
with a note on stderr after ``EXIT_NOTE``; then the compile stops after one bounded function.
A job whose kernel is whole on disk already (``Job.on_disk``: a later run of the script, where
Numba's kernel counts as ready only once Numba is imported, so a job loads it) fills no cache:
the exit waits only for the step running now (the rest of Numba's import), and says nothing.

A job never leaves a half-built cache entry: the module file is published atomically and whole,
Numba writes each function's cache file atomically, and a job that fails discards the module and
its cache files. The failure is kept on the job for the kernel to report (with a warning, on the
user's thread) while the instant tier goes on answering.
"""

from __future__ import annotations

import atexit
import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from runtime import cache

#: How long an exiting interpreter waits for the compiles queued so far (seconds): a script's
#: first run leaves its kernels cached, so the next run starts compiled. After this the compile
#: stops at its next bounded step (one Numba function, one wave of LLVM modules).
EXIT_WAIT = 10.0

#: After this long (seconds) the exiting interpreter says on stderr what it waits for.
EXIT_NOTE = 1.0

_numba_lock = threading.Lock()
_numba_done: list[bool] = []  # import_numba has run


def numba_imported() -> bool:
    """Whether Numba is imported whole already (looking at a kernel on disk then costs
    milliseconds; importing it costs 0.3-0.5 s, which a call should not wait for)."""
    numba = sys.modules.get("numba")
    return numba is not None and not getattr(numba.__spec__, "_initializing", False)


def import_numba() -> None:
    """Import Numba whole, once, under a lock, before any thread needs it: a thread importing it
    while another one does could see a half-imported ``numba`` (``cannot import name 'njit'``)."""
    if _numba_done:
        return
    with _numba_lock:
        import numba  # noqa: F401
        import numba.core.caching  # noqa: F401 - what @njit(cache=True) imports when applied
        import numba.core.compiler_lock  # noqa: F401
        import numba.core.errors  # noqa: F401
        import numba.core.sigutils  # noqa: F401

        import runtime.jit  # noqa: F401 - what generated modules import beside Numba
        import runtime.numba_ops  # noqa: F401

        _numba_done.append(True)


class Job:
    """One entry of one kernel module, to be compiled; ``state`` is pending, ready or failed."""

    def __init__(self, key: str, make_source: Callable[[], str], entry: str):
        self.key, self.make_source, self.entry = key, make_source, entry
        self.state = "pending"
        self.module: ModuleType | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self, stopping: threading.Event) -> None:
        module = None
        try:
            import_numba()
            if stopping.is_set():
                return  # exiting: nothing of this job started
            module = cache.load_module(self.key, self.make_source)
            if self.on_disk() and load_cached(module, self.entry):
                self.module, self.state = module, "ready"  # loaded: nothing compiled
                return
            unmark(self.key, self.entry)  # a kernel whose files are gone: compiled again
            for name, signature in module.SIGNATURES[self.entry].items():
                if stopping.is_set():
                    return  # exiting: what is compiled so far is cached, the rest never started
                compile_signature(getattr(module, name), signature)
            mark(module, self.key, self.entry)
            self.module, self.state = module, "ready"
        except BaseException as e:  # noqa: BLE001 - reported to the user's thread, never raised here
            if module is not None:
                cache.discard(module)
            self.error, self.state = e, "failed"
        finally:
            self.done.set()

    def on_disk(self) -> bool:
        """Whether this job's product is whole on disk already: the module, and a mark written
        once every function of the entry was compiled (so in Numba's sealed cache files). Such
        a job only loads: an exiting interpreter need not wait for it. Known without importing
        Numba, which is what makes the kernel count as ready in a new process."""
        return marked(self.key, self.entry)


def _mark_path(directory: Path, key: str, entry: str, prefix: str = "k") -> Path:
    """Beside Numba's cache files of the module (dropped with them by ``cache.forget``)."""
    return directory / "__pycache__" / f"{prefix}_{key}.{entry}.compiled"


def mark(module: ModuleType, key: str, entry: str, prefix: str = "k") -> None:
    """Note that every function of ``entry`` is compiled into Numba's cache files."""
    try:
        path = _mark_path(Path(module.__file__).parent, key, entry, prefix)
        cache.write_private(path, f"{key} {entry}".encode())
    except Exception:  # noqa: BLE001 - no mark: the next run's exit waits, as before
        pass


def marked(key: str, entry: str, prefix: str = "k") -> bool:
    """Whether ``entry`` of the module is whole on disk (its mark and its sealed module), known
    without importing Numba."""
    try:
        path = _mark_path(cache.usable_dir(), key, entry, prefix)
        return cache.read_private(path) == f"{key} {entry}".encode() and cache.on_disk(key, prefix)
    except Exception:  # noqa: BLE001 - an unreadable cache: not on disk
        return False


def unmark(key: str, entry: str, prefix: str = "k") -> None:
    try:
        _mark_path(cache.usable_dir(), key, entry, prefix).unlink(missing_ok=True)
    except OSError:
        pass


def compile_signature(dispatcher, signature: str) -> None:
    """Compile one signature, as a call with those argument types would (same cache entry)."""
    from numba.core import sigutils

    args, _ = sigutils.normalize_signature(signature)
    dispatcher.compile(tuple(args))


def load_cached(module: ModuleType, entry: str) -> bool:
    """Whether every jitted function of ``entry`` could be loaded from Numba's disk cache.

    Nothing is compiled: this is how ``auto`` sees a warm cache and skips the instant tier.
    """
    try:
        from numba.core import sigutils
        from numba.core.compiler_lock import global_compiler_lock

        for name, signature in module.SIGNATURES[entry].items():
            dispatcher = getattr(module, name)
            args = tuple(sigutils.normalize_signature(signature)[0])
            with global_compiler_lock:
                if dispatcher.overloads.get(args) is not None:
                    continue
                cres = dispatcher._cache.load_overload(args, dispatcher.targetctx)
                if cres is None:
                    return False
                dispatcher._cache_hits[args] += 1  # as Dispatcher.compile counts a load
                dispatcher.targetctx.insert_user_function(
                    cres.entry_point, cres.fndesc, [cres.library]
                )
                dispatcher.add_overload(cres)
        return True
    except Exception:  # a Numba whose internals differ: compile in the background instead
        return False


class _Worker:
    def __init__(self) -> None:
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.stopping = threading.Event()
        self.exiting = threading.Event()  # set at exit: jobs that only load are skipped
        self.abandoned = False  # set by ``abandon``: at exit, do not finish the queue
        self.current: Job | None = None
        self.unfinished = 0  # jobs submitted and not run to their end (under _worker_lock)
        self.thread = threading.Thread(target=self._loop, name="symgrad-compile", daemon=True)
        self.thread.start()
        atexit.register(self.stop)

    def _loop(self) -> None:
        while True:
            job = self.jobs.get()
            if job is _LAST or self.stopping.is_set():
                return
            self.current = job
            try:
                if self.exiting.is_set() and _on_disk(job):
                    job.done.set()  # exiting: loading it would fill no cache
                else:
                    job.run(self.stopping)
            finally:
                self.current = None
                with _worker_lock:
                    self.unfinished -= 1

    def _owed(self) -> int:
        """Queued or running jobs whose product is not on disk yet: what an exit waits for."""
        with self.jobs.mutex:
            jobs = [*self.jobs.queue, self.current]
        return sum(1 for job in jobs if job is not None and job is not _LAST and not _on_disk(job))

    def stop(self) -> None:
        """At exit: finish the compiles queued so far (up to ``EXIT_WAIT``), then stop; after
        ``abandon``, or when every job left only loads a kernel already on disk, only the step
        running now ends (an import, one function)."""
        self.exiting.set()
        self.jobs.put(_LAST)
        if self.abandoned or not self._owed():
            self.stopping.set()
            self.thread.join(EXIT_WAIT)
            return
        self.thread.join(EXIT_NOTE)
        left = self._owed() if self.thread.is_alive() else 0
        if left:
            print(
                f"symgrad: finishing {left} background compile(s) so the next run starts "
                f"compiled (at most {EXIT_WAIT:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
            self.thread.join(max(0.0, EXIT_WAIT - EXIT_NOTE))
        self.stopping.set()
        self.thread.join(EXIT_WAIT)


_LAST = Job("", str, "")  # queued at exit: the worker stops when it gets there


def _on_disk(job) -> bool:
    """Whether ``job`` (a ``Job`` or another kind of job) only loads what is on disk already."""
    check = getattr(job, "on_disk", None)
    return bool(check()) if callable(check) else False


_worker: list[_Worker] = []
_worker_lock = threading.Lock()


def on_this_thread(
    key: str, make_source: Callable[[], str], prefix: str = "k"
) -> Callable[[], str]:
    """``make_source``, run now on the caller's thread unless the module is on disk already.

    Generating a module audits it, which parses Python (``compiler/pyast.py``): CPython 3.11's
    parser breaks when two threads parse at once, and the user's thread may be parsing its own
    code (IPython, pytest, any library). So the background thread never parses."""
    if cache.on_disk(key, prefix):
        return make_source
    try:
        source = make_source()
    except Exception:  # noqa: BLE001 - the background job reports it, on the user's thread
        return make_source
    return lambda: source


def abandon() -> None:
    """Let the process exit without finishing the queued compiles (a command that computed one
    point, an error, Ctrl-C): at exit the function being compiled ends, the others never start.
    Until exit the worker goes on, so a process that calls the CLI in-process (a test, a
    notebook) still gets its later kernels compiled."""
    with _worker_lock:
        if _worker:
            _worker[0].abandoned = True


def submit(job: Job) -> Job:
    """Queue ``job`` on the background thread (started on first use)."""
    with _worker_lock:
        if not _worker:
            _worker.append(_Worker())
        _worker[0].unfinished += 1
        _worker[0].jobs.put(job)
    return job


def wait_idle(timeout: float = 120.0) -> bool:
    """Wait until every job submitted so far has run (True), or ``timeout`` seconds passed. A job
    writes to the cache directory current when it runs: a test that points the cache elsewhere
    waits first, or an earlier test's kernel lands in its directory."""
    deadline = time.monotonic() + timeout
    while True:
        with _worker_lock:
            busy = bool(_worker) and _worker[0].unfinished > 0
        if not busy:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)

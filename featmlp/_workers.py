"""Worker processes that stop with their parent: Ctrl-C, ``kill`` (SIGTERM) and ``kill -9`` alike.

featmlp's process pools (extraction chunks, sweep configurations, sweep plots) are spawned
``ProcessPoolExecutor`` s made by :func:`spawn_pool`; the command line's plot drawers are forked
ones, made by :func:`fork_pool` before any other thread runs. Each worker

* ignores SIGINT (it is spawned with SIGINT blocked, so even a Ctrl-C while it starts waits):
  Ctrl-C reaches the whole foreground process group, and a worker that took it would print its
  own ``KeyboardInterrupt`` traceback (or a truncated pickle's) while the parent shuts down; the
  parent alone answers it, and stops the workers;
* dies with its parent: on Linux the kernel sends it SIGKILL when the parent exits
  (``prctl(PR_SET_PDEATHSIG)``), and everywhere a watchdog thread exits it once its parent's pid
  is no longer its parent (the parent was killed, even by SIGKILL, and it was re-parented).

The parent leaves a pool through :func:`stopping`: on any exception (KeyboardInterrupt, an
error) the queued jobs are cancelled and the workers terminated at once instead of waiting for
the jobs they are running, so Ctrl-C is answered in well under a second.
:func:`terminate_as_interrupt` turns SIGTERM into the same path as Ctrl-C in the main process.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

_PR_SET_PDEATHSIG = 1
_QUIET_TRACKER = "ignore:resource_tracker:UserWarning"
_WATCH_SECONDS = 0.25  # how often a worker checks that its parent is alive (the portable fallback)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as an interrupt: the same clean path as Ctrl-C."""


@contextlib.contextmanager
def terminate_as_interrupt():
    """While inside, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main thread.

    The previous handler is restored after. Outside the main thread (where handlers cannot be
    set) nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise Terminated()

    if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:  # ignored on purpose by whoever started us
        yield
        return
    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except (ValueError, OSError):  # not settable here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _die_with_parent(parent: int) -> None:
    """In a worker: SIGKILL when the parent exits (Linux), and a watchdog thread everywhere."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watchdog below still stops it
    if os.getppid() != parent:  # the parent died before the above took effect
        os._exit(1)

    def watch():
        while True:
            time.sleep(_WATCH_SECONDS)
            if os.getppid() != parent:
                os._exit(1)  # no cleanup to do: the parent, which would read the results, is gone

    threading.Thread(target=watch, name="featmlp-parent-watchdog", daemon=True).start()


def _worker_start(parent: int, initializer: str | None, initargs) -> None:
    """Each worker's first step: leave Ctrl-C to the parent, stop with it, then the pool's initializer
    (``"module:name"``, imported only now: torch takes seconds to import, and a worker that had not
    yet done the above would outlive a parent killed meanwhile)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # terminate() ends it silently, whatever it inherited
    if hasattr(signal, "pthread_sigmask"):  # it was spawned with SIGINT blocked (_Pool): ignored from now on
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _die_with_parent(parent)
    if initializer is not None:
        module, name = initializer.split(":")
        getattr(importlib.import_module(module), name)(*initargs)


class _Pool(ProcessPoolExecutor):
    """Spawns each worker with SIGINT blocked, which it inherits: a Ctrl-C while it starts stays
    pending until it ignores SIGINT (here it is delivered as soon as the spawn returns)."""

    def _spawn_process(self):
        if not hasattr(signal, "pthread_sigmask"):
            return super()._spawn_process()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            return super()._spawn_process()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def spawn_pool(max_workers: int, *, initializer=None, initargs=()) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` of spawned workers that stop with this process (see the module docstring).

    Spawn, not fork: a forked child of a process that has run numba's OpenMP or torch's thread
    pools can deadlock or be killed. ``initializer`` is a module-level function.
    """
    name = None if initializer is None else f"{initializer.__module__}:{initializer.__qualname__}"
    # The resource tracker (a process multiprocessing starts beside the pool) of a parent killed by
    # SIGKILL frees the pool's semaphores, with a warning that they had leaked: nothing to act on.
    # It takes this process's -W options when it starts (those of sys.warnoptions).
    if _QUIET_TRACKER not in sys.warnoptions:
        sys.warnoptions.append(_QUIET_TRACKER)
    return _Pool(max_workers=max_workers, mp_context=multiprocessing.get_context("spawn"),
                 initializer=_worker_start, initargs=(os.getpid(), name, initargs))


def fork_pool(max_workers: int, *, initializer=None, initargs=()) -> ProcessPoolExecutor | None:
    """A pool like :func:`spawn_pool`'s whose workers are forked, all at once, by this call; None
    elsewhere than Linux, or once another Python thread runs in this process (a pool's manager,
    tqdm's monitor): a forked child of a threaded parent can deadlock on a lock another thread held.
    numba's and torch's own threads are not Python threads and are not seen here: call it before
    anything has run them (the command line forks first thing).

    A forked worker starts in milliseconds with everything this process imported, where a
    spawned one takes ~0.1 s and imports it all again: for work that must start at once (the
    plots of a run that lasts two seconds, :func:`featmlp._figures.drawing_in_background`).
    """
    if not sys.platform.startswith("linux") or threading.active_count() > 1:
        return None
    name = None if initializer is None else f"{initializer.__module__}:{initializer.__qualname__}"
    for stream in (sys.stdout, sys.stderr):  # a child flushes what it inherited: printed twice otherwise
        with contextlib.suppress(Exception):
            stream.flush()
    pool = _Pool(max_workers=max_workers, mp_context=multiprocessing.get_context("fork"),
                 initializer=_worker_start, initargs=(os.getpid(), name, initargs))
    # The first job forks every worker (before the pool's own manager thread starts) and each
    # runs the initializer right away.
    pool.submit(int)
    return pool


def terminate(pool: ProcessPoolExecutor) -> None:
    """Cancel the queued jobs and end the workers now (SIGTERM: they die without a word), not after
    the jobs they are running."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        with contextlib.suppress(Exception):
            p.terminate()
    deadline = time.monotonic() + 2.0
    for p in processes:
        with contextlib.suppress(Exception):
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(1.0)


@contextlib.contextmanager
def stopping(pool: ProcessPoolExecutor):
    """``with stopping(spawn_pool(n)) as pool``: shut down normally after, but on any exception
    (Ctrl-C, SIGTERM, an error) :func:`terminate` the workers at once."""
    try:
        yield pool
    except BaseException:
        terminate(pool)
        raise
    pool.shutdown(wait=True)

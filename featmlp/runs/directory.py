"""A run directory being written: built in a staging directory beside it, renamed in when whole.

A run into ``DIR`` is built in ``.DIR.incomplete`` beside it (:func:`staging_dir`, see
:class:`RunDirectory`) and renamed onto ``DIR`` only when every file is written: a failed or
killed run leaves ``DIR`` as it was (absent, or the previous run, whole). An existing ``DIR`` is
replaced only when asked (``overwrite=True``, ``--force``) and only when it is a featmlp run
(:func:`featmlp._outputs.check_output`, the rule every output follows). One writer at a time holds
``.DIR.lock`` (:func:`lock_file`), the same lock a sweep into ``DIR`` takes.

Only the file system: no numpy, no torch (what is written is :mod:`featmlp.runs.results`'s).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from featmlp._io import exclusive, sibling
from featmlp._outputs import check_output, check_work_dir, remove_work_dir


def staging_dir(out: str | os.PathLike) -> Path:
    """Where a run into ``out`` is built: ``.<name>.incomplete`` beside it, the same each time
    (so a rerun finds the extraction an interrupted ``featmlp run`` left there)."""
    out = Path(os.path.abspath(out))
    return sibling(out, "incomplete")


def lock_file(out: str | os.PathLike) -> Path:
    """The lock a writer of run or sweep directory ``out`` holds: ``.<name>.lock`` beside it."""
    out = Path(os.path.abspath(out))
    return sibling(out, "lock")


def _aside_dir(out: Path) -> Path:
    out = Path(os.path.abspath(out))
    return out.parent / f".{out.name}.replaced"


def check_out(out: str | os.PathLike, *, overwrite: bool = False, sources=(), carried=()) -> None:
    """Raise :class:`DataError` unless a run may be written to ``out``: absent, an empty
    directory, or (``overwrite``) a featmlp run directory to replace; never inside one of
    ``sources`` nor holding one, nor inside one of ``carried`` (a feature file the run links
    into itself: :func:`featmlp._outputs.check_output`)."""
    check_output(out, "run", force=overwrite, sources=sources, carried=carried)


def _fsync_dir(path: Path) -> None:
    # A rename is durable once the directory holding it is synced.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class RunDirectory:
    """A run directory being written: files go to :attr:`path` (the staging directory beside
    ``out``), which :meth:`commit` renames onto ``out`` once everything is there.

    Used as a context manager, it commits when the block ends normally and, on an error or
    an interrupt, removes the staging directory except the entries named in ``keep`` (the
    resumable state of an extraction). With ``overwrite`` an existing ``out`` is renamed
    aside, the new run renamed in, then the old one deleted: a kill in between leaves the
    old run (``.<name>.replaced``, put back by the next run) or the new one whole.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> with RunDirectory(out) as rd:
    ...     _ = (rd.path / "a.txt").write_text("a")
    ...     out.exists()
    False
    >>> sorted(p.name for p in out.iterdir())
    ['a.txt']
    """

    def __init__(self, out: str | os.PathLike, *, overwrite: bool = False, keep=(), kind: str = "run"):
        self.out = Path(out)
        self.kind = kind  # what is built: a "run", or an "evaluation" (featmlp.runs.score)
        self.path = staging_dir(out)
        self.keep = tuple(keep)
        # One writer per run directory: a second run into it would clear this one's staging.
        self._lock = contextlib.ExitStack()
        busy = f"another featmlp run is writing {self.out} (pid {{pid}}): wait for it, or choose another --out"
        self._lock.enter_context(exclusive(lock_file(self.out), busy))
        try:
            self._start(overwrite)
        except BaseException:
            self._lock.close()
            raise

    def _start(self, overwrite: bool) -> None:
        aside = _aside_dir(self.out)
        if os.path.lexists(aside):  # left by a replacement that was killed
            if os.path.lexists(self.out):
                remove_work_dir(aside)  # only the old run it was (refused when something else)
            else:
                os.replace(aside, self.out)  # the old run is put back
        check_output(self.out, self.kind, force=overwrite)
        check_work_dir(self.path)  # only featmlp's own staging is cleared
        self._clear()
        self.path.mkdir(parents=True, exist_ok=True)
        self.committed = False

    def _clear(self) -> None:
        """Empty the staging directory, but for the entries in ``keep``; removed when nothing is kept."""
        if not self.path.is_dir():
            return
        kept = False
        for entry in self.path.iterdir():
            if entry.name in self.keep:
                kept = True
            elif entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        if not kept:
            self.path.rmdir()

    def commit(self) -> Path:
        """Move the finished run onto ``out`` (replacing the old one); returns ``out``."""
        _fsync_dir(self.path)
        aside = _aside_dir(self.out)
        if os.path.lexists(self.out):
            os.replace(self.out, aside)
            os.replace(self.path, self.out)
            _fsync_dir(self.out.parent)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.path, self.out)
        _fsync_dir(self.out.parent)
        self.committed = True
        self._lock.close()
        return self.out

    def discard(self) -> None:
        """Remove what this run wrote, but for the entries in ``keep``."""
        try:
            with contextlib.suppress(OSError):
                self._clear()
        finally:
            self._lock.close()

    def __enter__(self) -> "RunDirectory":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            if not self.committed:
                self.commit()
        else:
            self.discard()


"""Small file helpers shared by every stage that writes: nothing is half-written."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

from featmlp.errors import DataError


# The siblings an output is built in, locked by or moved aside to: one rule for their names.
# Hidden (".NAME.KIND") for the directories and locks of runs, sweeps and sharded tables, and for
# what a replaced output is moved aside to; visible ("NAME.KIND") for a feature file's chunks and
# lock, as extraction has always named them (so an interrupted extraction still resumes).
SIBLING_KINDS = ("partial", "incomplete", "lock", "old")


def sibling(path: str | os.PathLike, kind: str, *, hidden: bool = True) -> Path:
    """The sibling of ``path`` of ``kind`` (:data:`SIBLING_KINDS`): ``.NAME.KIND`` beside it, or
    ``NAME.KIND`` when not ``hidden``.

    Examples
    --------
    >>> sibling("runs/a", "incomplete").as_posix(), sibling("t.npz", "partial", hidden=False).as_posix()
    ('runs/.a.incomplete', 't.npz.partial')
    """
    if kind not in SIBLING_KINDS:
        raise ValueError(f"kind {kind!r}: expected one of {', '.join(SIBLING_KINDS)}")
    path = Path(str(path).rstrip("/") or "/")
    return path.with_name(f".{path.name}.{kind}" if hidden else f"{path.name}.{kind}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it onto ``path`` only on success.

    A crash or an exception inside the block leaves ``path`` as it was (absent or
    its previous content) and removes the temporary file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
    >>> with atomic_write(p, "w") as f:
    ...     _ = f.write("done")
    >>> p.read_text()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        # mkstemp creates the file 0600; give the result the permissions of a normal file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first member, or an empty zip
_NPY_MAGIC = b"\x93NUMPY"


def read_npz(path: str | os.PathLike, select=None, *, what: str = "feature file") -> dict:
    """The arrays of an ``.npz`` (those whose name ``select(name)`` accepts), read without unpickling.

    Every way a file can fail to be one (not a zip, a ``.npy`` or text renamed ``.npz``, truncated,
    a bad CRC, arrays of Python objects) is a :class:`~featmlp.errors.DataError` naming the file;
    the advice numpy gives for object arrays (load them with ``allow_pickle``) is never passed on,
    since unpickling a file runs code from it.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.npz"
    >>> np.savez(p, a=np.arange(3), b=np.zeros(2))
    >>> sorted(read_npz(p, lambda k: k == "a"))
    ['a']
    """
    import zipfile
    import zlib

    import numpy as np

    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    if not head.startswith(_ZIP_MAGIC):
        if not head:
            kind = "it is empty"
        elif head.startswith(_NPY_MAGIC):
            kind = "it is a single .npy array (np.save), not an .npz archive of named arrays (np.savez)"
        elif head.startswith(b"PK"):
            kind = "it is a damaged zip"
        else:
            kind = "it does not start as a zip archive does (is it text, or another format renamed .npz?)"
        raise DataError(f"{path} is not a {what} (.npz): {kind}")
    try:
        # Opened here, so the file is closed however np.load fails (it leaves its own open).
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            return {k: z[k] for k in z.files if select is None or select(k)}
    except ValueError as e:
        if "pickle" in str(e):
            raise DataError(f"{path} holds arrays of Python objects, which featmlp never reads (unpickling "
                            f"runs code from the file): write numbers and strings only") from None
        raise DataError(f"{path} is damaged ({e}): write it again") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError) as e:
        raise DataError(f"{path} is damaged or truncated ({type(e).__name__}: {e}): write it again "
                        f"(a feature file: featmlp extract)") from None


@contextlib.contextmanager
def exclusive(lock_path: str | os.PathLike, busy: str) -> Iterator[None]:
    """Hold ``lock_path`` exclusively, or raise a DataError: ``busy`` with ``{pid}`` replaced by the holder's.

    One writer per output: two extractions (or two runs) into one place would remove each
    other's unfinished files. flock is released by the kernel when its holder dies, even by
    kill -9, so a lock file left behind is taken over. The file is removed while still held,
    so a process that opened it just before checks that it locked the file now at that path.
    On systems without flock nothing is locked.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise DataError(busy.replace("{pid}", holder)) from None
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # its holder finished and removed it: lock the one there now
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        os.close(fd)

"""Files on disk as the data layer reads them: regular files only, within a size limit.

A FIFO would block a read forever, a device never end, a dangling symlink fail late: each is
named and refused before it is opened for reading (:func:`not_regular`, :func:`read_regular_file`).
A file larger than the limit (``FEATMLP_MAX_FILE_BYTES``) is refused from its size alone.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .._validation import Field
from ..errors import ConfigError, DataError

# Largest member or file read (env FEATMLP_MAX_FILE_BYTES): no image format needs more for
# an image under the pixel cap, and it stops a small archive that inflates to gigabytes
# before a byte of it is inflated (the size is in the member's header).
DEFAULT_MAX_FILE_BYTES = 256 << 20
MAX_FILE_BYTES = Field("optional_int", "largest file or archive member read; None: $FEATMLP_MAX_FILE_BYTES, "
                       "else 256 MiB", low=1)


def limit_from_env(value, env: str, default: int, what: str) -> int:
    """``value``, else ``$env``, else ``default``, as a positive int (ConfigError otherwise)."""
    source = value if value is not None else os.environ.get(env)
    if source is None:
        return default
    try:
        n = int(source)
        if n < 1:
            raise ValueError
    except (TypeError, ValueError):
        where = f"${env}" if value is None else what
        raise ConfigError(f"{where} must be a positive integer, got {source!r}") from None
    return n


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


def too_large(where: str, size: int, limit: int) -> DataError:
    return DataError(f"{where} is {_mib(size)}, over the limit of {_mib(limit)} per file (a file that "
                     f"large is more likely a decompression bomb or a stray file than an image); if it "
                     f"is genuine, raise the limit: FEATMLP_MAX_FILE_BYTES={size} (or max_file_bytes=)")


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


def file_kind(mode: int) -> str:
    """What a file of this ``stat`` mode is, in words ("a FIFO (named pipe)" ...)."""
    return next((text for test, text in _KINDS if test(mode)), "not a regular file")


def _link_text(path) -> str:
    """`` to TARGET`` of a symlink (as it is written in it), or nothing."""
    try:
        return f" to {os.readlink(path)}"
    except OSError:
        return ""


def _special(mode: int, path) -> str:
    """What a file that is not regular is, for messages, e.g. "a symlink to /dev/zero: a character device"."""
    if os.path.islink(path):
        if stat.S_ISDIR(mode):
            return (f"a symlink{_link_text(path)}, a directory where an image file is expected "
                    f"(symlinks to directories are not followed)")
        return f"a symlink{_link_text(path)}: {file_kind(mode)}, not a regular file"
    return f"{file_kind(mode)}, not a regular file"


def not_regular(path) -> str | None:
    """Why the file at ``path`` must not be read as an image, found without opening it; None when
    it is a regular file (or a symlink to one), or cannot be told now (read errors say it then).

    Special files (FIFOs, devices, sockets, directly or through a symlink: a FIFO would block the
    read forever, ``/dev/zero`` never ends), dangling symlinks, symlink loops and symlinks to
    directories are named with what they are, e.g. ``"a symlink to /dev/zero: a character
    device, not a regular file"``.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            return f"a dangling symlink{_link_text(path)} (its target does not exist)"
        return None  # gone since it was listed: reported when it is read
    except OSError as e:
        if e.errno == errno.ELOOP:
            return f"a symlink loop{_link_text(path)} (too many levels of symbolic links)"
        return None  # no permission ...: reported when it is read
    return None if stat.S_ISREG(mode) else _special(mode, path)


def read_regular_file(path, where: str, *, listed: bool = False) -> bytes:
    """The bytes of the regular file at ``path`` (symlinks to one are followed); a DataError naming
    ``where`` for anything else: a FIFO is opened without blocking and refused unread, a device
    refused unread, a missing file, a dangling symlink or a loop named as such (``listed``: the
    file was listed before, so a missing one was moved or deleted since)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        reason = not_regular(path) or ("no such file (was it moved or deleted after listing?)" if listed
                                       else "no such file")
        raise DataError(f"cannot read image {where}: {reason}") from None
    except OSError as e:
        reason = not_regular(path) or e.strerror or str(e)
        raise DataError(f"cannot read image {where}: {reason}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise DataError(f"cannot read image {where}: {_special(mode, path)}")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    except OSError as e:
        raise DataError(f"cannot read image {where}: {e.strerror or e}") from None
    finally:
        os.close(fd)


class PathBlob:
    """A file on disk, read when needed (a regular file only: see :func:`read_regular_file`)."""

    portable = True  # a path: another process sharing the file system reads it too

    def __init__(self, path: str | Path, where: str):
        self.path, self.where = path, where

    def read(self) -> bytes:
        return read_regular_file(self.path, self.where, listed=True)

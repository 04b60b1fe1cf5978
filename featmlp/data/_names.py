"""Names inside image folders and archives: path parts, junk files, valid text, archive suffixes.

Shared by the listing (``_images``), the archive readers (``_archive``, ``_remote``) and the tar
shards (``_tar_shards``); it imports nothing of featmlp's but the errors, so each of them imports it
at the top.
"""

from __future__ import annotations

import os

from ..errors import DataError

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ARCHIVE_SUFFIXES = (".zip",) + TAR_SUFFIXES
_JUNK_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini"}


def split_name(name: str) -> tuple[str, ...] | None:
    """A member or file name as path parts; None for names that would leave the root."""
    # Archives made on Windows sometimes use backslashes; "./x" and "x" are the same file.
    parts = tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))
    if not parts or ".." in parts:
        return None
    return parts


def is_junk(parts: tuple[str, ...]) -> bool:
    """Hidden files (.DS_Store, ._AppleDouble), macOS resource folders, Windows thumbnails."""
    return any(p.startswith(".") or p in _JUNK_NAMES for p in parts)


def valid_text(name: str) -> str:
    """``name`` as valid UTF-8 text: bytes that are not UTF-8 become ``\\xNN`` escapes.

    ``os.walk`` and ``tarfile`` hand over such bytes as lone surrogates
    (``surrogateescape``), which JSON files, plots and terminals cannot write.
    """
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # surrogates that did not come from bytes
        return name.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


class TextNames:
    """Makes path parts valid text, refusing two folders that become the same text."""

    def __init__(self, where: str):
        self.where = where
        self.folders: dict[tuple[str, ...], tuple[str, ...]] = {}  # text parts -> raw parts

    def __call__(self, raw: tuple[str, ...]) -> tuple[str, ...]:
        parts = tuple(valid_text(p) for p in raw)
        for depth in range(1, len(parts)):
            seen = self.folders.setdefault(parts[:depth], raw[:depth])
            if seen != raw[:depth]:
                a, b = (os.fsencode("/".join(p)) for p in (seen, raw[:depth]))
                raise DataError(f"{self.where}: the folders {a!r} and {b!r} have the same name "
                                f"{'/'.join(parts[:depth])!r} once their bytes that are not UTF-8 are "
                                f"written as \\x escapes; rename one of them")
        return parts

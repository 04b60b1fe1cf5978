"""Images to classify, from any mix of sources: files, folders, archives, tar shards, URLs.

Training needs a dataset's layout (class folders, a split); predicting needs only the images.
:func:`list_images` lists every image of its sources with the listers ``load_dataset`` uses
(folders walked, archives and tar shards listed from their headers, URLs from the filesystem's
listing), without reading a pixel, into one :class:`~featmlp.data.ImageArray` whose chunks are
read together (one range of a tar, concurrent requests to object storage) and decoded one image
at a time by :meth:`ImageArray.decode_each`, so that a file that is not an image is one error,
not the end of the work.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from .._validation import check
from ..errors import DataError
from . import _remote
from ._decode import IMAGE_SIZE, image_size_pair
from ._files import DEFAULT_MAX_FILE_BYTES, MAX_FILE_BYTES, PathBlob, limit_from_env, read_regular_file
from ._image_array import ImageArray
from ._images import is_archive, list_folder, read_archive
from ._manifest import Blobs, ManifestBuilder
from ._names import ARCHIVE_SUFFIXES

_shown_left_out = 3  # names a warning shows of the files it left out


def image_suffixes() -> frozenset[str]:
    """The file name endings Pillow reads (``.jpg``, ``.png``, ``.webp``, ``.tif`` ...), lower case."""
    from PIL import Image

    Image.init()  # every format plugin registered, not only those imported so far
    return frozenset(Image.registered_extensions())


# What each setting of list_images accepts (the same entries as load_dataset's).
FIELDS = {"image_size": IMAGE_SIZE, "storage_options": _remote.STORAGE_OPTIONS, "max_file_bytes": MAX_FILE_BYTES}


def list_images(sources, *, image_size=None, storage_options=None, max_file_bytes=None) -> ImageArray:
    """Every image of ``sources``, listed (nothing decoded) as one :class:`ImageArray`.

    Parameters
    ----------
    sources : path, URL or a sequence of them
        Image files (each taken whatever its name: one that is not an image is an error when
        read), folders (every file under them whose name ends as an image format Pillow reads,
        in a sorted walk: a folder's files by name, then its subfolders by name; an archive
        found there is read as below), ``.zip``/``.tar``/``.tar.gz`` archives and tar shards
        (their image members, in the archive's order), and fsspec URLs to any of these or to a
        pattern of shards (``s3://b/shard-{000..009}.tar``).
    image_size : (width, height), optional
        The size every image is resized to when decoded; by default each keeps its own.
    storage_options : dict, optional
        Settings of the filesystem of the URLs (see :func:`featmlp.data.load_dataset`).
    max_file_bytes : int, optional
        Largest file or archive member read (default ``$FEATMLP_MAX_FILE_BYTES``, else 256 MiB).

    Returns
    -------
    ImageArray
        Named ``<file>``, ``<folder>/<relative path>``, ``<archive>:<member>``, in the order of
        ``sources``. Its shape's height and width are ``image_size``'s (0 when images keep
        their sizes: decode them with :meth:`ImageArray.decode_each`).

    A folder's files that are not images by their names are left out with one ``UserWarning``; an
    archive's (a shard's ``.cls`` and ``.json`` members) silently.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "sub").mkdir()
    >>> for name in ("b.png", "a.jpg", "sub/c.png"):
    ...     Image.new("RGB", (8, 6)).save(root / name)
    >>> images = list_images(root, image_size=(8, 6))
    >>> [n[len(str(root)) + 1:] for n in images.names], images.shape
    (['a.jpg', 'b.png', 'sub/c.png'], (3, 6, 8, 3))
    """
    check(dict(image_size=image_size, storage_options=storage_options, max_file_bytes=max_file_bytes), FIELDS)
    image_size = image_size_pair(image_size)
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    limit = limit_from_env(max_file_bytes, "FEATMLP_MAX_FILE_BYTES", DEFAULT_MAX_FILE_BYTES, "max_file_bytes")
    storage_options = dict(storage_options or {})
    builder, left_out, suffixes = ManifestBuilder(), [], image_suffixes()
    for source in sources:
        shown = os.fspath(source)
        if _remote.is_url(shown):
            _list_url(builder, shown, storage_options, limit, suffixes, left_out)
            continue
        path = Path(shown).expanduser()
        if path.is_dir():
            files = list_folder(path, max_file_bytes=limit)
            for name, reason, _ in getattr(files, "special", ()):  # a FIFO, a device: an error when read
                builder.append_blob(_joined(shown, name), _Unreadable(_joined(shown, name), reason))
            _append(builder, files, _joined(shown, ""), limit, suffixes, left_out, local=path)
        elif path.is_file() and is_archive(path):
            _append(builder, read_archive(path, max_file_bytes=limit), f"{shown}:", limit, suffixes, None)
        else:  # a file, or what is not one (missing, a FIFO): an error line of its own when read
            builder.append_blob(shown, _GivenFile(path, shown))
    if left_out:
        shown_names = ", ".join(left_out[:_shown_left_out]) + (", ..." if len(left_out) > _shown_left_out else "")
        warnings.warn(f"left out {len(left_out)} file{'s' if len(left_out) > 1 else ''} whose names are not "
                      f"those of images ({shown_names})", UserWarning, stacklevel=2)
    files = builder.build()
    w, h = image_size if image_size is not None else (0, 0)
    return ImageArray(files, np.zeros((len(files), 32), np.uint8), h, w, image_size)


def _joined(folder: str, rel: str) -> str:
    return folder.rstrip("/") + "/" + rel


def _append(builder, files, prefix: str, limit: int, suffixes, left_out, *, local: Path | None = None) -> None:
    """The image files of the Manifest ``files`` into ``builder``, named ``prefix + name``; its
    archives (``local``: a folder on disk) listed in turn; other files' names into ``left_out``
    (None: an archive's, whose other members, a shard's .cls and .json, go unsaid)."""
    renamed = {}
    for i, name in enumerate(files.iter_names()):
        lower = name.lower()
        if local is not None and lower.endswith(ARCHIVE_SUFFIXES):
            _append(builder, read_archive(local / name, max_file_bytes=limit), f"{prefix}{name}:", limit,
                    suffixes, None)
            continue
        if os.path.splitext(lower)[1] not in suffixes:
            if left_out is not None:
                left_out.append(prefix + name)
            continue
        k = int(files.container[i])
        c = files.containers[k]
        if isinstance(c, Blobs):
            builder.append_blob(prefix + name, files.blob(i))
        else:
            if k not in renamed:
                renamed[k] = builder.add(c.renamed(name_prefix=prefix + c.name_prefix))
            builder.append(renamed[k], files.key(i), int(files.offset[i]), int(files.size[i]))


def _list_url(builder, url: str, storage_options: dict, limit: int, suffixes, left_out) -> None:
    fs, path = _remote.open_url(url, storage_options)
    if _remote.is_pattern(path):  # shard-{000..009}.tar, *.tar
        for name, p, info in _remote.match_shards(fs, path, url):
            shard = fs.unstrip_protocol(p)
            files, _ = _remote.pack_tar(*_remote.list_remote_tar(fs, p, info, shard, max_file_bytes=limit))
            _append(builder, files, f"{shard}:", limit, suffixes, None)
        return
    with _remote.remote_errors(url):
        kind = fs.info(path).get("type", "file")
    if kind != "file":
        files, _, _ = _remote.list_prefix(fs, path, url, max_file_bytes=limit)
        for lower in (files.key(i).lower() for i in range(len(files))):
            if lower.endswith(ARCHIVE_SUFFIXES):
                raise DataError(f"{url} holds archives ({lower}): give each archive's URL, or a pattern of "
                                f"shards ({url.rstrip('/')}/*.tar)")
        _append(builder, files, _joined(url, ""), limit, suffixes, left_out)
    elif path.lower().endswith(".tar"):  # uncompressed: members read by byte range, nothing downloaded
        info = _remote.info_of(fs, path, url)
        files, _ = _remote.pack_tar(*_remote.list_remote_tar(fs, path, info, url, max_file_bytes=limit))
        _append(builder, files, f"{url}:", limit, suffixes, None)
    elif path.lower().endswith(ARCHIVE_SUFFIXES):
        with _remote.downloaded(fs, path, url) as local:  # its members spooled or the zip held open
            _append(builder, read_archive(local, max_file_bytes=limit, shown=url), f"{url}:", limit, suffixes,
                    None)
    else:  # one image
        builder.append_blob(url, _remote.FsBlob(_remote.FsFiles(fs), path, url, -1))


class _GivenFile(PathBlob):
    """A file named by the caller: missing, it was never listed (no "moved after listing?")."""

    def read(self) -> bytes:
        return read_regular_file(self.path, self.where)


class _Unreadable:
    """What a folder lists that is not a regular file (a FIFO, a device): its reason when read."""

    def __init__(self, where: str, reason: str):
        self.where, self.reason = where, reason

    def read(self) -> bytes:
        raise DataError(f"cannot read image {self.where}: {self.reason}")

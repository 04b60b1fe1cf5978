"""Sources behind an fsspec URL (``s3://``, ``gs://``, ``memory://``, ``file://`` ...): listing and reading.

A URL names a folder prefix (the usual layouts, or tar shards), one archive, or a pattern of
tar shards. Listing never downloads the images: names and sizes come from ``fs.find`` (one
paged listing request per 1,000 objects on S3), a tar's members from its headers. Reading is
batched: the files of a chunk are fetched together (``fs.cat_ranges``, concurrent on s3fs
and gcsfs), the members of a tar as merged byte ranges of it. Filesystems pickle with their
storage options, so every blob made here can be read in another process.

Errors of the filesystem (refused credentials, missing bucket, unreachable endpoint, protocol
not installed) become one-line :class:`DataError` messages saying what to do.
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import re
import shutil
import socket
import tempfile
from pathlib import Path

import numpy as np

from .._validation import Field
from ..errors import ConfigError, DataError, FeatmlpError
from ._archive import Store, TarMembers, list_tar
from ._files import not_regular, too_large
from ._manifest import Container, ManifestBuilder
from ._names import TextNames, is_junk, split_name

CLOUD_HINT = "pip install 'featmlp[cloud]' (s3fs for s3://, gcsfs for gs://)"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_PATTERN = re.compile(r"[*?\[{]")
# Tar headers are read through fsspec's read-ahead cache in blocks of this size: small images
# come along with their headers (one request per block, not one per member), large ones are
# skipped over.
_LIST_BLOCK = 1 << 20
# Listing fields that change when an object is rewritten, most specific first.
_VERSION_KEYS = ("ETag", "etag", "md5Hash", "crc32c", "generation", "version_id", "VersionId",
                 "mtime", "LastModified", "last_modified", "updated", "modified", "created")
_NETWORK_ERRORS = {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
                   "ClientConnectorError", "ClientConnectionError", "ServerTimeoutError", "ClientOSError",
                   "ServerDisconnectedError", "FSTimeoutError"}
_CREDENTIAL_ERRORS = {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                      "RefreshError", "DefaultCredentialsError"}


def is_url(source) -> bool:
    """Whether ``source`` is a string with a protocol (``s3://...``)."""
    return isinstance(source, str) and bool(_URL.match(source))


STORAGE_OPTIONS = Field("storage_options", "URLs only: settings of the fsspec filesystem (endpoint_url, key, "
                        "secret, anon ...); never recorded anywhere")


def open_url(url: str, storage_options: dict):
    """``(filesystem, path)`` of ``url``; DataError when its protocol is unknown or not installed."""
    protocol = url.split("://", 1)[0]
    try:
        import fsspec.core
    except ImportError:
        raise DataError(f"reading {url} needs fsspec; {CLOUD_HINT}") from None
    try:
        return fsspec.core.url_to_fs(url, **storage_options)
    except ImportError as e:
        raise DataError(f"no filesystem for {protocol}:// is installed ({e}); {CLOUD_HINT}, or the fsspec "
                        f"implementation of {protocol}://") from None
    except ValueError as e:
        if "protocol" in str(e).lower():
            raise DataError(f"unknown protocol {protocol}:// in {url} ({e}); use one fsspec knows "
                            f"(s3://, gs://, az://, memory://, file://, ...)") from None
        raise DataError(f"cannot open {url}: {e}") from None
    except TypeError as e:
        raise _bad_option(url, e) from None
    except Exception as e:  # anything the filesystem's constructor raises (credentials ...)
        raise DataError(f"{url}: {explain(e)}") from None


def _bad_option(url: str, e: Exception) -> ConfigError:
    # a setting the filesystem refused: the storage_options are wrong, not the data
    return ConfigError(f"{url}: a storage option was not accepted ({e}); check the storage_options "
                       f"(CLI: --storage-option KEY=VALUE) against the filesystem's documentation")


def explain(e: BaseException) -> str:
    """What went wrong with a filesystem call and what to do, in one line."""
    names = {c.__name__ for c in type(e).__mro__}
    text = f"{type(e).__name__}: {e}"
    if isinstance(e, PermissionError) or names & _CREDENTIAL_ERRORS:
        return (f"access refused ({text}); check the credentials: storage options key and secret (CLI: "
                f"--storage-option key=... --storage-option secret=...), or AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY / your cloud login; for a public bucket pass anon=true")
    if isinstance(e, FileNotFoundError):
        return f"no such bucket, container or object ({text}); check the URL"
    if names & _NETWORK_ERRORS or isinstance(e, (ConnectionError, TimeoutError, socket.gaierror)):
        return (f"cannot reach the storage service ({text}); check the network and the endpoint "
                f"(storage option endpoint_url)")
    return text


@contextlib.contextmanager
def remote_errors(url: str):
    """Turn what a filesystem call raises into one DataError line naming ``url`` (a refused
    storage option: a ConfigError)."""
    try:
        yield
    except FeatmlpError:
        raise
    except TypeError as e:
        if "unexpected keyword" in str(e):
            raise _bad_option(url, e) from None
        raise
    except Exception as e:
        raise DataError(f"{url}: {explain(e)}") from None


def version_of(info: dict) -> bytes:
    """The listing of an object that changes when it is rewritten: size and ETag, else mtime."""
    version = next((info[k] for k in _VERSION_KEYS if info.get(k) is not None), None)
    return repr((info.get("size"), str(version))).encode()


class FsFiles:
    """The files of one fsspec filesystem, fetched together (``group`` of :class:`FsBlob`)."""

    def __init__(self, fs):
        self.fs = fs

    def read_many(self, blobs) -> list[bytes]:
        # cat_ranges, not cat: it keeps the order and does not expand glob characters, which
        # object names may hold (img[1].png); s3fs and gcsfs run the requests concurrently.
        n = len(blobs)
        results = self.fs.cat_ranges([b.path for b in blobs], [None] * n, [None] * n, on_error="return")
        for blob, data in zip(blobs, results):
            if isinstance(data, FileNotFoundError):
                raise DataError(f"cannot read image {blob.where}: no such object (was it moved or deleted "
                                f"after listing?)")
            if isinstance(data, BaseException):
                raise DataError(f"cannot read image {blob.where}: {explain(data)}")
        return results


class FsBlob:
    """A file on an fsspec filesystem, made when a chunk is read (:class:`FsFolder`)."""

    portable = True  # filesystems pickle with their storage options

    def __init__(self, files: FsFiles, path: str, where: str, size: int):
        self.group, self.path, self.where, self.size = files, path, where, size

    def read(self) -> bytes:
        return self.group.read_many([self])[0]


class FsFolder(Container):
    """The files under ``root`` on an fsspec filesystem, each at its name (valid text) under it."""

    def __init__(self, files: FsFiles, root: str, where: str):
        self.files, self.root, self.where = files, root, where

    def blob(self, rel, offset, size):
        return FsBlob(self.files, f"{self.root}/{rel}", self.where + rel, size)


class FsStore(Store):
    """An uncompressed tar on an fsspec filesystem, read by byte range."""

    def __init__(self, fs, path: str, shown: str):
        self.fs, self.path, self.shown = fs, path, shown

    def read_spans(self, spans):
        if len(spans) == 1:
            (start, end), = spans
            results = [self._try(lambda: self.fs.cat_file(self.path, start=start, end=end))]
        else:
            results = self.fs.cat_ranges([self.path] * len(spans), [s for s, _ in spans],
                                         [e for _, e in spans], on_error="return")
        for data in results:
            if isinstance(data, BaseException):
                raise DataError(f"cannot read {self.shown}: {explain(data)}")
        return results

    @staticmethod
    def _try(read):
        try:
            return read()
        except Exception as e:
            return e


def _other(fs, name: str, info: dict):
    """``(info, None)`` of what a listed "other" (a symlink on file://) leads to when it is a regular
    file, else ``(info, why it is not read)``: a FIFO, a device, a socket, a bad symlink."""

    try:
        followed = fs.info(name)
    except (OSError, ValueError):
        followed = None
    if followed is not None and followed.get("type") == "file":
        return followed, None
    local = getattr(fs, "protocol", None) in ("file", ("file", "local"))
    reason = not_regular(name) if local else None
    return info, reason or "not a regular file (a FIFO, a device, a socket or a broken symlink)"


def list_prefix(fs, path: str, url: str, *, max_file_bytes: int):
    """Every non-hidden file under ``path``, sorted by name: ``(files, digests, tars)``.

    ``files`` is a Manifest keyed by the files' relative paths, ``digests`` the SHA-256 of each
    file's listing (:func:`version_of`). ``tars`` is the listing of each file while they are all
    ``.tar`` files (tar shards, listed next by :func:`list_remote_tar`), else None. The
    filesystem's listing (``fs.find``, about a kilobyte an object: the peak of listing a prefix)
    is released entry by entry as it is packed, and dropped from the filesystem's cache.
    """
    root = path.rstrip("/")
    with remote_errors(url):
        entries = fs.find(root, detail=True)
    _forget_listings(fs, root)
    is_file = root in entries
    builder, digests, tars = ManifestBuilder(), bytearray(), []
    text = TextNames(url)
    where = f"{url.rstrip('/')}/"
    group = FsFiles(fs)
    here = builder.add(FsFolder(group, root, where))
    special = []  # file:// FIFOs, devices, sockets: named (or skipped), never opened
    for name in sorted(entries):
        info = entries.pop(name)
        if info.get("type", "file") == "other" and name.startswith(root + "/"):  # file:// lists symlinks so
            info, reason = _other(fs, name, info)
            if reason is not None:
                raw = split_name(name[len(root) + 1:])
                if raw and not is_junk(parts := text(raw)):
                    special.append(("/".join(parts), reason, False))
                continue
        if info.get("type", "file") != "file" or not name.startswith(root + "/"):
            continue
        raw = split_name(name[len(root) + 1:])
        if not raw:
            continue
        parts = text(raw)
        if is_junk(parts):
            continue
        key = "/".join(parts)
        size = int(info.get("size") or 0)
        if size > max_file_bytes:
            raise too_large(where + key, size, max_file_bytes)
        listed = version_of(info)
        if name == f"{root}/{key}":
            builder.append(here, key, -1, size)
        else:  # a name that is not valid text, or "a//b", "./a": the text does not lead to the object
            builder.append_blob(key, FsBlob(group, name, where + key, size))
        digests += hashlib.sha256(listed).digest()
        if tars is not None and key.lower().endswith(".tar"):
            tars.append(listed)
        else:
            tars = None
    if not len(builder):
        if is_file:
            raise DataError(f"{url} is a file, not a folder, a .tar/.tar.gz/.zip archive or tar shards")
        raise DataError(f"{url}: no files there (an empty or missing prefix); check the URL")
    files = builder.build()
    files.special = tuple(special)
    return files, np.frombuffer(digests, np.uint8).reshape(-1, 32), tars


def _forget_listings(fs, root: str) -> None:
    """Drop the listings under ``root`` that ``fs.find`` left in the filesystem's cache.

    s3fs (and gcsfs) keep every object a find listed in ``fs.dircache``, about a kilobyte each,
    and fsspec keeps the filesystem instance for the next URL: without this, a million images
    would stay listed there after the Manifest has packed them (measured: 1,150 bytes an image
    on moto's S3). A later listing of the prefix asks the store again, as a new process would.
    """
    cache = getattr(fs, "dircache", None)
    if cache is not None:
        for key in [k for k in cache if k == root or k.startswith(root + "/")]:
            cache.pop(key, None)


def info_of(fs, path: str, url: str) -> dict:
    """The listing of one object (its size, ETag ...); DataError when missing or unreachable."""
    with remote_errors(url):
        info = fs.info(path)
    if info.get("type", "file") != "file":
        raise DataError(f"{url} is a folder, not an archive; drop the archive suffix from the URL or "
                        f"point it at the archive itself")
    return info


def list_remote_tar(fs, path: str, info: dict, shown: str, *, name: str = "", max_file_bytes: int,
                    listed: bytes = b""):
    """An uncompressed tar on ``fs``: ``(container, members)``, its members listed from its headers
    as they are iterated (what :func:`~featmlp.data._archive.list_tar` yields).

    Its images are named ``<name>:<member>`` when ``name`` is given (a shard), else ``<member>``;
    messages name it ``shown``.
    """
    container = TarMembers(FsStore(fs, path, shown), f"{shown}:", f"{name}:" if name else "")
    return container, _remote_members(fs, path, info, shown, max_file_bytes, listed)


def _remote_members(fs, path, info, shown, max_file_bytes, listed):
    with remote_errors(shown), fs.open(path, "rb", block_size=_LIST_BLOCK, cache_type="readahead") as f:
        yield from list_tar(f, int(info["size"]), shown, TextNames(shown), is_junk=is_junk,
                            max_file_bytes=max_file_bytes, listed=listed + version_of(info))


def pack_tar(container, members):
    """``(files, digests)``: the members of one tar as a Manifest and the SHA-256 of their listing."""
    builder, digests = ManifestBuilder(), bytearray()
    c = builder.add(container)
    for parts, offset, size, digest in members:
        builder.append(c, "/".join(parts), offset, size)
        digests += digest
    return builder.build(), np.frombuffer(digests, np.uint8).reshape(-1, 32)


@contextlib.contextmanager
def downloaded(fs, path: str, url: str):
    """A local copy of the archive at ``path``, under its own name, deleted on exit.

    Compressed tars and zips cannot be read by byte range: read once here, their members
    are then held as the local archive code holds them (a zip open, a tar's members spooled).
    """
    tmp = Path(tempfile.mkdtemp(prefix="featmlp-download-"))
    try:
        local = tmp / posixpath.basename(path.rstrip("/"))
        with remote_errors(url):
            fs.get_file(path, str(local))
        yield local
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # an open zip keeps its handle on POSIX


def is_pattern(path: str) -> bool:
    return bool(_PATTERN.search(path))


def expand_braces(text: str) -> list[str]:
    """``shard-{000..002}.tar`` -> three names; ``{a,b}`` lists; nested and repeated braces too.

    Examples
    --------
    >>> expand_braces("s-{08..10}.tar")
    ['s-08.tar', 's-09.tar', 's-10.tar']
    """
    m = re.search(r"\{([^{}]*)\}", text)
    if not m:
        return [text]
    body = m.group(1)
    r = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if r:
        a, b = r.groups()
        options = [str(i).zfill(len(a)) for i in range(int(a), int(b) + 1)]
    else:
        options = body.split(",")
    return [x for o in options for x in expand_braces(text[:m.start()] + o + text[m.end():])]


def match_shards(fs, path: str, url: str) -> list[tuple[str, str, dict]]:
    """``(name, path, info)`` of the tars a pattern names (braces, then globs), in order of name."""
    base = path[:_PATTERN.search(path).start()].rsplit("/", 1)[0]
    found: dict[str, dict] = {}
    with remote_errors(url):
        for p in expand_braces(path):
            if _PATTERN.search(p):
                found.update(fs.glob(p, detail=True))
            else:
                found[p] = fs.info(p)
    shards = [(p[len(base):].lstrip("/"), p, info) for p, info in sorted(found.items())
              if info.get("type", "file") == "file"]
    if not shards:
        raise DataError(f"{url} matches no files; check the pattern")
    bad = [name for name, _, _ in shards if not name.lower().endswith(".tar")]
    if bad:
        raise DataError(f"{url} matches {bad[0]!r}, which is not an uncompressed .tar; a pattern names tar shards")
    return shards

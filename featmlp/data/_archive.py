"""Files of folders and archives as a manifest: names, where their bytes are, their sizes.

Nothing is unpacked to disk and nothing is read whole into memory. A member of an
uncompressed .tar or of a .zip is read by offset when it is needed; the members of a
compressed tar (a gzip/bzip2/xz stream cannot be read at an offset) are copied once into
a spooled temporary file, in memory up to ``SPOOL_BYTES`` and on disk beyond, deleted when
the dataset is dropped (or by the kernel when the process dies).

Members of one tar are read together (:meth:`Store.read_many`): the byte ranges of a chunk
are merged into as few reads of the container as their gaps allow, so a chunk of
consecutive members is one sequential read (one request on object storage).

Every tar is read to its end and verified: ``tarfile`` takes a damaged header after the
first one for the end of the archive and returns what came before it, so the stream after
the last member must be zero padding, and a compressed stream is read to its end so that
gzip checks its CRC and length (xz and bzip2 their own checksums).
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import stat
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path

from ..errors import DataError
from ._files import file_kind, too_large
from ._manifest import Container, Manifest, ManifestBuilder
from ._names import TAR_SUFFIXES, split_name

# Compressed tars are copied into memory up to this, then into an unlinked temporary file.
SPOOL_BYTES = 256 << 20
_COPY_BLOCK = 1 << 20
# Members of one tar closer than this are read in one range, gap included: a second request
# costs more than reading a few hundred KiB more (a tar puts a 512-byte header between members).
MERGE_GAP = 1 << 20
_DAMAGED = "the archive is truncated or corrupt; download or copy it again"


def _not_portable(what: str):
    raise TypeError(f"{what} cannot be sent to another process; call ImageArray.portable() on the "
                    f"images first (it reads such members into memory)")


class Region:
    """``size`` bytes at ``offset`` of a container (a tar) shared by many members.

    ``group`` is the store: :func:`featmlp.data._image_array.read_blobs` hands all the regions of
    one store to its ``read_many``. Made when a chunk is read (:class:`TarMembers`).
    """

    def __init__(self, store, offset: int, size: int, where: str):
        self.store, self.offset, self.size, self.where = store, offset, size, where

    @property
    def group(self):
        return self.store

    @property
    def portable(self) -> bool:
        return self.store.portable

    def read(self) -> bytes:
        return self.store.read_many([self])[0]


class Store:
    """A container of members read by byte range; subclasses give ``read_spans``."""

    portable = True  # whether it can be pickled to another process and read there

    def read_spans(self, spans: list[tuple[int, int]]) -> list[bytes]:
        """The bytes of each ``(start, end)`` range; fewer at the end of the container."""
        raise NotImplementedError

    def read_many(self, regions: list[Region]) -> list[bytes]:
        """The bytes of each region (of this store), in order, from as few ranges as possible."""
        order = sorted(range(len(regions)), key=lambda j: regions[j].offset)
        spans: list[list] = []  # [start, end, indices]
        for j in order:
            r = regions[j]
            if spans and r.offset - spans[-1][1] <= MERGE_GAP:
                spans[-1][1] = max(spans[-1][1], r.offset + r.size)
                spans[-1][2].append(j)
            else:
                spans.append([r.offset, r.offset + r.size, [j]])
        try:
            datas = self.read_spans([(start, end) for start, end, _ in spans])
        except OSError as e:
            first = regions[spans[0][2][0]]
            raise DataError(f"cannot read image {first.where}: {e.strerror or e} (was the archive moved "
                            f"or deleted after listing?)") from None
        out: list = [None] * len(regions)
        for (start, _, indices), data in zip(spans, datas):
            for j in indices:
                r = regions[j]
                piece = data[r.offset - start:r.offset - start + r.size]
                if len(piece) != r.size:
                    raise DataError(f"{r.where}: only {len(piece)} of its {r.size} bytes are there; "
                                    f"{_DAMAGED}")
                out[j] = bytes(piece)
        return out


class FileStore(Store):
    """Reads by offset from an uncompressed archive on disk (opened per read: no open handles kept)."""

    def __init__(self, path: Path):
        self.path = path

    def read_spans(self, spans):
        with open(self.path, "rb") as f:
            out = []
            for start, end in spans:
                f.seek(start)
                out.append(f.read(end - start))
            return out


class _SpoolStore(Store):
    """The members of a compressed tar, copied once; deleted when no member refers to it any more."""

    portable = False  # a temporary file of this process

    def __init__(self):
        self.file = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, prefix="featmlp-")
        self.size = 0

    def append(self, src, size: int) -> int:
        offset = self.size
        self.file.seek(offset)
        left = size
        while left:
            block = src.read(min(left, _COPY_BLOCK))
            if not block:
                break  # the caller checks the count
            self.file.write(block)
            left -= len(block)
        self.size += size - left
        return offset if not left else -1

    def read_spans(self, spans):
        out = []
        for start, end in spans:
            self.file.seek(start)
            out.append(self.file.read(end - start))
        return out

    def __reduce__(self):
        _not_portable("a member of a compressed tar (held in a temporary file of this process)")

    def __del__(self):
        self.file.close()


class _ZipMember:
    portable = False  # holds the open ZipFile

    def __init__(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str):
        self.zf, self.info, self.where = zf, info, where

    def read(self) -> bytes:
        try:
            return self.zf.read(self.info)  # checks the CRC once the member is read
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
            raise DataError(f"{self.where} is damaged ({type(e).__name__}: {e}): {_DAMAGED}") from None

    def __reduce__(self):
        _not_portable("a zip member (it holds the archive open in this process)")


class TarMembers(Container):
    """The members of one tar, read from its ``store``; errors name them ``where + path in the tar``."""

    def __init__(self, store: Store, where: str, name_prefix: str = ""):
        self.store, self.where, self.name_prefix = store, where, name_prefix

    @property
    def portable(self) -> bool:
        return self.store.portable

    def blob(self, rel, offset, size):
        return Region(self.store, offset, size, self.where + rel)


class ZipMembers(Container):
    """The members of an open zip (a row's offset indexes ``zf.infolist()``)."""

    portable = False  # holds the open ZipFile

    def __init__(self, zf: zipfile.ZipFile, where: str):
        self.zf, self.where = zf, where

    def blob(self, rel, offset, size):
        return _ZipMember(self.zf, self.zf.filelist[offset], self.where + rel)

    def __reduce__(self):
        _not_portable("a zip member (it holds the archive open in this process)")


class _Tracking:
    """A read-only stream that remembers its position and its last read.

    tarfile ends on the first block that is not a valid header after consuming it; the
    check of the end needs that block, and a compressed stream cannot seek back cheaply.
    """

    def __init__(self, f):
        self.f, self.pos = f, 0
        self.last_pos, self.last = 0, b""

    def read(self, n=-1):
        data = self.f.read(n)
        self.last_pos, self.last = self.pos, data
        self.pos += len(data)
        return data

    def seek(self, offset, whence=0):
        if whence != 0:
            raise OSError("only absolute seeks")
        if offset < self.pos:  # never needed by tarfile reading forwards; costly on a compressed stream
            self.f.seek(offset)
            self.pos = offset
        while self.pos < offset:
            if not self.read(min(offset - self.pos, _COPY_BLOCK)):
                break
        return self.pos

    def tell(self):
        return self.pos

    def seekable(self):
        return True

    def readable(self):
        return True


_MAGIC = ((b"\x1f\x8b", lambda f: gzip.GzipFile(fileobj=f, mode="rb"), "gzip"),
          (b"BZh", lambda f: bz2.BZ2File(f, "rb"), "bzip2"),
          (b"\xfd7zXZ\x00", lambda f: lzma.LZMAFile(f, "rb"), "xz"))


def _decompressor(raw):
    head = raw.read(6)
    raw.seek(0)
    for magic, opener, name in _MAGIC:
        if head.startswith(magic):
            return opener(raw), name
    return None, None


def read_archive(path: Path, text, *, is_junk, max_file_bytes: int, shown: str | None = None) -> Manifest:
    """Every regular, non-hidden file of a zip or tar archive, keyed by its path in the archive.

    ``text(raw parts)`` makes the parts valid text; ``is_junk(parts)`` says what to leave out.
    The archive is verified to its end (see the module docstring); a member larger than
    ``max_file_bytes`` is refused on its header. Nothing is written outside a temporary file,
    so member names cannot escape anywhere. Messages name the archive ``shown`` (a URL it
    was downloaded from), default ``path``.
    """

    lower = path.name.lower()
    shown = shown or str(path)
    if lower.endswith(".zip") or (not lower.endswith(TAR_SUFFIXES) and zipfile.is_zipfile(path)):
        return _read_zip(path, shown, text, is_junk, max_file_bytes)
    return _read_tar(path, shown, text, is_junk, max_file_bytes)


def _read_zip(path, shown, text, is_junk, max_file_bytes):

    try:
        zf = zipfile.ZipFile(path)
        infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read archive {shown}: {type(e).__name__}: {e}") from e
    files = ManifestBuilder()
    members = files.add(ZipMembers(zf, f"{shown}:"))
    special = []
    for k, info in enumerate(infos):
        raw = split_name(info.filename)
        if info.is_dir() or not raw:
            continue
        parts = text(raw)
        if is_junk(parts):
            continue
        key = "/".join(parts)
        mode = info.external_attr >> 16 if info.create_system == 3 else 0  # Unix file mode, made on Unix
        if mode and stat.S_IFMT(mode) and not stat.S_ISREG(mode):  # a symlink (its target as content) ...
            what = "a symlink" if stat.S_ISLNK(mode) else file_kind(mode)
            special.append((key, f"{what} stored in the zip, not a regular file (zip -y keeps symlinks: "
                                 f"make the archive without -y)", False))
            continue
        if info.file_size > max_file_bytes:
            raise too_large(f"{shown}:{key}", info.file_size, max_file_bytes)
        files.append(members, key, k, info.file_size)
    listed = files.build()
    listed.special = tuple(special)
    return listed


def _read_tar(path, shown, text, is_junk, max_file_bytes):
    raw = open(path, "rb")
    files = ManifestBuilder()
    try:
        inner, kind = _decompressor(raw)
        stream = _Tracking(inner if inner is not None else raw)
        store = _SpoolStore() if inner is not None else FileStore(path)
        members = files.add(TarMembers(store, f"{shown}:"))
        others = []  # links, devices, FIFOs: nothing is extracted, but an image that is one is not read
        try:
            tf = tarfile.open(fileobj=stream, mode="r:")
            for member, parts, key in _files_of(tf, text, shown, max_file_bytes, others=others):
                if not parts or is_junk(parts):
                    continue  # tarfile skips its data when it reads the next header
                if isinstance(store, FileStore) and not member.issparse():
                    offset = member.offset_data
                else:
                    offset = store.append(tf.extractfile(member), member.size)
                    if offset < 0:
                        raise EOFError(f"{shown}:{key} ends early")
                files.append(members, key, offset, member.size)
            _check_end(shown, stream, tf.offset, kind)
            special = _tar_links(files, others, text, is_junk)
        except DataError:
            raise
        except tarfile.ReadError as e:
            if stream.pos <= tarfile.BLOCKSIZE and not len(files):
                raise DataError(f"cannot read archive {shown}: {type(e).__name__}: {e}") from None
            raise _damaged(shown, stream.pos, e, kind) from None
        except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as e:
            raise _damaged(shown, stream.pos, e, kind) from None
    finally:
        raw.close()
    listed = files.build()
    listed.special = tuple(special)
    return listed


def _tar_links(files: ManifestBuilder, others, text, is_junk) -> list:
    """Append each hard link to a regular member listed before it as that member (what ``tar -x``
    makes of it: the same file); the special members (``(key, reason, False)``) of the others:
    symlinks (not followed), hard links to nothing listed, devices, FIFOs."""

    special = []
    for member, parts, key in others:
        if not parts or is_junk(parts):
            continue
        if member.islnk():
            target = split_name(member.linkname)
            row = files.find("/".join(text(target))) if target else -1
            if row >= 0:
                container, offset, size = files.row(row)
                files.append(container, key, offset, size)
                continue
            reason = (f"a hard link to {member.linkname}, which is not a regular file listed before it in "
                      f"the archive")
        elif member.issym():
            reason = (f"a symlink to {member.linkname}, not a regular file (symlinks in an archive are not "
                      f"followed: make it with tar --dereference)")
        else:
            what = ("a FIFO (named pipe)" if member.isfifo() else "a character device" if member.ischr()
                    else "a block device" if member.isblk() else "not a regular file")
            reason = f"{what} member, not a regular file"
        special.append((key, reason, False))
    return special


def _members(tf: tarfile.TarFile):
    """The members of ``tf`` in order, without the list of them all that iterating a TarFile keeps."""
    while True:
        member = tf.next()
        if member is None:
            return
        tf.members.clear()  # tarfile appends each member: a whole archive's TarInfos otherwise
        yield member



def _files_of(tf, text, shown: str, max_file_bytes: int, *, others: list | None = None):
    """``(member, name parts or None, name)`` of each regular file of an open tar, its size checked
    first; those of the members other than files and directories are appended to ``others``."""

    for member in _members(tf):
        if not member.isfile():
            if others is not None and not member.isdir():
                name = split_name(member.name)
                parts = text(name) if name else None
                others.append((member, parts, "/".join(parts) if parts else member.name))
            continue
        name = split_name(member.name)
        parts = text(name) if name else None
        key = "/".join(parts) if parts else member.name
        if member.size > max_file_bytes:
            raise too_large(f"{shown}:{key}", member.size, max_file_bytes)
        yield member, parts, key

def _stream_name(kind) -> str:
    return f"of the uncompressed {kind} stream" if kind else "of the archive"


def _damaged(path, pos, error, kind) -> DataError:
    return DataError(f"{path} is damaged at byte {pos:,} {_stream_name(kind)} ({type(error).__name__}: {error}): {_DAMAGED}")


def _check_end(path, stream: _Tracking, end: int, kind) -> None:
    """After the last member, only zero blocks (end-of-archive marker and padding) may follow."""
    if stream.last_pos == end:
        first = stream.last  # the block tarfile read and took for the end
    else:
        stream.seek(end)
        first = stream.read(tarfile.BLOCKSIZE)
    block, pos = first, end
    while block:
        if block.count(0) != len(block):
            bad = pos + next(i for i, b in enumerate(block) if b)
            raise DataError(f"{path} is damaged at byte {bad:,} {_stream_name(kind)} (a member header "
                            f"was expected at byte {end:,}, or only zero padding): {_DAMAGED}")
        pos += len(block)
        block = stream.read(_COPY_BLOCK)  # to the end: gzip checks its CRC and length there


def list_tar(f, size: int, shown: str, text, *, is_junk, max_file_bytes: int, listed: bytes = b""):
    """The regular files of an uncompressed tar from its headers alone: ``(name parts, offset, size, digest)``.

    A generator: one member at a time, so a lister packs them as they come. ``f`` is a seekable
    binary file of the tar (local, or fsspec's over object storage) of ``size`` bytes: tarfile
    seeks from header to header, so the members' bytes are not read (through a read-ahead
    cache, small members come along with their headers: one request per block instead of one
    per member). A member that ends past ``size`` and anything but zero padding after the last
    header are reported as damage, as :func:`read_archive` does. ``digest`` is the SHA-256 of
    the member's listing: the container's ``listed`` and the member's header fields.
    """
    last = None  # the last member listed, named when what follows it is damaged
    try:
        tf = tarfile.open(fileobj=f, mode="r:")
        for member, parts, key in _files_of(tf, text, shown, max_file_bytes):
            where = f"{shown}:{key}"
            if member.offset_data + member.size > size:
                raise DataError(f"{where} ends at byte {member.offset_data + member.size:,}, past the end "
                                f"of the archive ({size:,} bytes): {_DAMAGED}")
            if member.issparse():
                raise DataError(f"{where} is a sparse tar member, which cannot be read by byte range; "
                                f"rewrite the archive without --sparse")
            if not parts or is_junk(parts):
                continue
            key = listed + repr((member.name, member.size, member.mtime, member.offset_data)).encode()
            last = where
            yield parts, member.offset_data, member.size, hashlib.sha256(key).digest()
        end = tf.offset
    except DataError:
        raise
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
        if last is None:
            raise DataError(f"cannot read archive {shown} as an uncompressed tar: {type(e).__name__}: "
                            f"{e}") from None
        raise DataError(f"{shown} is damaged after {last} ({type(e).__name__}: {e}): {_DAMAGED}") from None
    _check_tail(f, shown, end, size)


def _check_tail(f, shown: str, end: int, size: int) -> None:
    """Zero padding only from the end marker to the end (tarfile stops at a damaged header)."""
    f.seek(end)
    pos = end
    while pos < size:
        block = f.read(min(size - pos, _COPY_BLOCK))
        if not block:
            break
        if block.count(0) != len(block):
            bad = pos + next(i for i, b in enumerate(block) if b)
            raise DataError(f"{shown} is damaged at byte {bad:,} of the archive (a member header was "
                            f"expected at byte {end:,}, or only zero padding): {_DAMAGED}")
        pos += len(block)

"""The listing of an :class:`~featmlp.data.ImageArray`'s files as columns: bytes per image, not objects.

A dataset listed as one Python object per file (a ``(name, blob)`` tuple, the blob, its strings
and ints) holds about a kilobyte per image before a pixel is read: 1.2 GB to list ImageNet.
A :class:`Manifest` holds the same listing as a few arrays, about 30 bytes per image plus the
file's key:

* ``keys``: each file's key (what its name does not share with the others of its container)
  packed into one UTF-8 buffer, ``bounds`` (int64) where each starts and ends;
* ``container`` (int32): which of a short list of :class:`Container` holds the file (a
  folder, a tar's store, a filesystem), and that file's ``offset`` and ``size`` there (int64).

The blob that reads a file (``read()``, and ``group``, ``size`` where the container has them,
see :func:`featmlp.data._image_array.read_blobs`) is made from these columns when the chunk it
belongs to is read, so reading, error messages and pickled chunks are as with the objects.
Listers append to a :class:`ManifestBuilder` (growable arrays) as they go, so listing never
holds more Python objects than one directory, tar or batch of a filesystem's listing.
"""

from __future__ import annotations

import bisect
from array import array

import numpy as np

# Rows handled at a time where a column is turned into Python ints: what is held beside the
# columns stays bounded, not one object per image.
_GATHER_ROWS = 4096


class Container:
    """Files that share where they are (a folder, a tar, a filesystem): makes one file's blob on demand.

    An image's name is ``name_prefix + key``; its path inside the container is
    ``rel_prefix + key`` (``rel_prefix`` is a wrapper folder the dataset's names leave out).
    """

    portable = True  # whether its blobs can be pickled to another process and read there
    name_prefix = ""
    rel_prefix = ""

    def blob(self, rel: str, offset: int, size: int):
        raise NotImplementedError

    def renamed(self, *, name_prefix: str | None = None, rel_prefix: str | None = None) -> "Container":
        """A copy with other prefixes (the same store, filesystem or archive underneath)."""
        other = object.__new__(type(self))  # not copy.copy: it pickles, which some refuse (an open zip)
        other.__dict__.update(self.__dict__)
        if name_prefix is not None:
            other.name_prefix = name_prefix
        if rel_prefix is not None:
            other.rel_prefix = rel_prefix
        return other


class Blobs(Container):
    """Files that keep an object each (the row's ``offset`` indexes ``blobs``): members of a zip, bytes
    already read (:meth:`ImageArray.portable`), a file whose name on disk is not its name as text."""

    def __init__(self, blobs=()):
        self.blobs = list(blobs)

    def blob(self, rel, offset, size):
        return self.blobs[offset]

    def portable_at(self, offsets) -> np.ndarray:
        return np.array([getattr(self.blobs[i], "portable", False) for i in offsets], bool)


class Manifest:
    """Names and locations of files, as columns (see the module docstring); immutable."""

    def __init__(self, keys, bounds, container, offset, size, containers):
        self.keys = keys  # bytes or bytearray (never changed once built: a copy would cost as much again)
        self.bounds = bounds  # int64 (n + 1,): key i is keys[bounds[i]:bounds[i + 1]]
        self.container, self.offset, self.size = container, offset, size
        self.containers = tuple(containers)

    def __len__(self) -> int:
        return len(self.container)

    @property
    def nbytes(self) -> int:
        """Bytes held by the columns (the containers are few and small)."""
        return len(self.keys) + sum(a.nbytes for a in (self.bounds, self.container, self.offset, self.size))

    def key(self, i: int) -> str:
        return self.keys[self.bounds[i]:self.bounds[i + 1]].decode("utf-8")

    def key_bytes(self, i: int) -> bytes:
        return self.keys[self.bounds[i]:self.bounds[i + 1]]

    def iter_keys(self, rows=None, *, text: bool = True):
        """The keys of ``rows`` (default all), in order, as text or (``text=False``) UTF-8 bytes."""
        keys, bounds = self.keys, self.bounds
        for a in range(0, len(self) if rows is None else len(rows), _GATHER_ROWS):
            if rows is None:  # a block of bounds at a time: never a list of them all
                b = bounds[a:a + _GATHER_ROWS + 1].tolist()
                spans = zip(b, b[1:])
            else:
                block = rows[a:a + _GATHER_ROWS]
                spans = zip(bounds[block].tolist(), bounds[block + 1].tolist())
            for start, end in spans:
                yield keys[start:end].decode("utf-8") if text else keys[start:end]

    def name(self, i: int) -> str:
        """The image's name: its container's ``name_prefix`` and its key."""
        return self.containers[self.container[i]].name_prefix + self.key(i)

    def iter_names(self):
        prefixes = [c.name_prefix for c in self.containers]
        for c, key in zip(self.container.tolist(), self.iter_keys()):
            yield prefixes[c] + key

    def blob(self, i: int):
        """The blob that reads file ``i``, made now."""
        c = self.containers[self.container[i]]
        return c.blob(c.rel_prefix + self.key(i), int(self.offset[i]), int(self.size[i]))

    def portable_rows(self) -> np.ndarray:
        """Whether each file's blob can be read in another process."""
        out = np.array([c.portable for c in self.containers], bool)[self.container]
        for k, c in enumerate(self.containers):
            if isinstance(c, Blobs):
                rows = np.flatnonzero(self.container == k)
                out[rows] = c.portable_at(self.offset[rows])
        return out

    def take(self, indices, *, drop: str = "") -> "Manifest":
        """The files at ``indices``, in that order, holding only their own keys and containers.

        ``drop`` is a prefix every key of those files starts with (a wrapper folder ``"cifar/"``):
        it leaves their keys, so their names, and moves to their containers' ``rel_prefix``.
        """
        idx = np.asarray(indices, np.intp).reshape(-1)
        n, cut = len(idx), len(drop.encode("utf-8"))
        run = n and cut == 0 and idx[-1] - idx[0] == n - 1 and (n == 1 or (np.diff(idx) == 1).all())
        if run and n == len(self):
            return self  # all of them, in order
        starts, stops = self.bounds[idx] + cut, self.bounds[idx + 1]
        bounds = np.zeros(n + 1, np.int64)
        np.cumsum(stops - starts, out=bounds[1:])
        if run:  # a run of files (a chunk): one slice
            keys = self.keys[self.bounds[idx[0]]:self.bounds[idx[-1] + 1]]
        else:
            keys = _gather(self.keys, starts, stops, int(bounds[-1]))
        del starts, stops
        used = np.flatnonzero(np.bincount(self.container[idx], minlength=len(self.containers)))
        remap = np.zeros(len(self.containers), np.int32)
        remap[used] = np.arange(len(used))
        inverse = remap[self.container[idx]]  # the containers these files use, numbered in order
        offset = self.offset[idx]
        containers = []
        for k, c in enumerate(self.containers[i] for i in used.tolist()):
            if isinstance(c, Blobs):  # only the blobs of these files travel with them
                rows = np.flatnonzero(inverse == k)
                kept, offset[rows] = np.unique(offset[rows], return_inverse=True)
                c = Blobs(c.blobs[i] for i in kept.tolist())
            elif drop:
                c = c.renamed(rel_prefix=c.rel_prefix + drop)
            containers.append(c)
        return Manifest(keys, bounds, inverse, offset, self.size[idx], containers)


def _gather(keys, starts: np.ndarray, stops: np.ndarray, size: int) -> bytearray:
    """The byte ranges ``keys[starts[i]:stops[i]]`` concatenated (``size`` bytes in all)."""
    source, out, pos = memoryview(keys), bytearray(size), 0
    for a in range(0, len(starts), _GATHER_ROWS):
        for start, stop in zip(starts[a:a + _GATHER_ROWS].tolist(), stops[a:a + _GATHER_ROWS].tolist()):
            out[pos:pos + stop - start] = source[start:stop]
            pos += stop - start
    return out


class ManifestBuilder:
    """Appends files to a Manifest's columns as a lister finds them (growable arrays, no object per file)."""

    def __init__(self):
        self._keys = bytearray()
        self._bounds = array("q", [0])
        self._container, self._offset, self._size = array("i"), array("q"), array("q")
        self._containers: list = []
        self._ids: dict[int, int] = {}  # id(container) -> its index
        self._blobs: Blobs | None = None

    def __len__(self) -> int:
        return len(self._container)

    def add(self, container: Container) -> int:
        """The index of ``container`` (added once, however often it is passed)."""
        k = self._ids.get(id(container))
        if k is None:
            k = self._ids[id(container)] = len(self._containers)
            self._containers.append(container)
        return k

    def append(self, container: int, key: str, offset: int = -1, size: int = -1) -> None:
        self._keys += key.encode("utf-8")
        self._bounds.append(len(self._keys))
        self._container.append(container)
        self._offset.append(offset)
        self._size.append(size)

    def find(self, key: str) -> int:
        """The row of the file appended with ``key`` (the first), or -1: a search of the keys, for the
        rare file that names another (a hard link in a tar)."""
        needle, start = key.encode("utf-8"), 0
        while (i := self._keys.find(needle, start)) >= 0:
            row = bisect.bisect_left(self._bounds, i)
            if row + 1 < len(self._bounds) and self._bounds[row] == i and self._bounds[row + 1] == i + len(needle):
                return row
            start = i + 1
        return -1

    def row(self, i: int) -> tuple[int, int, int]:
        """``(container, offset, size)`` of row ``i``."""
        return self._container[i], self._offset[i], self._size[i]

    def append_blob(self, key: str, blob) -> None:
        """A file kept as its own blob object (see :class:`Blobs`); its key is its whole name."""
        if self._blobs is None:
            self._blobs = Blobs()
        size = getattr(blob, "size", None)
        self.append(self.add(self._blobs), key, len(self._blobs.blobs), -1 if size is None else size)
        self._blobs.blobs.append(blob)

    def append_from(self, files: Manifest, i: int) -> None:
        """File ``i`` of ``files`` as it is there."""
        c = files.containers[files.container[i]]
        if isinstance(c, Blobs):
            self.append_blob(files.name(i), files.blob(i))
        else:
            self.append(self.add(c), files.key(i), int(files.offset[i]), int(files.size[i]))

    def build(self) -> Manifest:
        def column(a, dtype):  # a view of the array's buffer: no second copy while it is made
            return np.frombuffer(a, dtype) if len(a) else np.zeros(0, dtype)

        return Manifest(self._keys, column(self._bounds, np.int64), column(self._container, np.int32),
                        column(self._offset, np.int64), column(self._size, np.int64), self._containers)


def from_items(items) -> Manifest:
    """A Manifest of ``(name, blob)`` pairs, each blob kept as it is."""
    builder = ManifestBuilder()
    for name, blob in items:
        builder.append_blob(name, blob)
    return builder.build()

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
see :func:`featmlp.data._lazy.read_blobs`) is made from these columns when the chunk it
belongs to is read, so reading, error messages and pickled chunks are as with the objects.
Listers append to a :class:`ManifestBuilder` (growable arrays) as they go, so listing never
holds more Python objects than one directory, tar or batch of a filesystem's listing.
"""

from __future__ import annotations

from array import array

import numpy as np

# Rows of a key buffer gathered at a time by take(): bounds its int64 index array.
_GATHER_ROWS = 1 << 16


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

    def __init__(self, keys: bytes, bounds, container, offset, size, containers):
        self.keys = keys
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

    def iter_keys(self):
        keys, b = self.keys, self.bounds.tolist()
        for i in range(len(self)):
            yield keys[b[i]:b[i + 1]].decode("utf-8")

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
        starts = self.bounds[idx] + cut
        lengths = self.bounds[idx + 1] - starts
        bounds = np.zeros(n + 1, np.int64)
        np.cumsum(lengths, out=bounds[1:])
        if n and cut == 0 and idx[-1] - idx[0] == n - 1 and (n == 1 or (np.diff(idx) == 1).all()):
            keys = self.keys[self.bounds[idx[0]]:self.bounds[idx[-1] + 1]]  # a run of files: one slice
        else:
            keys = _gather(self.keys, starts, lengths, bounds)
        used, inverse = np.unique(self.container[idx], return_inverse=True)
        offset = self.offset[idx]
        containers = []
        for k, c in enumerate(self.containers[i] for i in used):
            if isinstance(c, Blobs):  # only the blobs of these files travel with them
                rows = np.flatnonzero(inverse == k)
                kept, offset[rows] = np.unique(offset[rows], return_inverse=True)
                c = Blobs(c.blobs[i] for i in kept.tolist())
            elif drop:
                c = c.renamed(rel_prefix=c.rel_prefix + drop)
            containers.append(c)
        return Manifest(keys, bounds, inverse.astype(np.int32).reshape(-1), offset, self.size[idx], containers)


def _gather(keys: bytes, starts: np.ndarray, lengths: np.ndarray, bounds: np.ndarray) -> bytes:
    """The byte ranges ``keys[starts[i]:starts[i] + lengths[i]]`` concatenated (``bounds`` their ends there)."""
    src = np.frombuffer(keys, np.uint8)
    out = np.empty(int(bounds[-1]), np.uint8)
    for a in range(0, len(starts), _GATHER_ROWS):
        b = min(a + _GATHER_ROWS, len(starts))
        lo, hi = int(bounds[a]), int(bounds[b])
        # Each output byte's source: its row's start, shifted by its place in the output.
        out[lo:hi] = src[np.repeat(starts[a:b] - bounds[a:b], lengths[a:b]) + np.arange(lo, hi)]
    return out.tobytes()


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

        return Manifest(bytes(self._keys), column(self._bounds, np.int64), column(self._container, np.int32),
                        column(self._offset, np.int64), column(self._size, np.int64), self._containers)


def from_items(items) -> Manifest:
    """A Manifest of ``(name, blob)`` pairs, each blob kept as it is."""
    builder = ManifestBuilder()
    for name, blob in items:
        builder.append_blob(name, blob)
    return builder.build()

"""Images that are decoded when they are indexed, so memory is bounded by the chunk, not the dataset."""

from __future__ import annotations

import numpy as np

from .._validation import is_int
from ..errors import DataError
from ._decode import decode_image
from ._manifest import Manifest, ManifestBuilder, from_items

_DIGEST_BYTES = 32  # a SHA-256 of each file
SKIP_HINT = "leave unreadable files out with --skip-bad (skip_bad=True)"
# What the digests hash: the files' bytes (read while listing) or their listing (name, size,
# ETag or modification time) where reading every file would cost more than the work itself.
DIGESTS_FROM = ("content", "listing")


def read_blobs(blobs) -> list[bytes]:
    """The encoded bytes of each blob, in order; blobs of one group read together.

    A blob has ``read()``; one that also has a ``group`` (a tar's store, an fsspec
    filesystem's files) is read by ``group.read_many(blobs)`` with the others of its group,
    so that object storage answers a chunk in one sequential range or concurrent requests
    instead of one round trip per image.
    """
    out: list = [None] * len(blobs)
    groups: dict[int, tuple[object, list[int]]] = {}
    for j, blob in enumerate(blobs):
        group = getattr(blob, "group", None)
        if group is None:
            out[j] = blob.read()
        else:
            groups.setdefault(id(group), (group, []))[1].append(j)
    for group, indices in groups.values():
        for j, data in zip(indices, group.read_many([blobs[j] for j in indices])):
            out[j] = data
    return out


def read_or_error(blob):
    """The bytes of ``blob``, or the DataError that reading it raised."""
    try:
        return blob.read()
    except DataError as e:
        return e


class BytesBlob:
    """Encoded bytes already read: what :meth:`ImageArray.portable` puts in place of blobs that
    cannot leave this process."""

    portable = True

    def __init__(self, data: bytes):
        self.data = data
        self.size = len(data)

    def read(self) -> bytes:
        return self.data


class ImageArray:
    """An ``(N, H, W, 3)`` uint8 array of image files, decoded when indexed.

    What :func:`featmlp.data.load_dataset` gives for image folders and archives: the files
    were listed and their headers read (sizes checked), but no pixels are held, and the
    listing is held as columns (:class:`~featmlp.data._manifest.Manifest`, under a hundred
    bytes an image with its digest), not as an object per file. Indexing
    with an int, a slice, an index array or a boolean mask decodes those images and returns
    an ndarray; ``np.asarray(images)`` decodes all of them; :meth:`take` gives a lazy subset
    and :meth:`chunks` decodes chunk by chunk.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for c in ("cat", "dog"):
    ...     (root / c).mkdir()
    ...     for i in range(3):
    ...         Image.new("RGB", (8, 6), (i, 0, 0)).save(root / c / f"{i}.png")
    >>> from featmlp.data import load_dataset
    >>> images = load_dataset(root, test_fraction=0.34).train_images
    >>> images.shape, images[0].shape, images[:2].shape
    ((4, 6, 8, 3), (6, 8, 3), (2, 6, 8, 3))
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, files, digests: np.ndarray, height: int, width: int, image_size=None, *,
                 digests_from: str = "content"):
        if digests_from not in DIGESTS_FROM:
            raise ValueError(f"digests_from must be one of {DIGESTS_FROM}, got {digests_from!r}")
        self._decode_image = decode_image
        # Where each file is, as columns (see _manifest); a list of (name, blob) is packed into one.
        self._files = files if isinstance(files, Manifest) else from_items(files)
        self._digests = np.asarray(digests, np.uint8).reshape(len(self._files), _DIGEST_BYTES)
        self._hw = (int(height), int(width))
        self._image_size = image_size
        self._digests_from = digests_from

    # -- what numpy code asks of an array ------------------------------------------------

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self._files), *self._hw, 3)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size

    def __len__(self) -> int:
        return len(self._files)

    @property
    def names(self) -> tuple[str, ...]:
        """The files, in order (relative to the dataset's root)."""
        return tuple(self._files.iter_names())

    def name(self, i: int) -> str:
        """The name of image ``i`` (one of :attr:`names`, without making them all)."""
        return self._files.name(int(i))

    def __getitem__(self, key):
        if isinstance(key, tuple):
            if not key or key[0] is Ellipsis:
                return np.asarray(self)[key]
            first = self[key[0]]
            rest = key[1:]
            return first[rest] if is_int(key[0]) else first[(slice(None),) + rest]
        if is_int(key):
            i = int(key)
            if not -len(self) <= i < len(self):
                raise IndexError(f"index {i} is out of bounds for {len(self)} images")
            return self._decode([i % len(self)])[0]
        return self._decode(self._indices(key))

    def __array__(self, dtype=None, copy=None):
        out = self._decode(np.arange(len(self)))
        return out if dtype is None else out.astype(dtype, copy=False)

    def __iter__(self):
        for chunk in self.chunks(256):
            yield from chunk

    def chunks(self, size: int):
        """Decoded ``(<= size, H, W, 3)`` arrays, in order."""
        for start in range(0, len(self), size):
            yield self[start:start + size]

    def decode_each(self, indices) -> list:
        """The images at ``indices``, each decoded on its own: an ``(H, W, 3)`` array (of its own size
        unless this array resizes them) or the :class:`DataError` reading or decoding it raised, so
        that one bad file does not stop the others (:func:`featmlp.data.list_images`). The files
        are read together, as indexing reads them.
        """
        blobs = [self._files.blob(i) for i in indices]
        try:
            datas = read_blobs(blobs)
        except DataError:
            datas = [read_or_error(blob) for blob in blobs]  # the one that fails is its own error
        out = []
        for j, i in enumerate(indices):
            data, datas[j] = datas[j], None  # each file's bytes released once decoded
            if not isinstance(data, DataError):
                try:
                    data = self._decode_image(data, self._files.name(i), self._image_size)
                except DataError as e:
                    data = e
            out.append(data)
        return out

    @property
    def digests_from(self) -> str:
        """``"content"``: the fingerprint hashes the files' bytes; ``"listing"``: their listing."""
        return self._digests_from

    def take(self, indices) -> "ImageArray":
        """The images at ``indices`` (ints or a boolean mask), still not decoded."""
        idx = self._indices(indices)
        return ImageArray(self._files.take(idx), self._digests[idx], *self._hw, self._image_size,
                          digests_from=self._digests_from)

    def portable(self) -> "ImageArray":
        """These images in a form that can be pickled to another process, even on another machine.

        Files on disk, files on object storage (fsspec filesystems pickle with their options)
        and members of an uncompressed tar (the tar's path, an offset and a size) travel as
        they are: the other process reads them from the shared file system or object store,
        so this returns ``self`` when every image is one of those. Members of a zip (held
        open here) and of a compressed tar (unpacked into this process's temporary file) are
        read now and travel as their encoded bytes: call it on the chunk you send
        (``images.take(indices).portable()``), not on a whole dataset.

        Returns
        -------
        ImageArray
            The same images, names and fingerprint digests.

        Examples
        --------
        >>> import pickle, tempfile, pathlib, zipfile
        >>> from PIL import Image
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> with zipfile.ZipFile(root / "d.zip", "w") as zf:
        ...     for i, c in enumerate(("cat", "cat", "dog", "dog")):
        ...         Image.new("RGB", (4, 4), (i, 0, 0)).save(root / "x.png")
        ...         zf.write(root / "x.png", f"{c}/{i}.png")
        >>> from featmlp.data import load_dataset
        >>> chunk = load_dataset(root / "d.zip", test_fraction=0.5).train_images.take([0, 1])
        >>> copy = pickle.loads(pickle.dumps(chunk.portable()))
        >>> bool((copy[:] == chunk[:]).all())
        True
        """
        files = self._files
        stays = files.portable_rows()
        if stays.all():
            return self
        moved = np.flatnonzero(~stays)
        datas = dict(zip(moved.tolist(), read_blobs([files.blob(j) for j in moved])))
        builder = ManifestBuilder()
        for j in range(len(files)):
            if j in datas:
                builder.append_blob(files.name(j), BytesBlob(datas.pop(j)))
            else:
                builder.append_from(files, j)
        return ImageArray(builder.build(), self._digests, *self._hw, self._image_size,
                          digests_from=self._digests_from)

    def update_hash(self, h) -> None:
        """Feed the files' names and digests (of their bytes or their listing, see ``digests_from``) to ``h``."""
        for name, digest in zip(self._files.iter_names(), self._digests):
            h.update(name.encode("utf-8") + b"\0" + digest.tobytes())

    def __repr__(self) -> str:
        h, w = self._hw
        return f"ImageArray({len(self)} images {w}x{h}, decoded when indexed)"

    # -- decoding ----------------------------------------------------------------------------

    def _indices(self, key) -> np.ndarray:
        n = len(self)
        if isinstance(key, slice):
            return np.arange(n)[key]
        idx = np.asarray(key)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise IndexError(f"boolean index of shape {idx.shape} for {n} images")
            return np.flatnonzero(idx)
        if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
            raise IndexError(f"images are indexed by an int, a slice or a 1-d array of ints, got {key!r}")
        idx = idx.astype(np.intp)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"index out of bounds for {n} images")
        return idx % n if n else idx

    def _decode(self, indices) -> np.ndarray:
        out = np.empty((len(indices), *self._hw, 3), np.uint8)
        datas = read_blobs([self._files.blob(i) for i in indices])  # the chunk's files in few requests
        for j, i in enumerate(indices):
            name = self._files.name(i)
            data, datas[j] = datas[j], None  # each file's bytes released once decoded
            try:
                img = self._decode_image(data, name, self._image_size)
            except DataError as e:
                raise DataError(f"{e}; {SKIP_HINT}") from None
            if img.shape != out.shape[1:]:
                raise DataError(f"image {name} decodes to {img.shape[1]}x{img.shape[0]} but its header "
                                f"says {self._hw[1]}x{self._hw[0]} (width x height); pass image_size=({self._hw[1]}, "
                                f"{self._hw[0]}) to resize every image, or {SKIP_HINT}")
            out[j] = img
        return out


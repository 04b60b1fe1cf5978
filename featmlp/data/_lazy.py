"""Images that are decoded when they are indexed, so memory is bounded by the chunk, not the dataset."""

from __future__ import annotations

import numpy as np

from ..errors import DataError

_DIGEST_BYTES = 32  # a SHA-256 of each file
SKIP_HINT = "leave unreadable files out with --skip-bad (skip_bad=True)"


class ImageArray:
    """An ``(N, H, W, 3)`` uint8 array of image files, decoded when indexed.

    What :func:`featmlp.data.load_dataset` gives for image folders and archives: the files
    were listed and their headers read (sizes checked), but no pixels are held. Indexing
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

    def __init__(self, items, digests: np.ndarray, height: int, width: int, image_size=None):
        from ._images import decode_image  # the decoder lives with the file formats

        self._decode_image = decode_image
        self._items = list(items)  # (name, blob): blob.read() gives the encoded bytes
        self._digests = np.asarray(digests, np.uint8).reshape(len(self._items), _DIGEST_BYTES)
        self._hw = (int(height), int(width))
        self._image_size = image_size

    # -- what numpy code asks of an array ------------------------------------------------

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self._items), *self._hw, 3)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size

    def __len__(self) -> int:
        return len(self._items)

    @property
    def names(self) -> tuple[str, ...]:
        """The files, in order (relative to the dataset's root)."""
        return tuple(name for name, _ in self._items)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            if not key or key[0] is Ellipsis:
                return np.asarray(self)[key]
            first = self[key[0]]
            rest = key[1:]
            return first[rest] if _is_int(key[0]) else first[(slice(None),) + rest]
        if _is_int(key):
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

    def take(self, indices) -> "ImageArray":
        """The images at ``indices`` (ints or a boolean mask), still not decoded."""
        idx = self._indices(indices)
        out = ImageArray([self._items[i] for i in idx], self._digests[idx], *self._hw, self._image_size)
        return out

    def update_hash(self, h) -> None:
        """Feed the files' names and encoded bytes (their SHA-256, taken while listing) to ``h``."""
        for (name, _), digest in zip(self._items, self._digests):
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
        for j, i in enumerate(indices):
            name, blob = self._items[i]
            data = blob.read()
            try:
                img = self._decode_image(data, name, self._image_size)
            except DataError as e:
                raise DataError(f"{e}; {SKIP_HINT}") from None
            if img.shape != out.shape[1:]:
                raise DataError(f"image {name} decodes to {img.shape[1]}x{img.shape[0]} but its header "
                                f"says {self._hw[1]}x{self._hw[0]} (width x height); pass --image-size "
                                f"{self._hw[1]}x{self._hw[0]} to resize every image, or {SKIP_HINT}")
            out[j] = img
        return out


def _is_int(key) -> bool:
    return isinstance(key, (int, np.integer)) and not isinstance(key, bool)

"""The in-memory dataset every source produces, its fingerprint, and the stratified split."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from ._image_array import ImageArray

# Bump when the hashed byte layout changes, so old fingerprints can never collide with new ones.
# v1: decoded pixels (arrays in memory); v2 adds image files, hashed by name and encoded bytes;
# v3: image files known from a listing (object storage, tar shards), hashed by name, size and
# ETag or modification time, which must never match a hash of the bytes.
_FINGERPRINT_VERSION = "featmlp-dataset-v1"
_FILES_FINGERPRINT_VERSION = "featmlp-dataset-v2-files"
_LISTING_FINGERPRINT_VERSION = "featmlp-dataset-v3-listing"
_FINGERPRINT_CHARS = 16


# eq=False: the generated __eq__ would compare arrays with ``==`` and fail on their truth value;
# compare datasets with ``fingerprint`` instead.
@dataclass(frozen=True, eq=False)
class Dataset:
    """Images, labels and class names of one train/test dataset.

    Attributes
    ----------
    train_images : ndarray or ImageArray, shape (N, H, W, 3), uint8
        RGB training images (an :class:`ImageArray` decodes image files when indexed).
    train_labels : ndarray, shape (N,), int64
        Index of each training image's class in ``class_names``.
    test_images : ndarray, shape (M, H, W, 3), uint8
        RGB test images, the same size as the training images.
    test_labels : ndarray, shape (M,), int64
    class_names : tuple of str
        Class names; label ``k`` means ``class_names[k]``.
    source : str
        Human-readable description of where the data came from (for provenance).
    skipped : tuple of (str, str)
        Files left out as unreadable (``load_dataset(skip_bad=True)``): (file, reason).
    train_names, test_names : tuple of str, optional
        The name of each image of arrays in memory (CIFAR-10 batches: their ``filenames``);
        image files (:class:`ImageArray`) carry their own. :meth:`image_names` gives either.

    The arrays are shared, not copied: treat them as read-only.

    Examples
    --------
    >>> import numpy as np
    >>> ds = Dataset(np.zeros((2, 4, 4, 3), np.uint8), np.array([0, 1]),
    ...              np.zeros((1, 4, 4, 3), np.uint8), np.array([1]), ("cat", "dog"), "made by hand")
    >>> ds.num_classes
    2
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]
    source: str
    skipped: tuple[tuple[str, str], ...] = ()
    train_names: tuple[str, ...] | None = None
    test_names: tuple[str, ...] | None = None

    def __post_init__(self):
        # Validated once here so every consumer can trust shapes and label ranges.
        names = tuple(self.class_names)
        object.__setattr__(self, "class_names", names)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise DataError(f"class_names must be non-empty strings, got {names!r}")
        if len(set(names)) != len(names):
            raise DataError(f"class_names must be unique, got {names!r}")
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = np.asarray(getattr(self, f"{split}_labels"))
            if not (isinstance(images, (np.ndarray, ImageArray)) and images.dtype == np.uint8
                    and images.ndim == 4 and images.shape[3] == 3):
                got = f"{getattr(images, 'dtype', type(images).__name__)} {getattr(images, 'shape', '')}"
                raise DataError(f"{split}_images must be a uint8 array of shape (N, H, W, 3), "
                                f"got {got}")
            if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
                raise DataError(f"{split}_labels must be {len(images)} integers, got "
                                f"{labels.dtype} {labels.shape}")
            if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
                raise DataError(f"{split}_labels must lie in [0, {len(names)}), found "
                                f"{labels.min()}..{labels.max()}")
            object.__setattr__(self, f"{split}_labels", labels.astype(np.int64, copy=False))
            row_names = getattr(self, f"{split}_names")
            if row_names is not None:
                row_names = tuple(str(n) for n in row_names)
                if len(row_names) != len(labels):
                    raise DataError(f"{split}_names must be {len(labels)} names, got {len(row_names)}")
                object.__setattr__(self, f"{split}_names", row_names)
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise DataError(f"train images are {self.train_images.shape[1:3]} but test images are "
                            f"{self.test_images.shape[1:3]} (height, width); they must be the same size")

    def image_names(self, split: str) -> tuple[str, ...] | None:
        """The name of each image of ``split`` ("train" or "test"), in order: the file or archive
        member name of image files, the batch's ``filenames`` of CIFAR-10; None when unknown."""
        images = getattr(self, f"{split}_images")
        if isinstance(images, ImageArray):
            return images.names
        return getattr(self, f"{split}_names")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __repr__(self) -> str:
        h, w = self.train_images.shape[1:3]
        return (f"Dataset({len(self.train_images)} train + {len(self.test_images)} test images "
                f"{w}x{h}, {self.num_classes} classes, source={self.source!r})")


def fingerprint(dataset: Dataset) -> str:
    """Short, stable hash of a dataset's images, labels and class names.

    The source description is not hashed: the same data loaded from a folder or from an
    archive has the same fingerprint. Feature files record it to detect stale features.
    Images in memory are hashed by their pixels; image files (:class:`ImageArray`) by their
    names and encoded bytes, hashed while they were listed, and the size they are resized
    to, so nothing is decoded for it. Image files that were only listed, not read (object
    storage, tar shards: ``ImageArray.digests_from == "listing"``), are hashed by their
    names and listing (size, ETag or modification time), under another version tag, so such a
    fingerprint never equals one of the same files hashed by their bytes.

    Parameters
    ----------
    dataset : Dataset

    Returns
    -------
    str
        The first 16 hex digits of a SHA-256.

    Examples
    --------
    >>> import numpy as np
    >>> ds = Dataset(np.zeros((2, 4, 4, 3), np.uint8), np.array([0, 1]),
    ...              np.zeros((1, 4, 4, 3), np.uint8), np.array([1]), ("cat", "dog"), "a")
    >>> fingerprint(ds) == fingerprint(Dataset(*[getattr(ds, f) for f in
    ...     ("train_images", "train_labels", "test_images", "test_labels", "class_names")], "b"))
    True
    >>> len(fingerprint(ds))
    16
    """
    h = hashlib.sha256()
    files = [isinstance(x, ImageArray) for x in (dataset.train_images, dataset.test_images)]
    listed = any(isinstance(x, ImageArray) and x.digests_from == "listing"
                 for x in (dataset.train_images, dataset.test_images))
    version = (_LISTING_FINGERPRINT_VERSION if listed else
               _FILES_FINGERPRINT_VERSION if any(files) else _FINGERPRINT_VERSION)
    header = {"version": version,
              "class_names": list(dataset.class_names),
              "train": list(dataset.train_images.shape), "test": list(dataset.test_images.shape)}
    if any(files):
        header["files"] = files
    h.update(json.dumps(header, sort_keys=True).encode())
    for images, labels in ((dataset.train_images, dataset.train_labels),
                           (dataset.test_images, dataset.test_labels)):
        if isinstance(images, ImageArray):
            images.update_hash(h)  # the shape in the header says what they are resized to
        else:
            h.update(np.ascontiguousarray(images).data)
        # Fixed byte order so the hash is the same on any machine.
        h.update(np.ascontiguousarray(labels, dtype="<i8").data)
    return h.hexdigest()[:_FINGERPRINT_CHARS]


def stratified_split(labels: np.ndarray, class_names, test_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` taking ``round(n * test_fraction)`` of each class for test.

    Every class keeps at least one image on each side, so a class needs two images; with
    ``test_fraction`` 1 every image is a test image (no training split). The
    choice depends only on ``labels``, ``test_fraction`` and ``seed``; indices come back
    sorted, so the order of the data is kept within each side.
    """
    if test_fraction >= 1.0:
        return np.zeros(0, np.intp), np.arange(len(labels))
    rng = np.random.default_rng(seed)
    train, test = [], []
    for k, name in enumerate(class_names):
        idx = np.flatnonzero(labels == k)
        n = len(idx)
        if n < 2:
            raise DataError(f"class {name!r} has {n} image(s); splitting into train and test "
                            f"(test_fraction={test_fraction}) needs at least 2 per class. Add "
                            f"images, or provide the split yourself as ROOT/train/<class>/ and "
                            f"ROOT/test/<class>/")
        n_test = min(max(int(round(n * test_fraction)), 1), n - 1)
        perm = rng.permutation(idx)
        test.append(perm[:n_test])
        train.append(perm[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))

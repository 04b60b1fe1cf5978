"""Feature sets: pure functions from a batch of images to an ``(N, F)`` float array.

Each entry of :data:`FEATURE_SETS` maps a name (the CLI's ``--features`` choices)
to a :class:`FeatureSet`: its column names and a function
``images (N, H, W, 3) or (N, H, W) uint8 -> (N, F) float64``. No file access, no
global state; adding a feature set is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, DataError
from . import texture


@dataclass(frozen=True)
class FeatureSet:
    """A named feature extractor: ``fn(images, parallel=True) -> (N, len(names))`` float64.

    ``parallel=False`` asks the function to stay in the calling thread (worker processes).
    """

    name: str
    names: tuple[str, ...]
    fn: Callable[[np.ndarray], np.ndarray]
    description: str


FEATURE_SETS: dict[str, FeatureSet] = {
    "lecture": FeatureSet(
        "lecture",
        texture.NAMES,
        texture.lecture_features,
        "the lecture's 9 texture features: LBP energy/entropy, 5 GLCM properties, Gabor energy/entropy",
    ),
}

DEFAULT_FEATURES = "lecture"


def get_feature_set(features: str | FeatureSet) -> FeatureSet:
    """Look up a feature set by name, with an error that lists the known ones."""
    if isinstance(features, FeatureSet):
        return features
    try:
        return FEATURE_SETS[features]
    except (KeyError, TypeError):
        known = ", ".join(sorted(FEATURE_SETS))
        raise ConfigError(f"unknown feature set {features!r}; choose one of: {known}") from None


def feature_names(features: str | FeatureSet = DEFAULT_FEATURES) -> tuple[str, ...]:
    """Column names of a feature set.

    Examples
    --------
    >>> feature_names("lecture")[:2]
    ('lbp_energy', 'lbp_entropy')
    """
    return get_feature_set(features).names


def _check_batch(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise DataError(f"images must be uint8 (0..255), got dtype {images.dtype}; "
                        "convert with np.clip(x, 0, 255).astype(np.uint8)")
    if images.ndim == 4 and images.shape[-1] == 3 or images.ndim == 3:
        if images.shape[1] < 1 or images.shape[2] < 1:
            raise DataError(f"images have an empty side: shape {images.shape}")
        return images
    raise DataError(f"images must have shape (N, H, W, 3) RGB or (N, H, W) gray, got {images.shape}")


def extract_features(images: np.ndarray | Sequence[np.ndarray], features: str | FeatureSet = DEFAULT_FEATURES,
                     *, chunk_size: int = 4096, progress=None, parallel: bool = True) -> np.ndarray:
    """Compute a feature set for a batch of images.

    Parameters
    ----------
    images : ndarray (N, H, W, 3) or (N, H, W), uint8, or a sequence of (H, W, 3) / (H, W) arrays
        RGB or grayscale images. A sequence may mix sizes: images are grouped by
        size, each group is computed as one batch, rows come back in input order.
    features : str or FeatureSet
        A key of :data:`FEATURE_SETS` (default ``"lecture"``).
    chunk_size : int
        Images per batch handed to the feature function (bounds memory).
    progress : callable, optional
        Progress hook ``progress("extract", done, total)``.
    parallel : bool
        Use several threads (False: the calling thread only).

    Returns
    -------
    ndarray, shape (N, F), float64

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    >>> extract_features(images, "lecture").shape
    (2, 9)
    """
    fset = get_feature_set(features)
    if isinstance(images, np.ndarray):
        groups = {None: (np.arange(len(images)), _check_batch(images))}
        n = len(images)
    else:
        images = [np.asarray(im) for im in images]
        n = len(images)
        by_shape: dict[tuple, list[int]] = {}
        for i, im in enumerate(images):
            by_shape.setdefault(im.shape, []).append(i)
        groups = {shape: (np.asarray(idx), _check_batch(np.stack([images[i] for i in idx])))
                  for shape, idx in by_shape.items()}
    out = np.empty((n, len(fset.names)), dtype=np.float64)
    done = 0
    for rows, batch in groups.values():
        for start in range(0, len(rows), chunk_size):
            stop = min(start + chunk_size, len(rows))
            out[rows[start:stop]] = fset.fn(batch[start:stop], parallel=parallel)
            done += stop - start
            if progress is not None:
                progress("extract", done, n)
    return out


__all__ = ["FeatureSet", "FEATURE_SETS", "DEFAULT_FEATURES", "extract_features", "feature_names",
           "get_feature_set"]

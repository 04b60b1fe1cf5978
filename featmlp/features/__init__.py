"""Feature sets: pure functions from a batch of images to an ``(N, F)`` float array.

Each entry of :data:`FEATURE_SETS` maps a name (the CLI's ``--features`` choices)
to a :class:`FeatureSet`: its column names and a function
``images (N, H, W, 3) or (N, H, W) uint8 -> (N, F) float64``. No file access, no
global state; adding a feature set is one entry here. Names joined by ``+``
(``"lecture+hog+color"``) are the sets side by side, columns in that order.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, DataError
from . import color, hog, texture


@dataclass(frozen=True)
class FeatureSet:
    """A named feature extractor: ``fn(images, parallel=True) -> (N, len(names))`` float64.

    ``parallel=False`` asks the function to stay in the calling thread (worker processes).
    When the number of columns depends on the image size (HOG), ``names`` are those of
    32x32 images and ``sized_names(height, width)`` gives them for any size.
    """

    name: str
    names: tuple[str, ...]
    fn: Callable[[np.ndarray], np.ndarray]
    description: str
    sized_names: Callable[[int, int], tuple[str, ...]] | None = None

    def names_for(self, height: int, width: int) -> tuple[str, ...]:
        """Column names for ``height`` x ``width`` images (raises DataError where a size is too small)."""
        return self.names if self.sized_names is None else self.sized_names(height, width)


FEATURE_SETS: dict[str, FeatureSet] = {
    "lecture": FeatureSet(
        "lecture",
        texture.NAMES,
        texture.lecture_features,
        "the lecture's 9 texture features: LBP energy/entropy, 5 GLCM properties, Gabor energy/entropy",
    ),
    "hog": FeatureSet(
        "hog",
        hog.NAMES,
        hog.hog_features,
        "histogram of oriented gradients of the grayscale image (9 orientations, 8x8 cells, "
        "2x2 blocks, L2-Hys; 324 values for 32x32 images)",
        sized_names=hog.names,
    ),
    "color": FeatureSet(
        "color",
        color.NAMES,
        color.color_features,
        "22 colour values: mean and deviation of R, G, B; 8-bin hue, 4-bin saturation and value histograms",
    ),
}

DEFAULT_FEATURES = "lecture"


def get_feature_set(features: str | FeatureSet) -> FeatureSet:
    """Look up a feature set by name, or a combination ``"a+b+..."``, with an error that lists the known ones.

    Examples
    --------
    >>> fs = get_feature_set("lecture+color")
    >>> fs.name, len(fs.names)
    ('lecture+color', 31)
    """
    if isinstance(features, FeatureSet):
        return features
    if isinstance(features, str):
        if features in FEATURE_SETS:
            return FEATURE_SETS[features]
        return _combined(tuple(part.strip() for part in features.split("+")))
    raise ConfigError(f"a feature set is a name, got {features!r}; {_choices()}")


def _choices() -> str:
    return f"choose from {', '.join(FEATURE_SETS)}, or join several with '+' (e.g. lecture+hog+color)"


def _concat_fn(sets: tuple[FeatureSet, ...], images: np.ndarray, parallel: bool = True) -> np.ndarray:
    return np.concatenate([s.fn(images, parallel=parallel) for s in sets], axis=1)


def _concat_names(sets: tuple[FeatureSet, ...], height: int, width: int) -> tuple[str, ...]:
    return tuple(name for s in sets for name in s.names_for(height, width))


@functools.lru_cache(maxsize=64)
def _combined(parts: tuple[str, ...]) -> FeatureSet:
    for part in parts:
        if part not in FEATURE_SETS:
            raise ConfigError(f"unknown feature set {part!r} in {'+'.join(parts)!r}; {_choices()}"
                              if len(parts) > 1 else f"unknown feature set {part!r}; {_choices()}")
    if len(set(parts)) < len(parts):
        twice = next(p for p in parts if parts.count(p) > 1)
        raise ConfigError(f"feature set {twice!r} appears twice in {'+'.join(parts)!r}; name each set once")
    sets = tuple(FEATURE_SETS[p] for p in parts)
    sized = any(s.sized_names is not None for s in sets)
    return FeatureSet("+".join(parts), tuple(n for s in sets for n in s.names),
                      functools.partial(_concat_fn, sets), " + ".join(parts),
                      sized_names=functools.partial(_concat_names, sets) if sized else None)


def feature_names(features: str | FeatureSet = DEFAULT_FEATURES, *,
                  image_shape: tuple[int, int] | None = None) -> tuple[str, ...]:
    """Column names of a feature set (or a combination ``"a+b"``).

    Parameters
    ----------
    features : str or FeatureSet
    image_shape : (height, width), optional
        Image size, for sets whose columns depend on it (``hog``); without it, the
        names for 32x32 images.

    Examples
    --------
    >>> feature_names("lecture")[:2]
    ('lbp_energy', 'lbp_entropy')
    >>> len(feature_names("hog", image_shape=(64, 48)))
    1260
    """
    fset = get_feature_set(features)
    return fset.names if image_shape is None else fset.names_for(*image_shape)


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
        A key of :data:`FEATURE_SETS` (default ``"lecture"``), or keys joined by ``+``
        (``"lecture+hog+color"``: the sets' columns side by side, in that order).
    chunk_size : int
        Images per batch handed to the feature function (bounds memory).
    progress : callable, optional
        Progress hook ``progress("extract", done, total)``.
    parallel : bool
        Use several threads (False: the calling thread only).

    Returns
    -------
    ndarray, shape (N, F), float64
        ``F = len(feature_names(features, image_shape=(H, W)))``; for sets whose width
        depends on the size (``hog``) a sequence of images must share one size.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    >>> extract_features(images, "lecture").shape
    (2, 9)
    >>> extract_features(images, "lecture+hog+color").shape
    (2, 355)
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
    widths = {len(fset.names_for(*batch.shape[1:3])) for _, batch in groups.values()}
    if len(widths) > 1:
        sizes = ", ".join(f"{b.shape[1]}x{b.shape[2]}" for _, b in groups.values())
        raise DataError(f"feature set {fset.name!r} gives a different number of values for each image "
                        f"size ({sizes}, HxW): resize the images to one size (e.g. --image-size 32x32)")
    out = np.empty((n, widths.pop() if widths else len(fset.names)), dtype=np.float64)
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

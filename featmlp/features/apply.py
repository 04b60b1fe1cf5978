"""Applying feature sets: fitting them on training images (:func:`fit_features`), extracting
features (:func:`extract_features`), their column names and counts, the fitted state as arrays and
JSON, the mirror permutation, and the working memory of a batch (:func:`working_bytes`,
:func:`chunk_for_memory`). The sets themselves are in :mod:`featmlp.features.registry`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from .registry import DEFAULT_FEATURES, FEATURE_SETS, FeatureSet, WorkMemory, get_feature_set, parse_feature_options


def fit_features(features: str | FeatureSet, images, options: dict | None = None, *,
                 state: dict | None = None, progress=None) -> dict:
    """Fit the fitted sets of ``features`` on training images; the state for :func:`extract_features`.

    Parameters
    ----------
    features : str or FeatureSet
    images : ndarray (N, H, W, 3) or (N, H, W), uint8
        Training images only.
    options : dict, optional
        Settings of the fitted sets (:func:`parse_feature_options`).
    state : dict, optional
        Already fitted sets to keep (not fitted again).
    progress : callable, optional
        Progress hook, e.g. ``progress("kmeans", iteration, n_iter)``.

    Returns
    -------
    dict
        ``{set name: fitted transformer}``, empty for pure sets.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, size=(10, 12, 12), dtype=np.uint8)
    >>> state = fit_features("kmeans", images, {"k": 8, "patch_size": 4, "pool": 2, "n_patches": 200})
    >>> extract_features(images, "kmeans+color", state=state).shape
    (10, 54)
    """
    fset = get_feature_set(features)
    options = parse_feature_options(fset, options or {})
    state = dict(state or {})
    for part in fset.components:
        if part.fitted is not None and part.name not in state:
            cls = part.fitted()
            known = cls().get_params()
            state[part.name] = cls(**{k: v for k, v in options.items() if k in known}).fit(images, progress=progress)
    return state


def _fitted_part(part: FeatureSet, state: dict | None):
    """The fitted transformer of a fitted set, or a ConfigError saying how to get one."""
    fitted = (state or {}).get(part.name)
    if fitted is None:
        raise ConfigError(f"feature set {part.name!r} must be fitted on training images first "
                          f"(fit_features, or featmlp extract / --fitted-from RUN_OR_FEATURES)")
    return fitted


def _part_fn(part: FeatureSet, state: dict | None):
    return part.fn if part.fitted is None else _fitted_part(part, state).transform


def _part_names(part: FeatureSet, state: dict | None, height: int, width: int) -> tuple[str, ...]:
    if part.fitted is None:
        return part.names_for(height, width)
    return _fitted_part(part, state).feature_names()


def mirror_permutation(features: str | FeatureSet, state: dict | None = None, *,
                       image_shape: tuple[int, int] = (32, 32)) -> np.ndarray | None:
    """Columns ``perm`` with ``features(mirrored images) == features(images)[:, perm]``, or None.

    Defined when every set in ``features`` mirrors that way (``kmeans`` with ``mirror=True``,
    ``color``); flip augmentation (``TrainConfig.flip``) needs it.
    """
    fset = get_feature_set(features)
    perms, offset = [], 0
    for part in fset.components:
        if part.fitted is not None:
            perm = _fitted_part(part, state).mirror_permutation()
        else:
            perm = part.mirror(*image_shape) if part.mirror is not None else None
        if perm is None:
            return None
        perms.append(perm + offset)
        offset += len(perm)
    return np.concatenate(perms)


def mirror_images(images: np.ndarray) -> np.ndarray:
    """The horizontal mirror images of ``images`` ``(N, H, W[, C])``: each row of pixels reversed.

    Examples
    --------
    >>> mirror_images(np.arange(6).reshape(1, 2, 3))[0].tolist()
    [[2, 1, 0], [5, 4, 3]]
    """
    return np.ascontiguousarray(images[:, :, ::-1])


def state_to_arrays(state: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """``(settings, arrays)`` of a fitted state: JSON settings per set, arrays ``"<set>.<name>"``."""
    settings, arrays = {}, {}
    for name, fitted in sorted(state.items()):
        settings[name], part_arrays = fitted.state()
        arrays.update({f"{name}.{key}": value for key, value in part_arrays.items()})
    return settings, arrays


def state_from_arrays(settings: dict, arrays: dict) -> dict:
    """Inverse of :func:`state_to_arrays`; a :class:`DataError` names what does not fit."""
    if not isinstance(settings, dict):
        raise DataError("fitted feature state settings must be a JSON object")
    state = {}
    for name, part_settings in settings.items():
        fset = FEATURE_SETS.get(name)
        if fset is None or fset.fitted is None:
            raise DataError(f"fitted feature state names {name!r}, which is not a fitted feature set")
        prefix = name + "."
        state[name] = fset.fitted().from_state(
            part_settings, {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
    return state


def feature_names(features: str | FeatureSet = DEFAULT_FEATURES, *,
                  image_shape: tuple[int, int] | None = None, state: dict | None = None) -> tuple[str, ...]:
    """Column names of a feature set (or a combination ``"a+b"``).

    Parameters
    ----------
    features : str or FeatureSet
    image_shape : (height, width), optional
        Image size, for sets whose columns depend on it (``hog``); without it, the
        names for 32x32 images.
    state : dict, optional
        The fitted state (:func:`fit_features`) of fitted sets.

    Examples
    --------
    >>> feature_names("lecture")[:2]
    ('lbp_energy', 'lbp_entropy')
    >>> len(feature_names("hog", image_shape=(64, 48)))
    1260
    """
    fset = get_feature_set(features)
    if not fset.needs_fit:
        return fset.names if image_shape is None else fset.names_for(*image_shape)
    height, width = image_shape or (32, 32)
    return tuple(n for part in fset.components for n in _part_names(part, state, height, width))


def feature_count(features: str | FeatureSet, image_shape: tuple[int, int], *, state: dict | None = None) -> int:
    """``len(feature_names(features, image_shape=image_shape, state=state))``, without making the names."""
    fset = get_feature_set(features)
    return sum(part.count_for(*image_shape) if part.fitted is None else len(_part_names(part, state, *image_shape))
               for part in fset.components)


def feature_threads() -> int:
    """Threads the feature kernels of this process use (numba's, without importing numba for it)."""
    import sys

    numba = sys.modules.get("numba")
    if numba is not None:
        try:
            return max(1, int(numba.get_num_threads()))
        except Exception:  # numba's threading layer not started yet
            pass
    try:
        return max(1, int(os.environ.get("NUMBA_NUM_THREADS", "")))
    except ValueError:
        return max(1, os.cpu_count() or 1)


def set_memory(part: FeatureSet, options: Mapping | None = None, state: dict | None = None) -> WorkMemory:
    """The :class:`WorkMemory` of one single set, for its settings (or its fitted state's)."""
    memory = part.memory
    if callable(memory):
        settings = dict(options or {})
        fitted = (state or {}).get(part.name)
        if fitted is not None and hasattr(fitted, "get_params"):
            settings = {**settings, **fitted.get_params()}
        memory = memory(settings)
    return memory


def working_bytes(features: str | FeatureSet, image_shape: tuple[int, int], n_images: int = 1, *,
                  threads: int | None = None, options: Mapping | None = None, state: dict | None = None,
                  pixels: bool = True) -> int:
    """Bytes of memory computing ``features`` of ``n_images`` images of ``image_shape`` (H, W) takes.

    The decoded RGB images themselves (3 bytes a pixel; ``pixels=False`` leaves them out), plus
    the feature sets' working memory (:class:`WorkMemory`): the sets of a combination run one
    after the other, so their scratch is the largest of theirs, while what each keeps for every
    image (outputs) adds up. ``threads``: default :func:`feature_threads`.

    Examples
    --------
    >>> working_bytes("color", (100, 100), 10)  # the pixels only
    300000
    >>> working_bytes("lecture", (1000, 1000), 1, threads=1) // 2**20  # MB
    15
    """
    fset = get_feature_set(features)
    height, width = (int(v) for v in image_shape)
    px, n = height * width, int(n_images)
    threads = feature_threads() if threads is None else threads
    kept, scratch = 0, 0
    for part in fset.components:
        memory = set_memory(part, options, state)
        own = math.ceil(n * (px * memory.per_image + memory.image_fixed))
        kept += own
        scratch = max(scratch, memory.bytes(n, px, threads) - own)
    return (3 * n * px if pixels else 0) + kept + scratch


# A batch's memory by default (featmlp.tables.extract's chunks too): decoded pixels and working memory.
CHUNK_BYTES = 256 << 20
_MAX_BATCH = 4096


def chunk_for_memory(features: str | FeatureSet, image_shape, *, budget: int | None = None,
                     max_images: int = _MAX_BATCH, threads: int | None = None, options: Mapping | None = None,
                     state: dict | None = None) -> int:
    """The most images of ``image_shape`` (H, W), up to ``max_images``, whose decoded pixels and
    ``features``' working memory (:func:`working_bytes`) fit in ``budget`` (default
    :data:`CHUNK_BYTES`); at least one. A set that works a block of images at a time in a fixed
    amount of memory (kmeans: one BLAS product of up to 256 MB) has that block on top.

    Examples
    --------
    >>> chunk_for_memory("color", (256, 256)), chunk_for_memory("lecture", (32, 32))
    (1365, 4096)
    """
    fset = get_feature_set(features)
    shape = (int(image_shape[0]), int(image_shape[1]))
    budget = (CHUNK_BYTES if budget is None else int(budget)) \
        + max((set_memory(part, options, state).block or 0) for part in fset.components)

    def fits(n: int) -> bool:
        return working_bytes(fset, shape, n, threads=threads, options=options, state=state) <= budget

    if not fits(1):
        return 1
    low, high = 1, max(1, int(max_images))  # fits(low); the working memory grows with the images
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid) else (low, mid - 1)
    return low


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
                     *, state: dict | None = None, chunk_size: int | None = None, progress=None,
                     parallel: bool = True) -> np.ndarray:
    """Compute a feature set for a batch of images.

    Parameters
    ----------
    images : ndarray (N, H, W, 3) or (N, H, W), uint8, or a sequence of (H, W, 3) / (H, W) arrays
        RGB or grayscale images. A sequence may mix sizes: images are grouped by
        size, each group is computed as one batch, rows come back in input order.
        Images decoded when indexed (a :class:`featmlp.data.ImageArray`, as ``load_dataset``
        gives for folders and archives) are decoded ``chunk_size`` at a time.
    features : str or FeatureSet
        A key of :data:`FEATURE_SETS` (default ``"lecture"``), or keys joined by ``+``
        (``"lecture+hog+color"``: the sets' columns side by side, in that order).
    state : dict, optional
        Fitted state of the fitted sets in ``features`` (:func:`fit_features`).
    chunk_size : int, optional
        Images per batch handed to the feature function (bounds memory); default up to 4,096,
        as many as keep a batch's pixels and working memory within 256 MB
        (:func:`chunk_for_memory`).
    progress : callable, optional
        Progress hook ``progress("extract", done, total)``.
    parallel : bool
        Use several threads (False: the calling thread only).

    Returns
    -------
    ndarray, shape (N, F), float64 (float32 when a fitted set is among the sets)
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
    fns = [_part_fn(part, state) for part in fset.components]  # a missing fitted state fails here
    if chunk_size is None:
        shape = getattr(images, "shape", None)
        chunk_size = chunk_for_memory(fset, shape[1:3], state=state) if shape is not None and len(shape) >= 3 \
            else _MAX_BATCH
    if not isinstance(images, np.ndarray) and hasattr(images, "chunks"):
        # Images decoded when indexed (featmlp.data.ImageArray): one chunk in memory at a time.
        out, done = None, 0
        for batch in images.chunks(chunk_size):
            part = extract_features(batch, fset, state=state, chunk_size=chunk_size, parallel=parallel)
            if out is None:
                out = np.empty((len(images), part.shape[1]), part.dtype)
            out[done:done + len(part)] = part
            done += len(part)
            if progress is not None:
                progress("extract", done, len(images))
        if out is None:
            out = np.empty((0, feature_count(fset, images.shape[1:3], state=state)), fset.dtype)
        return out
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
    widths = {feature_count(fset, batch.shape[1:3], state=state) for _, batch in groups.values()}
    if len(widths) > 1:
        sizes = ", ".join(f"{b.shape[1]}x{b.shape[2]}" for _, b in groups.values())
        raise DataError(f"feature set {fset.name!r} gives a different number of values for each image "
                        f"size ({sizes}, HxW): resize the images to one size (e.g. --image-size 32x32)")
    out = np.empty((n, widths.pop() if widths else len(fset.names)), dtype=fset.dtype)
    done = 0
    for rows, batch in groups.values():
        for start in range(0, len(rows), chunk_size):
            stop = min(start + chunk_size, len(rows))
            part = batch[start:stop]
            out[rows[start:stop]] = np.concatenate([fn(part, parallel=parallel) for fn in fns], axis=1)
            done += stop - start
            if progress is not None:
                progress("extract", done, n)
    return out

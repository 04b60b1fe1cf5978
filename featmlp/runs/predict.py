"""New images through a saved model: :func:`iter_predict_images`, a chunk of images at a time, within memory.

:meth:`featmlp.runs.bundle.Bundle.predict_images` is what users call; the work is here: read each
file (resized to the training images' size), compute the bundle's features for a chunk of images,
scale and classify them, and give each file an :class:`ImagePrediction` (its class, or why it has
none). The chunk limits keep the decoded images and the feature set's working memory bounded.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from featmlp import _memory  # _memory.available_memory read when called (tests replace it)
from featmlp._memory import check_memory, format_bytes
from featmlp.data import DEFAULT_MAX_PIXELS, jpeg_decoder, read_images
from featmlp.errors import DataError, FeatmlpError
from featmlp.features import extract_features, working_bytes
from featmlp.runs.layout import META_FILE
from featmlp.tables.passes import nonfinite_rows

if TYPE_CHECKING:
    from featmlp.runs.bundle import Bundle

# The largest image a bundle may ask new images to be resized to: what reading an image file
# allows (Pillow's own decompression-bomb limit, 89.5 Mpx).
MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS
# Images whose features predict_images computes together: up to this many, and as many as keep
# their decoded pixels and the feature set's working memory within PREDICT_CHUNK_BYTES (one
# image at least: one larger than that is computed alone, when it fits in the memory available).
PREDICT_CHUNK_IMAGES = 256
PREDICT_CHUNK_BYTES = 512 << 20
# Before the working memory of each feature set was counted (featmlp.features.WorkMemory): a
# chunk ended at this many pixels, and 67 bytes a pixel were assumed. Kept for code that reads them.
PREDICT_CHUNK_PIXELS = 1 << 24
PREDICT_BYTES_PER_PIXEL = 3 + 64


def image_bytes(image_size, n_images: int = 1, features: str = "lecture", state: dict | None = None, *,
                threads: int | None = None) -> int:
    """Bytes that ``n_images`` decoded images of ``image_size`` (width, height), their copy as one
    batch and computing their ``features`` (with the fitted ``state``) take
    (:func:`featmlp.features.working_bytes`, on ``threads`` threads, default the kernels').

    Examples
    --------
    >>> image_bytes((32, 32), 256, "color") // 2**10  # KB
    1536
    """
    w, h = (int(v) for v in image_size)
    return 3 * w * h * int(n_images) + working_bytes(features, (h, w), n_images, threads=threads, state=state)


class ImagePrediction(NamedTuple):
    """One image file's prediction (:meth:`Bundle.predict_images`): its most probable class and
    that probability, or, for a file that could not be classified, ``error`` (why, without the path)."""

    path: str | os.PathLike
    class_name: str | None
    probability: float | None
    error: str | None = None
    index: int = 0  # its place among the paths given


def iter_predict_images(bundle: Bundle, paths, *, resize: bool = True):
    """The :class:`ImagePrediction` of each of ``paths`` with ``bundle``, as it goes
    (:meth:`featmlp.runs.bundle.Bundle.predict_images` sorts them into the order given)."""

    jpeg_decoder()  # a bad $FEATMLP_JPEG_DECODER: one error, not one per image
    paths = list(paths)
    size = bundle.extra.get("image_size") if resize else None
    size = tuple(size) if size else None
    if size:
        one = image_bytes(size, 1, bundle.feature_set, bundle.feature_state)
        per_chunk = 1
        while per_chunk < min(PREDICT_CHUNK_IMAGES, len(paths)) and \
                image_bytes(size, per_chunk + 1, bundle.feature_set, bundle.feature_state) <= max(PREDICT_CHUNK_BYTES, one):
            per_chunk += 1
        where = f"image_size in {bundle.directory / META_FILE}" if bundle.directory is not None else "image_size"
        check_memory(image_bytes(size, per_chunk, bundle.feature_set, bundle.feature_state),
                     f"predicting on images resized to {size[0]}x{size[1]} ({where}), {per_chunk} at once,",
                     "check that image_size, or pass --no-resize")

    def failed(index, path, reason) -> ImagePrediction:
        reason = str(reason)
        for prefix in (f"{path}: ", f"cannot read image {path}: "):  # the path is the prediction's own field
            reason = reason.removeprefix(prefix)
        return ImagePrediction(path, None, None, reason, index)

    def classify(chunk):
        """Predictions of decoded images [(index, path, array)]: errors first, then the classes in order."""
        by_shape = {}
        for j, (_, _, arr) in enumerate(chunk):
            by_shape.setdefault(arr.shape, []).append(j)  # resize=False: one batch per size
        results = [None] * len(chunk)
        for shape, rows in by_shape.items():
            items = [chunk[j] for j in rows]
            try:
                X = extract_features(np.stack([arr for _, _, arr in items]), bundle.feature_set,
                                     state=bundle.feature_state)
            except FeatmlpError as e:
                for index, path, _ in items:
                    yield failed(index, path, e)
                continue
            if X.shape[1] != bundle.spec.n_features:
                for index, path, _ in items:
                    yield failed(index, path, f"its {bundle.feature_set} features have {X.shape[1]} values, the "
                                              f"model takes {bundle.spec.n_features}: its size {shape[1]}x{shape[0]} "
                                              f"differs from the training images'"
                                              + ("" if resize else "; drop --no-resize"))
                continue
            bad = set(nonfinite_rows(X).tolist())
            for k in sorted(bad):
                yield failed(items[k][0], items[k][1], f"its {bundle.feature_set} features are NaN or infinite")
            keep = [k for k in range(len(rows)) if k not in bad]
            if not keep:
                continue
            proba = bundle.predict_proba(X[keep])
            best = proba.argmax(axis=1)
            for k, c, p in zip(keep, best, proba[np.arange(len(best)), best]):
                results[rows[k]] = ImagePrediction(items[k][1], bundle.class_names[c], float(p), None, items[k][0])
        yield from (r for r in results if r is not None)

    def chunk_bytes(counts: dict) -> int:
        """Memory of a chunk of ``{(H, W): images}``: every decoded image held, and the largest
        group's copy (np.stack) and feature work (the groups are computed one after another)."""
        held = sum(3 * h * w * n for (h, w), n in counts.items())
        return held + max(image_bytes((w, h), n, bundle.feature_set, bundle.feature_state)
                          for (h, w), n in counts.items())

    free = None if resize else _memory.available_memory()  # resized images were checked above
    chunk, counts = [], {}
    for index, path in enumerate(paths):
        try:
            arr = read_images([path], image_size=size)[0]
        except (DataError, OSError) as e:
            yield failed(index, path, e)
            continue
        hw = arr.shape[:2]
        if not resize and hw[0] * hw[1] > MAX_IMAGE_PIXELS:
            yield failed(index, path, f"{hw[1]}x{hw[0]} is over the {MAX_IMAGE_PIXELS / 1e6:.1f} Mpx "
                                      f"an image may have")
            continue
        if not resize:
            one = image_bytes((hw[1], hw[0]), 1, bundle.feature_set, bundle.feature_state, threads=1)
            if free is not None and one > free:
                del arr
                yield failed(index, path, f"{hw[1]}x{hw[0]}: its {bundle.feature_set} features need about "
                                          f"{format_bytes(one)} of memory, and {format_bytes(free)} is available; "
                                          f"downscale it (drop --no-resize)")
                continue
        grown = {**counts, hw: counts.get(hw, 0) + 1}
        if chunk and (len(chunk) >= PREDICT_CHUNK_IMAGES or chunk_bytes(grown) > PREDICT_CHUNK_BYTES):
            yield from classify(chunk)
            chunk, grown = [], {hw: 1}
            if not resize:
                free = _memory.available_memory()
        chunk.append((index, path, arr))
        counts = grown
    if chunk:
        yield from classify(chunk)

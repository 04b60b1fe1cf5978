"""New images through a saved model: :func:`iter_predict_images`, a chunk of images at a time, within memory.

:meth:`featmlp.runs.bundle.Bundle.predict_images` is what users call; the work is here: list the
images of the sources given (files, folders, archives, tar shards, URLs: :func:`featmlp.data.list_images`),
read and decode a chunk of them together (resized to the training images' size), compute the
bundle's features for the chunk as one batch, scale and classify them, and give each image an
:class:`ImagePrediction` (its k most probable classes, or why it has none). The chunk limits keep
the decoded images and the feature set's working memory bounded, so memory does not grow with
the number of images.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple, Protocol

import numpy as np

from featmlp import _memory  # _memory.available_memory read when called (tests replace it)
from featmlp._memory import check_memory, format_bytes
from featmlp.data import DEFAULT_MAX_PIXELS, jpeg_decoder, list_images
from featmlp.errors import ConfigError, DataError, FeatmlpError
from featmlp.features import extract_features, mirror_images, working_bytes
from featmlp.model.spec import MLPSpec
from featmlp.runs.layout import META_FILE
from featmlp.tables.passes import nonfinite_rows


class Model(Protocol):
    """What predicting new images reads of a model: :class:`featmlp.runs.bundle.Bundle` is one. Named
    here, not imported, so that the bundle (which calls this module) and this module form no circle."""

    spec: MLPSpec
    class_names: tuple
    feature_set: str
    feature_state: dict | None
    extra: dict
    directory: os.PathLike | None
    flips_images: bool

    def predict_proba(self, X, mirror_features=None) -> np.ndarray: ...


# The largest image a bundle may ask new images to be resized to: what reading an image file
# allows (Pillow's own decompression-bomb limit, 89.5 Mpx).
MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS
# Images whose features predict_images computes together: up to this many, and as many as keep
# their decoded pixels and the feature set's working memory within PREDICT_CHUNK_BYTES (one
# image at least: one larger than that is computed alone, when it fits in the memory available).
# 1024 rather than 256: the network and the feature kernels pay a fixed cost a call, and 32x32
# JPEGs went from about 1,600 to 2,100 img/s (lecture) and 1,850 to 2,500 (hog) on 2 CPUs.
PREDICT_CHUNK_IMAGES = 1024
PREDICT_CHUNK_BYTES = 512 << 20
# Before the working memory of each feature set was counted (featmlp.features.WorkMemory): a
# chunk ended at this many pixels, and 67 bytes a pixel were assumed. Kept for code that reads them.
PREDICT_CHUNK_PIXELS = 1 << 24
PREDICT_BYTES_PER_PIXEL = 3 + 64
# Python's repr of an object (<PIL.PngImagePlugin.PngImageFile image mode=RGB ... at 0x7f...>), which
# some of Pillow's messages hold: left out of the one line an unreadable image gets.
_OBJECT_REPR = re.compile(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>")


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
    """One image's prediction (:meth:`Bundle.predict_images`): its most probable class and that
    probability, the ``top`` k ``(class, probability)`` pairs (the first is that class), or, for an
    image that could not be classified, ``error`` (why, in one line, without the image's name).

    ``path`` is the image's name: the file as given, ``<folder>/<relative path>`` for a file found
    in a folder, ``<archive>:<member>`` for a member of an archive or a tar shard.
    """

    path: str
    class_name: str | None
    probability: float | None
    error: str | None = None
    index: int = 0  # its place among the images of the sources given
    top: tuple[tuple[str, float], ...] = ()


def iter_predict_images(bundle: Model, sources, *, resize: bool = True, top_k: int = 1, progress=None,
                        storage_options: dict | None = None):
    """The :class:`ImagePrediction` of each image of ``sources`` with ``bundle``, a chunk at a time, in order.

    ``sources``: image files, folders, archives, tar shards or URLs (:func:`featmlp.data.list_images`).
    ``progress(desc, done, total)`` is told ``("predict", images done, images)`` after each chunk.
    """

    jpeg_decoder()  # a bad $FEATMLP_JPEG_DECODER: one error, not one per image
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= len(bundle.class_names):
        raise ConfigError(f"top_k must be an integer from 1 to the model's {len(bundle.class_names)} classes, "
                          f"got {top_k!r}")
    size = bundle.extra.get("image_size") if resize else None
    size = tuple(size) if size else None
    images = list_images(sources, image_size=size, storage_options=storage_options)
    n = len(images)
    if not n:
        shown = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
        raise DataError(f"no images in {', '.join(map(os.fspath, shown)) or 'no sources'}: give image files, folders "
                        f"holding some, archives or URLs")
    if size:
        one = image_bytes(size, 1, bundle.feature_set, bundle.feature_state)
        per_chunk = 1
        while per_chunk < min(PREDICT_CHUNK_IMAGES, n) and \
                image_bytes(size, per_chunk + 1, bundle.feature_set, bundle.feature_state) <= max(PREDICT_CHUNK_BYTES, one):
            per_chunk += 1
        where = f"image_size in {bundle.directory / META_FILE}" if bundle.directory is not None else "image_size"
        check_memory(image_bytes(size, per_chunk, bundle.feature_set, bundle.feature_state),
                     f"predicting on images resized to {size[0]}x{size[1]} ({where}), {per_chunk} at once,",
                     "check that image_size, or pass --no-resize")
    else:
        per_chunk = 1  # sizes unknown until decoded: one image read at a time, grouped by their memory below

    def failed(index, reason) -> ImagePrediction:
        """The prediction of an image that has none: why, in one line, its name left out (the
        prediction has it)."""
        name = images.name(index)
        reason = _OBJECT_REPR.sub("", str(reason)).replace("\n", " ")
        reason = reason.removeprefix(f"cannot read image {name}: ").removeprefix(f"{name}: ")
        return ImagePrediction(name, None, None, reason.replace(f"{name}: ", "").strip(), index)

    def classify(chunk):
        """Predictions of decoded images [(index, array or error)], in order."""
        by_shape, results = {}, {}
        for index, arr in chunk:
            if isinstance(arr, np.ndarray):
                by_shape.setdefault(arr.shape, []).append((index, arr))  # resize=False: one batch per size
            else:
                results[index] = failed(index, arr)
        for shape, items in by_shape.items():
            try:
                X = extract_features(np.stack([arr for _, arr in items]), bundle.feature_set,
                                     state=bundle.feature_state)
            except FeatmlpError as e:
                results.update((index, failed(index, e)) for index, _ in items)
                continue
            if X.shape[1] != bundle.spec.n_features:
                results.update((index, failed(index, f"its {bundle.feature_set} features have {X.shape[1]} values, "
                                                     f"the model takes {bundle.spec.n_features}: its size {shape[1]}x"
                                                     f"{shape[0]} differs from the training images'"
                                                     + ("" if resize else "; drop --no-resize"))) for index, _ in items)
                continue
            bad = set(nonfinite_rows(X).tolist())
            results.update((items[k][0], failed(items[k][0], f"its {bundle.feature_set} features are NaN or "
                                                             f"infinite")) for k in bad)
            keep = [k for k in range(len(items)) if k not in bad]
            if not keep:
                continue
            mirrored = None
            if bundle.flips_images:  # averaged with the mirror images, as the model was scored
                try:
                    mirrored = extract_features(mirror_images(np.stack([items[k][1] for k in keep])),
                                                bundle.feature_set, state=bundle.feature_state)
                except FeatmlpError as e:
                    results.update((items[k][0], failed(items[k][0], e)) for k in keep)
                    continue
            proba = bundle.predict_proba(X[keep], mirror_features=mirrored)
            best = np.argsort(-proba, axis=1, kind="stable")[:, :top_k]
            for k, order, p in zip(keep, best, proba):
                index = items[k][0]
                top = tuple((bundle.class_names[c], float(p[c])) for c in order)
                results[index] = ImagePrediction(images.name(index), top[0][0], top[0][1], None, index, top)
        return [results[index] for index in sorted(results)]

    def chunk_bytes(counts: dict) -> int:
        """Memory of a chunk of ``{(H, W): images}``: every decoded image held, and the largest
        group's copy (np.stack) and feature work (the groups are computed one after another)."""
        held = sum(3 * h * w * n for (h, w), n in counts.items())
        return held + max(image_bytes((w, h), n, bundle.feature_set, bundle.feature_state)
                          for (h, w), n in counts.items())

    free = None if resize else _memory.available_memory()  # resized images were checked above
    chunk, counts = [], {}
    for start in range(0, n, per_chunk):
        indices = range(start, min(n, start + per_chunk))
        for index, arr in zip(indices, images.decode_each(indices)):
            if isinstance(arr, DataError) or size:
                chunk.append((index, arr))  # resized: the images of a read are one chunk
                continue
            hw = arr.shape[:2]
            if hw[0] * hw[1] > MAX_IMAGE_PIXELS:
                chunk.append((index, f"{hw[1]}x{hw[0]} is over the {MAX_IMAGE_PIXELS / 1e6:.1f} Mpx an image may have"))
                continue
            one = image_bytes((hw[1], hw[0]), 1, bundle.feature_set, bundle.feature_state, threads=1)
            if free is not None and one > free:
                del arr
                chunk.append((index, f"{hw[1]}x{hw[0]}: its {bundle.feature_set} features need about "
                                     f"{format_bytes(one)} of memory, and {format_bytes(free)} is available; "
                                     f"downscale it (drop --no-resize)"))
                continue
            grown = {**counts, hw: counts.get(hw, 0) + 1}
            if counts and (sum(counts.values()) >= PREDICT_CHUNK_IMAGES or chunk_bytes(grown) > PREDICT_CHUNK_BYTES):
                yield from classify(chunk)
                chunk, grown = [], {hw: 1}
                free = _memory.available_memory()
            chunk.append((index, arr))
            counts = grown
        if size or not counts:  # resized: each read is classified whole; errors alone need not wait
            yield from classify(chunk)
            chunk = []
        if progress is not None:
            progress("predict", indices.stop, n)
    if chunk:
        yield from classify(chunk)

"""A trained model on disk: weights in safetensors, everything else in JSON.

A bundle directory holds two files, and a third for fitted feature sets:

- ``model.safetensors``: the network's tensors (safetensors holds tensors only, so reading it
  cannot run code, unlike a pickle);
- ``model.json``: the :class:`~featmlp.model.MLPSpec`, the scaler's parameters, the feature set's
  name, the class names, the featmlp version, caller's extras and the SHA-256 of the weights file,
  so a weights file from another save is caught;
- ``features.safetensors``: the fitted state of a fitted feature set (kmeans: patch mean,
  whitening, dictionary; its settings in ``model.json``) so ``predict`` computes the very
  features the model was trained on, and, for test-time flip averaging, the column
  permutation of mirrored images (``mirror``). Its SHA-256 is in ``model.json`` too.

Both are written atomically; :func:`load_bundle` rebuilds the network from the spec and loads the
tensors into it, with a :class:`~featmlp.errors.DataError` naming what is missing or wrong.
Predicting on image files (:meth:`Bundle.predict_images`) is done by :mod:`featmlp.runs.predict`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from featmlp import __version__
from featmlp._io import atomic_write
from featmlp._memory import check_memory, format_bytes
from featmlp._validation import is_int
from featmlp.errors import DataError, FeatmlpError
from featmlp.features import get_feature_set, state_from_arrays, state_to_arrays
from featmlp.model import MLPSpec, Scaler, parameter_count
from featmlp.model.arrays import ArrayMLP
from featmlp.runs.layout import FEATURE_STATE_FILE, META_FILE, WEIGHTS_FILE
from featmlp.runs.predict import MAX_IMAGE_PIXELS, ImagePrediction, iter_predict_images
from featmlp.tables.passes import is_permutation
from featmlp.tables.store import read_fitted
from featmlp.training import TrainConfig
from featmlp.training.config import SEED_MAX

if TYPE_CHECKING:
    from torch import nn

FORMAT_VERSION = 1


@dataclass
class Bundle:
    """A loaded model: network (eval mode), scaler and what the features and classes are.

    Examples
    --------
    >>> import tempfile
    >>> spec = MLPSpec(3, 2, hidden=(4,))
    >>> X = np.random.default_rng(0).normal(size=(5, 3))
    >>> d = tempfile.mkdtemp()
    >>> _ = save_bundle(d, build_mlp(spec), spec, Scaler.fit(X), "lecture", ["cat", "dog"])
    >>> b = load_bundle(d)
    >>> b.class_names, b.predict_proba(X).shape
    (('cat', 'dog'), (5, 2))
    """

    model: nn.Module
    spec: MLPSpec
    scaler: Scaler
    feature_set: str
    class_names: tuple[str, ...]
    extra: dict = field(default_factory=dict)
    version: str = ""
    feature_state: dict = field(default_factory=dict)
    mirror: np.ndarray | None = None
    directory: Path | None = None  # where it was loaded from (named in messages)

    @property
    def flips_images(self) -> bool:
        """The model averages each image with its mirror image, whose features are extracted from the
        mirrored image (its features have no mirror permutation): :meth:`predict_proba` takes them as
        ``mirror_features``, and :meth:`predict_images` extracts them."""
        return bool((self.extra.get("train") or {}).get("test_flip")) and self.mirror is None

    def predict_proba(self, X, mirror_features=None) -> np.ndarray:
        """Class probabilities for raw features ``X`` (N, F), scaled as in training; rows in order.

        A model trained with test-time flip averaging averages each row with its mirror image:
        ``mirror`` (a permutation of the row), or, where the features have none
        (:attr:`flips_images`), ``mirror_features``: those of each row's mirror image (without
        them, the rows' own probabilities).
        """
        # start-up: torch loads with a loaded model, not with save_bundle
        from featmlp.model import predict_proba

        return predict_proba(self.model, self.scaler, X, mirror=self.mirror,
                             mirror_features=mirror_features if self.flips_images else None)

    def predict(self, X) -> np.ndarray:
        """Index of the most probable class of each row (``class_names[i]`` is its name)."""
        return self.predict_proba(X).argmax(axis=1)

    def predict_images(self, sources, *, resize: bool = True, top_k: int = 1, progress=None,
                       storage_options: dict | None = None) -> list[ImagePrediction]:
        """The class of each image of ``sources``, in order: an :class:`ImagePrediction` per image,
        with its ``top_k`` most probable classes and their probabilities, or the reason it has none
        (``error``: unreadable, too large, features of another length, NaN features).

        ``sources`` is an image file, a folder (every image file under it, in a sorted walk), a
        .zip/.tar/.tar.gz archive or tar shard, an fsspec URL to any of these
        (``storage_options``: its filesystem's settings), or a list of them
        (:func:`featmlp.data.list_images`). Images are resized (bilinear) to the size of the
        images the model was trained on (``extra["image_size"]``), so their features describe
        the same scale; ``resize=False`` keeps each image's size. Images are read, decoded and
        their features computed with the bundle's fitted state a chunk at a time: up to
        :data:`PREDICT_CHUNK_IMAGES`, and as many as keep the decoded images and the feature
        set's working memory (:func:`featmlp.features.working_bytes`) within
        :data:`PREDICT_CHUNK_BYTES`, so memory does not grow with the number of images. An image
        whose features alone would not fit in the memory available gets an ``error`` (downscale
        it) instead of the process being killed. ``progress(desc, done, total)`` is told
        ``("predict", images done, images)``.

        Raises
        ------
        FeatmlpError
            A chunk of images of the model's image size would not fit in memory (before any is
            read), a source cannot be listed, or ``top_k`` is not from 1 to the number of classes.

        Examples
        --------
        >>> [(p.class_name, p.error) for p in load_bundle("runs/r").predict_images(["cat.png", "x.txt"])]  # doctest: +SKIP
        [('cat', None), (None, 'not a readable image (Pillow cannot identify it)')]
        >>> load_bundle("runs/r").predict_images("photos/", top_k=2)[0].top  # doctest: +SKIP
        (('cat', 0.91), ('dog', 0.06))
        """
        return list(iter_predict_images(self, sources, resize=resize, top_k=top_k, progress=progress,
                                        storage_options=storage_options))

    def iter_predict_images(self, sources, *, resize: bool = True, top_k: int = 1, progress=None,
                            storage_options: dict | None = None):
        """:meth:`predict_images` as it goes: the predictions of a chunk of images once computed, in order."""
        return iter_predict_images(self, sources, resize=resize, top_k=top_k, progress=progress,
                                   storage_options=storage_options)


def save_bundle(
    directory: str | os.PathLike,
    model: nn.Module | ArrayMLP,
    spec: MLPSpec,
    scaler: Scaler,
    feature_set: str,
    class_names,
    extra: dict | None = None,
    *,
    feature_state: dict | None = None,
    mirror=None,
) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``directory`` (created if needed).

    Parameters
    ----------
    directory : path
        Where to write; existing bundle files are replaced atomically.
    model, spec, scaler
        The trained network, its spec and the fitted scaler (e.g. from a ``TrainResult``).
    feature_set : str
        Name of the feature set the model was trained on, so predictions use the same.
    class_names : sequence of str
        One name per output, in order.
    extra : dict, optional
        JSON-serialisable information to keep beside (training config, metrics ...).
    feature_state : dict, optional
        Fitted state of the feature set (:func:`featmlp.features.fit_features`).
    mirror : array of int, optional
        Column permutation of mirrored images' features: predictions average each row with
        its mirror image (test-time flip averaging).

    Returns
    -------
    Path
        The directory.
    """
    directory = Path(directory)
    class_names = [str(c) for c in class_names]
    if len(class_names) != spec.n_classes:
        raise DataError(f"{len(class_names)} class names for a model with {spec.n_classes} outputs")
    if scaler.n_features != spec.n_features:
        raise DataError(
            f"scaler fitted on {scaler.n_features} features, model takes {spec.n_features}"
        )
    if isinstance(model, ArrayMLP):  # the numpy engine's network: the same names, shapes and bytes
        from safetensors.numpy import save as save_arrays

        weights = save_arrays({k: np.ascontiguousarray(v, np.float32) for k, v in model.state_dict().items()})
    else:
        # start-up: safetensors' torch module imports torch
        from safetensors.torch import save

        # Clone: safetensors refuses tensors that share storage, and it needs contiguous CPU tensors.
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
        weights = save(tensors)
    scaler_dict = scaler.to_dict()
    meta = {
        "format_version": FORMAT_VERSION,
        "featmlp_version": __version__,
        "spec": spec.to_dict(),
        "scaler": {"kind": scaler_dict["kind"], "offset": scaler_dict["offset"].tolist(),
                   "scale": scaler_dict["scale"].tolist()},
        "feature_set": str(feature_set),
        "class_names": class_names,
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "extra": extra or {},
    }
    state_bytes = None
    if feature_state or mirror is not None:
        from safetensors.numpy import save as save_arrays

        settings, arrays = state_to_arrays(feature_state or {})
        if mirror is not None:
            mirror = np.asarray(mirror, np.int64)
            if not is_permutation(mirror, spec.n_features):
                raise DataError(f"mirror must be a permutation of the model's {spec.n_features} inputs")
            arrays["mirror"] = mirror
        state_bytes = save_arrays({k: np.ascontiguousarray(v) for k, v in arrays.items()})
        meta["feature_state"] = {"settings": settings, "sha256": hashlib.sha256(state_bytes).hexdigest()}
    try:
        meta_text = json.dumps(meta, indent=2, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise DataError(f"bundle metadata (extra) is not JSON-serialisable: {exc}") from None
    try:  # what load_bundle would refuse is not written
        _check_fields(json.loads(meta_text))
    except (FeatmlpError, ValueError) as exc:
        raise DataError(f"cannot save this model: {exc}") from None
    with atomic_write(directory / WEIGHTS_FILE, "wb") as f:
        f.write(weights)
    if state_bytes is not None:
        with atomic_write(directory / FEATURE_STATE_FILE, "wb") as f:
            f.write(state_bytes)
    with atomic_write(directory / META_FILE, "w") as f:
        f.write(meta_text + "\n")
    return directory


def load_bundle(directory: str | os.PathLike, *, device: str = "cpu") -> Bundle:
    """Read a bundle written by :func:`save_bundle`; never executes code from the files.

    Raises
    ------
    DataError
        A file is missing, unreadable, corrupt, or the two files do not match each other.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    # start-up: torch loads when a model is loaded (save_bundle needs none for the numpy engine's)
    from featmlp.model import build_mlp

    directory = Path(directory)
    meta_path, weights_path = directory / META_FILE, directory / WEIGHTS_FILE
    meta = _read_meta(directory)
    try:
        _check_fields(meta)
        spec = MLPSpec.from_dict(meta["spec"])
        spec.validate()
        scaler = Scaler.from_dict(meta["scaler"])
        class_names = tuple(meta["class_names"])
        feature_set = meta["feature_set"]
        expected_sha = meta["weights_sha256"]
        extra = meta.get("extra") or {}
    except KeyError as exc:
        raise DataError(f"{meta_path} lacks the field {exc.args[0]!r}") from None
    except (FeatmlpError, TypeError, ValueError) as exc:
        raise DataError(f"{meta_path} holds an invalid model description: {exc}") from None
    if len(class_names) != spec.n_classes:
        raise DataError(
            f"{meta_path}: {len(class_names)} class names for a model with {spec.n_classes} outputs"
        )
    if scaler.n_features != spec.n_features:
        raise DataError(
            f"{meta_path}: scaler has {scaler.n_features} features, model takes {spec.n_features}"
        )
    feature_state, mirror = _read_state(directory, meta)
    if mirror is not None and not is_permutation(mirror, spec.n_features):
        raise DataError(f"{directory / FEATURE_STATE_FILE}: 'mirror' is not a permutation of the "
                        f"model's {spec.n_features} inputs")

    try:
        weights = weights_path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {weights_path}: {exc}") from None
    # The spec decides what build_mlp allocates: a spec of more float32 parameters than the
    # weights file holds cannot be this file's network, and is refused before it is built.
    n_params = parameter_count(spec)
    if 4 * n_params > len(weights):
        raise DataError(f"{meta_path} describes a network of {n_params:,} parameters ({format_bytes(4 * n_params)}), "
                        f"and {weights_path} holds {format_bytes(len(weights))}: the files do not belong together")
    check_memory(2 * 4 * n_params, f"loading the network in {meta_path} ({n_params:,} parameters)",
                 "free memory or load it on a larger machine")
    if hashlib.sha256(weights).hexdigest() != expected_sha:
        raise DataError(
            f"{weights_path} does not match {meta_path} (different checksum): the files come from "
            f"different saves or one is damaged; save the model again"
        )
    try:
        tensors = load(weights)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise DataError(f"{weights_path} is not a valid safetensors file: {exc}") from None

    model = build_mlp(spec)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors)
                   if tuple(tensors[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        raise DataError(
            f"{weights_path} does not fit the model in {meta_path}: missing {missing}, "
            f"unexpected {unexpected}, wrong shape {wrong}"
        )
    model.load_state_dict(tensors)
    model.to(device).eval()
    return Bundle(model, spec, scaler, feature_set, class_names, extra,
                  str(meta.get("featmlp_version", "")), feature_state, mirror, directory)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_fields(meta: dict) -> None:
    """Raise ``ValueError`` naming the first field of ``model.json`` of a wrong type or range.

    :meth:`MLPSpec.validate` and :meth:`Scaler.from_dict` check their own values; this checks
    the types JSON could hold instead (strings for numbers, numbers for names ...).
    """
    spec = meta["spec"]
    if not isinstance(spec, dict):
        raise ValueError(f"spec must be an object, got {spec!r:.80}")
    scaler = meta["scaler"]
    if not isinstance(scaler, dict):
        raise ValueError(f"scaler must be an object, got {scaler!r:.80}")
    for key in ("offset", "scale"):
        values = scaler.get(key)
        if not isinstance(values, list) or not all(_is_number(v) for v in values):
            raise ValueError(f"scaler {key} must be a list of numbers, got {values!r:.80}")
    names = meta["class_names"]
    if not isinstance(names, list) or not all(isinstance(c, str) and c for c in names):
        raise ValueError(f"class_names must be a list of non-empty strings, got {names!r:.80}")
    if len(set(names)) != len(names):
        raise ValueError(f"class_names must be distinct, got {names!r:.80}")
    feature_set = meta["feature_set"]
    if not isinstance(feature_set, str):
        raise ValueError(f"feature_set must be a name, got {feature_set!r:.80}")
    if feature_set != "unknown":  # a model trained on features of no known set (the API)
        get_feature_set(feature_set)
    sha = meta["weights_sha256"]
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        raise ValueError(f"weights_sha256 must be 64 hexadecimal digits, got {sha!r:.80}")
    if not isinstance(meta.get("featmlp_version", ""), str):
        raise ValueError(f"featmlp_version must be a string, got {meta['featmlp_version']!r:.80}")
    extra = meta.get("extra") or {}
    if not isinstance(extra, dict):
        raise ValueError(f"extra must be an object, got {extra!r:.80}")
    size = extra.get("image_size")
    if size is not None:
        if not (isinstance(size, list) and len(size) == 2 and all(is_int(v) and v >= 1 for v in size)):
            raise ValueError(f"extra.image_size must be [width, height], two positive integers, got {size!r:.80}")
        if size[0] * size[1] > MAX_IMAGE_PIXELS:
            raise ValueError(f"extra.image_size {size[0]}x{size[1]} is {size[0] * size[1] / 1e6:.0f} Mpx, over the "
                             f"{MAX_IMAGE_PIXELS / 1e6:.1f} Mpx an image may have")
    if extra.get("train") is not None:
        import dataclasses

        if not isinstance(extra["train"], dict):
            raise ValueError(f"extra.train must be an object, got {extra['train']!r:.80}")
        train = TrainConfig.from_dict(extra["train"])
        if is_int(train.seed) and train.seed > SEED_MAX:
            # trained before seeds were bounded (torch took up to 2**64 - 1 when no split was drawn):
            # the seed only records how the model was trained, and reads as it was.
            train = dataclasses.replace(train, seed=0)
        train.validate()
    state = meta.get("feature_state")
    if state is not None and not (isinstance(state, dict) and isinstance(state.get("settings", {}), dict)):
        raise ValueError(f"feature_state must be an object with its settings, got {state!r:.80}")


def read_feature_state(directory: str | os.PathLike) -> tuple[str, dict]:
    """A bundle's feature set name and fitted feature state, without loading the network."""
    meta = _read_meta(Path(directory))
    return str(meta.get("feature_set", "unknown")), _read_state(Path(directory), meta)[0]


def load_fitted(path: str | os.PathLike) -> tuple[str, dict]:
    """The feature set and fitted state of a feature file or a run directory (``--fitted-from``).

    Returns ``(feature set name, state)``; a :class:`DataError` when the path holds none.
    """
    path = Path(path)
    if path.is_dir():
        feature_set, state = read_feature_state(path)
        if not state:
            raise DataError(f"the model in {path} was trained on {feature_set} features, which have no fitted "
                            f"state: use a run of a fitted set such as kmeans")
        return feature_set, state
    table_meta, state = read_fitted(path)
    if not state:
        raise DataError(f"{path} holds no fitted feature state (its features are "
                        f"{table_meta.get('features', 'unknown')}): use a run or feature file of a fitted set such as kmeans")
    return table_meta.get("features", "+".join(state)), state


def _read_state(directory: Path, meta: dict) -> tuple[dict, np.ndarray | None]:
    info = meta.get("feature_state")
    if info is None:
        return {}, None
    from safetensors import SafetensorError
    from safetensors.numpy import load as load_arrays

    path = directory / FEATURE_STATE_FILE
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path} (the model's fitted feature state): {exc}") from None
    if not isinstance(info, dict) or hashlib.sha256(data).hexdigest() != info.get("sha256"):
        raise DataError(f"{path} does not match {directory / META_FILE} (different checksum): the files "
                        f"come from different saves or one is damaged; save the model again")
    try:
        arrays = load_arrays(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise DataError(f"{path} is not a valid safetensors file: {exc}") from None
    mirror = arrays.pop("mirror", None)
    try:
        state = state_from_arrays(info.get("settings") or {}, arrays)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    return state, mirror


def _read_meta(directory: Path) -> dict:
    meta_path, weights_path = directory / META_FILE, directory / WEIGHTS_FILE
    for path in (meta_path, weights_path):
        if not path.is_file():
            raise DataError(
                f"{path} not found: a model bundle directory holds {META_FILE} and {WEIGHTS_FILE} "
                f"(written by training with --out)"
            )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{meta_path} is not readable JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise DataError(f"{meta_path} does not hold a JSON object")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise DataError(
            f"{meta_path} has format_version {version!r}; this featmlp ({__version__}) reads "
            f"versions up to {FORMAT_VERSION}: upgrade featmlp"
        )
    return meta

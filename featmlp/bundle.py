"""A trained model on disk: weights in safetensors, everything else in JSON.

A bundle directory holds two files:

- ``model.safetensors``: the network's tensors (safetensors holds tensors only, so reading it
  cannot run code, unlike a pickle);
- ``model.json``: the :class:`~featmlp.model.MLPSpec`, the scaler's parameters, the feature set's
  name, the class names, the featmlp version, caller's extras and the SHA-256 of the weights file,
  so a weights file from another save is caught.

Both are written atomically; :func:`load_bundle` rebuilds the network from the spec and loads the
tensors into it, with a :class:`~featmlp.errors.DataError` naming what is missing or wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from featmlp import __version__
from featmlp._io import atomic_write
from featmlp.errors import DataError, FeatmlpError
from featmlp.model import MLPSpec, Scaler, build_mlp, predict_proba

WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
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

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities for raw features ``X`` (N, F), scaled as in training; rows in order."""
        return predict_proba(self.model, self.scaler, X)

    def predict(self, X) -> np.ndarray:
        """Index of the most probable class of each row (``class_names[i]`` is its name)."""
        return self.predict_proba(X).argmax(axis=1)


def save_bundle(
    directory: str | os.PathLike,
    model: nn.Module,
    spec: MLPSpec,
    scaler: Scaler,
    feature_set: str,
    class_names,
    extra: dict | None = None,
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

    Returns
    -------
    Path
        The directory.
    """
    from safetensors.torch import save

    directory = Path(directory)
    class_names = [str(c) for c in class_names]
    if len(class_names) != spec.n_classes:
        raise DataError(f"{len(class_names)} class names for a model with {spec.n_classes} outputs")
    if scaler.n_features != spec.n_features:
        raise DataError(
            f"scaler fitted on {scaler.n_features} features, model takes {spec.n_features}"
        )
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
    try:
        meta_text = json.dumps(meta, indent=2, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise DataError(f"bundle metadata (extra) is not JSON-serialisable: {exc}") from None
    with atomic_write(directory / WEIGHTS_FILE, "wb") as f:
        f.write(weights)
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

    directory = Path(directory)
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
    try:
        spec = MLPSpec.from_dict(meta["spec"])
        spec.validate()
        scaler = Scaler.from_dict(meta["scaler"])
        class_names = tuple(str(c) for c in meta["class_names"])
        feature_set = str(meta["feature_set"])
        expected_sha = str(meta["weights_sha256"])
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

    try:
        weights = weights_path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {weights_path}: {exc}") from None
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
                  str(meta.get("featmlp_version", "")))

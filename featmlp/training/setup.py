"""The set-up shared by :func:`featmlp.training.train`, :func:`featmlp.training.lr_find.lr_find` and the stacked sweep.

Each of them picks the device, holds out the validation rows, weighs the classes and draws the
initial weights the same way, from the functions here, so that a learning rate found by
``lr_find`` or a configuration trained in a sweep means what it means to ``train``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from featmlp.errors import ConfigError
from featmlp.model import MLPSpec, Scaler, build_mlp
from featmlp.tables.sharded import ShardedArray
from featmlp.training.config import TrainConfig, validation_size


@dataclass
class TrainingRows:
    """What a run trains on: the rows after the validation split, their device and their scaler."""

    X: np.ndarray
    y: np.ndarray
    X_val: np.ndarray | None
    y_val: np.ndarray | None
    device: torch.device
    scaler: Scaler
    # The indices in the given X of the training rows, in training order (None: all, in order).
    # A streamed table keeps X whole (on disk) and trains on these rows of it.
    rows: np.ndarray | None = None

    def spec(self, config: TrainConfig, n_classes: int) -> MLPSpec:
        """The network of ``config`` for these rows."""
        return config.spec(self.X.shape[1], n_classes)


def training_rows(X, y, config: TrainConfig, *, X_val=None, y_val=None, mirror=None) -> TrainingRows:
    """Hold out ``config.val_fraction`` of checked rows, pick the device, fit the scaler on the rest.

    In that order, as :func:`featmlp.training.train`, :func:`featmlp.training.lr_find.lr_find` and the stacked
    sweep did each on its own. With ``config.flip`` and ``mirror``, the scaler is that of the
    training rows and their mirror images together.

    A :class:`~featmlp.tables.sharded.ShardedArray` ``X`` (a table streamed from disk) stays where it
    is: the validation rows, chosen as in memory, are gathered into memory, the scaler is
    fitted on the other rows in a pass over the shards, and ``rows`` says which they are.
    """
    rows = None
    if config.val_fraction:
        rows, va = validation_indices(y, config.val_fraction, config.seed)
        X_val, y_val, y = X[va], y[va], y[rows]  # X[va] of a ShardedArray: a gather, shard by shard
        if not isinstance(X, ShardedArray):
            X = X[rows]
    device = resolve_device(config.device)
    fit_rows = np.sort(rows) if isinstance(X, ShardedArray) and rows is not None else None
    scaler = Scaler.fit(X, config.scaler, mirror=mirror if config.flip else None, rows=fit_rows)
    return TrainingRows(X, y, X_val, y_val, device, scaler, rows)


@contextlib.contextmanager


def seeded(device: torch.device):
    """Leave the caller's random state as it was: fork torch's generators (CUDA's on ``device``).

    Inside, :func:`initial_model` seeds the global generator (initial weights, dropout).
    """
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        yield


def initial_model(spec: MLPSpec, seed: int, device: torch.device):
    """The network :func:`featmlp.training.train` starts from: ``seed``, then :func:`build_mlp`."""
    torch.manual_seed(seed)
    return build_mlp(spec).to(device)


def batch_order_rng(seed: int) -> torch.Generator:
    """The generator of the minibatch order, apart from the global one (so dropout does not move it)."""
    return torch.Generator().manual_seed(seed)


def class_weights(y: np.ndarray, n_classes: int, mode) -> np.ndarray:
    """One loss weight per class index for ``config.class_weight`` ``mode`` (None: all 1)."""
    if mode is None:
        return np.ones(n_classes, np.float32)
    if mode != "balanced":
        if len(mode) != n_classes:
            raise ConfigError(f"class_weight has {len(mode)} weights for {n_classes} classes")
        return np.asarray(mode, np.float32)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.ones(n_classes)
    weights[present] = len(y) / (present.sum() * counts[present])
    return weights.astype(np.float32)


def split_validation(X, y, fraction, seed):
    """``X, y, X_val, y_val``: ``fraction`` of the rows held out, stratified and seeded."""
    tr, va = validation_indices(y, fraction, seed)
    return X[tr], y[tr], X[va], y[va]


def validation_indices(y, fraction, seed) -> tuple[np.ndarray, np.ndarray]:
    """``(training rows, validation rows)``: indices of ``fraction`` of the labels ``y`` held out,
    stratified and seeded (from the labels alone: a table on disk is split without reading it).

    Examples
    --------
    >>> tr, va = validation_indices(np.array([0, 1] * 5), 0.2, seed=0)
    >>> len(tr), len(va), sorted(np.r_[tr, va].tolist()) == list(range(10))
    (8, 2, True)
    """
    from sklearn.model_selection import train_test_split

    n_val = validation_size(len(y), fraction)
    idx = np.arange(len(y))
    try:
        return tuple(train_test_split(idx, test_size=n_val, stratify=y, random_state=seed))
    except ValueError:
        # Too few members in some class to stratify: split at random instead.
        return tuple(train_test_split(idx, test_size=n_val, random_state=seed))


def resolve_device(name: str) -> torch.device:
    """The torch device of ``config.device`` (``"auto"``: CUDA when available); ConfigError when absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but CUDA is not available: use auto or cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device {name!r} is not one of: auto, cpu, cuda, cuda:N") from None

"""The set-up shared by :func:`featmlp.training.train`, :func:`featmlp.training.lr_find.lr_find` and the stacked sweep.

Each of them checks its inputs, picks the device, holds out the validation rows, fits the
scaler, weighs the classes and draws the initial weights the same way, from the functions
here, so that a learning rate found by ``lr_find`` or a configuration trained in a sweep means
what it means to ``train``. The per-epoch arithmetic they share (the loss, accuracy and
finiteness of an epoch in one device sync, the minibatch weights, the lecture's gradient
scale) is here too.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from featmlp._memory import check_memory, format_bytes
from featmlp.errors import ConfigError, DataError
from featmlp.model import MLPSpec, Scaler, build_mlp, training_bytes
from featmlp.tables.passes import is_permutation, nonfinite_rows
from featmlp.tables.sharded import ShardedArray
from featmlp.tables.store import label_indices, real_features
from featmlp.training.config import PRESETS, TrainConfig
from featmlp.training.optim import OPTIMIZERS
from featmlp.training.stream import CACHED_SHARDS, GD_CHUNK_ROWS, streams


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


def gd_gradient_scale(config: TrainConfig, n: int) -> int:
    """The lecture's factor on full-batch ``"gd"``'s gradient: ``ceil(n / lecture_batch_size)``, else 1.

    The notebook stepped on the sum of the mean losses of its minibatches (see
    :mod:`featmlp.training.loop`); ``lecture_batch_size`` reruns that literally.
    """
    if OPTIMIZERS[config.optimizer].full_batch and config.lecture_batch_size:
        return math.ceil(n / config.lecture_batch_size)
    return 1


def evaluate(model, X, y, w, loss_fn) -> tuple[float, float]:
    """Weighted mean loss and accuracy of the model (eval mode) on ``X``, in chunks."""
    model.eval()
    with torch.inference_mode():
        logits = torch.cat([model(xb) for xb in X.split(65536)])
        loss, acc, _ = loss_accuracy(logits, 1, y, w, loss_fn, None)
    model.train()
    return loss, acc


def within_batch_weights(w: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``w_i / sum of w over sample i's batch``: each step minimises its batch's weighted mean."""
    n = len(w)
    n_batches = math.ceil(n / batch_size)
    padded = torch.nn.functional.pad(w, (0, n_batches * batch_size - n))
    sums = padded.view(n_batches, batch_size).sum(1)
    return w / sums.repeat_interleave(batch_size)[:n]


def loss_accuracy(logits, dim, y, w, loss_fn, flat, losses=None) -> tuple[float, float, bool]:
    """Weighted mean loss, accuracy and whether ``flat`` is all finite, with one device sync.

    ``dim`` is the class axis of ``logits``; ``losses`` the per-sample losses when already
    known. Accuracy compares the true class's logit with the largest: on (10, 50,000) logits
    ``amax`` + ``gather`` take ~0.1 ms, ``argmax`` ~6 ms.
    """
    if losses is None:
        losses = loss_fn(logits, y, dim)
    loss = (losses * w).sum() / w.sum()
    true_logit = logits.gather(dim, y.unsqueeze(dim)).squeeze(dim)
    acc = (true_logit >= logits.amax(dim)).to(logits.dtype).mean()
    finite = torch.isfinite(flat).all().to(logits.dtype) if flat is not None else loss.new_ones(())
    loss, acc, finite = torch.stack([loss, acc, finite]).tolist()
    return loss, acc, bool(finite)


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


def validation_size(n: int, fraction: float) -> int:
    """Rows held out of ``n`` for validation; DataError when either side would be empty."""
    n_val = math.ceil(n * fraction)
    if n_val < 1 or n - n_val < 1:
        raise DataError(f"val_fraction={fraction} leaves no training or validation rows out of {n}")
    return n_val


def _check_is_config(config) -> None:
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig, got {type(config).__name__}")


def _check_patience(config: TrainConfig, has_validation: bool) -> None:
    if config.patience and not has_validation:
        raise ConfigError(
            f"patience={config.patience} (early stopping) needs validation data: set "
            f"val_fraction > 0 or pass X_val and y_val"
        )


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


def check_config(config: TrainConfig, *, validation_data: bool = False) -> None:
    """Raise the error :func:`train` would raise on these settings alone, whatever the data:
    a bad value, a device this machine lacks (``cuda`` without CUDA), early stopping without
    validation (``validation_data``: X_val and y_val will be passed).

    ``featmlp run`` checks this before a long extraction.
    """
    _check_is_config(config)
    config.validate()
    resolve_device(config.device)
    _check_patience(config, bool(config.val_fraction) or validation_data)


def check_training(X, y, config: TrainConfig | None = None, *, n_classes: int | None = None,
                   X_val=None, y_val=None, mirror=None, out_of_core: bool | None = None) -> None:
    """Raise the error :func:`train` would raise on these arguments before its first epoch.

    Checks the settings, the data (shapes, labels, NaN or infinite values), that the
    validation split leaves rows on both sides, early stopping's need of validation data,
    flips' need of a mirror permutation, that the device exists and that the network fits in
    its memory, without copying or training anything: a run directory calls it before it
    writes a file. A sharded table (:class:`~featmlp.tables.sharded.ShardedArray`) is not read into
    memory: its NaN check is a pass over its shards, and the memory asked for is that of
    streaming it (a shard or two and a batch, ``out_of_core``) or of reading it whole.

    Examples
    --------
    >>> check_training(np.zeros((4, 2)), [0, 1, 0, 1], TrainConfig(patience=3))
    Traceback (most recent call last):
    ...
    featmlp.errors.ConfigError: patience=3 (early stopping) needs validation data: set val_fraction > 0 or pass X_val and y_val
    """
    checked_inputs(X, y, PRESETS["default"] if config is None else config, n_classes, X_val, y_val, mirror,
                   out_of_core)


def checked_inputs(X, y, config, n_classes, X_val, y_val, mirror, out_of_core=None):
    """The arguments of :func:`train`, checked and converted (the validation split is not made).

    Returns ``X, y, X_val, y_val, n_classes, mirror, device, streamed``; a sharded ``X`` (or
    ``X_val``) comes back as it is, unread: ``streamed`` says whether training streams it
    (:func:`featmlp.training.stream.streams`) or reads it into memory.
    """
    _check_is_config(config)
    config.validate()
    streamed = streams(X, out_of_core)
    full_batch = OPTIMIZERS[config.optimizer].full_batch
    if streamed and full_batch and config.batch_norm:
        raise ConfigError(f"batch_norm with full-batch optimizer {config.optimizer!r} on a table streamed from disk "
                          f"would normalise each shard by its own statistics, not the whole set as in memory: use a "
                          f"minibatch optimizer (adam, sgd), train without batch norm, or read the table into "
                          f"memory (out_of_core=False)")
    X, y = check_data(X, y, "X", "y")
    if n_classes is None:
        n_classes = int(y.max()) + 1
        if y_val is not None:
            n_classes = max(n_classes, int(np.max(y_val)) + 1)
    check_labels(y, n_classes, "y")
    if X_val is not None or y_val is not None:
        if X_val is None or y_val is None:
            raise ConfigError("pass both X_val and y_val, or neither")
        if config.val_fraction:
            raise ConfigError(
                f"validation data was given and val_fraction is {config.val_fraction}: "
                f"use one of them (set val_fraction=0)"
            )
        X_val, y_val = check_data(X_val, y_val, "X_val", "y_val")
        check_labels(y_val, n_classes, "y_val")
        if X_val.shape[1] != X.shape[1]:
            raise DataError(
                f"X_val has {X_val.shape[1]} features per sample but X has {X.shape[1]}"
            )
    n_train = len(y)
    if config.val_fraction:
        n_train -= validation_size(len(y), config.val_fraction)
    _check_patience(config, X_val is not None or bool(config.val_fraction))

    if config.flip or config.test_flip:
        if mirror is None:
            raise ConfigError("flip / test_flip need the feature set's mirror permutation, and these "
                              "features have none (kmeans, color and the pretrained sets with mirror=true have "
                              "one; lecture and hog do not): use --features kmeans, extract efficientnet-lite0 "
                              "with its mirror images (the default), or train without --flip / --test-flip")
        mirror = np.asarray(mirror)
        if not is_permutation(mirror, X.shape[1]):
            raise ConfigError(f"mirror must be a permutation of the {X.shape[1]} feature columns")
    mirror = mirror.astype(np.int64) if config.flip or config.test_flip else None

    spec = config.spec(X.shape[1], n_classes)
    spec.validate()
    device = resolve_device(config.device)
    _check_training_memory(X, X_val, spec, config, n_train, len(y) - n_train, streamed, device)
    return X, y, X_val, y_val, n_classes, mirror, device, streamed


def _check_training_memory(X, X_val, spec, config, n_train, n_val, streamed, device) -> None:
    """Refuse (ConfigError) a run whose network, batch and rows will not fit in memory.

    In memory: the network's estimate (:func:`featmlp.model.training_bytes`), plus the table
    itself when a sharded one is read whole. Streamed: no copies of the rows, only a batch,
    the shards kept mapped and the validation rows gathered into memory.
    """
    rows = 2 * n_train if config.flip else n_train
    full_batch = OPTIMIZERS[config.optimizer].full_batch
    sizes = " -> ".join(str(w) for w in spec.widths)
    advice = "use smaller layers (--hidden, --bottleneck) or a smaller --batch-size"
    row_bytes = 4 * int(X.shape[1])
    loaded = X_val.nbytes if isinstance(X_val, ShardedArray) else 0
    if streamed:
        batch = min(rows, GD_CHUNK_ROWS) if full_batch else config.batch_size
        shards = CACHED_SHARDS * int(X.shard_rows.max(initial=0)) * row_bytes
        need = training_bytes(spec, batch, rows, copies=False) + shards + n_val * row_bytes + loaded
        what = (f"training the network {sizes} on {rows} rows streamed from {X.n_shards} shards of up to "
                f"{int(X.shard_rows.max(initial=0))} rows (batch {min(batch, rows)})")
        advice += ", or write the table in smaller shards (save_sharded(..., shard_rows=...))"
    else:
        batch = rows if full_batch else config.batch_size
        need = training_bytes(spec, batch, rows) + loaded
        what = f"training the network {sizes} on {rows} rows (batch {min(batch, rows)})"
        if isinstance(X, ShardedArray):
            need += X.nbytes
            what += f" read into memory ({format_bytes(X.nbytes)})"
            advice += ", or stream the table from disk (out_of_core=True)"
    check_memory(need, what, advice, device=str(device))


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


def check_data(X, y, xname: str, yname: str) -> tuple[np.ndarray, np.ndarray]:
    """Features as float32/float64 (N, F) without NaN, labels as int64 (N,); DataError otherwise.

    A :class:`~featmlp.tables.sharded.ShardedArray` (float32) stays on disk: its NaN check reads one
    shard at a time.
    """
    try:
        if not isinstance(X, ShardedArray):
            # float32 stays (learned features are large); complex, text and objects are refused, not cast
            X = real_features(X, xname)
    except (TypeError, ValueError):
        raise DataError(f"{xname} must be a numeric array of shape (N, F)") from None
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(f"{xname} must have shape (N, F) with N, F >= 1, got {X.shape}")
    bad = nonfinite_rows(X)
    if len(bad):
        raise DataError(f"{xname} contains NaN or infinite values in {len(bad)} of {len(X)} rows (first: row "
                        f"{bad[0]}): clean or impute them first")
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(X):
        raise DataError(f"{yname} must have shape ({len(X)},) to match {xname}, got {y.shape}")
    # whole-number floats are taken; fractions, NaN, infinities, booleans and strings refused, never floored
    return X, label_indices(y, yname)


def check_labels(y: np.ndarray, n_classes: int, name: str) -> None:
    """DataError unless every label lies in ``0 .. n_classes - 1``."""
    if y.min() < 0 or y.max() >= n_classes:
        raise DataError(
            f"{name} holds labels from {y.min()} to {y.max()}, outside 0 .. {n_classes - 1}"
        )

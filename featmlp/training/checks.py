"""The checks of a training run's settings and inputs, before anything is computed or written.

:func:`check_config` and :func:`check_training` are public (``featmlp.training``);
:func:`checked_inputs` is what :func:`featmlp.training.train` runs first: the settings, the
labels, the rows, the device and the memory the run will take, each refused with a message that
names the value and what to do.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from featmlp._memory import check_memory, format_bytes
from featmlp.errors import ConfigError, DataError
from featmlp.model.spec import training_bytes
from featmlp.tables.passes import is_permutation, nonfinite_rows
from featmlp.tables.sharded import ShardedArray
from featmlp.tables.store import label_indices, real_features
from featmlp.training.config import FULL_BATCH_OPTIMIZERS, PRESETS, TrainConfig, validation_size


def _check_is_config(config) -> None:
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig, got {type(config).__name__}")


def _check_patience(config: TrainConfig, has_validation: bool) -> None:
    if config.patience and not has_validation:
        raise ConfigError(
            f"patience={config.patience} (early stopping) needs validation data: set "
            f"val_fraction > 0 or pass X_val and y_val"
        )


def check_config(config: TrainConfig, *, validation_data: bool = False) -> None:
    """Raise the error :func:`train` would raise on these settings alone, whatever the data:
    a bad value, a device this machine lacks (``cuda`` without CUDA), early stopping without
    validation (``validation_data``: X_val and y_val will be passed).

    ``featmlp run`` checks this before a long extraction.
    """
    _check_is_config(config)
    config.validate()
    _checked_device(config.device)
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
                   out_of_core, resolve_device=False)


def cpu_for_certain(device: str) -> bool:
    """Whether ``device`` means the CPU without asking torch: ``"cpu"``, or ``"auto"`` where no
    NVIDIA driver is loaded (no ``/proc/driver/nvidia`` on Linux; macOS has no CUDA)."""
    if device == "cpu":
        return True
    return device == "auto" and (sys.platform == "darwin" or (
        sys.platform.startswith("linux") and not os.path.exists("/proc/driver/nvidia")))


def _checked_device(name: str):
    """ConfigError for a device this machine lacks; asks torch only where the name does not say "CPU"."""
    if cpu_for_certain(name):
        return "cpu"
    # start-up: torch loads only to find a CUDA device
    from featmlp.training.setup import resolve_device

    return resolve_device(name)


def _streams(X, out_of_core) -> bool:
    if not isinstance(X, ShardedArray) and out_of_core is None:
        return False  # an array in memory: what streams() says, without loading its engine (torch)
    # start-up: the streaming engine (torch) loads for a sharded table or an explicit choice only
    from featmlp.training.engines.streamed import streams

    return streams(X, out_of_core)


def checked_inputs(X, y, config, n_classes, X_val, y_val, mirror, out_of_core=None, *, resolve_device=True):
    """The arguments of :func:`train`, checked and converted (the validation split is not made).

    Returns ``X, y, X_val, y_val, n_classes, mirror, device, streamed``; a sharded ``X`` (or
    ``X_val``) comes back as it is, unread: ``streamed`` says whether training streams it
    (:func:`featmlp.training.engines.streamed.streams`) or reads it into memory. ``device`` is a
    ``torch.device``; with ``resolve_device=False`` the name ``"cpu"`` where the device is the CPU
    for certain (no torch import).
    """
    _check_is_config(config)
    config.validate()
    streamed = _streams(X, out_of_core)
    full_batch = config.optimizer in FULL_BATCH_OPTIMIZERS
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
                              "with mirror=true, let featmlp run extract the test images' mirror images "
                              "(test flips only), or train without --flip / --test-flip")
        mirror = np.asarray(mirror)
        if not is_permutation(mirror, X.shape[1]):
            raise ConfigError(f"mirror must be a permutation of the {X.shape[1]} feature columns")
    mirror = mirror.astype(np.int64) if config.flip or config.test_flip else None

    spec = config.spec(X.shape[1], n_classes)
    spec.validate()
    if resolve_device:
        # start-up: torch loads where training needs a torch.device
        from featmlp.training.setup import resolve_device as resolve

        device = resolve(config.device)
    else:
        device = _checked_device(config.device)
    _check_training_memory(X, X_val, spec, config, n_train, len(y) - n_train, streamed, device)
    return X, y, X_val, y_val, n_classes, mirror, device, streamed


def _check_training_memory(X, X_val, spec, config, n_train, n_val, streamed, device) -> None:
    """Refuse (ConfigError) a run whose network, batch and rows will not fit in memory.

    In memory: the network's estimate (:func:`featmlp.model.training_bytes`), plus the table
    itself when a sharded one is read whole. Streamed: no copies of the rows, only a batch,
    the shards kept mapped and the validation rows gathered into memory.
    """
    rows = 2 * n_train if config.flip else n_train
    full_batch = config.optimizer in FULL_BATCH_OPTIMIZERS
    sizes = " -> ".join(str(w) for w in spec.widths)
    advice = "use smaller layers (--hidden, --bottleneck) or a smaller --batch-size"
    row_bytes = 4 * int(X.shape[1])
    loaded = X_val.nbytes if isinstance(X_val, ShardedArray) else 0
    if streamed:
        # start-up: the streaming engine's sizes, loaded (with torch) when it streams
        from featmlp.training.engines.streamed import CACHED_SHARDS, GD_CHUNK_ROWS

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

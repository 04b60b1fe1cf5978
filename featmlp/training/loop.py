"""The training loop: :func:`train` and the :class:`TrainResult` it returns.

:func:`train` is a plain epoch loop over the pieces of :mod:`featmlp.training`: the settings
(:mod:`~featmlp.training.config`), the set-up (:mod:`~featmlp.training.setup`,
:mod:`~featmlp.training.checks`), the optimisers and schedules (:mod:`~featmlp.training.optim`),
the flat parameter vector (:mod:`~featmlp.training.params`) and the engines
(:mod:`~featmlp.training.engines`). Each
epoch appends one dict to the run's history (:mod:`~featmlp.training.history`); callbacks
(printing, live plots, anything else) read that history and may stop the run.

Two engines run the steps of an epoch. Both update one flat parameter vector with the same
optimiser code and write the epoch's logits into one buffer, from which the epoch's loss and
accuracy are computed in a single vectorised pass (no ``.item()`` per step):

- ``FastEngine``: a hand-written forward and backward pass for plain MLPs (no dropout, no batch
  norm), in a feature-major layout. Per-step overhead, not arithmetic, dominates small networks.
  The measurements behind it are in the comments there.
- ``AutogradEngine``: the ``nn.Module`` with autograd, for dropout, batch norm, a bottleneck and
  tables too large for the hand-written engine's copies.

A sharded table too large for memory is streamed from disk (:mod:`~featmlp.training.engines.streamed`):
minibatches through ``AutogradEngine`` from its shards, full-batch ``gd`` through
``StreamedGDEngine``, which sums the gradient over the shards before its one step.

The lecture's gradient descent
------------------------------
``optimizer="gd"`` is full-batch gradient descent on the mean loss over all training samples: the
whole training set is one tensor, one forward and backward pass and one step ``w <- w - lr * grad``
per epoch (~2 ms for 50,000 x 9 -> 6 -> 10 on this machine's CPU; the lecture's loop over a
DataLoader took ~0.3-0.7 s for the same gradient). The ``"lecture"`` preset runs it at lr 10: slow
descent at lr 10, faster at 50, jitter at 500 and a jump to saturated outputs at 5000, the
behaviour the lecture's learning-rate experiment shows.

The notebook's loop wrote the epoch's loss as the *sum* of the mean losses of its minibatches (64
samples) and stepped on the gradient of that sum, which is ``ceil(N / 64)`` times the gradient of
the mean loss (exactly when 64 divides N; in expectation over the shuffle otherwise: the last,
smaller batch weighs its samples more). So the notebook's lr ``eta`` on its summed loss is lr
``eta * ceil(N / 64)`` here (782 x for N = 50,000), and ``lecture_batch_size=64`` applies that
factor for you, to rerun the notebook's loop literally. We always *report* the mean loss over
samples (the lecture printed its sum of batch means divided by N).
"""

from __future__ import annotations

import math
import time
from typing import Callable, Iterable

import numpy as np
import torch

from featmlp.errors import ConfigError
from featmlp.model import loss_function
from featmlp.progress import ProgressHook
from featmlp.training.callbacks import Callback, as_callback, hear_epoch, progress_callbacks
from featmlp.training.checks import checked_inputs
from featmlp.training.config import PRESETS, TrainConfig, gd_gradient_scale, planned_epochs
from featmlp.training.engines.autograd import AutogradEngine, ScaledRows
from featmlp.training.engines.fast import FastEngine, fast_engine_fits
from featmlp.training.engines.streamed import ShardedRows, StreamedGDEngine, block_ids, blocked_permutation
from featmlp.training.epoch import evaluate, loss_accuracy, within_batch_weights
from featmlp.training.history import VAL_ACCURACY, VAL_LOSS, can_validate, diverged, epoch_record
from featmlp.training.optim import OPTIMIZERS, SCHEDULES
from featmlp.training.params import flatten_parameters, restore, snapshot, unflatten_parameters
from featmlp.training.setup import batch_order_rng, class_weights, initial_model, seeded, training_rows
from featmlp.training.result import TrainResult
from featmlp.training.threads import threads_for


def train(
    X,
    y,
    config: TrainConfig | None = None,
    *,
    n_classes: int | None = None,
    X_val=None,
    y_val=None,
    callbacks: Iterable[Callback | Callable] = (),
    progress: ProgressHook | None = None,
    mirror=None,
    out_of_core: bool | None = None,
    blocks=None,
) -> TrainResult:
    """Fit a scaler and an MLP to features ``X`` (N, F) and integer labels ``y`` (N,).

    Parameters
    ----------
    X, y : array-like
        Training features and labels ``0 .. n_classes - 1``.
    config : TrainConfig, optional
        Settings; ``PRESETS["default"]`` when omitted.
    n_classes : int, optional
        Number of classes (``len(class_names)``); defaults to the largest label + 1.
    X_val, y_val : array-like, optional
        Validation data, recorded each epoch; instead of ``config.val_fraction``, not with it.
    callbacks : iterable of Callback or callable
        Told about the run (:class:`~featmlp.progress.Callback`: ``on_train_begin``, then
        ``on_progress("train", epochs_done, epochs)`` and ``on_epoch`` after each epoch, then
        ``on_train_end``); a callable ``f(record, history)`` is called after each epoch. Any of
        them returning True stops training after that epoch.
    progress : callable or Callback, optional
        Progress hook ``progress("train", epochs_done, epochs)``: told as the callbacks'
        ``on_progress`` is, and nothing else.
    mirror : array of int (F,), optional
        Column permutation giving the features of the horizontally mirrored images:
        ``features(flipped images) == X[:, mirror]`` (:func:`featmlp.features.mirror_permutation`).
        Needed by ``config.flip`` and ``config.test_flip``.
    out_of_core : bool, optional
        For a sharded table's ``X`` (:class:`featmlp.tables.sharded.ShardedArray`, from
        ``load_features("DIR.features/")``): True streams it from disk a shard at a time
        (:mod:`featmlp.training.engines.streamed`), False reads it into memory, None (default) streams it
        when it is larger than a quarter of the available memory. Streamed, the scaler is
        fitted in a pass over the shards, minibatches come a shard at a time in
        :func:`~featmlp.training.engines.streamed.blocked_permutation`'s order, and ``"gd"`` sums its
        gradient over the shards. Batch norm with ``"gd"`` is refused when streaming.
    blocks : sequence of int, optional
        Row counts of consecutive blocks of ``X`` (a sharded table's ``shard_rows``): each
        epoch's minibatches take the blocks in a shuffled order and each block's rows shuffled,
        the order a streamed table trains in, so training the table in memory with its
        ``blocks`` repeats a streamed run. Default: a plain shuffle in memory (``torch.randperm``),
        the shards when streaming.

    Returns
    -------
    TrainResult
        Model, scaler and the history of the run. A loss or weights that become NaN or
        infinite end the run with ``diverged=True`` and the last finite weights; no exception.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> X, y = make_classification(300, 9, n_informative=5, n_classes=3, random_state=0)
    >>> result = train(X, y, TrainConfig(epochs=5, val_fraction=0.2))
    >>> [sorted(r) for r in result.history][0]
    ['epoch', 'lr', 'seconds', 'train_accuracy', 'train_loss', 'val_accuracy', 'val_loss']
    >>> result.predict_proba(X[:2]).shape
    (2, 3)

    A sharded table trained from disk, and the same order in memory:

    >>> import tempfile, pathlib
    >>> from featmlp.tables.store import FeatureTable, load_features, save_sharded
    >>> t = FeatureTable(X.astype(np.float32), y, X[:5], y[:5], tuple("abcdefghi"), ("a", "b", "c"))
    >>> sharded = load_features(save_sharded(pathlib.Path(tempfile.mkdtemp()) / "t.features", t, shard_rows=70))
    >>> config = TrainConfig(epochs=2, dropout=0.2)
    >>> disk = train(sharded.X_train, y, config, out_of_core=True)
    >>> memory = train(np.asarray(sharded.X_train), y, config, blocks=sharded.X_train.shard_rows)
    >>> bool(np.allclose(disk.predict_proba(X[:5]), memory.predict_proba(X[:5]), atol=1e-5))
    True
    """
    config = PRESETS["default"] if config is None else config
    X, y, X_val, y_val, n_classes, mirror, device, streamed = checked_inputs(
        X, y, config, n_classes, X_val, y_val, mirror, out_of_core)
    if streamed:
        if blocks is not None and not np.array_equal(np.asarray(blocks), X.shard_rows):
            raise ConfigError("blocks must be the table's shards (X.shard_rows) when it is streamed from disk")
        blocks = X.shard_rows
    else:
        X = np.asarray(X)  # a sharded table small enough: read whole, trained as in memory
    if X_val is not None:
        X_val = np.asarray(X_val)
    block_of = None if blocks is None else block_ids(blocks, len(X))
    prepared = training_rows(X, y, config, X_val=X_val, y_val=y_val, mirror=mirror)
    X, y, X_val, y_val, scaler = prepared.X, prepared.y, prepared.X_val, prepared.y_val, prepared.scaler
    if block_of is not None and prepared.rows is not None:
        block_of = block_of[prepared.rows]
    spec = prepared.spec(config, n_classes)
    # The progress hook goes first, so it is told each epoch before the callbacks are (as before).
    callbacks = [*progress_callbacks(progress), *(as_callback(cb) for cb in callbacks)]

    with seeded(device):
        # Seed the global generator (initial weights, dropout) inside a fork so a library call
        # leaves the caller's random state as it was; the batch order has its own generator.
        model = initial_model(spec, config.seed, device)
        order_rng = batch_order_rng(config.seed)
        with threads_for(spec, config, len(y), device):
            result = _run(model, spec, config, scaler, X, y, X_val, y_val, device, order_rng,
                          callbacks, mirror, block_of, prepared.rows if streamed else None, streamed)
    return result


def _run(model, spec, config, scaler, X, y, X_val, y_val, device, order_rng, callbacks, mirror=None,
         block_of=None, rows_of=None, streamed=False):
    flip = config.flip
    rows = 2 * len(y) if flip else len(y)  # with flips, rows N.. are the mirror images of 0..
    plain = not streamed and fast_engine_fits(spec, rows, X.shape[1])
    class_w = class_weights(y, spec.n_classes, config.class_weight)
    if flip:
        y = np.concatenate([y, y])
        if block_of is not None:  # a mirror image is read from its original's shard
            block_of = np.concatenate([block_of, block_of])
    n = len(y)
    y_t = torch.from_numpy(y).to(device)
    w_t = torch.from_numpy(class_w[y]).to(device)
    if plain:
        X_t = torch.from_numpy(scaler.transform(np.concatenate([X, X[:, mirror]]) if flip else X)).to(device)
    elif streamed:
        X_t = ShardedRows(X, np.arange(len(X)) if rows_of is None else rows_of, scaler, mirror if flip else None,
                          device)
    else:
        X_t = ScaledRows(X, scaler, mirror if flip else None, device)
    if X_val is not None:
        Xv_t = torch.from_numpy(scaler.transform(X_val)).to(device)
        yv_t = torch.from_numpy(y_val).to(device)
        wv_t = torch.from_numpy(class_w[y_val]).to(device)

    full_batch = OPTIMIZERS[config.optimizer].full_batch
    flat, grad = flatten_parameters(model)
    engine_class = (FastEngine if plain else StreamedGDEngine if streamed and full_batch else AutogradEngine)
    engine = engine_class(model, spec, X_t, y_t, label_smoothing=config.label_smoothing)
    optimizer = OPTIMIZERS[config.optimizer](flat, config)
    step_fn = lambda lr: optimizer.step(grad, lr)  # noqa: E731 (one closure per run)
    loss_fn = loss_function(spec.head, config.label_smoothing)
    schedule = SCHEDULES[config.schedule]

    batch_size = n if full_batch else min(config.batch_size, n)
    engine.prepare(batch_size)
    steps_per_epoch = math.ceil(n / batch_size)
    epochs = planned_epochs(config, steps_per_epoch)
    total_steps = steps_per_epoch * epochs
    if full_batch:
        # One step on all samples: their order does not matter (no shuffle), their weights are
        # the same each epoch.
        gd_weights = w_t * (gd_gradient_scale(config, n) / w_t.sum())

    result = TrainResult(model, scaler, spec, config, device=str(device))
    history = result.history
    best_loss, best_state = math.inf, None
    for cb in callbacks:
        cb.on_train_begin(config)
    previous_state = None
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        state = snapshot(model, flat)
        if full_batch:
            perm, w_ep, sw = None, w_t, gd_weights
        else:
            perm = (torch.randperm(n, generator=order_rng) if block_of is None
                    else blocked_permutation(block_of, order_rng)).to(device)
            w_ep = w_t[perm]
            sw = within_batch_weights(w_ep, batch_size)
        first = (epoch - 1) * steps_per_epoch
        lrs = [config.lr * schedule((first + s) / total_steps) for s in range(steps_per_epoch)]
        logits, losses, y_ep = engine.run_epoch(perm, sw, batch_size, step_fn, lrs)
        with torch.no_grad():
            train_loss, train_acc, finite = loss_accuracy(logits, engine.class_dim, y_ep, w_ep,
                                                           loss_fn, flat, losses)
        seconds = time.perf_counter() - start
        record = epoch_record(epoch, train_loss, train_acc, lrs[-1], seconds)
        if X_val is not None and can_validate(record, finite):
            record[VAL_LOSS], record[VAL_ACCURACY] = evaluate(model, Xv_t, yv_t, wv_t, loss_fn)

        if diverged(record, finite):
            # Keep the weights this epoch started from if they still give a finite loss (huge
            # but finite weights may not), else those the previous epoch started from, whose
            # loss that epoch's record shows finite. The record of this epoch is dropped.
            restore(model, flat, state)
            if previous_state is not None and not math.isfinite(
                    evaluate(model, X_t, y_t, w_t, loss_fn)[0]):
                restore(model, flat, previous_state)
            result.diverged, result.stop_reason = True, "diverged"
            break
        previous_state = state
        history.append(record)

        stop = False
        if X_val is not None:
            if record[VAL_LOSS] < best_loss:
                best_loss, result.best_epoch = record[VAL_LOSS], epoch
                if config.patience:
                    best_state = snapshot(model, flat)
            elif config.patience and epoch - result.best_epoch >= config.patience:
                result.stop_reason, stop = "early_stopping", True
        if hear_epoch(callbacks, epoch, record, history, epochs) and not stop:
            result.stop_reason, stop = "callback", True
        if stop:
            break

    if best_state is not None:
        restore(model, flat, best_state)
    unflatten_parameters(model)
    model.eval()
    result.mirror = mirror
    for cb in callbacks:
        cb.on_train_end(history)
    return result

"""The lecture's full-batch gradient descent in numpy: :func:`train_arrays`, the same run as
:func:`featmlp.training.train` gives for the settings :func:`arrays_fit` accepts, without torch.

Why: importing torch takes ~2 s of the ~3 s a ``featmlp train --preset lecture`` took on the
bundled sample, for 20 epochs whose arithmetic (5,000 x 9 -> 6 -> 10) takes milliseconds. Same
run: the same initial weights, bit for bit (:func:`featmlp.model.arrays.initial_arrays`), the
same scaler, the arithmetic of ``FastEngine``'s full-batch epoch (feature-major, the MSE head's
gradient through the softmax written out) and ``train``'s epoch record, divergence rule and
callbacks. Only float32 rounding differs (numpy's matrix products sum in another order than
torch's), so histories, weights and predictions agree to float tolerance; the tests compare them
with the torch engine's for several learning rates and networks.

Anything else (minibatches, dropout, batch norm, a validation split, flips, class weights, a
schedule, label smoothing, gelu, CUDA, a table streamed from disk) trains with torch.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Callable, Iterable

import numpy as np

from featmlp.model.arrays import ARRAY_ACTIVATIONS, ArrayMLP, array_network_fits, initial_arrays, softmax
from featmlp.model.scaler import Scaler
from featmlp.progress import Callback, ProgressHook, progress_callbacks
from featmlp.tables.sharded import ShardedArray
from featmlp.training.callbacks import as_callback, hear_epoch
from featmlp.training.checks import checked_inputs, cpu_for_certain
from featmlp.training.config import FULL_BATCH_OPTIMIZERS, TrainConfig, gd_gradient_scale, planned_epochs
from featmlp.training.history import diverged, epoch_record
from featmlp.training.result import TrainResult

# Above this many float32 values in the epoch's activations (rows x widest layer) torch's engine
# runs instead: the numpy engine is for the lecture's sizes (5,000-50,000 x 9 -> 6 -> 10).
ARRAY_ENGINE_VALUES = 1 << 26


def arrays_fit(X, config: TrainConfig, *, X_val=None, mirror=None, out_of_core=None, blocks=None) -> bool:
    """Whether :func:`train_arrays` runs these arguments of :func:`featmlp.training.train` (else torch).

    Full-batch ``"gd"`` without a schedule (with or without weight decay); a plain ReLU network
    (:func:`featmlp.model.arrays.array_network_fits`) with the lecture's softmax + MSE head; no
    validation, flips or class weights; an array in memory, on the CPU.
    """
    if isinstance(X, ShardedArray) or out_of_core or blocks is not None or X_val is not None:
        return False
    shape = np.shape(X)
    if len(shape) != 2:
        return False
    spec = config.spec(shape[1], 2)
    return (config.optimizer in FULL_BATCH_OPTIMIZERS and config.schedule == "none"
            and array_network_fits(spec) and config.head == "mse"
            and not config.val_fraction and not config.patience and not config.flip and not config.test_flip
            and config.class_weight is None and cpu_for_certain(config.device)
            and shape[0] * max(spec.widths) <= ARRAY_ENGINE_VALUES)


def train_arrays(X, y, config: TrainConfig, *, n_classes: int | None = None,
                 callbacks: Iterable[Callback | Callable] = (), progress: ProgressHook | None = None,
                 mirror=None) -> TrainResult:
    """:func:`featmlp.training.train` for the settings :func:`arrays_fit` accepts, in numpy.

    Examples
    --------
    >>> from featmlp.training import PRESETS
    >>> X = np.random.default_rng(0).normal(size=(40, 3)); y = (X[:, 0] > 0).astype(int)
    >>> result = train_arrays(X, y, PRESETS["lecture"])
    >>> result.stop_reason, len(result.history), type(result.model).__name__
    ('completed', 20, 'ArrayMLP')
    """
    X, y, _, _, n_classes, mirror, _, _ = checked_inputs(X, y, config, n_classes, None, None, mirror,
                                                         resolve_device=False)
    X = np.asarray(X)
    scaler = Scaler.fit(X, config.scaler)
    spec = config.spec(X.shape[1], n_classes)
    model = initial_arrays(spec, config.seed)
    callbacks = [*progress_callbacks(progress), *(as_callback(cb) for cb in callbacks)]
    result = TrainResult(model, scaler, spec, config, device="cpu")
    with _one_blas_thread():
        _run(model, config, scaler.transform(X), y, callbacks, result)
    return result


def _one_blas_thread():
    """The products here are (6, 9) x (9, N): OpenBLAS's threads only wait on each other (50,000 rows
    on this 2-core CPU, loaded: an epoch ~70 ms on its 2 threads, ~15 ms on one)."""
    try:
        from threadpoolctl import threadpool_limits  # installed with scikit-learn
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _mse_losses(logits_t: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-sample loss of logits (C, N), as :func:`featmlp.model.softmax_mse_loss` computes it."""
    p = softmax(logits_t, axis=0)
    return (np.square(p).sum(0) - 2 * p[y, np.arange(len(y))] + 1) / logits_t.shape[0]


def _run(model: ArrayMLP, config: TrainConfig, Xs: np.ndarray, y: np.ndarray, callbacks, result) -> None:
    n, C = len(y), model.spec.n_classes
    forward, backward = ARRAY_ACTIVATIONS[model.spec.activation]
    XT = np.ascontiguousarray(Xs.T)  # feature-major, as FastEngine
    YT = np.eye(C, dtype=np.float32)[:, y]
    cols = np.arange(n)
    # train()'s full-batch sample weights: 1 * (gradient scale / n), float32; the MSE head's 2 / C
    sw = np.float32(np.float32(gd_gradient_scale(config, n)) / np.float32(n) * np.float32(2.0 / C))
    W, B = model.weights, model.biases
    last = len(W) - 1
    history = result.history
    for cb in callbacks:
        cb.on_train_begin(config)
    previous_state = None
    epochs = planned_epochs(config, 1)  # full batch: one step an epoch
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        state = [a.copy() for a in (*W, *B)]
        with np.errstate(all="ignore"):  # a diverging run shows NaN or inf, as torch's does
            outs = [XT]
            a = XT
            for k in range(last):
                a = forward(W[k] @ a + B[k][:, None])
                outs.append(a)
            z = W[last] @ a + B[last][:, None]
            p = softmax(z, axis=0)
            # Per sample, sum_c (p_c - y_c)^2 = sum_c p_c^2 - 2 p_y + 1, and through the softmax
            # dL/dz = k p * ((p - y) - (sum_c p_c^2 - p_y)), k = 2 w / C (FastEngine's arithmetic)
            p_true = p[y, cols]
            r = np.square(p).sum(0) - p_true
            losses = (r - p_true + 1) / np.float32(C)
            g = ((p - YT) - r) * p * sw
            grads_w, grads_b = [None] * len(W), [None] * len(W)
            for k in range(last, -1, -1):
                grads_w[k] = g @ outs[k].T
                grads_b[k] = g.sum(1)
                if k:
                    g = backward(W[k].T @ g, outs[k])
            lr = np.float32(config.lr)
            for params, grads in ((W, grads_w), (B, grads_b)):
                for k in range(len(params)):
                    if config.weight_decay:
                        grads[k] = grads[k] + np.float32(config.weight_decay) * params[k]
                    params[k] = params[k] - lr * grads[k]
            train_loss = float(losses.astype(np.float32).sum(dtype=np.float32) / np.float32(n))
            train_acc = float(np.float32(np.count_nonzero(z[y, cols] >= z.max(0))) / np.float32(n))
            finite = all(np.isfinite(a).all() for a in (*W, *B))
        record = epoch_record(epoch, train_loss, train_acc, float(config.lr), time.perf_counter() - start)
        if diverged(record, finite):
            # train()'s rule: back to the weights this epoch started from when their loss is
            # finite, else to those the previous epoch started from; this epoch's record dropped.
            _restore(model, state)
            if previous_state is not None:
                with np.errstate(all="ignore"):
                    loss = float(_mse_losses(W[last] @ _hidden(model, XT, forward) + B[last][:, None], y).mean())
                if not math.isfinite(loss):
                    _restore(model, previous_state)
            result.diverged, result.stop_reason = True, "diverged"
            break
        previous_state = state
        history.append(record)
        if hear_epoch(callbacks, epoch, record, history, epochs):
            result.stop_reason = "callback"
            break
    for cb in callbacks:
        cb.on_train_end(history)


def _hidden(model: ArrayMLP, XT: np.ndarray, forward) -> np.ndarray:
    a = XT
    for w, b in zip(model.weights[:-1], model.biases[:-1]):
        a = forward(w @ a + b[:, None])
    return a


def _restore(model: ArrayMLP, state: list) -> None:
    k = len(model.weights)
    model.weights[:] = [a.copy() for a in state[:k]]
    model.biases[:] = [a.copy() for a in state[k:]]

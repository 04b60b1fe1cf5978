"""The learning-rate range test: a short run with an exponentially growing learning rate.

Smith (2015) and fastai's ``lr_find``: start from the weights :func:`featmlp.training.train` would
start from, take ``num_steps`` optimiser steps while the learning rate grows geometrically from
``start_lr`` to ``end_lr``, record each step's loss and an exponentially smoothed copy of it, and
stop once the smoothed loss blows up. Where the loss falls fastest is a good learning rate; where
it turns up, too large a one.

A suggested value alone misleads on a noisy curve, so :class:`LRFinderResult` always keeps the
whole curve and :meth:`LRFinderResult.plot` draws it.

References
----------
L. N. Smith, "Cyclical Learning Rates for Training Neural Networks", arXiv:1506.01186 (2015).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from featmlp._validation import Field, check
from featmlp.errors import ConfigError
from featmlp.model import loss_function
from featmlp.progress import Callback, ProgressHook, progress_callbacks
from featmlp.training.checks import check_data, check_labels
from featmlp.training.config import PRESETS, TrainConfig, gd_gradient_scale
from featmlp.training.engines.streamed import in_memory
from featmlp.training.optim import OPTIMIZERS
from featmlp.training.params import flatten_parameters
from featmlp.training.setup import batch_order_rng, class_weights, initial_model, seeded, training_rows

# --------------------------------------------------------------------------------------------
# Suggestion rules: name -> f(lrs, smoothed) -> (index into lrs or None, sentence).
# --------------------------------------------------------------------------------------------

def _descent(lrs: np.ndarray, smoothed: np.ndarray) -> tuple[int, int] | None:
    """First and last index of the stretch the rules look at, or None when the loss never fell.

    The stretch ends at the smoothed loss's minimum. It skips the first steps, where the
    bias-corrected average still rests on a handful of losses, unless that leaves too little.
    """
    end = int(np.argmin(smoothed))
    start = min(len(lrs) // 20, end // 2)
    if end - start < 2 or smoothed[end] >= smoothed[start]:
        return None
    return start, end


def _steepest(lrs: np.ndarray, smoothed: np.ndarray) -> tuple[int | None, str]:
    span = _descent(lrs, smoothed)
    if span is None:
        return None, _NO_DESCENT
    start, end = span
    slope = np.gradient(smoothed, np.log10(lrs))
    i = start + int(np.argmin(slope[start:end + 1]))
    return i, ("steepest descent of the smoothed loss against log lr, before its minimum at "
               f"lr {lrs[end]:.3g}")


def _minimum_tenth(lrs: np.ndarray, smoothed: np.ndarray) -> tuple[int | None, str]:
    span = _descent(lrs, smoothed)
    if span is None:
        return None, _NO_DESCENT
    end = span[1]
    return end, f"a tenth of lr {lrs[end]:.3g}, where the smoothed loss is lowest"


_NO_DESCENT = "the smoothed loss never fell: the smallest lr tried; lower start_lr and retry"

# The lr each rule proposes is lrs[index] times this factor.
_RULE_FACTOR = {"steepest": 1.0, "minimum/10": 0.1}

# Name -> rule. "steepest" (the default) suits most curves; "minimum/10" is fastai's older
# rule, a safer (smaller) choice when the curve is noisy.
RULES = {
    "steepest": _steepest,
    "minimum/10": _minimum_tenth,
}

# What each setting of lr_find accepts, in the order they are checked (the first bad one is named);
# the lr range is a rule tying start_lr and end_lr, checked right after end_lr.
FIELDS: dict[str, Field] = {
    "start_lr": Field("number", "the first learning rate tried, 0 < start_lr < end_lr"),
    "end_lr": Field("number", "the last learning rate tried, 0 < start_lr < end_lr"),
    "num_steps": Field("int", "steps at most", low=5),
    "smoothing": Field("number", "weight of the running average in the smoothed loss; 0: no smoothing",
                       low=0, high=1, high_open=True),
    "diverge_factor": Field("number", "stop when the smoothed loss exceeds this multiple of its best",
                            low=1, low_open=True),
    "rule": Field("choice", "the rule behind suggested_lr", choices=tuple(RULES)),
}


def _lr_range_rule(s) -> str | None:
    if not 0 < s["start_lr"] < s["end_lr"]:
        return (f"the lr range must satisfy 0 < start_lr < end_lr, got start_lr={s['start_lr']!r}, "
                f"end_lr={s['end_lr']!r}")


_RANGE_RULES = (("end_lr", _lr_range_rule),)


def suggest_lr(lrs, smoothed, rule: str = "steepest") -> tuple[float, str]:
    """The learning rate ``rule`` proposes from a range test's curve, and a sentence naming it.

    Parameters
    ----------
    lrs, smoothed : array-like
        Learning rates (increasing) and the smoothed loss at each.
    rule : str
        A key of :data:`RULES`: ``"steepest"``, the lr where the smoothed loss falls fastest
        per decade of lr, looking only before the loss's minimum (past it, the loss is already
        turning up); or ``"minimum/10"``, a tenth of the lr at the minimum.

    Returns
    -------
    lr : float
        The suggestion; the smallest lr tried when the loss never fell.
    sentence : str
        What the rule did, for people.

    Examples
    --------
    >>> lrs = np.logspace(-4, 0, 5)
    >>> suggest_lr(lrs, [2.0, 1.9, 1.0, 0.8, 3.0])[0]
    0.01
    >>> round(suggest_lr(lrs, [2.0, 1.9, 1.0, 0.8, 3.0], "minimum/10")[0], 6)
    0.01
    """
    check({"rule": rule}, {"rule": FIELDS["rule"]})
    lrs = np.asarray(lrs, dtype=np.float64)
    smoothed = np.asarray(smoothed, dtype=np.float64)
    if lrs.ndim != 1 or lrs.shape != smoothed.shape or len(lrs) == 0:
        raise ConfigError(
            f"lrs and smoothed must be 1-D, non-empty and of one length, got shapes "
            f"{lrs.shape} and {smoothed.shape}"
        )
    index, sentence = RULES[rule](lrs, smoothed)
    if index is None:
        return float(lrs[0]), sentence
    return float(lrs[index] * _RULE_FACTOR[rule]), sentence


# --------------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------------

@dataclass
class LRFinderResult:
    """The curve of a range test and the learning rate it suggests.

    Attributes
    ----------
    lrs : numpy.ndarray
        Learning rate of each step taken (the loss of step ``i`` is measured just before the
        step with ``lrs[i]``).
    losses : numpy.ndarray
        Loss of each step's batch (the whole training set with ``optimizer="gd"``).
    smoothed : numpy.ndarray
        Bias-corrected exponential moving average of ``losses``.
    suggested_lr : float
        What ``rule`` proposes.
    rule : str
        A sentence naming the rule that gave ``suggested_lr``.
    suggestions : dict
        Every rule of :data:`RULES` -> its lr, to compare.
    stop_reason : str
        ``"completed"`` (all steps), ``"diverged"`` (the smoothed loss passed
        ``diverge_factor`` x its best) or ``"non-finite"`` (the loss became NaN or infinite).
    config : TrainConfig
        The settings the test ran with (their ``lr`` is unused).
    """

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    suggested_lr: float
    rule: str
    suggestions: dict[str, float] = field(default_factory=dict)
    stop_reason: str = "completed"
    config: TrainConfig | None = None

    def to_dict(self) -> dict:
        """JSON-ready dict of the curve, the suggestions and the settings."""
        return {
            "lrs": self.lrs.tolist(), "losses": self.losses.tolist(),
            "smoothed": self.smoothed.tolist(), "suggested_lr": self.suggested_lr,
            "rule": self.rule, "suggestions": dict(self.suggestions),
            "stop_reason": self.stop_reason,
            "config": None if self.config is None else self.config.to_dict(),
        }

    def plot(self, path: str | os.PathLike, title: str | None = None) -> Path:
        """Draw loss against lr (log axis), raw and smoothed, with the suggestion marked.

        The loss axis is cut a little above where the test stopped, so that a final blow-up
        does not flatten the interesting part.

        Examples
        --------
        >>> import tempfile, pathlib
        >>> r = LRFinderResult(np.logspace(-3, 0, 4), np.array([1.0, .8, .5, 2.]),
        ...                    np.array([1.0, .9, .7, 1.2]), 1e-2, "a rule")
        >>> r.plot(pathlib.Path(tempfile.mkdtemp()) / "lr_find.png").exists()
        True
        """
        from featmlp._figures import new_figure, save_figure  # matplotlib loads with the first plot

        fig = new_figure(7, 4.5)
        ax = fig.subplots()
        ax.plot(self.lrs, self.losses, "-", color="0.65", lw=0.8, label="loss (raw)")
        ax.plot(self.lrs, self.smoothed, "-", color="C0", lw=2, label="loss (smoothed)")
        ax.set_xscale("log")
        if len(self.smoothed):
            s = self.smoothed
            ax.axvline(self.suggested_lr, color="C3", ls="--", lw=1.2,
                       label=f"suggested lr {self.suggested_lr:.3g}")
            ax.plot([self.suggested_lr],
                    [np.interp(np.log(self.suggested_lr), np.log(self.lrs), s)],
                    "o", color="C3")
            low = min(float(np.min(self.losses)), float(np.min(s)))
            # Show the descent and as much again above the start; a blow-up leaves the top.
            drop = float(s[0] - np.min(s))
            high = float(s[0]) + 2 * drop if drop > 0 else float(np.max(s))
            pad = 0.05 * (high - low) if high > low else 0.05 * abs(high) + 1e-12
            ax.set_ylim(low - pad, high + 4 * pad)
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("training loss")
        fig.suptitle(title or "learning-rate range test")
        ax.set_title(f"suggested lr: {self.suggested_lr:.3g}, {self.rule}", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
        return save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------

def lr_find(
    X,
    y,
    config: TrainConfig | None = None,
    *,
    n_classes: int | None = None,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    smoothing: float = 0.98,
    diverge_factor: float = 4.0,
    rule: str = "steepest",
    progress: ProgressHook | Callback | None = None,
    callbacks: Iterable[Callback] = (),
) -> LRFinderResult:
    """Run a learning-rate range test with the model and optimiser of ``config``.

    Step ``i`` of ``num_steps`` uses lr ``start_lr * (end_lr / start_lr) ** (i / (num_steps -
    1))``: minibatches of ``config.batch_size`` in a seeded shuffled order (reshuffled each pass),
    or with ``optimizer="gd"`` the whole training set per step. The loss of each step's batch is
    recorded before the step, with ``s_i = b * s_{i-1} + (1 - b) * loss_i`` and the smoothed loss
    ``s_i / (1 - b ** (i + 1))`` (``b = smoothing``). The test stops early when the smoothed loss
    exceeds ``diverge_factor`` times its lowest value, or the loss is NaN or infinite.

    The network starts from the weights :func:`featmlp.training.train` would start from (same seed,
    same scaler fitted on the same rows, ``val_fraction`` held out the same way). Schedule,
    epochs, patience and ``config.lr`` play no part. The caller's random state is left as it
    was.

    Parameters
    ----------
    X, y : array-like
        Training features (N, F) and integer labels. A sharded table's
        :class:`~featmlp.tables.sharded.ShardedArray` is read into memory (ConfigError when it does not fit).
    config : TrainConfig, optional
        Model, optimiser, batch size, scaler, class weights, seed and device to test with;
        ``PRESETS["default"]`` when omitted.
    n_classes : int, optional
        Number of classes; defaults to the largest label + 1.
    start_lr, end_lr : float
        The range, ``0 < start_lr < end_lr``.
    num_steps : int
        Steps at most (>= 5).
    smoothing : float
        ``b`` above, in [0, 1); 0 means no smoothing.
    diverge_factor : float
        Stop when the smoothed loss exceeds this multiple of its best (> 1).
    rule : str
        The rule behind ``suggested_lr``, a key of :data:`RULES` (see :func:`suggest_lr`).
    progress : callable or Callback, optional
        Progress hook ``progress("lr_find", steps_done, num_steps)``.
    callbacks : iterable of Callback
        Told the same progress (:meth:`~featmlp.progress.Callback.on_progress`); the test has no
        epochs, so nothing else.

    Returns
    -------
    LRFinderResult

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> X, y = make_classification(400, 9, n_informative=5, n_classes=3, random_state=0)
    >>> r = lr_find(X, y, TrainConfig(hidden=(16,), batch_size=32), num_steps=50)
    >>> 1e-7 <= r.suggested_lr <= 10 and len(r.lrs) == len(r.losses) <= 50
    True
    """
    config = PRESETS["default"] if config is None else config
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig, got {type(config).__name__}")
    config.validate()
    check(dict(start_lr=start_lr, end_lr=end_lr, num_steps=num_steps, smoothing=smoothing,
               diverge_factor=diverge_factor, rule=rule), FIELDS, _RANGE_RULES)
    callbacks = list(callbacks)
    for cb in callbacks:
        if not isinstance(cb, Callback):  # a plain f(record, history) has no epochs to hear here
            raise ConfigError(f"lr_find's callbacks must be featmlp.progress.Callback objects, got {type(cb).__name__}")
    callbacks = [*progress_callbacks(progress), *callbacks]
    # A short test of a few hundred batches: a sharded table is read whole, if it fits.
    X, y = check_data(in_memory(X, "the learning-rate test"), y, "X", "y")
    n_classes = int(y.max()) + 1 if n_classes is None else n_classes
    check_labels(y, n_classes, "y")
    # The rows train() would train on, so that the scaler and the data match its run (no mirror:
    # lr_find steps on the rows alone, without flips).
    prepared = training_rows(X, y, config)
    X, y, device, scaler = prepared.X, prepared.y, prepared.device, prepared.scaler
    spec = prepared.spec(config, n_classes)
    with seeded(device):
        # As train(): seed the global generator for the initial weights (and dropout), and give
        # the batch order its own generator.
        model = initial_model(spec, config.seed, device)
        order_rng = batch_order_rng(config.seed)
        lrs, losses, smoothed, stop_reason = _range_test(
            model, spec, config, scaler, X, y, device, order_rng, start_lr, end_lr, num_steps,
            smoothing, diverge_factor, callbacks)

    suggestions = {name: suggest_lr(lrs, smoothed, name)[0] for name in RULES} if len(lrs) else {}
    if len(lrs):
        suggested, sentence = suggest_lr(lrs, smoothed, rule)
    else:
        suggested, sentence = float(start_lr), (
            "the loss was not finite even at start_lr: check the data and the model")
    return LRFinderResult(lrs, losses, smoothed, suggested, sentence, suggestions, stop_reason,
                          config)


def _range_test(model, spec, config, scaler, X, y, device, order_rng, start_lr, end_lr,
                num_steps, beta, diverge_factor, callbacks):
    n = len(y)
    X_t = torch.from_numpy(scaler.transform(X)).to(device)
    y_t = torch.from_numpy(y).to(device)
    w_t = torch.from_numpy(class_weights(y, spec.n_classes, config.class_weight)[y]).to(device)
    flat, grad = flatten_parameters(model)
    optimizer = OPTIMIZERS[config.optimizer](flat, config)
    loss_fn = loss_function(spec.head, config.label_smoothing)
    full_batch = OPTIMIZERS[config.optimizer].full_batch
    # "gd" with lecture_batch_size steps on ceil(N / size) times the mean loss's gradient, as
    # train() does, so that the lrs found here mean what config.lr means there.
    grad_scale = gd_gradient_scale(config, n)
    batches = _batches(n, n if full_batch else min(config.batch_size, n), order_rng, device)

    lrs, losses, smoothed = [], [], []
    average, best, stop_reason = 0.0, math.inf, "completed"
    model.train()
    for i in range(num_steps):
        lr = start_lr * (end_lr / start_lr) ** (i / (num_steps - 1))
        idx = next(batches)
        xb, yb, wb = (X_t, y_t, w_t) if idx is None else (X_t[idx], y_t[idx], w_t[idx])
        loss = (loss_fn(model(xb), yb, 1) * wb).sum() / wb.sum()
        value = loss.item()
        if not math.isfinite(value):
            stop_reason = "non-finite"
            break
        average = beta * average + (1 - beta) * value
        smooth = average / (1 - beta ** (i + 1))
        lrs.append(lr)
        losses.append(value)
        smoothed.append(smooth)
        for cb in callbacks:
            cb.on_progress("lr_find", i + 1, num_steps)
        best = min(best, smooth)
        if smooth > diverge_factor * best:
            stop_reason = "diverged"
            break
        grad.zero_()
        (loss * grad_scale).backward()
        optimizer.step(grad, lr)
    return (np.asarray(lrs, np.float64), np.asarray(losses, np.float64),
            np.asarray(smoothed, np.float64), stop_reason)


def _batches(n: int, batch_size: int, rng: torch.Generator, device):
    """Endless minibatch indices: seeded shuffled passes over ``n`` rows; None for full batch."""
    while True:
        if batch_size >= n:
            yield None
            continue
        perm = torch.randperm(n, generator=rng).to(device)
        yield from perm.split(batch_size)

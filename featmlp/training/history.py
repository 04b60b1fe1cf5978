"""The record of a run: one dict per finished epoch, its column names written once.

As skorch's ``History``: the loop appends one record per epoch, and everything else (callbacks,
the progress line, plots, ``metrics.json``, early stopping, the sweep) reads it. The keys are the
constants below; a record has :data:`EPOCH`, :data:`TRAIN_LOSS` (mean over samples),
:data:`TRAIN_ACCURACY`, :data:`LR` (that of the epoch's last step), :data:`SECONDS` (the epoch's
training time) and, with validation data, :data:`VAL_LOSS` and :data:`VAL_ACCURACY`.
"""

from __future__ import annotations

import math

EPOCH = "epoch"
TRAIN_LOSS = "train_loss"
TRAIN_ACCURACY = "train_accuracy"
VAL_LOSS = "val_loss"
VAL_ACCURACY = "val_accuracy"
LR = "lr"
SECONDS = "seconds"
# The columns of every record, then those present with validation data.
COLUMNS = (EPOCH, TRAIN_LOSS, TRAIN_ACCURACY, LR, SECONDS)
VAL_COLUMNS = (VAL_LOSS, VAL_ACCURACY)


class History(list):
    """A run's per-epoch records, in order: a plain list of dicts (JSON as it is).

    Examples
    --------
    >>> h = History([epoch_record(1, 0.9, 0.5, 0.1, 0.01), epoch_record(2, 0.7, 0.6, 0.1, 0.01)])
    >>> h.column(TRAIN_LOSS)
    [0.9, 0.7]
    """

    def column(self, key: str) -> list:
        """The values of ``key`` over the epochs that have it."""
        return [r[key] for r in self if key in r]


def epoch_record(epoch: int, train_loss: float, train_accuracy: float, lr: float, seconds: float) -> dict:
    """One epoch's record before validation (see the module docstring for the keys)."""
    return {EPOCH: epoch, TRAIN_LOSS: train_loss, TRAIN_ACCURACY: train_accuracy, LR: lr, SECONDS: seconds}


def can_validate(record: dict, weights_finite: bool) -> bool:
    """Whether to evaluate the validation data after this epoch: not when it already diverged."""
    return weights_finite and math.isfinite(record[TRAIN_LOSS])


def diverged(record: dict, weights_finite: bool) -> bool:
    """The divergence rule: a weight, a loss or any value of the record is NaN or infinite.

    A diverged epoch's record is dropped and the run goes back to the weights that epoch started
    from when their loss is finite, else to those of the epoch before.
    """
    return not (weights_finite and all(math.isfinite(v) for v in record.values()))


# A run overfits, visibly (issue 18): its training accuracy reached 1.0 while validation accuracy
# lags by more than this (10 points): it learns the training rows, not the classes.
OVERFIT_GAP = 0.10


def overfitting(record: dict, n_val: int | None = None) -> str | None:
    """The line saying an epoch's record shows overfitting, or None.

    Training accuracy 1.0 with validation accuracy more than :data:`OVERFIT_GAP` below it; None
    without validation. With ``n_val`` (the validation rows), the gap must also exceed two standard
    errors of the validation accuracy, ``2 * sqrt(a * (1 - a) / n_val)`` with ``a`` kept within
    ``1 / n_val`` of 0 and 1: on 3 validation images one mistake is a 33-point gap and says nothing.

    Examples
    --------
    >>> overfitting({EPOCH: 5, TRAIN_ACCURACY: 1.0, VAL_ACCURACY: 0.62})
    'overfitting: training accuracy reached 1.000 at epoch 5 while validation accuracy is 0.620 (38 points lower)'
    >>> overfitting({EPOCH: 5, TRAIN_ACCURACY: 1.0, VAL_ACCURACY: 0.95}) is None
    True
    >>> overfitting({EPOCH: 2, TRAIN_ACCURACY: 1.0, VAL_ACCURACY: 2 / 3}, n_val=3) is None
    True
    """
    train, val = record.get(TRAIN_ACCURACY), record.get(VAL_ACCURACY)
    if train is None or val is None or train < 1.0 or train - val <= OVERFIT_GAP:
        return None
    if n_val:
        p = min(max(val, 1 / n_val), 1 - 1 / n_val) if n_val > 1 else 0.5
        if train - val <= 2 * math.sqrt(p * (1 - p) / n_val):
            return None
    return (f"overfitting: training accuracy reached {train:.3f} at epoch {record[EPOCH]} while validation "
            f"accuracy is {val:.3f} ({(train - val) * 100:.0f} points lower)")

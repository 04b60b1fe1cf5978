"""featmlp.training.history: the record's keys are the named columns, the divergence rule and the overfitting
rule."""

from __future__ import annotations

import math

import numpy as np

from featmlp.training import TrainConfig, train
from featmlp.training.history import (COLUMNS, EPOCH, LR, SECONDS, TRAIN_ACCURACY, TRAIN_LOSS, VAL_ACCURACY,
                                      VAL_COLUMNS, VAL_LOSS, History, can_validate, diverged, epoch_record,
                                      overfitting)


def _data(n=60):
    X = np.random.default_rng(0).normal(size=(n, 3))
    return X, (X[:, 0] > 0).astype(int)


def test_the_column_names_are_the_words_metrics_and_plots_read():
    assert (EPOCH, TRAIN_LOSS, TRAIN_ACCURACY, VAL_LOSS, VAL_ACCURACY, LR, SECONDS) == (
        "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds")


def test_train_records_exactly_the_named_columns():
    X, y = _data()
    plain = train(X, y, TrainConfig(hidden=(4,), epochs=2))
    assert isinstance(plain.history, History)
    assert [list(r) for r in plain.history] == [list(COLUMNS)] * 2
    val = train(X, y, TrainConfig(hidden=(4,), epochs=2, val_fraction=0.25))
    assert [list(r) for r in val.history] == [list(COLUMNS + VAL_COLUMNS)] * 2
    assert val.history.column(EPOCH) == [1, 2]
    assert val.history.column(VAL_LOSS) == [r["val_loss"] for r in val.history]


def test_the_stacked_sweep_records_the_same_columns():
    from featmlp.tables.store import FeatureTable
    from featmlp.sweep import expand_grid, run_sweep

    X, y = _data(80)
    table = FeatureTable(X[:60], y[:60], X[60:], y[60:], ("a", "b", "c"), ("no", "yes"))
    base = TrainConfig(hidden=(4,), optimizer="gd", lr=0.5, schedule="none", epochs=2, val_fraction=0.25)
    sweep = run_sweep(table, expand_grid(base, lr=[0.5, 1.0]))
    assert [run.engine for run in sweep] == ["stacked"] * 2
    for run in sweep:
        assert [list(r) for r in run.history] == [list(COLUMNS + VAL_COLUMNS)] * 2


def test_divergence_rule():
    finite = epoch_record(1, 0.5, 0.9, 0.1, 0.01)
    assert not diverged(finite, True) and can_validate(finite, True)
    assert diverged(finite, False) and not can_validate(finite, False)  # a weight is NaN
    nan_loss = epoch_record(1, math.nan, 0.9, 0.1, 0.01)
    assert diverged(nan_loss, True) and not can_validate(nan_loss, True)
    assert diverged({**finite, VAL_LOSS: math.inf, VAL_ACCURACY: 0.1}, True)


def test_overfitting_needs_a_gap_beyond_two_standard_errors_of_the_validation_rows():
    def said(val, n_val=None):
        return overfitting({EPOCH: 3, TRAIN_ACCURACY: 1.0, VAL_ACCURACY: val}, n_val) is not None

    assert said(0.8) and not said(0.95)  # without a count: the 10-point rule alone
    # hand-computed: 2 * sqrt(0.8 * 0.2 / 50) = 0.113 < 0.20; 2 * sqrt(0.89 * 0.11 / 20) = 0.140 > 0.11
    assert said(0.8, 50) and not said(0.89, 20)
    assert said(0.89, 5000) and not said(0.95, 5000)  # many rows: the 10-point rule decides
    assert not said(2 / 3, 3)  # one image of three: 2 * sqrt(2/9 / 3) = 0.544 > 0.333
    assert said(0.0, 3)  # all three wrong: the accuracy is kept 1/3 from 0, 2 * sqrt(2/9 / 3) = 0.544 < 1
    assert not said(0.0, 1)  # one row says nothing either way

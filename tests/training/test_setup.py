"""featmlp.training.setup and .epoch: the rows a run trains on, and the lecture's gradient scale, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from featmlp.errors import DataError
from featmlp.model import Scaler
from featmlp.training.config import PRESETS, TrainConfig
from featmlp.training.config import gd_gradient_scale
from featmlp.training.setup import training_rows


def _data(n=40):
    X = np.arange(n * 2, dtype=np.float64).reshape(n, 2)
    return X, np.arange(n) % 2


def test_training_rows_hold_out_the_fraction_and_fit_the_scaler_on_the_rest_only():
    X, y = _data()
    rows = training_rows(X, y, TrainConfig(val_fraction=0.25, seed=1, device="cpu"))
    assert (len(rows.y), len(rows.y_val)) == (30, 10)
    # every row lands on exactly one side
    both = np.concatenate([rows.X, rows.X_val])
    assert sorted(map(tuple, both)) == sorted(map(tuple, X))
    assert np.bincount(rows.y_val).tolist() == [5, 5]  # stratified
    np.testing.assert_allclose(rows.scaler.offset, rows.X.mean(0))
    np.testing.assert_allclose(rows.scaler.scale, rows.X.std(0))
    assert rows.device.type == "cpu"
    assert rows.spec(TrainConfig(hidden=(3,)), 2).n_features == 2


def test_without_a_fraction_every_row_trains_and_given_validation_rows_stay():
    X, y = _data()
    rows = training_rows(X, y, TrainConfig(device="cpu"), X_val=X[:3], y_val=y[:3])
    assert rows.X is X and rows.X_val is not None and len(rows.X_val) == 3


def test_flips_fit_the_scaler_on_the_rows_and_their_mirror_images():
    X, y = _data()
    mirror = np.array([1, 0])
    config = TrainConfig(flip=True, device="cpu")
    rows = training_rows(X, y, config, mirror=mirror)
    reference = Scaler.fit(np.concatenate([X, X[:, mirror]]), "standard")
    np.testing.assert_allclose(rows.scaler.offset, reference.offset)
    np.testing.assert_allclose(rows.scaler.scale, reference.scale)
    # no mirror given (lr_find): the rows alone
    np.testing.assert_allclose(training_rows(X, y, config).scaler.offset, X.mean(0))


def test_a_fraction_leaving_no_rows_is_refused():
    X, y = _data(2)
    with pytest.raises(DataError, match="leaves no training or validation rows"):
        training_rows(X, y, TrainConfig(val_fraction=0.9, device="cpu"))


@pytest.mark.parametrize("n, size, expected", [(50_000, 64, 782), (128, 64, 2), (129, 64, 3), (10, None, 1)])
def test_the_lectures_gradient_scale_is_the_number_of_its_batches(n, size, expected):
    config = TrainConfig(optimizer="gd", lecture_batch_size=size)
    assert gd_gradient_scale(config, n) == expected == (math.ceil(n / size) if size else 1)
    assert gd_gradient_scale(PRESETS["default"], n) == 1  # minibatch optimisers: no scale

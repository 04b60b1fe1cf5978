"""The numpy engine of the lecture's gradient descent against torch's (featmlp.training.engines.arrays).

The reference is featmlp.training.loop.train (torch, FastEngine) on the same data and seed: the
initial weights bit for bit, then histories, weights and predictions to float32 tolerance.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from featmlp.model import MLPSpec, build_mlp
from featmlp.model.arrays import initial_arrays
from featmlp.training import PRESETS, TrainConfig, train
from featmlp.training.engines.arrays import arrays_fit, train_arrays

LECTURE = PRESETS["lecture"]


def _data(n=600, f=9, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    X = rng.normal(size=(n, f)) + y[:, None] * 0.3  # learnable, a little
    return X.astype(np.float32), y


@pytest.mark.parametrize("seed", [0, 1, 42, 12345, 2**31 - 1, 2**32 - 1])
@pytest.mark.parametrize("hidden", [(6,), (6, 6), (64, 32), (3,)])
def test_initial_weights_are_torchs_bit_for_bit(seed, hidden):
    spec = MLPSpec(9, 10, hidden=hidden)
    torch.manual_seed(seed)
    expected = {k: v.numpy() for k, v in build_mlp(spec).state_dict().items()}
    got = initial_arrays(spec, seed).state_dict()
    assert list(got) == list(expected)
    for name in expected:
        assert got[name].dtype == np.float32 and got[name].shape == expected[name].shape
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


@pytest.mark.parametrize("lr", [1.0, 10.0, 50.0, 500.0, 5000.0])
@pytest.mark.parametrize("hidden", [(6,), (6, 6)])
def test_the_same_run_as_torchs(lr, hidden):
    X, y = _data()
    config = dataclasses.replace(LECTURE, lr=lr, hidden=hidden)
    assert arrays_fit(X, config)
    ours, theirs = train_arrays(X, y, config, n_classes=10), train(X, y, config, n_classes=10)
    assert (ours.stop_reason, ours.diverged, len(ours.history)) == (theirs.stop_reason, theirs.diverged,
                                                                   len(theirs.history))
    for a, b in zip(ours.history, theirs.history):
        assert sorted(a) == sorted(b)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["train_accuracy"] == b["train_accuracy"] and a["lr"] == b["lr"] and a["epoch"] == b["epoch"]
    expected = {k: v.numpy() for k, v in theirs.model.state_dict().items()}
    for name, value in ours.model.state_dict().items():
        np.testing.assert_allclose(value, expected[name], rtol=1e-4, atol=1e-5 * np.abs(expected[name]).max(),
                                   err_msg=name)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-5)
    assert np.array_equal(ours.scaler.offset, theirs.scaler.offset)


def test_lecture_batch_size_and_weight_decay_as_torchs():
    X, y = _data(n=300, seed=3)
    config = dataclasses.replace(LECTURE, lecture_batch_size=64, weight_decay=1e-3, lr=0.5, epochs=8)
    assert arrays_fit(X, config)
    ours, theirs = train_arrays(X, y, config, n_classes=10), train(X, y, config, n_classes=10)
    np.testing.assert_allclose([r["train_loss"] for r in ours.history], [r["train_loss"] for r in theirs.history],
                               rtol=1e-5)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-5)


def test_max_steps_as_torchs():
    # full batch: one step an epoch, so at most 5 steps are 5 of the lecture's 20 epochs
    X, y = _data()
    config = dataclasses.replace(LECTURE, max_steps=5)
    assert arrays_fit(X, config)
    ours, theirs = train_arrays(X, y, config, n_classes=10), train(X, y, config, n_classes=10)
    assert len(ours.history) == len(theirs.history) == 5
    assert [r["lr"] for r in ours.history] == [r["lr"] for r in theirs.history]
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-5)


def test_divergence_as_torchs():
    X, y = _data(n=200, seed=5)
    X = X * 1e6  # minmax scaling undoes size: a huge lr instead
    config = dataclasses.replace(LECTURE, lr=3e38, epochs=5)
    ours, theirs = train_arrays(X, y, config, n_classes=10), train(X, y, config, n_classes=10)
    assert (ours.diverged, ours.stop_reason, len(ours.history)) == (theirs.diverged, theirs.stop_reason,
                                                                   len(theirs.history))
    np.testing.assert_allclose(ours.predict_proba(X[:20]), theirs.predict_proba(X[:20]), atol=1e-5)


def test_callbacks_stop_and_see_every_epoch():
    X, y = _data(n=100)
    seen = []

    def stop_at_3(record, history):
        seen.append(record["epoch"])
        return record["epoch"] == 3

    result = train_arrays(X, y, LECTURE, n_classes=10, callbacks=[stop_at_3])
    assert seen == [1, 2, 3] and result.stop_reason == "callback" and len(result.history) == 3


@pytest.mark.parametrize("change", [
    {"optimizer": "adam"}, {"hidden": (6,), "dropout": 0.2}, {"batch_norm": True}, {"val_fraction": 0.1},
    {"head": "ce"}, {"activation": "tanh"}, {"schedule": "cosine"}, {"flip": True}, {"class_weight": "balanced"},
    {"device": "cuda"}, {"bottleneck": 4},
])
def test_other_settings_train_with_torch(change):
    assert not arrays_fit(np.zeros((10, 9)), dataclasses.replace(LECTURE, **change))
    assert arrays_fit(np.zeros((10, 9)), LECTURE)
    assert not arrays_fit(np.zeros((10, 9)), TrainConfig())  # the default preset: adam, minibatches


def test_a_run_directory_from_it_is_the_torch_runs(tmp_path):
    """train_run writes the numpy engine's model as torch's: the same files, loadable, predicting the same."""
    from featmlp.runs.bundle import load_bundle, save_bundle
    from featmlp.runs.results import train_run
    from featmlp.tables.store import FeatureTable

    X, y = _data(n=400, seed=7)
    table = FeatureTable(X[:300], y[:300], X[300:], y[300:], tuple(f"f{i}" for i in range(9)),
                         tuple(f"c{i}" for i in range(10)))
    run = train_run(table, LECTURE, tmp_path / "run", live_plot_seconds=1e9)
    assert type(run.result.model).__name__ == "ArrayMLP"
    theirs = train(X[:300], y[:300], LECTURE, n_classes=10)
    save_bundle(tmp_path / "torch", theirs.model, theirs.spec, theirs.scaler, "unknown", table.class_names)
    ours_b, theirs_b = load_bundle(run.out), load_bundle(tmp_path / "torch")
    assert ours_b.spec == theirs_b.spec
    assert list(ours_b.model.state_dict()) == list(theirs_b.model.state_dict())
    np.testing.assert_allclose(ours_b.predict_proba(X[300:]), theirs_b.predict_proba(X[300:]), atol=1e-5)
    np.testing.assert_allclose(ours_b.predict_proba(X[300:]), run.result.predict_proba(X[300:]), atol=1e-6)
    metrics = json.loads((run.out / "metrics.json").read_text())
    assert metrics["device"] == "cpu" and metrics["epochs_run"] == 20
    assert metrics["test_accuracy"] == pytest.approx(float(np.mean(theirs.predict(X[300:]) == y[300:])), abs=1e-9)

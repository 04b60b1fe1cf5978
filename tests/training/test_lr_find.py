"""featmlp.training.lr_find: the learning-rate range test, checked by training with what it suggests."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification

from featmlp.errors import ConfigError
from featmlp.training.lr_find import RULES, LRFinderResult, lr_find, suggest_lr
from featmlp.training import PRESETS, TrainConfig, train


@pytest.fixture(scope="module")
def data():
    return make_classification(1200, 9, n_informative=6, n_classes=4, n_clusters_per_class=2,
                               random_state=0)


SMALL = TrainConfig(hidden=(32,), batch_size=64, epochs=8, schedule="none")


def _final_loss(X, y, config, lr):
    result = train(X, y, dataclasses.replace(config, lr=lr))
    return math.inf if result.diverged else result.history[-1]["train_loss"]


@pytest.mark.parametrize("config", [
    SMALL,
    dataclasses.replace(SMALL, optimizer="sgd", momentum=0.0),
], ids=["adam", "sgd"])
def test_suggestion_trains_better_than_100x_smaller_or_larger(data, config):
    X, y = data
    result = lr_find(X, y, config)
    lr = result.suggested_lr
    assert 1e-7 <= lr <= 10
    at = _final_loss(X, y, config, lr)
    assert at < _final_loss(X, y, config, lr / 100)
    assert at < _final_loss(X, y, config, lr * 100)


def test_stops_at_blow_up(data):
    X, y = data
    config = dataclasses.replace(SMALL, optimizer="sgd", momentum=0.0)
    result = lr_find(X, y, config, end_lr=1e4, num_steps=100)
    assert result.stop_reason in ("diverged", "non-finite")
    assert len(result.lrs) < 100 and result.lrs[-1] < 1e4
    assert np.all(np.isfinite(result.losses)) and np.all(np.isfinite(result.smoothed))
    if result.stop_reason == "diverged":
        assert result.smoothed[-1] > 4.0 * result.smoothed.min()
        assert np.all(result.smoothed[:-1] <= 4.0 * np.minimum.accumulate(result.smoothed[:-1]))
    # the suggestion comes from before the blow-up
    assert result.suggested_lr <= result.lrs[np.argmin(result.smoothed)]

    # a lower diverge_factor stops sooner
    sooner = lr_find(X, y, config, end_lr=1e4, num_steps=100, diverge_factor=1.5)
    assert len(sooner.lrs) <= len(result.lrs)


def test_curve_lrs_and_smoothing(data):
    X, y = data
    result = lr_find(X, y, SMALL, start_lr=1e-5, end_lr=1e-1, num_steps=20, smoothing=0.9)
    assert result.stop_reason == "completed" and len(result.lrs) == 20
    np.testing.assert_allclose(result.lrs, np.logspace(-5, -1, 20))
    # bias-corrected exponential moving average, worked out independently
    avg, expected = 0.0, []
    for i, loss in enumerate(result.losses):
        avg = 0.9 * avg + 0.1 * loss
        expected.append(avg / (1 - 0.9 ** (i + 1)))
    np.testing.assert_allclose(result.smoothed, expected)
    assert result.smoothed[0] == result.losses[0]
    assert set(result.suggestions) == set(RULES)
    assert result.suggestions["steepest"] == result.suggested_lr


def test_seeded_repeatable_and_leaves_global_rng_alone(data):
    X, y = data
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = lr_find(X, y, SMALL, num_steps=30)
    assert torch.equal(torch.rand(3), expected_next)
    b = lr_find(X, y, SMALL, num_steps=30)
    np.testing.assert_array_equal(a.losses, b.losses)
    assert a.suggested_lr == b.suggested_lr
    c = lr_find(X, y, dataclasses.replace(SMALL, seed=1), num_steps=30)
    assert not np.array_equal(a.losses, c.losses)


def test_starts_from_the_weights_train_starts_from(data):
    X, y = data
    # With full-batch gradient descent the first loss of both is the initial model's loss on
    # the whole (scaled) training set.
    config = dataclasses.replace(PRESETS["lecture"], head="ce", epochs=1)
    first = train(X, y, config).history[0]["train_loss"]
    found = lr_find(X, y, config, num_steps=10)
    assert found.losses[0] == pytest.approx(first, rel=1e-5)
    # val_fraction: the same rows, hence the same scaler and loss
    held = dataclasses.replace(config, val_fraction=0.25)
    first = train(X, y, held).history[0]["train_loss"]
    assert lr_find(X, y, held, num_steps=10).losses[0] == pytest.approx(first, rel=1e-5)


def test_lecture_preset_uses_full_batch_steps(data):
    X, y = data
    config = PRESETS["lecture"]
    result = lr_find(X, y, config, start_lr=1e-2, end_lr=1e4, num_steps=20)
    assert len(result.lrs) > 5
    # full batch: the first few steps at tiny lrs give (nearly) the same loss every time,
    # where minibatches would scatter
    assert np.ptp(result.losses[:5]) < 1e-4


def test_dropout_and_batch_norm_models_run(data):
    X, y = data
    config = dataclasses.replace(SMALL, dropout=0.2, batch_norm=True)
    result = lr_find(X, y, config, num_steps=20)
    assert len(result.lrs) >= 5 and np.isfinite(result.suggested_lr)


def test_suggest_lr_rules():
    lrs = np.logspace(-4, 0, 9)
    smoothed = np.array([2.0, 2.0, 1.9, 1.4, 1.0, 0.9, 0.85, 1.5, 4.0])
    lr, sentence = suggest_lr(lrs, smoothed)
    assert lr == lrs[3] and "steepest" in sentence  # the largest drop per decade
    lr, sentence = suggest_lr(lrs, smoothed, "minimum/10")
    assert lr == pytest.approx(lrs[6] / 10) and "tenth" in sentence
    # a loss that only rises: the smallest lr, and the sentence says so
    lr, sentence = suggest_lr(lrs, np.linspace(1, 3, 9))
    assert lr == lrs[0] and "never fell" in sentence
    with pytest.raises(ConfigError, match="rule 'nope' is not one of"):
        suggest_lr(lrs, smoothed, "nope")


@pytest.mark.parametrize("kwargs, message", [
    ({"start_lr": 1.0, "end_lr": 0.1}, "0 < start_lr < end_lr"),
    ({"start_lr": 0.0}, "0 < start_lr < end_lr"),
    ({"num_steps": 2}, "num_steps must be an integer >= 5"),
    ({"smoothing": 1.0}, r"smoothing must be a finite number in \[0, 1\)"),
    ({"diverge_factor": 1.0}, "diverge_factor must be a finite number > 1"),
    ({"rule": "best"}, "rule 'best' is not one of"),
])
def test_bad_arguments_are_named(data, kwargs, message):
    X, y = data
    with pytest.raises(ConfigError, match=message):
        lr_find(X, y, SMALL, **kwargs)


def test_plot_and_json(tmp_path, data):
    X, y = data
    result = lr_find(X, y, SMALL, num_steps=30)
    path = result.plot(tmp_path / "lr.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    d = json.loads(json.dumps(result.to_dict()))
    assert d["suggested_lr"] == result.suggested_lr and len(d["lrs"]) == len(result.lrs)
    assert TrainConfig.from_dict(d["config"]) == SMALL
    # an empty curve (loss not finite at once) still plots
    empty = LRFinderResult(np.array([]), np.array([]), np.array([]), 1e-7, "none")
    assert empty.plot(tmp_path / "empty.png").exists()


def test_plot_to_an_unknown_format_is_refused_and_writes_nothing(tmp_path):
    result = LRFinderResult(np.logspace(-3, 0, 4), np.array([1.0, .8, .5, 2.]),
                            np.array([1.0, .9, .7, 1.2]), 1e-2, "a rule")
    with pytest.raises(ConfigError, match=r"\.txt .*\.png.*\.svg"):
        result.plot(tmp_path / "lr.txt")
    assert list(tmp_path.iterdir()) == []
    # the formats matplotlib writes other than png still work, whatever the suffix's case
    assert result.plot(tmp_path / "lr.SVG").read_bytes().lstrip().startswith(b"<?xml")
    assert result.plot(tmp_path / "lr.pdf").read_bytes()[:5] == b"%PDF-"

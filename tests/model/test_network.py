"""featmlp.model.network: the network and its loss heads against torch."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from featmlp.errors import ConfigError
from featmlp.model import (
    HEADS,
    MLPSpec,
    Scaler,
    build_mlp,
    predict_proba,
    training_bytes,
)


def test_build_mlp_layers_follow_the_spec():
    model = build_mlp(MLPSpec(9, 10, hidden=(6, 5), activation="tanh", dropout=0.2, batch_norm=True))
    assert [type(m) for m in model.hidden[0]] == [nn.Linear, nn.BatchNorm1d, nn.Tanh, nn.Dropout]
    assert [(l.in_features, l.out_features) for l in model.linear_layers()] == [(9, 6), (6, 5), (5, 10)]
    assert model(torch.zeros(3, 9)).shape == (3, 10)


def test_lecture_network_is_the_notebooks():
    # Same seed, same layer order: the lecture's nn.Sequential gets the same initial weights.
    torch.manual_seed(3)
    ours = build_mlp(MLPSpec(9, 10, hidden=(6,)))
    torch.manual_seed(3)
    lecture = nn.Sequential(nn.Linear(9, 6), nn.ReLU(), nn.Linear(6, 10))
    x = torch.randn(4, 9)
    torch.testing.assert_close(ours(x), lecture(x))


def test_cross_entropy_head_matches_torch_in_both_layouts():
    logits = torch.randn(7, 4)
    y = torch.randint(0, 4, (7,))
    expected = F.cross_entropy(logits, y, reduction="none")
    torch.testing.assert_close(HEADS["ce"](logits, y), expected)
    torch.testing.assert_close(HEADS["ce"](logits.t().contiguous(), y, 0), expected)


def test_mse_head_is_the_lectures_mse_on_softmax_and_one_hot():
    logits = torch.randn(7, 4)
    y = torch.randint(0, 4, (7,))
    probs, onehot = torch.softmax(logits, dim=1), F.one_hot(y, 4).float()
    per_sample = HEADS["mse"](logits, y)
    torch.testing.assert_close(per_sample, ((probs - onehot) ** 2).mean(dim=1))
    # Its mean over samples is nn.MSELoss() as the notebook used it.
    torch.testing.assert_close(per_sample.mean(), nn.MSELoss()(probs, onehot))
    torch.testing.assert_close(HEADS["mse"](logits.t().contiguous(), y, 0), per_sample)


def test_predict_proba_keeps_row_order_across_chunks():
    X = np.random.default_rng(3).normal(size=(11, 3))
    model, scaler = build_mlp(MLPSpec(3, 4, hidden=(5,))), Scaler.fit(X)
    whole = predict_proba(model, scaler, X)
    chunked = predict_proba(model, scaler, X, batch_size=2)
    np.testing.assert_allclose(chunked, whole, rtol=1e-6)
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(scaler.transform(X))), 1).numpy()
    np.testing.assert_allclose(whole, expected, rtol=1e-6)
    np.testing.assert_allclose(whole.sum(1), 1, rtol=1e-6)


def test_bottleneck_is_a_linear_layer_before_the_hidden_ones():
    spec = MLPSpec(20, 3, hidden=(8,), bottleneck=4, dropout=0.5)
    model = build_mlp(spec)
    assert [l.weight.shape for l in model.linear_layers()] == [(4, 20), (8, 4), (3, 8)]
    model.eval()
    x = torch.randn(5, 20)
    b = model.bottleneck
    h = torch.relu(model.hidden[0][0](b(x)))  # no activation after the bottleneck
    torch.testing.assert_close(model(x), model.output(h))
    assert "bottleneck.weight" in model.state_dict()
    assert "bottleneck.weight" not in build_mlp(MLPSpec(20, 3, hidden=(8,))).state_dict()
    with pytest.raises(ConfigError, match="bottleneck"):
        MLPSpec(20, 3, bottleneck=-1).validate()


def test_training_memory_grows_with_the_network():
    small = training_bytes(MLPSpec(9, 10, hidden=(64,)), 256, 50000)
    assert training_bytes(MLPSpec(9, 10, hidden=(100_000_000,)), 256, 50000) > 100 * 2**30 > 1000 * small
    # the parameters' copies at least: 7 float32 copies of 10^9 values
    assert training_bytes(MLPSpec(9, 10, hidden=(100_000_000,)), 1, 1) >= 7 * 4 * 1_900_000_010

"""featmlp.model: the network, its loss heads and the scaler, against torch and scikit-learn."""

import numpy as np
import pytest
import torch
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from torch import nn
from torch.nn import functional as F

from featmlp.errors import ConfigError, DataError
from featmlp.model import ACTIVATIONS, HEADS, MLPSpec, build_mlp, parameter_count, predict_proba, training_bytes
from featmlp.model import SCALERS, Scaler
from featmlp.tables.passes import nonfinite_rows


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


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_activation_builds(name):
    model = build_mlp(MLPSpec(3, 2, hidden=(4,), activation=name))
    assert isinstance(model.hidden[0][1], ACTIVATIONS[name])


@pytest.mark.parametrize("field, value, words", [
    ("activation", "swish", ["'swish'", "relu", "gelu"]),
    ("head", "hinge", ["'hinge'", "ce", "mse"]),
    ("hidden", (0,), ["hidden", "(0,)"]),
    ("dropout", 1.0, ["dropout", "1.0"]),
    ("n_features", 0, ["n_features", "0"]),
])
def test_spec_validation_names_value_and_choices(field, value, words):
    kwargs = {"n_features": 3, "n_classes": 2, field: value}
    with pytest.raises(ConfigError) as err:
        build_mlp(MLPSpec(**kwargs))
    for word in words:
        assert word in str(err.value)


def test_spec_dict_round_trip():
    spec = MLPSpec(9, 10, hidden=(512, 256), activation="gelu", dropout=0.1, batch_norm=True)
    assert MLPSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError, match="bogus"):
        MLPSpec.from_dict({**spec.to_dict(), "bogus": 1})


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


def test_minmax_scaler_is_the_fixed_one_and_matches_sklearn():
    rng = np.random.default_rng(0)
    X_train = rng.normal(3, 2, size=(50, 4))
    X_test = rng.normal(3, 2, size=(10, 4))
    ours = Scaler.fit(X_train, "minmax")
    ref = MinMaxScaler().fit(X_train)
    np.testing.assert_allclose(ours.transform(X_test), ref.transform(X_test), rtol=1e-5, atol=1e-6)
    # Not the lecture's x / max: the training minimum maps to 0.
    assert ours.transform(X_train).min(axis=0) == pytest.approx(np.zeros(4), abs=1e-7)


def test_standard_scaler_matches_sklearn_and_fits_on_train_only():
    rng = np.random.default_rng(1)
    X_train, X_test = rng.normal(5, 3, size=(40, 3)), rng.normal(-5, 1, size=(8, 3))
    ours = Scaler.fit(X_train, "standard")
    ref = StandardScaler().fit(X_train)
    np.testing.assert_allclose(ours.transform(X_test), ref.transform(X_test), rtol=1e-5, atol=1e-5)


def test_constant_feature_scales_to_zero_not_nan():
    X = np.array([[1.0, 7.0], [3.0, 7.0], [2.0, 7.0]])
    for kind in ("standard", "minmax"):
        out = Scaler.fit(X, kind).transform(X)
        assert np.all(np.isfinite(out)) and np.all(out[:, 1] == 0)


def test_none_scaler_is_identity_and_output_is_float32():
    X = np.arange(6.0).reshape(3, 2)
    out = Scaler.fit(X, "none").transform(X)
    assert out.dtype == np.float32 and np.array_equal(out, X)


def test_scaler_dict_round_trip_and_errors():
    X = np.random.default_rng(2).normal(size=(20, 3))
    s = Scaler.fit(X, "minmax")
    d = s.to_dict()
    assert set(d) == {"kind", "offset", "scale"} and isinstance(d["offset"], np.ndarray)
    back = Scaler.from_dict({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in d.items()})
    np.testing.assert_array_equal(back.transform(X), s.transform(X))
    with pytest.raises(DataError, match="4 features|3 features"):
        s.transform(np.zeros((2, 4)))
    with pytest.raises(DataError):
        Scaler.from_dict({"kind": "minmax", "offset": [0.0], "scale": [0.0]})
    with pytest.raises(ConfigError, match="'robust'"):
        Scaler.fit(X, "robust")
    assert set(SCALERS) == {"standard", "minmax", "global", "none"}


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


def test_global_scaler_centres_columns_with_one_scale():
    rng = np.random.default_rng(0)
    X = rng.normal(3.0, [1.0, 2.0, 5.0], size=(400, 3))
    s = Scaler.fit(X, "global")
    np.testing.assert_allclose(s.offset, X.mean(0))
    np.testing.assert_allclose(s.scale, np.sqrt(np.mean(X.var(0))) * np.ones(3))
    np.testing.assert_allclose(s.transform(X).mean(0), 0, atol=1e-6)


@pytest.mark.parametrize("kind", ["standard", "global", "minmax", "none"])
def test_mirror_scaler_is_that_of_the_rows_and_their_mirror_images(kind):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 6)) * [1, 2, 3, 4, 5, 6] + [0, 1, 2, 3, 4, 5]
    mirror = np.array([3, 4, 5, 0, 1, 2])
    by_hand = Scaler.fit(np.concatenate([X, X[:, mirror]]), kind)
    s = Scaler.fit(X, kind, mirror=mirror)
    np.testing.assert_allclose(s.offset, by_hand.offset, atol=1e-12)
    np.testing.assert_allclose(s.scale, by_hand.scale, rtol=1e-12)


def test_float32_tables_are_scaled_without_float64_copies_and_match_sklearn():
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(2)
    X = rng.normal(5, 2, size=(10_000, 7)).astype(np.float32)
    s = Scaler.fit(X)
    ref = StandardScaler().fit(X.astype(np.float64))
    np.testing.assert_allclose(s.offset, ref.mean_, rtol=1e-6)
    np.testing.assert_allclose(s.scale, ref.scale_, rtol=1e-6)
    out = s.transform(X)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ref.transform(X.astype(np.float64)), atol=1e-5)


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


@pytest.mark.parametrize("kind", sorted(SCALERS))
def test_scaler_refuses_columns_too_large_to_scale(kind):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 4))
    odd = np.arange(50) % 2 == 1
    X[:, 2] = np.where(odd, 1e308, -1e308)  # spread, range, square: all overflow float64
    X[:, 3] = np.where(odd, 9e307, -9e307)
    with pytest.raises(DataError, match=r"column\(s\) \(c2, c3\) hold values too large") as e:
        Scaler.fit(X, kind, names=["c0", "c1", "c2", "c3"])
    assert str(e.value).startswith("2 feature")
    with pytest.raises(DataError, match=r"index 2, 3"):
        Scaler.fit(X, kind)
    # large but scalable values are fine: the scaled columns are finite
    X[:, 2:] = rng.normal(size=(50, 2)) * (1e30 if kind != "none" else 1e5)
    assert np.isfinite(Scaler.fit(X, kind).transform(X)).all()


def test_nonfinite_rows():
    X = np.zeros((10000, 3))
    X[[4, 4097, 9999], [0, 2, 1]] = [np.nan, np.inf, -np.inf]
    assert nonfinite_rows(X).tolist() == [4, 4097, 9999]
    assert nonfinite_rows(np.zeros((0, 3))).tolist() == []


@pytest.mark.parametrize("spec", [
    MLPSpec(9, 10, hidden=(6,)),
    MLPSpec(30, 4, hidden=(16, 8), batch_norm=True, dropout=0.2),
    MLPSpec(300, 10, hidden=(64,), bottleneck=12),
    MLPSpec(5, 2, hidden=()),
])
def test_parameter_count_is_torchs(spec):
    assert parameter_count(spec) == sum(p.numel() for p in build_mlp(spec).parameters())


def test_training_memory_grows_with_the_network():
    small = training_bytes(MLPSpec(9, 10, hidden=(64,)), 256, 50000)
    assert training_bytes(MLPSpec(9, 10, hidden=(100_000_000,)), 256, 50000) > 100 * 2**30 > 1000 * small
    # the parameters' copies at least: 7 float32 copies of 10^9 values
    assert training_bytes(MLPSpec(9, 10, hidden=(100_000_000,)), 1, 1) >= 7 * 4 * 1_900_000_010

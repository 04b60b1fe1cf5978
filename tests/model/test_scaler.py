"""featmlp.model.scaler: the scalers against scikit-learn."""

import numpy as np
import pytest
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from featmlp.errors import ConfigError, DataError
from featmlp.model import (
    SCALERS,
    Scaler,
)


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

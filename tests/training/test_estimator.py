"""FeatMLPClassifier: scikit-learn's own estimator checks, pipelines and search."""

import dataclasses

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from featmlp.estimator import FeatMLPClassifier
from featmlp.training import PRESETS


# Small and quick, but the default learning settings: scikit-learn's checks train on ~100-300
# samples and expect > 83% accuracy on well-separated blobs.
@parametrize_with_checks([FeatMLPClassifier(hidden=(32,), epochs=40, batch_size=32, random_state=0)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _data(n=120, seed=0):
    return make_classification(n, 6, n_informative=4, n_redundant=0, n_classes=3,
                               n_clusters_per_class=1, class_sep=2.0, random_state=seed)


def test_string_labels_and_predict_proba_columns_follow_classes_():
    X, y = _data()
    names = np.array(["cat", "dog", "frog"])[y]
    clf = FeatMLPClassifier(hidden=(16,), epochs=30, batch_size=16, random_state=0).fit(X, names)
    assert list(clf.classes_) == ["cat", "dog", "frog"]
    proba = clf.predict_proba(X)
    assert np.array_equal(clf.predict(X), clf.classes_[proba.argmax(1)])
    assert clf.score(X, names) > 0.8
    assert clf.n_features_in_ == 6 and clf.n_iter_ == 30 and len(clf.loss_curve_) == 30
    assert clf.diverged_ is False and clf.history_[-1]["train_loss"] == clf.loss_curve_[-1]


def test_pipeline_and_grid_search():
    X, y = _data()
    pipe = make_pipeline(StandardScaler(), FeatMLPClassifier(hidden=(8,), epochs=10, batch_size=32,
                                                             random_state=0))
    search = GridSearchCV(pipe, {"featmlpclassifier__hidden": [(4,), (16,)],
                                 "featmlpclassifier__lr": [1e-3, 1e-2]}, cv=2)
    search.fit(X, y)
    assert search.best_params_["featmlpclassifier__hidden"] in [(4,), (16,)]
    assert search.score(X, y) > 0.5


def test_preset_with_overrides_is_dataclasses_replace():
    X, y = _data()
    clf = FeatMLPClassifier(preset="lecture", lr=50.0, epochs=3, random_state=0).fit(X, y)
    expected = dataclasses.replace(PRESETS["lecture"], lr=50.0, epochs=3, seed=clf.config_.seed)
    assert clf.config_ == expected
    assert clf.get_params()["hidden"] is None  # None: the preset's value, stored unchanged


def test_hidden_may_be_an_int():
    X, y = _data()
    clf = FeatMLPClassifier(hidden=5, epochs=1, random_state=0).fit(X, y)
    assert clf.config_.hidden == (5,)


def test_invalid_settings_raise_at_fit_not_init():
    X, y = _data()
    clf = FeatMLPClassifier(optimizer="lbfgs", preset="nope")
    with pytest.raises(ValueError, match="'nope'"):
        clf.fit(X, y)
    with pytest.raises(ValueError, match="'lbfgs'.*adam"):
        clf.set_params(preset=None).fit(X, y)


def test_class_weight_dict_maps_labels():
    X, y = _data()
    names = np.array(["cat", "dog", "frog"])[y]
    clf = FeatMLPClassifier(hidden=(4,), epochs=1, class_weight={"dog": 3.0}, random_state=0)
    assert clf.fit(X, names).config_.class_weight == (1.0, 3.0, 1.0)
    with pytest.raises(ValueError, match="bird"):
        clf.set_params(class_weight={"bird": 2.0}).fit(X, names)


def test_random_state_repeats_fit():
    X, y = _data()
    a = FeatMLPClassifier(hidden=(8,), epochs=5, random_state=3).fit(X, y).predict_proba(X)
    b = FeatMLPClassifier(hidden=(8,), epochs=5, random_state=3).fit(X, y).predict_proba(X)
    assert np.array_equal(a, b)


def test_one_seed_is_one_network(tmp_path, run_cli):
    # same data, same settings, same seed: the estimator, the API's train and `featmlp train` give
    # the same weights (random_state=7 once meant a seed drawn from RandomState(7))
    import torch

    from featmlp.runs.bundle import load_bundle
    from featmlp.tables.store import FeatureTable, load_features, save_features
    from featmlp.training import train

    X, y = make_classification(240, 9, n_informative=6, n_classes=3, random_state=0)
    feats = save_features(tmp_path / "f.npz", FeatureTable(X[:200], y[:200], X[200:], y[200:],
                                                           tuple(f"f{i}" for i in range(9)), ("a", "b", "c")))
    code, _, err = run_cli(["train", feats, "--hidden", "8", "--epochs", "3", "--seed", "7", "-q",
                            "--out", tmp_path / "r"])
    assert code == 0, err
    table = load_features(feats)
    cli = load_bundle(tmp_path / "r").model.state_dict()
    clf = FeatMLPClassifier(hidden=(8,), epochs=3, val_fraction=0.1, random_state=7).fit(table.X_train, table.y_train)
    config = dataclasses.replace(PRESETS["default"], hidden=(8,), epochs=3, val_fraction=0.1, seed=7)
    api = train(table.X_train, table.y_train, config, n_classes=3).model.state_dict()
    for name, weights in cli.items():
        torch.testing.assert_close(clf.model_.state_dict()[name].cpu(), weights, rtol=0, atol=0)
        torch.testing.assert_close(api[name].cpu(), weights, rtol=0, atol=0)
    other = FeatMLPClassifier(hidden=(8,), epochs=3, val_fraction=0.1, random_state=8).fit(table.X_train, table.y_train)
    first = next(iter(cli))
    assert not torch.equal(other.model_.state_dict()[first].cpu(), cli[first])

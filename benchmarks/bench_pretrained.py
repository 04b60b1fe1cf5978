"""Pretrained features: images/s of featmlp's path (ONNX Runtime) against torch eager, NCHW and
channels_last, on the same images and weights, in one run (issue 16, item 3).

The images are the first ``--n`` of ``../shared/data/cifar10-jpg.tar.gz`` (32x32), decoded before any
timing; each path computes the features of all of them, in batches of
``featmlp.features._runtime.BATCH_IMAGES`` (and their mirror images with ``--mirror``), with the same
preprocessing (resize to ``--size``, normalisation), on the threads featmlp's policy gives. The paths take
turns within each of ``--repeats`` rounds after a warm-up round, so a passing load weighs on all alike;
the median images/s is printed with the spread and the ratio to each torch path. Before timing, the
runtime's features are checked equal to torch eager's to 1e-4 relative.

    python benchmarks/bench_pretrained.py [--set efficientnet-lite0] [--n 2000] [--size 128] [--stages 4]
                                          [--mirror] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import itertools
import statistics
import tarfile
import time
from pathlib import Path

import numpy as np

ARCHIVE = Path(__file__).resolve().parent.parent / ".." / "shared" / "data" / "cifar10-jpg.tar.gz"


def cifar_images(n: int) -> np.ndarray:
    from PIL import Image

    if not ARCHIVE.exists():  # a clone alone: smooth random images instead
        rng = np.random.default_rng(0)
        small = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
        return np.stack([np.asarray(Image.fromarray(s).resize((32, 32), Image.Resampling.BICUBIC)) for s in small])
    with tarfile.open(ARCHIVE) as tf:
        members = (m for m in tf if m.isfile() and m.name.endswith(".jpg"))
        return np.stack([np.asarray(Image.open(io.BytesIO(tf.extractfile(m).read())).convert("RGB"))
                         for m in itertools.islice(members, n)])


def main() -> None:
    import torch

    from featmlp.features import extract_features, fit_features
    from featmlp.features import _backbones, _runtime as rt

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", default="efficientnet-lite0")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--stages", type=int, default=4)
    ap.add_argument("--mirror", action="store_true", help="also the mirror images (twice the work)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    images = cifar_images(args.n)
    # one network at one side, as torch eager runs it: no second side (also) nor HOG
    options = {"size": args.size, "stages": args.stages, "mirror": args.mirror, "also": 0, "hog": 0}
    state = fit_features(args.set, images[:1], options)
    fitted = state[args.set]
    threads = rt.runtime_threads()
    torch.set_num_threads(threads)
    net = _backbones.pooled_network(fitted, fitted.check_weights())

    X = extract_features(images[:64], args.set, state=state)
    E = rt.eager_features(fitted, images[:64], net=net)
    rel = float(np.abs(X - E).max() / np.abs(E).max())
    assert rel < 1e-4, rel

    paths = {
        "featmlp (onnxruntime)": lambda batch: extract_features(batch, args.set, state=state),
        "torch eager NCHW": lambda batch: rt.eager_features(fitted, batch, net=net),
        "torch eager channels_last": lambda batch: rt.eager_features(fitted, batch, net=net, channels_last=True),
    }
    try:  # the other runtime the issue asked to try, on the same exported graph, where it is installed
        import openvino

        compiled = openvino.Core().compile_model(str(rt.onnx_file(fitted)), "CPU", {
            "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()
        assert np.abs(rt.run_batches(images[:64], fitted, lambda x: request.infer({0: x})[0]) - E).max() \
            / np.abs(E).max() < 1e-4
        paths["openvino (same graph)"] = lambda batch: rt.run_batches(batch, fitted,
                                                                        lambda x: request.infer({0: x})[0])
    except ImportError:
        print("(openvino is not installed: pip install openvino for its column)")
    for fn in paths.values():  # warm-up: sessions built, allocators grown
        fn(images[:128])
    rates = {name: [] for name in paths}
    for _ in range(args.repeats):
        for name, fn in paths.items():
            start = time.perf_counter()
            fn(images)
            rates[name].append(len(images) / (time.perf_counter() - start))
    print(f"{args.set}, {args.size} px, {args.stages} stages{', with mirror images' if args.mirror else ''}: "
          f"{len(images)} CIFAR-10 images, {threads} threads, torch {torch.__version__}; runtime features "
          f"= eager to {rel:.1e} relative")
    ours = statistics.median(rates["featmlp (onnxruntime)"])
    for name, values in rates.items():
        med = statistics.median(values)
        ratio = "" if med == ours else f"   featmlp is {ours / med:.2f}x this"
        print(f"  {name:28s} {med:7.1f} img/s  ({min(values):.1f}..{max(values):.1f}){ratio}")


if __name__ == "__main__":
    main()

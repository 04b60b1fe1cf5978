"""GPU check of the pretrained sets (issue 16, item 7): one short script for a machine with CUDA.

On the same 2,000 CIFAR-10 images (``../shared/data/cifar10-jpg.tar.gz``, or smooth random images):
efficientnet-lite0 features on the GPU (torch, what ``extract`` does where torch sees CUDA) against
the CPU's (ONNX Runtime, ``FEATMLP_DEVICE=cpu``), largest difference relative to the largest value
(goal: 1e-3), img/s of each; then a head trained on CUDA (``device="cuda"``) on those features for
a few epochs, with its seconds per epoch. CI has no GPU: nothing here runs in the tests.

    python benchmarks/gpu_check.py [--n 2000]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import numpy as np


def main() -> None:
    import torch

    from bench_pretrained import cifar_images
    from featmlp.features import extract_features, fit_features
    from featmlp.training import PRESETS, train

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    assert torch.cuda.is_available(), "no CUDA device: this check needs a GPU"
    images = cifar_images(args.n)
    state = fit_features("efficientnet-lite0", images[:1])

    def timed(device):
        os.environ["FEATMLP_DEVICE"] = device
        extract_features(images[:64], "efficientnet-lite0", state=state)  # warm-up
        start = time.perf_counter()
        X = extract_features(images, "efficientnet-lite0", state=state)
        return X, len(images) / (time.perf_counter() - start)

    X_gpu, gpu_rate = timed("auto")
    X_cpu, cpu_rate = timed("cpu")
    rel = float(np.abs(X_gpu - X_cpu).max() / np.abs(X_cpu).max())
    print(f"{torch.cuda.get_device_name()}: GPU {gpu_rate:.0f} img/s, CPU (onnxruntime) {cpu_rate:.0f} img/s; "
          f"features equal to {rel:.1e} relative ({'ok' if rel < 1e-3 else 'OVER 1e-3'})")
    y = np.arange(len(images)) % 10  # labels do not matter for the timing
    config = dataclasses.replace(PRESETS["pretrained"], epochs=3, device="cuda")
    start = time.perf_counter()
    result = train(X_gpu, y, config, mirror=state["efficientnet-lite0"].mirror_permutation())
    print(f"training on {result.device}: {(time.perf_counter() - start) / 3:.2f} s per epoch of "
          f"{2 * len(images)} rows (with the mirror images)")


if __name__ == "__main__":
    main()

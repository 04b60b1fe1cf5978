"""Epoch time on 1 and 2 CPU threads, with the machine quiet and with a competing process.

Issue 8: with another process busy, torch's 2 OpenMP threads made the default network's epochs
swing from 1 s to 100 s, where 1 thread stayed at 1.2 s. For four network sizes this trains a
few epochs with ``FEATMLP_NUM_THREADS=1``, ``=2`` and unset (featmlp's own choice,
:func:`featmlp.training.training_threads`), first quiet, then beside a CPU-bound busy loop in
another process (one core's worth, running throughout and killed with this script), and prints
the median epoch time of each, the 2-vs-1 ratio and the spread over the repeats.

- lecture: 9 -> 6 -> 10, softmax + MSE, full-batch gradient descent (one step per epoch);
- default: the default preset, 9 -> 256 -> 256 -> 10, Adam, batch 256;
- wide: the wide preset on 355 columns (lecture+hog+color), dropout 0.3;
- kmeans: 14,400 -> 256 (linear bottleneck) -> 2048 -> 10, dropout 0.5, batch 256.

Data are random gaussian features with a learnable signal (the timing does not depend on the
values). ``--rows`` scales the row counts (default 1: 50,000 / 20,000 / 20,000 / 3,000).

    python benchmarks/bench_threads.py [--repeats 3] [--epochs 2] [--rows 1.0]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from featmlp.training import PRESETS, THREADS_ENV, TrainConfig, idle_cores, train

NETWORKS = {
    "lecture 9->6->10 full batch": (9, 50_000, PRESETS["lecture"]),
    "default 9->256->256->10": (9, 50_000, PRESETS["default"]),
    "wide 355->256->256->10": (355, 20_000, PRESETS["wide"]),
    "kmeans 14400->256->2048->10": (14_400, 3_000, dataclasses.replace(
        PRESETS["kmeans"], flip=False, test_flip=False)),
}
SETTINGS = (("1", "1 thread"), ("2", "2 threads"), (None, "featmlp"))

# One core's worth of CPU-bound work in another process. It dies with this script: it polls its
# parent and exits when the parent is gone (even after a kill -9 of the script).
_BUSY = """
import os, sys
parent = int(sys.argv[1])
while True:
    for _ in range(200_000):
        pass
    if os.getppid() != parent:
        break
"""


def data(n_features: int, rows: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, n_features)).astype(np.float32)
    W = rng.normal(size=(n_features, 10)).astype(np.float32)
    y = np.argmax(X @ W + 2.0 * rng.normal(size=(rows, 10)), axis=1)
    return X, y


def epoch_seconds(X, y, config: TrainConfig, threads: str | None, epochs: int) -> tuple[float, int]:
    """Median epoch time of one training run, and the thread count it trained with."""
    if threads is None:
        os.environ.pop(THREADS_ENV, None)
    else:
        os.environ[THREADS_ENV] = threads
    seen = []
    result = train(X, y, dataclasses.replace(config, epochs=epochs, device="cpu"), n_classes=10,
                   callbacks=[lambda record, history: seen.append(torch.get_num_threads())])
    return statistics.median(r["seconds"] for r in result.history), seen[-1]


def measure(networks, repeats: int, epochs: int, label: str) -> dict:
    figures = {}
    for name, (X, y, config) in networks.items():
        runs = {setting: [] for _, setting in SETTINGS}
        # The settings take turns, so a load that comes and goes weighs on all of them alike.
        for _ in range(repeats):
            for threads, setting in SETTINGS:
                runs[setting].append(epoch_seconds(X, y, config, threads, epochs))
        for _, setting in SETTINGS:
            figures[name, setting] = ([s for s, _ in runs[setting]], sorted({t for _, t in runs[setting]}))
            print(f"  [{label}] {name:30s} {setting:10s} median "
                  f"{statistics.median(figures[name, setting][0]):8.3f} s/epoch", file=sys.stderr, flush=True)
    return figures


def report(title: str, figures: dict, networks) -> None:
    print(f"\n{title}")
    print(f"{'network':30s} {'1 thread s/ep':>14s} {'2 threads s/ep':>15s} {'1t/2t':>8s} "
          f"{'featmlp s/ep':>13s} {'(threads)':>9s}   spread (min-max of {len(next(iter(figures.values()))[0])})")
    for name in networks:
        one, two, auto = (figures[name, s] for _, s in SETTINGS)
        m1, m2, ma = (statistics.median(t) for t, _ in (one, two, auto))
        spread = "  ".join(f"{min(t):.3f}-{max(t):.3f}" for t, _ in (one, two, auto))
        chosen = ",".join(map(str, auto[1]))
        print(f"{name:30s} {m1:14.3f} {m2:15.3f} {m1 / m2:7.2f}x {ma:13.3f} {chosen:>9s}   {spread}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rows", type=float, default=1.0, help="Scale of the row counts.")
    parser.add_argument("--competitors", type=int, default=1,
                        help="Busy-loop processes beside the second measurement.")
    args = parser.parse_args()
    if THREADS_ENV in os.environ or "OMP_NUM_THREADS" in os.environ:
        sys.exit(f"unset {THREADS_ENV} and OMP_NUM_THREADS first: this benchmark sets the count itself")
    networks = {name: (*data(f, max(256, int(rows * args.rows))), config)
                for name, (f, rows, config) in NETWORKS.items()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"median epoch of {args.epochs}, {args.repeats} repeats; load average before: "
          f"{os.getloadavg()[0]:.2f}; idle cores measured: {idle_cores(0.5):.2f}")
    for X, y, config in networks.values():  # warm-up: first-call costs out of the figures
        epoch_seconds(X[:512], y[:512], config, "1", 1)

    quiet = measure(networks, args.repeats, args.epochs, "quiet")
    busy = []
    try:
        busy = [subprocess.Popen([sys.executable, "-c", _BUSY, str(os.getpid())])
                for _ in range(args.competitors)]
        time.sleep(1.0)
        print(f"{len(busy)} competing process(es) running; idle cores measured: "
              f"{idle_cores(0.5):.2f}", file=sys.stderr)
        contended = measure(networks, args.repeats, args.epochs, "busy")
    finally:
        for p in busy:
            p.send_signal(signal.SIGKILL)
            p.wait()
    report("Quiet machine (no competing process of ours):", quiet, networks)
    report(f"With {args.competitors} CPU-bound process(es) competing (a Python busy loop each):",
           contended, networks)
    print("\n1t/2t: 1-thread epoch time / 2-thread epoch time (above 1: two threads are faster). "
          "featmlp: FEATMLP_NUM_THREADS unset, the threads it chose in brackets.")


if __name__ == "__main__":
    main()

"""Training speed, side by side in one run (issue 3's goals).

(a) The lecture's loop, reimplemented faithfully (TensorDataset + DataLoader of 64 with shuffle,
    softmax output, nn.MSELoss per batch, the batch losses summed into one backward pass, one
    manual step per epoch) against featmlp's "lecture" preset (full-batch gradient descent on the
    mean loss, one forward/backward per epoch). The notebook's gradient is ceil(N/64) times the
    mean loss's, so the loop runs at lr / ceil(N/64) to follow the very same descent as the preset
    at lr: the per-epoch losses must agree.
(b) scikit-learn's MLPClassifier against featmlp, both 9 -> 64 -> 10, batch 256, Adam, the same
    number of epochs: seconds per epoch (whole fit / epochs) and test accuracy. featmlp uses the
    default preset's learning rate and schedule (tuned on a validation split of train).
(c) The default preset itself: seconds per epoch and test accuracy.

Data: the lecture's 50,000 x 9 CIFAR-10 features from runs/cifar-features.npz (``featmlp extract
../shared/data/cifar10-jpg.tar.gz -o runs/cifar-features.npz``) when present, else random gaussian
features with a learnable signal of the same shape.

    python benchmarks/bench_train.py [--features FILE] [--lecture-epochs 10] [--epochs 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from featmlp.model import Scaler
from featmlp.training import PRESETS, train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import lecture_features  # noqa: E402

DEFAULT_FEATURES = Path(__file__).resolve().parent.parent / "runs" / "cifar-features.npz"


def load_data(path: Path | None):
    return lecture_features(path)


def lecture_loop(X: np.ndarray, y: np.ndarray, n_classes: int, hidden: int, lr: float, epochs: int,
                 seed: int):
    """The notebook's training loop (on already scaled features); returns seconds and losses."""
    torch.manual_seed(seed)  # same seed, same layer order: the preset's initial weights
    model = nn.Sequential(nn.Linear(X.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, n_classes),
                          nn.Softmax(dim=1))
    criterion = nn.MSELoss()
    targets = torch.eye(n_classes)[torch.from_numpy(y)]
    loader = DataLoader(TensorDataset(torch.from_numpy(X), targets), batch_size=64, shuffle=True)
    seconds, losses = [], []
    for _ in range(epochs):
        start = time.perf_counter()
        total = 0
        for xb, yb in loader:
            total = total + criterion(model(xb), yb)
        model.zero_grad()
        total.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * p.grad
        seconds.append(time.perf_counter() - start)
        losses.append(total.item() / len(loader))  # mean of the batch means: the mean loss
    return seconds, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, default=DEFAULT_FEATURES)
    parser.add_argument("--lecture-epochs", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()

    X_train, y_train, X_test, y_test, what = load_data(args.features)
    n, n_classes = len(y_train), int(max(y_train.max(), y_test.max())) + 1
    print(f"data: {what}: {n} train x {X_train.shape[1]}, {len(y_test)} test, {n_classes} classes")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")

    # (a) the lecture ----------------------------------------------------------------------
    preset = dataclasses.replace(PRESETS["lecture"], epochs=args.lecture_epochs)
    loop_lr = preset.lr / math.ceil(n / 64)
    scaled = Scaler.fit(X_train, preset.scaler).transform(X_train)
    loop_s, loop_losses = lecture_loop(scaled, y_train, n_classes, preset.hidden[0], loop_lr,
                                       preset.epochs, preset.seed)
    ours = train(X_train, y_train, preset, n_classes=n_classes)
    ours_s = [r["seconds"] for r in ours.history]
    ours_losses = [r["train_loss"] for r in ours.history]
    print(f"\n(a) lecture: {X_train.shape[1]} -> {preset.hidden[0]} -> {n_classes}, softmax + MSE, "
          f"full-batch GD, {preset.epochs} epochs (loop at lr {preset.lr:g}/{math.ceil(n / 64)} "
          f"on its summed loss = preset at lr {preset.lr:g} on the mean loss)")
    print(f"    {'epoch':>5}  {'lecture loop loss':>18}  {'featmlp loss':>14}  {'loop s':>8}  {'featmlp s':>9}")
    for i in range(preset.epochs):
        print(f"    {i + 1:>5}  {loop_losses[i]:>18.8f}  {ours_losses[i]:>14.8f}  {loop_s[i]:>8.4f}  "
              f"{ours_s[i]:>9.5f}")
    a_loop, a_ours = statistics.median(loop_s), statistics.median(ours_s)
    worst = max(abs(a - b) / abs(a) for a, b in zip(loop_losses, ours_losses))
    print(f"    median s/epoch: lecture loop {a_loop:.4f}, featmlp {a_ours:.5f}: "
          f"{a_loop / a_ours:.0f}x faster; mean s/epoch {statistics.mean(loop_s):.4f} vs "
          f"{statistics.mean(ours_s):.5f}: {statistics.mean(loop_s) / statistics.mean(ours_s):.0f}x")
    print(f"    final loss: lecture loop {loop_losses[-1]:.8f}, featmlp {ours_losses[-1]:.8f}; "
          f"largest relative difference over epochs {worst:.1e} (the loop's shuffled last batch "
          f"of {n % 64 or 64} weighs its samples {64 // (n % 64 or 64)}x)")

    # With every batch full the loop's gradient is exactly ceil(N/64) x the preset's: same losses
    # up to float rounding, whatever the shuffle.
    m = n - n % 64
    exact = dataclasses.replace(preset, epochs=5)
    scaled_m = Scaler.fit(X_train[:m], exact.scaler).transform(X_train[:m])
    _, loop_m = lecture_loop(scaled_m, y_train[:m], n_classes, exact.hidden[0], exact.lr / (m // 64),
                             exact.epochs, exact.seed)
    ours_m = [r["train_loss"] for r in train(X_train[:m], y_train[:m], exact, n_classes=n_classes).history]
    worst_m = max(abs(a - b) / abs(a) for a, b in zip(loop_m, ours_m))
    print(f"    on the first {m} samples ({m // 64} full batches), {exact.epochs} epochs: final loss "
          f"lecture loop {loop_m[-1]:.8f}, featmlp {ours_m[-1]:.8f}; largest relative difference "
          f"{worst_m:.1e}")

    # (b) scikit-learn's MLPClassifier -------------------------------------------------------
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    epochs = args.epochs
    sk_scaler = StandardScaler().fit(X_train)
    sk = MLPClassifier(hidden_layer_sizes=(64,), batch_size=256, solver="adam", max_iter=epochs,
                       tol=0.0, n_iter_no_change=epochs + 1, random_state=0)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(sk_scaler.transform(X_train), y_train)
    sk_s = (time.perf_counter() - start) / sk.n_iter_
    sk_acc = sk.score(sk_scaler.transform(X_test), y_test)

    config = dataclasses.replace(PRESETS["default"], hidden=(64,), batch_size=256, optimizer="adam",
                                 epochs=epochs, val_fraction=0.0, patience=0)
    start = time.perf_counter()
    result = train(X_train, y_train, config, n_classes=n_classes)
    ours_b = (time.perf_counter() - start) / len(result.history)
    ours_acc = float((result.predict(X_test) == y_test).mean())
    print(f"\n(b) minibatch: {X_train.shape[1]} -> 64 -> {n_classes}, batch 256, Adam, {epochs} epochs "
          f"(featmlp: lr {config.lr:g}, schedule {config.schedule}; scikit-learn: its defaults)")
    print(f"    scikit-learn MLPClassifier: {sk_s:.4f} s/epoch, test accuracy {sk_acc:.4f}")
    print(f"    featmlp                   : {ours_b:.4f} s/epoch, test accuracy {ours_acc:.4f}")
    print(f"    featmlp is {sk_s / ours_b:.1f}x faster per epoch (whole fit / epochs, both)")

    # (c) the default preset -----------------------------------------------------------------
    default = PRESETS["default"]
    start = time.perf_counter()
    result = train(X_train, y_train, default, n_classes=n_classes)
    total = time.perf_counter() - start
    acc = float((result.predict(X_test) == y_test).mean())
    print(f"\n(c) default preset: hidden {default.hidden}, {default.optimizer} lr {default.lr:g} "
          f"{default.schedule}, batch {default.batch_size}, {len(result.history)} epochs: "
          f"{total:.1f} s ({total / len(result.history):.3f} s/epoch), test accuracy {acc:.4f}")


if __name__ == "__main__":
    main()

"""The data every benchmark uses: the lecture's features of all of CIFAR-10.

``lecture_features()`` reads ``runs/cifar-features.npz``; when it is missing and the shared
JPEG archive is there, it extracts it once (about 10 s) and keeps it, so every benchmark runs
on the real 50,000 x 9 features by default. Without either, benchmarks fall back to random
features of the same shape and say so.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "runs" / "cifar-features.npz"
ARCHIVE = ROOT / ".." / "shared" / "data" / "cifar10-jpg.tar.gz"


def lecture_features(path: Path | None = None):
    """(X_train, y_train, X_test, y_test, description)."""
    path = Path(path) if path is not None else CACHE
    if not path.exists() and path == CACHE and ARCHIVE.exists():
        from featmlp.data import load_dataset
        from featmlp.tables.extract import extract_dataset

        print(f"extracting the lecture features of {ARCHIVE.resolve()} into {CACHE} (once)", file=sys.stderr)
        extract_dataset(load_dataset(ARCHIVE), "lecture", CACHE)
    if path.exists():
        from featmlp.tables.store import load_features

        t = load_features(path)
        return t.X_train, t.y_train, t.X_test, t.y_test, f"CIFAR-10 lecture features ({path.name})"
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60_000, 9))
    W = rng.normal(size=(9, 10))
    y = np.argmax(X @ W + 2.0 * rng.normal(size=(60_000, 10)), axis=1)
    return X[:50_000], y[:50_000], X[50_000:], y[50_000:], "synthetic gaussian features (no CIFAR-10 at hand)"

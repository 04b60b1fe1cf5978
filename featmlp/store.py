"""Feature tables on disk: written atomically, with provenance, resumable.

A feature file is a plain ``.npz`` that ``np.load(path, allow_pickle=False)``
reads: ``X_train``, ``y_train``, ``X_test``, ``y_test``, ``feature_names``,
``class_names`` and ``meta`` (a JSON string: feature set, data source, dataset
fingerprint, featmlp version). Extraction works in chunks: each finished chunk
is saved in ``<output>.partial/``, so an interrupted run picks up where it
stopped, and memory stays bounded by the chunk size.
"""

from __future__ import annotations

import json
import os
import shutil
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from ._io import atomic_write
from .errors import DataError
from .features import extract_features, get_feature_set

REQUIRED_KEYS = ("X_train", "y_train", "X_test", "y_test", "feature_names", "class_names")


@dataclass(frozen=True)
class FeatureTable:
    """Train and test feature matrices with their labels and names."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]
    meta: dict = field(default_factory=dict)

    @property
    def feature_set(self) -> str | None:
        """Name of the feature set that made this table, when known."""
        return self.meta.get("features")


def save_features(path: str | os.PathLike, table: FeatureTable) -> Path:
    """Write a feature table as ``.npz`` atomically (temporary file, then rename).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> t = FeatureTable(np.zeros((2, 1)), np.array([0, 1]), np.zeros((1, 1)), np.array([1]),
    ...                  ("f",), ("a", "b"))
    >>> p = save_features(pathlib.Path(tempfile.mkdtemp()) / "f.npz", t)
    >>> load_features(p).class_names
    ('a', 'b')
    """
    path = Path(path)
    with atomic_write(path, "wb") as f:
        np.savez(
            f,
            X_train=np.asarray(table.X_train, dtype=np.float64),
            y_train=np.asarray(table.y_train, dtype=np.int64),
            X_test=np.asarray(table.X_test, dtype=np.float64),
            y_test=np.asarray(table.y_test, dtype=np.int64),
            feature_names=np.array(table.feature_names, dtype=str),
            class_names=np.array(table.class_names, dtype=str),
            meta=np.array(json.dumps(table.meta, sort_keys=True)),
        )
    return path


def load_features(path: str | os.PathLike) -> FeatureTable:
    """Read a feature file written by :func:`save_features` (or by hand, same keys).

    Never unpickles: object arrays are refused. Errors name the file and what is
    wrong with it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"feature file {path} does not exist; create one with `featmlp extract -o {path}`")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in REQUIRED_KEYS if k not in z.files]
            if missing:
                raise DataError(f"{path} is not a featmlp feature file: missing {', '.join(missing)} "
                                f"(expected {', '.join(REQUIRED_KEYS)})")
            arrays = {k: z[k] for k in REQUIRED_KEYS}
            meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read {path} as a feature file (.npz): {e}") from None
    X_train, X_test = arrays["X_train"], arrays["X_test"]
    names = tuple(str(s) for s in arrays["feature_names"])
    classes = tuple(str(s) for s in arrays["class_names"])
    for split in ("train", "test"):
        X, y = arrays[f"X_{split}"], arrays[f"y_{split}"]
        if X.ndim != 2 or X.shape[1] != len(names) or y.shape != (X.shape[0],):
            raise DataError(f"{path}: X_{split} {X.shape} / y_{split} {y.shape} do not fit "
                            f"{len(names)} feature names")
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            raise DataError(f"{path}: y_{split} has labels outside 0..{len(classes) - 1}")
    return FeatureTable(X_train.astype(np.float64), arrays["y_train"].astype(np.int64),
                        X_test.astype(np.float64), arrays["y_test"].astype(np.int64),
                        names, classes, meta)


def _extract_chunk(images: np.ndarray, features: str) -> np.ndarray:
    # Serial kernel in each worker: the processes are the parallelism (and see the fork note).
    return extract_features(images, features, parallel=False)


def extract_dataset(dataset, features: str = "lecture", output: str | os.PathLike | None = None, *,
                    chunk_size: int = 5000, workers: int = 1, progress=None) -> FeatureTable:
    """Extract a feature set from a :class:`featmlp.data.Dataset`, optionally to a file.

    Parameters
    ----------
    dataset : featmlp.data.Dataset
        Train and test images with labels.
    features : str
        Name of a feature set (``featmlp.FEATURE_SETS``).
    output : path, optional
        Where to write the ``.npz``. Finished chunks are kept in
        ``<output>.partial/`` until the file is complete, so rerunning an
        interrupted extraction skips them; the directory is removed at the end.
    chunk_size : int
        Images per chunk (bounds memory and the work lost to an interruption).
    workers : int
        Processes to use; 1 computes in this process (with all its threads).
    progress : callable, optional
        Progress hook, called as ``progress("extract", done, total)``.

    Returns
    -------
    FeatureTable
    """
    from .data import fingerprint

    fset = get_feature_set(features)
    if chunk_size < 1:
        raise DataError(f"chunk size must be at least 1, got {chunk_size}")
    if workers < 1:
        raise DataError(f"workers must be at least 1, got {workers}")
    height, width = dataset.train_images.shape[1:3]
    meta = {"features": fset.name, "source": dataset.source, "dataset_fingerprint": fingerprint(dataset),
            "image_size": [int(width), int(height)],
            "featmlp_version": __version__}
    splits = {"train": dataset.train_images, "test": dataset.test_images}
    chunks = [(split, start) for split, imgs in splits.items() for start in range(0, len(imgs), chunk_size)]
    total = sum(len(imgs) for imgs in splits.values())

    partial = None
    if output is not None:
        partial = Path(str(output) + ".partial")
        spec = {**meta, "chunk_size": chunk_size}
        spec_file = partial / "spec.json"
        if partial.is_dir() and (not spec_file.is_file() or json.loads(spec_file.read_text()) != spec):
            shutil.rmtree(partial)  # left by a different extraction: not ours to resume
        partial.mkdir(parents=True, exist_ok=True)
        with atomic_write(spec_file, "w") as f:
            json.dump(spec, f)

    results: dict[tuple[str, int], np.ndarray] = {}
    todo = []
    for key in chunks:
        chunk_file = partial / f"{key[0]}-{key[1]:09d}.npy" if partial else None
        if chunk_file is not None and chunk_file.is_file():
            results[key] = np.load(chunk_file, allow_pickle=False)
        else:
            todo.append(key)
    done = sum(len(r) for r in results.values())
    if progress is not None:
        progress("extract", done, total)

    def finish(key, X):
        nonlocal done
        results[key] = X
        if partial is not None:
            with atomic_write(partial / f"{key[0]}-{key[1]:09d}.npy", "wb") as f:
                np.save(f, X)
        done += len(X)
        if progress is not None:
            progress("extract", done, total)

    def images_of(key):
        split, start = key
        return splits[split][start:start + chunk_size]

    if workers == 1 or len(todo) <= 1:
        for key in todo:
            finish(key, extract_features(images_of(key), fset))
    else:
        # spawn, not fork: a process forked from one that ran numba's GNU OpenMP threads is
        # killed by numba. A spawned worker imports only featmlp's extraction path (no torch:
        # the CLI loads its commands lazily), about 0.4 s.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = [(key, pool.submit(_extract_chunk, images_of(key), fset.name)) for key in todo]
            for key, fut in futures:
                finish(key, fut.result())

    # Some sets (hog) have as many columns as the image size gives: name them for this size.
    names = fset.names_for(*dataset.train_images.shape[1:3])

    def stacked(split):
        parts = [results[k] for k in chunks if k[0] == split]
        return np.concatenate(parts) if parts else np.empty((0, len(names)))

    table = FeatureTable(stacked("train"), np.asarray(dataset.train_labels, dtype=np.int64),
                         stacked("test"), np.asarray(dataset.test_labels, dtype=np.int64),
                         names, tuple(dataset.class_names), meta)
    if output is not None:
        save_features(output, table)
        shutil.rmtree(partial, ignore_errors=True)
    return table

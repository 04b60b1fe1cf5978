"""Feature tables on disk: written atomically, with provenance, resumable.

A feature file is a plain ``.npz`` that ``np.load(path, allow_pickle=False)``
reads: ``X_train``, ``y_train``, ``X_test``, ``y_test``, ``feature_names``,
``class_names`` and ``meta`` (a JSON string: feature set, data source, dataset
fingerprint, featmlp version). The features keep their dtype: float64 for the
handcrafted sets, float32 for learned ones (50,000 x 14,400 values are 2.9 GB
so, 5.8 GB in float64). A fitted feature set's state is kept beside, as arrays
``fitted.<set>.<name>`` and its settings in ``meta["fitted"]``.

Extraction works in chunks: each finished chunk is saved in ``<output>.partial/``
(after the fitted state, fitted on the training images only), so an interrupted
run picks up where it stopped, and memory stays bounded by the chunk size.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from ._io import atomic_write, exclusive, read_npz
from .errors import DataError, FeatmlpError
from .shards import FITTED_FILE
from .features import (extract_features, feature_names, fit_features, get_feature_set, mirror_permutation,
                       parse_feature_options, state_from_arrays, state_to_arrays)

REQUIRED_KEYS = ("X_train", "y_train", "X_test", "y_test", "feature_names", "class_names")

# The key of ``meta`` under which a sharded table carries its fingerprint (from its shards'
# checksums: hashing 74 GB again to open a table would take minutes).
SHARDED_FINGERPRINT = "sharded_fingerprint"


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
    fitted: dict = field(default_factory=dict)

    @property
    def feature_set(self) -> str | None:
        """Name of the feature set that made this table, when known."""
        return self.meta.get("features")

    def mirror(self) -> np.ndarray | None:
        """Column permutation giving the features of mirrored images (None: the set has none)."""
        if not self.feature_set:
            return None
        try:
            width, height = self.meta.get("image_size") or (32, 32)
            perm = mirror_permutation(self.feature_set, self.fitted, image_shape=(height, width))
        except FeatmlpError:
            return None
        return perm if perm is not None and len(perm) == len(self.feature_names) else None


def mirror_agreement(table: FeatureTable, *, max_rows: int = 5000, seed: int = 0) -> tuple[float, float] | None:
    """How well mirror images keep their class: nearest-class-mean accuracy on training rows, and on their mirrors.

    Returns ``(accuracy of the rows, accuracy of their mirror images)`` for up to ``max_rows``
    seeded training rows, standardised, against the class means of the rows themselves; None
    when the feature set has no mirror permutation. Photographs score about the same both
    ways (CIFAR-10's kmeans features: 0.467 and 0.457); characters do not (8x8 digits: 0.917
    and 0.348), and flip augmentation would teach them wrong labels.
    """
    perm = table.mirror()
    n = len(table.y_train)
    if perm is None or n == 0:
        return None
    idx = np.sort(np.random.default_rng(seed).choice(n, min(n, max_rows), replace=False))
    X = np.asarray(table.X_train[idx], np.float32)
    y = table.y_train[idx]
    sd = X.std(axis=0)
    Z = (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1)
    classes = np.unique(y)
    means = np.stack([Z[y == c].mean(axis=0) for c in classes])

    def accuracy(A):
        nearest = (np.square(means).sum(1) - 2 * A @ means.T).argmin(axis=1)
        return float(np.mean(classes[nearest] == y))

    return accuracy(Z), accuracy(Z[:, perm])


def table_fingerprint(table: FeatureTable) -> str:
    """SHA-256 of a table's data: both splits' features and labels, feature and class names.

    The same for a table and its saved and loaded copy (the arrays are hashed as a feature
    file holds them: float features in their dtype, int64 labels); ``meta`` and the fitted
    state are not part of it. A run records it, so evaluation notices other data.

    Examples
    --------
    >>> t = FeatureTable(np.zeros((2, 1)), np.array([0, 1]), np.zeros((1, 1)), np.array([1]), ("f",), ("a", "b"))
    >>> table_fingerprint(t) == table_fingerprint(FeatureTable(*[getattr(t, k) for k in REQUIRED_KEYS]))
    True
    """
    import hashlib

    if table.meta.get(SHARDED_FINGERPRINT):
        return table.meta[SHARDED_FINGERPRINT]
    h = hashlib.sha256()
    for name in ("X_train", "y_train", "X_test", "y_test"):
        a = getattr(table, name)
        a = _float_array(a) if name.startswith("X") else np.asarray(a, dtype=np.int64)
        h.update(f"{name} {a.dtype.str} {a.shape}\n".encode())
        for i in range(0, len(a), 4096):  # a block at a time: no copy of a memory-mapped table
            h.update(np.ascontiguousarray(a[i:i + 4096]).data)
    h.update(json.dumps([list(map(str, table.feature_names)), list(map(str, table.class_names))]).encode())
    return h.hexdigest()


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
    meta = {k: v for k, v in table.meta.items() if k != SHARDED_FINGERPRINT}
    meta, fitted_arrays = _with_state(meta, table.fitted)
    with atomic_write(path, "wb") as f:
        np.savez(
            f,
            X_train=_float_array(table.X_train),
            y_train=np.asarray(table.y_train, dtype=np.int64),
            X_test=_float_array(table.X_test),
            y_test=np.asarray(table.y_test, dtype=np.int64),
            feature_names=np.array(table.feature_names, dtype=str),
            class_names=np.array(table.class_names, dtype=str),
            meta=np.array(json.dumps(meta, sort_keys=True)),
            **fitted_arrays,
        )
    return path


_FITTED = "fitted."


def _with_state(meta: dict, state: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """``meta`` with the state's settings under ``"fitted"``, and its arrays as ``fitted.<set>.<name>``."""
    if not state:
        return dict(meta), {}
    settings, arrays = state_to_arrays(state)
    return {**meta, "fitted": settings}, {_FITTED + k: v for k, v in arrays.items()}


def _state_in(z, meta: dict, path) -> dict:
    """The fitted state an open npz holds (see :func:`_with_state`); pops ``meta["fitted"]``."""
    settings = meta.pop("fitted", None)
    if not settings:
        return {}
    try:
        return state_from_arrays(settings, {k[len(_FITTED):]: z[k] for k in z if k.startswith(_FITTED)})
    except DataError as e:
        raise DataError(f"{path}: {e}") from None


def _float_array(X) -> np.ndarray:
    X = np.asarray(X)
    return X if X.dtype in (np.float32, np.float64) else X.astype(np.float64)


def load_features(path: str | os.PathLike) -> FeatureTable:
    """Read a feature file written by :func:`save_features` (or by hand, same keys), or a sharded table.

    A directory is a sharded table (:mod:`featmlp.shards`, written by ``featmlp extract -o
    DIR.features/`` or :func:`save_sharded`): its ``X_train`` and ``X_test`` are
    :class:`~featmlp.shards.ShardedArray` objects read a shard at a time, so a table larger
    than memory opens at once; ``np.asarray`` reads one whole. Never unpickles: object arrays
    are refused. Errors name the file and what is wrong with it.
    """
    path = Path(path)
    if path.is_dir():
        return _load_sharded(path)
    if not path.is_file():
        raise DataError(f"feature file {path} does not exist; create one with `featmlp extract -o {path}`")
    z = read_npz(path)
    missing = [k for k in REQUIRED_KEYS if k not in z]
    if missing:
        raise DataError(f"{path} is not a featmlp feature file: missing {', '.join(missing)} "
                        f"(expected {', '.join(REQUIRED_KEYS)})")
    arrays = {k: z[k] for k in REQUIRED_KEYS}
    meta = _meta_of(z, path)
    fitted = _state_in(z, meta, path)
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
    return FeatureTable(_float_array(X_train), arrays["y_train"].astype(np.int64),
                        _float_array(X_test), arrays["y_test"].astype(np.int64),
                        names, classes, meta, fitted)


def _load_sharded(path: Path) -> FeatureTable:
    from .shards import open_sharded

    manifest, arrays, labels = open_sharded(path)
    classes = tuple(manifest["class_names"])
    for split in ("train", "test"):
        y = labels[split]
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            raise DataError(f"{path}: y_{split} has labels outside 0..{len(classes) - 1}")
    meta = dict(manifest.get("meta") or {})
    fitted = {}
    if manifest.get("fitted_file"):
        fitted_meta, fitted = _read_fitted(path / FITTED_FILE)
    meta[SHARDED_FINGERPRINT] = manifest["fingerprint"]
    return FeatureTable(arrays["train"], labels["train"], arrays["test"], labels["test"],
                        tuple(manifest["feature_names"]), classes, meta, fitted)


def save_sharded(path: str | os.PathLike, table: FeatureTable, *, shard_rows: int = 5000) -> Path:
    """Write a feature table as a sharded directory (float32 shards of ``shard_rows`` rows).

    Built beside (``.NAME.partial``) and renamed in, so an existing table is replaced only
    when the new one is complete. ``load_features`` opens it without reading the shards.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> t = FeatureTable(np.ones((3, 2)), np.array([0, 1, 0]), np.zeros((1, 2)), np.array([1]), ("f", "g"), ("a", "b"))
    >>> p = save_sharded(pathlib.Path(tempfile.mkdtemp()) / "t.features", t, shard_rows=2)
    >>> back = load_features(p)
    >>> back.X_train.n_shards, np.asarray(back.X_train).tolist()
    (2, [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    """
    from ._io import replace_dir
    from .shards import write_manifest, write_shard

    if shard_rows < 1:
        raise DataError(f"shard_rows must be at least 1, got {shard_rows}")
    path = Path(path)
    work = path.with_name(f".{path.name}.partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    records = {}
    for split in ("train", "test"):
        X, y = getattr(table, f"X_{split}"), np.asarray(getattr(table, f"y_{split}"))
        records[split] = [write_shard(work, split, i, X[start:start + shard_rows], y[start:start + shard_rows])
                          for i, start in enumerate(range(0, len(y), shard_rows))]
    meta = {k: v for k, v in table.meta.items() if k != SHARDED_FINGERPRINT}
    if table.fitted:
        write_fitted(work / FITTED_FILE, table.fitted)
    write_manifest(work, records, table.feature_names, table.class_names, meta, bool(table.fitted))
    replace_dir(work, path)
    return path


def _extract_chunk(images: np.ndarray, features: str, state: dict) -> np.ndarray:
    # Serial kernel in each worker: the processes are the parallelism (and see the fork note).
    return extract_features(images, features, state=state, parallel=False)


def extract_dataset(dataset, features: str = "lecture", output: str | os.PathLike | None = None, *,
                    options: dict | None = None, fitted: dict | None = None,
                    chunk_size: int | None = None, workers: int = 1, progress=None) -> FeatureTable:
    """Extract a feature set from a :class:`featmlp.data.Dataset`, optionally to a file.

    Parameters
    ----------
    dataset : featmlp.data.Dataset
        Train and test images with labels.
    features : str
        Name of a feature set (``featmlp.FEATURE_SETS``), or several joined by ``+``.
    output : path, optional
        Where to write the ``.npz``. Finished chunks are kept in
        ``<output>.partial/`` until the file is complete, so rerunning an
        interrupted extraction skips them; the directory is removed at the end.
    options : dict, optional
        Settings of the fitted sets (``{"k": 4000}``; see
        :func:`featmlp.features.parse_feature_options`).
    fitted : dict, optional
        An existing fitted state to apply instead of fitting (e.g. from
        :func:`load_fitted`); the sets it lacks are fitted here.
    chunk_size : int, optional
        Images per chunk (bounds memory and the work lost to an interruption); default
        :func:`default_chunk_size`: 5,000, fewer for images larger than 128x128.
    workers : int
        Processes to use; 1 computes in this process (with all its threads).
    progress : callable, optional
        Progress hook, called as ``progress("extract", done, total)`` (and
        ``progress("kmeans", iteration, n_iter)`` while a dictionary is fitted).

    Returns
    -------
    FeatureTable

    Raises
    ------
    DataError
        When another extraction is writing the same ``output`` (an exclusive lock on
        ``<output>.lock``, released by the kernel however that process ends).
    """
    fset, options, fitted, chunk_size = check_extraction(dataset, features, options, fitted, chunk_size, workers)
    with extraction_lock(output) if output is not None else contextlib.nullcontext():
        return _extract_dataset(dataset, fset, output, options, fitted, chunk_size, workers, progress)


def check_extraction(dataset, features, options, fitted, chunk_size, workers):
    """``(feature set, options, fitted state, chunk size)`` of an extraction, checked (DataError)."""
    fset = get_feature_set(features)
    if chunk_size is None:
        chunk_size = default_chunk_size(dataset.train_images.shape[1:3])
    if chunk_size < 1:
        raise DataError(f"chunk size must be at least 1, got {chunk_size}")
    if workers < 1:
        raise DataError(f"workers must be at least 1, got {workers}")
    options = parse_feature_options(fset, options or {})
    fitted = {k: v for k, v in (fitted or {}).items() if k in fset.needs_fit}
    if options and fitted and set(fset.needs_fit) <= set(fitted):
        raise DataError(f"feature options {', '.join(options)} were given with an already fitted state: "
                        f"drop them, or fit anew without --fitted-from")
    return fset, options, fitted, chunk_size


def extraction_lock(output):
    """The lock that keeps one extraction per output (``<output>.lock``; see :func:`featmlp._io.exclusive`)."""
    busy = f"another featmlp extract is writing {output} (pid {{pid}}): wait for it, or write to another file"
    return exclusive(Path(str(output).rstrip("/") + ".lock"), busy)


def extraction_meta(dataset, fset, options) -> dict:
    """The provenance a feature table records: feature set, source, dataset fingerprint, image size, version."""
    from .data import fingerprint

    height, width = dataset.train_images.shape[1:3]
    meta = {"features": fset.name, "source": dataset.source, "dataset_fingerprint": fingerprint(dataset),
            "image_size": [int(width), int(height)],
            "featmlp_version": __version__}
    if fset.needs_fit:
        meta["feature_options"] = options
    return meta


# Decoded pixels per chunk by default: CIFAR-10's 32x32 images come 5,000 to a chunk (15 MB),
# 256x256 photos 1,365 (256 MB) rather than 5,000 (983 MB).
_CHUNK_BYTES = 256 << 20
_MAX_CHUNK = 5000


def default_chunk_size(image_shape) -> int:
    """Images per extraction chunk for images of ``(height, width)``: at most 5,000 and 256 MB of pixels.

    Examples
    --------
    >>> default_chunk_size((32, 32)), default_chunk_size((256, 256))
    (5000, 1365)
    """
    height, width = image_shape
    return int(max(1, min(_MAX_CHUNK, _CHUNK_BYTES // (int(height) * int(width) * 3))))


def _extract_dataset(dataset, fset, output, options, fitted, chunk_size, workers, progress) -> FeatureTable:
    height, width = dataset.train_images.shape[1:3]
    meta = extraction_meta(dataset, fset, options)
    splits = {"train": dataset.train_images, "test": dataset.test_images}
    chunks = [(split, start) for split, imgs in splits.items() for start in range(0, len(imgs), chunk_size)]
    total = sum(len(imgs) for imgs in splits.values())

    partial = None
    if output is not None:
        partial = Path(str(output) + ".partial")
        spec = {**meta, "chunk_size": chunk_size,
                "given_state": state_to_arrays(fitted)[0] if fitted else None}
        spec_file = partial / "spec.json"
        if partial.is_dir() and _read_spec(spec_file) != spec:
            shutil.rmtree(partial)  # left by a different extraction (or damaged): not ours to resume
        partial.mkdir(parents=True, exist_ok=True)
        with atomic_write(spec_file, "w") as f:
            json.dump(spec, f)

    state = fitted_state(fset, dataset.train_images, options, fitted, partial, progress)
    # Some sets (hog) have as many columns as the image size gives: name them for this size.
    names = feature_names(fset, image_shape=(height, width), state=state)

    results: dict[tuple[str, int], np.ndarray] = {}
    todo = []
    for key in chunks:
        chunk_file = partial / f"{key[0]}-{key[1]:09d}.npy" if partial else None
        rows = min(chunk_size, len(splits[key[0]]) - key[1])
        X = _saved_chunk(chunk_file, (rows, len(names)), fset.dtype) if chunk_file is not None else None
        if X is not None:
            results[key] = X
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
            finish(key, extract_features(images_of(key), fset, state=state))
    else:
        # spawn, not fork: a process forked from one that ran numba's GNU OpenMP threads is
        # killed by numba. A spawned worker imports only featmlp's extraction path (no torch:
        # the CLI loads its commands lazily), about 0.4 s.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            # Chunks are decoded here as they are submitted: keep only one more in flight
            # than there are workers, so memory stays bounded by the chunk.
            pending = collections.deque()
            for key in todo:
                pending.append((key, pool.submit(_extract_chunk, images_of(key), fset.name, state)))
                if len(pending) > workers:
                    key, fut = pending.popleft()
                    finish(key, fut.result())
            while pending:
                key, fut = pending.popleft()
                finish(key, fut.result())

    def stacked(split):
        keys = [k for k in chunks if k[0] == split]
        out = np.empty((sum(len(results[k]) for k in keys), len(names)), fset.dtype)
        row = 0
        for k in keys:  # one copy at a time, each chunk released once copied
            part = results.pop(k)
            out[row:row + len(part)] = part
            row += len(part)
        return out

    table = FeatureTable(stacked("train"), np.asarray(dataset.train_labels, dtype=np.int64),
                         stacked("test"), np.asarray(dataset.test_labels, dtype=np.int64),
                         names, tuple(dataset.class_names), meta, state)
    if output is not None:
        save_features(output, table)
        shutil.rmtree(partial, ignore_errors=True)
    return table


def _read_spec(spec_file: Path):
    try:
        return json.loads(spec_file.read_text())
    except (OSError, ValueError):
        return None


def _saved_chunk(chunk_file: Path, shape: tuple[int, int], dtype) -> np.ndarray | None:
    """A finished chunk of an interrupted run, or None when it is missing or damaged (redone then)."""
    if not chunk_file.is_file():
        return None
    try:
        X = np.load(chunk_file, allow_pickle=False)
    except (OSError, ValueError, EOFError):  # truncated, not .npy, an object array ...
        return None
    if not isinstance(X, np.ndarray) or X.shape != shape or X.dtype != np.dtype(dtype):
        return None
    return X




def fitted_state(fset, train_images, options, fitted, partial, progress) -> dict:
    """The fitted state: given, saved in ``partial/fitted.npz`` by an interrupted run of this
    extraction, or fitted now on ``train_images`` (and saved there when ``partial`` is a directory)."""
    if not fset.needs_fit or set(fset.needs_fit) <= set(fitted):
        return fitted
    state_file = partial / FITTED_FILE if partial is not None else None
    if state_file is not None and state_file.is_file():
        try:
            return _read_fitted(state_file)[1]
        except DataError:
            pass  # damaged: fit again
    state = fit_features(fset, train_images, options, state=fitted, progress=progress)
    if state_file is not None:
        write_fitted(state_file, state)
    return state


def write_fitted(path: Path, state: dict) -> None:
    """A fitted state alone, as a feature file keeps it (``meta`` + ``fitted.<set>.<name>`` arrays)."""
    meta, arrays = _with_state({}, state)
    with atomic_write(path, "wb") as f:
        np.savez(f, meta=np.array(json.dumps(meta)), **arrays)


def load_fitted(path: str | os.PathLike) -> tuple[str, dict]:
    """The feature set and fitted state of a feature file or a run directory (``--fitted-from``).

    Returns ``(feature set name, state)``; a :class:`DataError` when the path holds none.
    """
    path = Path(path)
    if path.is_dir():
        from .runs.bundle import read_feature_state

        feature_set, state = read_feature_state(path)
        if not state:
            raise DataError(f"the model in {path} was trained on {feature_set} features, which have no fitted "
                            f"state: use a run of a fitted set such as kmeans")
        return feature_set, state
    table_meta, state = _read_fitted(path)
    if not state:
        raise DataError(f"{path} holds no fitted feature state (its features are "
                        f"{table_meta.get('features', 'unknown')}): use a run or feature file of a fitted set such as kmeans")
    return table_meta.get("features", "+".join(state)), state


def _read_fitted(path: Path) -> tuple[dict, dict]:
    """``(meta, fitted state)`` of a feature file, without reading its feature matrices."""
    if not path.is_file():
        raise DataError(f"{path} is neither a run directory nor a feature file")
    z = read_npz(path, lambda k: k == "meta" or k.startswith(_FITTED))  # not the feature matrices
    meta = _meta_of(z, path)
    return meta, _state_in(z, meta, path)


def _meta_of(arrays: dict, path) -> dict:
    """The JSON ``meta`` entry of a feature file's arrays ({} when absent)."""
    if "meta" not in arrays:
        return {}
    try:
        meta = json.loads(str(arrays["meta"]))
    except (json.JSONDecodeError, UnicodeError) as e:
        raise DataError(f"{path}: its meta entry is not JSON ({e}): write the file again") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: its meta entry is not a JSON object: write the file again")
    return meta

"""Feature tables on disk: written atomically, with provenance, resumable.

A feature file is a plain ``.npz`` that ``np.load(path, allow_pickle=False)``
reads: ``X_train``, ``y_train``, ``X_test``, ``y_test``, ``feature_names``,
``class_names`` and ``meta`` (a JSON string: feature set, data source, dataset
fingerprint, featmlp version), and optionally ``names_train``/``names_test``: the source
name of each row's image (file or archive member name; CIFAR-10's ``filenames``). The
features keep their dtype: float64 for the handcrafted sets, float32 for learned ones (50,000 x 14,400 values are 2.9 GB
so, 5.8 GB in float64). A fitted feature set's state is kept beside, as arrays
``fitted.<set>.<name>`` and its settings in ``meta["fitted"]``.

A directory is a sharded table (:mod:`featmlp.tables.sharded`): float32 shards read a
shard at a time. Extraction, which writes both, is :mod:`featmlp.tables.extract`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from featmlp._io import atomic_write, read_npz, sibling
from featmlp._outputs import WORK_MARK, check_output, mark_work_dir, remove_work_dir, replace_dir
from featmlp.data import not_regular
from featmlp.errors import ConfigError, DataError, FeatmlpError
from featmlp.features import get_feature_set, mirror_permutation, state_from_arrays, state_to_arrays
from featmlp.tables.format import FITTED_FILE, REQUIRED_KEYS
from featmlp.tables.sharded import open_sharded, verify_file, verifying, write_manifest, write_shard

# The key of ``meta`` under which a sharded table carries its fingerprint (from its shards'
# checksums: hashing 74 GB again to open a table would take minutes).
SHARDED_FINGERPRINT = "sharded_fingerprint"


@dataclass(frozen=True)
class FeatureTable:
    """Train and test feature matrices with their labels and names.

    ``names_train``/``names_test``: the source name of each row's image (a sequence of str, a
    :class:`~featmlp.tables.sharded.ShardNames` for a sharded table), or None when the table
    does not record them (written before featmlp kept them, or from arrays without names).

    ``X_test_mirror``: the features of each test image's mirror image, row for row, where the
    extraction was asked for them (test-time flips of a set whose mirrored images' features are
    no permutation of its columns: the pretrained sets; ``extract_dataset(mirror_test=True)``),
    else None.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]
    meta: dict = field(default_factory=dict)
    fitted: dict = field(default_factory=dict)
    names_train: Sequence[str] | None = None
    names_test: Sequence[str] | None = None
    X_test_mirror: np.ndarray | None = None

    def row_names(self, split: str, start: int = 0, stop: int | None = None) -> list[str]:
        """The source names of rows ``start:stop`` of ``split``; ``#<row>`` where none is recorded.

        Examples
        --------
        >>> t = FeatureTable(np.zeros((2, 1)), np.array([0, 1]), np.zeros((1, 1)), np.array([1]), ("f",), ("a", "b"))
        >>> t.row_names("train")
        ['#0', '#1']
        """
        n = len(getattr(self, f"y_{split}"))
        stop = n if stop is None else min(stop, n)
        names = getattr(self, f"names_{split}")
        if names is None:
            return [f"#{i}" for i in range(start, stop)]
        return [f"#{i}" if v is None else str(v) for i, v in zip(range(start, stop), names[start:stop])]

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


def table_fingerprint(table: FeatureTable) -> str:
    """SHA-256 of a table's data: both splits' features and labels (and the test images' mirror features
    where it has them), feature and class names.

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
    # the test images' mirror features where the table has them (a table without: as before they were kept)
    for name in ("X_train", "y_train", "X_test", "y_test", *([MIRROR_KEY] * (table.X_test_mirror is not None))):
        a = getattr(table, name)
        a = _float_array(a) if name.startswith("X") else np.asarray(a, dtype=np.int64)
        h.update(f"{name} {a.dtype.str} {a.shape}\n".encode())
        for i in range(0, len(a), 4096):  # a block at a time: no copy of a memory-mapped table
            h.update(np.ascontiguousarray(a[i:i + 4096]).data)
    h.update(json.dumps([list(map(str, table.feature_names)), list(map(str, table.class_names))]).encode())
    return h.hexdigest()


def save_features(path: str | os.PathLike, table: FeatureTable, *, overwrite: bool = False) -> Path:
    """Write a feature table as ``.npz`` atomically (temporary file, then rename).

    An existing ``path`` is replaced only with ``overwrite`` and only when it is a feature
    file featmlp wrote; anything else there is refused (:func:`featmlp._outputs.check_output`).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> t = FeatureTable(np.zeros((2, 1)), np.array([0, 1]), np.zeros((1, 1)), np.array([1]),
    ...                  ("f",), ("a", "b"))
    >>> p = save_features(pathlib.Path(tempfile.mkdtemp()) / "f.npz", t)
    >>> load_features(p).class_names
    ('a', 'b')
    """
    check_output(path, "features", force=overwrite, option="path")
    path = Path(path)
    meta = {k: v for k, v in table.meta.items() if k != SHARDED_FINGERPRINT}
    meta, fitted_arrays = _with_state(meta, table.fitted)
    with atomic_write(path, "wb") as f:
        np.savez(
            f,
            X_train=_float_array(table.X_train),
            y_train=label_indices(table.y_train, "y_train"),
            X_test=_float_array(table.X_test),
            y_test=label_indices(table.y_test, "y_test"),
            feature_names=np.array(table.feature_names, dtype=str),
            class_names=np.array(table.class_names, dtype=str),
            meta=np.array(json.dumps(meta, sort_keys=True)),
            **fitted_arrays,
            **_names_arrays(table),
            **({} if table.X_test_mirror is None else {MIRROR_KEY: _float_array(table.X_test_mirror)}),
        )
    return path


_FITTED = "fitted."
# The optional arrays of a feature file: the source name of each row (tables written before
# featmlp kept them have none; they are not part of the table's fingerprint).
NAMES_KEYS = {"train": "names_train", "test": "names_test"}


# The optional features of the test images' mirror images (FeatureTable.X_test_mirror).
MIRROR_KEY = "X_test_mirror"


def _mirror_in(z, arrays: dict, path) -> np.ndarray | None:
    """The ``X_test_mirror`` an open npz holds (None where absent), checked against ``X_test``."""
    if MIRROR_KEY not in z:
        return None
    X = real_features(z[MIRROR_KEY], f"{path}: {MIRROR_KEY}")
    if X.shape != arrays["X_test"].shape:
        raise DataError(f"{path}: {MIRROR_KEY} {X.shape} does not fit X_test {arrays['X_test'].shape}: "
                        f"write the file again")
    return X


def _names_arrays(table: FeatureTable) -> dict[str, np.ndarray]:
    out = {}
    for split, key in NAMES_KEYS.items():
        names = getattr(table, key)
        if names is not None:
            out[key] = np.array(table.row_names(split), dtype=str).reshape(-1)
    return out


def _names_in(z, arrays: dict, path) -> dict:
    """``{names_train: ..., names_test: ...}`` an open npz holds (None where absent), checked."""
    out = {}
    for split, key in NAMES_KEYS.items():
        if key not in z:
            out[key] = None
            continue
        names = z[key]
        if names.dtype.kind not in "US" or names.shape != (len(arrays[f"y_{split}"]),):
            raise DataError(f"{path}: {key} holds {names.dtype} {names.shape}, expected one name (text) per row of "
                            f"X_{split}: write the file again")
        out[key] = tuple(str(v) for v in names)
    return out


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
    return real_features(X, "the features")


def label_indices(y, where: str, n_classes: int | None = None) -> np.ndarray:
    """Labels ``y`` as int64 class indices, or a :class:`DataError` naming ``where`` and the first bad value.

    Integers are taken, and floats that are whole numbers (``1.0``); booleans, strings, complex
    numbers, fractions, NaN and infinities are refused, never floored or cast. With
    ``n_classes``, every label must lie in ``0 .. n_classes - 1``.

    Examples
    --------
    >>> label_indices(np.array([0.0, 2.0]), "y").tolist()
    [0, 2]
    >>> label_indices(np.array([0, 1.5]), "y")
    Traceback (most recent call last):
    ...
    featmlp.errors.DataError: y holds labels that are not whole numbers (1.5 at row 1): labels are class indices 0, 1, 2 ...
    """
    y = np.asarray(y)
    kind = y.dtype.kind
    what = {"b": "booleans", "U": "strings", "S": "bytes", "O": "Python objects", "c": "complex numbers",
            "M": "dates", "m": "time spans", "V": "records"}.get(kind)
    if what is None and kind not in "iuf":
        what = f"{y.dtype} values"
    if what is not None:
        first = f" (first: {y.flat[0]!r:.40})" if y.size else ""
        raise DataError(f"{where} holds {what}{first}: labels are class indices 0, 1, 2 ... (their names go in "
                        f"class_names)")
    if kind == "f" and y.size:
        bad = np.flatnonzero(~np.isfinite(y))
        if len(bad):
            raise DataError(f"{where} holds {y[bad[0]]} at row {bad[0]} ({len(bad)} such labels): labels are class "
                            f"indices 0, 1, 2 ...")
        bad = np.flatnonzero(y != np.floor(y))
        if len(bad):
            raise DataError(f"{where} holds labels that are not whole numbers ({y[bad[0]]} at row {bad[0]}): labels "
                            f"are class indices 0, 1, 2 ...")
        if np.abs(y).max() >= 2.0 ** 62:
            raise DataError(f"{where} holds labels too large for class indices (up to {np.abs(y).max():g})")
    if n_classes is not None and y.size:
        bad = np.flatnonzero((y < 0) | (y >= n_classes))
        if len(bad):
            raise DataError(f"{where} holds labels outside 0..{n_classes - 1} ({y[bad[0]]} at row {bad[0]}, "
                            f"{len(bad)} such labels): one label per row, an index into the {n_classes} class names")
    return y.astype(np.int64)


def real_features(X, where: str) -> np.ndarray:
    """``X`` as a float32/float64 array: ints and booleans converted to float64; complex numbers,
    strings and objects refused (DataError naming ``where``), never cast (which drops an
    imaginary part or parses text)."""
    X = np.asarray(X)
    kind = X.dtype.kind
    if kind == "f":
        return X if X.dtype in (np.float32, np.float64) else X.astype(np.float64)
    if kind in "iub":
        return X.astype(np.float64)
    if kind == "c":
        raise DataError(f"{where} holds complex numbers: features are real; keep what you mean yourself "
                        f"(np.abs(X), or X.real and X.imag as columns side by side)")
    what = {"U": "strings", "S": "bytes", "O": "Python objects"}.get(kind, f"{X.dtype} values")
    raise DataError(f"{where} holds {what}, not numbers: features must be a numeric (N, F) array")


def check_meta(meta: dict, path) -> dict:
    """``meta`` of the feature table at ``path``, checked: a DataError names the file and the key.

    ``features`` a known feature set (or null), ``image_size`` ``[width, height]`` positive
    integers (or null), ``feature_options`` an object, ``source``/``dataset_fingerprint``/
    ``featmlp_version`` strings, ``skipped`` a list: what training, evaluation and saving a
    model use, checked when the file is read rather than found wrong after training.
    """
    def bad(key, want):
        return DataError(f"{path}: meta[{key!r}] is {meta[key]!r:.60}, expected {want}: write the file again "
                         f"(featmlp extract), or correct that key")

    name = meta.get("features")
    if name is not None:
        if not isinstance(name, str):
            raise bad("features", "the name of a feature set")
        try:
            get_feature_set(name)
        except FeatmlpError as e:
            raise DataError(f"{path}: meta['features'] {name!r:.60} is not a feature set this featmlp knows "
                            f"({e})") from None
    size = meta.get("image_size")
    if size is not None and not (isinstance(size, list) and len(size) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1 << 20 for v in size)):
        raise bad("image_size", "[width, height], two positive integers")
    if meta.get("feature_options") is not None and not isinstance(meta["feature_options"], dict):
        raise bad("feature_options", "an object of option names and values")
    for key in ("source", "dataset_fingerprint", "featmlp_version"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise bad(key, "a string")
    if meta.get("skipped") is not None and not isinstance(meta["skipped"], list):
        raise bad("skipped", "a list")
    return meta


def load_features(path: str | os.PathLike) -> FeatureTable:
    """Read a feature file written by :func:`save_features` (or by hand, same keys), or a sharded table.

    A directory is a sharded table (:mod:`featmlp.tables.sharded`, written by ``featmlp extract -o
    DIR.features/`` or :func:`save_sharded`): its ``X_train`` and ``X_test`` are
    :class:`~featmlp.tables.sharded.ShardedArray` objects read a shard at a time, so a table larger
    than memory opens at once; ``np.asarray`` reads one whole. Never unpickles: object arrays
    are refused. Errors name the file and what is wrong with it.
    """
    path = Path(path)
    if path.is_dir():
        return _load_sharded(path)
    if not path.is_file():
        reason = not_regular(path) if os.path.lexists(path) else None
        if reason is not None:  # a FIFO, a device, a bad symlink: never opened
            raise DataError(f"feature file {path} is {reason}; give a .npz file or a DIR.features/ directory")
        raise DataError(f"feature file {path} does not exist; create one with `featmlp extract -o {path}`")
    z = read_npz(path)
    missing = [k for k in REQUIRED_KEYS if k not in z]
    if missing:
        raise DataError(f"{path} is not a featmlp feature file: missing {', '.join(missing)} "
                        f"(expected {', '.join(REQUIRED_KEYS)})")
    arrays = {k: z[k] for k in REQUIRED_KEYS}
    meta = check_meta(_meta_of(z, path), path)
    fitted = _state_in(z, meta, path)
    names = tuple(str(s) for s in np.ravel(arrays["feature_names"]))
    classes = tuple(str(s) for s in np.ravel(arrays["class_names"]))
    for split in ("train", "test"):
        X, y = arrays[f"X_{split}"], arrays[f"y_{split}"]
        # refused before any cast: astype would drop an imaginary part, floor 2.5, parse "3"
        arrays[f"X_{split}"] = real_features(X, f"{path}: X_{split}")
        if X.ndim != 2 or X.shape[1] != len(names) or y.shape != (X.shape[0],):
            raise DataError(f"{path}: X_{split} {X.shape} / y_{split} {y.shape} do not fit "
                            f"{len(names)} feature names")
        arrays[f"y_{split}"] = label_indices(y, f"{path}: y_{split}", len(classes))
    return FeatureTable(arrays["X_train"], arrays["y_train"], arrays["X_test"], arrays["y_test"],
                        names, classes, meta, fitted, **_names_in(z, arrays, path),
                        X_test_mirror=_mirror_in(z, arrays, path))


def _load_sharded(path: Path) -> FeatureTable:
    manifest, arrays, labels, row_names = open_sharded(path)
    classes = tuple(manifest["class_names"])
    for split in ("train", "test"):
        labels[split] = label_indices(labels[split], f"{path}: y_{split}", len(classes))
    meta = check_meta(dict(manifest.get("meta") or {}), path / "manifest.json")
    fitted = {}
    if manifest.get("fitted_file"):
        if manifest.get("fitted_sha256") and verifying():  # absent from manifests written before it
            verify_file(path / FITTED_FILE, manifest["fitted_sha256"], "this table's fitted state")
        fitted_meta, fitted = read_fitted(path / FITTED_FILE)
    meta[SHARDED_FINGERPRINT] = manifest["fingerprint"]
    return FeatureTable(arrays["train"], labels["train"], arrays["test"], labels["test"],
                        tuple(manifest["feature_names"]), classes, meta, fitted, row_names["train"], row_names["test"])


def save_sharded(path: str | os.PathLike, table: FeatureTable, *, shard_rows: int = 5000,
                 overwrite: bool = False) -> Path:
    """Write a feature table as a sharded directory (float32 shards of ``shard_rows`` rows).

    Built beside (``.NAME.partial``) and renamed in, so an existing table is replaced
    (``overwrite``) only when the new one is complete; anything else at ``path`` is refused
    (:func:`featmlp._outputs.check_output`). ``load_features`` opens it without reading the shards.
    A sharded table holds the two splits only, not the test images' mirror features (``X_test_mirror``).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> t = FeatureTable(np.ones((3, 2)), np.array([0, 1, 0]), np.zeros((1, 2)), np.array([1]), ("f", "g"), ("a", "b"))
    >>> p = save_sharded(pathlib.Path(tempfile.mkdtemp()) / "t.features", t, shard_rows=2)
    >>> back = load_features(p)
    >>> back.X_train.n_shards, np.asarray(back.X_train).tolist()
    (2, [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    """
    if shard_rows < 1:
        raise ConfigError(f"shard_rows must be at least 1, got {shard_rows}")
    check_output(path, "table", force=overwrite, option="path")
    path = Path(os.path.abspath(path))
    work = sibling(path, "partial")
    remove_work_dir(work)
    mark_work_dir(work)
    records = {}
    for split in ("train", "test"):
        X, y = getattr(table, f"X_{split}"), np.asarray(getattr(table, f"y_{split}"))
        names = getattr(table, f"names_{split}")
        records[split] = [write_shard(work, split, i, X[start:start + shard_rows], y[start:start + shard_rows],
                                      table.row_names(split, start, start + shard_rows) if names is not None else ())
                          for i, start in enumerate(range(0, len(y), shard_rows))]
    meta = {k: v for k, v in table.meta.items() if k != SHARDED_FINGERPRINT}
    if table.fitted:
        write_fitted(work / FITTED_FILE, table.fitted)
    write_manifest(work, records, table.feature_names, table.class_names, meta, bool(table.fitted))
    (work / WORK_MARK).unlink()
    replace_dir(work, path)
    return path


def write_fitted(path: Path, state: dict) -> None:
    """A fitted state alone, as a feature file keeps it (``meta`` + ``fitted.<set>.<name>`` arrays)."""
    meta, arrays = _with_state({}, state)
    with atomic_write(path, "wb") as f:
        np.savez(f, meta=np.array(json.dumps(meta)), **arrays)


def read_fitted(path: Path) -> tuple[dict, dict]:
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

"""Sharded feature tables: float32 ``.npy`` shards and a JSON manifest, read a shard at a time.

An ``.npz`` holds a whole table in memory. A table of ImageNet's 1.28 M images x 14,400
learned features is 74 GB: it is written as a directory instead, one shard per extraction
chunk::

    feats.features/
        manifest.json          written last: what a complete table is (below)
        train-000000.npy       float32 (rows, F), np.save format: memory-mapped when read
        train-000000.json      the shard's record: rows, sha256 of its .npy, labels, files
        ...
        test-000000.npy / .json
        y_train.npy, y_test.npy   the labels of every shard, in order (int64)
        fitted.npz             a fitted feature set's state (kmeans), as a feature file keeps it

``manifest.json`` names the feature set and its settings, the feature and class names, the
shards of each split in order with their row counts and checksums, and the table's
fingerprint. Every file is written beside and renamed in, a shard's ``.json`` after its
``.npy``, so a shard whose record exists and whose checksum matches is finished; anything
else is redone by a rerun.

:class:`ShardedArray` is what :func:`featmlp.tables.store.load_features` gives for such a directory
in place of ``X_train`` / ``X_test``: it has the shape and dtype of the table, hands out a
shard at a time (:meth:`ShardedArray.blocks`), gathers rows (:meth:`ShardedArray.rows`), and
becomes an ordinary array with ``np.asarray`` when the table is small enough to hold.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np

from featmlp._io import atomic_write
from featmlp._outputs import not_a_table
from featmlp.errors import DataError
from featmlp.tables.format import (FITTED_FILE, FORMAT, FORMAT_VERSION,  # noqa: F401 (FITTED_FILE: the table's files)
                                   MANIFEST)

SPLITS = ("train", "test")
DTYPE = np.dtype(np.float32)


def shard_name(split: str, index: int) -> str:
    """The file stem of shard ``index`` of ``split``: ``train-000012``."""
    return f"{split}-{index:06d}"


def labels_file(split: str) -> str:
    return f"y_{split}.npy"


def is_sharded(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory holding a sharded feature table (its manifest)."""
    p = Path(path)
    return p.is_dir() and (p / MANIFEST).is_file()


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verifying() -> bool:
    """Whether shards and label files are checked against the manifest's checksums as they are read
    (the default; ``FEATMLP_VERIFY_SHARDS=0`` turns it off, to measure what it costs)."""
    return os.environ.get("FEATMLP_VERIFY_SHARDS", "1").strip().lower() not in ("0", "no", "false", "off")


# The shard files this process has checked, by identity: each is hashed once per process, the
# first time it is touched (a memory-mapped shard is read again and again while training).
_verified: set[tuple] = set()


def verify_file(path: Path, sha256: str, what: str) -> None:
    """DataError unless the file at ``path`` has the SHA-256 its manifest records (once per process)."""
    st = path.stat()
    key = (os.path.abspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, sha256)
    if key in _verified:
        return
    if file_sha256(path) != sha256:
        raise DataError(f"{path} is not {what} (its checksum differs from the one {MANIFEST} records): "
                        f"the table was changed after it was written (files swapped, edited or truncated); "
                        f"extract it again")
    _verified.add(key)


class ShardedArray:
    """A ``(N, F)`` float32 table kept in ``.npy`` shards on disk, read a shard at a time.

    Nothing is read when it is made. ``X[i]``, ``X[a:b]``, ``X[index_array]`` and
    ``X[mask]`` return ndarrays gathered shard by shard; :meth:`blocks` yields each shard
    memory-mapped, in order, so a pass over the table holds one shard's pages at a time;
    ``np.asarray(X)`` reads the whole table into memory.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for i, rows in enumerate([np.ones((2, 3)), np.zeros((1, 3))]):
    ...     np.save(root / f"s{i}.npy", rows.astype(np.float32))
    >>> X = ShardedArray(root, ["s0.npy", "s1.npy"], [2, 1], 3)
    >>> X.shape, X[1:3].tolist()
    ((3, 3), [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    """

    ndim = 2
    dtype = DTYPE

    def __init__(self, root: str | os.PathLike, files, rows, n_features: int, nonfinite=None, checksums=None):
        self.root = Path(root)
        self.files = list(files)
        # SHA-256 of each shard file as the manifest records it (None: not checked): a shard is
        # hashed the first time this process touches it (see verify_file)
        self.checksums = None if checksums is None else list(checksums)
        self.shard_rows = np.asarray(rows, np.int64)
        if len(self.files) != len(self.shard_rows):
            raise ValueError("one row count per shard file")
        self.offsets = np.concatenate([[0], np.cumsum(self.shard_rows)]).astype(np.int64)
        self.n_features = int(n_features)
        # The rows holding a NaN or an infinity, as extraction recorded them per shard (None: unknown)
        self.known_nonfinite = None if nonfinite is None else np.concatenate(
            [np.asarray(rows_of, np.int64) + self.offsets[i] for i, rows_of in enumerate(nonfinite)]
            + [np.zeros(0, np.int64)])

    # -- what numpy code asks of an array ------------------------------------------------

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.offsets[-1]), self.n_features

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def n_shards(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return (f"ShardedArray({self.shape[0]} x {self.n_features} float32 in {self.n_shards} shards "
                f"under {self.root})")

    def shard(self, i: int) -> np.ndarray:
        """Shard ``i``, memory-mapped read-only (its pages are read when touched)."""
        path = self.root / self.files[i]
        try:
            if self.checksums is not None and self.checksums[i] and verifying():
                verify_file(path, self.checksums[i], f"shard {i} of this table's {self.files[i].split('-')[0]} split")
            X = np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise DataError(f"{path} is missing: the sharded table {self.root} is incomplete; "
                            f"extract the table again") from None
        except (OSError, ValueError) as e:
            raise DataError(f"{path} is damaged ({e}): extract the table again") from None
        if X.shape != (self.shard_rows[i], self.n_features) or X.dtype != self.dtype:
            raise DataError(f"{path} holds {X.dtype} {X.shape}, the manifest says float32 "
                            f"({self.shard_rows[i]}, {self.n_features}): extract the table again")
        return X

    def blocks(self):
        """``(first row, shard)`` for every shard in order; each shard memory-mapped."""
        for i in range(self.n_shards):
            if self.shard_rows[i]:
                yield int(self.offsets[i]), self.shard(i)

    def rows(self, idx) -> np.ndarray:
        """The rows at ``idx`` (1-d ints, any order, repeats allowed) as a new float32 array."""
        idx = np.asarray(idx, np.int64)
        out = np.empty((len(idx), self.n_features), self.dtype)
        if not len(idx):
            return out
        if idx.min() < 0 or idx.max() >= len(self):
            raise IndexError(f"row index out of bounds for {len(self)} rows")
        shard_of = np.searchsorted(self.offsets, idx, side="right") - 1
        order = np.argsort(shard_of, kind="stable")
        bounds = np.searchsorted(shard_of[order], np.arange(self.n_shards + 1))
        for s in range(self.n_shards):
            pick = order[bounds[s]:bounds[s + 1]]
            if len(pick):
                X = self.shard(s)
                out[pick] = X[idx[pick] - self.offsets[s]]
                del X  # unmapped: the pages leave this process's memory
        return out

    def __getitem__(self, key):
        n = len(self)
        if isinstance(key, tuple):
            first = self[key[0]]
            return first[key[1:]] if np.ndim(first) == 1 else first[(slice(None),) + key[1:]]
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            i = int(key)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of bounds for {n} rows")
            return self.rows([i % n])[0]
        if isinstance(key, slice):
            return self.rows(np.arange(n)[key])
        idx = np.asarray(key)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise IndexError(f"boolean index of shape {idx.shape} for {n} rows")
            idx = np.flatnonzero(idx)
        return self.rows(np.where(idx < 0, idx + n, idx))

    def __array__(self, dtype=None, copy=None):
        out = np.empty(self.shape, self.dtype)
        for start, X in self.blocks():
            out[start:start + len(X)] = X
        return out if dtype is None else out.astype(dtype, copy=False)

    def __iter__(self):
        for _, X in self.blocks():
            yield from np.array(X)


class ShardNames:
    """The source name of each row of a sharded table's split, read from its shard records.

    Each shard's ``.json`` record lists the images it covers (``files``, in row order); nothing
    is read until a name is asked for, then one record at a time (the last one kept).
    ``names[a:b]`` is a list, ``names[i]`` a str.
    """

    def __init__(self, root: str | os.PathLike, records, rows):
        self.root = Path(root)
        self.records = list(records)
        self.offsets = np.concatenate([[0], np.cumsum(np.asarray(rows, np.int64))]).astype(np.int64)
        self._cached: tuple[int, list] | None = None

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def shard(self, i: int) -> list[str]:
        """The names of shard ``i``'s rows."""
        if self._cached is None or self._cached[0] != i:
            path = self.root / self.records[i]
            try:
                files = json.loads(path.read_text())["files"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise DataError(f"{path} is missing or damaged ({e}): extract the table again") from None
            rows = int(self.offsets[i + 1] - self.offsets[i])
            if not isinstance(files, list) or len(files) != rows:
                raise DataError(f"{path} names {len(files) if isinstance(files, list) else 0} images for {rows} rows: "
                                f"extract the table again")
            self._cached = i, [str(f) for f in files]
        return self._cached[1]

    def __getitem__(self, key):
        n = len(self)
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            out = []
            for i in range(len(self.records)):
                a, b = int(self.offsets[i]), int(self.offsets[i + 1])
                if b > start and a < stop and b > a:
                    out.extend(self.shard(i)[max(start, a) - a:min(stop, b) - a])
            return out
        i = int(key)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of bounds for {n} rows")
        i %= n
        s = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return self.shard(s)[i - int(self.offsets[s])]

    def __iter__(self):
        for i in range(len(self.records)):
            yield from self.shard(i)


# --------------------------------------------------------------------------- writing

def write_shard(root: Path, split: str, index: int, X: np.ndarray, labels, files=(),
                skipped=()) -> dict:
    """Write one shard atomically: its ``.npy`` first, then its ``.json`` record (the marker).

    Returns the record: ``rows``, ``sha256`` of the ``.npy`` file, ``labels``, ``files``
    (the images it covers, in row order), ``skipped`` (unreadable files left out) and
    ``nonfinite`` (its rows holding a NaN or an infinity).
    """
    X = np.ascontiguousarray(X, DTYPE)
    labels = [int(v) for v in labels]
    if len(labels) != len(X):
        raise ValueError("one label per row")
    stem = shard_name(split, index)
    h = hashlib.sha256()
    with atomic_write(root / f"{stem}.npy", "wb") as f:
        np.save(_Hashing(f, h), X)
    record = {"split": split, "index": index, "rows": len(X), "n_features": int(X.shape[1]),
              "sha256": h.hexdigest(), "labels": labels, "files": list(files),
              "skipped": [list(s) for s in skipped],
              # known now, while the rows are in memory: no pass over the table is needed for it later
              "nonfinite": np.flatnonzero(~np.isfinite(X).all(axis=1)).tolist()}
    with atomic_write(root / f"{stem}.json", "w") as f:
        json.dump(record, f)
    return record


class _Hashing:
    """A write-only file that hashes what passes through (np.save's target)."""

    def __init__(self, f, h):
        self.f, self.h = f, h

    def write(self, data) -> int:
        self.h.update(data)
        return self.f.write(data)


def finished_shard(root: Path, split: str, index: int, n_features: int | None = None,
                   verify: bool = True) -> dict | None:
    """The record of a finished shard, or None when it is missing or damaged (to redo).

    A shard is finished when its record parses, its ``.npy`` has the rows and columns the
    record says and (``verify``) the file's SHA-256 matches the record.
    """
    stem = shard_name(split, index)
    try:
        record = json.loads((root / f"{stem}.json").read_text())
        rows, sha = int(record["rows"]), str(record["sha256"])
        X = np.load(root / f"{stem}.npy", mmap_mode="r", allow_pickle=False)
        ok = X.dtype == DTYPE and X.shape == (rows, n_features if n_features is not None else X.shape[1])
        del X
        if not ok or len(record["labels"]) != rows:
            return None
        if verify and file_sha256(root / f"{stem}.npy") != sha:
            return None
        return record
    except (OSError, ValueError, KeyError, TypeError):
        return None


def table_digest(records: dict[str, list[dict]], feature_names, class_names) -> str:
    """SHA-256 of a sharded table: each shard's checksum and labels, the names (not the meta)."""
    h = hashlib.sha256(b"featmlp-sharded-table-v1\n")
    for split in SPLITS:
        for r in records.get(split, []):
            h.update(f"{split} {r['rows']} {r['sha256']}\n".encode())
            h.update(np.asarray(r["labels"], "<i8").tobytes())
    h.update(json.dumps([list(map(str, feature_names)), list(map(str, class_names))]).encode())
    return h.hexdigest()


def write_manifest(root: Path, records: dict[str, list[dict]], feature_names, class_names,
                   meta: dict, fitted: bool) -> dict:
    """Write the labels of each split and then ``manifest.json``: the table is complete."""
    labels_sha256 = {}
    for split in SPLITS:
        labels = [np.asarray(r["labels"], np.int64) for r in records.get(split, [])]
        h = hashlib.sha256()
        with atomic_write(root / labels_file(split), "wb") as f:
            np.save(_Hashing(f, h), np.concatenate(labels) if labels else np.zeros(0, np.int64))
        labels_sha256[split] = h.hexdigest()
    manifest = {
        "format": FORMAT, "version": FORMAT_VERSION, "dtype": DTYPE.name,
        "feature_names": list(map(str, feature_names)), "class_names": list(map(str, class_names)),
        "fingerprint": table_digest(records, feature_names, class_names),
        "fitted_file": FITTED_FILE if fitted else None,
        "labels_sha256": labels_sha256,  # of y_train.npy and y_test.npy, checked as they are read
        "fitted_sha256": file_sha256(root / FITTED_FILE) if fitted else None,
        "meta": meta,
        "splits": {split: [{"file": shard_name(split, r["index"]) + ".npy", "rows": r["rows"],
                            "sha256": r["sha256"],
                            "first_file": r["files"][0] if r["files"] else None,
                            "last_file": r["files"][-1] if r["files"] else None,
                            "nonfinite": [int(i) for i in r.get("nonfinite", [])]}
                           for r in records.get(split, [])] for split in SPLITS},
    }
    with atomic_write(root / MANIFEST, "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def read_manifest(root: str | os.PathLike) -> dict:
    """The checked ``manifest.json`` of a sharded table (DataError naming what is wrong)."""
    root = Path(root)
    path = root / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(not_a_table(root)) from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is damaged ({e}): extract the table again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path} is not a featmlp sharded feature table manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise DataError(f"{path} has format version {manifest.get('version')!r}; this featmlp reads "
                        f"version {FORMAT_VERSION}: extract the table again or upgrade featmlp")
    try:
        names = manifest["feature_names"]
        for split in SPLITS:
            for s in manifest["splits"][split]:
                if not (isinstance(s["file"], str) and "/" not in s["file"] and int(s["rows"]) >= 0):
                    raise ValueError(s)
        if not isinstance(names, list) or not isinstance(manifest["class_names"], list):
            raise ValueError("names")
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path} is incomplete or malformed ({e!r}): extract the table again") from None
    return manifest


def open_sharded(root: str | os.PathLike) -> tuple[dict, dict[str, ShardedArray], dict[str, np.ndarray], dict]:
    """``(manifest, {split: ShardedArray}, {split: labels}, {split: ShardNames or None})`` of a sharded
    table; nothing else read. A split's names are None when a shard's record names no images (a
    table written before featmlp recorded the names of images in memory, or resumed over such shards)."""
    root = Path(root)
    manifest = read_manifest(root)
    n_features = len(manifest["feature_names"])
    arrays, labels, names = {}, {}, {}
    verify = verifying()
    sums = manifest.get("labels_sha256")
    for split in SPLITS:
        shards = manifest["splits"][split]
        known = [s.get("nonfinite") for s in shards]
        arrays[split] = ShardedArray(root, [s["file"] for s in shards], [s["rows"] for s in shards], n_features,
                                     None if any(k is None for k in known) else known,
                                     checksums=[s.get("sha256") for s in shards])
        named = all(s.get("first_file") is not None or not s["rows"] for s in shards)
        names[split] = ShardNames(root, [s["file"].removesuffix(".npy") + ".json" for s in shards],
                                  [s["rows"] for s in shards]) if named else None
        path = root / labels_file(split)
        try:
            data = path.read_bytes()  # read once: hashed, then parsed
            y = np.load(io.BytesIO(data), allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise DataError(f"{path} is missing or damaged ({e}): extract the table again") from None
        if verify and isinstance(sums, dict) and sums.get(split) and hashlib.sha256(data).hexdigest() != sums[split]:
            raise DataError(f"{path} is not the labels file of this table (its checksum differs from the one "
                            f"{MANIFEST} records): the labels were changed after the table was written; extract "
                            f"it again")
        if y.shape != (len(arrays[split]),) or not (np.issubdtype(y.dtype, np.integer) or y.dtype.kind == "f"):
            raise DataError(f"{path} holds {y.dtype} {y.shape}, expected {len(arrays[split])} labels: "
                            f"extract the table again")
        labels[split] = y
    if verify and not (isinstance(sums, dict) and all(sums.get(split) for split in SPLITS)):
        _check_labels_by_fingerprint(root, manifest, labels)
    return manifest, arrays, labels, names


def _check_labels_by_fingerprint(root: Path, manifest: dict, labels: dict) -> None:
    """The labels of a manifest written before it recorded their checksums, checked against its
    fingerprint (made of each shard's checksum and labels: :func:`table_digest`)."""
    records = {}
    for split in SPLITS:
        bounds = np.cumsum([0] + [int(s["rows"]) for s in manifest["splits"][split]])
        y = labels[split]
        if y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.floor(y))):
            return  # not labels at all: refused with the value by store.label_indices
        y = y.astype("<i8")
        records[split] = [{"rows": int(s["rows"]), "sha256": s.get("sha256"), "labels": y[a:b]}
                          for s, a, b in zip(manifest["splits"][split], bounds[:-1], bounds[1:])]
    if table_digest(records, manifest["feature_names"], manifest["class_names"]) != manifest.get("fingerprint"):
        raise DataError(f"{root / labels_file('train')} or {root / labels_file('test')} does not fit the "
                        f"fingerprint {root / MANIFEST} records: the labels or the manifest were changed after "
                        f"the table was written; extract it again")

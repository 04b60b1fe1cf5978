"""A small job's images and features, kept to be reused by the same job: :func:`run_job`'s cache.

``featmlp lecture`` reads the same bundled sample and extracts the same nine features each time it
runs: ~1.1 s of a ~3 s command (the tar's 6,000 headers, decoding 6,000 JPEGs, numba's start),
where a student changes only the learning rate. A job is reused when

* its source is one local file (an archive, the bundled sample) of at most :data:`REUSE_MAX_BYTES`,
* its feature set fits nothing to the data (``lecture``, ``hog``, ``color``...: not ``kmeans``
  nor the pretrained sets, whose tables are large anyway), and
* its decoded images and its feature table are each at most :data:`REUSE_MAX_BYTES`.

Such a job is keyed by the SHA-256 of the file's bytes, of how it was read (test fraction, split
seed, image sizes, ``skip_bad``, the ``FEATMLP_*`` settings of reading) and of the feature set
with its options, and of the code that reads and extracts: featmlp's version and source files,
numpy's, Pillow's, numba's and simplejpeg's versions. The first run stores its dataset (images,
labels, names, description, skipped files, loading's warnings) and its feature table in
``<cache>/reuse/<key>/`` (:func:`featmlp.data.default_cache_dir`), written beside and renamed
in; the same job again reads them back instead of loading and extracting. At most
:data:`REUSE_ENTRIES` are kept, the least recently used dropped. An entry that cannot be read is
not used (the job loads and extracts as if there were none); the cache never fails a job.
``FEATMLP_REUSE=0``, ``run_job(reuse=False)`` or ``--no-reuse`` turn it off.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np

from featmlp import __version__
from featmlp.data import Dataset, default_cache_dir
from featmlp.data.load import SAMPLE_SOURCE, sample_resource
from featmlp.errors import FeatmlpError
from featmlp.tables.sharded import file_sha256

# The largest source file, decoded images and feature table a job may have to be kept.
REUSE_MAX_BYTES = 64 * 1024 * 1024
# Entries kept; the least recently used beyond are removed.
REUSE_ENTRIES = 16
# Settings from the environment that change nothing a job reads or extracts.
_NOT_READING = ("FEATMLP_CACHE", "FEATMLP_REUSE", "FEATMLP_NUM_THREADS")
_ENTRY_FILE = "entry.json"
_IMAGES_FILE = "images.npz"
_TABLE_FILE = "features.npz"


def reuse_enabled() -> bool:
    """False when ``$FEATMLP_REUSE`` is ``0``, ``false``, ``no`` or ``off``."""
    return os.environ.get("FEATMLP_REUSE", "1").strip().lower() not in ("0", "false", "no", "off")


def reuse_dir() -> Path:
    """``<cache>/reuse``: one folder per kept job."""
    return default_cache_dir() / "reuse"


def source_file(source) -> Path | None:
    """The one local file ``source`` names (the bundled sample's archive for None or ``"sample"``),
    or None: a folder, a URL, ``"cifar10"``, several files."""
    if source is None or source == SAMPLE_SOURCE:
        path = Path(str(sample_resource()))  # a file of an installed package (not one inside a zip)
        return path if path.is_file() else None
    if not isinstance(source, (str, os.PathLike)) or "://" in str(source):
        return None
    path = Path(source)
    return path if path.is_file() else None


def job_key(source, settings: dict) -> str | None:
    """The key of a job reading ``source`` with ``settings`` (JSON-able: how it is read and
    extracted), or None when it cannot be kept (see the module docstring)."""
    path = source_file(source)
    try:
        if path is None or path.stat().st_size > REUSE_MAX_BYTES:
            return None
        env = {k: v for k, v in sorted(os.environ.items()) if k.startswith("FEATMLP_") and k not in _NOT_READING}
        what = {"file": file_sha256(path), "settings": settings, "env": env, "code": _code_digest()}
    except OSError:
        return None
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:32]


_CODE_DIGEST = None


def _code_digest() -> str:
    """featmlp's version and source files, and the versions of what decodes and extracts."""
    global _CODE_DIGEST
    if _CODE_DIGEST is None:
        h = hashlib.sha256(__version__.encode())
        root = Path(__file__).resolve().parent.parent
        for path in sorted(root.rglob("*.py")):
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
        for package in ("numpy", "pillow", "numba", "simplejpeg"):
            try:
                h.update(f"{package} {metadata.version(package)}".encode())
            except metadata.PackageNotFoundError:
                h.update(f"{package} none".encode())
        _CODE_DIGEST = h.hexdigest()
    return _CODE_DIGEST


def load_reused(key: str | None) -> tuple[Dataset, Path, list[str]] | None:
    """``(dataset, feature table file, loading's warnings)`` kept under ``key``, or None when
    there is none or it cannot be read."""
    if key is None:
        return None
    entry = reuse_dir() / key
    try:
        info = json.loads((entry / _ENTRY_FILE).read_text())
        table = entry / _TABLE_FILE
        if file_sha256(table) != info["table_sha256"]:
            return None
        with np.load(entry / _IMAGES_FILE, allow_pickle=False) as z:
            ds = Dataset(z["train_images"], z["train_labels"], z["test_images"], z["test_labels"],
                         tuple(info["class_names"]), info["source"],
                         tuple(tuple(s) for s in info["skipped"]),
                         tuple(z["train_names"].tolist()) if "train_names" in z else None,
                         tuple(z["test_names"].tolist()) if "test_names" in z else None)
        os.utime(entry)  # recently used
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, FeatmlpError):
        return None
    return ds, table, list(info.get("warnings", []))


def store_for_reuse(key: str | None, ds: Dataset, table_file: Path, warnings: list[str]) -> bool:
    """Keep ``ds``, the table file and loading's warnings under ``key`` when they are small
    enough; True when kept. Never raises for the cache's sake: a full disk keeps nothing."""
    if key is None:
        return False
    images = [ds.train_images, ds.test_images]
    if sum(int(np.prod(a.shape)) for a in images) > REUSE_MAX_BYTES:
        return False
    root = reuse_dir()
    tmp = None
    try:
        if table_file.stat().st_size > REUSE_MAX_BYTES:
            return False
        root.mkdir(parents=True, exist_ok=True)
        if (root / key).exists():
            return True
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".part", dir=root))
        arrays = {"train_images": np.asarray(ds.train_images), "train_labels": ds.train_labels,
                  "test_images": np.asarray(ds.test_images), "test_labels": ds.test_labels}
        for split in ("train", "test"):
            names = ds.image_names(split)
            if names is not None:
                arrays[f"{split}_names"] = np.array(names, dtype=str)
        np.savez(tmp / _IMAGES_FILE, **arrays)
        shutil.copyfile(table_file, tmp / _TABLE_FILE)
        (tmp / _ENTRY_FILE).write_text(json.dumps({
            "featmlp_version": __version__, "class_names": list(ds.class_names), "source": ds.source,
            "skipped": [list(s) for s in ds.skipped], "warnings": list(warnings),
            "table_sha256": file_sha256(tmp / _TABLE_FILE)}))
        os.rename(tmp, root / key)
        tmp = None
        _evict(root)
        return True
    except (OSError, ValueError, FeatmlpError):
        return False
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _evict(root: Path) -> None:
    """Remove the least recently used entries beyond :data:`REUSE_ENTRIES` (and parts left by a kill)."""
    entries = []
    for p in root.iterdir():
        with contextlib.suppress(OSError):
            if p.name.startswith(".") and p.name.endswith(".part"):
                if p.stat().st_mtime < time.time() - 3600:  # another job's, if recent: not ours to touch yet
                    shutil.rmtree(p, ignore_errors=True)
            elif p.is_dir() and (p / _ENTRY_FILE).is_file():
                entries.append((p.stat().st_mtime, p))
    for _, p in sorted(entries, reverse=True)[REUSE_ENTRIES:]:
        shutil.rmtree(p, ignore_errors=True)

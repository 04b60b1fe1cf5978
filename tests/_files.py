"""Small on-disk fixtures shared by the tests: folders, archives, CIFAR-10 batches and image folders, of given bytes."""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from featmlp.data import CIFAR10_CLASSES

# A small image folder's classes and images per class (source_files).
CLASSES = ("ant", "bee", "cat")
N_PER_CLASS = 5


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    """``root/<name>`` holding each file's bytes (folders in names are created)."""
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def write_tar(path: Path, files: dict[str, bytes], prefix: str = "") -> Path:
    """A .tar.gz at ``path`` with one member ``prefix + name`` per file."""
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def source_image(seed: int, fmt: str) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


def source_files(split: bool) -> dict[str, bytes]:
    """Relative name -> bytes of a small image folder (PNG and JPEG), with or without train/test."""
    files = {}
    for k, c in enumerate(CLASSES):
        for i in range(N_PER_CLASS):
            fmt, ext = ("PNG", "png") if i % 2 else ("JPEG", "jpg")
            prefix = ("test/" if i == 0 else "train/") if split else ""
            files[f"{prefix}{c}/{i:03d}.{ext}"] = source_image(100 * k + i, fmt)
    return files


def upload(fs, prefix: str, files: dict[str, bytes]) -> None:
    """Each file into the moto bucket under ``prefix`` (the ``s3`` fixture's filesystem)."""
    fs.pipe({f"bucket/{prefix}/{name}": data for name, data in files.items()})


def image_folder(root, n_per_class=9, classes=("cat", "dog", "emu"), size=(16, 12), seed=0):
    """ROOT/train|test/<class>/*.png of random pictures, built here."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_per_class), ("test", 3)):
        class_folders(root / split, classes, n, size, rng)
    return root


def class_folders(root, classes, n, size, rng):
    """ROOT/<class>/000.png ... of ``n`` random pictures of ``size`` (width, height) per class."""
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(root / c / f"{i:03d}.png")
    return root


# --------------------------------------------------------------------------- CIFAR-10 batches

class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` (BINSTRING opcodes), as the official files do.

    Python 3's own protocol 2 writes bytes as ``_codecs.encode(...)`` calls instead.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def dump_py2(obj) -> bytes:
    """A protocol-2 pickle in the style of the official batches (numpy 1.x global names)."""
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    # The official files were written by numpy 1.x, which names numpy.core, not numpy._core.
    return buf.getvalue().replace(b"numpy._core.", b"numpy.core.")


def dump_py3(obj) -> bytes:
    return pickle.dumps(obj, protocol=2)


def make_batches(sizes=(3, 2, 4), n_test=5, seed=0, num_classes=10):
    rng = np.random.default_rng(seed)
    batches = [{b"batch_label": f"training batch {i + 1} of {len(sizes)}".encode(),
                b"labels": [int(x) for x in rng.integers(0, num_classes, n)],
                b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                b"filenames": [f"img{i}_{j}.png".encode() for j in range(n)]}
               for i, n in enumerate(sizes)]
    test = {b"batch_label": b"testing batch 1 of 1",
            b"labels": [int(x) for x in rng.integers(0, num_classes, n_test)],
            b"data": rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)}
    # The meta counts are those of the real CIFAR-10: they do not match these batches.
    meta = {b"num_cases_per_batch": 10000, b"num_vis": 3072,
            b"label_names": [n.encode() for n in CIFAR10_CLASSES[:num_classes]]}
    return batches, test, meta


def batch_files(batches, test, meta, dump=dump_py2) -> dict[str, bytes]:
    files = {f"data_batch_{i + 1}": dump(b) for i, b in enumerate(batches)}
    files["test_batch"] = dump(test)
    files["batches.meta"] = dump(meta)
    return files


def write_zip(path: Path, files: dict[str, bytes], prefix: str = "") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(prefix + name, data)
    return path


# --------------------------------------------------------------------------- runs

def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` with its bytes: what 'left as it was' is checked against."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def two_class_folder(root: Path, n=10, size=16, seed=0) -> Path:
    """ROOT/dark|light/*.png: two classes a network tells apart by brightness."""
    rng = np.random.default_rng(seed)
    for k, cls in enumerate(("dark", "light")):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            img = np.clip(60 + 120 * k + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / cls / f"{i}.png")
    return root

"""Reader of the official CIFAR-10 "python version": Python-2 pickles, unpickled safely.

The batches are pickles, and unpickling runs whatever callables the file names. A file
downloaded from a mirror or handed over by someone must not be able to run code, so the
unpickler resolves only the few numpy names a pickled uint8 array needs and refuses
anything else before it is called.
"""

from __future__ import annotations

import io
import pickle
import re
import warnings
from typing import Callable, Mapping

import numpy as np

from ..errors import DataError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
CIFAR10_FOLDER = "cifar-10-batches-py"

_SIDE = 32
_ROW = 3 * _SIDE * _SIDE  # one image: R, G then B plane, each 32x32 row-major
_TRAIN_BATCH = re.compile(r"data_batch_(\d+)")
_META = "batches.meta"
_TEST = "test_batch"
_OFFICIAL_TRAIN_BATCHES = 5


def _numpy_pickle_names() -> dict[tuple[str, str], object]:
    """The globals that numpy's own pickles of plain arrays reference, mapped to objects.

    Found by disassembling (pickletools) arrays and scalars pickled with protocols 2-5:
    ndarray -> ``multiarray._reconstruct`` + ``numpy.ndarray`` + ``numpy.dtype`` (protocol
    5: ``numeric._frombuffer``), numpy scalars -> ``multiarray.scalar``. numpy 1.x writes
    them under ``numpy.core``, numpy 2 under ``numpy._core``; both map to the objects of
    the numpy installed, so old files load without importing the deprecated module.
    """
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric
    names = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for package in ("numpy.core", "numpy._core"):
        names[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        names[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        names[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    # Python 3 writes a bytes object into a protocol-2 pickle as _codecs.encode(str, "latin1").
    names[("_codecs", "encode")] = _latin1_encode
    # ... and an empty bytes object (an empty batch's pixel buffer) as bytes().
    names[("__builtin__", "bytes")] = names[("builtins", "bytes")] = _empty_bytes
    return names


def _empty_bytes():
    # No arguments allowed: bytes(n) would let a file allocate n bytes.
    return b""


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    # Only the exact call Python emits for bytes; any other codec could reach arbitrary
    # registered codec code.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise DataError("refusing to unpickle _codecs.encode with arguments other than "
                        "(str, 'latin1'): CIFAR-10 batches only contain numpy arrays")
    return text.encode("latin1")


_ALLOWED = _numpy_pickle_names()


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that can build numpy arrays and nothing else."""

    def __init__(self, file, where: str):
        super().__init__(file, encoding="bytes")
        self._where = where

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DataError(f"refusing to unpickle {module}.{name} from {self._where}: "
                            f"CIFAR-10 batches only contain numpy arrays") from None


def unpickle_batch(data: bytes, where: str):
    """Unpickle one CIFAR-10 batch file's bytes with the restricted unpickler."""
    try:
        return _CifarUnpickler(io.BytesIO(data), where).load()
    except DataError:
        raise
    except Exception as e:  # a corrupt pickle can fail in many ways; all mean the same to the user
        raise DataError(f"{where} is not a readable CIFAR-10 batch "
                        f"({type(e).__name__}: {e})") from e


def is_cifar_name(name: str) -> bool:
    """Whether a file name (no directory) is one of the official batch files."""
    return name in (_META, _TEST) or _TRAIN_BATCH.fullmatch(name) is not None


def _entry(d, key: str, where: str):
    if not isinstance(d, dict):
        raise DataError(f"{where} holds a {type(d).__name__}, expected a dict of a CIFAR-10 batch")
    for k in (key.encode(), key):  # byte keys in the official files, str if re-pickled by Python 3
        if k in d:
            return d[k]
    raise DataError(f"{where} has no {key!r} entry (found {sorted(map(repr, d))})")


def _parse_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...] | None]:
    batch = unpickle_batch(data, where)
    pixels = _entry(batch, "data", where)
    labels = _entry(batch, "labels", where)
    if not (isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8
            and pixels.ndim == 2 and pixels.shape[1] == _ROW):
        raise DataError(f"{where}: 'data' must be a uint8 array of shape (N, {_ROW}), got "
                        f"{getattr(pixels, 'dtype', type(pixels).__name__)} "
                        f"{getattr(pixels, 'shape', '')}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: 'labels' must be a list of integers")
    if len(labels) != len(pixels):
        raise DataError(f"{where}: {len(pixels)} images but {len(labels)} labels")
    images = pixels.reshape(-1, 3, _SIDE, _SIDE).transpose(0, 2, 3, 1)  # planes -> (H, W, 3)
    return images, labels.astype(np.int64), _file_names(batch, len(labels))


def _file_names(batch: dict, n: int) -> tuple[str, ...] | None:
    """The batch's ``filenames`` (each image's name, e.g. ``leptodactylus_pentadactylus_s_000004.png``),
    or None when it has none or not one text per image (they only name the rows)."""
    names = next((batch[k] for k in (b"filenames", "filenames") if k in batch), None)
    try:
        names = tuple(v.decode("utf-8") if isinstance(v, bytes) else v for v in names)
    except (TypeError, UnicodeDecodeError):
        return None
    return names if len(names) == n and all(isinstance(v, str) for v in names) else None


def _parse_meta(data: bytes, where: str) -> tuple[str, ...]:
    # Only label_names is used: num_cases_per_batch and num_vis may lie, sizes come from the data.
    names = _entry(unpickle_batch(data, where), "label_names", where)
    try:
        names = tuple(n.decode("utf-8") if isinstance(n, bytes) else n for n in names)
    except (TypeError, UnicodeDecodeError):
        names = None
    if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise DataError(f"{where}: 'label_names' must be a list of distinct non-empty names")
    return names


def read_cifar_batches(files: Mapping[str, tuple[str, Callable[[], bytes]]]):
    """Read the official batches.

    Parameters
    ----------
    files : mapping
        File name (``data_batch_1`` ...) to ``(where, read)``: a description of the file for
        messages and a function returning its bytes.

    Returns
    -------
    train_images, train_labels, test_images, test_labels, class_names, train_names, test_names
        The names are the batches' ``filenames`` (None where a batch has none).
    """
    train_ids = sorted(int(m.group(1)) for m in map(_TRAIN_BATCH.fullmatch, files) if m)
    where_all = ", ".join(sorted(files))
    if not train_ids or _TEST not in files or _META not in files:
        raise DataError(f"incomplete CIFAR-10 batches (found {where_all}): expected "
                        f"data_batch_1..5, test_batch and batches.meta")
    if train_ids != list(range(1, len(train_ids) + 1)):
        raise DataError(f"CIFAR-10 training batches must be numbered data_batch_1 .. "
                        f"data_batch_{max(train_ids)} without gaps, found {train_ids}")
    if len(train_ids) < _OFFICIAL_TRAIN_BATCHES:
        missing = ", ".join(f"data_batch_{i}" for i in range(len(train_ids) + 1, _OFFICIAL_TRAIN_BATCHES + 1))
        warn = (missing, len(train_ids))
    else:
        warn = None
    class_names = _parse_meta(files[_META][1](), files[_META][0])
    parts = [_parse_batch(files[f"data_batch_{i}"][1](), files[f"data_batch_{i}"][0])
             for i in train_ids]
    # concatenate keeps the transposed layout of its inputs: ask for C order explicitly.
    train_images = np.ascontiguousarray(np.concatenate([p[0] for p in parts]))
    train_labels = np.concatenate([p[1] for p in parts])
    train_names = None if any(p[2] is None for p in parts) else tuple(n for p in parts for n in p[2])
    if warn is not None:  # a copy that lost its last batches would otherwise train on less, silently
        warnings.warn(f"CIFAR-10: {warn[0]} missing (the official set has data_batch_1..{_OFFICIAL_TRAIN_BATCHES}): "
                      f"training on the {len(train_labels):,} images of data_batch_1..{warn[1]}; copy or "
                      f"download the full set for all 50,000", UserWarning, stacklevel=2)
    test_images, test_labels, test_names = _parse_batch(files[_TEST][1](), files[_TEST][0])
    test_images = np.ascontiguousarray(test_images)
    for split, labels in (("training", train_labels), ("test", test_labels)):
        if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise DataError(f"CIFAR-10 {split} labels range over {labels.min()}..{labels.max()} "
                            f"but batches.meta names {len(class_names)} classes")
    return train_images, train_labels, test_images, test_labels, class_names, train_names, test_names

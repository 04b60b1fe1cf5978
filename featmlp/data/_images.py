"""Image files: listing folders and archives, class layouts, the scan of their headers (decoding: _decode.py)."""

from __future__ import annotations

import hashlib
import itertools
import os
import stat
import warnings
from array import array
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import UnidentifiedImageError

from ..errors import DataError
from ..progress import null_progress
from ._archive import read_archive as _read_archive
from ._files import DEFAULT_MAX_FILE_BYTES, PathBlob, not_regular, too_large
from ._decode import decode_image, header_size, size_text
from ._image_array import SKIP_HINT, ImageArray, read_blobs, read_or_error
from ._manifest import Container, Manifest, ManifestBuilder
from ._names import ARCHIVE_SUFFIXES, TextNames, is_junk

# Largest image decoded (env FEATMLP_MAX_IMAGE_PIXELS): Pillow's own MAX_IMAGE_PIXELS, the
# size at which it starts to warn of a decompression bomb (89.5 Mpx, 268 MB as RGB), made
# an error checked on the header; Pillow itself only refuses twice that (179 Mpx).
DEFAULT_MAX_PIXELS = 89_478_485

LAYOUT_HELP = ("expected an image folder, or a .zip/.tar/.tar.gz/.tgz archive of one, laid out as "
               "ROOT/<class>/<images> (split into train and test by test_fraction) or as "
               "ROOT/train/<class>/<images> plus ROOT/test/<class>/<images> (ROOT/test/<class>/<images> alone: "
               "every image a test image, to score a saved model)")
_SPLITS = ("train", "test")
_PROGRESS_EVERY = 1024
# Files read together while listing (one batch of requests on object storage, see read_blobs).
_READ_BATCH = 64
_READ_BATCH_BYTES = 64 << 20


class _Scanner:
    """Reads each file once while listing: its hash, its size from the header, (skip_bad) a full decode."""

    def __init__(self, image_size, progress, total: int, skip_bad: bool, max_pixels: int):
        self.image_size, self.skip_bad, self.max_pixels = image_size, skip_bad, max_pixels
        self.progress = progress or null_progress
        self.total, self.done = total, 0
        self.first: tuple[str, tuple[int, int]] | None = None  # first file and its (H, W)
        self.sizes: Counter = Counter()  # (H, W) -> how many images have it
        self.skipped: list[tuple[str, str]] = []

    def _problem(self, where: str, data: bytes) -> tuple[str | None, tuple[int, int] | None]:
        """(reason it cannot be used, None) or (None, its (H, W) once decoded)."""
        try:
            w, h = header_size(data)
        except UnidentifiedImageError:
            return "not an image", None
        except Exception as e:  # Pillow reports broken headers with many exception types
            return f"unreadable ({type(e).__name__}: {e})", None
        if w * h > self.max_pixels:
            return (f"{w}x{h} = {w * h / 1e6:.1f} Mpx, over the limit of {self.max_pixels / 1e6:.1f} Mpx "
                    f"per image (FEATMLP_MAX_IMAGE_PIXELS, max_image_pixels=)"), None
        if self.skip_bad:
            try:
                decode_image(data, where, self.image_size)
            except DataError as e:
                return f"truncated or corrupt ({str(e.__cause__ or e)})", None
        return None, (self.image_size[::-1] if self.image_size is not None else (h, w))

    def scan(self, files):
        """Positions of the usable files of ``files`` (a Manifest) and their SHA-256 digests ``(k, 32)``."""

        kept, digests = array("q"), bytearray()
        for start, blobs in _batches(files):
            try:
                datas = read_blobs(blobs)
            except DataError:
                if not self.skip_bad:
                    raise
                datas = [read_or_error(blob) for blob in blobs]  # the one that fails is skipped
            for k, data in enumerate(datas):
                where = files.name(start + k)
                if isinstance(data, DataError):  # skip_bad: gone, no permission, turned into a FIFO ...
                    reason, hw = str(data).removeprefix(f"cannot read image {where}: "), None
                else:
                    reason, hw = self._problem(where, data)
                self.done += 1
                if self.done % _PROGRESS_EVERY == 0 or self.done == self.total:
                    self.progress("read", self.done, self.total)
                if reason is not None:
                    if self.skip_bad:
                        self.skipped.append((where, reason))
                        continue
                    if reason == "not an image":
                        reason = "not a readable image (Pillow cannot identify it)"
                    raise DataError(f"cannot read image {where}: {reason}; {SKIP_HINT}")
                self.check_size(where, hw)
                kept.append(start + k)
                digests += hashlib.sha256(data).digest()
        return np.array(kept, np.intp), np.frombuffer(digests, np.uint8).reshape(-1, 32)

    def check_size(self, where: str, hw: tuple[int, int]) -> None:
        """Remember the first image's (H, W) and count each size."""
        if self.first is None:
            self.first = (where, hw)
        self.sizes[hw] += 1

    def shape(self, image_size, *, every_size_known: bool = True, mixed_size=None):
        """``((H, W), size to resize to or None)`` of the ImageArray these images make.

        ``image_size`` given: that. One size: it, nothing resized. Several sizes: ``mixed_size``
        (width, height) if given, else the most common (:func:`common_size`), and one warning
        saying how many images are resized to it. Without ``every_size_known`` (only the first
        image was read: URLs, tar shards) every image is resized to the first image's size when
        it has another.
        """
        if image_size is not None:
            return tuple(image_size)[::-1], image_size
        if self.first is None:
            return (0, 0), None
        if not every_size_known:
            h, w = self.first[1]
            return (h, w), (w, h)
        if len(self.sizes) == 1:
            return self.first[1], None
        total = sum(self.sizes.values())
        if mixed_size is not None:
            (w, h), why = mixed_size, "the size the feature set takes them at"
        else:
            (h, w), why = common_size(self.sizes), f"the most common of their {len(self.sizes)} sizes"
        n = total - self.sizes[(h, w)]
        warnings.warn(f"resized {n} of {total} images to {w}x{h} (width x height, Pillow bilinear), {why}; "
                      f"image_size=(W, H) chooses another size", UserWarning, stacklevel=2)
        return (h, w), (w, h)


def common_size(sizes) -> tuple[int, int]:
    """The size images of different sizes are resized to: the most common ``(H, W)`` of ``sizes``
    (a Counter), on a tie the larger area, then the wider.

    Examples
    --------
    >>> common_size(Counter({(64, 64): 3, (92, 75): 1}))
    (64, 64)
    >>> common_size(Counter({(10, 20): 2, (20, 20): 2, (20, 10): 2}))
    (20, 20)
    """
    return max(sizes, key=lambda hw: (sizes[hw], hw[0] * hw[1], hw[1]))


def _batches(files):
    """``(start, blobs)`` of the files read together: up to _READ_BATCH files or _READ_BATCH_BYTES
    of them, by the sizes the listing gives; files of unknown size (on disk) one at a time."""
    start, n = 0, len(files)
    while start < n:
        blobs, total = [], 0
        while start + len(blobs) < n and len(blobs) < _READ_BATCH:
            blob = files.blob(start + len(blobs))
            size = getattr(blob, "size", None)
            if size is None or (blobs and total + size > _READ_BATCH_BYTES):
                if not blobs:
                    blobs.append(blob)
                break
            total += size
            blobs.append(blob)
        yield start, blobs
        start += len(blobs)


# --------------------------------------------------------------------------- reading files


class FolderFiles(Container):
    """The files under a folder on disk, each at its name (valid text) under ``root``."""

    def __init__(self, root: Path):
        self.root = str(root)

    def blob(self, rel, offset, size):
        return PathBlob(os.path.join(self.root, rel), rel)  # a str: pathlib would intern each part


def list_folder(root: Path, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> Manifest:
    """Every non-hidden file under ``root``, keyed by its relative path; read when decoded.

    Only regular files (and symlinks to them) are listed. The others are found here, from their
    ``stat`` alone (nothing is opened: a FIFO would block, a device never end), and kept apart
    as the manifest's ``special``: ``(key, reason, is_dir)`` of each FIFO, device, socket,
    dangling symlink, symlink loop and symlink to a directory (never followed: no loops, no
    walk out of the tree); :func:`group_by_class` refuses those that sit where images are
    taken, or lists them as skipped.
    """
    files = ManifestBuilder()
    here = files.add(FolderFiles(root))
    text = TextNames(str(root))
    special = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root).parts
        kept = []
        for d in sorted(dirnames):
            if is_junk((d,)):
                continue
            path = os.path.join(dirpath, d)
            if os.path.islink(path):  # os.walk does not follow it: say so instead of leaving it out
                special.append(("/".join(text(rel + (d,))), not_regular(path) or "a symlink to a directory", True))
            else:
                kept.append(d)
        dirnames[:] = kept
        for f in sorted(filenames):
            if is_junk((f,)):
                continue
            path = os.path.join(dirpath, f)  # not a Path: pathlib interns every part it parses
            raw = rel + (f,)
            parts = text(raw)
            where = "/".join(parts)
            try:
                st = os.stat(path)
                size = st.st_size
            except OSError:
                st, size = None, 0  # a dangling symlink or a loop (told apart next), else reported when read
            if st is None or not stat.S_ISREG(st.st_mode):
                reason = not_regular(path)
                if reason is not None:
                    special.append((where, reason, False))
                    continue
            if size > max_file_bytes:
                raise too_large(f"{root}/{where}", size, max_file_bytes)
            if parts == raw:
                files.append(here, where, -1, size)
            else:  # bytes that are not UTF-8 in its path: the text does not lead to the file
                files.append_blob(where, PathBlob(path, where))
    listed = files.build()
    listed.special = tuple(special)
    return listed


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def read_archive(path: Path, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES, shown: str | None = None) -> Manifest:
    """Every regular, non-hidden file of a zip or tar archive, keyed by its path in it.

    The archive is verified to its end, but its members are not held in memory (see
    :mod:`featmlp.data._archive`). Nothing is written to disk but a temporary file, so
    member names cannot escape anywhere. Messages name it ``shown`` (default ``path``).
    """
    shown = shown or str(path)
    return _read_archive(path, TextNames(shown), is_junk=is_junk, max_file_bytes=max_file_bytes, shown=shown)


# --------------------------------------------------------------------------- layouts

def group_by_class(files: Manifest, where: str, *, skip_bad: bool = False, skipped: list | None = None):
    """The files of an image folder by split, in the dataset's order, and the class names.

    Returns ``({"train": (files, rows, labels), "test": (...)}, class_names)`` for the split
    layout or ``({None: (...)}, class_names)`` without one: ``rows`` are positions in ``files``,
    ``labels`` index the sorted class names, and each split's files (a Manifest) are ordered
    by class, then by name. Files directly in ROOT (a README) and top-level folders other than
    train/test in the split layout (a ``valid/``) are ignored. Files nested deeper under a
    class folder belong to that class. One top-level folder that holds everything
    (``cifar/train/cat/1.jpg``) is dropped from the names; files directly in it
    (``cifar/README.md``) then sit in ROOT and are ignored.

    ``files`` is keyed by the files' paths (one name each); it is read twice as text, a file at
    a time, so grouping holds no object per file.

    The files ``files.special`` lists (see :func:`list_folder`: FIFOs, devices, bad symlinks)
    count for the layout as files (a symlink to a directory as a folder of files); those that
    sit where images are taken are refused with a DataError naming them, before any file is
    read, or with ``skip_bad`` appended to ``skipped`` as ``(file, reason)``.
    """
    special = getattr(files, "special", ())
    # a symlink to a directory stands for the files that would be in it
    special_keys = [key + "/*/*/*" if is_dir else key for key, _, is_dir in special]
    outer, inner, deep = set(), set(), False  # folders at the top, and one level down
    for key in itertools.chain(files.iter_keys(), special_keys):
        parts = key.split("/")
        if len(parts) >= 2:
            outer.add(parts[0])
            if len(parts) >= 3:
                deep = True
                inner.add(parts[1])
    wrapped = len(outer) == 1 and outer.isdisjoint(_SPLITS) and deep
    tops = inner if wrapped else outer
    split = not tops.isdisjoint(_SPLITS)
    test_only = split and "train" not in tops  # every image a test image: a labelled folder to score
    if split and not test_only and "test" not in tops:
        have, lack = sorted(tops & set(_SPLITS)), sorted(set(_SPLITS) - tops)
        raise DataError(f"{where} has {have[0]}/ but no {lack[0]}/ folder with images; "
                        f"{LAYOUT_HELP}")
    depth = 2 if split else 1  # class folder, then at least the file name
    wrapper = next(iter(outer)) if wrapped else None
    _special_files(special, special_keys, wrapper, split, depth, skip_bad, skipped)
    keys = _SPLITS if split else (None,)
    found: dict = {key: {} for key in keys}  # split -> {class: None}, in the order found
    ids: dict[str, int] = {}  # class -> its number, over both splits
    rows, split_of, class_of = array("q"), array("b"), array("i")
    for i, key in enumerate(files.iter_keys()):
        parts = key.split("/")[1:] if wrapped else key.split("/")
        if len(parts) <= depth or (split and parts[0] not in _SPLITS):
            continue
        s = _SPLITS.index(parts[0]) if split else 0
        cls = parts[depth - 1]
        found[keys[s]].setdefault(cls)
        rows.append(i)
        split_of.append(s)
        class_of.append(ids.setdefault(cls, len(ids)))
    classes = found["test" if test_only else "train" if split else None]
    if len(classes) < 2:
        found_text = f"only the class {next(iter(classes))!r}" if classes else "no class folders"
        raise DataError(f"{where}: found {found_text}; a classifier needs at least two classes. "
                        f"{LAYOUT_HELP}")
    if split:
        if not found["test"]:
            raise DataError(f"{where}: test/ has no class folders with images; {LAYOUT_HELP}")
        extra = sorted(set(found["test"]) - set(classes))
        if extra:
            raise DataError(f"{where}: test/ has classes that train/ lacks: {extra}")
    class_names = tuple(sorted(classes))
    label = {c: k for k, c in enumerate(class_names)}
    label_of = np.array([label[c] for c in ids], np.int64)  # every class is a train class (checked)
    rows, split_of = np.array(rows, np.intp), np.array(split_of, np.int8)
    labels = label_of[np.array(class_of, np.intp)] if len(rows) else np.zeros(0, np.int64)
    drop = next(iter(outer)) + "/" if wrapped else ""
    out = {}
    for s, key in enumerate(keys):
        mine = np.flatnonzero(split_of == s)
        mine = mine[np.argsort(labels[mine], kind="stable")]  # class by class, as listed
        chosen = _by_name(files, rows[mine], labels[mine])
        out[key] = files.take(chosen, drop=drop), chosen, labels[mine]
    return out, class_names


def _special_files(special, keys, wrapper, split: bool, depth: int, skip_bad: bool, skipped) -> None:
    """Refuse the special files (:func:`list_folder`) that sit where images are taken, or list them as skipped."""

    taken = []
    for (key, reason, _), pseudo in zip(special, keys):
        parts = pseudo.split("/")
        if wrapper is not None:
            if parts[0] != wrapper:
                continue
            parts, key = parts[1:], key[len(wrapper) + 1:] or key
        if len(parts) <= depth or (split and parts[0] not in _SPLITS):
            continue  # beside the classes (ROOT/README, a valid/ folder): not read, like any file there
        taken.append((key, reason))
    if not taken:
        return
    if not skip_bad:
        key, reason = taken[0]
        more = f" (and {len(taken) - 1} more such file{'s' if len(taken) > 2 else ''})" if len(taken) > 1 else ""
        raise DataError(f"cannot read image {key}: {reason}; only regular files are read{more}; {SKIP_HINT}")
    if skipped is not None:
        skipped.extend(taken)


def _by_name(files: Manifest, rows: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``rows`` sorted by key within each run of one label (the order of the names as text).

    A folder is listed in name order already, except files nested deeper in a class folder,
    so each class is first checked (a pass over its keys) and sorted only when it needs to.
    UTF-8 bytes sort as the text does (code point order; the keys hold no surrogates).
    """
    rows = rows.copy()
    runs = np.flatnonzero(np.diff(labels)) + 1
    for a, z in zip(np.r_[0, runs].tolist(), np.r_[runs, len(rows)].tolist()):
        previous = b""
        for key in files.iter_keys(rows[a:z], text=False):
            if key < previous:
                rows[a:z] = sorted(rows[a:z].tolist(), key=files.key_bytes)
                break
            previous = key
    return rows


def scan_groups(splits, image_size, progress, *, skip_bad: bool = False,
                max_pixels: int = DEFAULT_MAX_PIXELS, mixed_size=None):
    """Read the headers of grouped files: ``{split: (ImageArray, labels)}`` and the skipped files.

    ``splits`` is what :func:`group_by_class` gives. Every file is read once, in the order of
    its split (hashed, its size taken from its header); with ``skip_bad`` it is also decoded,
    and files that fail are left out and listed as ``(file, reason)``.
    """

    total = sum(len(files) for files, _, _ in splits.values())
    scanner = _Scanner(image_size, progress, total, skip_bad, max_pixels)
    scanned = {}
    for key, (files, _, labels) in splits.items():
        kept, digests = scanner.scan(files)
        if len(kept) < len(files):
            files, labels = files.take(kept), labels[kept]
        scanned[key] = files, digests, labels
    (h, w), resize = scanner.shape(image_size, mixed_size=mixed_size)
    out = {key: (ImageArray(files, digests, h, w, resize), labels)
           for key, (files, digests, labels) in scanned.items()}
    return out, tuple(scanner.skipped)


def scan_listed(splits, image_size, progress, *, skip_bad: bool = False,
                max_pixels: int = DEFAULT_MAX_PIXELS, mixed_size=None):
    """Images known from a listing: ``{split: (ImageArray, labels)}`` and the skipped files.

    ``splits`` is ``{split: (files, labels, digests)}``: a Manifest in the order the images
    keep, their labels, and the SHA-256 of each file's listing (its size, ETag or modification
    time), which stands for its content. Only the first image is read, for the size of all (an
    image of another size is resized to it when its chunk is decoded); the ImageArray digests hash
    the listing, not the bytes (``digests_from="listing"``), so nothing else is read. With
    ``skip_bad`` every image is read and decoded as :func:`scan_groups` does, and hashed by its
    bytes.
    """

    total = sum(len(files) for files, _, _ in splits.values())
    scanner = _Scanner(image_size, progress, total, skip_bad, max_pixels)
    out = {}
    if skip_bad:
        for key, (files, labels, _) in splits.items():
            kept, digests = scanner.scan(files)
            if len(kept) < len(files):
                files, labels = files.take(kept), labels[kept]
            out[key] = files, digests, labels
        from_ = "content"
    else:
        first = next((files for files, _, _ in splits.values() if len(files)), None)
        if first is not None:
            name = first.name(0)
            reason, hw = scanner._problem(name, first.blob(0).read())
            if reason is not None:
                if reason == "not an image":
                    reason = "not a readable image (Pillow cannot identify it)"
                raise DataError(f"cannot read image {name}: {reason}; {SKIP_HINT}")
            scanner.check_size(name, hw)
        out = {key: (files, digests, labels) for key, (files, labels, digests) in splits.items()}
        progress = progress or null_progress
        progress("read", total, total)
        from_ = "listing"
    (h, w), resize = scanner.shape(image_size, every_size_known=skip_bad, mixed_size=mixed_size)
    arrays = {key: (ImageArray(files, digests, h, w, resize, digests_from=from_), labels)
              for key, (files, digests, labels) in out.items()}
    return arrays, tuple(scanner.skipped)

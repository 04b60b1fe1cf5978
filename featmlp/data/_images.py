"""Image files: decoding with Pillow, reading folders and archives in memory, class layouts."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps

from ..errors import ConfigError, DataError
from ..progress import null_progress

# One file of an image folder: its path split into parts, and its bytes (archives) or its
# path on disk (folders, read when decoded).
FileData = Union[bytes, Path]
Files = list[tuple[tuple[str, ...], FileData]]

LAYOUT_HELP = ("expected an image folder, or a .zip/.tar/.tar.gz/.tgz archive of one, laid out as "
               "ROOT/<class>/<images> (split into train and test by test_fraction) or as "
               "ROOT/train/<class>/<images> plus ROOT/test/<class>/<images>")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ARCHIVE_SUFFIXES = (".zip",) + TAR_SUFFIXES
_JUNK_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini"}
_SPLITS = ("train", "test")
_PROGRESS_EVERY = 1024


def check_image_size(image_size) -> tuple[int, int] | None:
    """``None`` or a ``(width, height)`` pair of positive ints (ConfigError otherwise).

    Width first, as in Pillow's ``Image.size`` and the CLI's ``--image-size WxH``; the
    arrays it produces are ``(height, width, 3)``.
    """
    if image_size is None:
        return None
    try:
        w, h = image_size
        if int(w) != w or int(h) != h or w < 1 or h < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"image_size must be (width, height) with two positive integers, "
                          f"got {image_size!r}") from None
    return int(w), int(h)


# --------------------------------------------------------------------------- decoding

def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        # Pillow's convert("RGB") clips these to 0..255 instead of scaling, which turns a
        # 16-bit image white; keep the top 8 bits instead.
        a = np.asarray(im)
        if im.mode.startswith("I;16") or (im.mode == "I" and a.max() > 255):
            a = np.clip(a, 0, 65535).astype(np.uint16) >> 8
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L").convert("RGB")
    return im.convert("RGB")  # L, 1, P (palette, with transparency), RGBA/LA (alpha dropped), CMYK ...


def decode_image(data: FileData, where: str,
                 image_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode one image file to an ``(H, W, 3)`` uint8 RGB array (read-only view).

    ``image_size`` is ``(width, height)``; when given and different, the image is resized
    with Pillow's bilinear filter.
    """
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
            if "exif" in im.info:  # cheap test first: most images carry no orientation tag
                im = ImageOps.exif_transpose(im)
            im = _to_rgb(im)
            if image_size is not None and im.size != image_size:
                im = im.resize(image_size, Image.Resampling.BILINEAR)
            return np.asarray(im)
    except FileNotFoundError:
        raise DataError(f"cannot read image {where}: no such file") from None
    except Exception as e:  # Pillow reports broken files with many exception types
        raise DataError(f"cannot read image {where}: not a readable image "
                        f"({type(e).__name__}: {e})") from e


def _size_text(shape) -> str:
    return f"{shape[1]}x{shape[0]}"  # array shape (H, W, ...) as WxH


class _Decoder:
    """Decodes many images into one preallocated array, checking they share one size."""

    def __init__(self, image_size, progress, total: int):
        self.image_size = image_size
        self.progress = progress or null_progress
        self.total, self.done = total, 0
        self.first: tuple[str, tuple[int, int]] | None = None  # first file and its size

    def decode(self, items: list[tuple[str, FileData]]) -> np.ndarray:
        out = None
        for i, (where, data) in enumerate(items):
            img = decode_image(data, where, self.image_size)
            if self.first is None:
                self.first = (where, img.shape[:2])
            if img.shape[:2] != self.first[1]:
                h, w = self.first[1]
                raise DataError(
                    f"images have different sizes (width x height): {self.first[0]} is "
                    f"{_size_text(self.first[1])} but {where} is {_size_text(img.shape)}; pass "
                    f"image_size=(width, height), e.g. image_size=({w}, {h}) (CLI: --image-size "
                    f"{w}x{h}), to resize every image to one size (Pillow bilinear)")
            if out is None:
                out = np.empty((len(items),) + img.shape, np.uint8)
            out[i] = img
            self.done += 1
            if self.done % _PROGRESS_EVERY == 0 or self.done == self.total:
                self.progress("decode", self.done, self.total)
        if out is None:
            h, w = self.first[1] if self.first else (self.image_size or (0, 0))[::-1]
            out = np.empty((0, h, w, 3), np.uint8)
        return out


def read_images(paths, *, image_size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """Read image files as RGB arrays, e.g. to predict on new images.

    Every format Pillow reads works; grayscale, palette, RGBA (alpha dropped) and 16-bit
    images are converted to 8-bit RGB, and EXIF orientation is applied.

    Parameters
    ----------
    paths : path or iterable of paths
    image_size : (width, height), optional
        Resize every image to this size (Pillow bilinear); by default sizes are kept.

    Returns
    -------
    list of ndarray
        One ``(H, W, 3)`` uint8 array per path, in order.

    Raises
    ------
    DataError
        If a file is missing or not a readable image; the message names the file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "gray.png"
    >>> Image.new("L", (40, 24), 128).save(p)
    >>> [a.shape for a in read_images([p])]
    [(24, 40, 3)]
    """
    image_size = check_image_size(image_size)
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    return [np.array(decode_image(Path(p), str(p), image_size)) for p in paths]


# --------------------------------------------------------------------------- reading files

def _parts(name: str) -> tuple[str, ...] | None:
    # Archives made on Windows sometimes use backslashes; "./x" and "x" are the same file.
    parts = tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))
    if not parts or ".." in parts:
        return None
    return parts


def _is_junk(parts: tuple[str, ...]) -> bool:
    """Hidden files (.DS_Store, ._AppleDouble), macOS resource folders, Windows thumbnails."""
    return any(p.startswith(".") or p in _JUNK_NAMES for p in parts)


def list_folder(root: Path) -> Files:
    """Every non-hidden file under ``root``, as (relative path parts, path)."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _is_junk((d,)))
        rel = Path(dirpath).relative_to(root).parts
        files.extend((rel + (f,), Path(dirpath, f)) for f in sorted(filenames)
                     if not _is_junk((f,)))
    return files


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def read_archive(path: Path) -> Files:
    """Every regular, non-hidden file of a zip or tar archive, read into memory.

    Nothing is written to disk, so member names cannot escape anywhere.
    """
    lower = path.name.lower()
    files: Files = []
    try:
        if lower.endswith(".zip") or (not lower.endswith(TAR_SUFFIXES) and zipfile.is_zipfile(path)):
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    parts = _parts(info.filename)
                    if not info.is_dir() and parts and not _is_junk(parts):
                        files.append((parts, zf.read(info)))
        else:
            # Members are read in archive order: a gzip stream is only fast read forwards.
            with tarfile.open(path, "r:*") as tf:
                for member in tf:
                    parts = _parts(member.name)
                    if member.isfile() and parts and not _is_junk(parts):
                        files.append((parts, tf.extractfile(member).read()))
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as e:
        raise DataError(f"cannot read archive {path}: {type(e).__name__}: {e}") from e
    return files


# --------------------------------------------------------------------------- layouts

def _strip_wrapper(files: Files) -> Files:
    """Drop one top-level folder that holds everything (``cifar/train/cat/1.jpg``).

    Files directly in the wrapper (``cifar/README.md``) then sit in ROOT and are ignored.
    """
    in_dirs = [(p, d) for p, d in files if len(p) >= 2]
    tops = {p[0] for p, _ in in_dirs}
    if len(tops) == 1 and tops.isdisjoint(_SPLITS) and any(len(p) >= 3 for p, _ in in_dirs):
        return [(p[1:], d) for p, d in in_dirs]
    return files


def group_by_class(files: Files, where: str):
    """Group an image folder's files by split and class.

    Returns ``{"train": {class: [(name, data)]}, "test": {...}}`` for the split layout or
    ``{None: {class: [...]}}`` without one. Files directly in ROOT (a README) and top-level
    folders other than train/test in the split layout (a ``valid/``) are ignored. Files
    nested deeper under a class folder belong to that class.
    """
    files = _strip_wrapper(files)
    tops = {p[0] for p, _ in files if len(p) >= 2}
    split = not tops.isdisjoint(_SPLITS)
    if split and not set(_SPLITS) <= tops:
        have, lack = sorted(tops & set(_SPLITS)), sorted(set(_SPLITS) - tops)
        raise DataError(f"{where} has {have[0]}/ but no {lack[0]}/ folder with images; "
                        f"{LAYOUT_HELP}")
    groups: dict = {s: {} for s in _SPLITS} if split else {None: {}}
    depth = 2 if split else 1  # class folder, then at least the file name
    for parts, data in files:
        if len(parts) <= depth or (split and parts[0] not in _SPLITS):
            continue
        key = parts[0] if split else None
        groups[key].setdefault(parts[depth - 1], []).append(("/".join(parts), data))
    classes = groups["train" if split else None]
    if len(classes) < 2:
        found = f"only the class {next(iter(classes))!r}" if classes else "no class folders"
        raise DataError(f"{where}: found {found}; a classifier needs at least two classes. "
                        f"{LAYOUT_HELP}")
    if split:
        if not groups["test"]:
            raise DataError(f"{where}: test/ has no class folders with images; {LAYOUT_HELP}")
        extra = sorted(set(groups["test"]) - set(classes))
        if extra:
            raise DataError(f"{where}: test/ has classes that train/ lacks: {extra}")
    for by_class in groups.values():
        for items in by_class.values():
            items.sort(key=lambda item: item[0])
    return groups


def decode_groups(groups, image_size, progress):
    """Decode grouped files; returns ``{split: (images, labels)}`` and the class names.

    Images come in class order, then file-name order within a class.
    """
    class_names = tuple(sorted(groups["train" if "train" in groups else None]))
    total = sum(len(items) for by_class in groups.values() for items in by_class.values())
    decoder = _Decoder(image_size, progress, total)
    out = {}
    for key, by_class in groups.items():
        items, labels = [], []
        for k, name in enumerate(class_names):
            items += by_class.get(name, [])
            labels += [k] * len(by_class.get(name, []))
        out[key] = decoder.decode(items), np.asarray(labels, dtype=np.int64)
    return out, class_names

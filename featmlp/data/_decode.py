"""Decoding image files: Pillow, simplejpeg for plain JPEGs, sizes from headers, user-facing reads."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .._validation import Field, check
from ..errors import ConfigError, DataError
from ._files import read_regular_file

# What decode_image reads: encoded bytes, or a path on disk.
FileData = Union[bytes, Path]


# Width first, as in Pillow's ``Image.size`` and the CLI's ``--image-size WxH``; the arrays made
# are (height, width, 3).
IMAGE_SIZE = Field("image_size", "resize every image to this (width, height), with Pillow's bilinear filter")


def image_size_pair(image_size) -> tuple[int, int] | None:
    """An ``image_size`` :data:`IMAGE_SIZE` accepted, as None or two Python ints."""
    return None if image_size is None else tuple(int(v) for v in image_size)


def check_image_size(image_size) -> tuple[int, int] | None:
    """``None`` or a ``(width, height)`` pair of positive ints (ConfigError otherwise)."""
    check({"image_size": image_size}, {"image_size": IMAGE_SIZE})
    return image_size_pair(image_size)


def _to_rgb(im: Image.Image, where: str = "image") -> Image.Image:
    """``im`` as 8-bit RGB. Images of more than 8 bits a value are scaled by one rule, never clipped:

    - 16-bit (``I;16``) and 32-bit integer (``I``) images: values 0 to 65535, divided by 257 and
      rounded (65535 is 255); an ``I`` image with values outside 0..65535 is refused;
    - floating-point (``F``) images: values in [0, 1], multiplied by 255 and rounded; other
      values (a float TIFF of raw counts up to 1e6, negative values, NaN) are refused with one
      line saying to convert the image: there is no scale to guess them by.

    Pillow's own ``convert("RGB")`` clips them to 0..255, which turns such images white.
    """
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        a = np.asarray(im)
        if im.mode == "F":
            a = a.astype(np.float64)
            if not np.isfinite(a).all():
                raise DataError(f"cannot read image {where}: a floating-point image (mode F) holding NaN or "
                                f"infinite values: convert it to an 8- or 16-bit image")
            lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
            if lo < 0 or hi > 1:
                raise DataError(f"cannot read image {where}: a floating-point image (mode F) with values from "
                                f"{lo:g} to {hi:g}; featmlp reads float images whose values lie in [0, 1] "
                                f"(times 255): convert it to an 8- or 16-bit image, or scale it into [0, 1]")
            a = np.rint(a * 255)
        else:
            a = a.astype(np.int64)
            lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
            if lo < 0 or hi > 65535:
                raise DataError(f"cannot read image {where}: a 32-bit integer image (mode I) with values from "
                                f"{lo} to {hi}; featmlp reads integer images of 0 to 65535 (16 bits, divided "
                                f"by 257): convert it to an 8- or 16-bit image")
            a = np.rint(a / 257)
        return Image.fromarray(a.astype(np.uint8), "L").convert("RGB")
    return im.convert("RGB")  # L, 1, P (palette, with transparency), RGBA/LA (alpha dropped), CMYK ...


_simplejpeg = None  # the module once imported; False when it is not installed


JPEG_DECODER_ENV = "FEATMLP_JPEG_DECODER"


def jpeg_decoder() -> str:
    """``$FEATMLP_JPEG_DECODER``, checked: ``"pillow"`` (every image decoded by Pillow) or ``"auto"``
    (unset, ``auto`` or ``simplejpeg``: simplejpeg where it can); anything else, a typo such as
    ``pilow``, is a :class:`ConfigError` rather than silently the default."""
    value = os.environ.get(JPEG_DECODER_ENV, "")
    choice = value.strip().lower()
    if choice in ("", "auto", "simplejpeg"):
        return "auto"
    if choice == "pillow":
        return "pillow"
    raise ConfigError(f"{JPEG_DECODER_ENV}={value!r} is not one of: pillow (decode every image with Pillow), "
                      f"simplejpeg or auto (simplejpeg where it can, the default); or unset it")


def _fast_jpeg_decoder():
    """simplejpeg's decode function, or None (not installed, or FEATMLP_JPEG_DECODER=pillow)."""
    global _simplejpeg
    if os.environ.get(JPEG_DECODER_ENV, "").strip().lower() == "pillow":
        return None
    if _simplejpeg is None:
        try:  # imported on first use: it is optional, and the CLI's start-up stays as fast
            import simplejpeg
        except ImportError:
            _simplejpeg = False
        else:
            _simplejpeg = simplejpeg
    return _simplejpeg or None


# JPEG start-of-frame markers (baseline, progressive, lossless ...), which hold the size.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_header(data: bytes) -> tuple[tuple[int, int] | None, bool] | None:
    """``((width, height) or None, has EXIF)`` of a JPEG, walking its header segments to the scan.

    The size is the frame header's; EXIF is an APP1 "Exif" block anywhere before the scan (its
    orientation may rotate the image). None when the header cannot be walked: Pillow decides.
    """
    i, n = 2, len(data)
    size, exif = None, False
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker == 0xDA:  # start of scan: every header segment has been seen
            return size, exif
        if marker == 0xE1 and data[i + 4:i + 8] == b"Exif":
            exif = True
        elif marker in _SOF and i + 9 <= n:
            h, w = int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
            size = (w, h) if w and h else None
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def _decode_fast_jpeg(data: bytes, image_size) -> np.ndarray | None:
    """The RGB pixels of a plain JPEG by simplejpeg, or None: Pillow decodes it instead.

    simplejpeg is libjpeg-turbo with the settings Pillow uses (accurate integer DCT, smooth
    chroma upsampling), so the pixels are the same as Pillow's, several times faster for
    small images (benchmarks/bench_decode.py). Files with EXIF (which may rotate them), CMYK
    and YCCK files (Pillow converts those itself) and anything simplejpeg refuses go to Pillow.
    """
    if data[:3] != b"\xff\xd8\xff":
        return None
    sj = _fast_jpeg_decoder()
    header = _jpeg_header(data) if sj is not None else None
    if header is None or header[1]:  # EXIF (a rotation to apply) or an unusual header: Pillow
        return None
    try:
        h, w, colorspace, _ = sj.decode_jpeg_header(data)
        # Images big enough for Pillow's decompression-bomb warning or error get them from Pillow.
        if colorspace not in ("YCbCr", "Gray") or (Image.MAX_IMAGE_PIXELS and h * w > Image.MAX_IMAGE_PIXELS):
            return None
        # Gray comes out as R = G = B = the gray level, as Pillow's convert("RGB") gives it.
        a = sj.decode_jpeg(data, "RGB", fastdct=False, fastupsample=False)
    except Exception:  # truncated or unusual files: Pillow decides (and reports) what they are
        return None
    if image_size is not None and (a.shape[1], a.shape[0]) != tuple(image_size):
        a = np.asarray(Image.fromarray(a, "RGB").resize(image_size, Image.Resampling.BILINEAR))
    a.flags.writeable = False  # like the view of a Pillow image that the other path returns
    return a


def decode_image(data: FileData, where: str,
                 image_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode one image file to an ``(H, W, 3)`` uint8 RGB array (read-only view).

    ``image_size`` is ``(width, height)``; when given and different, the image is resized
    with Pillow's bilinear filter. JPEG files without EXIF are decoded by ``simplejpeg``
    when it is installed (``pip install featmlp[fast]``; the same pixels as Pillow's,
    faster); set the environment variable ``FEATMLP_JPEG_DECODER=pillow`` to decode every
    file with Pillow.
    """
    if not isinstance(data, bytes):  # one read serves both decoders; a regular file only (no FIFO, no device)
        data = read_regular_file(data, where)
    try:
        fast = _decode_fast_jpeg(data, image_size)
        if fast is not None:
            return fast
        with Image.open(io.BytesIO(data)) as im:
            if "exif" in im.info:  # cheap test first: most images carry no orientation tag
                im = ImageOps.exif_transpose(im)
            im = _to_rgb(im, where)
            if image_size is not None and im.size != image_size:
                im = im.resize(image_size, Image.Resampling.BILINEAR)
            return np.asarray(im)
    except DataError:  # an image of values featmlp has no rule to scale (see _to_rgb)
        raise
    except UnidentifiedImageError as e:  # its message names our in-memory buffer, not the file
        raise DataError(f"cannot read image {where}: not a readable image (Pillow cannot identify it)") from e
    except Exception as e:  # Pillow reports broken files with many exception types
        raise DataError(f"cannot read image {where}: not a readable image "
                        f"({type(e).__name__}: {e})") from e


def size_text(shape) -> str:
    return f"{shape[1]}x{shape[0]}"  # array shape (H, W, ...) as WxH


_ORIENTATION = 0x0112
_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height



def _quick_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a plain JPEG or PNG read from its first bytes; None: ask Pillow.

    Pillow's JPEG header reader parses every table in Python (~60 us a file, as long as
    decoding a 32x32 image); this walks the header segments only. Anything it is unsure of, and
    every file with EXIF (which may rotate it), goes to Pillow.
    """
    if data[:2] == b"\xff\xd8":
        header = _jpeg_header(data)
        return header[0] if header is not None and not header[1] else None
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        i = 8
        while i + 8 <= len(data):  # an eXIf chunk before the pixels is applied: ask Pillow then
            kind = data[i + 4:i + 8]
            if kind == b"IDAT":
                w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
                return (w, h) if w and h else None
            if kind == b"eXIf":
                return None
            i += 12 + int.from_bytes(data[i:i + 4], "big")
    return None


def header_size(data: bytes) -> tuple[int, int]:
    """(width, height) as decoded, from the header alone (no pixels are decoded)."""
    quick = _quick_size(data)
    if quick is not None:
        return quick
    with warnings.catch_warnings():
        # Our own pixel cap is checked on this size next; Pillow's warning would only repeat it.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = Image.open(io.BytesIO(data))
    with im:
        w, h = im.size
        # Same test as decode_image: the orientation is applied when the header carries EXIF.
        if "exif" in im.info and im.getexif().get(_ORIENTATION) in _TRANSPOSED:
            w, h = h, w
        return w, h


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

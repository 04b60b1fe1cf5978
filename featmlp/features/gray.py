"""Grayscale exactly as PIL's ``Image.convert('L')`` makes it: the texture and HOG features' input.

The lecture read its pixels through PIL, so the features are computed on PIL's rounding of
``0.299 R + 0.587 G + 0.114 B``; a numba kernel reproduces it bit for bit, a batch at a time.
"""

from __future__ import annotations

import numba
import numpy as np

from ._numba import threaded_and_serial
from ..progress import announce_compiles

announce_compiles()  # a line while a kernel below compiles (once per install: cache=True)


def _rgb_to_gray_py(rgb, gray):
    # PIL's convert('L'): L = (R*19595 + G*38470 + B*7471 + 0x8000) >> 16 (ITU-R 601-2).
    n, H, W, _ = rgb.shape
    for i in numba.prange(n):
        for r in range(H):
            for c in range(W):
                gray[i, r, c] = (np.int32(rgb[i, r, c, 0]) * 19595 + np.int32(rgb[i, r, c, 1]) * 38470
                                 + np.int32(rgb[i, r, c, 2]) * 7471 + 0x8000) >> 16


# Threaded for this process, serial for worker processes (see _numba.py).
_rgb_to_gray, _rgb_to_gray_serial = threaded_and_serial(_rgb_to_gray_py)


def to_gray(images: np.ndarray, *, parallel: bool = True) -> np.ndarray:
    """Grayscale exactly as PIL's ``Image.convert('L')`` does it.

    Parameters
    ----------
    images : ndarray, shape (N, H, W, 3) or (N, H, W), uint8
        RGB images, or grayscale images (returned unchanged).
    parallel : bool
        Use all of numba's threads (False: this thread only).

    Returns
    -------
    ndarray, shape (N, H, W), uint8

    Examples
    --------
    >>> to_gray(np.array([[[[255, 0, 0]]]], dtype=np.uint8))[0, 0, 0]
    np.uint8(76)
    """
    if images.ndim == 3:
        return images
    gray = np.empty(images.shape[:3], dtype=np.uint8)
    (_rgb_to_gray if parallel else _rgb_to_gray_serial)(np.ascontiguousarray(images), gray)
    return gray

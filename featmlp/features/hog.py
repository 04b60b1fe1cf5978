"""Histogram of oriented gradients (HOG) of the grayscale image, for a whole batch at once.

The reference is scikit-image run one image at a time on the PIL grayscale image
(``convert('L')``, as for the lecture's features)::

    hog(gray, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2),
        block_norm="L2-Hys", feature_vector=True)

which is, step by step (skimage/feature/_hog.py and _hoghistogram.pyx):

1. gradients by central differences, ``g_row[r] = x[r + 1] - x[r - 1]`` and
   ``g_col[c] = x[c + 1] - x[c - 1]``, zero on the image's border rows/columns;
2. magnitude ``hypot(g_col, g_row)``; orientation
   ``rad2deg(arctan2(g_row, g_col)) % 180`` in degrees, unsigned;
3. cells of 8x8 pixels (``H // 8`` by ``W // 8``; the last ``H % 8`` rows and
   ``W % 8`` columns only feed gradients): each pixel adds its magnitude to the
   one of 9 bins of 20 degrees that holds its orientation, ``[20 i, 20 (i + 1))``
   (no interpolation between bins or cells); the sum is kept in **float32**, as
   scikit-image's ``cdef float total`` does, then divided by the cell's 64 pixels;
4. blocks of 2x2 cells, stride one cell; each block's 36 values ``v`` become
   ``v / sqrt(sum v**2 + eps**2)``, clipped at 0.2, renormalised the same way
   (``L2-Hys``, ``eps = 1e-5``);
5. the output is ordered (block row, block column, cell row, cell column, orientation).

For H x W images that is ``(H // 8 - 1) * (W // 8 - 1) * 36`` values: 324 for 32x32.
Column names spell the position out: ``hog_b{block row}_{block col}_c{cell row}_{cell col}_o{bin}``;
images smaller than 16x16 have no block and are refused (scikit-image raises too).

Gradients of 8-bit images are integers in -255..255, so each pixel's orientation bin
and magnitude come from tables built once with numpy's own arithmetic (the same bits
as scikit-image's; no integer gradient lies within 5e-4 degrees of a bin edge anyway).
The per-cell sums replay scikit-image's float32 accumulation in its order (row by
row within a cell), so results agree to rounding of the final normalisation (1e-15).
The averaging matters only through ``eps``: a sum in place of the average moves
values by ~1e-10 on faint or real images (the tests compare to 1e-13 to see it).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .columns import BLOCK, CELL, ORIENTATIONS
from .columns import HOG_NAMES as NAMES
from .columns import hog_grid as grid
from .columns import hog_names as names
from .gray import to_gray
from ._numba import threaded_and_serial
from ..progress import announce_compiles

announce_compiles()  # a line while a kernel below compiles (once per install: cache=True)

CLIP = 0.2  # L2-Hys clipping
_EPS2 = 1e-5**2  # scikit-image's eps**2 in _hog_normalize_block
_MAX_GRAD = 255

_TABLES = None


def _tables() -> tuple[np.ndarray, np.ndarray]:
    """Orientation bin and magnitude of every integer gradient, as scikit-image computes them.

    ``bins[(g_row + 255) * 511 + g_col + 255]`` uses scikit-image's expressions (numpy's
    arctan2, rad2deg and float remainder, and its bin edges ``180 / 9 * i``). ``mags[|g_row| * 256 + |g_col|]`` is ``np.hypot``: a table lookup is 3.5x
    faster than calling ``hypot`` per pixel, and ``sqrt(a*a + b*b)`` differs from it in the
    last bit for 0.5% of gradients.
    """
    global _TABLES  # constants: built once per process (about 10 ms)
    if _TABLES is None:
        g = np.arange(-_MAX_GRAD, _MAX_GRAD + 1, dtype=np.float64)
        g_row, g_col = np.meshgrid(g, g, indexing="ij")
        orientation = np.rad2deg(np.arctan2(g_row, g_col)) % 180
        bins = np.full(orientation.shape, -1, dtype=np.int8)
        per_bin = 180.0 / ORIENTATIONS
        for i in range(ORIENTATIONS):
            bins[(orientation < per_bin * (i + 1)) & (orientation >= per_bin * i)] = i
        assert (bins >= 0).all()  # every orientation lies in [0, 180)
        a = np.arange(_MAX_GRAD + 1, dtype=np.float64)
        _TABLES = bins.ravel(), np.hypot(a[:, None], a[None, :]).ravel()
    return _TABLES


@numba.njit(cache=True, nogil=True)
def _hog_range(gray, out, start, stop, bin_table, mag_table):
    """HOG of images ``start:stop`` of ``gray`` (N, H, W) into ``out``."""
    _, H, W = gray.shape
    n_cr, n_cc = H // CELL, W // CELL
    n_br, n_bc = n_cr - BLOCK + 1, n_cc - BLOCK + 1
    span = 2 * _MAX_GRAD + 1
    # Scratch space allocated once per call, reused for every image.
    hist = np.empty(n_cr * n_cc * ORIENTATIONS, dtype=np.float32)
    n_c = n_cc * CELL
    g_row = np.empty(n_c, dtype=np.int32)
    g_col = np.empty(n_c, dtype=np.int32)
    block = np.empty(BLOCK * BLOCK * ORIENTATIONS)
    cell_px = float(CELL * CELL)
    for img in range(start, stop):
        g = gray[img]
        hist[:] = 0
        for r in range(n_cr * CELL):
            # Row r's gradients as whole-row loops (they vectorise); zero on the border.
            if 0 < r < H - 1:
                up = g[r - 1]
                down = g[r + 1]
                for c in range(n_c):
                    g_row[c] = np.int32(down[c]) - np.int32(up[c])
            else:
                g_row[:] = 0
            row = g[r]
            g_col[0] = 0
            last = min(n_c, W - 1)
            for c in range(1, last):
                g_col[c] = np.int32(row[c + 1]) - np.int32(row[c - 1])
            if last < n_c:
                g_col[last] = 0  # the image's last column lies in a cell when W % 8 == 0
            row_base = (r // CELL) * n_cc
            for c in range(n_c):
                k = (row_base + c // CELL) * ORIENTATIONS
                k += bin_table[(g_row[c] + _MAX_GRAD) * span + g_col[c] + _MAX_GRAD]
                # scikit-image's `total += magnitude` into a C float: add in double, round to
                # float32. Going along the row keeps its order (row by row within a cell).
                m = mag_table[abs(g_row[c]) * (_MAX_GRAD + 1) + abs(g_col[c])]
                hist[k] = np.float32(np.float64(hist[k]) + m)
        o = 0
        for br in range(n_br):
            for bc in range(n_bc):
                j = 0
                for cr in range(BLOCK):
                    for cc in range(BLOCK):
                        base = ((br + cr) * n_cc + bc + cc) * ORIENTATIONS
                        for q in range(ORIENTATIONS):
                            block[j] = hist[base + q] / cell_px  # exact: a power of two
                            j += 1
                ss = 0.0
                for j in range(block.shape[0]):
                    ss += block[j] * block[j]
                norm = math.sqrt(ss + _EPS2)
                ss = 0.0
                for j in range(block.shape[0]):
                    v = min(block[j] / norm, CLIP)
                    block[j] = v
                    ss += v * v
                norm = math.sqrt(ss + _EPS2)
                for j in range(block.shape[0]):
                    out[img, o + j] = block[j] / norm
                o += block.shape[0]


def _hog_batch_py(gray, out, bin_table, mag_table, n_threads):
    # Each thread's share of the images; the serial build takes n_threads=1: all of them.
    n = gray.shape[0]
    per = (n + n_threads - 1) // n_threads
    for t in numba.prange(n_threads):
        _hog_range(gray, out, t * per, min(n, (t + 1) * per), bin_table, mag_table)


# Threaded for this process, serial for worker processes (see _numba.py).
_hog_batch, _hog_batch_serial = threaded_and_serial(_hog_batch_py)


def hog_features(images: np.ndarray, *, parallel: bool = True) -> np.ndarray:
    """HOG of the grayscale image (9 orientations, 8x8 cells, 2x2 blocks, L2-Hys), batched.

    Parameters
    ----------
    images : ndarray, shape (N, H, W, 3) or (N, H, W), uint8
        RGB images (converted to grayscale as PIL's ``convert('L')``) or grayscale
        images, all of one size, at least 16x16.
    parallel : bool
        Split the batch over numba's threads (False: compute in this thread only).

    Returns
    -------
    ndarray, shape (N, (H // 8 - 1) * (W // 8 - 1) * 36), float64
        Columns in the order of :func:`names` ``(H, W)``; equal to
        ``skimage.feature.hog(gray, 9, (8, 8), (2, 2), "L2-Hys")`` of each image.

    References
    ----------
    .. [1] N. Dalal, B. Triggs, "Histograms of oriented gradients for human
       detection", CVPR 2005.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    >>> hog_features(x).shape
    (4, 324)
    """
    gray = to_gray(images, parallel=parallel)
    n, H, W = gray.shape
    _, _, n_br, n_bc = grid(H, W)
    out = np.empty((n, n_br * n_bc * BLOCK * BLOCK * ORIENTATIONS), dtype=np.float64)
    if n == 0:
        return out
    bins, mags = _tables()
    gray = np.ascontiguousarray(gray)
    if parallel:
        _hog_batch(gray, out, bins, mags, max(1, min(numba.get_num_threads(), n)))
    else:
        _hog_batch_serial(gray, out, bins, mags, 1)
    return out

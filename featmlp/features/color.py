"""A small colour descriptor: RGB statistics and HSV histograms, 22 values per image.

==============================  ================================================================
columns                         definition (per image, over all its pixels)
==============================  ================================================================
color_mean_r, _g, _b            mean of the channel, in pixel units 0..255 (``np.mean``)
color_std_r, _g, _b             its population standard deviation (``np.std``, ddof 0)
color_hue_0 .. color_hue_7      ``np.histogram(h, 8, range=(0, 1))`` as fractions: bin k holds
                                hues in [45 k, 45 (k + 1)) degrees (the last bin includes 360)
color_sat_0 .. color_sat_3      the same for saturation s with 4 bins of width 0.25
color_val_0 .. color_val_3      the same for value v with 4 bins of width 0.25
==============================  ================================================================

``h, s, v`` are ``skimage.color.rgb2hsv(image)``, which works on the image as float64
``x * (1 / 255)`` (``img_as_float``): ``v = max``, ``s = (max - min) / max`` (0 where
``max == min``), ``h = (sector + difference / (max - min)) / 6 % 1`` with the sector of the
largest channel (blue over green over red on ties), 0 where ``max == min``. Each pixel is
converted with those float64 operations in that order, so a hue that lands exactly on a bin
edge (for example ``(4, 3, 0)``: 45 degrees) falls into the same bin as with scikit-image.
Each histogram's fractions sum to 1. A grayscale batch ``(N, H, W)`` is read as R = G = B.
"""

from __future__ import annotations

import numba
import numpy as np

from .columns import COLOR_NAMES as NAMES
from .columns import HUE_BINS, SAT_BINS, VAL_BINS
from ._numba import threaded_and_serial
from ..progress import announce_compiles

announce_compiles()  # a line while a kernel below compiles (once per install: cache=True)

_INV_255 = 1.0 / 255  # img_as_float multiplies by this (not a division by 255)


@numba.njit(cache=True, inline="always")
def _bin(x, n_bins):
    # np.histogram with range (0, 1): the edges k / n_bins are exact and so is x * n_bins
    # (a power of two), so the floor is the bin; 1.0 belongs to the last one.
    k = int(x * n_bins)
    return n_bins - 1 if k >= n_bins else k


@numba.njit(cache=True, nogil=True)
def _color_range(rgb, out, start, stop):
    """Features of images ``start:stop`` of ``rgb`` (N, pixels, 3) into ``out``."""
    n_px = rgb.shape[1]
    counts = np.zeros(HUE_BINS + SAT_BINS + VAL_BINS, dtype=np.int64)
    for img in range(start, stop):
        x = rgb[img]
        counts[:] = 0
        s_r = 0
        s_g = 0
        s_b = 0
        for p in range(n_px):
            R = np.int64(x[p, 0])
            G = np.int64(x[p, 1])
            B = np.int64(x[p, 2])
            s_r += R
            s_g += G
            s_b += B
            # skimage.color.rgb2hsv's float64 operations, in its order.
            r = R * _INV_255
            g = G * _INV_255
            b = B * _INV_255
            v = max(r, g, b)
            delta = v - min(r, g, b)
            if delta == 0.0:
                s = 0.0
                h = 0.0
            else:
                s = delta / v
                if b == v:  # later assignments win in rgb2hsv: blue, then green, then red
                    h = 4.0 + (r - g) / delta
                elif g == v:
                    h = 2.0 + (b - r) / delta
                else:
                    h = (g - b) / delta
                h = (h / 6.0) % 1.0  # numba's float % is Python's, as is numpy's
            counts[_bin(h, HUE_BINS)] += 1
            counts[HUE_BINS + _bin(s, SAT_BINS)] += 1
            counts[HUE_BINS + SAT_BINS + _bin(v, VAL_BINS)] += 1
        # Two passes for the deviation, as np.std does (no cancellation for flat images).
        m_r = s_r / n_px
        m_g = s_g / n_px
        m_b = s_b / n_px
        q_r = 0.0
        q_g = 0.0
        q_b = 0.0
        for p in range(n_px):
            d = x[p, 0] - m_r
            q_r += d * d
            d = x[p, 1] - m_g
            q_g += d * d
            d = x[p, 2] - m_b
            q_b += d * d
        o = out[img]
        o[0] = m_r
        o[1] = m_g
        o[2] = m_b
        o[3] = np.sqrt(q_r / n_px)
        o[4] = np.sqrt(q_g / n_px)
        o[5] = np.sqrt(q_b / n_px)
        for k in range(counts.shape[0]):
            o[6 + k] = counts[k] / n_px


def _color_batch_py(rgb, out, n_threads):
    # Each thread's share of the images; the serial build takes n_threads=1: all of them.
    n = rgb.shape[0]
    per = (n + n_threads - 1) // n_threads
    for t in numba.prange(n_threads):
        _color_range(rgb, out, t * per, min(n, (t + 1) * per))


# Threaded for this process, serial for worker processes (see _numba.py).
_color_batch, _color_batch_serial = threaded_and_serial(_color_batch_py)


def color_features(images: np.ndarray, *, parallel: bool = True) -> np.ndarray:
    """Mean and deviation of R, G, B and HSV histograms (8 hue, 4 saturation, 4 value bins).

    Parameters
    ----------
    images : ndarray, shape (N, H, W, 3) or (N, H, W), uint8
        RGB images, or grayscale ones (read as R = G = B). All of one size.
    parallel : bool
        Split the batch over numba's threads (False: compute in this thread only).

    Returns
    -------
    ndarray, shape (N, 22), float64
        Columns in the order of :data:`NAMES` (see the module's docstring).

    Examples
    --------
    >>> red = np.zeros((1, 4, 4, 3), dtype=np.uint8)
    >>> red[..., 0] = 255
    >>> f = dict(zip(NAMES, color_features(red)[0]))
    >>> f["color_mean_r"], f["color_hue_0"], f["color_sat_3"], f["color_val_3"]
    (np.float64(255.0), np.float64(1.0), np.float64(1.0), np.float64(1.0))
    """
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    n = images.shape[0]
    out = np.empty((n, len(NAMES)), dtype=np.float64)
    if n == 0:
        return out
    flat = np.ascontiguousarray(images).reshape(n, -1, 3)
    if parallel:
        _color_batch(flat, out, max(1, min(numba.get_num_threads(), n)))
    else:
        _color_batch_serial(flat, out, 1)
    return out

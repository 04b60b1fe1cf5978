"""The lecture's nine texture features, computed for a whole batch at once.

The lecture computed, for each image's grayscale version (PIL ``convert('L')``
read through ``getdata()``, so an int64 array):

==  ==========================  ==================================================
#   name                        definition (scikit-image, one image at a time)
==  ==========================  ==================================================
1   lbp_energy                  ``local_binary_pattern(gray, P=5, R=2, 'uniform')``,
2   lbp_entropy                 ``np.histogram(lbp, 8)``; p = counts / sum;
                                energy = sum p**2, entropy = -sum p log2 p (p > 0)
3   glcm_contrast               ``graycomatrix(gray, [2], [0], levels=256,
4   glcm_dissimilarity          symmetric=True, normed=True)`` then
5   glcm_homogeneity            ``graycoprops`` of each property
6   glcm_energy
7   glcm_correlation
8   gabor_energy                ``gabor(gray, frequency=0.6)`` -> real, imag (int64,
9   gabor_entropy               truncated); magnitude = (real**2 + imag**2) // 2;
                                8-bin histogram energy and entropy as for LBP
==  ==========================  ==================================================

scikit-image computes each of these for one image with its own pass over the
pixels (about 550 images/s for all nine on one core here). Here one compiled
kernel (numba) makes a single pass per image over data that stays in the L1
cache, with the batch split across threads. Plain vectorised numpy was tried
first: the Gabor filter alone needs ~90 multiply-adds per pixel, i.e. ~180
full-array passes per batch, which is memory-bound and ~10x too slow for the
100x goal (see ``benchmarks/bench_features.py``).

Every arithmetic step that decides a discrete outcome is done in the same order
and precision as the reference, so results match scikit-image to rounding:

- LBP samples are bilinear interpolations in float64 with the same operation
  order as scikit-image's Cython ``bilinear_interpolation`` (zero outside the
  image), compared with the centre pixel as scikit-image does.
- The Gabor responses are accumulated tap by tap in scipy.ndimage's order
  (``convolve`` with ``mode='reflect'``) and truncated toward zero to integers,
  which is what happens to an int64 input in the original (the lecture's quirk,
  kept on purpose so the features are the lecture's).
- Histogram bins follow ``np.histogram``'s algorithm for equal bins, edges from
  ``np.linspace`` over the image's own min..max.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ._numba import threaded_and_serial
from .columns import TEXTURE_NAMES as NAMES
from .gray import to_gray
from ..progress import announce_compiles

announce_compiles()  # a line while a kernel below compiles (once per install: cache=True)

# The lecture's parameters, one place each.
LBP_POINTS = 5
LBP_RADIUS = 2.0
HIST_BINS = 8
GLCM_DISTANCE = 2  # angle 0: pairs (r, c) and (r, c + 2)
GLCM_LEVELS = 256
GABOR_FREQUENCY = 0.6

# scikit-image's LBP compares ``texture - centre >= -1e-12`` (its guard against
# float noise); see skimage/feature/_texture.pyx.
_LBP_EPS = 1e-12


def _lbp_offsets(P: int = LBP_POINTS, R: float = LBP_RADIUS) -> tuple[np.ndarray, np.ndarray]:
    """Sample offsets exactly as scikit-image computes them (rounded to 5 decimals)."""
    k = np.arange(P, dtype=np.float64)
    rp = np.round(-R * np.sin(2 * np.pi * k / P), 5)
    cp = np.round(R * np.cos(2 * np.pi * k / P), 5)
    return rp, cp


def _gabor_kernel(frequency: float = GABOR_FREQUENCY) -> np.ndarray:
    """``skimage.filters.gabor_kernel(frequency)`` (theta=0, bandwidth=1, n_stds=3).

    Written out so that scikit-image stays a test-only dependency; the test suite
    checks it equals scikit-image's kernel bit for bit.
    """
    b = 1.0
    sigma = np.sqrt(np.log(2) / 2) / np.pi * (2.0**b + 1) / (2.0**b - 1) / frequency
    ct, st = math.cos(0.0), math.sin(0.0)
    x0 = math.ceil(max(abs(3 * sigma * ct), abs(3 * sigma * st), 1))
    y0 = math.ceil(max(abs(3 * sigma * ct), abs(3 * sigma * st), 1))
    y, x = np.meshgrid(np.arange(-y0, y0 + 1), np.arange(-x0, x0 + 1), indexing="ij", sparse=True)
    rotx = x * ct + y * st
    roty = -x * st + y * ct
    g = np.empty(roty.shape, dtype=np.complex128)
    np.exp(-0.5 * (rotx**2 / sigma**2 + roty**2 / sigma**2) + 1j * (2 * np.pi * frequency * rotx + 0), out=g)
    g *= 1 / (2 * np.pi * sigma * sigma)
    return g


def _convolve_taps(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The taps scipy.ndimage.convolve uses, in the order it sums them.

    ``convolve`` correlates with the flipped kernel and skips weights with
    ``|w| <= DBL_EPSILON``; output (r, c) sums ``w[i, j] * x[r + i - kr, c + j - kc]``
    over the remaining taps in C order.
    """
    flipped = weights[::-1, ::-1]
    kr, kc = flipped.shape[0] // 2, flipped.shape[1] // 2
    keep = np.abs(flipped) > np.finfo(np.float64).eps
    ii, jj = np.nonzero(keep)  # C order
    return (ii - kr).astype(np.int64), (jj - kc).astype(np.int64), flipped[ii, jj].astype(np.float64)


def _reflect_index(n: int, pad: int) -> np.ndarray:
    """Index map of scipy.ndimage's 'reflect' mode (d c b a | a b c d | d c b a)."""
    idx = np.arange(-pad, n + pad)
    period = 2 * n
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - 1 - idx, idx).astype(np.int64)


@numba.njit(cache=True, inline="always")
def _hist_edges(vmin, vmax, edges):
    """``np.histogram``'s range (own min..max, widened by 0.5 if empty) and edges."""
    first = float(vmin)
    last = float(vmax)
    if first == last:
        first -= 0.5
        last += 0.5
    nb = edges.shape[0] - 1
    step = (last - first) / nb
    for k in range(nb):
        edges[k] = k * step + first  # np.linspace's arithmetic
    edges[nb] = last
    return first, nb / (last - first)


@numba.njit(cache=True, inline="always")
def _bin_of(v, first, scale, edges):
    """np.histogram's bin of ``v``: estimate, then correct against the exact edges.

    The estimate may be one bin off (numpy's may too); the corrections make the
    result the bin with ``edges[i] <= v < edges[i + 1]`` (last bin closed) either way.
    """
    nb = edges.shape[0] - 1
    idx = int((v - first) * scale)
    if idx >= nb:
        idx = nb - 1
    if v < edges[idx]:
        idx -= 1
    if idx != nb - 1 and v >= edges[idx + 1]:
        idx += 1
    return idx


@numba.njit(cache=True, inline="always")
def _energy_entropy(counts, n):
    energy = 0.0
    entropy = 0.0
    for k in range(counts.shape[0]):
        if counts[k] > 0:
            p = counts[k] / n
            energy += p * p
            entropy -= p * math.log2(p)
    return energy, entropy


@numba.njit(cache=True, inline="always")
def _hist_energy_entropy(values, n, vmin, vmax, counts, edges):
    """Energy and entropy of ``np.histogram(values[:n], 8)``."""
    first, scale = _hist_edges(vmin, vmax, edges)
    counts[:] = 0
    for t in range(n):
        counts[_bin_of(float(values[t]), first, scale, edges)] += 1
    return _energy_entropy(counts, n)


@numba.njit(cache=True, inline="always")
def _hist_energy_entropy_small(value_counts, vmin, vmax, n, counts, edges):
    """The same for small non-negative integer values given as ``value_counts[v]``."""
    first, scale = _hist_edges(vmin, vmax, edges)
    counts[:] = 0
    for v in range(value_counts.shape[0]):
        if value_counts[v] > 0:
            counts[_bin_of(float(v), first, scale, edges)] += value_counts[v]
    return _energy_entropy(counts, n)


@numba.njit(cache=True, inline="always")
def _accumulate_taps(src, acc, offsets, weights):
    """``acc[j] = sum_k src[j + offsets[k]] * weights[k]``, summed tap by tap.

    Tap-outer order gives every output the same summation order as
    scipy.ndimage's correlate loop (so truncation to int64 agrees), while the
    inner loop over outputs vectorises.
    """
    n = acc.shape[0]
    acc[:] = 0.0
    for k in range(weights.shape[0]):
        shifted = src[offsets[k]:offsets[k] + n]  # a slice: see the LBP loop's note
        w = weights[k]
        for j in range(n):
            acc[j] += shifted[j] * w


@numba.njit(cache=True, inline="always")
def _lbp_column_weights(lbp_w, lbp_wc, rows, Wz):
    """``1 - dc`` and ``dc`` of each LBP sample for each flat index of a strip (``lbp_w[:, 2:]``).

    Copies of the per-column table (so its values), the same for every strip.
    """
    for i in range(lbp_w.shape[0]):
        for rr in range(rows):
            for c in range(Wz):
                lbp_w[i, 2, rr * Wz + c] = lbp_wc[i, 0, c]
                lbp_w[i, 3, rr * Wz + c] = lbp_wc[i, 1, c]


@numba.njit(cache=True, inline="always")
def _lbp_row_weights(lbp_w, lbp_wr, r0, rows, Wz):
    """``1 - dr`` and ``dr`` of each LBP sample for each flat index of the strip from row ``r0``.

    Copies of the per-row table (so its values). A row's weights are rewritten only
    when they differ from those already there: they change a few times an image (as
    ``r + rp`` crosses a power of two), so a large image's are written a few times
    per image (a one-strip image's once per batch: the caller skips the check).
    """
    for i in range(lbp_w.shape[0]):
        for rr in range(rows):
            a = lbp_wr[i, 0, r0 + rr]
            b = lbp_wr[i, 1, r0 + rr]
            j = rr * Wz
            if lbp_w[i, 0, j] != a or lbp_w[i, 1, j] != b:  # NaN at first: always written
                for c in range(Wz):
                    lbp_w[i, 0, j + c] = a
                    lbp_w[i, 1, j + c] = b


@numba.njit(cache=True, inline="always")
def _texture_one(g, out, zpad, rpad, code, acc_re, acc_im, mag, counts, edges, pair_count, inv_1pd2,
                 lbp_off, lbp_w, lbp_row0, lbp_wr, uniform_lut, gre_off, gre_w, gim_off, gim_w,
                 rmap, cmap, gpad, strip):
    """All nine features of one grayscale image ``g`` into ``out[:9]``.

    The LBP and Gabor loops run over a flattened, padded strip of ``strip`` rows
    (the whole image when it is small): output ``j`` is pixel (j // Wp, j % Wp)
    of the strip and each sample or tap is a fixed flat offset with its own
    per-element weights, so every inner loop is one long contiguous float64 loop
    the compiler vectorises. The columns past the image width are computed and
    ignored. Only the int64 Gabor magnitudes (whose histogram needs their min and
    max first) cover the whole image: ~8 bytes a pixel, not ~200; the float64
    padded strips, accumulators, LBP codes and weights are bounded by the strip.
    """
    H, W = g.shape
    # ---------------- LBP (P=5, R=2, uniform) ----------------
    Wz = W + 6
    centre0 = 3 * Wz + 3
    vc = np.zeros(8, dtype=np.int64)
    for r0 in range(0, H, strip):
        rows = min(strip, H - r0)
        n_lbp = rows * Wz
        # zpad: padded rows r0 .. r0 + rows + 6 (image rows r0 - 3 .. r0 + rows + 3, zero
        # outside the image; its zero columns are never written)
        for k in range(rows + 7):
            r = r0 + k - 3
            if 0 <= r < H:
                for c in range(W):
                    zpad[k * Wz + c + 3] = g[r, c]
            else:
                zpad[k * Wz + 3:k * Wz + 3 + W] = 0.0
        if lbp_row0[0] != r0:  # a one-strip image: once per batch
            _lbp_row_weights(lbp_w, lbp_wr, r0, rows, Wz)
            lbp_row0[0] = r0
        codes = code[:n_lbp]
        codes[:] = 0
        # Slices rather than ``x[j + o]``: numba then sees plain non-negative loop
        # indices, drops its negative-index checks and vectorises (4x measured).
        centre = zpad[centre0:centre0 + n_lbp]
        for i in range(lbp_off.shape[0]):
            o = lbp_off[i]
            tl = zpad[o:o + n_lbp]
            tr = zpad[o + 1:o + 1 + n_lbp]
            bl = zpad[o + Wz:o + Wz + n_lbp]
            br = zpad[o + Wz + 1:o + Wz + 1 + n_lbp]
            w1 = lbp_w[i, 0]  # (1 - dr) per flat index
            w2 = lbp_w[i, 1]  # dr
            w3 = lbp_w[i, 2]  # (1 - dc)
            w4 = lbp_w[i, 3]  # dc
            for j in range(n_lbp):
                # scikit-image's bilinear_interpolation, same operation order; a zero
                # fraction multiplies the next pixel by 0, which leaves the sum exact.
                top = w3[j] * tl[j] + w4[j] * tr[j]
                bottom = w3[j] * bl[j] + w4[j] * br[j]
                tex = w1[j] * top + w2[j] * bottom
                codes[j] |= np.uint8(tex - centre[j] >= -_LBP_EPS) << i
        for rr in range(rows):
            for c in range(W):
                vc[uniform_lut[code[rr * Wz + c]]] += 1
    vmin = 1 << 30
    vmax = -1
    for v in range(8):
        if vc[v] > 0:
            vmin = min(vmin, v)
            vmax = max(vmax, v)
    e, s = _hist_energy_entropy_small(vc, vmin, vmax, H * W, counts, edges)
    out[0] = e
    out[1] = s
    # ---------------- GLCM (distance 2, angle 0, symmetric, normed) ----
    # Properties straight from the pixel pairs: with P = (C + C^T) / 2n,
    # sum P f(i - j) is the mean of f(a - b) over the n ordered pairs.
    npairs = H * max(W - GLCM_DISTANCE, 0)
    if npairs == 0:
        # scikit-image: an all-zero GLCM gives 0 for these, 1 for correlation.
        out[2:6] = 0.0
        out[6] = 1.0
    else:
        s_d2 = 0
        s_ad = 0
        s_h = 0.0
        s_ab = 0
        sq = 0  # sum over GLCM cells of (C + C^T)^2, updated as counts grow
        for r in range(H):
            for c in range(W - GLCM_DISTANCE):
                a = np.int64(g[r, c])
                b = np.int64(g[r, c + GLCM_DISTANCE])
                d = a - b
                s_d2 += d * d
                s_ad += abs(d)
                s_h += inv_1pd2[abs(d)]
                s_ab += a + b
                # cells (a, b) and (b, a) each gain one (cell (a, a) gains two)
                k1 = a * GLCM_LEVELS + b
                k2 = b * GLCM_LEVELS + a
                c1 = pair_count[k1]
                pair_count[k1] = c1 + 1
                c2 = pair_count[k2]
                pair_count[k2] = c2 + 1
                sq += 2 * (c1 + c2) + 2
        tot = 2.0 * npairs
        mean = s_ab / tot
        var = 0.0
        cov = 0.0
        for r in range(H):
            for c in range(W - GLCM_DISTANCE):
                a = np.int64(g[r, c])
                b = np.int64(g[r, c + GLCM_DISTANCE])
                pair_count[a * GLCM_LEVELS + b] = 0  # reset for the next image
                pair_count[b * GLCM_LEVELS + a] = 0
                fa = a - mean
                fb = b - mean
                var += fa * fa + fb * fb
                cov += 2.0 * fa * fb
        out[2] = s_d2 / npairs
        out[3] = s_ad / npairs
        out[4] = s_h / npairs
        out[5] = math.sqrt(sq) / tot
        std = math.sqrt(var / tot)
        out[6] = 1.0 if std < 1e-15 else (cov / tot) / (std * std)
    # ---------------- Gabor (frequency 0.6), int64 responses ----------
    Wp = W + 2 * gpad
    mmin = np.int64(1) << 62
    mmax = np.int64(-1)
    for r0 in range(0, H, strip):
        rows = min(strip, H - r0)
        n_g = rows * Wp
        # rpad: reflect-padded rows r0 .. r0 + rows + 2 gpad - 1 (its last row only
        # feeds columns past the image width)
        for k in range(rows + 2 * gpad):
            r = rmap[r0 + k]
            for c in range(Wp):
                rpad[k * Wp + c] = g[r, cmap[c]]
        _accumulate_taps(rpad, acc_re[:n_g], gre_off, gre_w)
        _accumulate_taps(rpad, acc_im[:n_g], gim_off, gim_w)
        for rr in range(rows):
            for c in range(W):
                # ndimage.convolve's int64 output is a C cast: truncation toward zero
                re = np.int64(acc_re[rr * Wp + c])
                im = np.int64(acc_im[rr * Wp + c])
                m = (re * re + im * im) // 2
                mag[(r0 + rr) * W + c] = m
                mmin = min(mmin, m)
                mmax = max(mmax, m)
    e, s = _hist_energy_entropy(mag, H * W, mmin, mmax, counts, edges)
    out[7] = e
    out[8] = s


def _lecture_batch_py(gray, out, lbp_off, lbp_wr, lbp_wc, uniform_lut, gre_off, gre_w, gim_off, gim_w,
                      rmap, cmap, gpad, strip, n_threads):
    # n_threads comes from Python: numba.get_num_threads() inside would make the
    # function uncacheable (it reads a thread-local through a ctypes pointer).
    n_img, H, W = gray.shape
    per = (n_img + n_threads - 1) // n_threads
    inv_1pd2 = np.empty(GLCM_LEVELS)
    for d in range(GLCM_LEVELS):
        inv_1pd2[d] = 1.0 / (1.0 + d * d)  # graycoprops' homogeneity weight
    for t in numba.prange(n_threads):
        # Scratch space allocated once per thread, reused for every image; all but
        # ``mag`` cover one strip of rows.
        rows = min(strip, H)
        Wz = W + 6
        Wp = W + 2 * gpad
        zpad = np.zeros((rows + 7) * Wz)
        rpad = np.zeros((rows + 2 * gpad + 1) * Wp)
        code = np.empty(rows * Wz, dtype=np.uint8)
        lbp_w = np.full((lbp_off.shape[0], 4, rows * Wz), np.nan)
        _lbp_column_weights(lbp_w, lbp_wc, rows, Wz)
        lbp_row0 = np.full(1, -1, dtype=np.int64)
        acc_re = np.empty(rows * Wp)
        acc_im = np.empty(rows * Wp)
        mag = np.empty(H * W, dtype=np.int64)
        counts = np.zeros(HIST_BINS, dtype=np.int64)
        edges = np.empty(HIST_BINS + 1)
        pair_count = np.zeros(GLCM_LEVELS * GLCM_LEVELS, dtype=np.int64)
        for img in range(t * per, min(n_img, (t + 1) * per)):
            _texture_one(gray[img], out[img], zpad, rpad, code, acc_re, acc_im, mag, counts, edges,
                         pair_count, inv_1pd2, lbp_off, lbp_w, lbp_row0, lbp_wr, uniform_lut,
                         gre_off, gre_w, gim_off, gim_w, rmap, cmap, gpad, strip)


# Threaded for this process, serial for worker processes (see _numba.py).
_lecture_batch, _lecture_batch_serial = threaded_and_serial(_lecture_batch_py)


def _uniform_lut(P: int = LBP_POINTS) -> np.ndarray:
    """LBP 'uniform' value of each P-bit pattern (bit i = sample i >= centre).

    As in scikit-image, transitions are counted between consecutive samples
    only (not circularly): <= 2 transitions -> number of ones, else P + 1.
    """
    codes = np.arange(2**P)
    bits = (codes[:, None] >> np.arange(P)) & 1
    changes = np.sum(bits[:, 1:] != bits[:, :-1], axis=1)
    return np.where(changes <= 2, bits.sum(axis=1), P + 1).astype(np.int64)


def _lbp_tables(H: int, W: int):
    """Flat offsets and interpolation weights of each LBP sample, for an H x W image.

    scikit-image evaluates ``floor(r + rp)`` and ``(r + rp) - floor(r + rp)`` per
    pixel; they depend only on the row (or column), so they are tabulated with
    the same float operations: offsets over the zero-padded flat image of width
    ``W + 6`` that the kernel walks, row weights ``(P, 2, H)`` (``1 - dr``, ``dr``)
    and column weights ``(P, 2, W + 6)`` (``1 - dc``, ``dc``; zero past the image).
    """
    rp, cp = _lbp_offsets()
    Wz = W + 6
    rows = np.arange(H, dtype=np.float64)[None, :] + rp[:, None]
    cols = np.arange(W, dtype=np.float64)[None, :] + cp[:, None]
    r_floor, c_floor = np.floor(rows), np.floor(cols)
    r0 = r_floor - np.arange(H)[None, :]
    c0 = c_floor - np.arange(W)[None, :]
    # floor(r + rp) - r is the same for every row (|rp| <= 2 is far from an integer's ulp)
    assert (r0 == r0[:, :1]).all() and (c0 == c0[:, :1]).all()
    offsets = ((3 + r0[:, 0]) * Wz + (3 + c0[:, 0])).astype(np.int64)
    dr, dc = rows - r_floor, cols - c_floor
    wr = np.stack([1 - dr, dr], axis=1)
    wc = np.zeros((len(rp), 2, Wz))
    wc[:, 0, :W] = 1 - dc
    wc[:, 1, :W] = dc
    return offsets, np.ascontiguousarray(wr), wc


# Output values (over the padded width) a strip of rows holds at most, unless one row is
# wider: a thread's strip scratch is ~200 bytes a value (the per-element LBP weights 160),
# ~0.8 MB, kept in the L2 cache. Images up to ~58x58 (CIFAR's 32x32) are one strip, whose
# weights are written once per batch; larger ones go a few rows at a time, their row
# weights rewritten only where they change. (2**17 values, 256x256 images in one strip,
# measured ~15% slower on large images: the weights no longer stay in the cache.)
_STRIP_VALUES = 1 << 12


_GABOR_TAPS = None


def _gabor_taps(W: int):
    """Flat offsets (over the reflect-padded image of width W + 2 pad) and weights."""
    global _GABOR_TAPS  # the kernel is a constant: compute it once per process
    if _GABOR_TAPS is None:
        k = _gabor_kernel()
        _GABOR_TAPS = (_convolve_taps(np.real(k)), _convolve_taps(np.imag(k)), k.shape[0] // 2)
    (re_dy, re_dx, re_w), (im_dy, im_dx, im_w), pad = _GABOR_TAPS
    Wp = W + 2 * pad
    return (re_dy + pad) * Wp + re_dx + pad, re_w, (im_dy + pad) * Wp + im_dx + pad, im_w, pad


def lecture_features(images: np.ndarray, *, parallel: bool = True) -> np.ndarray:
    """The lecture's nine texture features for a batch of images.

    Parameters
    ----------
    images : ndarray, shape (N, H, W, 3) or (N, H, W), uint8
        RGB images (converted to grayscale as PIL's ``convert('L')``) or
        grayscale images. Any size works; all images in one batch share it.
    parallel : bool
        Split the batch over numba's threads (False: compute in this thread only).

    Returns
    -------
    ndarray, shape (N, 9), float64
        Columns in the order of :data:`NAMES`.

    References
    ----------
    .. [1] T. Ojala, M. Pietikainen, T. Maenpaa, "Multiresolution gray-scale and
       rotation invariant texture classification with local binary patterns",
       IEEE PAMI 24(7), 2002.
    .. [2] R. M. Haralick, K. Shanmugam, I. Dinstein, "Textural features for
       image classification", IEEE SMC 3(6), 1973.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    >>> lecture_features(x).shape
    (4, 9)
    """
    gray = to_gray(images, parallel=parallel)
    n, H, W = gray.shape
    out = np.empty((n, len(NAMES)), dtype=np.float64)
    if n == 0:
        return out
    lbp_off, lbp_wr, lbp_wc = _lbp_tables(H, W)
    re_off, re_w, im_off, im_w, pad = _gabor_taps(W)
    strip = max(1, _STRIP_VALUES // (W + max(6, 2 * pad)))
    kernel = _lecture_batch if parallel else _lecture_batch_serial
    kernel(np.ascontiguousarray(gray), out, lbp_off, lbp_wr, lbp_wc, _uniform_lut(), re_off, re_w,
           im_off, im_w, _reflect_index(H, pad), _reflect_index(W, pad), pad, strip,
           max(1, min(numba.get_num_threads(), n)))
    return out

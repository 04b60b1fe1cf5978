"""Learned patch features: k-means on whitened image patches (Coates, Lee & Ng 2011).

A fitted feature set: :class:`KMeansFeatures` is *fitted* on training images once (patch mean,
ZCA whitening matrix, a dictionary of centroids) and then applied as a pure function of the
images and that state. Applying it to an image:

1. every ``patch_size`` x ``patch_size`` patch (all channels) at ``stride``, as a vector ``x``;
2. brightness / contrast normalisation: ``x = (x - mean(x)) / sqrt(var(x) + norm_eps)``;
3. ZCA whitening: ``x = (x - m) @ W``, ``W = U diag(1 / sqrt(s + whiten_eps)) U^T``;
4. encoding against the K centroids ``c_k``: ``"triangle"`` ``f_k = max(0, mean_j(z_j) - z_k)``
   with ``z_k = |x - c_k|``, or ``"hard"`` (1 for the nearest centroid, else 0);
5. sum pooling over a ``pool`` x ``pool`` grid of image regions (a patch position on a region
   border is shared between the regions by the length of its overlap, so the grid is exactly
   mirror-symmetric), giving ``pool * pool * K`` values;
6. ``f ** power`` (0.5: the signed square root; the values are non-negative).

With ``mirror=True`` the patch sample includes every sampled patch mirrored, the whitening is
made exactly mirror-symmetric and the dictionary is ``[D, mirror(D)]`` (``k / 2`` learned
centroids and their mirror images), so the features of a horizontally flipped image are a fixed
permutation of the columns (:meth:`KMeansFeatures.mirror_permutation`): flip augmentation costs
no extraction.

The state is plain arrays (:meth:`KMeansFeatures.state`), stored in feature files (npz) and
model bundles (safetensors) beside JSON settings, never pickled.

References
----------
.. [1] A. Coates, H. Lee, A. Y. Ng, "An analysis of single-layer networks in unsupervised
   feature learning", AISTATS 2011.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from .._validation import Field, check
from ..errors import ConfigError, DataError
from ._numba import threaded_and_serial
from ..progress import announce_compiles

announce_compiles()  # a line while a kernel below compiles (once per install: cache=True)

ENCODINGS = ("triangle", "hard")

# What each setting of KMeansFeatures accepts (scikit-learn's _parameter_constraints), in the order
# _validate checks them; its messages start "kmeans option " (--feature-option).
FIELDS: dict[str, Field] = {
    "k": Field("int", "dictionary size (centroids)", low=1),
    "patch_size": Field("int", "side of the square patches", low=1),
    "stride": Field("int", "step between patches", low=1),
    "pool": Field("int", "pooling grid: pool x pool regions", low=1),
    "n_iter": Field("int", "k-means iterations", low=0),
    "n_patches": Field("int", "patches sampled to fit on", low=1),
    "seed": Field("int", "seeds the patch sample and the initial centroids", low=0),
    "whiten_eps": Field("number", "ZCA whitening regulariser", low=0, low_open=True),
    "norm_eps": Field("number", "per-patch contrast normalisation regulariser", low=0),
    "power": Field("number", "power applied to the pooled features", low=0, low_open=True),
    "encoding": Field("choice", "triangle or hard assignment", choices=ENCODINGS),
    "mirror": Field("bool", "learn half the centroids and add their mirror images"),
}


def _even_k_rule(s) -> str | None:
    if s["mirror"] and s["k"] % 2:
        return (f"k={s['k']}: with mirror=true the dictionary is k/2 centroids and their mirror images, "
                f"so k must be even (or set mirror=false)")


RULES = (("mirror", _even_k_rule),)

# Values per block of the encoding: bounds the (patches x K) product to 256 MB. Blocks of
# 14 CIFAR images ran at 255 img/s, of 57 at 324 img/s (fewer BLAS calls, threads balanced).
_BLOCK_VALUES = 1 << 26


def _check_images(images) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise DataError(f"images must be uint8 (0..255), got dtype {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DataError(f"images must have shape (N, H, W, 3) RGB or (N, H, W) gray, got {images.shape}")
    return images


def _mirror_dims(p: int, channels: int) -> np.ndarray:
    """Index map of a patch vector (row, col, channel order) mirrored left-right."""
    idx = np.arange(p * p * channels).reshape(p, p, channels)
    return idx[:, ::-1, :].reshape(-1)


def pool_weights(n: int, grid: int) -> np.ndarray:
    """(n, grid) weights of ``n`` positions in ``grid`` equal regions along one axis.

    Position ``i`` covers ``[i, i + 1)`` of ``[0, n)``; its weight in region ``g`` is the
    length of its overlap with ``[g n / grid, (g + 1) n / grid)``. Rows sum to 1; computed in
    integers, so the weights are exactly mirror-symmetric.

    Examples
    --------
    >>> pool_weights(3, 2).tolist()
    [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    """
    # in units of 1 / grid: position i is [i grid, (i + 1) grid), region g is [g n, (g + 1) n)
    i = np.arange(n)[:, None]
    g = np.arange(grid)[None, :]
    overlap = np.minimum((i + 1) * grid, (g + 1) * n) - np.maximum(i * grid, g * n)
    return np.clip(overlap, 0, None) / grid


def _patches(images: np.ndarray, p: int, stride: int) -> np.ndarray:
    """All patches as rows (N * rows * cols, p * p * C) float32, in (row, col, channel) order."""
    win = np.lib.stride_tricks.sliding_window_view(images, (p, p), axis=(1, 2))  # N,r,c,C,p,p
    win = win[:, ::stride, ::stride]
    return np.ascontiguousarray(win.transpose(0, 1, 2, 4, 5, 3), dtype=np.float32).reshape(
        -1, p * p * images.shape[-1])


def _normalise(X: np.ndarray, eps: float) -> np.ndarray:
    """Per-patch brightness and contrast normalisation, in place (float32 rows)."""
    X -= X.mean(axis=1, keepdims=True)
    var = np.einsum("ij,ij->i", X, X) / max(X.shape[1] - 1, 1)  # sample variance, as Coates et al.
    X /= np.sqrt(var + eps)[:, None]
    return X


def _encode_pool_py(S, xx, cc, n_img, nr, nc, wr, wc, hard, out):
    # Fused distance -> encoding -> pooling, one image per iteration: writing the encoded
    # (patches x K) matrix out and pooling it with numpy would pass over ~70 G values for
    # CIFAR-10 at K=1600 several times; here each value is touched once, in cache.
    K = S.shape[1]
    G = wr.shape[1]
    for i in numba.prange(n_img):
        z = np.empty(K, np.float32)
        for a in range(nr):
            for b in range(nc):
                row = (i * nr + a) * nc + b
                x2 = xx[row]
                total = 0.0
                best, best_k = np.inf, 0
                for k in range(K):
                    d2 = x2 + cc[k] - 2.0 * S[row, k]
                    d = math.sqrt(d2) if d2 > 0.0 else 0.0
                    z[k] = d
                    total += d
                    if hard and d < best:
                        best, best_k = d, k
                mu = np.float32(total / K)
                for g in range(G):
                    w1 = wr[a, g]
                    if w1 == 0.0:
                        continue
                    for h in range(G):
                        w = np.float32(w1 * wc[b, h])
                        if w == 0.0:
                            continue
                        if hard:
                            out[i, g, h, best_k] += w
                        else:
                            for k in range(K):
                                v = mu - z[k]
                                if v > 0.0:
                                    out[i, g, h, k] += w * v


_encode_pool, _encode_pool_serial = threaded_and_serial(_encode_pool_py, fastmath=True)


class KMeansFeatures(TransformerMixin, BaseEstimator):
    """Learned patch features: k-means dictionary of whitened patches, triangle encoding, pooling.

    A scikit-learn transformer over images: ``fit(images)`` learns the state from training
    images only, ``transform(images)`` gives ``(N, pool * pool * k)`` float32 features. Usable
    in a :class:`sklearn.pipeline.Pipeline` before a classifier.

    Parameters
    ----------
    k : int
        Dictionary size (with ``mirror``: ``k / 2`` learned centroids and their mirrors; even).
    patch_size : int
        Side of the square patches, in pixels.
    stride : int
        Step between patch positions when encoding.
    pool : int
        Pooling grid: ``pool`` x ``pool`` regions, summed.
    whiten_eps : float
        Added to the eigenvalues in the ZCA whitening (on normalised patches).
    norm_eps : float
        Added to each patch's variance in the brightness / contrast normalisation (pixels 0..255).
    encoding : {"triangle", "hard"}
        How a patch is coded against the centroids.
    n_iter : int
        Lloyd iterations of k-means.
    n_patches : int
        Patches sampled from the training images for whitening and k-means (with ``mirror``,
        half sampled and half their mirror images).
    power : float
        Exponent applied to the pooled values (0.5: square root; 1: none).
    mirror : bool
        Mirror-symmetric sample, whitening and dictionary (see the module docstring).
    seed : int
        Seeds the patch sample and the centroids' start.

    Attributes
    ----------
    mean_ : ndarray (d,)
        Mean of the normalised patches, ``d = patch_size**2 * channels``.
    whitening_ : ndarray (d, d)
        ZCA matrix.
    centroids_ : ndarray (k, d)
        The dictionary, in whitened space.
    image_shape_ : tuple (H, W, C)
        Shape of the images it was fitted on; transform needs the same.
    objective_ : list of float
        Mean squared distance of the sampled patches to their nearest centroid, per iteration.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, size=(20, 16, 16, 3), dtype=np.uint8)
    >>> km = KMeansFeatures(k=8, patch_size=4, pool=2, n_patches=500, n_iter=3).fit(images)
    >>> km.transform(images).shape
    (20, 32)
    """

    def __init__(self, k: int = 1600, patch_size: int = 6, stride: int = 1, pool: int = 3,
                 whiten_eps: float = 0.1, norm_eps: float = 10.0, encoding: str = "triangle",
                 n_iter: int = 10, n_patches: int = 400_000, power: float = 0.5,
                 mirror: bool = True, seed: int = 0):
        self.k = k
        self.patch_size = patch_size
        self.stride = stride
        self.pool = pool
        self.whiten_eps = whiten_eps
        self.norm_eps = norm_eps
        self.encoding = encoding
        self.n_iter = n_iter
        self.n_patches = n_patches
        self.power = power
        self.mirror = mirror
        self.seed = seed

    # -- settings ---------------------------------------------------------------------------

    def _validate(self) -> None:
        check(self.get_params(), FIELDS, RULES, what="kmeans option ")

    def _sampled(self) -> tuple[int, int]:
        """``(centroids learned, patches sampled)``: half of each with ``mirror`` (the other half mirrored)."""
        n_learn = self.k // 2 if self.mirror else self.k
        n_sample = max(self.n_patches // 2, 1) if self.mirror else self.n_patches
        return n_learn, n_sample

    def settings(self) -> dict:
        """The parameters as a JSON-ready dict (what a run records)."""
        return {name: (v.item() if isinstance(v, np.generic) else v)
                for name, v in self.get_params().items()}

    # -- fitting ----------------------------------------------------------------------------

    def fit(self, images, y=None, *, progress=None):
        """Learn the whitening and the dictionary from patches sampled from ``images``.

        Parameters
        ----------
        images : ndarray (N, H, W, 3) or (N, H, W), uint8
            Training images only (never the test split).
        y : ignored
        progress : callable, optional
            Progress hook ``progress("kmeans", iteration, n_iter)``.
        """
        self._validate()
        n_learn, n_sample = self._sampled()
        if n_learn > n_sample:  # settings that do not fit together (fit only: a saved state has no use for them)
            raise ConfigError(f"kmeans option k={self.k} asks for {n_learn} centroids from {n_sample} sampled "
                              f"patches: sample more (--feature-option n_patches=N, at least "
                              f"{n_learn * (2 if self.mirror else 1)}) or use a smaller k")
        # A lazy image array (featmlp.data.ImageArray: decoded when indexed) is read chunk by
        # chunk below instead of being decoded whole.
        lazy = not isinstance(images, np.ndarray) and getattr(images, "ndim", None) == 4 \
            and hasattr(images, "shape") and getattr(images, "dtype", None) == np.uint8
        if not lazy:
            images = _check_images(images)
        n_img, H, W, C = images.shape
        p = self.patch_size
        if n_img == 0:
            raise DataError("cannot fit kmeans features on no images")
        if H < p or W < p:
            raise DataError(f"images are {H}x{W} (HxW), smaller than the {p}x{p} patches of the kmeans "
                            f"features: use a smaller patch (--feature-option patch_size=N) or larger images "
                            f"(--image-size WxH)")
        # The sampled patches as float32 (and their mirror images), normalised, centred, and the
        # float64 copies the covariance is computed from: about 28 bytes a value at the peak.
        from .._memory import check_memory

        n_fit = n_sample * (2 if self.mirror else 1)
        check_memory(n_fit * p * p * C * 28, f"fitting kmeans features on {n_fit} patches of {p}x{p}",
                     "sample fewer patches (--feature-option n_patches=N)")
        rng = np.random.default_rng(self.seed)
        which = rng.integers(0, n_img, n_sample)
        rows = rng.integers(0, H - p + 1, n_sample)
        cols = rng.integers(0, W - p + 1, n_sample)
        if lazy:
            X = _sample_patches_by_chunk(images, which, rows, cols, p)
        else:
            ar = np.arange(p)
            X = images[which[:, None, None], rows[:, None, None] + ar[None, :, None],
                       cols[:, None, None] + ar[None, None, :]]  # (n, p, p, C)
        X = X.reshape(n_sample, -1).astype(np.float32)
        mirror = _mirror_dims(p, C)
        if self.mirror:
            X = np.concatenate([X, X[:, mirror]])
        X = _normalise(X, self.norm_eps)

        mean = X.mean(axis=0, dtype=np.float64)
        Xc = X - mean.astype(np.float32)
        cov = (Xc.T.astype(np.float64) @ Xc.astype(np.float64)) / len(Xc)
        if self.mirror:  # exactly symmetric, not only up to rounding
            mean = (mean + mean[mirror]) / 2
            cov = (cov + cov[np.ix_(mirror, mirror)]) / 2
        evals, evecs = np.linalg.eigh(cov)
        whitening = (evecs * (1.0 / np.sqrt(np.clip(evals, 0, None) + self.whiten_eps))) @ evecs.T
        if self.mirror:
            whitening = (whitening + whitening[np.ix_(mirror, mirror)]) / 2
        Xw = (X - mean.astype(np.float32)) @ whitening.astype(np.float32)
        del X, Xc

        centroids, self.objective_ = _lloyd(Xw, n_learn, self.n_iter, rng, progress)
        if self.mirror:
            centroids = np.concatenate([centroids, centroids[:, mirror]])
        self.mean_ = mean.astype(np.float32)
        self.whitening_ = whitening.astype(np.float32)
        self.centroids_ = centroids.astype(np.float32)
        self.image_shape_ = (int(H), int(W), int(C))
        self.n_features_out_ = self.pool * self.pool * self.k
        return self

    # -- applying ---------------------------------------------------------------------------

    def _check_fitted(self):
        if not hasattr(self, "centroids_"):
            raise ConfigError("the kmeans features are not fitted: fit them on training images first "
                              "(featmlp extract does, or pass --fitted-from RUN_OR_FEATURES)")

    def _check_shape(self, images: np.ndarray) -> None:
        H, W, C = self.image_shape_
        if images.shape[1:] != (H, W, C):
            mode = lambda c: "RGB" if c == 3 else "grayscale"  # noqa: E731
            raise DataError(
                f"the kmeans features were fitted on {H}x{W} {mode(C)} images (HxW), these are "
                f"{images.shape[1]}x{images.shape[2]} {mode(images.shape[3])}: resize them "
                f"(--image-size {W}x{H}), convert them, or fit the features on these images")

    def positions(self) -> tuple[int, int]:
        """Patch positions per column and per row of an image: (rows, cols)."""
        H, W, _ = self.image_shape_
        p, s = self.patch_size, self.stride
        return (H - p) // s + 1, (W - p) // s + 1

    def transform(self, images, *, parallel: bool = True) -> np.ndarray:
        """Features of ``images`` (N, pool * pool * k), float32, columns as :meth:`feature_names`."""
        self._check_fitted()
        images = _check_images(images)
        self._check_shape(images)
        K, G = self.centroids_.shape[0], self.pool
        nr, nc = self.positions()
        wr, wc = pool_weights(nr, G), pool_weights(nc, G)
        D = self.centroids_
        cc = np.einsum("ij,ij->i", D, D)
        out = np.zeros((len(images), G, G, K), np.float32)
        kernel = _encode_pool if parallel else _encode_pool_serial
        per_block = max(1, _BLOCK_VALUES // (nr * nc * K))
        DT = np.ascontiguousarray(D.T)
        S = np.empty((min(per_block, len(images)) * nr * nc, K), np.float32)  # reused: no page faults
        for start in range(0, len(images), per_block):
            block = images[start:start + per_block]
            X = _normalise(_patches(block, self.patch_size, self.stride), self.norm_eps)
            X -= self.mean_
            Xw = X @ self.whitening_
            xx = np.einsum("ij,ij->i", Xw, Xw)
            Sb = S[:len(Xw)]
            np.matmul(Xw, DT, out=Sb)  # (patches, K): one BLAS product, the bulk of the arithmetic
            kernel(Sb, xx, cc, len(block), nr, nc, wr, wc, self.encoding == "hard",
                   out[start:start + len(block)])
        out = out.reshape(len(images), -1)
        if self.power != 1:
            np.power(out, np.float32(self.power), out=out)
        return out

    def feature_names(self) -> tuple[str, ...]:
        """``kmeans_r{region row}_c{region col}_k{centroid}``, in column order."""
        G, K = self.pool, self.k
        return tuple(f"kmeans_r{g}_c{h}_k{k}" for g in range(G) for h in range(G) for k in range(K))

    def get_feature_names_out(self, input_features=None):
        return np.asarray(self.feature_names(), dtype=object)

    def mirror_permutation(self) -> np.ndarray | None:
        """Columns ``perm`` with ``transform(flipped) == transform(images)[:, perm]`` (mirror only)."""
        if not self.mirror:
            return None
        G, K = self.pool, self.k
        g, h, k = np.meshgrid(np.arange(G), np.arange(G), np.arange(K), indexing="ij")
        return ((g * G + (G - 1 - h)) * K + (k + K // 2) % K).reshape(-1)

    # -- state ------------------------------------------------------------------------------

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """``(settings, arrays)``: JSON-ready settings and the fitted arrays."""
        self._check_fitted()
        settings = {**self.settings(), "image_shape": list(self.image_shape_),
                    "objective": [float(v) for v in self.objective_]}
        return settings, {"mean": self.mean_, "whitening": self.whitening_, "centroids": self.centroids_}

    @classmethod
    def from_state(cls, settings: dict, arrays: dict[str, np.ndarray]) -> "KMeansFeatures":
        """Rebuild a fitted transformer from :meth:`state`; a DataError says what does not fit."""
        settings = dict(settings)
        try:
            shape = tuple(int(v) for v in settings.pop("image_shape"))
            objective = [float(v) for v in settings.pop("objective", [])]
            self = cls(**settings)
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"kmeans feature state has bad settings: {e}") from None
        self._validate()
        try:
            mean = np.asarray(arrays["mean"], np.float32)
            whitening = np.asarray(arrays["whitening"], np.float32)
            centroids = np.asarray(arrays["centroids"], np.float32)
        except KeyError as e:
            raise DataError(f"kmeans feature state lacks the array {e.args[0]!r}") from None
        if len(shape) != 3 or shape[2] not in (1, 3) or min(shape) < 1:
            raise DataError(f"kmeans feature state has image shape {shape}, not (H, W, 1 or 3)")
        d = self.patch_size ** 2 * shape[2]
        if mean.shape != (d,) or whitening.shape != (d, d) or centroids.shape != (self.k, d):
            raise DataError(f"kmeans feature state arrays do not fit its settings: mean {mean.shape}, "
                            f"whitening {whitening.shape}, centroids {centroids.shape} for k={self.k}, "
                            f"{d} values per patch")
        if not all(np.isfinite(a).all() for a in (mean, whitening, centroids)):
            raise DataError("kmeans feature state holds NaN or infinite values")
        self.mean_, self.whitening_, self.centroids_ = mean, whitening, centroids
        self.image_shape_ = shape
        self.objective_ = objective
        self.n_features_out_ = self.pool * self.pool * self.k
        return self


# Decoded images held at once while a lazy array's patches are sampled.
_FIT_CHUNK_BYTES = 256 << 20


def _sample_patches_by_chunk(images, which, rows, cols, p: int) -> np.ndarray:
    """The patches ``images[which, rows:rows+p, cols:cols+p]`` (n, p, p, C), one decoded chunk at a time.

    The same values, in the same order, as the fancy index over the decoded array. Only the
    images a patch is taken from are decoded: 200,000 patches of ImageNet's 1.28 M images come
    from ~190,000 of them, which is all a cluster's client decodes to fit the dictionary.
    """
    n_img, H, W, C = images.shape
    per_chunk = max(1, _FIT_CHUNK_BYTES // max(H * W * C, 1))
    X = np.empty((len(which), p, p, C), np.uint8)
    ar = np.arange(p)
    order = np.argsort(which, kind="stable")
    bounds = np.searchsorted(which[order], np.arange(0, n_img + per_chunk, per_chunk))
    for c, start in enumerate(range(0, n_img, per_chunk)):
        sel = order[bounds[c]:bounds[c + 1]]
        if not len(sel):
            continue  # no patch sampled from these images: not decoded at all
        used = np.unique(which[sel])
        block = np.asarray(images[used])
        if block.ndim == 3:
            block = block[..., None]
        X[sel] = block[np.searchsorted(used, which[sel])[:, None, None], rows[sel, None, None] + ar[None, :, None],
                       cols[sel, None, None] + ar[None, None, :]]
    return X


def _lloyd(X: np.ndarray, k: int, n_iter: int, rng, progress=None, block: int = 32768):
    """Lloyd's k-means on rows of ``X`` (float32); returns centroids and the objective per iteration.

    Starts from ``k`` distinct random rows; a centroid left without members restarts at a random
    row (it can only lower the objective).
    """
    n, d = X.shape
    C = X[rng.choice(n, k, replace=False)].copy()
    xx = np.einsum("ij,ij->i", X, X)
    objective = []
    for it in range(n_iter):
        cc = np.einsum("ij,ij->i", C, C)
        sums = np.zeros((k, d))
        counts = np.zeros(k)
        total = 0.0
        for start in range(0, n, block):
            xb = X[start:start + block]
            d2 = xb @ (-2 * C.T)
            d2 += cc
            a = d2.argmin(axis=1)
            total += float(np.maximum(d2[np.arange(len(xb)), a] + xx[start:start + block], 0).sum())
            block_counts = np.bincount(a, minlength=k)
            counts += block_counts
            order = np.argsort(a, kind="stable")
            present = np.flatnonzero(block_counts)
            starts = np.searchsorted(a[order], present)
            sums[present] += np.add.reduceat(xb[order].astype(np.float64), starts, axis=0)
        objective.append(total / n)
        empty = counts == 0
        C = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
        if empty.any():
            C[empty] = X[rng.choice(n, int(empty.sum()), replace=False)]
        if progress is not None:
            progress("kmeans", it + 1, n_iter)
    return C, objective

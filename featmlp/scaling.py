"""Feature scaling and the passes over a feature table it needs, without torch.

A :class:`Scaler` is fitted on the training features only and travels with the model, so test
features and new images are scaled exactly as the training set was. It is fitted in memory, or
in one pass over a sharded table (:func:`column_stats`, :func:`row_blocks`: a shard at a time);
:func:`nonfinite_rows` finds NaN and infinite rows the same way. :mod:`featmlp.model`
re-exports these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from featmlp.errors import ConfigError, DataError


def is_permutation(perm, n: int) -> bool:
    """Whether ``perm`` reorders ``n`` columns (each index 0..n-1 once): a mirror map's check."""
    perm = np.asarray(perm)
    return perm.shape == (n,) and np.array_equal(np.sort(perm), np.arange(n))


def nonfinite_rows(X) -> np.ndarray:
    """Indices of the rows of ``X`` (N, F) holding a NaN or an infinity, a block at a time.

    A sharded table answers from its manifest, which records them as each shard is written,
    so a table larger than memory is not read for it (and not three times before training).

    Examples
    --------
    >>> nonfinite_rows([[0.0, 1.0], [np.nan, 2.0], [3.0, np.inf]]).tolist()
    [1, 2]
    """
    known = getattr(X, "known_nonfinite", None)  # a sharded table's, recorded as its shards were written
    if known is not None:
        return known
    bad = [np.flatnonzero(~np.isfinite(block).all(axis=1)) + start for start, block in row_blocks(X)]
    return np.concatenate(bad) if bad else np.zeros(0, np.int64)


def row_blocks(X, size: int = 4096, rows=None):
    """``(first row, block)`` of ``X`` (N, F) in order, at most ``size`` rows a block.

    A :class:`featmlp.shards.ShardedArray` is read a shard at a time (each block a slice of
    the shard held mapped), so a pass over a table larger than memory holds one shard; other
    arrays are sliced as they are. With ``rows`` (sorted row indices), only those rows, and
    ``first row`` is the position of the block's first row within ``rows``.

    Examples
    --------
    >>> [(start, b.shape) for start, b in row_blocks(np.zeros((5, 2)), size=2)]
    [(0, (2, 2)), (2, (2, 2)), (4, (1, 2))]
    """
    from featmlp.shards import ShardedArray

    if isinstance(X, ShardedArray):
        shards = ((int(X.offsets[i]), i) for i in range(X.n_shards) if X.shard_rows[i])
    else:
        X = np.asarray(X)
        if X.ndim != 2:
            X = X.reshape(len(X), -1)
        shards = [(0, None)]
    done = 0
    for first, i in shards:
        part = X if i is None else X.shard(i)
        if rows is None:
            local = None
        else:
            # the given rows that fall in this shard, as indices into it
            lo, hi = np.searchsorted(rows, [first, first + len(part)])
            local = rows[lo:hi] - first
        for j in range(0, len(part) if local is None else len(local), size):
            block = part[j:j + size] if local is None else part[local[j:j + size]]
            yield done + j, block
            del block
        done += len(part) if local is None else len(local)
        del part  # unmapped (once the caller drops its last block) before the next shard is opened


def _choice_error(what: str, value, choices) -> ConfigError:
    return ConfigError(f"{what} {value!r} is not one of: {', '.join(map(str, choices))}")



def _standard_params(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if X.dtype == np.float64:
        return X.mean(axis=0), X.std(axis=0)
    # float32 tables (learned features) can be GBs: two passes in float64, a block at a time,
    # instead of X.std's float64 temporaries of the whole table.
    mean = X.mean(axis=0, dtype=np.float64)
    sq = np.zeros(X.shape[1])
    for i in range(0, len(X), 4096):
        sq += np.square(X[i:i + 4096] - mean).sum(axis=0)
    return mean, np.sqrt(sq / len(X))


def _minmax_params(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # The fixed normalisation: (x - min) / (max - min). The lecture divided by the max alone.
    lo = X.min(axis=0)
    return lo, X.max(axis=0) - lo


def _global_params(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Centred columns, one scale for all (the root mean square of the columns' deviations): the
    # columns keep their relative sizes. For learned features (thousands of pooled codes)
    # standard scaling inflates the rare, noisy ones; on CIFAR-10's kmeans features this
    # scored 0.782 against 0.777 on a validation split.
    mean, std = _standard_params(X)
    return mean, np.full_like(std, np.sqrt(np.mean(np.square(std))))


def _identity_params(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(X.shape[1]), np.ones(X.shape[1])


# Name -> ``f(X) -> (offset, scale)``; a scaler maps x to (x - offset) / scale. Keys are --scaler choices.
SCALERS: dict[str, Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
    "standard": _standard_params,
    "minmax": _minmax_params,
    "global": _global_params,
    "none": _identity_params,
}


@dataclass(frozen=True)
class ColumnStats:
    """Per-column ``mean``, ``std`` (population), ``min`` and ``max`` of ``n`` rows, float64."""

    n: int
    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray


# Rows of a block in the streaming pass: its float64 temporaries stay near 32 MB.
_STATS_BLOCK_VALUES = 1 << 22


def column_stats(X, rows=None) -> ColumnStats:
    """Column statistics of ``X`` (N, F), or of its ``rows`` (sorted), in one pass a block at a time.

    Each block's mean and sum of squared deviations are merged into the running ones (Chan,
    Golub and LeVeque's pairwise update), in float64: the mean and std equal numpy's two-pass
    ones up to rounding, and a :class:`featmlp.shards.ShardedArray` is read a shard at a time.

    Examples
    --------
    >>> X = np.random.default_rng(0).normal(size=(1000, 3))
    >>> s = column_stats(X)
    >>> bool(np.allclose(s.mean, X.mean(0)) and np.allclose(s.std, X.std(0)) and (s.max == X.max(0)).all())
    True
    """
    n_features = X.shape[1]
    n, mean, m2 = 0, np.zeros(n_features), np.zeros(n_features)
    lo, hi = np.full(n_features, np.inf), np.full(n_features, -np.inf)
    for _, block in row_blocks(X, max(1, _STATS_BLOCK_VALUES // max(n_features, 1)), rows):
        nb = len(block)
        if not nb:
            continue
        block_mean = block.mean(axis=0, dtype=np.float64)
        block_m2 = np.square(block - block_mean).sum(axis=0)
        delta = block_mean - mean
        total = n + nb
        mean = mean + delta * (nb / total)
        m2 = m2 + block_m2 + np.square(delta) * (n * nb / total)
        lo = np.minimum(lo, block.min(axis=0))
        hi = np.maximum(hi, block.max(axis=0))
        n = total
    if n == 0:
        raise DataError(f"cannot fit a scaler on features of shape {(0, n_features)}: need (N, F), N >= 1")
    return ColumnStats(n, mean, np.sqrt(m2 / n), lo.astype(np.float64), hi.astype(np.float64))


@dataclass(frozen=True, eq=False)
class Scaler:
    """Per-feature affine scaling ``(x - offset) / scale``, fitted on training features only.

    Create one with :meth:`fit`; a constant feature (zero spread) gets scale 1, so it maps to 0
    instead of dividing by zero.

    Examples
    --------
    >>> X = np.array([[0.0, 5.0], [10.0, 5.0]])
    >>> s = Scaler.fit(X, "minmax")
    >>> s.transform(X).tolist()
    [[0.0, 0.0], [1.0, 0.0]]
    >>> Scaler.from_dict(s.to_dict()).transform([[5.0, 5.0]]).tolist()
    [[0.5, 0.0]]
    """

    kind: str
    offset: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, X, kind: str = "standard", *, mirror=None, names=None, rows=None) -> "Scaler":
        """Learn offset and scale of each column of ``X`` (N, F) with the method ``kind``.

        Columns whose offset or scale overflows (values near 1e300) are refused with a
        :class:`DataError` naming them (by ``names`` when given, else by index).

        With ``mirror`` (a column permutation), the scaling of the rows of ``X`` and of
        ``X[:, mirror]`` together (flip augmentation), computed without building those rows.

        A :class:`featmlp.shards.ShardedArray` is fitted in one pass over its shards, a shard
        at a time (:func:`column_stats`, float64 sums): the same scaling as on the table in
        memory, up to rounding. ``rows`` (sorted indices) fits on those rows of ``X`` only,
        in such a pass (a sharded table's training rows, without its validation rows).
        """
        if kind not in SCALERS:
            raise _choice_error("scaler", kind, SCALERS)
        from featmlp.shards import ShardedArray

        if isinstance(X, ShardedArray) or rows is not None:
            return cls._fit_streamed(X, kind, mirror, names, rows)
        X = np.asarray(X)
        if X.dtype not in (np.float32, np.float64):
            X = X.astype(np.float64)
        if X.ndim != 2 or X.shape[0] == 0:
            raise DataError(f"cannot fit a scaler on features of shape {X.shape}: need (N, F), N >= 1")

        def largest():
            top = np.zeros(X.shape[1])
            for i in range(0, len(X), 4096):
                top = np.maximum(top, np.abs(X[i:i + 4096]).max(axis=0))
            return top

        with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked below, by column
            params = SCALERS[kind](X)
        return cls._finish(kind, params, lambda: _standard_params(X), largest, X.shape[1], mirror, names)

    @classmethod
    def _fit_streamed(cls, X, kind, mirror, names, rows) -> "Scaler":
        if rows is not None:
            rows = np.asarray(rows, np.int64)
        stats = column_stats(X, rows)
        n_features = len(stats.mean)
        params = {"standard": lambda: (stats.mean, stats.std),
                  "minmax": lambda: (stats.min, stats.max - stats.min),
                  "global": lambda: (stats.mean, np.full_like(stats.std, np.sqrt(np.mean(np.square(stats.std))))),
                  "none": lambda: (np.zeros(n_features), np.ones(n_features))}[kind]
        with np.errstate(over="ignore", invalid="ignore"):
            return cls._finish(kind, params(), lambda: (stats.mean, stats.std),
                               lambda: np.maximum(np.abs(stats.min), np.abs(stats.max)), n_features, mirror, names)

    @classmethod
    def _finish(cls, kind, params, standard, largest, n_features, mirror, names) -> "Scaler":
        """The scaler from ``kind``'s ``(offset, scale)``: mirror images folded in, overflow refused.

        ``standard()`` gives the columns' mean and std, ``largest()`` their largest magnitude
        (computed only when needed: from the array in memory, or from a streaming pass's sums).
        """
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked below, by column
            offset, scale = (np.asarray(v, np.float64) for v in params)
            if mirror is not None and kind in ("standard", "global"):
                # mean and mean square of the two halves, averaged
                offset, scale = (np.asarray(v, np.float64) for v in standard())
                mean = (offset + offset[mirror]) / 2
                square = (scale ** 2 + offset ** 2 + scale[mirror] ** 2 + offset[mirror] ** 2) / 2
                offset, scale = mean, np.sqrt(np.clip(square - mean ** 2, 0, None))
                if kind == "global":
                    scale = np.full_like(scale, np.sqrt(np.mean(np.square(scale))))
            elif mirror is not None and kind == "minmax":
                lo = np.minimum(offset, offset[mirror])
                offset, scale = lo, np.maximum(offset + scale, (offset + scale)[mirror]) - lo
        bad = np.flatnonzero(~(np.isfinite(offset) & np.isfinite(scale)))
        if kind == "global" and len(bad):
            # one scale for all: name the columns whose own spread overflows it
            with np.errstate(over="ignore", invalid="ignore"):
                mean, std = standard()
                bad = np.flatnonzero(~(np.isfinite(mean) & np.isfinite(np.square(std) * n_features)))
            bad = bad if len(bad) else np.arange(n_features)  # only their sum overflows: all of them
        if kind == "none" and not len(bad):
            # unscaled values go into float32 as they are: beyond its range they become inf
            bad = np.flatnonzero(largest() > np.finfo(np.float32).max)
        if len(bad):
            cols = ", ".join(names[i] if names is not None else str(i) for i in bad[:5]) + (" ..." if len(bad) > 5 else "")
            raise DataError(f"{len(bad)} feature column(s) ({'' if names is not None else 'index '}{cols}) hold values too "
                            f"large to scale with {kind!r} (their {'size' if kind == 'none' else 'spread'} overflows "
                            f"floating point): rescale or drop them before training")
        scale = np.where(scale > 0, scale, 1.0)
        return cls(kind, np.asarray(offset, np.float64), np.asarray(scale, np.float64))

    @property
    def n_features(self) -> int:
        return int(self.offset.shape[0])

    def transform(self, X) -> np.ndarray:
        """Scale ``X`` (N, F); returns float32, the dtype the network uses."""
        X = np.asarray(X)
        if X.dtype not in (np.float32, np.float64):
            X = X.astype(np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise DataError(
                f"features have shape {X.shape}, but the scaler was fitted on {self.n_features} "
                f"features per sample"
            )
        out = np.empty(X.shape, np.float32)
        for i in range(0, len(X), 4096):  # float64 arithmetic a block at a time
            out[i:i + 4096] = (X[i:i + 4096] - self.offset) / self.scale
        return out

    def to_dict(self) -> dict:
        """``{"kind": str, "offset": array, "scale": array}``; :meth:`from_dict` inverts it."""
        return {"kind": self.kind, "offset": self.offset.copy(), "scale": self.scale.copy()}

    @classmethod
    def from_dict(cls, d: dict) -> "Scaler":
        """Rebuild a fitted scaler from :meth:`to_dict` output (arrays or lists)."""
        try:
            kind = d["kind"]
            offset = np.asarray(d["offset"], dtype=np.float64)
            scale = np.asarray(d["scale"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"scaler parameters are incomplete or not numbers: {exc}") from None
        if kind not in SCALERS:
            raise DataError(f"scaler kind {kind!r} is not one of: {', '.join(SCALERS)}")
        if offset.ndim != 1 or offset.shape != scale.shape:
            raise DataError(
                f"scaler offset and scale must be vectors of one length, got shapes "
                f"{offset.shape} and {scale.shape}"
            )
        if not (np.all(np.isfinite(offset)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
            raise DataError("scaler parameters must be finite, with positive scales")
        return cls(kind, offset, scale)

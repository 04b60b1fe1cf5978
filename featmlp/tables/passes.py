"""Passes over a feature table, a block at a time: rows, column statistics, non-finite rows.

A :class:`~featmlp.tables.sharded.ShardedArray` is read a shard at a time, so a pass over a
table larger than memory holds one shard; an array in memory is sliced as it is. The scaler
(:mod:`featmlp.model.scaler`) is fitted with :func:`column_stats`; training checks
:func:`nonfinite_rows`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from featmlp.errors import DataError
from featmlp.tables.sharded import ShardedArray


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

    A :class:`featmlp.tables.sharded.ShardedArray` is read a shard at a time (each block a slice of
    the shard held mapped), so a pass over a table larger than memory holds one shard; other
    arrays are sliced as they are. With ``rows`` (sorted row indices), only those rows, and
    ``first row`` is the position of the block's first row within ``rows``.

    Examples
    --------
    >>> [(start, b.shape) for start, b in row_blocks(np.zeros((5, 2)), size=2)]
    [(0, (2, 2)), (2, (2, 2)), (4, (1, 2))]
    """
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
    ones up to rounding, and a :class:`featmlp.tables.sharded.ShardedArray` is read a shard at a time.

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

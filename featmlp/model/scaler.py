"""Feature scaling, without torch: the :class:`Scaler` and its methods (:data:`SCALERS`).

A :class:`Scaler` is fitted on the training features only and travels with the model, so test
features and new images are scaled exactly as the training set was. It is fitted in memory, or
in one pass over a sharded table (:func:`featmlp.tables.passes.column_stats`, a shard at a time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from featmlp.errors import ConfigError, DataError
from featmlp.tables.passes import column_stats
from featmlp.tables.sharded import ShardedArray


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

        A :class:`featmlp.tables.sharded.ShardedArray` is fitted in one pass over its shards, a shard
        at a time (:func:`column_stats`, float64 sums): the same scaling as on the table in
        memory, up to rounding. ``rows`` (sorted indices) fits on those rows of ``X`` only,
        in such a pass (a sharded table's training rows, without its validation rows).
        """
        if kind not in SCALERS:
            raise _choice_error("scaler", kind, SCALERS)
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

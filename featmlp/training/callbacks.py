"""What a run tells as it goes: :class:`Callback`, :class:`LivePlot` and the adapter for plain callables.

A callback reads the run's history (:mod:`featmlp.training.history`) after each epoch and may
stop the run by returning True. :class:`Callback` is defined in :mod:`featmlp.progress` (the one
protocol of progress, epochs and the sweep's named epochs, which the data layer uses too, without
training) and re-exported here.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

from featmlp.progress import Callback, ProgressCallback, progress_callbacks

if TYPE_CHECKING:
    from featmlp.training.config import TrainConfig

__all__ = ["Callback", "CallableCallback", "LivePlot", "ProgressCallback", "as_callback", "progress_callbacks"]


class LivePlot(Callback):
    """Keep a loss plot current while a run goes: rewritten at most every ``every_seconds``
    and once at the end (plotting every epoch would cost more than a fast epoch).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "loss.png"
    >>> import numpy as np
    >>> from featmlp.training import TrainConfig, train
    >>> X = np.random.default_rng(0).normal(size=(60, 3)); y = (X[:, 0] > 0).astype(int)
    >>> _ = train(X, y, TrainConfig(epochs=2), callbacks=[LivePlot(path)])
    >>> path.exists()
    True
    """

    def __init__(self, path, every_seconds: float = 2.0, log_scale: bool = False):
        self.path = path
        self.every_seconds = every_seconds
        self.log_scale = log_scale
        self._last = 0.0

    def on_train_begin(self, config: TrainConfig) -> None:
        self._last = time.perf_counter()

    def on_epoch(self, record: dict, history: list[dict]) -> None:
        now = time.perf_counter()
        if now - self._last >= self.every_seconds:
            self._plot(history)
            self._last = time.perf_counter()

    def on_train_end(self, history: list[dict]) -> None:
        self._plot(history)

    def _plot(self, history: list[dict]) -> None:
        from featmlp.runs.plots import plot_history

        if history:
            plot_history(history, self.path, log_scale=self.log_scale)


class CallableCallback(Callback):
    """A plain callable ``f(record, history)`` acting as :meth:`Callback.on_epoch`."""

    def __init__(self, fn: Callable[[dict, list[dict]], Any]):
        self.fn = fn

    def on_epoch(self, record: dict, history: list[dict]) -> bool | None:
        return self.fn(record, history)


def as_callback(cb: Callback | Callable) -> Callback:
    """``cb`` itself when it is a :class:`Callback`, else a callable ``f(record, history)`` wrapped."""
    return cb if isinstance(cb, Callback) else CallableCallback(cb)

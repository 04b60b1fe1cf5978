"""What a run tells as it goes: :class:`Callback` and the adapter for plain callables.

A callback reads the run's history (:mod:`featmlp.training.history`) after each epoch and may
stop the run by returning True. :class:`Callback` is defined in :mod:`featmlp.progress` (the one
protocol of progress, epochs and the sweep's named epochs, which the data layer uses too, without
training) and re-exported here. :class:`featmlp.runs.LivePlot`, the loss plot kept current during
a run, is one.
"""

from __future__ import annotations

from typing import Any, Callable

from featmlp.progress import Callback, ProgressCallback, progress_callbacks

__all__ = ["Callback", "CallableCallback", "ProgressCallback", "as_callback", "progress_callbacks"]


class CallableCallback(Callback):
    """A plain callable ``f(record, history)`` acting as :meth:`Callback.on_epoch`."""

    def __init__(self, fn: Callable[[dict, list[dict]], Any]):
        self.fn = fn

    def on_epoch(self, record: dict, history: list[dict]) -> bool | None:
        return self.fn(record, history)


def as_callback(cb: Callback | Callable) -> Callback:
    """``cb`` itself when it is a :class:`Callback`, else a callable ``f(record, history)`` wrapped."""
    return cb if isinstance(cb, Callback) else CallableCallback(cb)


def hear_epoch(callbacks, epoch: int, record: dict, history, total: int) -> bool:
    """Tell every callback of the epoch just recorded (``on_progress``, then ``on_epoch``); True
    when one of them asks training to stop (each still hears the epoch). Both engines, torch's and
    the lecture's numpy one, end an epoch through here."""
    for cb in callbacks:
        cb.on_progress("train", epoch, total)
    stop = False
    for cb in callbacks:
        if cb.on_epoch(record, history):
            stop = True
    return stop

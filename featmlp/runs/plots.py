"""Plots of a run: the loss curve (with validation beside training), the confusion matrix, and
:class:`LivePlot`, the callback that keeps the loss curve current while a run trains.

Each figure starts from :func:`featmlp._figures.new_figure` and is written atomically by
:func:`featmlp._figures.save_figure`, so a viewer watching ``loss.png`` during a run never reads
half a file.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from featmlp._figures import MAX_FIGURE_INCHES, draw, new_figure, palette, save_figure
from featmlp._text import plot_text
from featmlp.progress import Callback
from featmlp.training.history import EPOCH, TRAIN_ACCURACY, TRAIN_LOSS, VAL_ACCURACY, VAL_LOSS

if TYPE_CHECKING:
    from featmlp.training.config import TrainConfig


def plot_history(history: list[dict], path: str | os.PathLike, log_scale: bool = False,
                 title: str | None = None) -> Path:
    """Draw loss (train, and validation when recorded) and accuracy per epoch into ``path``.

    Parameters
    ----------
    history : list of dict
        Per-epoch records with ``epoch`` and ``train_loss``; ``val_loss``, ``train_accuracy``
        and ``val_accuracy`` are drawn when present.
    path : path
        Image file to (over)write; its suffix picks the format (``.png``).
    log_scale : bool
        Logarithmic loss axis (useful to compare learning rates).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> h = [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.1},
    ...      {"epoch": 2, "train_loss": 0.5, "val_loss": 0.7}]
    >>> plot_history(h, pathlib.Path(tempfile.mkdtemp()) / "loss.png").exists()
    True
    """
    epochs = [r[EPOCH] for r in history]
    has_acc = any(TRAIN_ACCURACY in r or VAL_ACCURACY in r for r in history)
    fig = new_figure(10 if has_acc else 6, 4)
    axes = fig.subplots(1, 2 if has_acc else 1, squeeze=False)[0]

    def curve(ax, key, label, style):
        points = [(e, r[key]) for e, r in zip(epochs, history) if key in r]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, style, label=label, marker="." if len(xs) < 50 else None)

    ax = axes[0]
    curve(ax, TRAIN_LOSS, "train", "-")
    curve(ax, VAL_LOSS, "validation", "--")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (mean over samples)")
    if log_scale:
        ax.set_yscale("log")
    ax.set_title("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    if has_acc:
        ax = axes[1]
        curve(ax, TRAIN_ACCURACY, "train", "-")
        curve(ax, VAL_ACCURACY, "validation", "--")
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy")
        ax.set_title("accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_loss_curves(curves, path: str | os.PathLike, *, log_scale: bool = False) -> Path:
    """Several runs' loss per epoch, one colour a run: training loss on one axes and, when any run
    recorded it, validation loss on a second beside it; a diverged run ends where it diverged,
    marked with an ``x``. The one renderer of a sweep's ``loss.png``: the sweep draws it, and its
    report redraws it from the run directories when the PNG is missing.

    ``curves``: ``(label, history, diverged)`` for each run; ``diverged`` the epoch whose loss was
    not finite, True when that is not known, or False / None.
    """
    from matplotlib.ticker import MaxNLocator  # start-up: matplotlib, only when a plot is drawn

    curves = list(curves)
    has_val = any(VAL_LOSS in r for _, history, _ in curves for r in history)
    fig = new_figure(13 if has_val else 8.5, 4.5)
    axes = fig.subplots(1, 2 if has_val else 1, squeeze=False)[0]
    colours = palette(len(curves))
    titles = {TRAIN_LOSS: "training loss", VAL_LOSS: "validation loss"}
    for ax, (key, title) in zip(axes, titles.items()):
        for (label, history, diverged), colour in zip(curves, colours):
            points = [(r[EPOCH], r[key]) for r in history if key in r and EPOCH in r and np.isfinite(r[key])]
            label = plot_text(label)
            if diverged:
                label += " (diverged)" if diverged is True else f" (diverged at epoch {diverged})"
            xs, ys = zip(*points) if points else ((), ())
            ax.plot(xs, ys, "-", color=colour, label=label, marker="." if len(xs) < 30 else None)
            if diverged and points:
                ax.plot(xs[-1:], ys[-1:], "x", color=colour, markersize=10, mew=2)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("loss (mean over samples)")
        if log_scale:
            ax.set_yscale("log")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_figure(fig, path)


def plot_confusion(cm, class_names, path: str | os.PathLike, normalize: bool = False,
                   title: str | None = None) -> Path:
    """Draw a confusion matrix (rows: true class, columns: predicted) with counts in each cell.

    With ``normalize=True`` each row is divided by its total (recall on the diagonal). The figure
    grows with the classes up to a fixed size (:data:`MAX_FIGURE_INCHES`); beyond
    :data:`CELL_TEXT_CLASSES` classes the cells carry no numbers, and beyond
    :data:`TICK_LABEL_CLASSES` the axes are numbered by class index instead of named.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> plot_confusion([[3, 1], [0, 4]], ["cat", "dog"],
    ...                pathlib.Path(tempfile.mkdtemp()) / "confusion.png").exists()
    True
    """
    cm = np.asarray(cm, dtype=np.float64)
    names = [plot_text(c) for c in class_names]  # drawn as shown on a terminal: escaped
    if cm.shape != (len(names), len(names)):
        raise ValueError(f"confusion matrix of shape {cm.shape} for {len(names)} class names")
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    size = min(max(4.0, 0.6 * len(names) + 2.5), MAX_FIGURE_INCHES - 1)
    fig = new_figure(size + 1, size)
    ax = fig.subplots()
    image = ax.imshow(shown, cmap="Blues", vmin=0, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8)
    if len(names) <= TICK_LABEL_CLASSES:
        ticks = np.arange(len(names))
        ax.set_xticks(ticks, names, rotation=45, ha="right")
        ax.set_yticks(ticks, names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    else:  # a few index ticks: the names would overlap into a black band
        from matplotlib.ticker import MaxNLocator

        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(MaxNLocator(nbins=10, integer=True))
        ax.set_xlabel("predicted (class index)")
        ax.set_ylabel("true (class index)")
    if len(names) <= CELL_TEXT_CLASSES:
        threshold = shown.max() / 2 if shown.size else 0
        for i in range(len(names)):
            for j in range(len(names)):
                text = f"{shown[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
                # in_layout=False: inside the axes, a cell's number moves no margin, and the
                # constrained layout measured each of them twice (~40 % of the plot's time)
                ax.text(j, i, text, ha="center", va="center", fontsize=8, in_layout=False,
                        color="white" if shown[i, j] > threshold else "black")
    ax.set_title(title or "confusion matrix")
    return save_figure(fig, path)


# Classes up to which a confusion matrix shows each cell's number, and names each class on its axes.
CELL_TEXT_CLASSES = 30
TICK_LABEL_CLASSES = 60


def render(job) -> Path:
    """Draw one plot described as data, ``(function, args)``: a task for a worker process."""
    fn, args = job
    return fn(*args)


def plot_accuracy_vs_lr(lines: dict[str, list], path: str | os.PathLike, *,
                        ylabel: str = "test accuracy") -> Path:
    """Accuracy against the learning rate on a log axis, one line per label (an architecture):
    ``lines[label]`` holds ``(lr, accuracy, diverged)`` points; a diverged one gets an ``x``.

    The one renderer of a sweep's ``accuracy_vs_lr.png``: the sweep draws it from its runs
    (:mod:`featmlp.sweep`), a report redraws it from ``results.csv`` when the file is missing.
    """
    fig = new_figure(7, 4.5)
    ax = fig.subplots()
    for (label, points), colour in zip(lines.items(), palette(len(lines))):
        points = sorted(p for p in points if p[1] is not None)
        if not points:
            continue
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", color=colour, label=label)
        bad = [p for p in points if p[2]]
        if bad:
            ax.plot([p[0] for p in bad], [p[1] for p in bad], "x", color="black", markersize=10, mew=2)
    if any(p[2] for points in lines.values() for p in points):
        ax.plot([], [], "x", color="black", label="diverged (last finite weights)")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(ylabel)
    ax.set_title("accuracy versus learning rate")
    ax.grid(alpha=0.3, which="both")
    if lines:
        ax.legend(fontsize=8)
    return save_figure(fig, path)


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
        if history:  # a copy: training appends to its history while a drawing process may be handed it
            draw(self.path, plot_history, [dict(r) for r in history], self.path, log_scale=self.log_scale)

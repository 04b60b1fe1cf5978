"""Compare run directories: their settings that differ, their results, their loss curves.

Everything here reads what a run wrote (``config.json`` and ``metrics.json``, see
:mod:`featmlp.runs.results`); nothing is recomputed from the data.

Examples
--------
>>> rows, differing = compare_runs(["runs/lr10", "runs/lr50"])      # doctest: +SKIP
>>> print(format_table(rows))                                          # doctest: +SKIP
name  lr  test_accuracy  final_train_loss  final_val_loss  epochs  seconds  diverged
...
>>> plot_comparison(["runs/lr10", "runs/lr50"], "compare.png", log_scale=True)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from featmlp._figures import new_figure, palette, plot_format, save_figure
from featmlp._text import plot_text, printable
from featmlp.errors import ConfigError, DataError
from featmlp.runs.layout import CONFIG_FILE, METRICS_FILE, read_json
from featmlp.training.history import EPOCH, TRAIN_LOSS, VAL_LOSS

# What each row reports of a run's results, in table order.
RESULT_COLUMNS = ("test_accuracy", "final_train_loss", "final_val_loss", "epochs", "seconds",
                  "diverged")


@dataclass
class Run:
    """One run directory as read from disk: its name, path, ``config.json`` and ``metrics.json``."""

    name: str
    path: Path
    config: dict
    metrics: dict

    @property
    def history(self) -> list[dict]:
        """The per-epoch records (empty when the first epoch diverged)."""
        history = self.metrics.get("history") or []
        return [r for r in history if isinstance(r, dict)]

    def settings(self) -> dict:
        """Every training setting, and the feature set, flat: ``{"lr": 10.0, "hidden": [6], ...}``."""
        train = self.config.get("train")
        data = self.config.get("data")
        settings = dict(train) if isinstance(train, dict) else {}
        if isinstance(data, dict) and "features" in data:
            settings["features"] = data["features"]
        return settings

    def results(self) -> dict:
        """The :data:`RESULT_COLUMNS` of this run (None where it does not say)."""
        m, last = self.metrics, (self.history[-1] if self.history else {})
        epochs = m.get("epochs_run", len(self.history))
        return {
            "test_accuracy": m.get("test_accuracy"),
            "final_train_loss": last.get(TRAIN_LOSS),
            "final_val_loss": last.get(VAL_LOSS),
            "epochs": epochs,
            "seconds": m.get("train_seconds"),
            "diverged": m.get("diverged"),
        }


def is_run_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory holding a run's ``config.json`` and ``metrics.json``."""
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and (path / METRICS_FILE).is_file()


def read_run(path: str | os.PathLike, name: str | None = None) -> Run:
    """Read a run directory; :class:`DataError` naming what is missing when it is not one.

    Examples
    --------
    >>> read_run("runs/lecture").results()["test_accuracy"]            # doctest: +SKIP
    0.2731
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path} is not a directory: pass run directories written by "
                        f"'featmlp train', 'featmlp run' or featmlp.runs.train_run")
    missing = [f for f in (CONFIG_FILE, METRICS_FILE) if not (path / f).is_file()]
    if missing:
        raise DataError(f"{path} is not a featmlp run directory: it has no {' or '.join(missing)} "
                        f"(a run directory is written by 'featmlp train', 'featmlp run' or "
                        f"featmlp.runs.train_run)")
    config, metrics = read_json(path / CONFIG_FILE), read_json(path / METRICS_FILE)
    for file, obj in ((CONFIG_FILE, config), (METRICS_FILE, metrics)):
        if not isinstance(obj, dict):
            raise DataError(f"{path / file} does not hold a JSON object: is it a featmlp run?")
    return Run(name or path.resolve().name, path, config, metrics)


def read_runs(run_dirs: Iterable[str | os.PathLike]) -> list[Run]:
    """Read several run directories, naming each by its folder (by its path where those clash)."""
    paths = [Path(p) for p in run_dirs]
    if not paths:
        raise ConfigError("no run directories given: pass at least one")  # the argument, not a file
    names = [p.resolve().name for p in paths]
    if len(set(names)) < len(names):
        names = [str(p) for p in paths]
    return [read_run(p, name) for p, name in zip(paths, names)]


def differing_settings(runs: Sequence[Run]) -> list[str]:
    """Names of the settings whose values are not the same in every run, in config order."""
    all_settings = [r.settings() for r in runs]
    keys: list[str] = []
    for s in all_settings:
        keys += [k for k in s if k not in keys]
    return [k for k in keys
            if len({json.dumps(s.get(k), sort_keys=True) for s in all_settings}) > 1]


def compare_runs(run_dirs: Iterable[str | os.PathLike]) -> tuple[list[dict], list[str]]:
    """One row per run (name, path, every setting, results) and the settings that differ.

    Parameters
    ----------
    run_dirs : iterable of path
        Run directories (``config.json`` + ``metrics.json``).

    Returns
    -------
    rows : list of dict
        ``name``, ``path``, each training setting (``lr``, ``hidden`` ...), ``features``, and
        the :data:`RESULT_COLUMNS`: ``test_accuracy``, ``final_train_loss``,
        ``final_val_loss``, ``epochs``, ``seconds`` (training time), ``diverged``.
    differing : list of str
        The settings whose values differ between the runs (empty for one run).

    Raises
    ------
    DataError
        A path is not a run directory.

    Examples
    --------
    >>> rows, differing = compare_runs(["runs/lr10", "runs/lr50"])     # doctest: +SKIP
    >>> differing, [r["test_accuracy"] for r in rows]                   # doctest: +SKIP
    (['lr'], [0.2731, 0.2944])
    """
    runs = read_runs(run_dirs)
    rows = [{"name": r.name, "path": str(r.path), **r.settings(), **r.results()} for r in runs]
    return rows, differing_settings(runs)


def format_cell(key: str, value) -> str:
    """A setting or result as a table cell: ``-`` for missing, lists as ``6,6`` (names and legends of
    a sweep's runs use the sweep's ``setting_label``, file-safe: ``6-6``)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ",".join(format_cell(key, v) for v in value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if key.endswith("accuracy") or key in ("precision", "recall", "f1"):
            return f"{value:.4f}"
        if key == "seconds" or key.endswith("_seconds"):
            return f"{value:.2f}"
        return f"{value:.4g}"
    return str(value)


def format_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """A plain-text table of rows from :func:`compare_runs`, one line per run.

    Parameters
    ----------
    rows : sequence of dict
        Rows of :func:`compare_runs`.
    columns : sequence of str, optional
        Columns to show; by default ``name``, the settings that differ between the rows, then
        the :data:`RESULT_COLUMNS`.

    Examples
    --------
    >>> print(format_table([{"name": "a", "lr": 10.0, "test_accuracy": 0.25},
    ...                     {"name": "b", "lr": 50.0, "test_accuracy": 0.3}],
    ...                    ["name", "lr", "test_accuracy"]))
    name  lr  test_accuracy
    a     10  0.2500
    b     50  0.3000
    """
    if columns is None:
        columns = ["name", *_differing_in_rows(rows), *RESULT_COLUMNS]
    # the cells as a terminal may show them: control characters in names escaped
    cells = [list(columns)] + [[printable(format_cell(c, row.get(c))) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                     for line in cells)


def _differing_in_rows(rows: Sequence[dict]) -> list[str]:
    fixed = {"name", "path", *RESULT_COLUMNS}
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in fixed and k not in keys]
    return [k for k in keys if len({json.dumps(r.get(k), sort_keys=True) for r in rows}) > 1]


def comparison_figure(runs: Sequence[Run], log_scale: bool = False, title: str | None = None):
    """The matplotlib figure of :func:`plot_comparison` for runs already read."""
    fig = new_figure(8, 5)
    ax = fig.subplots()
    colors = palette(len(runs))
    has_val = False
    for run, color in zip(runs, colors):
        history = run.history
        label = plot_text(run.name) + (" (diverged)" if run.metrics.get("diverged") else "")
        train = [(r[EPOCH], r[TRAIN_LOSS]) for r in history
                 if _finite(r.get(TRAIN_LOSS)) and EPOCH in r]
        if not train:
            # Nothing finished: keep the run in the legend so it is not silently missing.
            ax.plot([], [], "-", color=color, label=label + " (no finished epoch)")
            continue
        xs, ys = zip(*train)
        ax.plot(xs, ys, "-", color=color, label=label, marker="." if len(xs) < 30 else None)
        if run.metrics.get("diverged"):
            ax.plot(xs[-1:], ys[-1:], "x", color=color, markersize=9, mew=2)
        val = [(r[EPOCH], r[VAL_LOSS]) for r in history
               if _finite(r.get(VAL_LOSS)) and EPOCH in r]
        if val:
            has_val = True
            ax.plot(*zip(*val), "--", color=color)
    if has_val:
        ax.plot([], [], "-", color="0.4", label="train (solid)")
        ax.plot([], [], "--", color="0.4", label="validation (dashed)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (mean over samples)")
    if log_scale:
        ax.set_yscale("log")
    ax.set_title(title or "loss per epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8 if len(runs) <= 12 else 6, ncols=1 if len(runs) <= 12 else 2)
    return fig


def plot_comparison(run_dirs: Iterable[str | os.PathLike], path: str | os.PathLike,
                    log_scale: bool = False, title: str | None = None) -> Path:
    """Overlay the loss curves of runs into one image: train solid, validation dashed.

    Each run has one colour and is labelled by its name; a diverged run is drawn up to its
    last finished epoch, marked with an ``x``.

    Parameters
    ----------
    run_dirs : iterable of path
        Run directories.
    path : path
        Image to (over)write, e.g. ``compare.png``.
    log_scale : bool
        Logarithmic loss axis (learning rates far apart give losses far apart).

    Examples
    --------
    >>> plot_comparison(["runs/lr10", "runs/lr50"], "compare.png")   # doctest: +SKIP
    PosixPath('compare.png')
    """
    plot_format(path)  # before reading the runs
    return save_figure(comparison_figure(read_runs(run_dirs), log_scale, title), path)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# What configurations are ranked by: validation accuracy (of the weights kept) wherever a row has one,
# so that the test split chooses nothing; else test accuracy (issue 18).
RANK_COLUMNS = ("val_accuracy", "test_accuracy")


def ranked(rows: Sequence[dict]) -> tuple[str, list[dict]]:
    """``(column, rows best first)``: rows (a sweep's ``results.csv``, as dicts of numbers or their
    text) ranked by the first of :data:`RANK_COLUMNS` that some row has a number in; rows without
    one last, ties in the given order.

    Examples
    --------
    >>> ranked([{"name": "a", "val_accuracy": "0.5", "test_accuracy": 0.9},
    ...         {"name": "b", "val_accuracy": 0.7, "test_accuracy": 0.1}])[0]
    'val_accuracy'
    >>> [r["name"] for r in ranked([{"name": "a", "test_accuracy": 0.2}, {"name": "b", "test_accuracy": 0.3}])[1]]
    ['b', 'a']
    """
    def number(value) -> float | None:
        try:
            x = float(value)
        except (TypeError, ValueError):
            return None
        return x if math.isfinite(x) and not isinstance(value, bool) else None

    column = next((c for c in RANK_COLUMNS if any(number(r.get(c)) is not None for r in rows)), RANK_COLUMNS[-1])
    return column, sorted(rows, key=lambda r: -(number(r.get(column)) if number(r.get(column)) is not None
                                                else -math.inf))

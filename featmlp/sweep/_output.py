"""What a sweep writes: results.csv, loss.png, accuracy_vs_lr.png, sweep.json, run directories."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

from featmlp import __version__
from featmlp._figures import draw, drawing_processes, wait_drawn
from featmlp._io import atomic_write
from featmlp.runs.layout import CONFUSION_PLOT
from featmlp.runs.layout import LOSS_PLOT as RUN_LOSS_PLOT
from featmlp.runs.layout import RESULTS_FILE, SWEEP_ACCURACY_PLOT, SWEEP_FILE, SWEEP_LOSS_PLOT, write_json
from featmlp.runs.plots import plot_accuracy_vs_lr, plot_confusion, plot_history, plot_loss_curves
from featmlp.tables.store import FeatureTable
from featmlp.training.history import TRAIN_ACCURACY

from .._workers import spawn_pool, stopping
from ._grid import setting_label
from ._result import SweepResult


def write_sweep(out: Path, sweep: "SweepResult", table: FeatureTable, *, log_scale: bool,
                metrics: dict[str, dict], run_plots: bool = False) -> None:
    """Write the summary files of a sweep directory ``out``.

    The run directories were written as each configuration finished
    (``featmlp/sweep/_resume.py``); with ``run_plots`` each gets its ``loss.png`` and
    ``confusion.png`` here, a read-back one whose plots were deleted included (``metrics`` holds
    each run's ``metrics.json`` by name). Without, a run's page in a report draws them.
    """
    jobs = []
    for run in sweep if run_plots else ():
        loss, confusion = out / run.name / RUN_LOSS_PLOT, out / run.name / CONFUSION_PLOT
        cm = metrics[run.name].get("confusion_matrix")
        if run.history and not loss.is_file():
            jobs.append((plot_history, (run.history, loss), {"log_scale": log_scale}, loss))
        if cm is not None and not confusion.is_file():
            jobs.append((plot_confusion, (cm, table.class_names, confusion), {}, confusion))
    write_csv(out / RESULTS_FILE, sweep.table())
    lines, ylabel = accuracy_lines(sweep)
    summary = [(plot_loss_curves, (loss_curves(sweep), out / SWEEP_LOSS_PLOT), {"log_scale": log_scale},
                out / SWEEP_LOSS_PLOT),
               (plot_accuracy_vs_lr, (lines, out / SWEEP_ACCURACY_PLOT), {"ylabel": ylabel},
                out / SWEEP_ACCURACY_PLOT)]
    _render_all(jobs, summary)
    configs = [run.config for run in sweep]
    write_json(out / SWEEP_FILE, {
        "featmlp_version": __version__,
        "grid": {f: _distinct([_jsonable(getattr(c, f)) for c in configs]) for f in sweep.varying},
        "names": [run.name for run in sweep],
        "configs": [{"name": run.name, "engine": run.engine, "group": run.group,
                     "train": run.config.to_dict()} for run in sweep],
        "train_seconds": sweep.seconds,
        # read back from an interrupted run of the same sweep, not trained again
        "resumed": list(sweep.resumed),
    })


def _render_all(jobs: list, summary: list) -> None:
    """Draw the configurations' plots and the sweep's own (``(function, args, kwargs, path)`` each):
    in the command line's drawing processes (:func:`featmlp._figures.drawing_in_background`),
    else, when there are many, in spawned ones (the summary here meanwhile), else here.

    Matplotlib takes ~0.15-0.3 s a plot and two per configuration: the lecture's sweep of 10
    spent ~5 s drawing against ~0.4 s training. Spawned processes (fork is unsafe after
    numba's or torch's threads ran) share that out; a few plots are not worth their start-up.
    """
    workers = min(os.cpu_count() or 1, 4)
    if drawing_processes() or workers < 2 or len(jobs) < 8:
        for fn, args, kwargs, path in [*summary, *jobs]:
            draw(path, fn, *args, **kwargs)
        wait_drawn()
        return

    with stopping(spawn_pool(workers)) as pool:  # its workers stop with this process
        futures = [pool.submit(fn, *args, **kwargs) for fn, args, kwargs, _ in jobs]  # runs.plots: no torch
        for fn, args, kwargs, _ in summary:
            fn(*args, **kwargs)
        for future in futures:
            future.result()


def write_csv(path: Path, rows: list[dict]) -> None:
    """One row per dict, columns in the order keys first appear; None is written empty."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    with atomic_write(path, "w") as f:
        f.write(buf.getvalue())


def loss_curves(sweep: "SweepResult") -> list:
    """``(name, history, diverged_epoch)`` of every configuration, as
    :func:`featmlp.runs.plots.plot_loss_curves` takes them."""
    return [(run.name, run.result.history, run.diverged_epoch) for run in sweep]


def accuracy_lines(sweep: "SweepResult") -> tuple[dict, str]:
    """The sweep's ``accuracy_vs_lr.png`` as :func:`featmlp.runs.plots.plot_accuracy_vs_lr` takes it,
    ``(lines, ylabel)``: test accuracy (final training accuracy without a test split) against the
    learning rate, one line per setting of the other varying fields (the architecture)."""
    use_test = any(run.test_accuracy is not None for run in sweep)
    others = [f for f in sweep.varying if f != "lr"]
    lines: dict[str, list] = {}
    for run in sweep:
        label = ", ".join(f"{f} {setting_label(f, getattr(run.config, f))}" for f in others)
        lines.setdefault(label or "all", []).append((run.config.lr, _accuracy(run, use_test), run.diverged))
    return lines, "test accuracy" if use_test else "final training accuracy"


def _accuracy(run, use_test: bool):
    if use_test:
        return run.test_accuracy
    history = run.result.history
    return history[-1][TRAIN_ACCURACY] if history else None


def _distinct(values: list) -> list:
    seen = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen


def _jsonable(value):
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

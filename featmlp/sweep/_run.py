"""run_sweep: group the configurations, train each group together, the rest alone, report."""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from concurrent.futures import as_completed
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from featmlp._io import exclusive
from featmlp._workers import spawn_pool, terminate
from featmlp.errors import ConfigError
from featmlp.progress import Callback, ProgressHook, progress_callbacks
from featmlp.runs.directory import lock_file
from featmlp.runs.results import training_config
from featmlp.model.arrays import ArrayMLP
from featmlp.tables.sharded import ShardedArray
from featmlp.tables.store import FeatureTable
from featmlp.training import TrainConfig, TrainResult, threads_override
from featmlp.training.callbacks import as_callback
from featmlp.training.engines.arrays import arrays_fit, train_arrays
from featmlp.training.history import History

from ._grid import config_names, stack_key, varying_fields
from ._output import write_sweep
from ._result import SweepResult, SweepRun
from ._resume import SweepDirectory


def run_sweep(table: FeatureTable, configs: Sequence[TrainConfig], out=None, *, workers: int = 1,
              log_scale: bool = False, progress: ProgressHook | Callback | None = None,
              on_epoch: Callable[[str, dict], bool | None] | None = None,
              callbacks: Iterable[Callback] = (), force: bool = False, run_plots: bool = False) -> SweepResult:
    """Train every configuration on ``table``'s train split; those that can, together.

    Configurations that differ only in per-configuration numbers (``lr``, ``weight_decay``,
    ``momentum``, ``schedule``, ``epochs``, ``lecture_batch_size``) and share the network's
    shape, loss, optimiser, data handling and minibatch order train in one stacked pass
    (batched matrix products over a leading configuration axis): see ``stack_key`` in
    ``featmlp/sweep/_grid.py`` for the exact rule. Each ends with the history
    :func:`featmlp.training.train` gives it alone, to float rounding. The others (dropout,
    batch norm, early stopping, or alone in their group) run :func:`~featmlp.training.train`,
    in ``workers`` processes when ``workers > 1``. The lecture's gradient descent on a small
    table (:data:`ARRAYS_GROUP_ROWS`) trains one configuration after another in numpy
    (:func:`featmlp.training.engines.arrays.train_arrays`: ``train()``'s run without torch).

    A configuration whose loss or weights become NaN or infinite is marked diverged at that
    epoch, keeps its last finite weights and stops; the others go on.

    Parameters
    ----------
    table : FeatureTable
        Features and labels; the test split (when not empty) gives ``test_accuracy``.
    configs : list of TrainConfig
        For example from :func:`expand_grid`.
    out : path, optional
        Sweep directory: ``results.csv``, ``loss.png``, ``accuracy_vs_lr.png``, ``sweep.json``
        and one run directory per configuration (``out/<name>/``, as ``featmlp train`` writes).
        Each run directory is written as soon as its configuration finishes and recorded in
        ``progress.json``; the summary files are written at the end. Running the same sweep
        (same data, same configurations) into the same ``out`` again resumes it: finished
        configurations are read back, not trained again.
    workers : int
        Processes for the configurations trained alone (1: one after another, here).
    log_scale : bool
        Logarithmic loss axis in the plots.
    progress : callable or Callback, optional
        ``progress("sweep", configurations_done, configurations)``: told as the callbacks'
        ``on_progress`` is, and nothing else.
    on_epoch : callable, optional
        Deprecated (a DeprecationWarning): ``on_epoch(name, record)``, now a callback's
        ``on_config_epoch``; still called as before.
    callbacks : iterable of Callback
        Told the sweep's progress, ``on_progress("sweep", configurations_done, configurations)``,
        and after each epoch of each configuration ``on_config_epoch(name, record, history)``
        (by default their ``on_epoch(record, history)``); True stops that configuration. Not
        told ``on_train_begin``/``on_train_end`` or ``train``'s own progress (configurations
        trained together have no run of their own). Configurations trained in worker processes
        report their records when they finish, and cannot be stopped.
    force : bool
        Replace what ``out`` holds (another sweep, other files) instead of refusing.
    run_plots : bool
        Also draw each run directory's ``loss.png`` and ``confusion.png`` (two plots a
        configuration: ~5 s of the lecture's sweep of 10, against ~0.3 s of training). Off, the
        sweep draws its own two plots only; :func:`featmlp.runs.report.write_report` draws a
        run's missing plots from its ``metrics.json`` when asked for its page.

    Returns
    -------
    SweepResult

    Examples
    --------
    >>> import numpy as np
    >>> from featmlp.tables.store import FeatureTable
    >>> from featmlp.sweep import expand_grid, run_sweep
    >>> from featmlp.training import PRESETS
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 9)); y = (X[:, 0] > 0).astype(int)
    >>> table = FeatureTable(X[:150], y[:150], X[150:], y[150:], tuple("abcdefghi"), ("no", "yes"))
    >>> sweep = run_sweep(table, expand_grid(PRESETS["lecture"], lr=[1, 10], hidden=[(6,), (6, 6)]))
    >>> sweep.names
    ['lr1_h6', 'lr1_h6-6', 'lr10_h6', 'lr10_h6-6']
    >>> sorted(sweep.table()[0])[:4]
    ['diverged', 'diverged_epoch', 'engine', 'epochs_run']
    """
    configs = list(configs)
    if not configs:
        raise ConfigError("a sweep needs at least one configuration")
    for i, config in enumerate(configs):
        if not isinstance(config, TrainConfig):
            raise ConfigError(f"configuration {i} is a {type(config).__name__}, not a TrainConfig")
        try:
            config.validate()
        except ConfigError as e:
            raise ConfigError(f"configuration {i} ({config_names(configs)[i]}): {e}") from None
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
    if on_epoch is not None:
        warnings.warn("run_sweep(on_epoch=f) is deprecated: pass callbacks=[a featmlp.progress.Callback] and "
                      "override its on_config_epoch(name, record, history)", DeprecationWarning, stacklevel=2)
    # The progress hook first, then the callbacks, then the old on_epoch: the order each was told in.
    callbacks = [*progress_callbacks(progress), *(as_callback(cb) for cb in callbacks),
                 *([_OnEpoch(on_epoch)] if on_epoch is not None else [])]
    if out is None:
        return _run_sweep(table, configs, None, workers, log_scale, callbacks, force, run_plots)
    # One writer per sweep directory: two sweeps into it would train and record over each other.
    busy = f"another featmlp sweep or run is writing {out} (pid {{pid}}): wait for it, or choose another --out"
    with exclusive(lock_file(out), busy):
        return _run_sweep(table, configs, out, workers, log_scale, callbacks, force, run_plots)


# A group of the lecture's gradient descent trains one configuration after another in numpy
# (featmlp.training.engines.arrays: no torch to import, ~2 s, nor numba to load, ~1 s) up to this
# many rows x configurations; beyond, the stacked engine's fused kernel (10 configurations x
# 50,000 rows: ~0.1 s of epochs, against ~12 ms an epoch a configuration in numpy: ~2.4 s).
ARRAYS_GROUP_ROWS = 200_000


def _run_sweep(table, configs, out, workers, log_scale, callbacks, force, run_plots=False) -> SweepResult:
    # Configurations train together on one table in memory: a sharded table is read whole
    # (after a check that it fits), keeping its recorded fingerprint.
    if isinstance(table.X_train, ShardedArray) or isinstance(table.X_test, ShardedArray):
        # start-up: the streaming engine's module imports torch
        from featmlp.training.engines.streamed import in_memory

        table = dataclasses.replace(table, X_train=in_memory(table.X_train, "the sweep"),
                                    X_test=in_memory(table.X_test, "the sweep"))
    names = config_names(configs)
    n_classes = len(table.class_names)
    X, y = table.X_train, table.y_train
    # Test flips that average with the table's mirror images' features (X_test_mirror) are the
    # predictions' business: each configuration trains as training_config gives it, and its result
    # takes its own configuration back (finished), so that it is scored and saved with them.
    trained = [training_config(table, c) for c in configs]
    mirror = table.mirror() if any(c.flip or c.test_flip for c in trained) else None

    groups: dict = {}
    for i, config in enumerate(configs):
        key = stack_key(config)
        groups.setdefault(i if key is None else key, []).append(i)
    # a group trains in numpy whole or not at all (a member left out would train in no engine)
    in_numpy_groups = [members for members in groups.values() if len(X) * len(members) <= ARRAYS_GROUP_ROWS
                       and all(arrays_fit(X, trained[i], mirror=mirror) for i in members)]
    in_numpy = [i for members in in_numpy_groups for i in members]
    others = [members for members in groups.values() if members not in in_numpy_groups]
    stacked = [members for members in others if len(members) > 1]
    alone = [members[0] for members in others if len(members) == 1]

    results: list[TrainResult | None] = [None] * len(configs)
    metrics: dict[str, dict] = {}
    done = 0
    saving = 0.0  # seconds spent writing run directories, not counted as training
    directory = None if out is None else SweepDirectory(Path(out), table, configs, names, force=force)
    resumed = {} if directory is None else directory.resume()

    def finished(i: int, result: TrainResult) -> None:
        nonlocal done, saving
        result.config = configs[i]
        results[i] = result
        if directory is not None and i not in resumed:
            t = time.perf_counter()
            metrics[names[i]] = directory.save(i, result, log_scale=log_scale)
            saving += time.perf_counter() - t
        done += 1
        for cb in callbacks:
            cb.on_progress("sweep", done, len(configs))

    for i, (result, written) in resumed.items():
        metrics[names[i]] = written
        finished(i, result)
    # Only what is not read back trains; the groups (and the engine and group each run is
    # reported with) stay those of the whole sweep.
    to_stack = [left for left in ([i for i in members if i not in resumed] for members in stacked)
                if left]
    pending = [i for i in alone if i not in resumed]
    numpy_pending = [i for i in in_numpy if i not in resumed]

    start = time.perf_counter()
    pool = None
    futures = {}
    if pending and workers > 1:
        # Spawn, not fork: a forked child of a process that has run torch's thread pools can
        # deadlock. Each worker gets its share of the cores, or the count the user set
        # (featmlp.training.threads_override), and train() applies its policy within that.
        n_workers = min(workers, len(pending))
        threads = threads_override() or max(1, (os.cpu_count() or 1) // n_workers)
        # Its workers stop with this process (Ctrl-C, SIGTERM, even SIGKILL: featmlp._workers).
        pool = spawn_pool(n_workers, initializer=_worker_init, initargs=(X, y, n_classes, threads, mirror))
    try:
        if pool is not None:  # an interrupt while they are submitted stops the workers too
            futures = {pool.submit(_worker_train, trained[i]): i for i in pending}
        for i in numpy_pending:  # the lecture's gradient descent, train()'s run in numpy (no torch)
            named = [_Named(cb, names[i]) for cb in callbacks]
            finished(i, train_arrays(X, y, trained[i], n_classes=n_classes, callbacks=named))
        if to_stack:
            # start-up: the stacked engine imports torch
            from featmlp.training.engines.stacked import train_stacked
        for members in to_stack:
            train_stacked(X, y, [trained[i] for i in members], [names[i] for i in members],
                          n_classes, callbacks=callbacks,
                          on_done=lambda j, result, members=members: finished(members[j], result))
        if pool is None and pending:
            # start-up: torch loads for the configurations train() runs with it
            from featmlp.training import train
        if pool is None:
            for i in pending:
                named = [_Named(cb, names[i]) for cb in callbacks]
                finished(i, train(X, y, trained[i], n_classes=n_classes, callbacks=named, mirror=mirror))
        else:
            # As they complete, so that each is saved as soon as it can be.
            for future in as_completed(futures):
                i = futures[future]
                result = future.result()
                told = History()  # each record with the history up to it, as train() tells them
                for record in result.history:
                    told.append(record)
                    for cb in callbacks:
                        cb.on_config_epoch(names[i], record, told)
                finished(i, result)
    except BaseException:  # Ctrl-C, SIGTERM, an error: the workers stop now, not after their configurations
        if pool is not None:
            terminate(pool)
        raise
    if pool is not None:
        pool.shutdown(cancel_futures=True)
    # Saving blocks training only when everything trains here; beside worker processes the
    # wall clock is the measure.
    seconds = time.perf_counter() - start - (saving if pool is None else 0.0)

    group_of = {i: g for g, members in enumerate(stacked) for i in members}
    accuracies = _test_accuracies(results, table)
    runs = [SweepRun(names[i], configs[i], results[i], accuracies[i],
                     "stacked" if i in group_of else "train", group_of.get(i))
            for i in range(len(configs))]
    sweep = SweepResult(runs, varying_fields(configs), seconds,
                        None if out is None else Path(out),
                        tuple(names[i] for i in sorted(resumed)))
    if out is not None:
        write_sweep(Path(out), sweep, table, log_scale=log_scale, metrics=metrics, run_plots=run_plots)
    return sweep


class _OnEpoch(Callback):
    """The deprecated ``on_epoch(name, record)`` of :func:`run_sweep` as a callback."""

    def __init__(self, fn: Callable[[str, dict], bool | None]):
        self.fn = fn

    def on_config_epoch(self, name: str, record: dict, history: list[dict]) -> bool | None:
        return self.fn(name, record)


class _Named(Callback):
    """A sweep's callback inside ``train()`` of one configuration: told its epochs with the name.

    Only the epochs: the sweep's callbacks hear neither the run's begin and end nor its progress.
    """

    def __init__(self, callback: Callback, name: str):
        self.callback, self.name = callback, name

    def on_epoch(self, record: dict, history: list[dict]) -> bool | None:
        return self.callback.on_config_epoch(self.name, record, history)


def _test_accuracies(results: list[TrainResult], table: FeatureTable) -> list[float | None]:
    """Test accuracy of each result, as ``result.predict`` gives it, for a fraction of the cost.

    Configurations fitted with the same scaler share one scaled copy of the test split, and the
    class is the argmax of the logits (softmax does not change it): 10 lecture configurations
    scored in ~4 ms instead of ~18 ms, a tenth of the sweep's training time.
    """
    if len(table.y_test) == 0:
        return [None] * len(results)
    scaled: dict = {}
    accuracies = []
    for result in results:
        if result.config.test_flip:  # flip-averaged: as result.predict_proba gives it
            proba = result.predict_proba(table.X_test, mirror_features=table.X_test_mirror)
            accuracies.append(float(np.mean(proba.argmax(axis=1) == table.y_test)))
            continue
        s = result.scaler
        key = (s.kind, s.offset.tobytes(), s.scale.tobytes())
        if key not in scaled:
            scaled[key] = s.transform(table.X_test)
        model = result.model
        if isinstance(model, ArrayMLP):
            with np.errstate(over="ignore", invalid="ignore"):  # diverged weights: NaN, as torch's
                pred = model.logits(scaled[key]).argmax(axis=1)
        else:
            # start-up: torch, already loaded by what trained this model
            import torch

            with torch.inference_mode():
                X = torch.from_numpy(scaled[key]).to(next(model.parameters()).device)
                pred = model(X).argmax(dim=1).cpu().numpy()
        accuracy = float(np.mean(pred == table.y_test))
        accuracies.append(accuracy if math.isfinite(accuracy) else None)
    return accuracies


_WORKER: dict = {}


def _worker_init(X, y, n_classes, threads, mirror=None) -> None:
    import torch

    torch.set_num_threads(threads)
    _WORKER.update(X=X, y=y, n_classes=n_classes, mirror=mirror)


def _worker_train(config: TrainConfig) -> TrainResult:
    # start-up: in the worker, which trains with torch
    from featmlp.training import train

    return train(_WORKER["X"], _WORKER["y"], config, n_classes=_WORKER["n_classes"], mirror=_WORKER["mirror"])

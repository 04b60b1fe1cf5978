"""A run directory: train on a feature table, evaluate, plot, save, all in one folder.

``DIR/`` holds:

- ``config.json``: everything needed to repeat the run (data, feature set, every training
  setting); ``featmlp train --config DIR/config.json`` or :func:`repeat_config` reads it back;
- ``metrics.json``: ``test_accuracy``, ``diverged``, ``stop_reason``, per-class scores, the
  confusion matrix and ``history`` (one record per epoch: ``epoch``, ``train_loss``,
  ``train_accuracy``, ``seconds``, ``lr``, and ``val_loss``/``val_accuracy`` with validation);
- ``predictions.csv``: one row per test image, its name, true and predicted class and the top
  classes (:mod:`featmlp.runs.predictions`); ``thumbnails.npz``: the test images the report shows,
  when the run had them at hand (:mod:`featmlp.runs.gallery`);
- ``loss.png`` (kept current while training runs), ``confusion.png``;
- ``model.safetensors`` + ``model.json``: the model bundle (:mod:`featmlp.runs.bundle`);
- ``features.npz`` when the run extracted its own features (so ``evaluate DIR`` needs no data).

Paths a run records are relative to the run when they lie inside it (``cp -r A B`` gives a
``B`` that reads its own files), and ``config.json`` records the feature table's fingerprint
(:func:`featmlp.tables.store.table_fingerprint`), so ``evaluate`` notices a feature file that is not
the data the model was trained on.

A run is built in a staging directory beside ``DIR`` and renamed in when whole
(:class:`featmlp.runs.directory.RunDirectory`). What ``featmlp run`` adds before training (load
the images, extract their features into the run) is :mod:`featmlp.runs.job`'s; evaluating a
saved run again is :mod:`featmlp.runs.evaluate`'s.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featmlp import __version__
from featmlp._figures import draw, wait_drawn
from featmlp.errors import DataError
from featmlp.model import Scaler
from featmlp.runs.bundle import save_bundle
from featmlp.runs.directory import RunDirectory, check_out, staging_dir
from featmlp.runs.evaluate import names_digest, run_metrics
from featmlp.runs.gallery import write_thumbnails
from featmlp.runs.layout import (CONFIG_FILE, CONFUSION_PLOT, LOSS_PLOT, METRICS_FILE, PREDICTIONS_FILE,
                                 TENSORBOARD_DIR, THUMBNAILS_FILE, read_json, write_json)
from featmlp.runs.plots import LivePlot, plot_confusion, plot_history
from featmlp.runs.predictions import Predictions, predict_split, write_predictions
from featmlp.tables.passes import nonfinite_rows
from featmlp.tables.sharded import ShardedArray
from featmlp.tables.store import FeatureTable, table_fingerprint
from featmlp.training import TrainConfig, TrainResult, check_training
from featmlp.training.engines.arrays import arrays_fit, train_arrays
from featmlp.training.history import SECONDS


@dataclass
class RunResult:
    """What :func:`train_run` returns: the training result, the test metrics, where it is."""

    result: TrainResult
    metrics: dict
    out: Path


def score_test(result: TrainResult, table: FeatureTable) -> dict:
    """Accuracy, per-class scores and confusion matrix on the table's test split, in order (a sharded
    test split predicted a shard at a time)."""
    return score_predictions(predict_test_split(result, table), table)


def predict_test_split(model, table: FeatureTable) -> Predictions | None:
    """The predictions of ``model`` on the table's test split (None when it has no rows)."""
    return predict_split(model, table, "test") if len(table.y_test) else None  # never shuffled: rows in order


def score_predictions(preds: Predictions | None, table: FeatureTable) -> dict:
    """:func:`run_metrics` of the test split's predictions (those of an empty split without them)."""
    if preds is None:
        return run_metrics(table.y_test, [], table.class_names)
    return run_metrics(preds.y_true, preds.y_pred, table.class_names)


def write_predictions_of(out: Path, preds: Predictions | None, test_images=None) -> None:
    """``predictions.csv`` (and, with the test images at hand, the report's ``thumbnails.npz``) in ``out``."""
    if preds is None:
        return
    write_predictions(out / PREDICTIONS_FILE, preds)
    if test_images is not None:
        write_thumbnails(out / THUMBNAILS_FILE, test_images, preds)


def training_config(table: FeatureTable, config: TrainConfig) -> TrainConfig:
    """``config`` as training takes it: test flips that average with the mirror images' features the
    table holds (``X_test_mirror``: features with no mirror permutation) are the predictions'
    business alone, so training gets ``test_flip=False``; otherwise ``config`` itself."""
    if config.test_flip and table.X_test_mirror is not None and table.mirror() is None:
        return dataclasses.replace(config, test_flip=False)
    return config


def check_run(table: FeatureTable, config: TrainConfig, *, out_of_core: bool | None = None) -> None:
    """Raise the error a run on ``table`` with ``config`` would meet, before anything is written.

    The settings, the device, what :func:`featmlp.training.check_training` checks on the training
    rows (NaN, validation split, early stopping, memory), at least two classes in training,
    test rows without NaN or infinities (they would be scored as if they were images), and
    columns too large to scale. A sharded table is checked in passes over its shards, never
    read whole.
    """
    n_classes = len(table.class_names)
    if not len(table.y_train):
        raise DataError(f"no training images: all {len(table.y_test)} are test images (--test-fraction 1, or a folder "
                        f"with only test/); to score a saved model on them: featmlp evaluate RUN --data SOURCE; to "
                        f"train, give a folder with train/ or a --test-fraction below 1")
    config = training_config(table, config)
    mirror = table.mirror() if config.flip or config.test_flip else None
    check_training(table.X_train, table.y_train, config, n_classes=n_classes, mirror=mirror, out_of_core=out_of_core)
    present = np.unique(np.asarray(table.y_train))
    if len(present) < 2:
        only = table.class_names[int(present[0])] if len(present) else "none"
        raise DataError(f"the training set holds one class ({only!r}, {len(table.y_train)} rows): a classifier "
                        f"needs at least 2 classes in train")
    if len(table.y_test):
        bad = nonfinite_rows(table.X_test)
        if len(bad):
            # Refused, not left out: leaving rows out would change what the test accuracy
            # is measured on, and such rows mean the extraction went wrong for those images.
            raise DataError(f"the test features hold NaN or infinite values in {len(bad)} of "
                            f"{len(table.y_test)} rows (first: row {bad[0]}): clean or re-extract them")
    if not isinstance(table.X_train, ShardedArray):
        # A sharded table's float32 values, finite as checked, cannot overflow the float64
        # scaler: no pass over its shards for that (training makes its own).
        Scaler.fit(table.X_train, config.scaler, names=table.feature_names)


def train_run(table: FeatureTable, config: TrainConfig, out: str | os.PathLike | RunDirectory, *,
              data: dict | None = None, callbacks=(), progress=None, live_plot_seconds: float = 2.0,
              log_scale: bool = False, overwrite: bool = False, tensorboard: bool = False,
              out_of_core: bool | None = None, test_images=None) -> RunResult:
    """Train on ``table``'s train split, evaluate on its test split, write everything to ``out``.

    Parameters
    ----------
    table : FeatureTable
        Features and labels (see :func:`featmlp.tables.store.load_features`). A sharded table
        (``DIR.features/``) larger than a quarter of the free memory is trained out of core
        and scored on its test split a shard at a time.
    config : TrainConfig
        Every training setting (a preset, overridden field by field).
    out : path or RunDirectory
        Run directory. It is built beside (:func:`staging_dir`, where ``loss.png`` shows
        the loss while training runs) and renamed onto ``out`` when complete; an error or a
        kill leaves ``out`` as it was. An open :class:`RunDirectory` is written into and
        left for its owner to commit (``featmlp run`` extracts into it first).
    data : dict, optional
        How the features were made (source, ``feature_file`` ...), recorded in ``config.json``;
        a ``feature_file`` inside the run is recorded relative to it.
    callbacks : iterable
        Passed to :func:`featmlp.training.train` (e.g. a per-epoch printer).
    live_plot_seconds : float
        ``loss.png`` is rewritten at most this often while training runs.
    overwrite : bool
        Replace an existing ``out`` (once the new run is complete); without it an existing,
        non-empty ``out`` is refused before anything is done.
    tensorboard : bool
        Also log every epoch and the test metrics for TensorBoard, in ``out/tensorboard``.
    out_of_core : bool, optional
        Passed to :func:`featmlp.training.train`: stream a sharded table (True), read it (False),
        or decide by its size (None).
    test_images : array or ImageArray, optional
        The images of the table's test split, in its order: thumbnails of those the report shows
        are kept in the run (``thumbnails.npz``).

    Returns
    -------
    RunResult
        With ``out`` the final run directory.

    Raises
    ------
    FeatmlpError
        Bad settings or data (checked before anything is written, see :func:`check_run`).
    """
    check_run(table, config, out_of_core=out_of_core)
    if not isinstance(out, RunDirectory):
        check_out(out, overwrite=overwrite)
    logger = None
    if tensorboard:  # a missing package is refused here, before any file is written
        # optional dependency: tensorboard loads with --tensorboard only
        from featmlp.runs.tensorboard import TensorBoardLogger

        staging = out.path if isinstance(out, RunDirectory) else staging_dir(out)
        logger = TensorBoardLogger(staging / TENSORBOARD_DIR)
    if isinstance(out, RunDirectory):
        return _train_into(out, table, config, data, callbacks, progress, live_plot_seconds, log_scale, logger,
                           out_of_core, test_images)
    with RunDirectory(out, overwrite=overwrite) as rd:
        return _train_into(rd, table, config, data, callbacks, progress, live_plot_seconds, log_scale, logger,
                           out_of_core, test_images)

def _train_into(rd: RunDirectory, table, config, data, callbacks, progress, live_plot_seconds, log_scale,
                logger, out_of_core=None, test_images=None) -> RunResult:
    data = _recorded_data(dict(data or {}), rd)
    write_config(rd.path, table, config, data)
    live = LivePlot(rd.path / LOSS_PLOT, every_seconds=live_plot_seconds, log_scale=log_scale)
    trained = training_config(table, config)
    mirror = table.mirror() if trained.flip or trained.test_flip else None
    callbacks = [live, *callbacks, *([logger] if logger else [])]
    if arrays_fit(table.X_train, trained, mirror=mirror, out_of_core=out_of_core):
        # The lecture's gradient descent: the same run as train()'s, in numpy, without importing
        # torch (~2 s of a ~3 s lecture run; featmlp.training.engines.arrays).
        result = train_arrays(table.X_train, table.y_train, trained, n_classes=len(table.class_names),
                              callbacks=callbacks, progress=progress)
    else:
        # start-up: torch loads for the runs that need it
        from featmlp.training import train

        result = train(table.X_train, table.y_train, trained, n_classes=len(table.class_names),
                       callbacks=callbacks, progress=progress, mirror=mirror, out_of_core=out_of_core)
    result.config = config  # with its test flips: the predictions below average with X_test_mirror
    run = write_results(rd.path, table, result, log_scale=log_scale, loss_plotted=True,  # by `live`
                        test_images=test_images)
    if logger is not None:
        logger.log_metrics(run.metrics)
    return RunResult(run.result, run.metrics, rd.out)


def _recorded_data(data: dict, rd: RunDirectory) -> dict:
    """``data`` with its ``feature_file`` relative to the run when it lies inside it, else as given.

    A feature file inside the run being replaced (``train DIR/features.npz --out DIR
    --force``) is linked into the new run first, so the replacement does not delete it.
    """
    given = data.get("feature_file")
    if not given:
        return data
    path = Path(os.path.abspath(given))
    for root in (rd.path, Path(os.path.abspath(rd.out))):
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue
        if root != rd.path:
            target = rd.path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():  # a sharded table: its files linked one by one
                shutil.copytree(path, target, copy_function=_link_or_copy)
            else:
                _link_or_copy(path, target)
        data["feature_file"] = rel.as_posix()
        return data
    return data  # outside the run: as given (the CLI gives absolute paths)


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_config(out: str | os.PathLike, table: FeatureTable, config: TrainConfig, data: dict | None = None, *,
                 fingerprint: str | None = None) -> None:
    """Write ``config.json``: the data it ran on (with the table's fingerprint) and every training setting."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / CONFIG_FILE, {
        "featmlp_version": __version__,
        "data": {**(data or {}), "features": table.feature_set, "feature_names": feature_names_record(table),
                 "class_names": list(table.class_names), "n_train": len(table.y_train),
                 "n_test": len(table.y_test), **{k: v for k, v in table.meta.items() if k != "features"},
                 "table_fingerprint": fingerprint or table_fingerprint(table)},
        "train": config.to_dict(),
    })


# Feature names config.json lists; more (kmeans: 14,400) are recorded by a rule, their count and hash.
NAMES_LISTED = 64


def feature_names_record(table: FeatureTable):
    """What ``config.json`` records of a table's feature names: the list itself when short, else
    ``{"count", "rule", "first", "last", "sha256"}`` (the feature file keeps every name; ``sha256``
    is :func:`names_digest`'s, which :func:`featmlp.runs.evaluate.check_columns` compares)."""
    names = [str(n) for n in table.feature_names]
    if len(names) <= NAMES_LISTED:
        return names
    rule = "the feature file's feature_names"
    if table.feature_set:
        width, height = table.meta.get("image_size") or (None, None)
        state = ", state=the run's fitted state" if table.fitted else ""
        rule = (f"featmlp.features.feature_names({table.feature_set!r}, image_shape=({height}, {width}){state}), "
                f"as in {rule}")
    return {"count": len(names), "rule": rule, "first": names[:3], "last": names[-3:],
            "sha256": names_digest(names)}


def write_results(out: str | os.PathLike, table: FeatureTable, result: TrainResult, *,
                  log_scale: bool = False, plots: bool = True, loss_plotted: bool = False,
                  test_images=None) -> RunResult:
    """Evaluate a trained result on the test split; write metrics, predictions, plots and the model bundle.

    ``loss_plotted``: ``out/loss.png`` already shows this history (train_run's live plot draws
    it when training ends), so it is not drawn a second time (~0.3 s, a tenth of a lecture run).
    ``test_images``: the test split's images, for the report's thumbnails (:func:`train_run`).
    """
    out = Path(out)
    preds = predict_test_split(result, table)
    metrics = {
        **score_predictions(preds, table),
        "diverged": result.diverged,
        "stop_reason": result.stop_reason,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "train_seconds": float(sum(r[SECONDS] for r in result.history)),
        "device": result.device,
        "history": result.history,
    }
    # The plots first: within drawing_in_background() (the command line's) they are drawn
    # beside the files below, else now; all are written when this returns.
    if plots and metrics.get("confusion_matrix") is not None:
        draw(out / CONFUSION_PLOT, plot_confusion, metrics["confusion_matrix"], table.class_names,
             out / CONFUSION_PLOT)
    if plots and result.history and not loss_plotted:
        draw(out / LOSS_PLOT, plot_history, result.history, out / LOSS_PLOT, log_scale=log_scale)
    write_predictions_of(out, preds, test_images)
    save_bundle(out, result.model, result.spec, result.scaler, table.feature_set or "unknown",
                table.class_names, extra={"train": result.config.to_dict(),
                                          "test_accuracy": metrics["test_accuracy"],
                                          # new images are resized to this before their features
                                          "image_size": table.meta.get("image_size")},
                feature_state=table.fitted, mirror=result.mirror if result.config.test_flip else None)
    wait_drawn()
    write_json(out / METRICS_FILE, metrics)
    return RunResult(result, metrics, out)


def repeat_config(run_dir: str | os.PathLike) -> tuple[dict, TrainConfig]:
    """The data settings and the :class:`TrainConfig` recorded in a run's ``config.json``."""
    cfg = read_json(Path(run_dir) / CONFIG_FILE)
    return cfg.get("data", {}), TrainConfig.from_dict(cfg["train"])

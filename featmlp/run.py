"""A run directory: train on a feature table, evaluate, plot, save, all in one folder.

``DIR/`` holds:

- ``config.json``: everything needed to repeat the run (data, feature set, every training
  setting); ``featmlp train --config DIR/config.json`` or :func:`repeat_config` reads it back;
- ``metrics.json``: ``test_accuracy``, ``diverged``, ``stop_reason``, per-class scores, the
  confusion matrix and ``history`` (one record per epoch: ``epoch``, ``train_loss``,
  ``train_accuracy``, ``seconds``, ``lr``, and ``val_loss``/``val_accuracy`` with validation);
- ``loss.png`` (kept current while training runs), ``confusion.png``;
- ``model.safetensors`` + ``model.json``: the model bundle (:mod:`featmlp.bundle`);
- ``features.npz`` when the run extracted its own features (so ``evaluate DIR`` needs no data).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from ._io import atomic_write
from .bundle import save_bundle
from .evaluate import evaluate
from .plots import plot_confusion, plot_history
from .store import FeatureTable
from .train import LivePlot, TrainConfig, TrainResult, train

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
LOSS_PLOT = "loss.png"
CONFUSION_PLOT = "confusion.png"
FEATURES_FILE = "features.npz"


@dataclass
class RunResult:
    """What :func:`train_run` returns: the training result, the test metrics, where it is."""

    result: TrainResult
    metrics: dict
    out: Path


def write_json(path: str | os.PathLike, obj) -> None:
    """Write JSON atomically, with NaN/inf written as null (strict JSON readers reject NaN)."""
    with atomic_write(path, "w") as f:
        json.dump(_finite(obj), f, indent=2)
        f.write("\n")


def _finite(obj):
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        return _finite(obj.item())
    return obj


def read_json(path: str | os.PathLike) -> dict:
    from .errors import DataError

    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path} does not exist: is {path.parent} a featmlp run directory?") from None
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from None


def score_test(result: TrainResult, table: FeatureTable) -> dict:
    """Accuracy, per-class scores and confusion matrix on the table's test split, in order."""
    if len(table.y_test) == 0:
        return {"test_accuracy": None, "n_test": 0}
    pred = result.predict(table.X_test)  # never shuffled: rows stay aligned with y_test
    m = evaluate(table.y_test, pred, table.class_names)
    return {"test_accuracy": m["accuracy"], "n_test": m["n_samples"], "per_class": m["per_class"],
            "macro": m["macro"], "weighted": m["weighted"], "confusion_matrix": m["confusion_matrix"]}


def train_run(table: FeatureTable, config: TrainConfig, out: str | os.PathLike, *, data: dict | None = None,
              callbacks=(), progress=None, live_plot_seconds: float = 2.0, log_scale: bool = False) -> RunResult:
    """Train on ``table``'s train split, evaluate on its test split, write everything to ``out``.

    Parameters
    ----------
    table : FeatureTable
        Features and labels (see :func:`featmlp.store.load_features`).
    config : TrainConfig
        Every training setting (a preset, overridden field by field).
    out : path
        Run directory (created; files in it are replaced atomically).
    data : dict, optional
        How the features were made (source, feature file ...), recorded in ``config.json``.
    callbacks : iterable
        Passed to :func:`featmlp.train.train` (e.g. a per-epoch printer).
    live_plot_seconds : float
        ``loss.png`` is rewritten at most this often while training runs.

    Returns
    -------
    RunResult
    """
    out = Path(out)
    config.validate()
    write_config(out, table, config, data)
    live = LivePlot(out / LOSS_PLOT, every_seconds=live_plot_seconds, log_scale=log_scale)
    mirror = table.mirror() if config.flip or config.test_flip else None
    result = train(table.X_train, table.y_train, config, n_classes=len(table.class_names),
                   callbacks=[live, *callbacks], progress=progress, mirror=mirror)
    return write_results(out, table, result, log_scale=log_scale)


def write_config(out: str | os.PathLike, table: FeatureTable, config: TrainConfig, data: dict | None = None) -> None:
    """Write ``config.json``: the data it ran on and every training setting."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / CONFIG_FILE, {
        "featmlp_version": __version__,
        "data": {**(data or {}), "features": table.feature_set, "feature_names": list(table.feature_names),
                 "class_names": list(table.class_names), "n_train": len(table.y_train),
                 "n_test": len(table.y_test), **{k: v for k, v in table.meta.items() if k != "features"}},
        "train": config.to_dict(),
    })


def write_results(out: str | os.PathLike, table: FeatureTable, result: TrainResult, *,
                  log_scale: bool = False, plots: bool = True) -> RunResult:
    """Evaluate a trained result on the test split; write metrics, plots and the model bundle."""
    out = Path(out)
    metrics = {
        **score_test(result, table),
        "diverged": result.diverged,
        "stop_reason": result.stop_reason,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "train_seconds": float(sum(r["seconds"] for r in result.history)),
        "device": result.device,
        "history": result.history,
    }
    if plots and metrics.get("confusion_matrix") is not None:
        plot_confusion(metrics["confusion_matrix"], table.class_names, out / CONFUSION_PLOT)
    if plots and result.history:
        plot_history(result.history, out / LOSS_PLOT, log_scale=log_scale)
    save_bundle(out, result.model, result.spec, result.scaler, table.feature_set or "unknown",
                table.class_names, extra={"train": result.config.to_dict(),
                                          "test_accuracy": metrics["test_accuracy"],
                                          # new images are resized to this before their features
                                          "image_size": table.meta.get("image_size")},
                feature_state=table.fitted, mirror=result.mirror if result.config.test_flip else None)
    write_json(out / METRICS_FILE, metrics)
    return RunResult(result, metrics, out)


def repeat_config(run_dir: str | os.PathLike) -> tuple[dict, TrainConfig]:
    """The data settings and the :class:`TrainConfig` recorded in a run's ``config.json``."""
    cfg = read_json(Path(run_dir) / CONFIG_FILE)
    return cfg.get("data", {}), TrainConfig.from_dict(cfg["train"])

"""What a run directory holds, by name, and its JSON files read and written.

The one home of the run directory's file names (:mod:`featmlp.runs.results` describes what each
holds, :mod:`featmlp.runs.bundle` writes the model's files). It imports neither torch nor numpy,
so what only reads a finished run (``featmlp compare``, ``featmlp report``) starts at once;
:mod:`featmlp.runs` lists these names in its public namespace.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from featmlp._io import atomic_write
from featmlp.errors import DataError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
LOSS_PLOT = "loss.png"
CONFUSION_PLOT = "confusion.png"
FEATURES_FILE = "features.npz"
# One row per test image: its name, true and predicted class, the top classes (featmlp.runs.predictions).
PREDICTIONS_FILE = "predictions.csv"
# Small JPEG thumbnails of the test images the report shows (featmlp.runs.gallery): a run writes it while
# it has the images at hand, so the report needs neither the images nor their source.
THUMBNAILS_FILE = "thumbnails.npz"
TENSORBOARD_DIR = "tensorboard"
# Where an extraction into the run keeps its finished chunks (featmlp.tables.extract.extract_dataset):
# kept when a run fails or is killed, so running it again resumes the extraction.
FEATURES_PARTIAL = FEATURES_FILE + ".partial"

# What `featmlp evaluate RUN --data SOURCE --out DIR` writes beside its metrics, predictions and plots:
# what was scored with what (featmlp.runs.score); it marks DIR as featmlp's (featmlp._outputs).
EVALUATION_FILE = "evaluation.json"

# The model bundle (featmlp.runs.bundle), in a run directory or on its own.
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
FEATURE_STATE_FILE = "features.safetensors"

# A run's or a sweep's report (featmlp.runs.report).
REPORT_FILE = "report.html"

# A sweep directory (featmlp.sweep): one run directory per configuration, and these.
SWEEP_FILE = "sweep.json"
PROGRESS_FILE = "progress.json"
RESULTS_FILE = "results.csv"
SWEEP_LOSS_PLOT = "loss.png"
SWEEP_ACCURACY_PLOT = "accuracy_vs_lr.png"
# What marks a sweep directory (featmlp._outputs).
SWEEP_FILES = (SWEEP_FILE, PROGRESS_FILE)
# What the summary of a sweep is made of (written at its end): removed when --force replaces a
# sweep, so that a kill after that never shows the old sweep's table beside the new runs.
SUMMARY_FILES = (RESULTS_FILE, SWEEP_LOSS_PLOT, SWEEP_ACCURACY_PLOT, SWEEP_FILE, REPORT_FILE)


def write_json(path: str | os.PathLike, obj) -> None:
    """Write JSON atomically, with NaN/inf written as null (strict JSON readers reject NaN)."""
    with atomic_write(path, "w") as f:
        json.dump(_finite(obj), f, indent=2)
        f.write("\n")


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    # A numpy scalar, without importing numpy: when it is not loaded, obj cannot be one.
    np = sys.modules.get("numpy")
    if np is not None and isinstance(obj, np.generic):
        return _finite(obj.item())
    return obj


def read_json(path: str | os.PathLike) -> dict:
    """A run's JSON file; a :class:`DataError` says which is missing or unreadable."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path} does not exist: is {path.parent} a featmlp run directory?") from None
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from None


def resolve_feature_file(run_dir: str | os.PathLike, recorded: str) -> Path:
    """The feature file a run's ``config.json`` records, found relative to the run directory."""
    path = Path(recorded)
    return path if path.is_absolute() else Path(run_dir) / path

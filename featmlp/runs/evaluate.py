"""Evaluation: classification metrics from true and predicted labels, as JSON-ready numbers, and
a saved run scored again on a feature file (:func:`evaluate_run`, with its compatibility checks).

Evaluation never shuffles: ``y_true[i]`` and ``y_pred[i]`` are the same sample. (The lecture's
test loader shuffled the images and compared the predictions with unshuffled labels.)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from featmlp.errors import DataError, FeatmlpError
from featmlp.features import state_to_arrays
from featmlp.runs.layout import CONFIG_FILE, read_json, resolve_feature_file
from featmlp.runs.predictions import Predictions, predict_split
from featmlp.tables.passes import nonfinite_rows
from featmlp.tables.store import load_features, table_fingerprint


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Counts ``cm[i, j]`` of samples of true class ``i`` predicted as ``j``.

    Examples
    --------
    >>> confusion_matrix([0, 1, 1], [0, 0, 1], 2).tolist()
    [[1, 0], [1, 1]]
    """
    y_true, y_pred = _labels(y_true, y_pred, n_classes)
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )


def evaluate(y_true, y_pred, class_names) -> dict:
    """Accuracy, per-class precision/recall/F1/support, their macro and weighted averages, and
    the confusion matrix.

    Parameters
    ----------
    y_true, y_pred : array-like of int
        Class indices ``0 .. len(class_names) - 1``, one per sample, in the same order.
    class_names : sequence of str
        Name of each class index.

    Returns
    -------
    dict
        ``accuracy``, ``n_samples``, ``per_class`` (one dict per class: ``class``,
        ``precision``, ``recall``, ``f1``, ``support``), ``macro`` and ``weighted`` (precision,
        recall, f1), ``confusion_matrix`` (list of lists, rows = true class). A ratio with a zero
        denominator (a class never predicted, or absent) is 0, as scikit-learn's
        ``zero_division=0``. The macro average is over the classes that occur, as true or as
        predicted classes (scikit-learn's labels when none are given): a labelled folder of 2 of
        the model's 10 classes (``evaluate --data``) is not averaged with 8 zeros.

    Examples
    --------
    >>> m = evaluate([0, 1, 1, 2], [0, 1, 2, 2], ["a", "b", "c"])
    >>> m["accuracy"], m["per_class"][1]["recall"], m["confusion_matrix"][1]
    (0.75, 0.5, [0, 1, 1])
    """
    class_names = [str(c) for c in class_names]
    n_classes = len(class_names)
    if n_classes == 0:
        raise DataError("class_names is empty")
    cm = confusion_matrix(y_true, y_pred, n_classes)
    n = int(cm.sum())
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    weights = support / n if n else np.zeros(n_classes)
    occur = (support + predicted) > 0
    return {
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "n_samples": n,
        "per_class": [
            {"class": name, "precision": float(p), "recall": float(r), "f1": float(f),
             "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
        ],
        "macro": {"precision": float(precision[occur].mean()) if occur.any() else 0.0,
                  "recall": float(recall[occur].mean()) if occur.any() else 0.0,
                  "f1": float(f1[occur].mean()) if occur.any() else 0.0},
        "weighted": {"precision": float(weights @ precision), "recall": float(weights @ recall),
                     "f1": float(weights @ f1)},
        "confusion_matrix": cm.tolist(),
    }


def run_metrics(y_true, y_pred, class_names) -> dict:
    """The test-split scores as a run's ``metrics.json`` holds them (and ``featmlp evaluate --json``
    prints them): :func:`evaluate`'s numbers under the run's key names.

    Returns
    -------
    dict
        ``test_accuracy``, ``n_test``, ``per_class``, ``macro``, ``weighted``,
        ``confusion_matrix``; with no test samples only ``test_accuracy`` None and ``n_test`` 0.

    Examples
    --------
    >>> m = run_metrics([0, 1, 1, 2], [0, 1, 2, 2], ["a", "b", "c"])
    >>> m["test_accuracy"], m["n_test"]
    (0.75, 4)
    """
    if len(y_true) == 0:
        return {"test_accuracy": None, "n_test": 0}
    m = evaluate(y_true, y_pred, class_names)
    return {"test_accuracy": m["accuracy"], "n_test": m["n_samples"], "per_class": m["per_class"],
            "macro": m["macro"], "weighted": m["weighted"], "confusion_matrix": m["confusion_matrix"]}


def run_feature_file(run_dir: str | os.PathLike) -> tuple[Path, str | None]:
    """The feature file a run recorded (found relative to the run, so a copied run reads its own)
    and the fingerprint of the table it was trained on (None for runs from before featmlp recorded it).

    Raises
    ------
    DataError
        The run records no feature file (it was trained from the API on a table in memory).
    """
    data = read_json(Path(run_dir) / CONFIG_FILE).get("data", {})
    if not data.get("feature_file"):
        raise DataError(f"{run_dir} does not record its feature file: pass FEATURES.npz or DIR.features/")
    return resolve_feature_file(run_dir, data["feature_file"]), data.get("table_fingerprint")


def evaluate_run(run_dir: str | os.PathLike, features_file: str | os.PathLike | None = None) -> dict:
    """Evaluate a saved run's model on the test split of a feature file (default: the run's own).

    :func:`score_run` gives its per-image predictions too.

    ``features_file`` may be a sharded table (``DIR.features/``): its test split is checked and
    predicted a shard at a time, never read whole.

    Returns the metrics with the keys and numbers of the run's ``metrics.json`` (``test_accuracy``,
    ``n_test``, ``per_class``, ``macro``, ``weighted``, ``confusion_matrix``), so the two compare
    directly; what ``featmlp evaluate --json`` prints.

    Raises
    ------
    DataError
        The feature file does not fit the model: not the data the run recorded (its
        fingerprint differs; only checked for the run's own file), NaN or infinite test
        features, another number of features or other class names.

    Examples
    --------
    >>> evaluate_run("runs/lecture-1")["test_accuracy"]  # doctest: +SKIP
    0.294
    """
    return score_run(run_dir, features_file)[0]


def score_run(run_dir: str | os.PathLike, features_file: str | os.PathLike | None = None
              ) -> tuple[dict, Predictions | None]:
    """``(metrics, predictions)`` of :func:`evaluate_run`: the metrics and each test image's
    prediction (:class:`featmlp.runs.predictions.Predictions`; None for an empty test split), e.g.
    for :func:`featmlp.runs.predictions.confident_mistakes`.

    Examples
    --------
    >>> metrics, preds = score_run("runs/lecture-1")  # doctest: +SKIP
    >>> confident_mistakes(preds, 3)  # doctest: +SKIP
    """
    # Loaded here: the metrics above need numpy only, a saved model needs torch.
    from featmlp.runs.bundle import load_bundle

    bundle = load_bundle(run_dir)
    recorded = None
    if features_file is None:
        features_file, recorded = run_feature_file(run_dir)
    table = load_features(features_file)
    if recorded is not None and table_fingerprint(table) != recorded:
        raise DataError(f"{features_file} is not the data this model was trained on (its contents differ from "
                        f"the run's record): pass the feature file to evaluate on explicitly")
    check_provenance(table, bundle, features_file, _recorded_data(run_dir))
    if table.feature_names and len(table.feature_names) != bundle.spec.n_features:
        raise DataError(f"{features_file} has {len(table.feature_names)} features, the model takes "
                        f"{bundle.spec.n_features}: extract with --features {bundle.feature_set}")
    check_columns(table, features_file, _recorded_data(run_dir), bundle.feature_set)
    if tuple(table.class_names) != tuple(bundle.class_names):
        raise DataError(f"{features_file}'s classes {list(table.class_names)} differ from the model's "
                        f"{list(bundle.class_names)}")
    bad = nonfinite_rows(table.X_test)  # a shard at a time for a sharded table
    if len(bad):
        raise DataError(f"{features_file}: the test features hold NaN or infinite values in {len(bad)} of "
                        f"{len(table.y_test)} rows (first: row {bad[0]}): clean or re-extract them")
    if not len(table.y_test):
        return run_metrics(table.y_test, [], bundle.class_names), None
    preds = predict_split(bundle, table, "test")  # a block (a shard) at a time
    return run_metrics(preds.y_true, preds.y_pred, bundle.class_names), preds


def _recorded_data(run_dir) -> dict:
    """The ``data`` a run's ``config.json`` records ({} for a bundle alone, or an unreadable file)."""
    try:
        data = read_json(Path(run_dir) / CONFIG_FILE).get("data", {})
    except (FeatmlpError, OSError, ValueError, AttributeError):
        return {}
    return data if isinstance(data, dict) else {}


def state_digest(state: dict) -> str | None:
    """SHA-256 of a fitted feature state (its settings and arrays; None for none): a table's and a
    model's are equal when the features were computed with the same fitted dictionary."""
    if not state:
        return None
    import hashlib
    import json

    settings, arrays = state_to_arrays(state)
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"\n{name} {a.dtype.str} {a.shape}\n".encode())
        h.update(a.data)
    return h.hexdigest()


def check_provenance(table, bundle, where, data: dict | None = None) -> None:
    """DataError unless a feature table was made as the model's training features were.

    Compared where both sides record it: the feature set (the table's ``meta["features"]``
    and the bundle's), the image size the images were resized to (``meta["image_size"]``
    and the bundle's ``image_size``, or the run's ``config.json``), and the fitted state of a
    fitted set (kmeans: its settings and dictionary, by hash). A table of other provenance
    scores as if it were a worse model (the issue: 0.099 where the model's own data gives
    0.278), so it is refused with what differs and the command that makes a fitting one.
    """
    data = data or {}
    meta = table.meta or {}
    theirs = meta.get("features")
    ours = bundle.feature_set if bundle.feature_set not in (None, "unknown") else data.get("features")
    if theirs and ours and theirs != ours:
        raise DataError(f"{where} holds {theirs} features, the model was trained on {ours} features: extract "
                        f"again with --features {ours}")
    size, model_size = meta.get("image_size"), bundle.extra.get("image_size") or data.get("image_size")
    if size and model_size and list(size) != list(model_size):
        raise DataError(f"{where} was extracted at {size[0]}x{size[1]}, the model at {model_size[0]}x"
                        f"{model_size[1]}: extract again with --image-size {model_size[0]}x{model_size[1]}")
    if table.fitted and bundle.feature_state and state_digest(table.fitted) != state_digest(bundle.feature_state):
        mine, model = state_to_arrays(table.fitted)[0], state_to_arrays(bundle.feature_state)[0]
        differ = [f"{name}.{k} {mine.get(name, {}).get(k)!r} against {v!r}"
                  for name, settings in model.items() for k, v in settings.items()
                  if k != "objective" and mine.get(name, {}).get(k) != v]
        how = f"other settings: {', '.join(differ[:3])}" if differ else "fitted on other images"
        raise DataError(f"{where}'s {'+'.join(sorted(bundle.feature_state))} features were computed with another "
                        f"fitted state than the model's ({how}): extract again with --fitted-from "
                        f"{bundle.directory or 'RUN'}")


def names_digest(names) -> str:
    """SHA-256 of a list of names (as JSON): how ``config.json`` identifies a long list of feature names."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps([str(n) for n in names]).encode()).hexdigest()


def check_columns(table, where, data: dict, feature_set) -> None:
    """DataError when the table's columns are not those the run recorded (same count, other names).

    ``config.json`` lists the names, or records a long list by its count and hash
    (:func:`featmlp.runs.results.feature_names_record`)."""
    names = data.get("feature_names")
    if isinstance(names, dict) and names.get("count") == len(table.feature_names) and names.get("sha256"):
        if names_digest(table.feature_names) != names["sha256"]:
            raise DataError(f"{where}'s feature columns are not the model's (their names differ from those the run "
                            f"recorded): extract again with --features {feature_set}")
        return
    if not isinstance(names, list) or len(names) != len(table.feature_names):
        return
    for i, (a, b) in enumerate(zip(table.feature_names, names)):
        if str(a) != str(b):
            raise DataError(f"{where}'s feature columns are not the model's (column {i} is {a!r}, the model's "
                            f"{b!r}): extract again with --features {feature_set}")


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, np.float64)
    den = np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _labels(y_true, y_pred, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape:
        raise DataError(
            f"y_true and y_pred must be 1-D and of one length, got shapes {y_true.shape} and "
            f"{y_pred.shape}"
        )
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{name} must hold integer class indices, got dtype {y.dtype}")
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            raise DataError(
                f"{name} holds labels from {y.min()} to {y.max()}, outside 0 .. {n_classes - 1}"
            )
    return y_true.astype(np.int64), y_pred.astype(np.int64)

"""A saved model scored on a labelled image source: ``featmlp evaluate RUN --data SOURCE --out DIR``.

Every image of the source is a test image: a folder of class folders (no split), a folder with
only ``test/<class>/``, or any source ``extract`` takes (a source with a train/test split is
scored on both). The images are read at the run's image size and their features extracted with
the run's feature set and fitted state, then classes are matched by name: a class the model does
not know is refused, one it knows that the source lacks is fine. ``DIR`` gets what a run writes of
its test split: ``metrics.json`` (the run's test keys), ``predictions.csv``, ``confusion.png``,
``thumbnails.npz`` and ``report.html``, with ``evaluation.json`` saying what was scored with what.
``DIR`` is built beside and renamed in; it is never the run, nor inside it or the source.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from featmlp import __version__
from featmlp._outputs import check_output
from featmlp.data import load_dataset
from featmlp.errors import DataError
from featmlp.features import extract_features, mirror_images
from featmlp.runs.bundle import load_bundle
from featmlp.runs.directory import RunDirectory
from featmlp.runs.evaluate import run_metrics
from featmlp.runs.layout import CONFUSION_PLOT, EVALUATION_FILE, METRICS_FILE, write_json
from featmlp.runs.plots import plot_confusion
from featmlp.runs.predictions import Predictions, predict_split
from featmlp.runs.report import write_report
from featmlp.runs.results import write_predictions_of
from featmlp.tables.extract import extract_dataset
from featmlp.tables.passes import nonfinite_rows
from featmlp.tables.store import FeatureTable


class _Splits:
    """The images of a dataset's train and test splits as one sequence, indexed by an array of rows."""

    def __init__(self, dataset):
        self.parts = [dataset.train_images, dataset.test_images]
        self.n_train = len(dataset.train_images)

    def __getitem__(self, rows):
        rows = np.asarray(rows, np.int64)
        out = np.empty((len(rows), *self.parts[1].shape[1:]), np.uint8)
        first = rows < self.n_train
        for mask, part, shift in ((first, self.parts[0], 0), (~first, self.parts[1], self.n_train)):
            if mask.any():
                out[mask] = np.asarray(part[rows[mask] - shift])
        return out


def evaluate_source(run_dir: str | os.PathLike, source, out: str | os.PathLike, *, overwrite: bool = False,
                    chunk_size: int | None = None, workers: int = 1, progress=None, skip_bad: bool = False,
                    storage_options: dict | None = None) -> tuple[dict, Predictions]:
    """Score a saved run's model on every image of a labelled source; write the results into ``out``.

    Parameters
    ----------
    run_dir : path
        A run directory (or a model bundle).
    source
        Any source :func:`featmlp.data.load_dataset` takes; every image is a test image.
    out : path
        A new directory (absent or empty), or with ``overwrite`` one this function wrote before;
        never the run, inside it, or inside the source.
    chunk_size, workers, progress, skip_bad, storage_options
        As :func:`featmlp.tables.extract.extract_dataset` and :func:`featmlp.data.load_dataset` take them.

    Returns
    -------
    (dict, Predictions)
        The metrics (the keys of a run's test scores) and each image's prediction.

    Raises
    ------
    DataError
        A class of the source the model does not know, a model that does not record its feature
        set, or an ``out`` that may not be written.

    Examples
    --------
    >>> metrics, preds = evaluate_source("runs/cats", "new_photos/", "runs/cats-on-new")  # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    check_output(out, "evaluation", force=overwrite, sources=[source, run_dir])
    bundle = load_bundle(run_dir)
    if bundle.feature_set in (None, "", "unknown"):
        raise DataError(f"{run_dir} does not record the feature set its model was trained on, so its features "
                        f"cannot be made from images: extract a table yourself and give it to featmlp evaluate")
    size = bundle.extra.get("image_size")
    ds = load_dataset(source, test_fraction=1.0, image_size=tuple(size) if size else None, progress=progress,
                      skip_bad=skip_bad, storage_options=storage_options)
    known = {name: i for i, name in enumerate(bundle.class_names)}
    unknown = [c for c in ds.class_names if c not in known]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise DataError(f"{source} has the class {unknown[0]!r}{more}, "
                        f"which the model does not know (its classes: {', '.join(bundle.class_names)}): "
                        f"rename or remove that folder")
    to_model = np.array([known[c] for c in ds.class_names], np.int64)
    table = extract_dataset(ds, bundle.feature_set, fitted=bundle.feature_state, chunk_size=chunk_size,
                            workers=workers, progress=progress, mirror_test=bundle.flips_images)
    both = (ds.image_names("train"), ds.image_names("test"))
    n = len(ds.train_labels) + len(ds.test_labels)
    names = [*both[0], *both[1]] if None not in both else [f"#{i}" for i in range(n)]
    X = np.concatenate([table.X_train, table.X_test]) if len(table.X_train) else table.X_test
    y = to_model[np.concatenate([ds.train_labels, ds.test_labels])]
    mirrored = table.X_test_mirror
    if mirrored is not None and len(table.X_train):  # a source's train/ folder is scored too: its mirrors
        step = chunk_size or 1000
        mirrored = np.concatenate([
            *(extract_features(mirror_images(np.asarray(ds.train_images[i:i + step])), bundle.feature_set,
                               state=table.fitted) for i in range(0, len(table.X_train), step)), mirrored])
    scored = FeatureTable(X[:0], y[:0], X, y, table.feature_names, bundle.class_names, table.meta,
                          names_train=(), names_test=tuple(names), X_test_mirror=mirrored)
    if len(table.feature_names) != bundle.spec.n_features:
        raise DataError(f"{bundle.feature_set} features of these images have {len(table.feature_names)} columns, "
                        f"the model takes {bundle.spec.n_features}")
    bad = nonfinite_rows(X)
    if len(bad):
        raise DataError(f"the features of {len(bad)} of {len(y)} images hold NaN or infinite values (first: "
                        f"{names[bad[0]]}): those images cannot be scored")
    preds = predict_split(bundle, scored, "test")
    metrics = run_metrics(preds.y_true, preds.y_pred, bundle.class_names)
    with RunDirectory(out, overwrite=overwrite, kind="evaluation") as rd:
        write_predictions_of(rd.path, preds, _Splits(ds))
        plot_confusion(metrics["confusion_matrix"], bundle.class_names, rd.path / CONFUSION_PLOT)
        write_json(rd.path / METRICS_FILE, metrics)
        write_json(rd.path / EVALUATION_FILE, {
            "evaluated_run": str(run_dir.resolve()), "source": str(source), "description": ds.source,
            "features": bundle.feature_set, "image_size": size, "n_images": len(y),
            "classes_absent": [c for c in bundle.class_names if c not in ds.class_names],
            "skipped": [list(s) for s in ds.skipped], "featmlp_version": __version__})
    write_report(out)
    return metrics, preds

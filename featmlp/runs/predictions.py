"""Per-image results: a split's predictions, the ``predictions.csv`` a run writes, and its mistakes.

``predictions.csv`` (:data:`featmlp.runs.layout.PREDICTIONS_FILE`) has one row per test image, in the
table's order, under the header::

    name,true_class,predicted_class,probability,top1_class,top1_probability,...,topK_class,topK_probability

``name`` is the image's source name (file or archive member name; CIFAR-10's ``filenames``), or
``#<row>`` for a table that records none; ``probability`` is that of the predicted class; ``K`` is
``min(5, number of classes)``. It is plain CSV (the ``csv`` module's quoting: a name holding a
comma, a quote or a line break is quoted), read by ``csv.DictReader`` or ``pandas.read_csv``.

Only the top ``K`` classes of each row are kept, so what this holds is bounded by the number of
images, not by images x classes; the probabilities are computed a block (a shard) at a time.
Nothing here needs torch: the model is anything with ``predict_proba(X)``.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featmlp._io import atomic_write
from featmlp.errors import DataError
from featmlp.runs.layout import PREDICTIONS_FILE
from featmlp.tables.passes import row_blocks

TOP_K = 5
# Rows of features whose probabilities are held at once (a sharded table: a shard at a time).
BLOCK_ROWS = 16384
HEADER = ("name", "true_class", "predicted_class", "probability")


@dataclass(frozen=True)
class Predictions:
    """The top-``k`` classes and probabilities of each image of a split, with its name and true class.

    ``top_classes[i, 0]`` is the predicted class of row ``i`` (the argmax of its probabilities) and
    ``top_probs[i, 0]`` its probability.
    """

    names: tuple[str, ...]
    y_true: np.ndarray
    top_classes: np.ndarray
    top_probs: np.ndarray
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.y_true)

    @property
    def y_pred(self) -> np.ndarray:
        return self.top_classes[:, 0]

    @property
    def probability(self) -> np.ndarray:
        return self.top_probs[:, 0]


@dataclass(frozen=True)
class Mistake:
    """One misclassified image: where it is in the split, its name, its true and predicted class."""

    row: int
    name: str
    true_class: str
    predicted_class: str
    probability: float


def top_k(proba: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most probable classes of each row and their probabilities, most probable first
    (ties: the lower class index first, as ``argmax``).

    Examples
    --------
    >>> top_k(np.array([[0.2, 0.5, 0.3]]), 2)[0].tolist()
    [[1, 2]]
    """
    order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    return order.astype(np.int64), np.take_along_axis(proba, order, axis=1).astype(np.float64)


def predict_split(model, table, split: str = "test", *, k: int | None = None) -> Predictions:
    """The predictions of ``model`` (anything with ``predict_proba``: a training result, a bundle) on
    a table's split, a block of :data:`BLOCK_ROWS` rows (a shard of a sharded table) at a time.

    A model that averages each test image with its mirror image extracted (``model.flips_images``)
    gets the table's ``X_test_mirror``; a table without them is refused (DataError), as its
    predictions would not be the model's.
    """
    X, y = getattr(table, f"X_{split}"), np.asarray(getattr(table, f"y_{split}"), np.int64)
    mirrored = None
    if getattr(model, "flips_images", False) and len(y):
        mirrored = table.X_test_mirror if split == "test" else None
        if mirrored is None:
            raise DataError("this model averages each image with its mirror image (test flips), and these features "
                            "hold no mirror images' features: score images with featmlp evaluate RUN --data SOURCE "
                            "(it extracts both), or train with --no-test-flip")
    n_classes = len(table.class_names)
    k = min(TOP_K if k is None else k, n_classes)
    classes = np.zeros((len(y), k), np.int64)
    probs = np.zeros((len(y), k), np.float64)
    if len(y):
        for start, block in row_blocks(X, BLOCK_ROWS):
            extra = {} if mirrored is None else {"mirror_features": np.asarray(mirrored[start:start + len(block)])}
            c, p = top_k(np.asarray(model.predict_proba(np.asarray(block), **extra)), k)
            classes[start:start + len(block)], probs[start:start + len(block)] = c, p
    return Predictions(tuple(table.row_names(split)), y, classes, probs, tuple(table.class_names))


def write_predictions(path: str | os.PathLike, preds: Predictions) -> Path:
    """Write ``predictions.csv`` atomically (beside, then renamed in): see the module docstring."""
    path = Path(path)
    k = preds.top_classes.shape[1]
    names = preds.class_names
    with atomic_write(path, "wb") as raw:
        f = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        w = csv.writer(f)
        w.writerow([*HEADER, *(f"top{j}_{what}" for j in range(1, k + 1) for what in ("class", "probability"))])
        for i in range(len(preds)):
            top = [v for j in range(k) for v in (names[preds.top_classes[i, j]], f"{preds.top_probs[i, j]:.6g}")]
            w.writerow([preds.names[i], names[preds.y_true[i]], names[preds.top_classes[i, 0]],
                        f"{preds.top_probs[i, 0]:.6g}", *top])
        f.flush()
        f.detach()
    return path


def read_predictions(path: str | os.PathLike, class_names=None) -> Predictions:
    """A ``predictions.csv`` read back (:func:`write_predictions`); class names as they appear, in
    ``class_names``' order when given. DataError naming the file when it is not one."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if not rows or tuple(rows[0][:4]) != HEADER or (len(rows[0]) - 4) % 2:
        raise DataError(f"{path} is not a featmlp predictions file (its header is not "
                        f"{','.join(HEADER)},top1_class,...)")
    k = (len(rows[0]) - 4) // 2
    body = rows[1:]
    names = list(class_names) if class_names is not None else []
    index = {c: i for i, c in enumerate(names)}

    def cls(name):
        if name not in index:
            index[name] = len(names)
            names.append(name)
        return index[name]

    try:
        y = np.array([cls(r[1]) for r in body], np.int64)
        top_c = np.array([[cls(r[4 + 2 * j]) for j in range(k)] for r in body], np.int64).reshape(len(body), k)
        top_p = np.array([[float(r[5 + 2 * j]) for j in range(k)] for r in body], np.float64).reshape(len(body), k)
    except (IndexError, ValueError) as e:
        raise DataError(f"{path} has a malformed row ({e}): write it again") from None
    return Predictions(tuple(r[0] for r in body), y, top_c, top_p, tuple(names))


def confident_mistakes(predictions, n: int = 10) -> list[Mistake]:
    """The ``n`` misclassified images predicted with the highest probability, most confident first
    (ties: in the split's order).

    ``predictions`` is a :class:`Predictions`, a run directory (or any directory holding a
    ``predictions.csv``) or the path of a ``predictions.csv``.

    Examples
    --------
    >>> [m.name for m in confident_mistakes("runs/lecture-1", 3)]  # doctest: +SKIP
    ['test/cat/0004.jpg', 'test/ship/0140.jpg', 'test/dog/0912.jpg']
    """
    if not isinstance(predictions, Predictions):
        path = Path(predictions)
        predictions = read_predictions(path / PREDICTIONS_FILE if path.is_dir() else path)
    rows = mistake_rows(predictions)[:max(int(n), 0)]
    names = predictions.class_names
    return [Mistake(int(i), predictions.names[i], names[predictions.y_true[i]], names[predictions.y_pred[i]],
                    float(predictions.probability[i])) for i in rows]


def mistake_rows(preds: Predictions) -> np.ndarray:
    """The rows of every mistake, the most confident first (ties: in row order)."""
    wrong = np.flatnonzero(preds.y_pred != preds.y_true)
    return wrong[np.argsort(-preds.probability[wrong], kind="stable")]

"""featmlp.runs.predictions: a run's predictions.csv and its most confident mistakes, against the
run's own metrics and numpy's argsort of the model's probabilities."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
from sklearn.datasets import make_classification

from featmlp.runs import train_run
from featmlp.runs.bundle import load_bundle
from featmlp.runs.layout import METRICS_FILE, PREDICTIONS_FILE, read_json
from featmlp.runs.predictions import confident_mistakes, read_predictions
from featmlp.tables.store import FeatureTable
from featmlp.training import TrainConfig

# Names a CSV must quote: a comma, a quote, a line break; and one that looks like a number.
ODD = ('a,b.png', 'say "cheese".jpg', "two\nlines.png", "0042")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    X, y = make_classification(400, 9, n_informative=6, n_classes=7, n_clusters_per_class=1, random_state=0)
    names = tuple(f"test/{i:03d}.png" for i in range(100))
    names = ODD + names[len(ODD):]
    table = FeatureTable(X[:300], y[:300], X[300:], y[300:], tuple(f"f{i}" for i in range(9)),
                         tuple(f"class {k}" for k in range(7)), {"features": "lecture"},
                         names_test=names)
    out = tmp_path_factory.mktemp("runs") / "r"
    train_run(table, TrainConfig(hidden=(8,), epochs=3, batch_size=64), out)
    return out, table


def _rows(out):
    with open(out / PREDICTIONS_FILE, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_predictions_csv_is_the_metrics_and_the_models_probabilities(run):
    out, table = run
    rows = _rows(out)
    classes = list(table.class_names)
    assert [r["name"] for r in rows] == list(table.names_test)  # odd names come back whole
    header = list(rows[0])
    k = min(5, len(classes))
    assert header == ["name", "true_class", "predicted_class", "probability",
                      *[f"top{j}_{w}" for j in range(1, k + 1) for w in ("class", "probability")]]
    # the metrics' confusion matrix, rebuilt from the CSV
    true = np.array([classes.index(r["true_class"]) for r in rows])
    pred = np.array([classes.index(r["predicted_class"]) for r in rows])
    cm = np.zeros((len(classes), len(classes)), int)
    np.add.at(cm, (true, pred), 1)
    metrics = read_json(out / METRICS_FILE)
    assert cm.tolist() == metrics["confusion_matrix"]
    assert np.array_equal(true, table.y_test)
    # the top-k against numpy's argsort of the saved model's probabilities
    proba = load_bundle(out).predict_proba(table.X_test)
    order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    got = np.array([[classes.index(r[f"top{j}_class"]) for j in range(1, k + 1)] for r in rows])
    assert np.array_equal(got, order) and np.array_equal(pred, proba.argmax(axis=1))
    got_p = np.array([[float(r[f"top{j}_probability"]) for j in range(1, k + 1)] for r in rows])
    np.testing.assert_allclose(got_p, np.take_along_axis(proba, order, axis=1), rtol=1e-5)
    np.testing.assert_allclose([float(r["probability"]) for r in rows], proba.max(axis=1), rtol=1e-5)


def test_the_most_confident_mistakes_are_numpys(run):
    out, table = run
    proba = load_bundle(out).predict_proba(table.X_test)
    pred, top = proba.argmax(axis=1), proba.max(axis=1)
    wrong = np.flatnonzero(pred != table.y_test)
    assert len(wrong) > 5
    expected = wrong[np.argsort(-top[wrong], kind="stable")][:5]
    got = confident_mistakes(out, 5)
    assert [m.name for m in got] == [table.names_test[i] for i in expected]
    assert [m.row for m in got] == expected.tolist()
    assert [m.predicted_class for m in got] == [table.class_names[pred[i]] for i in expected]
    np.testing.assert_allclose([m.probability for m in got], top[expected], rtol=1e-5)
    assert len(confident_mistakes(out, 10_000)) == len(wrong)
    # read back, the file is the Predictions it was written from
    back = read_predictions(out / PREDICTIONS_FILE, table.class_names)
    assert back.names == tuple(table.names_test) and np.array_equal(back.y_pred, pred)


def test_a_table_without_names_gives_row_numbers(run, tmp_path):
    _, table = run
    out = tmp_path / "r"
    train_run(dataclasses.replace(table, names_test=None), TrainConfig(hidden=(4,), epochs=1), out)
    assert [r["name"] for r in _rows(out)][:3] == ["#0", "#1", "#2"]

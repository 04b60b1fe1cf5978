"""featmlp.runs.evaluate against scikit-learn's metrics, evaluate_run's checks, and featmlp.runs.plots' files."""

import dataclasses
import json

import numpy as np
import pytest
from sklearn import metrics

from featmlp.errors import DataError
from featmlp.runs import plot_confusion, plot_history, train_run
from featmlp.runs.bundle import load_bundle
from featmlp.runs.evaluate import confusion_matrix, evaluate
from featmlp.tables.store import save_features
from featmlp.training import TrainConfig

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    names = ["airplane", "bird", "cat", "deer"]
    y_true = rng.integers(0, 4, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 3, 200))  # never 'deer'
    m = evaluate(y_true, y_pred, names)
    labels = list(range(4))
    assert m["accuracy"] == pytest.approx(metrics.accuracy_score(y_true, y_pred))
    assert m["n_samples"] == 200
    assert m["confusion_matrix"] == metrics.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    p, r, f, s = metrics.precision_recall_fscore_support(y_true, y_pred, labels=labels,
                                                         zero_division=0)
    assert [c["class"] for c in m["per_class"]] == names
    assert [c["precision"] for c in m["per_class"]] == pytest.approx(p)
    assert [c["recall"] for c in m["per_class"]] == pytest.approx(r)
    assert [c["f1"] for c in m["per_class"]] == pytest.approx(f)
    assert [c["support"] for c in m["per_class"]] == s.tolist()
    for avg in ("macro", "weighted"):
        p, r, f, _ = metrics.precision_recall_fscore_support(y_true, y_pred, labels=labels,
                                                             average=avg, zero_division=0)
        assert (m[avg]["precision"], m[avg]["recall"], m[avg]["f1"]) == pytest.approx((p, r, f))


def test_macro_averages_the_classes_that_occur_as_scikit_learn_does():
    # a folder of 2 of the model's 6 classes: classes neither true nor predicted are not averaged in
    y_true = np.array([0, 0, 0, 1, 1, 1, 1])
    y_pred = np.array([0, 1, 4, 1, 1, 0, 1])
    m = evaluate(y_true, y_pred, list("abcdef"))
    p, r, f, _ = metrics.precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    assert (m["macro"]["precision"], m["macro"]["recall"], m["macro"]["f1"]) == pytest.approx((p, r, f))
    assert m["macro"]["recall"] == pytest.approx((1 / 3 + 3 / 4 + 0) / 3)  # a, b and e (predicted, never true)


def test_order_matters_nothing_is_shuffled():
    y = np.array([0, 1, 2, 0, 1, 2])
    assert evaluate(y, y, "abc")["accuracy"] == 1.0
    assert evaluate(y, np.roll(y, 1), "abc")["accuracy"] == 0.0


def test_absent_class_and_json_types():
    import json

    m = evaluate([0, 0, 1], [0, 1, 1], ["x", "y", "z"])
    assert m["per_class"][2] == {"class": "z", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    json.dumps(m)  # plain Python types only
    assert confusion_matrix([], [], 2).tolist() == [[0, 0], [0, 0]]


def test_bad_labels():
    with pytest.raises(DataError, match="outside"):
        evaluate([0, 3], [0, 1], ["a", "b"])
    with pytest.raises(DataError, match="one length"):
        evaluate([0, 1], [0], ["a", "b"])
    with pytest.raises(DataError, match="integer"):
        evaluate(["a"], ["a"], ["a"])


def test_plot_history_writes_png(tmp_path):
    history = [{"epoch": e, "train_loss": 1 / e, "train_accuracy": 0.1 * e,
                "val_loss": 1.2 / e, "val_accuracy": 0.09 * e} for e in range(1, 6)]
    for name, kwargs in [("a.png", {}), ("b.png", {"log_scale": True})]:
        path = plot_history(history, tmp_path / name, **kwargs)
        assert path.read_bytes().startswith(PNG)
    # Loss only (no accuracy, no validation) still draws.
    assert plot_history([{"epoch": 1, "train_loss": 0.5}], tmp_path / "c.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "c.png"]


def test_plot_confusion_writes_png(tmp_path):
    cm = [[5, 1, 0], [2, 3, 1], [0, 0, 4]]
    assert plot_confusion(cm, ["a", "b", "c"], tmp_path / "cm.png").read_bytes().startswith(PNG)
    assert plot_confusion(cm, ["a", "b", "c"], tmp_path / "n.png", normalize=True).exists()
    with pytest.raises(ValueError, match="3 class names|2 class names"):
        plot_confusion(cm, ["a", "b"], tmp_path / "x.png")


def test_evaluate_run_checks_the_feature_file_against_the_model(tmp_path, table):
    from featmlp.runs import evaluate_run

    feats = save_features(tmp_path / "f.npz", table)
    run = train_run(table, TrainConfig(hidden=(4,), epochs=2), tmp_path / "r",
                    data={"feature_file": str(feats.resolve())})
    stored = json.loads((tmp_path / "r" / "metrics.json").read_text())
    m = evaluate_run(tmp_path / "r")  # the run's own feature file, from its config.json
    assert m == {k: stored[k] for k in m} and set(m) == {"test_accuracy", "n_test", "per_class", "macro",
                                                         "weighted", "confusion_matrix"}
    y_pred = load_bundle(tmp_path / "r").predict(table.X_test)
    assert m["test_accuracy"] == pytest.approx(metrics.accuracy_score(table.y_test, y_pred)) == run.metrics["test_accuracy"]
    assert m["confusion_matrix"] == metrics.confusion_matrix(table.y_test, y_pred).tolist()
    other = save_features(tmp_path / "o.npz", dataclasses.replace(table, class_names=("ant", "bee", "cat")))
    with pytest.raises(DataError, match=r"o.npz's classes \['ant', 'bee', 'cat'\] differ from the model's"):
        evaluate_run(tmp_path / "r", other)
    narrow = dataclasses.replace(table, X_train=table.X_train[:, :5], X_test=table.X_test[:, :5],
                                 feature_names=table.feature_names[:5])
    with pytest.raises(DataError, match="has 5 features, the model takes 9: extract with --features lecture"):
        evaluate_run(tmp_path / "r", save_features(tmp_path / "n.npz", narrow))
    save_features(feats, dataclasses.replace(table, y_test=table.y_test[::-1].copy()),  # the recorded file changed
                  overwrite=True)
    with pytest.raises(DataError, match="not the data this model was trained on"):
        evaluate_run(tmp_path / "r")
    train_run(table, TrainConfig(hidden=(4,), epochs=1), tmp_path / "mem")  # from a table in memory
    with pytest.raises(DataError, match="does not record its feature file"):
        evaluate_run(tmp_path / "mem")

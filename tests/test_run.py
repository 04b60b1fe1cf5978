"""Run directories and the train / run / lecture / evaluate / predict commands."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import make_classification
from sklearn.metrics import accuracy_score, confusion_matrix

from featmlp.bundle import load_bundle
from featmlp.run import repeat_config, train_run
from featmlp.store import FeatureTable, save_features
from featmlp.train import PRESETS, TrainConfig



@pytest.fixture
def table():
    X, y = make_classification(600, 9, n_informative=6, n_classes=3, random_state=0)
    return FeatureTable(X[:450], y[:450], X[450:], y[450:], tuple(f"f{i}" for i in range(9)),
                        ("ant", "bee", "cow"), {"features": "lecture"})


def test_run_directory_contents(tmp_path, table):
    config = TrainConfig(hidden=(16,), epochs=8, val_fraction=0.2)
    run = train_run(table, config, tmp_path / "r", data={"feature_file": "x.npz"})
    out = tmp_path / "r"
    for name in ("config.json", "metrics.json", "loss.png", "confusion.png", "model.safetensors", "model.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]) == 8
    for rec in metrics["history"]:
        assert {"epoch", "train_loss", "seconds", "val_loss", "val_accuracy"} <= set(rec)
        assert rec["seconds"] > 0
    # test accuracy and confusion agree with scikit-learn on the saved model's predictions
    bundle = load_bundle(out)
    pred = bundle.predict(table.X_test)
    assert metrics["test_accuracy"] == pytest.approx(accuracy_score(table.y_test, pred))
    assert metrics["confusion_matrix"] == confusion_matrix(table.y_test, pred).tolist()
    assert metrics["diverged"] is False
    # config.json alone repeats the run exactly
    data, again = repeat_config(out)
    assert again == config and data["feature_file"] == "x.npz"
    rerun = train_run(table, again, tmp_path / "r2")
    assert [r["train_loss"] for r in rerun.result.history] == [r["train_loss"] for r in run.result.history]


def test_divergence_is_recorded_not_raised(tmp_path, table):
    config = dataclasses.replace(PRESETS["lecture"], head="ce", lr=1e30, epochs=10)
    run = train_run(table, config, tmp_path / "d")
    metrics = json.loads((tmp_path / "d" / "metrics.json").read_text())  # strict JSON: no NaN
    assert metrics["diverged"] is True and run.result.diverged
    assert len(metrics["history"]) <= 10
    bundle = load_bundle(tmp_path / "d")  # last finite weights were saved
    assert np.isfinite(bundle.predict_proba(table.X_test)).all()


def test_train_evaluate_predict_commands(tmp_path, run_cli, table):
    feats = save_features(tmp_path / "f.npz", table)
    code, out, err = run_cli(["train", feats, "--hidden", "8,8", "--epochs", "3", "--out", tmp_path / "t"])
    assert code == 0, err
    assert out.count("epoch ") == 3 and "test accuracy" in out
    cfg = json.loads((tmp_path / "t" / "config.json").read_text())
    assert cfg["train"]["hidden"] == [8, 8] and cfg["train"]["epochs"] == 3
    assert cfg["train"]["optimizer"] == PRESETS["default"].optimizer  # unset options keep the preset

    code, out, _ = run_cli(["evaluate", tmp_path / "t"])
    assert code == 0
    acc = json.loads((tmp_path / "t" / "metrics.json").read_text())["test_accuracy"]
    assert f"test accuracy {acc:.4f}" in out

    code, out, _ = run_cli(["evaluate", tmp_path / "t", feats, "--json"])
    assert json.loads(out)["accuracy"] == pytest.approx(acc)


def test_preset_overridden_by_options(tmp_path, run_cli, table):
    feats = save_features(tmp_path / "f.npz", table)
    code, _, err = run_cli(["train", feats, "--preset", "lecture", "--lr", "50", "--epochs", "2", "-q",
                            "--out", tmp_path / "p"])
    assert code == 0, err
    cfg = json.loads((tmp_path / "p" / "config.json").read_text())["train"]
    expected = dataclasses.replace(PRESETS["lecture"], lr=50.0, epochs=2).to_dict()
    assert cfg == expected


def test_lecture_command_and_predict(tmp_path, run_cli):
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for k, cls in enumerate(("dark", "light")):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            base = 60 + 120 * k
            img = np.clip(base + rng.normal(0, 30, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / cls / f"{i}.png")
    code, out, err = run_cli(["lecture", "--data", root, "--test-fraction", "0.5", "--out", tmp_path / "lec"])
    assert code == 0, err
    assert "Epoch: 20, Loss:" in out and "Accuracy of the network on the 10 test images" in out
    cfg = json.loads((tmp_path / "lec" / "config.json").read_text())
    assert cfg["train"] == PRESETS["lecture"].to_dict()
    assert cfg["data"]["features"] == "lecture"

    imgs = sorted(root.rglob("*.png"))[:3]
    code, out, _ = run_cli(["predict", tmp_path / "lec", *imgs])
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 3
    for line, path in zip(lines, imgs):
        p, cls, prob = line.split("\t")
        assert p == str(path) and cls in ("dark", "light") and 0 <= float(prob) <= 1


def test_run_diverging_lr_exits_cleanly(tmp_path, run_cli, table):
    feats = save_features(tmp_path / "f.npz", table)
    code, out, err = run_cli(["train", feats, "--optimizer", "gd", "--lr", "1e30", "-q", "--out", tmp_path / "x"])
    assert code == 0
    assert "diverged" in err and "Traceback" not in err
    assert json.loads((tmp_path / "x" / "metrics.json").read_text())["diverged"] is True


@pytest.mark.parametrize("args, message", [
    (["train", "missing.npz"], "does not exist"),
    (["train", "F", "--hidden", "6,x"], "comma-separated"),
    (["train", "F", "--optimizer", "lbfgs"], "lbfgs"),
    (["evaluate", "nowhere"], "nowhere"),
    (["predict", "nowhere", "a.png"], "nowhere"),
])
def test_bad_training_input(tmp_path, run_cli, monkeypatch, table, args, message):
    monkeypatch.chdir(tmp_path)
    save_features(tmp_path / "F", table)
    code, _, err = run_cli(args)
    assert code != 0 and message in err and "Traceback" not in err


def test_predict_unreadable_image(tmp_path, run_cli, table):
    train_run(table, TrainConfig(epochs=1), tmp_path / "m")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    code, _, err = run_cli(["predict", tmp_path / "m", tmp_path / "bad.png"])
    assert code == 1 and "bad.png" in err


def test_predict_resizes_to_training_size(tmp_path, run_cli):
    # hog's length depends on the image size: a model trained on 32x32 images must see new
    # images at 32x32, whatever their size.
    rng = np.random.default_rng(1)
    root = tmp_path / "imgs"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    code, _, err = run_cli(["run", "--data", root, "--features", "hog+color", "--epochs", "2", "-q",
                            "--test-fraction", "0.25", "--out", tmp_path / "m"])
    assert code == 0, err
    assert load_bundle(tmp_path / "m").extra["image_size"] == [32, 32]
    big = tmp_path / "big.png"
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(big)
    code, out, err = run_cli(["predict", tmp_path / "m", big])
    assert code == 0, err
    path, cls, prob = out.strip().split("\t")
    assert cls in ("a", "b") and 0 <= float(prob) <= 1
    code, _, err = run_cli(["predict", tmp_path / "m", big, "--no-resize"])
    assert code == 1 and "size" in err and len(err.strip().splitlines()) == 1


def test_wide_preset_is_default_with_dropout(tmp_path, run_cli, table):
    feats = save_features(tmp_path / "f.npz", table)
    code, _, err = run_cli(["train", feats, "--preset", "wide", "--epochs", "2", "-q", "--out", tmp_path / "w"])
    assert code == 0, err
    cfg = json.loads((tmp_path / "w" / "config.json").read_text())["train"]
    assert cfg == dataclasses.replace(PRESETS["default"], dropout=0.3, epochs=2).to_dict()

"""The train / run / lecture / evaluate commands: what they write and print, and their refusals."""

from __future__ import annotations

import dataclasses
import errno
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from featmlp.runs.bundle import load_bundle
from featmlp.runs import train_run
from featmlp.tables.store import save_features, table_fingerprint
from featmlp.training import PRESETS, TrainConfig

from _files import snapshot, two_class_folder


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
    assert json.loads(out)["test_accuracy"] == pytest.approx(acc)


@pytest.mark.parametrize("args", [["--features", "lecture"], ["--features", "color", "--flip", "--test-flip"]])
def test_evaluate_json_is_the_runs_metrics(tmp_path, run_cli, args):
    # color features mirror by a column permutation: with --test-flip both average two predictions
    root = two_class_folder(tmp_path / "imgs")
    code, _, err = run_cli(["run", "--data", root, "--test-fraction", "0.5", *args, "--hidden", "8",
                            "--epochs", "3", "-q", "--out", tmp_path / "r"])
    assert code == 0, err
    code, out, err = run_cli(["evaluate", tmp_path / "r", "--json"])
    assert code == 0, err
    printed = json.loads(out)
    stored = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert set(printed) == {"test_accuracy", "n_test", "per_class", "macro", "weighted", "confusion_matrix"}
    assert printed == {k: stored[k] for k in printed} and printed["n_test"] == 10


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
    # the reason names the file, never Pillow's in-memory buffer ("<_io.BytesIO object at 0x...>")
    assert "BytesIO" not in err and "0x" not in err and "cannot identify" in err


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
    # the commands hold out 10 % for validation (issue 18)
    assert cfg == dataclasses.replace(PRESETS["default"], dropout=0.3, epochs=2, val_fraction=0.1).to_dict()


# ------------------------------------------------------------------ relocatable runs, checked data

def test_copied_run_evaluates_its_own_data(tmp_path, run_cli):
    root = two_class_folder(tmp_path / "imgs")
    a, b = tmp_path / "A", tmp_path / "B"
    code, _, err = run_cli(["run", "--data", root, "--test-fraction", "0.5", "--epochs", "3", "-q", "--out", a])
    assert code == 0, err
    assert json.loads((a / "config.json").read_text())["data"]["feature_file"] == "features.npz"
    shutil.copytree(a, b)
    b_acc = json.loads((b / "metrics.json").read_text())["test_accuracy"]
    # a new run into A on other images (another split of a brighter folder)
    other = two_class_folder(tmp_path / "imgs2", n=15, seed=5)
    code, _, err = run_cli(["run", "--data", other, "--test-fraction", "0.4", "--epochs", "3", "-q", "--out", a,
                            "--force"])
    assert code == 0, err
    code, out, err = run_cli(["evaluate", b, "--json"])
    assert code == 0, err
    m = json.loads(out)
    assert m["n_test"] == 10 and m["test_accuracy"] == pytest.approx(b_acc)
    assert json.loads(run_cli(["evaluate", a, "--json"])[1])["n_test"] == 12
    # B's features replaced by A's: refused, unless passed explicitly
    shutil.copy(a / "features.npz", b / "features.npz")
    code, _, err = run_cli(["evaluate", b])
    assert code == 1 and "is not the data this model was trained on" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli(["evaluate", b, b / "features.npz", "--json"])
    assert code == 0 and json.loads(out)["n_test"] == 12


def test_evaluate_notices_a_changed_feature_file(tmp_path, run_cli, table):
    feats = save_features(tmp_path / "f.npz", table)
    assert run_cli(["train", feats, "--epochs", "2", "-q", "--out", tmp_path / "r"])[0] == 0
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())["data"]
    assert cfg["feature_file"] == str(feats.resolve()) and cfg["table_fingerprint"] == table_fingerprint(table)
    assert run_cli(["evaluate", tmp_path / "r"])[0] == 0
    X = table.X_test.copy()
    X[0] += 1
    save_features(feats, dataclasses.replace(table, X_test=X), overwrite=True)
    code, _, err = run_cli(["evaluate", tmp_path / "r"])
    assert code == 1 and "not the data this model was trained on" in err
    assert run_cli(["evaluate", tmp_path / "r", feats])[0] == 0
    # NaN rows are refused when evaluating too, with their count
    X[[1, 2, 3]] = np.nan
    save_features(feats, dataclasses.replace(table, X_test=X), overwrite=True)
    code, _, err = run_cli(["evaluate", tmp_path / "r", feats])
    assert code == 1 and "3 of 150 rows" in err


def test_retrain_on_the_runs_own_features_with_force(tmp_path, run_cli):
    # `train DIR/features.npz --out DIR --force`: replacing DIR must not lose the features it reads
    root = two_class_folder(tmp_path / "imgs")
    out = tmp_path / "r"
    assert run_cli(["run", "--data", root, "--test-fraction", "0.5", "--epochs", "2", "-q", "--out", out])[0] == 0
    features = (out / "features.npz").read_bytes()
    code, _, err = run_cli(["train", out / "features.npz", "--epochs", "3", "-q", "--out", out, "--force"])
    assert code == 0, err
    assert (out / "features.npz").read_bytes() == features
    assert json.loads((out / "config.json").read_text())["data"]["feature_file"] == "features.npz"
    assert run_cli(["evaluate", out])[0] == 0


def test_disk_full_during_train_command_is_one_line(tmp_path, run_cli, table, monkeypatch):
    import featmlp.runs.results

    feats = save_features(tmp_path / "f.npz", table)
    out = tmp_path / "run"
    assert run_cli(["train", feats, "--epochs", "1", "-q", "--out", out])[0] == 0
    before = snapshot(out)
    real = featmlp.runs.results.write_json

    def full(path, obj):
        if str(path).endswith("metrics.json"):  # the last file a run writes
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, obj)

    monkeypatch.setattr(featmlp.runs.results, "write_json", full)
    code, _, err = run_cli(["train", feats, "--epochs", "2", "-q", "--out", out, "--force"])
    assert code == 1 and "disk is full" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.npz", "run"]


@pytest.mark.parametrize("args, message", [
    (["--patience", "3", "--val-fraction", "0"], "needs validation data"),
    pytest.param(["--device", "cuda"], "CUDA is not available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_run_refuses_settings_before_extracting(tmp_path, run_cli, monkeypatch, args, message):
    import featmlp.tables.extract

    root = two_class_folder(tmp_path / "imgs")
    monkeypatch.setattr(featmlp.tables.extract, "extract_features", lambda *a, **k: pytest.fail("extracted"))
    code, _, err = run_cli(["run", "--data", root, "-q", *args, "--out", tmp_path / "r"])
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs"]


def test_tensorboard_logs_travel_with_the_run(tmp_path, run_cli, table):
    pytest.importorskip("tensorboard")
    feats = save_features(tmp_path / "f.npz", table)
    code, _, err = run_cli(["train", feats, "--epochs", "2", "-q", "--tensorboard", "--out", tmp_path / "r"])
    assert code == 0, err
    assert list((tmp_path / "r" / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.npz", "r"]


def test_train_and_run_say_what_they_train_and_list_what_they_wrote(tmp_path, run_cli, table):
    pytest.importorskip("tensorboard")
    feats = save_features(tmp_path / "f.npz", table)
    code, out, err = run_cli(["train", feats, "--hidden", "16,8", "--bottleneck", "4", "--dropout", "0.25",
                              "--epochs", "2", "--tensorboard", "--out", tmp_path / "t"])
    assert code == 0, err
    assert ("features: 450 train, 150 test x 9; network 9 -> 4 (linear) -> 16 -> 8 -> 3, dropout 0.25, ce, "
            "adam lr 0.003 cosine, batch 256, 2 epochs, 0.1 held out for validation\n") in out
    listed = out.strip().splitlines()[-1].split("(")[1].rstrip(")").split(", ")
    assert listed == sorted(p.name + ("/" if p.is_dir() else "") for p in (tmp_path / "t").iterdir())
    assert "tensorboard/" in listed and "model.safetensors" in listed

    root = two_class_folder(tmp_path / "imgs")
    code, out, err = run_cli(["run", "--data", root, "--features", "color", "--test-fraction", "0.5", "--flip",
                              "--hidden", "6", "--optimizer", "sgd", "--lr", "0.1", "--epochs", "2",
                              "--out", tmp_path / "r"])
    assert code == 0, err
    assert ("x 22; network 22 -> 6 -> 2, ce, sgd lr 0.1 cosine momentum 0.9, batch 256, 2 epochs, 0.1 held out for "
            "validation, flip\n") in out
    assert "features.npz" in out.strip().splitlines()[-1]
    code, out, _ = run_cli(["train", feats, "--epochs", "2", "-q", "--out", tmp_path / "q"])
    assert "network" not in out and "run directory" in out  # -q: only the result


def test_run_command_prints_the_jobs_lines(tmp_path, run_cli):
    root = two_class_folder(tmp_path / "imgs")
    (root / "dark" / "README.txt").write_text("not an image")
    out = tmp_path / "r"
    code, stdout, err = run_cli(["run", "--data", root, "--test-fraction", "0.5", "--hidden", "4", "--epochs", "2",
                                 "--skip-bad", "--out", out])
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[0] == (f"building the run in {tmp_path / '.r.incomplete'} (its loss.png follows the loss while "
                        f"training); moved to {out} when complete")
    assert lines[1].startswith(f"data: image folder {root}") and lines[1].endswith(
        f": 10 train + 10 test images, 2 classes; lecture features -> {out / 'features.npz'}")
    assert lines[2] == ("features: 10 train, 10 test x 9; network 9 -> 4 -> 2, ce, adam lr 0.003 cosine, batch 256, "
                        "2 epochs, 0.1 held out for validation")
    assert lines[3].startswith("epoch 1/2  loss ") and lines[4].startswith("epoch 2/2  loss ")
    assert lines[5].startswith("test accuracy ") and lines[6].startswith(f"run directory: {out}  (config.json")
    assert len(lines) == 7
    assert "skipped 1 unreadable file: dark/README.txt (not an image)" in err


def _unbalanced_features(path, n=400, n_classes=4, seed=0):
    from sklearn.datasets import make_classification

    from featmlp.tables.store import FeatureTable

    X, y = make_classification(n, 9, n_informative=6, n_classes=n_classes, weights=[0.4, 0.3, 0.2, 0.1],
                               random_state=seed)
    cut = n * 3 // 4
    return save_features(path, FeatureTable(X[:cut], y[:cut], X[cut:], y[cut:], tuple(f"f{i}" for i in range(9)),
                                            tuple("abcd"[:n_classes]), {"features": "lecture"}))


def test_train_holds_out_a_stratified_tenth_by_default(tmp_path, run_cli):
    from featmlp.tables.store import load_features
    from featmlp.training.setup import validation_indices

    feats = _unbalanced_features(tmp_path / "f.npz")
    code, _, err = run_cli(["train", feats, "--epochs", "3", "--seed", "3", "-q", "--out", tmp_path / "r"])
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "config.json").read_text())["train"]["val_fraction"] == 0.1
    history = json.loads((tmp_path / "r" / "metrics.json").read_text())["history"]
    assert all("val_accuracy" in record for record in history)
    # the rows held out: a tenth of each class (numpy's counts), and the last epoch's validation
    # accuracy is the saved model's accuracy on exactly those rows
    table = load_features(feats)
    train_rows, val_rows = validation_indices(table.y_train, 0.1, 3)
    assert len(val_rows) == int(np.ceil(0.1 * len(table.y_train)))
    assert len(np.intersect1d(train_rows, val_rows)) == 0
    expected = np.bincount(table.y_train) * 0.1
    assert np.all(np.abs(np.bincount(table.y_train[val_rows], minlength=4) - expected) <= 1)
    bundle = load_bundle(tmp_path / "r")
    accuracy = np.mean(bundle.predict(table.X_train[val_rows]) == table.y_train[val_rows])
    assert history[-1]["val_accuracy"] == pytest.approx(accuracy)


def test_val_fraction_0_and_lecture_hold_out_nothing(tmp_path, run_cli):
    feats = _unbalanced_features(tmp_path / "f.npz")
    for args in (["--val-fraction", "0"], ["--preset", "lecture"]):
        out = tmp_path / args[-1]
        code, _, err = run_cli(["train", feats, "--epochs", "2", "-q", "--out", out, *args])
        assert code == 0, err
        assert json.loads((out / "config.json").read_text())["train"]["val_fraction"] == 0
        assert all("val_accuracy" not in r for r in json.loads((out / "metrics.json").read_text())["history"])


def test_overfitting_is_said_once_and_only_when_it_happens(tmp_path, run_cli):
    from featmlp.tables.store import FeatureTable

    rng = np.random.default_rng(0)
    names = tuple(f"f{i}" for i in range(40))
    # random labels: a wide network learns the training rows by heart and validation stays at chance
    X = rng.normal(size=(260, 40))
    y = rng.integers(0, 4, 260)
    noise = save_features(tmp_path / "noise.npz", FeatureTable(X[:200], y[:200], X[200:], y[200:], names,
                                                              tuple("abcd"), {"features": "lecture"}))
    # labels a linear rule gives: what is learnt carries over to the validation rows
    y2 = (X[:, 0] > 0).astype(int) + 2 * (X[:, 1] > 0)
    X2 = X[:, :2]
    clean = save_features(tmp_path / "clean.npz", FeatureTable(X2[:200], y2[:200], X2[200:], y2[200:], names[:2],
                                                              tuple("abcd"), {"features": "lecture"}))
    args = ["--hidden", "256", "--lr", "0.01", "--schedule", "none", "--epochs", "150", "--val-fraction", "0.25",
            "-q"]
    code, _, err = run_cli(["train", noise, *args, "--out", tmp_path / "noise"])
    assert code == 0, err
    history = json.loads((tmp_path / "noise" / "metrics.json").read_text())["history"]
    first = next(r for r in history if r["train_accuracy"] == 1.0)
    assert first["train_accuracy"] - first["val_accuracy"] > 0.10  # the case is what it is built to be
    assert err.count("overfitting") == 1
    assert f"at epoch {first['epoch']} " in err and f"{first['val_accuracy']:.3f}" in err
    code, _, err = run_cli(["train", clean, *args, "--out", tmp_path / "clean"])
    assert code == 0, err
    history = json.loads((tmp_path / "clean" / "metrics.json").read_text())["history"]
    assert not any(r["train_accuracy"] == 1.0 and r["train_accuracy"] - r["val_accuracy"] > 0.10 for r in history)
    assert "overfitting" not in err


def test_overfitting_is_not_said_on_a_gap_within_the_noise_of_few_validation_rows(tmp_path, run_cli):
    from featmlp.tables.store import FeatureTable

    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 2))
    y = (X[:, 0] > 0).astype(int) + 2 * (X[:, 1] > 0)
    noisy = rng.random(50) < 0.25  # a quarter of the labels at random: the training rows are learnt by heart
    y[noisy] = rng.integers(0, 4, noisy.sum())
    table = save_features(tmp_path / "few.npz", FeatureTable(X[:40], y[:40], X[40:], y[40:], ("a", "b"),
                                                             tuple("abcd"), {"features": "lecture"}))
    code, _, err = run_cli(["train", table, "--hidden", "256", "--lr", "0.01", "--schedule", "none", "--epochs",
                            "150", "--val-fraction", "0.1", "-q", "--out", tmp_path / "run"])
    assert code == 0, err
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    gaps = {r["train_accuracy"] - r["val_accuracy"] for r in history if r["train_accuracy"] == 1.0}
    # the case is what it is built to be: 4 validation rows (ceil(40 * 0.1)), one of them wrong at
    # training accuracy 1.0, a 25-point gap; two standard errors of 3/4 on 4 rows: 2 * sqrt(3/16 / 4) = 0.433
    assert gaps == {0.25}
    assert "overfitting" not in err

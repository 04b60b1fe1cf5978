"""Run directories and the train / run / lecture / evaluate / predict commands."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import make_classification
from sklearn.metrics import accuracy_score, confusion_matrix

from featmlp.runs.bundle import load_bundle
from featmlp.errors import DataError
from featmlp.runs import RunDirectory, repeat_config, train_run
from featmlp.tables.store import FeatureTable, save_features, table_fingerprint
from featmlp.training import PRESETS, TrainConfig



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


def test_loss_curve_is_drawn_once(tmp_path, table, monkeypatch):
    # The live plot draws the final curve when training ends; writing the results does not draw
    # the same curve into the same file again (a tenth of a lecture run's time).
    import featmlp.runs.plots
    import featmlp.runs.results

    drawn, real = [], featmlp.runs.plots.plot_history

    def counting(history, path, **kwargs):
        drawn.append((len(history), os.path.basename(path)))
        return real(history, path, **kwargs)

    monkeypatch.setattr(featmlp.runs.plots, "plot_history", counting)
    monkeypatch.setattr(featmlp.runs.results, "plot_history", counting)
    train_run(table, TrainConfig(hidden=(4,), epochs=3), tmp_path / "r", live_plot_seconds=1e9)
    assert drawn == [(3, "loss.png")]
    assert (tmp_path / "r" / "loss.png").read_bytes().startswith(b"\x89PNG")


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
    assert json.loads(out)["test_accuracy"] == pytest.approx(acc)


@pytest.mark.parametrize("args", [["--features", "lecture"], ["--features", "color", "--flip", "--test-flip"]])
def test_evaluate_json_is_the_runs_metrics(tmp_path, run_cli, args):
    # color features mirror by a column permutation: with --test-flip both average two predictions
    root = image_folder(tmp_path / "imgs")
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
    assert cfg == dataclasses.replace(PRESETS["default"], dropout=0.3, epochs=2).to_dict()


# ------------------------------------------------------------------ run directories: whole or not at all

def snapshot(directory):
    """Every file under ``directory`` with its bytes: what 'left as it was' is checked against."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def bad_table(table, **changes):
    return dataclasses.replace(table, **changes)


def nan_train(table):
    X = table.X_train.copy()
    X[5, 2] = np.nan
    return bad_table(table, X_train=X)


def nan_test(table):
    X = table.X_test.copy()
    X[[3, 7], 1] = np.inf
    return bad_table(table, X_test=X)


def huge_column(table):
    X, Xt = table.X_train.copy(), table.X_test.copy()
    X[:, 4] *= 1e300
    Xt[:, 4] *= 1e300
    return bad_table(table, X_train=X, X_test=Xt)


def one_class(table):
    return bad_table(table, y_train=np.zeros_like(table.y_train))


@pytest.mark.parametrize("make, args, message", [
    (nan_train, [], "NaN or infinite values in 1 of 450 rows"),
    (nan_test, [], "test features hold NaN or infinite values in 2 of 150 rows"),
    (huge_column, [], "(f4) hold values too large to scale"),
    (one_class, [], "needs at least 2 classes in train"),
    (None, ["--patience", "3"], "needs validation data"),
    (None, ["--hidden", "100000000"], "9 -> 100000000 -> 3"),
    pytest.param(None, ["--device", "cuda"], "CUDA is not available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_failed_run_writes_nothing(tmp_path, run_cli, table, make, args, message):
    feats = save_features(tmp_path / "f.npz", make(table) if make else table)
    # into a new directory: nothing is left behind
    code, _, err = run_cli(["train", feats, "--epochs", "2", "-q", *args, "--out", tmp_path / "new"])
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.npz"]
    # into an existing run, with --force: that run stays as it was
    train_run(table, TrainConfig(hidden=(4,), epochs=1), tmp_path / "old")
    before = snapshot(tmp_path / "old")
    code, _, err = run_cli(["train", feats, "--epochs", "2", "-q", *args, "--out", tmp_path / "old", "--force"])
    assert code == 1 and message in err
    assert snapshot(tmp_path / "old") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.npz", "old"]


def test_existing_run_needs_force(tmp_path, run_cli, table):
    feats = save_features(tmp_path / "f.npz", table)
    out = tmp_path / "r"
    assert run_cli(["train", feats, "--hidden", "4", "--epochs", "1", "-q", "--out", out])[0] == 0
    before = snapshot(out)
    code, _, err = run_cli(["train", feats, "--hidden", "8", "--epochs", "2", "-q", "--out", out])
    assert code == 1 and "already exists" in err and "--force" in err
    assert snapshot(out) == before
    with pytest.raises(DataError, match="already exists"):
        train_run(table, TrainConfig(epochs=1), out)
    code, _, err = run_cli(["train", feats, "--hidden", "8", "--epochs", "2", "-q", "--out", out, "--force"])
    assert code == 0, err
    cfg = json.loads((out / "config.json").read_text())["train"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert cfg["hidden"] == [8] and metrics["epochs_run"] == 2 and load_bundle(out).spec.hidden == (8,)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.npz", "r"]  # no staging or old run left
    # an empty directory is no run to lose
    (tmp_path / "empty").mkdir()
    assert run_cli(["train", feats, "--epochs", "1", "-q", "--out", tmp_path / "empty"])[0] == 0
    assert (tmp_path / "empty" / "model.json").is_file()


def test_kill_during_training_leaves_the_old_run(tmp_path, table):
    # A slow run (a wide network, tiny batches, many epochs) into an existing run, killed with
    # SIGKILL once its first epoch is printed: the old run must be byte for byte as it was.
    rng = np.random.default_rng(0)
    big = FeatureTable(rng.normal(size=(20000, 9)), rng.integers(0, 3, 20000), table.X_test, table.y_test,
                       table.feature_names, table.class_names, {"features": "lecture"})
    feats = save_features(tmp_path / "big.npz", big)
    out = tmp_path / "run"
    train_run(table, TrainConfig(hidden=(4,), epochs=1), out)
    before = snapshot(out)
    cmd = [sys.executable, "-m", "featmlp.cli", "train", str(feats), "--hidden", "512,512", "--batch-size", "8",
           "--epochs", "1000", "--out", str(out), "--force"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("epoch "):
                break
        assert any(line.startswith("epoch ") for line in lines), "".join(lines) + proc.stderr.read()
        assert any(".run.incomplete" in line for line in lines)  # where the loss plot is, said once
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert snapshot(out) == before
    # the next run clears what the killed one left and replaces the old run
    train_run(table, TrainConfig(hidden=(5,), epochs=1), out, overwrite=True)
    assert load_bundle(out).spec.hidden == (5,)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.npz", "run"]


def test_a_second_run_into_the_same_directory_is_refused(tmp_path, run_cli, table, lock_holder):
    # Two runs into one DIR would clear each other's staging directory: the second is refused
    # while the first holds DIR's lock, and runs once the holder is gone (even by kill -9).
    feats = save_features(tmp_path / "f.npz", table)
    out = tmp_path / "run"
    holder = lock_holder(tmp_path / ".run.lock")
    code, _, err = run_cli(["train", feats, "--epochs", "1", "--out", out, "-q"])
    assert code == 1
    assert err == f"error: another featmlp run is writing {out} (pid {holder.pid}): wait for it, or choose another --out\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.lock", "f.npz"]
    holder.kill()
    holder.wait()
    code, _, _ = run_cli(["train", feats, "--epochs", "1", "--out", out, "-q"])
    assert code == 0 and load_bundle(out).spec.n_classes == len(table.class_names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.npz", "run"]  # the stale lock file is gone


def test_interrupted_replacement_is_put_back(tmp_path, table):
    # A kill between "old run renamed aside" and "new run renamed in": the next run puts the
    # old one back before deciding anything.
    out = tmp_path / "run"
    train_run(table, TrainConfig(hidden=(4,), epochs=1), out)
    before = snapshot(out)
    os.replace(out, tmp_path / ".run.replaced")
    with pytest.raises(DataError, match="already exists"):
        train_run(table, TrainConfig(epochs=1), out)
    assert snapshot(out) == before and not (tmp_path / ".run.replaced").exists()


def test_disk_full_while_writing_keeps_the_old_run(tmp_path, table, monkeypatch):
    import featmlp.runs.results

    out = tmp_path / "run"
    train_run(table, TrainConfig(hidden=(4,), epochs=1), out)
    before = snapshot(out)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(featmlp.runs.results, "save_bundle", full)
    with pytest.raises(OSError) as e:
        train_run(table, TrainConfig(hidden=(8,), epochs=2), out, overwrite=True)
    assert e.value.errno == errno.ENOSPC
    assert snapshot(out) == before
    with pytest.raises(OSError):
        train_run(table, TrainConfig(epochs=1), tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging directory left


def test_staging_keeps_only_the_resumable_extraction(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        with RunDirectory(out, keep=("features.npz.partial",)) as rd:
            (rd.path / "features.npz.partial").mkdir()
            (rd.path / "features.npz.partial" / "train-000000000.npy").write_bytes(b"chunk")
            (rd.path / "config.json").write_text("{}")
            raise KeyboardInterrupt
    staging = tmp_path / ".run.incomplete"
    assert not out.exists() and snapshot(staging) == {"features.npz.partial/train-000000000.npy": b"chunk"}
    with RunDirectory(out, keep=("features.npz.partial",)) as rd:  # the rerun finds the chunk
        assert (rd.path / "features.npz.partial" / "train-000000000.npy").read_bytes() == b"chunk"
        (rd.path / "features.npz").write_bytes(b"done")
    assert not staging.exists() and snapshot(out)["features.npz"] == b"done"


def image_folder(root, n=10, size=16, seed=0):
    rng = np.random.default_rng(seed)
    for k, cls in enumerate(("dark", "light")):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            img = np.clip(60 + 120 * k + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / cls / f"{i}.png")
    return root


def test_killed_run_resumes_its_extraction(tmp_path, run_cli, monkeypatch):
    import featmlp.tables.extract

    root = image_folder(tmp_path / "imgs")
    monkeypatch.setitem(featmlp.tables.extract.extract_dataset.__kwdefaults__, "chunk_size", 4)
    real, calls = featmlp.tables.extract.extract_features, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(featmlp.tables.extract, "extract_features", interrupted)
    args = ["run", "--data", root, "--test-fraction", "0.5", "--epochs", "1", "-q", "--out", tmp_path / "r"]
    code, _, err = run_cli(args)
    assert code == 130, err
    assert not (tmp_path / "r").exists()
    staging = tmp_path / ".r.incomplete"
    assert [p.name for p in staging.iterdir()] == ["features.npz.partial"]
    assert len(list((staging / "features.npz.partial").glob("*.npy"))) == 1
    calls.clear()
    monkeypatch.setattr(featmlp.tables.extract, "extract_features", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    code, _, err = run_cli(args)
    assert code == 0, err
    assert len(calls) == 6 - 1  # 10 + 10 images in chunks of 4: the finished chunk was not redone
    assert not staging.exists() and (tmp_path / "r" / "features.npz").is_file()


# ------------------------------------------------------------------ relocatable runs, checked data

def test_copied_run_evaluates_its_own_data(tmp_path, run_cli):
    root = image_folder(tmp_path / "imgs")
    a, b = tmp_path / "A", tmp_path / "B"
    code, _, err = run_cli(["run", "--data", root, "--test-fraction", "0.5", "--epochs", "3", "-q", "--out", a])
    assert code == 0, err
    assert json.loads((a / "config.json").read_text())["data"]["feature_file"] == "features.npz"
    shutil.copytree(a, b)
    b_acc = json.loads((b / "metrics.json").read_text())["test_accuracy"]
    # a new run into A on other images (another split of a brighter folder)
    other = image_folder(tmp_path / "imgs2", n=15, seed=5)
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
    root = image_folder(tmp_path / "imgs")
    out = tmp_path / "r"
    assert run_cli(["run", "--data", root, "--test-fraction", "0.5", "--epochs", "2", "-q", "--out", out])[0] == 0
    features = (out / "features.npz").read_bytes()
    code, _, err = run_cli(["train", out / "features.npz", "--epochs", "3", "-q", "--out", out, "--force"])
    assert code == 0, err
    assert (out / "features.npz").read_bytes() == features
    assert json.loads((out / "config.json").read_text())["data"]["feature_file"] == "features.npz"
    assert run_cli(["evaluate", out])[0] == 0


# ------------------------------------------------------------------ predict: every good file, one line per bad

def unescape(field):
    """Inverse of predict's escaping (backslash escapes as PostgreSQL COPY), written independently."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\":
            out.append({"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}[field[i + 1]])
            i += 2
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def test_predict_reports_bad_files_and_classifies_the_rest(tmp_path, run_cli):
    root = image_folder(tmp_path / "imgs")
    assert run_cli(["run", "--data", root, "--test-fraction", "0.5", "--epochs", "2", "-q",
                    "--out", tmp_path / "m"])[0] == 0
    odd = tmp_path / "new"
    odd.mkdir()
    names = ["plain.png", "tab\there.png", "line\nbreak.png", "back\\slash.png"]
    src = sorted(root.rglob("*.png"))
    for name, s in zip(names, src):
        shutil.copy(s, odd / name)
    (odd / "README.txt").write_text("not an image")
    paths = [odd / names[0], odd / "README.txt", odd / names[1], tmp_path / "missing.png", odd / names[2],
             odd / names[3]]
    code, out, err = run_cli(["predict", tmp_path / "m", *paths])
    assert code == 1
    lines = out.splitlines()
    assert len(lines) == 4  # the four images, in order, each on one line
    assert [unescape(line.split("\t")[0]) for line in lines] == [str(odd / n) for n in names]
    bundle = load_bundle(tmp_path / "m")
    from featmlp.data import read_images
    from featmlp.features import extract_features

    expected = bundle.predict_proba(extract_features(read_images([odd / n for n in names], image_size=(16, 16)),
                                                     "lecture"))
    for line, p in zip(lines, expected):
        _, cls, prob = line.split("\t")
        assert cls == bundle.class_names[p.argmax()] and float(prob) == pytest.approx(p.max(), abs=1e-4)
    errors = err.strip().splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(f"error: {odd / 'README.txt'}: ") and errors[1].startswith(f"error: {tmp_path / 'missing.png'}: ")
    # all good: exit 0
    code, out, err = run_cli(["predict", tmp_path / "m", odd / names[0]])
    assert code == 0 and err == "" and len(out.splitlines()) == 1


def test_predict_help_says_how_names_are_escaped(run_cli):
    code, out, _ = run_cli(["predict", "--help"])
    assert code == 0 and "PostgreSQL COPY" in out and "\\t" in out


def test_predict_checks_the_image_size_and_its_memory(tmp_path, run_cli, table, monkeypatch):
    import featmlp._memory

    train_run(table, TrainConfig(hidden=(4,), epochs=1), tmp_path / "m")
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    meta_file = tmp_path / "m" / "model.json"
    meta = json.loads(meta_file.read_text())
    meta["extra"]["image_size"] = [100000, 100000]  # 10^10 pixels: 30 GB for one image's RGB values
    meta_file.write_text(json.dumps(meta))
    code, out, err = run_cli(["predict", tmp_path / "m", img])
    assert code == 1 and out == "" and "100000x100000" in err and len(err.strip().splitlines()) == 1
    # a valid size that does not fit this (pretended) memory: refused before any image is read
    meta["extra"]["image_size"] = [4000, 4000]
    meta_file.write_text(json.dumps(meta))
    monkeypatch.setattr(featmlp._memory, "available_memory", lambda device="cpu": 100 * 2**20)
    monkeypatch.setattr("featmlp.runs.predict.read_images", lambda *a, **k: pytest.fail("read"))
    code, out, err = run_cli(["predict", tmp_path / "m", img])
    assert code == 1 and len(err.strip().splitlines()) == 1
    # by hand: 4000 * 4000 pixels * (3 RGB + 3 its copy as a batch + 1 grayscale + 10 the lecture's int64
    # Gabor magnitudes and slack) bytes + 320 * 4096 bytes of strip buffers (capped) + 640 KiB of GLCM counts
    mib = (4000 * 4000 * (3 + 3 + 1 + 10) + 320 * 4096 + (640 << 10)) / 2**20
    assert f"{mib:.1f}" == "261.3"
    assert "resized to 4000x4000" in err and f"1 at once, needs about {mib:.1f} MB of memory, and 100.0 MB" in err


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
    (["--patience", "3"], "needs validation data"),
    pytest.param(["--device", "cuda"], "CUDA is not available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_run_refuses_settings_before_extracting(tmp_path, run_cli, monkeypatch, args, message):
    import featmlp.tables.extract

    root = image_folder(tmp_path / "imgs")
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
            "adam lr 0.003 cosine, batch 256, 2 epochs\n") in out
    listed = out.strip().splitlines()[-1].split("(")[1].rstrip(")").split(", ")
    assert listed == sorted(p.name + ("/" if p.is_dir() else "") for p in (tmp_path / "t").iterdir())
    assert "tensorboard/" in listed and "model.safetensors" in listed

    root = image_folder(tmp_path / "imgs")
    code, out, err = run_cli(["run", "--data", root, "--features", "color", "--test-fraction", "0.5", "--flip",
                              "--hidden", "6", "--optimizer", "sgd", "--lr", "0.1", "--epochs", "2",
                              "--out", tmp_path / "r"])
    assert code == 0, err
    assert "x 22; network 22 -> 6 -> 2, ce, sgd lr 0.1 cosine momentum 0.9, batch 256, 2 epochs, flip\n" in out
    assert "features.npz" in out.strip().splitlines()[-1]
    code, out, _ = run_cli(["train", feats, "--epochs", "2", "-q", "--out", tmp_path / "q"])
    assert "network" not in out and "run directory" in out  # -q: only the result


# ------------------------------------------------------------------ run_job: featmlp run from Python

def test_run_job_builds_the_run_and_tells_its_hooks(tmp_path):
    from featmlp.runs import JobHook, run_job
    from featmlp.tables.store import load_features

    root = image_folder(tmp_path / "imgs")
    (root / "dark" / "README.txt").write_text("not an image")
    events = []

    class Record(JobHook):
        def on_job_begin(self, staging, out):
            events.append(("begin", staging, out, out.exists()))

        def on_images(self, dataset):
            events.append(("images", len(dataset.train_labels) + len(dataset.test_labels)))

        def on_features(self, dataset, table):
            events.append(("features", table.X_train.shape))

        def on_config(self, table, config):
            events.append(("config", config.hidden))

        def on_epoch(self, record, history):
            events.append(("epoch", record["epoch"]))

    out = tmp_path / "r"
    job = run_job(root, "lecture", out, config=TrainConfig(hidden=(4,), epochs=2), test_fraction=0.5,
                  skip_bad=True, callbacks=[Record()])
    assert job.out == out and not (tmp_path / ".r.incomplete").exists()
    assert events == [("begin", tmp_path / ".r.incomplete", out, False), ("images", 20), ("features", (10, 9)),
                      ("config", (4,)), ("epoch", 1), ("epoch", 2)]
    assert [name for name, _ in job.skipped] == ["dark/README.txt"] and job.notices == ()
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "confusion.png", "features.npz", "loss.png",
                                                     "metrics.json", "model.json", "model.safetensors"]
    saved = load_features(out / "features.npz")
    np.testing.assert_array_equal(saved.X_test, job.table.X_test)
    # the test accuracy is the saved model's on the saved test split
    bundle = load_bundle(out)
    assert job.metrics["test_accuracy"] == pytest.approx(accuracy_score(saved.y_test, bundle.predict(saved.X_test)))
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] == job.metrics["test_accuracy"]
    data = json.loads((out / "config.json").read_text())["data"]
    assert (data["source"], data["test_fraction"], data["feature_file"]) == (job.source, 0.5, "features.npz")
    assert job.source.startswith(f"image folder {root}")
    with pytest.raises(DataError, match="already exists"):  # refused before the images are read
        run_job(tmp_path / "nowhere", "lecture", out)


def test_run_job_tells_its_callbacks_the_progress_of_every_step(tmp_path):
    from featmlp.progress import Callback
    from featmlp.runs import run_job

    class Heard(Callback):
        def __init__(self):
            self.calls = []

        def on_progress(self, desc, done, total):
            self.calls.append((desc, done, total))

    heard, hooked = Heard(), []
    run_job(image_folder(tmp_path / "imgs"), "lecture", tmp_path / "r", config=TrainConfig(hidden=(4,), epochs=2),
            test_fraction=0.5, progress=lambda *a: hooked.append(a), callbacks=[heard])
    # The callback hears what the progress= hook hears (loading, extraction), then training's own.
    assert hooked and heard.calls == [*hooked, ("train", 1, 2), ("train", 2, 2)]
    assert {desc for desc, _, _ in hooked} >= {"extract"}
    assert hooked[-1] == ("extract", 20, 20)


def test_decide_flips_turns_off_flips_where_mirrors_change_the_class(table, monkeypatch):
    import featmlp.runs.job
    from featmlp.runs import decide_flips

    flips = TrainConfig(flip=True, test_flip=True)
    monkeypatch.setattr(featmlp.runs.job, "mirror_agreement", lambda t: (0.9, 0.85))  # 0.85 >= 0.9 * 0.9: kept
    assert decide_flips(table, flips) == (flips, None)
    monkeypatch.setattr(featmlp.runs.job, "mirror_agreement", lambda t: (0.9, 0.3))
    config, message = decide_flips(table, flips)
    assert (config.flip, config.test_flip) == (False, False) and config == dataclasses.replace(flips, flip=False,
                                                                                              test_flip=False)
    assert message.startswith("flips off: mirror images of the training images keep their class for 30% of them "
                              "against 90% for the images")
    monkeypatch.setattr(featmlp.runs.job, "mirror_agreement", lambda t: pytest.fail("no flips to decide"))
    assert decide_flips(table, TrainConfig()) == (TrainConfig(), None)


def test_run_command_prints_the_jobs_lines(tmp_path, run_cli):
    root = image_folder(tmp_path / "imgs")
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
    assert lines[2] == "features: 10 train, 10 test x 9; network 9 -> 4 -> 2, ce, adam lr 0.003 cosine, batch 256, 2 epochs"
    assert lines[3].startswith("epoch 1/2  loss ") and lines[4].startswith("epoch 2/2  loss ")
    assert lines[5].startswith("test accuracy ") and lines[6].startswith(f"run directory: {out}  (config.json")
    assert len(lines) == 7
    assert "skipped 1 unreadable file: dark/README.txt (not an image)" in err


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
    assert m["test_accuracy"] == pytest.approx(accuracy_score(table.y_test, y_pred)) == run.metrics["test_accuracy"]
    assert m["confusion_matrix"] == confusion_matrix(table.y_test, y_pred).tolist()
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


def test_bundle_predicts_image_files_in_order_with_an_error_for_each_bad_one(tmp_path):
    from featmlp.runs import ImagePrediction
    from featmlp.data import read_images
    from featmlp.features import extract_features
    from featmlp.runs import run_job

    root = image_folder(tmp_path / "imgs")
    run_job(root, "lecture", tmp_path / "m", config=TrainConfig(hidden=(4,), epochs=2), test_fraction=0.5)
    bundle = load_bundle(tmp_path / "m")
    good = sorted(root.rglob("*.png"))[::4]  # 5 of the 16x16 training-size images
    big = tmp_path / "big.png"
    Image.fromarray(np.full((40, 24, 3), 200, np.uint8)).save(big)  # resized to 16x16, like the training images
    (tmp_path / "notes.txt").write_text("not an image")
    paths = [good[0], tmp_path / "notes.txt", good[1], big, tmp_path / "missing.png", *good[2:]]
    results = bundle.predict_images(paths)
    assert [r.path for r in results] == paths and [r.index for r in results] == list(range(len(paths)))
    ok = [r for r in results if r.error is None]
    assert [r.path for r in ok] == [good[0], good[1], big, *good[2:]]
    # independently: read (resized to the training size), lecture features, the bundle's probabilities
    expected = bundle.predict_proba(extract_features(read_images([r.path for r in ok], image_size=(16, 16)), "lecture"))
    for r, p in zip(ok, expected):
        assert r.class_name == bundle.class_names[p.argmax()] and r.probability == pytest.approx(p.max(), rel=1e-6)
    bad = [r for r in results if r.error is not None]
    assert [r.path for r in bad] == [tmp_path / "notes.txt", tmp_path / "missing.png"]
    assert all(r.class_name is None and r.probability is None for r in bad)
    assert "not a readable image" in bad[0].error and "no such file" in bad[1].error
    # without resizing the 24x40 image's features are still 9 lecture values: classified at its own size
    unresized = bundle.predict_images([big], resize=False)
    assert unresized == [ImagePrediction(big, unresized[0].class_name, unresized[0].probability, None, 0)]
    p = bundle.predict_proba(extract_features(read_images([big]), "lecture"))[0]
    assert unresized[0].probability == pytest.approx(p.max(), rel=1e-6)

"""Run directories whole or not at all: built beside, renamed in, one writer, resumable extraction."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from featmlp.runs.bundle import load_bundle
from featmlp.errors import DataError
from featmlp.runs import RunDirectory, train_run
from featmlp.tables.store import FeatureTable, save_features
from featmlp.training import TrainConfig

from _files import snapshot, two_class_folder


# ------------------------------------------------------------------ run directories: whole or not at all



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
    (None, ["--patience", "3", "--val-fraction", "0"], "needs validation data"),  # run holds out 10 % by default
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




def test_killed_run_resumes_its_extraction(tmp_path, run_cli, monkeypatch):
    import featmlp.tables.extract

    root = two_class_folder(tmp_path / "imgs")
    real, calls = featmlp.tables.extract.extract_features, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(featmlp.tables.extract, "extract_features", interrupted)
    args = ["run", "--data", root, "--test-fraction", "0.5", "--epochs", "1", "--chunk-size", "4", "-q",
            "--out", tmp_path / "r"]
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

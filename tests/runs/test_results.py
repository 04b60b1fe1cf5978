"""A run directory written by train_run: its files, the live loss curve, a diverged run recorded."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix

from featmlp.runs.bundle import load_bundle
from featmlp.runs import repeat_config, train_run
from featmlp.training import PRESETS, TrainConfig


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

"""run_job (featmlp run from Python): the run it builds, what its hooks and callbacks hear, the flips."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score

from featmlp.runs.bundle import load_bundle
from featmlp.errors import DataError
from featmlp.training import TrainConfig

from _files import two_class_folder


# ------------------------------------------------------------------ run_job: featmlp run from Python

def test_run_job_builds_the_run_and_tells_its_hooks(tmp_path):
    from featmlp.runs import JobHook, run_job
    from featmlp.tables.store import load_features

    root = two_class_folder(tmp_path / "imgs")
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
                                                     "metrics.json", "model.json", "model.safetensors",
                                                     "predictions.csv", "thumbnails.npz"]
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
    run_job(two_class_folder(tmp_path / "imgs"), "lecture", tmp_path / "r", config=TrainConfig(hidden=(4,), epochs=2),
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

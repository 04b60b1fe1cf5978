"""``featmlp evaluate``: --errors N against numpy, --json against metrics.json, --data on a folder
built here, and ``extract --test-fraction 1``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from featmlp.runs.bundle import load_bundle
from featmlp.runs.layout import METRICS_FILE, PREDICTIONS_FILE, read_json
from featmlp.tables.store import load_features

from _files import image_folder


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from featmlp.runs.job import run_job
    from featmlp.training import TrainConfig

    root = tmp_path_factory.mktemp("cli-evaluate")
    image_folder(root / "imgs", n_per_class=6)
    return run_job(root / "imgs", "lecture", root / "run", config=TrainConfig(hidden=(6,), epochs=3)).out


def test_errors_lists_the_most_confident_mistakes(run, run_cli):
    code, out, _ = run_cli(["evaluate", run, "--errors", 4])
    assert code == 0
    table = load_features(run / "features.npz")
    proba = load_bundle(run).predict_proba(table.X_test)
    pred, top = proba.argmax(axis=1), proba.max(axis=1)
    wrong = np.flatnonzero(pred != table.y_test)
    expected = wrong[np.argsort(-top[wrong], kind="stable")][:4]
    lines = out.splitlines()
    listed = lines[lines.index(next(x for x in lines if "most confident mistake" in x)) + 1:]
    assert [line.split()[-1] for line in listed] == [table.names_test[i] for i in expected]
    assert [line.split()[1] for line in listed] == [table.class_names[table.y_test[i]] for i in expected]
    code, out, _ = run_cli(["evaluate", run, "--errors", 2, "--json"])
    got = json.loads(out)
    assert [m["name"] for m in got["mistakes"]] == [table.names_test[i] for i in expected[:2]]


def test_json_has_metrics_jsons_test_keys_as_its_help_says(run, run_cli):
    code, out, _ = run_cli(["evaluate", run, "--json"])
    got, saved = json.loads(out), read_json(run / METRICS_FILE)
    assert code == 0 and {k: saved[k] for k in got} == got
    code, help_text, _ = run_cli(["evaluate", "--help"])
    said = " ".join(help_text.split())
    assert all(k in said for k in got) and "not the training record" in said


def test_data_scores_a_labelled_folder_into_out(run, run_cli, tmp_path):
    rng = np.random.default_rng(3)
    for c in ("dog", "cat"):
        (tmp_path / "new" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(tmp_path / "new" / c / f"{i}.png")
    code, out, err = run_cli(["evaluate", run, "--data", tmp_path / "new", "--out", tmp_path / "ev", "-q"])
    assert code == 0, err
    assert "on 6 images" in out and (tmp_path / "ev" / PREDICTIONS_FILE).is_file()
    (tmp_path / "new" / "yak").mkdir()
    Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(tmp_path / "new" / "yak" / "0.png")
    code, out, err = run_cli(["evaluate", run, "--data", tmp_path / "new", "--out", tmp_path / "ev2", "-q"])
    assert code == 1 and err.count("\n") == 1 and "'yak'" in err and "Traceback" not in err
    # the folder where a feature file goes: one line pointing to --data, nothing written into it
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "new").rglob("*"))
    code, out, err = run_cli(["evaluate", run, tmp_path / "new"])
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert f"--data: featmlp evaluate {run} --data {tmp_path / 'new'}" in err
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "new").rglob("*")) == before
    # a damaged run's own feature file is not an image source: no such hint
    code, out, err = run_cli(["evaluate", run, tmp_path / "ev" / PREDICTIONS_FILE])
    assert code == 1 and "--data" not in err


def test_extract_test_fraction_1_makes_every_image_a_test_image(run_cli, tmp_path):
    image_folder(tmp_path / "imgs", n_per_class=2)
    flat = tmp_path / "imgs" / "test"  # test/<class>/ alone, then the same folder with --test-fraction 1
    code, out, err = run_cli(["extract", flat, "-o", tmp_path / "a.npz", "--test-fraction", 1, "-q"])
    assert code == 0, err
    t = load_features(tmp_path / "a.npz")
    assert len(t.y_train) == 0 and len(t.y_test) == 9 and "0 train + 9 test" in out
    # nothing to train on: one line that says what to do
    code, out, err = run_cli(["train", tmp_path / "a.npz", "--out", tmp_path / "r", "--epochs", 1])
    assert code == 1 and "no training images" in err and "featmlp evaluate RUN --data" in err

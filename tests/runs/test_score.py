"""featmlp.runs.score: a saved run scored on a labelled folder (``evaluate RUN --data SOURCE --out DIR``),
against the same images scored through a feature table extracted from them."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from PIL import Image

from featmlp.data import load_dataset
from featmlp.errors import DataError
from featmlp.runs.bundle import load_bundle
from featmlp.runs.evaluate import score_run
from featmlp.runs.job import run_job
from featmlp.runs.layout import (CONFUSION_PLOT, EVALUATION_FILE, METRICS_FILE, PREDICTIONS_FILE, REPORT_FILE,
                                 THUMBNAILS_FILE, read_json)
from featmlp.runs.score import evaluate_source
from featmlp.tables.extract import extract_dataset
from featmlp.training import TrainConfig

from _files import class_folders, image_folder


def _folder(root, classes, n=4, seed=1, size=(20, 15), prefix=""):
    """ROOT/[prefix]<class>/*.png of random pictures, of another size than the run's images."""
    class_folders(root / prefix, classes, n, size, np.random.default_rng(seed))
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    image_folder(root / "imgs", n_per_class=6)  # 16x12 images of cat, dog, emu
    return run_job(root / "imgs", "lecture", root / "run", config=TrainConfig(hidden=(6,), epochs=3)).out


def test_a_folder_scores_as_its_extracted_table_does(run, tmp_path):
    new = _folder(tmp_path / "new", ("cat", "dog", "emu"))
    metrics, preds = evaluate_source(run, new, tmp_path / "ev")
    # the reference: the same images through a feature file at the run's image size, evaluated as a table
    ds = load_dataset(new, test_fraction=1, image_size=(16, 12))
    extract_dataset(ds, "lecture", tmp_path / "new.npz")
    ref_metrics, ref_preds = score_run(run, tmp_path / "new.npz")
    assert metrics == ref_metrics
    assert preds.names == ref_preds.names == ds.image_names("test")
    assert np.array_equal(preds.top_classes, ref_preds.top_classes)
    out = tmp_path / "ev"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [CONFUSION_PLOT, EVALUATION_FILE, METRICS_FILE, PREDICTIONS_FILE, REPORT_FILE, THUMBNAILS_FILE])
    assert read_json(out / METRICS_FILE) == metrics
    with open(out / PREDICTIONS_FILE, newline="") as f:
        assert [r["name"] for r in csv.DictReader(f)] == list(ds.image_names("test"))
    page = (out / REPORT_FILE).read_text()
    assert "featmlp evaluation" in page and "data:image/jpeg;base64," in page


def test_test_only_folder_with_fewer_classes_matches_by_name(run, tmp_path):
    new = _folder(tmp_path / "new", ("emu", "cat"), prefix="test")  # no dog, and not in the model's order
    metrics, preds = evaluate_source(run, new, tmp_path / "ev")
    bundle = load_bundle(run)
    assert [bundle.class_names[k] for k in preds.y_true] == [n.split("/")[1] for n in preds.names]
    assert {r["class"]: r["support"] for r in metrics["per_class"]} == {"cat": 4, "dog": 0, "emu": 4}
    # the predictions are the model's on the images' features, computed here from the files
    from featmlp import extract_features

    images = np.stack([np.asarray(Image.open(new / n).convert("RGB").resize((16, 12), Image.Resampling.BILINEAR))
                       for n in preds.names])
    proba = bundle.predict_proba(extract_features(images, "lecture"))
    assert np.array_equal(preds.y_pred, proba.argmax(axis=1))
    assert read_json(tmp_path / "ev" / EVALUATION_FILE)["classes_absent"] == ["dog"]


def test_an_unknown_class_and_outputs_that_may_not_be_written_are_refused(run, tmp_path):
    new = _folder(tmp_path / "new", ("cat", "zebra"))
    with pytest.raises(DataError, match="'zebra', which the model does not know"):
        evaluate_source(run, new, tmp_path / "ev")
    assert not (tmp_path / "ev").exists()
    good = _folder(tmp_path / "good", ("cat", "dog"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    for out in (tmp_path / "mine", run / "ev", good / "ev"):
        with pytest.raises(DataError):
            evaluate_source(run, good, out, overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine" and not (run / "ev").exists()
    evaluate_source(run, good, tmp_path / "ev")
    with pytest.raises(DataError, match="already exists"):
        evaluate_source(run, good, tmp_path / "ev")
    evaluate_source(run, good, tmp_path / "ev", overwrite=True)  # its own output: replaced


def test_a_source_with_a_split_is_scored_on_all_its_images(run, tmp_path):
    src = image_folder(tmp_path / "split", n_per_class=2, seed=5)  # train/ and test/: 6 + 9 images
    metrics, preds = evaluate_source(run, src, tmp_path / "ev")
    ds = load_dataset(src)
    assert metrics["n_test"] == 15 and preds.names == ds.image_names("train") + ds.image_names("test")
    from featmlp.runs.gallery import read_thumbnails

    # each thumbnail is its image's (train rows and test rows alike), by name
    for (row, name), jpeg in read_thumbnails(tmp_path / "ev" / THUMBNAILS_FILE).items():
        assert preds.names[row] == name
        thumb = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), float)
        image = np.asarray(Image.open(src / name).convert("RGB"), float)
        assert thumb.shape == image.shape and np.abs(thumb.mean((0, 1)) - image.mean((0, 1))).max() < 8

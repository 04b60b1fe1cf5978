"""A small job's images and features read back from featmlp's cache (featmlp.runs.reuse):
the same job again reuses them, any change to its file, settings or feature set does not, a
damaged entry is not used, and what cannot be kept is not."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import featmlp.runs.job as job_module
import featmlp.runs.reuse as reuse
from featmlp.runs.job import JobHook, run_job
from featmlp.tables.store import load_features
from featmlp.training import TrainConfig

CONFIG = TrainConfig(hidden=(8,), epochs=3)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATMLP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FEATMLP_REUSE", "1")
    return tmp_path / "cache" / "reuse"


def _archive(path: Path, seed: int = 0, n: int = 10) -> dict[str, np.ndarray]:
    """A .tar.gz of PNGs in train/<class>/ and test/<class>/; returns each member's pixels."""
    rng = np.random.default_rng(seed)
    pixels = {}
    with tarfile.open(path, "w:gz") as tf:
        for split, count in (("train", n), ("test", n // 2)):
            for c in ("cat", "dog"):
                for i in range(count):
                    img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
                    img[..., 0] //= 2 if c == "cat" else 1
                    buf = io.BytesIO()
                    Image.fromarray(img).save(buf, "PNG")
                    name = f"{split}/{c}/{i:02d}.png"
                    info = tarfile.TarInfo(name)
                    info.size = len(buf.getvalue())
                    tf.addfile(info, io.BytesIO(buf.getvalue()))
                    pixels[name] = img
    return pixels


class Told(JobHook):
    def __init__(self):
        self.reused, self.images = [], []

    def on_reused(self, entry):
        self.reused.append(entry)

    def on_images(self, dataset):
        self.images.append(dataset)


def _predictions(run_dir: Path) -> list[dict]:
    with open(run_dir / "predictions.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_the_same_job_again_reads_its_images_and_features_back(tmp_path, cache, monkeypatch):
    archive = tmp_path / "pics.tar.gz"
    pixels = _archive(archive)
    first = run_job(archive, "lecture", tmp_path / "a", config=CONFIG)
    assert not first.reused
    assert len(list(cache.iterdir())) == 1

    def never(*args, **kwargs):
        raise AssertionError("loaded or extracted again")

    monkeypatch.setattr(job_module, "load_dataset", never)
    monkeypatch.setattr(job_module, "extract_dataset", never)
    told = Told()
    second = run_job(archive, "lecture", tmp_path / "b", config=CONFIG, callbacks=[told])
    assert second.reused and told.reused == [next(cache.iterdir())]

    # the images read back are the archive's, as Pillow decodes them, by name
    ds = told.images[0]
    for split in ("train", "test"):
        names = ds.image_names(split)
        assert len(names) == (20 if split == "train" else 10)
        for name, image in zip(names, getattr(ds, f"{split}_images")):
            np.testing.assert_array_equal(image, pixels[name.split(":")[-1]])
    # and the run is the first one's: the same features, predictions and scores
    a, b = load_features(tmp_path / "a" / "features.npz"), load_features(tmp_path / "b" / "features.npz")
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.X_test, b.X_test)
    assert a.feature_names == b.feature_names and a.class_names == b.class_names
    assert _predictions(tmp_path / "a") == _predictions(tmp_path / "b")
    assert first.metrics["confusion_matrix"] == second.metrics["confusion_matrix"]
    assert (tmp_path / "b" / "thumbnails.npz").is_file() and (tmp_path / "b" / "confusion.png").is_file()


def test_a_changed_file_setting_or_feature_set_is_not_reused(tmp_path, cache):
    archive = tmp_path / "pics.tar.gz"
    _archive(archive, seed=0)
    assert not run_job(archive, "lecture", tmp_path / "a", config=CONFIG).reused
    assert run_job(archive, "lecture", tmp_path / "b", config=CONFIG).reused
    assert not run_job(archive, "color", tmp_path / "c", config=CONFIG).reused
    assert not run_job(archive, "lecture", tmp_path / "d", config=CONFIG, image_size=(12, 12)).reused
    _archive(archive, seed=1)  # other images under the same name
    changed = run_job(archive, "lecture", tmp_path / "e", config=CONFIG)
    assert not changed.reused
    assert not np.array_equal(load_features(tmp_path / "a" / "features.npz").X_train,
                              load_features(tmp_path / "e" / "features.npz").X_train)
    assert len(list(cache.iterdir())) == 4


def test_a_damaged_entry_is_not_used(tmp_path, cache):
    archive = tmp_path / "pics.tar.gz"
    _archive(archive)
    run_job(archive, "lecture", tmp_path / "a", config=CONFIG)
    (entry,) = cache.iterdir()
    table = entry / "features.npz"
    table.write_bytes(table.read_bytes()[:-10])
    again = run_job(archive, "lecture", tmp_path / "b", config=CONFIG)
    assert not again.reused  # loaded and extracted as if there were no entry
    np.testing.assert_array_equal(load_features(tmp_path / "a" / "features.npz").X_train,
                                  load_features(tmp_path / "b" / "features.npz").X_train)
    (entry / "images.npz").write_bytes(b"not a zip")
    assert not run_job(archive, "lecture", tmp_path / "c", config=CONFIG).reused


def test_what_cannot_be_kept_is_not(tmp_path, cache, monkeypatch):
    archive = tmp_path / "pics.tar.gz"
    _archive(archive)
    run_job(archive, "lecture", tmp_path / "a", config=CONFIG, reuse=False)
    folder = tmp_path / "folder"
    with tarfile.open(archive) as tf:
        tf.extractall(folder, filter="data")
    run_job(folder, "lecture", tmp_path / "b", config=CONFIG)  # a folder: not one file
    monkeypatch.setenv("FEATMLP_REUSE", "0")
    run_job(archive, "lecture", tmp_path / "c", config=CONFIG)
    assert not cache.exists() or not list(cache.iterdir())
    monkeypatch.setenv("FEATMLP_REUSE", "1")
    monkeypatch.setattr(reuse, "REUSE_MAX_BYTES", 1000)  # the archive is larger
    run_job(archive, "lecture", tmp_path / "d", config=CONFIG)
    assert not cache.exists() or not list(cache.iterdir())


def test_a_fitted_set_is_not_kept(tmp_path, cache):
    archive = tmp_path / "pics.tar.gz"
    _archive(archive)
    run_job(archive, "kmeans", tmp_path / "k", config=CONFIG,
            options={"k": 4, "patch_size": 4, "stride": 4, "pool": 1, "n_patches": 200})
    assert not cache.exists() or not list(cache.iterdir())


def test_the_least_recently_used_entries_go(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(reuse, "REUSE_ENTRIES", 2)
    archive = tmp_path / "pics.tar.gz"
    _archive(archive)
    for seed in (0, 1, 2):  # three jobs: other splits of the same file
        run_job(archive, "lecture", tmp_path / f"r{seed}", config=CONFIG, test_fraction=0.3, split_seed=seed)
    entries = sorted(cache.iterdir(), key=lambda p: p.stat().st_mtime)
    assert len(entries) == 2
    assert [json.loads((e / "entry.json").read_text())["source"] for e in entries]
    assert run_job(archive, "lecture", tmp_path / "x", config=CONFIG, test_fraction=0.3, split_seed=2).reused
    assert not run_job(archive, "lecture", tmp_path / "y", config=CONFIG, test_fraction=0.3, split_seed=0).reused


def test_the_command_line_says_it_reused_and_no_reuse_does_not(tmp_path, cache, run_cli):
    archive = tmp_path / "pics.tar.gz"
    _archive(archive)
    code, out, err = run_cli(["lecture", "--data", archive, "--out", tmp_path / "a"])
    assert code == 0, err
    assert "those of the same job before" not in out
    code, out, err = run_cli(["lecture", "--data", archive, "--out", tmp_path / "b"])
    assert code == 0, err
    assert "images and features: those of the same job before, kept in" in out and "--no-reuse" in out
    code, out, err = run_cli(["lecture", "--data", archive, "--no-reuse", "--out", tmp_path / "c"])
    assert code == 0, err
    assert "those of the same job before" not in out
    code, out, err = run_cli(["lecture", "--data", archive, "-q", "--out", tmp_path / "d"])
    assert code == 0 and "those of the same job before" not in out  # quiet: the result only

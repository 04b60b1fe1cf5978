"""Feature files: plain npz without pickles, atomic, resumable, validated on read."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featmlp import extract_features
from featmlp.data import Dataset
from featmlp.errors import DataError
from featmlp.store import FeatureTable, extract_dataset, load_features, save_features
import featmlp.store as store


def small_dataset(n_train=23, n_test=7, size=(16, 16)):
    rng = np.random.default_rng(0)
    return Dataset(
        train_images=rng.integers(0, 256, size=(n_train, *size, 3), dtype=np.uint8),
        train_labels=rng.integers(0, 3, n_train).astype(np.int64),
        test_images=rng.integers(0, 256, size=(n_test, *size, 3), dtype=np.uint8),
        test_labels=rng.integers(0, 3, n_test).astype(np.int64),
        class_names=("a", "b", "c"),
        source="synthetic",
    )


def test_extract_writes_plain_npz(tmp_path):
    ds = small_dataset()
    out = tmp_path / "f.npz"
    table = extract_dataset(ds, "lecture", out, chunk_size=5)
    with np.load(out, allow_pickle=False) as z:
        assert set(z.files) >= {"X_train", "y_train", "X_test", "y_test", "feature_names", "class_names"}
        np.testing.assert_array_equal(z["X_train"], extract_features(ds.train_images))
        np.testing.assert_array_equal(z["X_test"], extract_features(ds.test_images))
        np.testing.assert_array_equal(z["y_train"], ds.train_labels)
        assert list(z["class_names"]) == ["a", "b", "c"]
        assert list(z["feature_names"])[0] == "lbp_energy"
        meta = json.loads(str(z["meta"]))
    assert meta["features"] == "lecture" and meta["source"] == "synthetic"
    assert table.X_train.shape == (23, 9)
    assert not (tmp_path / "f.npz.partial").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["f.npz"]  # no temporary files left


def test_interrupted_extraction_resumes(tmp_path, monkeypatch):
    ds = small_dataset()
    out = tmp_path / "f.npz"
    seen = []

    def stop_after_two_chunks(desc, done, total):
        seen.append(done)
        if done >= 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract_dataset(ds, "lecture", out, chunk_size=5, progress=stop_after_two_chunks)
    assert not out.exists()  # nothing half-written
    assert len(list((tmp_path / "f.npz.partial").glob("*.npy"))) == 2

    computed = []
    real = store.extract_features

    def counting(images, fset, **kwargs):
        computed.append(len(images))
        return real(images, fset, **kwargs)

    monkeypatch.setattr(store, "extract_features", counting)
    table = extract_dataset(ds, "lecture", out, chunk_size=5)
    assert sum(computed) == 23 + 7 - 10  # the two finished chunks were not recomputed
    np.testing.assert_array_equal(table.X_train, extract_features(ds.train_images))
    np.testing.assert_array_equal(load_features(out).X_test, extract_features(ds.test_images))


def test_stale_partial_from_other_data_is_discarded(tmp_path):
    out = tmp_path / "f.npz"
    with pytest.raises(KeyboardInterrupt):
        extract_dataset(small_dataset(), "lecture", out, chunk_size=5,
                        progress=lambda d, done, t: (_ for _ in ()).throw(KeyboardInterrupt) if done else None)
    other = small_dataset(size=(12, 12))
    table = extract_dataset(other, "lecture", out, chunk_size=5)
    np.testing.assert_array_equal(table.X_train, extract_features(other.train_images))


def test_workers_give_same_result(tmp_path):
    ds = small_dataset(n_train=40, n_test=10)
    a = extract_dataset(ds, "lecture", chunk_size=10, workers=2)
    b = extract_dataset(ds, "lecture", chunk_size=10, workers=1)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.X_test, b.X_test)


def test_roundtrip_and_validation(tmp_path):
    t = FeatureTable(np.ones((4, 2)), np.array([0, 1, 0, 1]), np.zeros((2, 2)), np.array([1, 0]),
                     ("f1", "f2"), ("x", "y"), {"features": "lecture"})
    p = save_features(tmp_path / "t.npz", t)
    back = load_features(p)
    np.testing.assert_array_equal(back.X_train, t.X_train)
    assert back.feature_names == ("f1", "f2") and back.feature_set == "lecture"

    with pytest.raises(DataError, match="does not exist"):
        load_features(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read"):
        load_features(tmp_path / "junk.npz")
    np.savez(tmp_path / "partial.npz", X_train=np.ones((2, 2)))
    with pytest.raises(DataError, match="missing"):
        load_features(tmp_path / "partial.npz")
    np.savez(tmp_path / "labels.npz", X_train=np.ones((2, 2)), y_train=np.array([0, 5]), X_test=np.ones((1, 2)),
             y_test=np.array([0]), feature_names=np.array(["a", "b"]), class_names=np.array(["p", "q"]))
    with pytest.raises(DataError, match="labels outside"):
        load_features(tmp_path / "labels.npz")
    # an object array would need unpickling: refused, not executed
    np.savez(tmp_path / "obj.npz", X_train=np.array([object()], dtype=object), y_train=np.array([0]),
             X_test=np.ones((1, 2)), y_test=np.array([0]), feature_names=np.array(["a", "b"]),
             class_names=np.array(["p"]))
    with pytest.raises(DataError, match="cannot read"):
        load_features(tmp_path / "obj.npz")

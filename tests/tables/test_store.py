"""Feature files: plain npz without pickles, atomic, resumable, validated on read."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featmlp import extract_features
from featmlp.data import Dataset
from featmlp.errors import DataError
from featmlp.tables.store import FeatureTable, load_features, save_features
from featmlp.tables.extract import extract_dataset
import featmlp.tables.extract as extraction


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


def _count_extracted(monkeypatch) -> list[int]:
    """The images of each chunk the extraction computes from now on, in a list it fills."""
    computed = []
    real = extraction.extract_features

    def counting(images, fset, **kwargs):
        computed.append(len(images))
        return real(images, fset, **kwargs)

    monkeypatch.setattr(extraction, "extract_features", counting)
    return computed


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

    computed = _count_extracted(monkeypatch)
    table = extract_dataset(ds, "lecture", out, chunk_size=5)
    assert sum(computed) == 23 + 7 - 10  # the two finished chunks were not recomputed
    np.testing.assert_array_equal(table.X_train, extract_features(ds.train_images))
    np.testing.assert_array_equal(load_features(out).X_test, extract_features(ds.test_images))


def test_the_test_images_mirror_chunks_resume_and_split_over_workers(tmp_path, monkeypatch):
    ds = small_dataset()
    out = tmp_path / "f.npz"
    mirrored = extract_features(ds.test_images[:, :, ::-1])  # numpy's mirror images

    def stop_in_the_mirror_chunks(desc, done, total):
        if done >= 23 + 7 + 5:  # train, test, then the first chunk of the test images' mirror images
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract_dataset(ds, "lecture", out, chunk_size=5, progress=stop_in_the_mirror_chunks, mirror_test=True)
    assert not out.exists()
    assert len(list((tmp_path / "f.npz.partial").glob("test_mirror-*.npy"))) == 1
    computed = _count_extracted(monkeypatch)
    table = extract_dataset(ds, "lecture", out, chunk_size=5, mirror_test=True)
    assert sum(computed) == 2  # only the last mirror chunk
    np.testing.assert_array_equal(load_features(out).X_test_mirror, mirrored)
    monkeypatch.undo()
    in_two = extract_dataset(ds, "lecture", chunk_size=5, workers=2, mirror_test=True)
    np.testing.assert_array_equal(in_two.X_test_mirror, mirrored)
    np.testing.assert_array_equal(table.X_test, in_two.X_test)


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
    with pytest.raises(DataError, match="is not a feature file"):
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
    with pytest.raises(DataError, match="never reads"):
        load_features(tmp_path / "obj.npz")


def _interrupted(ds, out, after=10):
    def stop(desc, done, total):
        if done >= after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract_dataset(ds, "lecture", out, chunk_size=5, progress=stop, overwrite=True)


def test_damaged_chunks_are_redone_on_resume(tmp_path, monkeypatch):
    ds = small_dataset()
    clean = extract_dataset(ds, "lecture", chunk_size=5)
    out = tmp_path / "f.npz"
    _interrupted(ds, out)
    partial = tmp_path / "f.npz.partial"
    first, second = sorted(partial.glob("*.npy"))
    first.write_bytes(first.read_bytes()[:-20])  # truncated, as by a full disk or a crash
    np.save(second, np.zeros((5, 3)))  # the wrong columns
    (partial / "train-000000010.npy").write_bytes(b"not an npy file")  # a stray, unreadable chunk

    computed = []
    real = extraction.extract_features
    monkeypatch.setattr(extraction, "extract_features",
                        lambda images, fset, **kw: computed.append(len(images)) or real(images, fset, **kw))
    table = extract_dataset(ds, "lecture", out, chunk_size=5)
    assert sum(computed) == 23 + 7  # every chunk redone: none of the three could be trusted
    np.testing.assert_array_equal(table.X_train, clean.X_train)
    np.testing.assert_array_equal(load_features(out).X_test, clean.X_test)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.npz"]

    # a good chunk beside a damaged spec.json: the partial is not trusted, the result still right
    _interrupted(ds, out)
    (partial / "spec.json").write_text("{trunc")
    np.testing.assert_array_equal(extract_dataset(ds, "lecture", out, chunk_size=5, overwrite=True).X_train,
                                  clean.X_train)


def test_wrong_dtype_or_rows_chunk_is_redone(tmp_path):
    ds = small_dataset()
    out = tmp_path / "f.npz"
    _interrupted(ds, out)
    partial = tmp_path / "f.npz.partial"
    first, second = sorted(partial.glob("*.npy"))
    np.save(first, np.load(first).astype(np.float32))
    np.save(second, np.load(second)[:4])
    table = extract_dataset(ds, "lecture", out, chunk_size=5)
    np.testing.assert_array_equal(table.X_train, extract_features(ds.train_images))


def test_a_second_extraction_to_the_same_output_is_refused(tmp_path, lock_holder):
    ds = small_dataset()
    out = tmp_path / "f.npz"
    # Another process holds the lock as a running `featmlp extract -o f.npz` does.
    holder = lock_holder(str(out) + ".lock")
    with pytest.raises(DataError, match=f"another featmlp extract is writing {out} \\(pid {holder.pid}\\): "
                                        f"wait for it, or write to another file"):
        extract_dataset(ds, "lecture", out, chunk_size=5)
    assert not out.exists()
    holder.kill()  # kill -9: the kernel releases the lock, the stale lock file is taken over
    holder.wait()
    table = extract_dataset(ds, "lecture", out, chunk_size=5)
    np.testing.assert_array_equal(table.X_train, extract_features(ds.train_images))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.npz"]  # lock file removed


def test_workers_keep_few_chunks_in_flight(monkeypatch):
    # With workers, chunks are decoded as they are submitted: no more than workers + 1 at once.
    ds = small_dataset(n_train=60, n_test=10)
    from concurrent.futures import Future

    in_flight, peak = [0], [0]

    class InlinePool:  # runs each chunk at submit; counts what was submitted but not collected
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def shutdown(self, *a, **k):
            pass

        def submit(self, fn, *args):
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
            f = Future()
            f.set_result(fn(*args))
            real_result = f.result
            f.result = lambda: (in_flight.__setitem__(0, in_flight[0] - 1), real_result())[1]
            return f

    monkeypatch.setattr(extraction, "spawn_pool", InlinePool)
    table = extract_dataset(ds, "lecture", chunk_size=5, workers=2)
    assert peak[0] == 3
    np.testing.assert_array_equal(table.X_train, extract_features(ds.train_images))


def test_default_chunks_hold_a_bounded_number_of_pixels(monkeypatch):
    # 5,000 small images a chunk, but never more than 256 MB of decoded pixels and feature work.
    from featmlp.tables.extract import default_chunk_size
    from featmlp.features import working_bytes

    assert default_chunk_size((32, 32)) == 5000
    assert default_chunk_size((256, 256), "color") == (256 << 20) // (256 * 256 * 3) == 1365
    assert default_chunk_size((20000, 20000)) == 1
    import featmlp.tables.extract

    seen = []
    real = featmlp.tables.extract.extract_features
    # four 16x16 images a chunk
    monkeypatch.setattr(featmlp.tables.extract, "_CHUNK_BYTES", working_bytes("lecture", (16, 16), 4))
    monkeypatch.setattr(featmlp.tables.extract, "extract_features",
                        lambda images, *a, **k: seen.append(len(images)) or real(images, *a, **k))
    ds = small_dataset()
    extract_dataset(ds, "lecture")
    assert max(seen) == 4 and sum(seen) == len(ds.train_labels) + len(ds.test_labels)

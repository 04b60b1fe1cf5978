"""What is read is checked against what it claims (issue 15).

Feature files written by hand with ``np.savez``, sharded tables edited file by file, images
written with Pillow from plain numpy arrays: each is refused with one line naming the file and
what is wrong, or read to the values a plain numpy computation gives.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import make_classification

from featmlp.tables import sharded as shards
from featmlp.errors import DataError
from featmlp.runs import evaluate_run
from featmlp.runs.results import train_run
from featmlp.tables.store import FeatureTable, load_features, save_features, save_sharded
from featmlp.training import TrainConfig

TINY = TrainConfig(hidden=(4,), epochs=1)


@pytest.fixture
def table():
    X, y = make_classification(120, 9, n_informative=6, n_classes=3, random_state=0)
    return FeatureTable(X[:90], y[:90], X[90:], y[90:], tuple(f"f{i}" for i in range(9)), ("ant", "bee", "cow"),
                        {"features": "lecture", "image_size": [32, 32]})


def one_line(err: str) -> bool:
    return len(err.strip().splitlines()) == 1 and "Traceback" not in err


def hand_npz(path, **changes):
    """A feature file written with np.savez alone: 4 train rows, 2 test rows, 2 columns, 2 classes."""
    arrays = dict(X_train=np.arange(8.0).reshape(4, 2), y_train=np.array([0, 1, 0, 1]),
                  X_test=np.ones((2, 2)), y_test=np.array([1, 0]), feature_names=np.array(["a", "b"]),
                  class_names=np.array(["p", "q"]), meta=np.array(json.dumps({"features": "lecture"})))
    arrays.update(changes)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


# ------------------------------------------------------------------ evaluate: provenance against the model's


def test_evaluate_refuses_features_of_another_image_size(tmp_path, table):
    feats = save_features(tmp_path / "f.npz", table)
    train_run(table, TINY, tmp_path / "r", data={"feature_file": str(feats)})
    assert evaluate_run(tmp_path / "r")["n_test"] == 30
    # same columns, same classes: only the provenance says they describe other images
    other = save_features(tmp_path / "o.npz", dataclasses.replace(table, meta={**table.meta, "image_size": [64, 48]}))
    with pytest.raises(DataError, match=r"o.npz was extracted at 64x48, the model at 32x32: extract again with "
                                        r"--image-size 32x32"):
        evaluate_run(tmp_path / "r", other)


def test_evaluate_refuses_another_feature_set_of_as_many_columns(tmp_path, table):
    train_run(table, TINY, tmp_path / "r")
    other = save_features(tmp_path / "o.npz", dataclasses.replace(table, meta={**table.meta, "features": "color"}))
    with pytest.raises(DataError, match="o.npz holds color features, the model was trained on lecture features: "
                                        "extract again with --features lecture"):
        evaluate_run(tmp_path / "r", other)


def test_evaluate_refuses_other_columns_of_as_many(tmp_path, table):
    train_run(table, TINY, tmp_path / "r")
    renamed = dataclasses.replace(table, feature_names=table.feature_names[:3] + ("g3",) + table.feature_names[4:])
    with pytest.raises(DataError, match="column 3 is 'g3', the model's 'f3'"):
        evaluate_run(tmp_path / "r", save_features(tmp_path / "o.npz", renamed))
    # a table of the same provenance (another file of it) is scored, as by the model itself
    same = save_features(tmp_path / "s.npz", table)
    assert evaluate_run(tmp_path / "r", same)["n_test"] == 30


def test_evaluate_cli_image_size_end_to_end(tmp_path, run_cli):
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for k, cls in enumerate(("dark", "light")):
        (root / cls).mkdir(parents=True)
        for i in range(8):
            img = np.clip(60 + 120 * k + rng.normal(0, 30, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / cls / f"{i}.png")
    code, _, err = run_cli(["run", "--data", root, "--test-fraction", "0.5", "--hidden", "4", "--epochs", "2", "-q",
                            "--out", tmp_path / "r"])
    assert code == 0, err
    code, _, err = run_cli(["extract", root, "--test-fraction", "0.5", "--image-size", "24x24", "-q",
                            "-o", tmp_path / "big.npz"])
    assert code == 0, err
    code, out, err = run_cli(["evaluate", tmp_path / "r", tmp_path / "big.npz"])
    assert code == 1 and one_line(err) and not out
    assert "big.npz was extracted at 24x24, the model at 16x16: extract again with --image-size 16x16" in err
    code, _, err = run_cli(["extract", root, "--test-fraction", "0.5", "--image-size", "16x16", "-q",
                            "-o", tmp_path / "same.npz"])
    assert code == 0, err
    code, out, err = run_cli(["evaluate", tmp_path / "r", tmp_path / "same.npz", "--json"])
    assert code == 0, err
    assert json.loads(out) == {k: v for k, v in json.loads((tmp_path / "r" / "metrics.json").read_text()).items()
                               if k in json.loads(out)}


def test_evaluate_refuses_kmeans_features_of_another_dictionary(tmp_path, tiny_dataset):
    from featmlp.tables.extract import extract_dataset

    opts = {"k": 4, "patch_size": 3, "n_patches": 200, "pool": 2}
    mine = extract_dataset(tiny_dataset, "kmeans", tmp_path / "a.npz", options={**opts, "seed": 0})
    others = dataclasses.replace(tiny_dataset, train_images=255 - tiny_dataset.train_images)  # other images
    extract_dataset(others, "kmeans", tmp_path / "b.npz", options={**opts, "seed": 0})
    extract_dataset(tiny_dataset, "kmeans", tmp_path / "w.npz", options={**opts, "seed": 0, "whiten_eps": 0.5})
    config = dataclasses.replace(TINY, flip=False, test_flip=False)
    train_run(mine, config, tmp_path / "r", data={"feature_file": str(tmp_path / "a.npz")})
    assert evaluate_run(tmp_path / "r")["n_test"] == 6
    # as many columns: only the state differs
    assert load_features(tmp_path / "b.npz").X_test.shape == mine.X_test.shape
    with pytest.raises(DataError, match=r"b.npz's kmeans features were computed with another fitted state than "
                                        r"the model's \(fitted on other images\): extract again with --fitted-from"):
        evaluate_run(tmp_path / "r", tmp_path / "b.npz")
    with pytest.raises(DataError, match=r"another fitted state than the model's \(other settings: kmeans.whiten_eps "
                                        r"0.5 against 0.1\)"):
        evaluate_run(tmp_path / "r", tmp_path / "w.npz")
    # the features of the model's own dictionary, extracted again with it, are scored
    from featmlp.runs.bundle import load_fitted

    again = extract_dataset(tiny_dataset, "kmeans", tmp_path / "c.npz", fitted=load_fitted(tmp_path / "r")[1])
    np.testing.assert_array_equal(again.X_test, mine.X_test)
    assert evaluate_run(tmp_path / "r", tmp_path / "c.npz")["n_test"] == 6


# ------------------------------------------------------------------ sharded tables: checksums on read


def sharded(tmp_path, name="t.features"):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)).astype(np.float32)
    y = np.arange(40) % 2
    t = FeatureTable(X[:30], y[:30], X[30:], y[30:], ("a", "b", "c"), ("p", "q"), {"features": None})
    return save_sharded(tmp_path / name, t, shard_rows=10), X, y


def swap(a, b):
    tmp = a.with_name("swap.tmp")
    os.replace(a, tmp)
    os.replace(b, a)
    os.replace(tmp, b)


def test_swapped_shards_are_refused(tmp_path, run_cli):
    path, X, _ = sharded(tmp_path)
    swap(path / "train-000000.npy", path / "train-000001.npy")
    t = load_features(path)  # opening reads no shard
    with pytest.raises(DataError, match=r"train-000000.npy is not shard 0 of this table's train split \(its "
                                        r"checksum differs"):
        np.asarray(t.X_train)
    with pytest.raises(DataError, match="checksum differs"):
        t.X_train[15]  # a row of the second shard: that shard is checked as it is touched
    code, out, err = run_cli(["train", path, "--epochs", "1", "--hidden", "4", "-q", "--out", tmp_path / "r"])
    assert code == 1 and one_line(err) and "checksum differs" in err and "extract it again" in err
    assert not (tmp_path / "r").exists()


def test_an_edited_shard_is_refused_and_the_switch_turns_checking_off(tmp_path, monkeypatch):
    path, X, _ = sharded(tmp_path)
    f = path / "test-000000.npy"
    data = bytearray(f.read_bytes())
    data[-4:] = np.float32(123.0).tobytes()  # the last value, same size, still a valid .npy
    f.write_bytes(bytes(data))
    with pytest.raises(DataError, match="test-000000.npy is not shard 0 of this table's test split"):
        np.asarray(load_features(path).X_test)
    monkeypatch.setenv("FEATMLP_VERIFY_SHARDS", "0")
    read = np.asarray(load_features(path).X_test)
    expected = X[30:].copy()
    expected[-1, -1] = 123.0
    np.testing.assert_array_equal(read, expected)


def test_each_shard_is_hashed_once_per_process(tmp_path, monkeypatch):
    path, X, _ = sharded(tmp_path)
    calls = []
    real = shards.file_sha256
    monkeypatch.setattr(shards, "file_sha256", lambda p: calls.append(p.name) or real(p))
    t = load_features(path)
    for _ in range(3):
        np.testing.assert_array_equal(np.asarray(t.X_train), X[:30])
        np.testing.assert_array_equal(t.X_train[[3, 29, 12]], X[[3, 29, 12]])
    np.testing.assert_array_equal(np.asarray(load_features(path).X_train), X[:30])  # opened again: not again
    assert sorted(calls) == ["train-000000.npy", "train-000001.npy", "train-000002.npy"]
    # a shard changed after it was checked is checked again (its identity changed)
    data = np.load(path / "train-000001.npy")
    data[0, 0] += 1
    np.save(path / "train-000001.npy", data)
    with pytest.raises(DataError, match="train-000001.npy is not shard 1"):
        t.X_train[10]


@pytest.mark.parametrize("split", ["train", "test"])
def test_reversed_labels_are_refused(tmp_path, run_cli, split):
    path, _, y = sharded(tmp_path)
    labels = np.load(path / f"y_{split}.npy")
    assert len(np.unique(labels)) == 2
    np.save(path / f"y_{split}.npy", labels[::-1].copy())  # same dtype, shape and classes
    with pytest.raises(DataError, match=f"y_{split}.npy is not the labels file of this table"):
        load_features(path)
    code, _, err = run_cli(["train", path, "--epochs", "1", "-q", "--out", tmp_path / "r"])
    assert code == 1 and one_line(err) and f"y_{split}.npy" in err


def test_a_manifest_without_label_checksums_checks_them_by_its_fingerprint(tmp_path):
    path, X, y = sharded(tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest.pop("labels_sha256")) == {"train", "test"}
    (path / "manifest.json").write_text(json.dumps(manifest))  # as written before the checksums were recorded
    t = load_features(path)
    np.testing.assert_array_equal(t.y_train, y[:30])
    np.testing.assert_array_equal(np.asarray(t.X_train), X[:30])
    np.save(path / "y_train.npy", y[:30][::-1].copy())
    with pytest.raises(DataError, match="does not fit the fingerprint"):
        load_features(path)


def test_a_fitted_state_from_another_table_is_refused(tmp_path, tiny_dataset):
    from featmlp.tables.extract import extract_to_shards

    opts = {"k": 4, "patch_size": 3, "n_patches": 200, "pool": 2}
    a = extract_to_shards(tiny_dataset, "kmeans", tmp_path / "a.features", options={**opts, "seed": 0})
    extract_to_shards(tiny_dataset, "kmeans", tmp_path / "b.features", options={**opts, "seed": 1})
    assert load_features(tmp_path / "a.features").fitted["kmeans"].state()[1]["centroids"].shape == \
        a.fitted["kmeans"].state()[1]["centroids"].shape
    shutil.copy(tmp_path / "b.features" / "fitted.npz", tmp_path / "a.features" / "fitted.npz")
    with pytest.raises(DataError, match="fitted.npz is not this table's fitted state"):
        load_features(tmp_path / "a.features")


def test_a_sharded_table_extracted_with_a_given_state_holds_it(tmp_path, tiny_dataset):
    # --fitted-from into a sharded table: the manifest names fitted.npz, which must be there (and checked)
    from featmlp.tables.extract import extract_dataset, extract_to_shards

    a = extract_dataset(tiny_dataset, "kmeans", tmp_path / "a.npz", options={"k": 4, "patch_size": 3,
                                                                              "n_patches": 200, "pool": 2})
    extract_to_shards(tiny_dataset, "kmeans", tmp_path / "b.features", fitted=a.fitted)
    b = load_features(tmp_path / "b.features")
    centroids = [t.fitted["kmeans"].state()[1]["centroids"] for t in (a, b)]
    np.testing.assert_array_equal(*centroids)
    np.testing.assert_array_equal(np.asarray(b.X_test), a.X_test)


def test_float_labels_in_a_sharded_table_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATMLP_VERIFY_SHARDS", "0")  # so that the label check itself is what answers
    path, _, y = sharded(tmp_path)
    bad = y[:30].astype(np.float64)
    bad[4] = 0.5
    np.save(path / "y_train.npy", bad)
    with pytest.raises(DataError, match=r"y_train holds labels that are not whole numbers \(0.5 at row 4\)"):
        load_features(path)


# ------------------------------------------------------------------ labels and features: refused, never cast


@pytest.mark.parametrize("y_train, message", [
    (np.array([0, 1.5, 0, 1]), r"y_train holds labels that are not whole numbers \(1.5 at row 1\)"),
    (np.array([0, np.nan, 0, 1]), r"y_train holds nan at row 1"),
    (np.array([0, 1, np.inf, 1]), r"y_train holds inf at row 2"),
    (np.array(["cat", "dog", "cat", "dog"]), r"y_train holds strings \(first: np.str_\('cat'\)|y_train holds strings"),
    (np.array([b"p", b"q", b"p", b"q"]), "y_train holds bytes"),
    (np.array([True, False, True, False]), "y_train holds booleans"),
    (np.array([0, 1 + 1j, 0, 1]), "y_train holds complex numbers"),
    (np.array([0, -1, 0, 1]), r"y_train holds labels outside 0..1 \(-1 at row 1"),
    (np.array([0, 1, 0, 2], np.uint8), r"y_train holds labels outside 0..1 \(2 at row 3"),
])
def test_bad_labels_in_a_feature_file(tmp_path, run_cli, y_train, message):
    f = hand_npz(tmp_path / "bad.npz", y_train=y_train)
    with pytest.raises(DataError, match=message) as e:
        load_features(f)
    assert str(f) in str(e.value) and "-9223372036854775808" not in str(e.value)
    code, out, err = run_cli(["train", f, "--epochs", "1", "-q", "--out", tmp_path / "r"])
    assert code == 1 and one_line(err) and "bad.npz: y_train holds" in err
    assert not (tmp_path / "r").exists()


def test_whole_number_float_labels_are_taken(tmp_path):
    t = load_features(hand_npz(tmp_path / "f.npz", y_train=np.array([0.0, 1.0, 0.0, 1.0]),
                               y_test=np.array([1.0, 0.0], np.float32)))
    assert t.y_train.dtype == np.int64 and t.y_train.tolist() == [0, 1, 0, 1] and t.y_test.tolist() == [1, 0]


@pytest.mark.parametrize("X_train, message", [
    (np.arange(8.0).reshape(4, 2) + 1j, "X_train holds complex numbers"),
    (np.array([["1", "2"]] * 4), "X_train holds strings, not numbers"),
    (np.array([[b"1", b"2"]] * 4), "X_train holds bytes, not numbers"),
])
def test_bad_features_in_a_feature_file(tmp_path, run_cli, X_train, message):
    f = hand_npz(tmp_path / "bad.npz", X_train=X_train)
    with pytest.raises(DataError, match=message) as e:
        load_features(f)
    assert str(f) in str(e.value)
    code, out, err = run_cli(["train", f, "--epochs", "1", "-q", "--out", tmp_path / "r"])
    assert code == 1 and one_line(err) and message in err


def test_integer_and_boolean_features_are_read_as_float64(tmp_path):
    t = load_features(hand_npz(tmp_path / "f.npz", X_train=np.arange(8, dtype=np.int32).reshape(4, 2),
                               X_test=np.array([[True, False], [False, True]])))
    assert t.X_train.dtype == t.X_test.dtype == np.float64
    np.testing.assert_array_equal(t.X_train, np.arange(8.0).reshape(4, 2))
    np.testing.assert_array_equal(t.X_test, np.eye(2))


@pytest.mark.parametrize("y, message", [
    ([0, 1.5, 0, 1] * 5, r"y holds labels that are not whole numbers \(1.5 at row 1\)"),
    ([0, np.nan, 0, 1] * 5, "y holds nan at row 1"),
    ([0, np.inf, 0, 1] * 5, "y holds inf at row 1"),
    ([True, False] * 10, "y holds booleans"),
    (["a", "b"] * 10, "y holds strings"),
    ([0, 1 + 0j] * 10, "y holds complex numbers"),
])
def test_train_api_refuses_labels_it_would_cast(y, message):
    from featmlp.training import check_training, train

    X = np.random.default_rng(0).normal(size=(20, 3))
    for fn in (check_training, train):
        with pytest.raises(DataError, match=message) as e:
            fn(X, np.array(y), TINY, n_classes=2)
        assert "-9223372036854775808" not in str(e.value)


@pytest.mark.parametrize("X, message", [
    (np.ones((20, 3)) * (1 + 2j), "X holds complex numbers"),
    (np.full((20, 3), "1.5"), "X holds strings, not numbers"),
    (np.full((20, 3), None, dtype=object), "X holds Python objects"),
])
def test_train_api_refuses_features_it_would_cast(X, message):
    from featmlp.training import train

    with pytest.raises(DataError, match=message):
        train(X, np.arange(20) % 2, TINY)


def test_train_api_takes_whole_number_float_labels_as_ints():
    from featmlp.training.checks import check_data

    X = np.random.default_rng(0).normal(size=(6, 2))
    _, y = check_data(X, np.array([0.0, 1.0, 2.0, 0.0, 1.0, 2.0]), "X", "y")
    assert y.dtype == np.int64 and y.tolist() == [0, 1, 2, 0, 1, 2]


def test_saving_a_table_refuses_labels_it_would_floor(tmp_path, table):
    bad = dataclasses.replace(table, y_train=table.y_train + 0.5)
    with pytest.raises(DataError, match="y_train holds labels that are not whole numbers"):
        save_features(tmp_path / "f.npz", bad)
    assert not (tmp_path / "f.npz").exists()


def test_estimator_refuses_complex_features():
    from featmlp import FeatMLPClassifier

    with pytest.raises(ValueError, match="[Cc]omplex"):
        FeatMLPClassifier(hidden=(2,), epochs=1).fit(np.ones((6, 2)) * 1j, [0, 1] * 3)


# ------------------------------------------------------------------ meta: checked when the file is read


@pytest.mark.parametrize("meta, key", [
    ({"features": "lecture", "image_size": "32x32"}, "image_size"),
    ({"features": "lecture", "image_size": [32]}, "image_size"),
    ({"features": "lecture", "image_size": [0, 32]}, "image_size"),
    ({"features": "lecture", "image_size": [32.5, 32]}, "image_size"),
    ({"features": "lecture", "image_size": [True, 32]}, "image_size"),
    ({"features": "nonsense"}, "features"),
    ({"features": 7}, "features"),
    ({"features": "lecture", "feature_options": [1, 2]}, "feature_options"),
    ({"features": "lecture", "source": ["x"]}, "source"),
])
def test_bad_meta_is_refused_at_load_naming_file_and_key(tmp_path, run_cli, meta, key):
    f = hand_npz(tmp_path / "bad.npz", meta=np.array(json.dumps(meta)))
    with pytest.raises(DataError, match=f"bad.npz: meta\\['{key}'\\]"):
        load_features(f)
    code, _, err = run_cli(["train", f, "--epochs", "1", "-q", "--out", tmp_path / "r"])
    assert code == 1 and one_line(err) and f"meta['{key}']" in err and str(f) in err
    assert not (tmp_path / "r").exists()  # found before training, not after


def test_bad_meta_of_a_sharded_table_names_its_manifest(tmp_path):
    path, _, _ = sharded(tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["meta"]["image_size"] = "big"
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"manifest.json: meta\['image_size'\] is 'big'"):
        load_features(path)


def test_good_meta_is_kept(tmp_path):
    meta = {"features": "lecture+hog", "image_size": [16, 8], "feature_options": {}, "source": "s",
            "dataset_fingerprint": "abc", "featmlp_version": "0", "anything_else": [1]}
    assert load_features(hand_npz(tmp_path / "f.npz", meta=np.array(json.dumps(meta)))).meta == meta


# ------------------------------------------------------------------ images of more than 8 bits: one stated rule


def gray3(a8):
    return np.repeat(np.asarray(a8, np.uint8)[..., None], 3, axis=2)


def encoded(array, fmt, mode=None):
    b = io.BytesIO()
    Image.fromarray(array, mode).save(b, format=fmt) if mode else Image.fromarray(array).save(b, format=fmt)
    return b.getvalue()


def test_float_tiff_in_unit_range_is_scaled_by_255(tmp_path):
    from featmlp.data import read_images

    a = np.random.default_rng(0).random((5, 7)).astype(np.float32)
    a[0, 0], a[0, 1] = 0.0, 1.0
    (tmp_path / "f.tif").write_bytes(encoded(a, "TIFF"))
    assert Image.open(tmp_path / "f.tif").mode == "F"
    got = read_images([tmp_path / "f.tif"])[0]
    np.testing.assert_array_equal(got, gray3(np.rint(a.astype(np.float64) * 255)))


@pytest.mark.parametrize("values, message", [
    (np.linspace(0, 1e6, 35), "with values from 0 to 1e\\+06"),
    (np.linspace(-1, 1, 35), "with values from -1 to 1"),
    (np.r_[np.zeros(34), np.nan], "holding NaN or infinite values"),
])
def test_float_tiff_outside_unit_range_is_refused(tmp_path, run_cli, values, message):
    from featmlp.data import read_images

    (tmp_path / "f.tif").write_bytes(encoded(values.reshape(5, 7).astype(np.float32), "TIFF"))
    with pytest.raises(DataError, match=f"f.tif: a floating-point image \\(mode F\\) {message}"):
        read_images([tmp_path / "f.tif"])


def test_float_tiff_in_a_class_folder_stops_extract_with_one_line(tmp_path, run_cli):
    root = tmp_path / "imgs"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / cls / f"{i}.png")
    (root / "a" / "raw.tif").write_bytes(encoded(np.full((8, 8), 1e6, np.float32), "TIFF"))
    code, out, err = run_cli(["extract", root, "--test-fraction", "0.5", "-q", "-o", tmp_path / "f.npz"])
    assert code == 1 and one_line(err) and "raw.tif" in err and "convert it" in err
    assert not (tmp_path / "f.npz").exists()


def test_16bit_png_is_divided_by_257(tmp_path):
    from featmlp.data import read_images

    a = np.array([[0, 128, 129, 257, 385, 386], [1000, 32767, 32768, 65278, 65534, 65535]], np.uint16)
    (tmp_path / "g.png").write_bytes(encoded(a, "PNG"))
    assert Image.open(tmp_path / "g.png").mode.startswith("I;16")
    got = read_images([tmp_path / "g.png"])[0]
    np.testing.assert_array_equal(got, gray3(np.rint(a / 257)))
    assert got[1, 5, 0] == 255 and got[0, 3, 0] == 1 and got[0, 1, 0] == 0 and got[0, 2, 0] == 1


def test_32bit_integer_images(tmp_path):
    from featmlp.data import read_images

    a = np.array([[0, 200, 40000, 65535]], np.int32)
    (tmp_path / "i.tif").write_bytes(encoded(a, "TIFF"))
    assert Image.open(tmp_path / "i.tif").mode == "I"
    np.testing.assert_array_equal(read_images([tmp_path / "i.tif"])[0], gray3(np.rint(a / 257)))
    (tmp_path / "big.tif").write_bytes(encoded(np.array([[0, 70000]], np.int32), "TIFF"))
    with pytest.raises(DataError, match=r"big.tif: a 32-bit integer image \(mode I\) with values from 0 to 70000"):
        read_images([tmp_path / "big.tif"])

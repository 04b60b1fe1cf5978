"""Sharded feature tables: extraction into shards here and in processes, resume, damage, loading."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

import featmlp.tables.extract as extraction
from featmlp import extract_features
from featmlp.data import Dataset, load_dataset
from featmlp.errors import DataError
from featmlp.tables.extract import extract_to_shards, work_dir
from featmlp.tables.sharded import ShardedArray, read_manifest
from featmlp.tables.store import FeatureTable, load_features, save_features, save_sharded, table_fingerprint

from _files import image_folder


def pillow_images(paths):
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


@pytest.fixture
def folder(tmp_path):
    return image_folder(tmp_path / "images")


def test_shards_hold_the_features_of_every_image_in_order(folder, tmp_path):
    ds = load_dataset(folder)
    table = extract_to_shards(ds, "lecture", tmp_path / "t.features", chunk_size=4)
    assert isinstance(table.X_train, ShardedArray) and table.X_train.n_shards == 7  # 27 images, 4 a shard
    # Reference: the files decoded by Pillow, in the listing's order, and the features of those pixels.
    files = sorted((folder / "train").rglob("*.png"))
    expected = extract_features(pillow_images(files)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(table.X_train), expected)
    np.testing.assert_array_equal(table.y_train, np.repeat([0, 1, 2], 9))
    assert table.class_names == ("cat", "dog", "emu") and table.feature_names[0] == "lbp_energy"
    manifest = read_manifest(tmp_path / "t.features")
    assert manifest["splits"]["train"][0]["first_file"] == "train/cat/000.png"
    assert manifest["meta"]["features"] == "lecture" and manifest["meta"]["dataset_fingerprint"]
    shard = json.loads((tmp_path / "t.features" / "train-000001.json").read_text())
    assert shard["files"] == ["train/cat/004.png", "train/cat/005.png", "train/cat/006.png", "train/cat/007.png"]
    # nothing but the table and no lock or work directory beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "t.features"]


def test_processes_give_the_same_table(folder, tmp_path):
    ds = load_dataset(folder)
    a = extract_to_shards(ds, "lecture+color", tmp_path / "a.features", chunk_size=5)
    b = extract_to_shards(ds, "lecture+color", tmp_path / "b.features", chunk_size=5, workers=2)
    for split in ("train", "test"):
        np.testing.assert_array_equal(np.asarray(getattr(a, f"X_{split}")), np.asarray(getattr(b, f"X_{split}")))
    assert table_fingerprint(a) == table_fingerprint(b)


def test_interrupted_extraction_resumes_from_finished_shards(folder, tmp_path, monkeypatch):
    ds = load_dataset(folder)
    out = tmp_path / "t.features"

    def stop(desc, done, total):
        if desc == "extract" and done >= 12:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract_to_shards(ds, "lecture", out, chunk_size=4, progress=stop)
    assert not out.exists()
    work = work_dir(out)
    finished = sorted(p.name for p in work.glob("train-*.json"))
    assert finished == ["train-000000.json", "train-000001.json", "train-000002.json"]
    mtimes = {p: (work / p).stat().st_mtime_ns for p in finished}

    computed = []
    real = extraction.extract_features
    monkeypatch.setattr(extraction, "extract_features", lambda images, *a, **k: computed.append(len(images)) or real(images, *a, **k))
    table = extract_to_shards(ds, "lecture", out, chunk_size=4)
    assert sum(computed) == 27 + 9 - 12  # the three finished shards were not computed again
    assert {p: (out / p).stat().st_mtime_ns for p in finished} == mtimes
    clean = extract_to_shards(ds, "lecture", tmp_path / "clean.features", chunk_size=4)
    np.testing.assert_array_equal(np.asarray(table.X_train), np.asarray(clean.X_train))
    assert table_fingerprint(table) == table_fingerprint(clean)


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "wrong shape", "bad record"])
def test_a_damaged_shard_is_detected_and_redone(folder, tmp_path, monkeypatch, damage):
    ds = load_dataset(folder)
    out = tmp_path / "t.features"
    with pytest.raises(KeyboardInterrupt):
        extract_to_shards(ds, "lecture", out, chunk_size=4,
                          progress=lambda d, done, t: (_ for _ in ()).throw(KeyboardInterrupt) if done >= 8 else None)
    npy, record = work_dir(out) / "train-000001.npy", work_dir(out) / "train-000001.json"
    data = bytearray(npy.read_bytes())
    if damage == "truncated":
        npy.write_bytes(data[:-7])
    elif damage == "flipped byte":
        data[-3] ^= 0xFF  # same size and header: only the checksum notices
        npy.write_bytes(bytes(data))
    elif damage == "wrong shape":
        np.save(npy, np.zeros((4, 5), np.float32))
    else:
        record.write_text("{not json")
    computed = []
    real = extraction.extract_features
    monkeypatch.setattr(extraction, "extract_features", lambda images, *a, **k: computed.append(len(images)) or real(images, *a, **k))
    table = extract_to_shards(ds, "lecture", out, chunk_size=4)
    assert sum(computed) == 27 + 9 - 4  # shard 0 kept, shard 1 redone
    clean = extract_features(ds.train_images[:]).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(table.X_train), clean)


def test_replacing_a_table_and_refusing_a_file(folder, tmp_path):
    ds = load_dataset(folder)
    out = tmp_path / "t.features"
    extract_to_shards(ds, "lecture", out, chunk_size=100)
    with pytest.raises(DataError, match="already exists"):
        extract_to_shards(ds, "color", out, chunk_size=100)
    second = extract_to_shards(ds, "color", out, chunk_size=100, overwrite=True)
    assert second.feature_set == "color" and len(second.feature_names) == 22
    (tmp_path / "file.features").write_text("x")
    with pytest.raises(DataError, match="is a file featmlp did not write, not a featmlp sharded feature table"):
        extract_to_shards(ds, "lecture", tmp_path / "file.features", overwrite=True)
    assert (tmp_path / "file.features").read_text() == "x"


def test_sharded_array_indexing_against_numpy(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(23, 4)).astype(np.float32)
    table = FeatureTable(X, rng.integers(0, 2, 23), X[:3], np.array([0, 1, 0]), tuple("abcd"), ("p", "q"))
    S = load_features(save_sharded(tmp_path / "t.features", table, shard_rows=5)).X_train
    assert S.shape == (23, 4) and len(S) == 23 and S.n_shards == 5 and list(S.shard_rows) == [5, 5, 5, 5, 3]
    idx = rng.integers(0, 23, 40)
    for key in (7, -1, slice(3, 19, 4), slice(None, None, -1), idx, X[:, 0] > 0, (slice(2, 9), 1), (4, 2)):
        np.testing.assert_array_equal(S[key], X[key])
    np.testing.assert_array_equal(np.asarray(S), X)
    np.testing.assert_array_equal(np.vstack([b for _, b in S.blocks()]), X)
    with pytest.raises(IndexError):
        S[23]
    os.remove(tmp_path / "t.features" / "train-000002.npy")
    with pytest.raises(DataError, match="is missing: the sharded table .* is incomplete"):
        np.asarray(S)


def test_sharded_tables_load_export_and_fail_in_one_line(tmp_path, folder):
    ds = load_dataset(folder)
    table = extract_to_shards(ds, "lecture", tmp_path / "t.features", chunk_size=10)
    save_features(tmp_path / "t.npz", table)  # export: an ordinary feature file
    back = load_features(tmp_path / "t.npz")
    np.testing.assert_array_equal(back.X_train, np.asarray(table.X_train))
    assert "sharded_fingerprint" not in back.meta and back.meta["features"] == "lecture"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty directory, not a sharded feature table"):
        load_features(tmp_path / "empty")
    (tmp_path / "t.features" / "manifest.json").write_text("{")
    with pytest.raises(DataError, match="manifest.json is damaged"):
        load_features(tmp_path / "t.features")


def test_fitted_state_travels_with_the_table(tmp_path):
    rng = np.random.default_rng(0)
    ds = Dataset(rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8), np.arange(40) % 2,
                 rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8), np.arange(6) % 2, ("a", "b"), "random")
    options = {"k": 8, "n_patches": 2000, "n_iter": 2}
    table = extract_to_shards(ds, "kmeans", tmp_path / "k.features", options=options, chunk_size=16)
    assert set(table.fitted) == {"kmeans"}
    ref = extract_features(ds.test_images, "kmeans", state=table.fitted)
    np.testing.assert_allclose(np.asarray(table.X_test), ref, rtol=1e-6)


def test_cli_extract_to_a_sharded_table(folder, tmp_path, run_cli):
    code, out, err = run_cli(["extract", folder, "-o", tmp_path / "c.features", "--chunk-size", "10", "-q"])
    assert code == 0, err
    assert "in 3 + 1 shards" in out
    table = load_features(tmp_path / "c.features")
    assert table.X_train.shape == (27, 9)
    code, out, err = run_cli(["extract", folder, "-o", tmp_path / "x.npz", "--cluster", "local:2"])
    assert code == 2 and "--cluster writes a sharded table" in err
    code, out, err = run_cli(["extract", folder, "-o", tmp_path / "d.features", "--cluster", "nowhere"])
    assert code == 1 and err.strip().splitlines() == [
        "error: cluster 'nowhere' is not 'local:N' (a Dask LocalCluster of N worker processes on this machine) "
        "or a scheduler address such as 'tcp://10.0.0.5:8786'"]


def test_the_nan_check_of_a_sharded_table_reads_its_manifest_not_its_shards(tmp_path, monkeypatch):
    from featmlp.tables.passes import nonfinite_rows

    X = np.arange(60, dtype=np.float32).reshape(20, 3)
    X[7, 1], X[16, 2] = np.nan, np.inf
    table = FeatureTable(X, np.arange(20) % 2, X[:2] * 0, np.array([0, 1]), tuple("abc"), ("p", "q"))
    path = save_sharded(tmp_path / "t.features", table, shard_rows=6)
    expected = np.flatnonzero(~np.isfinite(X).all(axis=1)).tolist()  # numpy on the rows themselves
    opened = []
    real = ShardedArray.shard
    monkeypatch.setattr(ShardedArray, "shard", lambda self, i: opened.append(i) or real(self, i))
    assert nonfinite_rows(load_features(path).X_train).tolist() == expected == [7, 16]
    assert opened == []  # recorded as the shards were written
    # a manifest without the record (written by hand, or an older featmlp): a pass over the shards
    manifest = json.loads((path / "manifest.json").read_text())
    for shard in manifest["splits"]["train"]:
        del shard["nonfinite"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    assert nonfinite_rows(load_features(path).X_train).tolist() == expected
    assert opened == [0, 1, 2, 3]


# --------------------------------------------------------------------------- the source name of each row

def test_each_row_keeps_its_source_name_in_an_npz_and_a_sharded_table(tmp_path):
    root = image_folder(tmp_path / "imgs", n_per_class=4)
    ds = load_dataset(root)
    extraction.extract_dataset(ds, "lecture", tmp_path / "f.npz")
    npz = load_features(tmp_path / "f.npz")
    sharded = extract_to_shards(ds, "lecture", tmp_path / "f.features", chunk_size=5)
    on_disk = {split: sorted(p.relative_to(root).as_posix() for p in (root / split).rglob("*.png"))
               for split in ("train", "test")}
    with np.load(tmp_path / "f.npz", allow_pickle=False) as z:
        assert sorted(z["names_train"].tolist()) == on_disk["train"] and sorted(z["names_test"]) == on_disk["test"]
    for split in ("train", "test"):
        names = list(getattr(npz, f"names_{split}"))
        assert list(getattr(sharded, f"names_{split}")) == names  # read back from the shard records
        assert sharded.row_names(split, 3, 7) == names[3:7]  # across a shard boundary
        X = getattr(npz, f"X_{split}")
        # each name is the file whose features are that row (computed here from the file itself)
        for i in (0, len(names) - 1):
            one = np.asarray(Image.open(root / names[i]).convert("RGB"))[None]
            np.testing.assert_allclose(extract_features(one, "lecture")[0], X[i])
            assert ds.class_names[getattr(npz, f"y_{split}")[i]] == names[i].split("/")[1]


def test_names_of_images_in_memory_and_of_tables_without_them(tmp_path):
    rng = np.random.default_rng(0)
    ds = Dataset(rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8), np.arange(6) % 2,
                 rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8), np.arange(3) % 2, ("a", "b"), "made here",
                 train_names=tuple(f"t,{i}.png" for i in range(6)), test_names=("x.png", "y.png", "z.png"))
    t = extract_to_shards(ds, "lecture", tmp_path / "m.features", chunk_size=4)
    assert list(t.names_train) == list(ds.train_names) and list(t.names_test) == list(ds.test_names)
    records = sorted((tmp_path / "m.features").glob("train-*.json"))
    assert [f for r in records for f in json.loads(r.read_text())["files"]] == list(ds.train_names)
    # an .npz written before names were kept: it loads, its rows are named by position, and the
    # names are not part of the fingerprint (old runs' records still match)
    old = tmp_path / "old.npz"
    named = extraction.extract_dataset(ds, "lecture", tmp_path / "new.npz")
    with np.load(tmp_path / "new.npz", allow_pickle=False) as z:
        np.savez(old, **{k: z[k] for k in z.files if not k.startswith("names_")})
    back = load_features(old)
    assert back.names_test is None and back.row_names("test") == ["#0", "#1", "#2"]
    assert table_fingerprint(back) == table_fingerprint(named)
    # and a sharded copy of a table keeps its names
    copy = load_features(save_sharded(tmp_path / "copy.features", named, shard_rows=2))
    assert list(copy.names_train) == list(ds.train_names)

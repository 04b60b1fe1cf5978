"""Reading and writing files: damaged .npz files and a full disk are one line, never a traceback."""

from __future__ import annotations

import errno
import os
import zipfile

import numpy as np
import pytest

from featmlp._io import read_npz
from featmlp.errors import DataError
from featmlp.tables.store import FeatureTable, load_features, save_features
from featmlp.runs.bundle import load_fitted


@pytest.fixture
def feature_file(tmp_path):
    rng = np.random.default_rng(0)
    table = FeatureTable(rng.normal(size=(200, 3)), np.arange(200) % 2, rng.normal(size=(20, 3)),
                         np.arange(20) % 2, ("a", "b", "c"), ("x", "y"))
    return save_features(tmp_path / "ok.npz", table)


def _damaged(tmp_path, feature_file):
    """Each way a file named .npz can fail to be one, made by hand."""
    data = feature_file.read_bytes()
    with zipfile.ZipFile(feature_file) as zf:  # a byte inside X_train's stored data
        info = zf.getinfo("X_train.npy")
    inside = info.header_offset + 30 + len(info.filename) + 200
    flipped = bytearray(data)
    flipped[inside] ^= 0xFF
    np.save(tmp_path / "array.npy", np.zeros(3))
    cases = {
        "truncated": data[: len(data) // 2],
        "bad_crc": bytes(flipped),
        "npy": (tmp_path / "array.npy").read_bytes(),
        "text": b"x,y\n1,2\n",
        "empty": b"",
    }
    paths = {}
    for name, content in cases.items():
        paths[name] = tmp_path / f"{name}.npz"
        paths[name].write_bytes(content)
    return paths


_CASES = [("truncated", "damaged or truncated"), ("bad_crc", "CRC"), ("npy", "single .npy array"),
          ("text", "does not start as a zip"), ("empty", "is empty")]


# load_fitted reads the state only, so a damaged feature matrix (bad_crc) is not its concern
@pytest.mark.parametrize("reader, case, words", [(load_features, c, w) for c, w in _CASES]
                         + [(load_fitted, c, w) for c, w in _CASES if c != "bad_crc"])
def test_damaged_npz_is_a_data_error(tmp_path, feature_file, reader, case, words):
    path = _damaged(tmp_path, feature_file)[case]
    with pytest.raises(DataError) as e:
        reader(path)
    assert str(path) in str(e.value) and words in str(e.value)
    assert "allow_pickle" not in str(e.value) and "\n" not in str(e.value)


def test_object_arrays_are_refused_without_suggesting_pickle(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, X_train=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="never reads") as e:
        read_npz(path)
    assert "allow_pickle" not in str(e.value)


def test_read_npz_selects_arrays_and_matches_numpy(feature_file):
    arrays = read_npz(feature_file, lambda k: k.startswith("X_"))
    assert sorted(arrays) == ["X_test", "X_train"]
    with np.load(feature_file, allow_pickle=False) as z:
        np.testing.assert_array_equal(arrays["X_train"], z["X_train"])


@pytest.mark.parametrize("case", ["truncated", "npy", "text"])
def test_cli_damaged_feature_file_is_one_line(tmp_path, feature_file, run_cli, case):
    path = _damaged(tmp_path, feature_file)[case]
    code, out, err = run_cli(["train", path, "--epochs", "1", "--out", tmp_path / "run", "-q"])
    assert code == 1
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_during_extract_is_one_line_and_resumable(tmp_path, run_cli, monkeypatch):
    out = tmp_path / "f.npz"
    with monkeypatch.context() as m:  # every atomic write fails as a full disk makes it fail
        m.setattr("featmlp._io.os.fsync", _disk_full)
        code, _, err = run_cli(["extract", "-o", out, "-q"])
    assert code == 1
    assert "disk is full" in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".part")]  # no temporary file left
    code, stdout, _ = run_cli(["extract", "-o", out, "-q"])  # space again: the same command works
    assert code == 0 and out.exists()
    assert load_features(out).X_train.shape == (5000, 9)


def test_every_sibling_keeps_the_name_interrupted_work_resumes_from(tmp_path, monkeypatch):
    # The names as featmlp has always written them (an interrupted extraction, run or sweep finds
    # its work again only under these), spelled out by hand.
    from featmlp._io import sibling
    from featmlp.runs.directory import lock_file, staging_dir
    from featmlp.tables.extract import work_dir

    monkeypatch.chdir(tmp_path)
    assert staging_dir("runs/a") == tmp_path / "runs" / ".a.incomplete"
    assert lock_file("runs/a/") == tmp_path / "runs" / ".a.lock"
    assert work_dir(tmp_path / "t.features") == tmp_path / ".t.features.partial"
    assert sibling("t.npz", "partial", hidden=False).name == "t.npz.partial"
    assert sibling("t.npz/", "lock", hidden=False).name == "t.npz.lock"
    assert sibling(tmp_path / "out", "old") == tmp_path / ".out.old"
    with pytest.raises(ValueError, match="partial"):
        sibling("x", "tmp")

"""The command line: real runs on small data, and one clear line for bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from featmlp import extract_features



def make_folder(root, sizes=((20, 20),), per_class=6):
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            w, h = sizes[i % len(sizes)]
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")


def test_extract_folder(tmp_path, run_cli):
    make_folder(tmp_path / "imgs")
    out = tmp_path / "f.npz"
    code, stdout, _ = run_cli(["extract", tmp_path / "imgs", "-o", out, "--test-fraction", "0.5", "-q"])
    assert code == 0, stdout
    assert "6 train + 6 test images x 9 lecture features, 2 classes" in stdout
    with np.load(out, allow_pickle=False) as z:
        assert list(z["class_names"]) == ["cats", "dogs"]
        assert np.bincount(z["y_test"]).tolist() == [3, 3]  # stratified
        # every row is the feature vector of one of the images
        imgs = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((tmp_path / "imgs").rglob("*.png"))]
        ref = extract_features(np.stack(imgs))
        for row in np.concatenate([z["X_train"], z["X_test"]]):
            assert np.any(np.all(ref == row, axis=1))


def test_extract_bundled_sample_default(tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = run_cli(["extract", "-q"])
    assert code == 0
    assert "5000 train + 1000 test images x 9" in stdout
    assert (tmp_path / "features.npz").exists()


@pytest.mark.parametrize("args, message", [
    (["extract", "no/such/place"], "no/such/place"),
    (["extract", "--image-size", "32by32"], "WIDTHxHEIGHT"),
    (["extract", "--features", "nope"], "nope"),
])
def test_bad_input_is_one_line(tmp_path, run_cli, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(args)
    assert code != 0
    assert message in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_mixed_sizes_resized_with_one_line_then_image_size_decides(tmp_path, run_cli):
    make_folder(tmp_path / "imgs", sizes=((20, 20), (24, 16)))
    code, _, err = run_cli(["extract", tmp_path / "imgs", "-o", tmp_path / "f.npz", "-q"])
    assert code == 0 and len(err.strip().splitlines()) == 1
    # 6 images of each size: the tie goes to the larger area, 20x20 (400 pixels) over 24x16 (384)
    assert err.startswith("warning: resized 6 of 12 images to 20x20 ") and "--image-size WxH chooses" in err
    assert "image_size=" not in err  # the CLI's spelling to the CLI's user
    from featmlp.tables.store import load_features

    assert load_features(tmp_path / "f.npz").meta["image_size"] == [20, 20]
    code, out, err = run_cli(["extract", tmp_path / "imgs", "-o", tmp_path / "f.npz", "-q", "--image-size", "16x16",
                              "--force"])
    assert code == 0 and err == ""


def test_console_script_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "featmlp.cli", "extract", str(tmp_path / "missing")],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1

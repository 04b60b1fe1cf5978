"""New images through a saved model: every good file classified, one line per bad one, within memory."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from featmlp.runs.bundle import load_bundle
from featmlp.runs import train_run
from featmlp.training import TrainConfig

from _files import two_class_folder


# ------------------------------------------------------------------ predict: every good file, one line per bad

def unescape(field):
    """Inverse of predict's escaping (backslash escapes as PostgreSQL COPY), written independently."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\":
            out.append({"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}[field[i + 1]])
            i += 2
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def test_predict_reports_bad_files_and_classifies_the_rest(tmp_path, run_cli):
    root = two_class_folder(tmp_path / "imgs")
    assert run_cli(["run", "--data", root, "--test-fraction", "0.5", "--epochs", "2", "-q",
                    "--out", tmp_path / "m"])[0] == 0
    odd = tmp_path / "new"
    odd.mkdir()
    names = ["plain.png", "tab\there.png", "line\nbreak.png", "back\\slash.png"]
    src = sorted(root.rglob("*.png"))
    for name, s in zip(names, src):
        shutil.copy(s, odd / name)
    (odd / "README.txt").write_text("not an image")
    paths = [odd / names[0], odd / "README.txt", odd / names[1], tmp_path / "missing.png", odd / names[2],
             odd / names[3]]
    code, out, err = run_cli(["predict", tmp_path / "m", *paths])
    assert code == 1
    lines = out.splitlines()
    assert len(lines) == 4  # the four images, in order, each on one line
    assert [unescape(line.split("\t")[0]) for line in lines] == [str(odd / n) for n in names]
    bundle = load_bundle(tmp_path / "m")
    from featmlp.data import read_images
    from featmlp.features import extract_features

    expected = bundle.predict_proba(extract_features(read_images([odd / n for n in names], image_size=(16, 16)),
                                                     "lecture"))
    for line, p in zip(lines, expected):
        _, cls, prob = line.split("\t")
        assert cls == bundle.class_names[p.argmax()] and float(prob) == pytest.approx(p.max(), abs=1e-4)
    errors = err.strip().splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(f"error: {odd / 'README.txt'}: ") and errors[1].startswith(f"error: {tmp_path / 'missing.png'}: ")
    # all good: exit 0
    code, out, err = run_cli(["predict", tmp_path / "m", odd / names[0]])
    assert code == 0 and err == "" and len(out.splitlines()) == 1


def test_predict_help_says_how_names_are_escaped(run_cli):
    code, out, _ = run_cli(["predict", "--help"])
    assert code == 0 and "PostgreSQL COPY" in out and "\\t" in out


def test_predict_checks_the_image_size_and_its_memory(tmp_path, run_cli, table, monkeypatch):
    import featmlp._memory

    train_run(table, TrainConfig(hidden=(4,), epochs=1), tmp_path / "m")
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    meta_file = tmp_path / "m" / "model.json"
    meta = json.loads(meta_file.read_text())
    meta["extra"]["image_size"] = [100000, 100000]  # 10^10 pixels: 30 GB for one image's RGB values
    meta_file.write_text(json.dumps(meta))
    code, out, err = run_cli(["predict", tmp_path / "m", img])
    assert code == 1 and out == "" and "100000x100000" in err and len(err.strip().splitlines()) == 1
    # a valid size that does not fit this (pretended) memory: refused before any image is read
    meta["extra"]["image_size"] = [4000, 4000]
    meta_file.write_text(json.dumps(meta))
    monkeypatch.setattr(featmlp._memory, "available_memory", lambda device="cpu": 100 * 2**20)
    monkeypatch.setattr("featmlp.data.ImageArray.decode_each", lambda *a, **k: pytest.fail("read"))
    code, out, err = run_cli(["predict", tmp_path / "m", img])
    assert code == 1 and len(err.strip().splitlines()) == 1
    # by hand: 4000 * 4000 pixels * (3 RGB + 3 its copy as a batch + 1 grayscale + 10 the lecture's int64
    # Gabor magnitudes and slack) bytes + 320 * 4096 bytes of strip buffers (capped) + 640 KiB of GLCM counts
    mib = (4000 * 4000 * (3 + 3 + 1 + 10) + 320 * 4096 + (640 << 10)) / 2**20
    assert f"{mib:.1f}" == "261.3"
    assert "resized to 4000x4000" in err and f"1 at once, needs about {mib:.1f} MB of memory, and 100.0 MB" in err


def test_bundle_predicts_image_files_in_order_with_an_error_for_each_bad_one(tmp_path):
    from featmlp.runs import ImagePrediction
    from featmlp.data import read_images
    from featmlp.features import extract_features
    from featmlp.runs import run_job

    root = two_class_folder(tmp_path / "imgs")
    run_job(root, "lecture", tmp_path / "m", config=TrainConfig(hidden=(4,), epochs=2), test_fraction=0.5)
    bundle = load_bundle(tmp_path / "m")
    good = sorted(root.rglob("*.png"))[::4]  # 5 of the 16x16 training-size images
    big = tmp_path / "big.png"
    Image.fromarray(np.full((40, 24, 3), 200, np.uint8)).save(big)  # resized to 16x16, like the training images
    (tmp_path / "notes.txt").write_text("not an image")
    paths = [good[0], tmp_path / "notes.txt", good[1], big, tmp_path / "missing.png", *good[2:]]
    results = bundle.predict_images(paths)
    assert [r.path for r in results] == [str(p) for p in paths] and [r.index for r in results] == list(range(len(paths)))
    ok = [r for r in results if r.error is None]
    assert [r.path for r in ok] == [str(p) for p in [good[0], good[1], big, *good[2:]]]
    # independently: read (resized to the training size), lecture features, the bundle's probabilities
    expected = bundle.predict_proba(extract_features(read_images([r.path for r in ok], image_size=(16, 16)), "lecture"))
    for r, p in zip(ok, expected):
        assert r.class_name == bundle.class_names[p.argmax()] and r.probability == pytest.approx(p.max(), rel=1e-6)
    bad = [r for r in results if r.error is not None]
    assert [r.path for r in bad] == [str(tmp_path / "notes.txt"), str(tmp_path / "missing.png")]
    assert all(r.class_name is None and r.probability is None for r in bad)
    assert "not a readable image" in bad[0].error and "no such file" in bad[1].error
    # without resizing the 24x40 image's features are still 9 lecture values: classified at its own size
    unresized = bundle.predict_images([big], resize=False)
    assert unresized == [ImagePrediction(str(big), unresized[0].class_name, unresized[0].probability, None, 0,
                                         ((unresized[0].class_name, unresized[0].probability),))]
    p = bundle.predict_proba(extract_features(read_images([big]), "lecture"))[0]
    assert unresized[0].probability == pytest.approx(p.max(), rel=1e-6)

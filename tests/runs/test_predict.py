"""New images through a saved model: every good file classified, one line per bad one, within memory."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from featmlp.errors import ConfigError
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


# ------------------------------------------------------------------ predict over folders, archives, top-k, formats

@pytest.fixture(scope="module")
def model3(tmp_path_factory):
    """A 3-class lecture model (random weights: any probabilities do) saved for 16x16 images."""
    from featmlp.model import MLPSpec, Scaler, build_mlp
    from featmlp.runs.bundle import save_bundle

    import torch

    X = np.random.default_rng(0).normal(size=(20, 9))
    spec = MLPSpec(9, 3, hidden=(6,))
    torch.manual_seed(0)
    return save_bundle(tmp_path_factory.mktemp("m") / "run", build_mlp(spec), spec, Scaler.fit(X), "lecture",
                       ["ant", "bee", "cow"], {"image_size": [16, 16]})


def _photos(root, n=7, seed=1):
    """A folder of images NOT in class folders: two sizes, a subfolder, a README, a zip and a tar of more."""
    import tarfile
    import zipfile

    rng = np.random.default_rng(seed)
    (root / "sub").mkdir(parents=True)
    names = [f"{i:02d}.png" for i in range(n)] + ["sub/x.jpg", "sub/y.png"]
    for k, name in enumerate(names):
        h, w = (16, 16) if k % 3 else (30, 20)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(root / name)
    (root / "README.txt").write_text("not an image")
    with zipfile.ZipFile(root / "more.zip", "w") as z:
        z.write(root / "00.png", "z/a.png")
        z.write(root / "01.png", "z/b.png")
    with tarfile.open(root / "sub" / "shard.tar", "w") as t:
        t.add(root / "02.png", "000.cat.png")
    return root


def test_predict_over_a_folder_equals_predict_one_file_at_a_time(tmp_path, model3):
    root = _photos(tmp_path / "photos")
    bundle = load_bundle(model3)
    with pytest.warns(UserWarning, match=r"left out 1 file whose names are not those of images \(.*README.txt\)"):
        whole = bundle.predict_images(root, top_k=3)
    files = [f"{i:02d}.png" for i in range(7)]
    # a sorted walk: the folder's files by name (an archive among them read in place), then its subfolders
    expected_order = [str(root / f) for f in files] + [f"{root}/more.zip:z/a.png", f"{root}/more.zip:z/b.png",
                                                       f"{root}/sub/shard.tar:000.cat.png", f"{root}/sub/x.jpg",
                                                       f"{root}/sub/y.png"]
    assert [r.path for r in whole] == expected_order
    assert [r.index for r in whole] == list(range(12)) and all(r.error is None for r in whole)
    # the same files one at a time (the members of the archives are copies of 00, 01, 02)
    same_file = {f"{root}/more.zip:z/a.png": root / "00.png", f"{root}/more.zip:z/b.png": root / "01.png",
                 f"{root}/sub/shard.tar:000.cat.png": root / "02.png"}
    for r in whole:
        [alone] = bundle.predict_images([same_file.get(r.path, r.path)], top_k=3)
        # every class's probability (top_k=3 lists all three); their order may differ only among near-ties
        assert dict(alone.top) == pytest.approx(dict(r.top), abs=1e-6)  # float32, batched
        assert alone.class_name == r.class_name or abs(alone.top[0][1] - r.top[0][1]) < 1e-6


def test_top_k_is_the_argsort_of_the_probabilities(tmp_path, model3):
    from featmlp.data import read_images
    from featmlp.features import extract_features

    root = _photos(tmp_path / "photos")
    files = sorted(root.glob("*.png"))
    bundle = load_bundle(model3)
    results = bundle.predict_images(files, top_k=2)
    # independently: Pillow's bilinear resize to the model's 16x16, lecture features, the network, numpy's argsort
    proba = bundle.predict_proba(extract_features(np.stack(read_images(files, image_size=(16, 16))), "lecture"))
    order = np.argsort(-proba, axis=1, kind="stable")[:, :2]
    for r, p, o in zip(results, proba, order):
        assert [c for c, _ in r.top] == [bundle.class_names[k] for k in o]
        assert [q for _, q in r.top] == pytest.approx(p[o].tolist(), rel=1e-6)
        assert (r.class_name, r.probability) == r.top[0]
    with pytest.raises(ConfigError, match="top_k must be an integer from 1 to the model's 3 classes"):
        bundle.predict_images(files, top_k=4)


def test_predict_reads_a_chunk_at_a_time(tmp_path, model3, monkeypatch):
    import featmlp.runs.predict as predict_module

    root = tmp_path / "many"
    root.mkdir()
    for i in range(23):
        Image.new("RGB", (16, 16), (i, 2 * i, 3 * i)).save(root / f"{i:03d}.png")
    monkeypatch.setattr(predict_module, "PREDICT_CHUNK_IMAGES", 5)
    seen, told = [], []
    real = predict_module.extract_features
    monkeypatch.setattr(predict_module, "extract_features",
                        lambda images, *a, **k: seen.append(len(images)) or real(images, *a, **k))
    results = load_bundle(model3).predict_images(root, progress=lambda *a: told.append(a))
    assert len(results) == 23 and seen == [5, 5, 5, 5, 3]  # the network and the features a batch at a time
    assert told == [("predict", k, 23) for k in (5, 10, 15, 20, 23)]


def test_an_unreadable_image_is_one_line_naming_it_once(tmp_path, model3, monkeypatch):
    import featmlp.data._image_array as image_array_mod
    from featmlp.errors import DataError

    def decode(data, where, image_size=None):  # as some Pillow errors read: the path and an object's repr
        raise DataError(f"cannot read image {where}: {where}: cannot identify <PIL.PngImagePlugin.PngImageFile "
                        f"image mode=RGB size=16x16 at 0x7F1234ABCD>\nline two")

    # a name as typed ("./notes.txt", "a//b.png") is the one the reason is said of: shown once
    (tmp_path / "notes.txt").write_text("not an image")
    monkeypatch.chdir(tmp_path)
    [r] = load_bundle(model3).predict_images(["./notes.txt"])
    assert (r.path, r.error) == ("./notes.txt", "not a readable image (Pillow cannot identify it)")
    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    monkeypatch.setattr(image_array_mod, "decode_image", decode)
    [r] = load_bundle(model3).predict_images([tmp_path / "a.png"])
    assert r.error == "cannot identify line two" and r.path == str(tmp_path / "a.png")


def test_cli_predict_formats_and_output_file(tmp_path, model3, run_cli):
    import csv
    import io

    root = _photos(tmp_path / "photos")
    with pytest.warns(UserWarning, match="left out 1 file"):
        expected = load_bundle(model3).predict_images(root, top_k=2)
    # tsv, k=1: today's lines exactly; the README left out in one line on stderr
    code, out, err = run_cli(["predict", model3, root])
    assert code == 0 and err.startswith("warning: left out 1 file") and len(err.splitlines()) == 1
    assert out.splitlines() == [f"{r.path}\t{r.class_name}\t{r.probability:.4f}" for r in expected]
    code, out, err = run_cli(["predict", model3, root, "--top-k", "4"])
    assert code == 2 and "--top-k" in err and "4 is more than the 3 classes the model knows" in err and out == ""
    code, out, _ = run_cli(["predict", model3, root, "--top-k", "2", "-q"])
    assert out.splitlines()[0] == "\t".join([expected[0].path] + [f"{c}\t{p:.4f}" for c, p in expected[0].top])
    # csv with a header, read by the csv module
    out_file = tmp_path / "out" / "p.csv"
    code, out, err = run_cli(["predict", model3, root, "--top-k", "2", "--format", "csv", "-o", out_file, "-q"])
    assert code == 0 and out == ""
    rows = list(csv.DictReader(io.StringIO(out_file.read_text(encoding="utf-8"))))
    assert list(rows[0]) == ["name", "predicted_class", "probability", "top1_class", "top1_probability",
                             "top2_class", "top2_probability"]  # a run's predictions.csv's, but the true class
    assert [(row["name"], row["predicted_class"], row["top1_class"], row["top2_class"]) for row in rows] == \
        [(r.path, r.class_name, r.top[0][0], r.top[1][0]) for r in expected]
    assert [float(row["top2_probability"]) for row in rows] == pytest.approx([r.top[1][1] for r in expected], abs=1e-6)
    assert [p.name for p in out_file.parent.iterdir()] == ["p.csv"]  # nothing left beside it
    # an existing predictions file: replaced only with --force
    code, _, err = run_cli(["predict", model3, root, "--format", "jsonl", "-o", out_file, "-q"])
    assert code == 1 and "already exists" in err and "--force" in err
    code, _, err = run_cli(["predict", model3, root, "--format", "jsonl", "-o", out_file, "-q", "--force"])
    assert code == 0
    lines = [json.loads(line) for line in out_file.read_text(encoding="utf-8").splitlines()]
    assert lines == [{"name": r.path, "predicted_class": r.class_name,
                      "probability": pytest.approx(r.probability, abs=1e-6)}
                     for r in expected]
    # a tsv file featmlp wrote is known as its own too; a file featmlp did not write is never replaced
    code, _, _ = run_cli(["predict", model3, root, "-o", out_file, "-q", "--force"])
    assert code == 0
    code, _, _ = run_cli(["predict", model3, root, "-o", out_file, "-q", "--force", "--top-k", "3"])
    assert code == 0
    mine = tmp_path / "notes.tsv"
    mine.write_text("a\tb\n")
    code, _, err = run_cli(["predict", model3, root, "-o", mine, "-q", "--force"])
    assert code == 1 and "never replaces it" in err and mine.read_text() == "a\tb\n"


def test_predict_over_a_url_and_a_pattern_of_shards(tmp_path, model3):
    import io
    import tarfile

    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    rng = np.random.default_rng(3)
    pngs = {}
    for i in range(4):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), np.uint8)).save(buf, "PNG")
        pngs[f"{i}.png"] = buf.getvalue()
        (tmp_path / f"{i}.png").write_bytes(buf.getvalue())
    try:
        fs.pipe({f"/predict-t/photos/{name}": data for name, data in pngs.items()})
        for k in range(2):  # two shards of two images each
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                for i in (2 * k, 2 * k + 1):
                    info = tarfile.TarInfo(f"{i:03d}.png")
                    info.size = len(pngs[f"{i}.png"])
                    tar.addfile(info, io.BytesIO(pngs[f"{i}.png"]))
            fs.pipe(f"/predict-t/shards/s-{k}.tar", buf.getvalue())
        bundle = load_bundle(model3)
        local = bundle.predict_images([tmp_path / f"{i}.png" for i in range(4)])
        folder = bundle.predict_images("memory://predict-t/photos/")
        shards = bundle.predict_images("memory://predict-t/shards/s-{0..1}.tar")
    finally:
        fs.rm("/predict-t", recursive=True)
    assert [r.path for r in folder] == [f"memory://predict-t/photos/{i}.png" for i in range(4)]
    # each shard named by the filesystem's own URL of it (memory:// adds a slash to its root)
    assert [r.path for r in shards] == [f"memory:///predict-t/shards/s-{k}.tar:{i:03d}.png" for k, i in
                                        ((0, 0), (0, 1), (1, 2), (1, 3))]
    for results in (folder, shards):
        assert [r.class_name for r in results] == [r.class_name for r in local]
        assert [r.probability for r in results] == pytest.approx([r.probability for r in local], abs=1e-6)

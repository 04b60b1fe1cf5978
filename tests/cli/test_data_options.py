"""featmlp extract on damaged, unreadable and oddly named inputs: one line each, never a traceback."""

from __future__ import annotations

import io
import os
import tarfile

import numpy as np
from PIL import Image


def _png(value: int, size=(12, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (value, 0, 0)).save(buf, "PNG")
    return buf.getvalue()


def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _folder(root, n=4):
    for c in ("ant", "bee"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            (root / c / f"{i}.png").write_bytes(_png(10 * i + (c == "bee")))
    return root


def test_skip_bad_prints_one_summary_line(tmp_path, run_cli):
    root = _folder(tmp_path / "d")
    (root / "ant" / "README.txt").write_text("notes")
    (root / "bee" / "cut.jpg").write_bytes(_jpeg(0)[:900])
    for i in range(3):
        (root / "bee" / f"x{i}.gif").write_bytes(b"GIF89a nothing")
    out = tmp_path / "f.npz"
    code, stdout, err = run_cli(["extract", root, "-o", out, "--test-fraction", "0.5", "-q"])
    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines() == [err.strip()]  # one line
    assert err.startswith("error: cannot read image ant/README.txt: not a readable image") and "--skip-bad" in err
    assert not out.exists()

    code, stdout, err = run_cli(["extract", root, "-o", out, "--test-fraction", "0.5", "-q", "--skip-bad"])
    assert code == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("skipped 5 unreadable files: ant/README.txt (not an image), bee/cut.jpg "
                               "(truncated or corrupt")
    assert lines[0].endswith("bee/x0.gif (not an image), and 2 more")
    assert "4 train + 4 test images" in stdout
    with np.load(out, allow_pickle=False) as z:
        assert len(z["X_train"]) == 4


def test_damaged_archive_is_one_line(tmp_path, run_cli):
    tar = tmp_path / "x.tar"
    with tarfile.open(tar, "w") as tf:
        for split in ("train", "test"):
            for c in ("ant", "bee"):
                for i in range(3):
                    data = _jpeg(i)
                    info = tarfile.TarInfo(f"{split}/{c}/{i}.jpg")
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    with tarfile.open(tar) as tf:
        first_test = next(m for m in tf if m.name.startswith("test/"))
    with open(tar, "r+b") as f:
        f.seek(first_test.offset + 148)  # the header's checksum field
        f.write(b"garbage!")
    code, stdout, err = run_cli(["extract", tar, "-o", tmp_path / "f.npz", "-q"])
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"x.tar is damaged at byte {first_test.offset:,} of the archive" in err
    assert "has train/ but no test/" not in err


def test_non_utf8_class_folder(tmp_path, run_cli):
    root = _folder(tmp_path / "d")
    raw = os.fsencode(root) + b"/caf\xe9"  # Latin-1 "café": not valid UTF-8
    os.mkdir(raw)
    for i in range(4):
        with open(raw + f"/{i}.png".encode(), "wb") as f:
            f.write(_png(200 + i))
    out = tmp_path / "f.npz"
    code, stdout, err = run_cli(["extract", root, "-o", out, "--test-fraction", "0.5", "-q"])
    assert code == 0, err
    with np.load(out, allow_pickle=False) as z:
        assert list(z["class_names"]) == ["ant", "bee", "caf\\xe9"]
        import json
        json.loads(str(z["meta"]))


def test_missing_cifar_batch_is_one_warning_line(tmp_path, run_cli):
    import pickle

    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, n in (("data_batch_1", 3), ("data_batch_2", 2), ("test_batch", 2)):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": [0, 1] * (n // 2) + [0] * (n % 2)}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a", b"b"]}, protocol=2))
    code, stdout, err = run_cli(["extract", folder, "-o", tmp_path / "f.npz", "-q"])
    assert code == 0, err
    assert err.strip() == ("warning: CIFAR-10: data_batch_3, data_batch_4, data_batch_5 missing (the official "
                           "set has data_batch_1..5): training on the 5 images of data_batch_1..2; copy or "
                           "download the full set for all 50,000")

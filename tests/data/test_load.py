"""Tests of featmlp.data: every source, built small in code under tmp_path."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import pickle
import socket
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featmlp.data import (CIFAR10_CLASSES, Dataset, fingerprint, load_dataset, read_images)
from featmlp.errors import ConfigError, DataError

from _files import batch_files, dump_py2, dump_py3, make_batches, write_folder, write_tar, write_zip

REPO = Path(__file__).resolve().parents[2]
CIFAR10_JPG = Path(__file__).parents[2] / "../shared/data/cifar10-jpg.tar.gz"


# --------------------------------------------------------------------------- CIFAR-10 batches

def expected_images(batches):
    data = np.concatenate([b[b"data"] for b in batches])
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def test_pixels_land_where_the_format_says():
    batches, test, meta = make_batches(sizes=(2,), n_test=1)
    data = batches[0][b"data"]
    data[0, 0] = 200                      # R plane, row 0, column 0
    data[0, 1024 + 32 * 1 + 2] = 77       # G plane, row 1, column 2
    data[0, 2048 + 32 * 31 + 31] = 5      # B plane, row 31, column 31
    from featmlp.data._cifar import read_cifar_batches
    files = {k: (k, (lambda v=v: v)) for k, v in batch_files(batches, test, meta).items()}
    train_x, *_ = read_cifar_batches(files)
    assert train_x.shape == (2, 32, 32, 3) and train_x.flags.c_contiguous
    assert train_x[0, 0, 0, 0] == 200 and train_x[0, 1, 2, 1] == 77 and train_x[0, 31, 31, 2] == 5


@pytest.mark.parametrize("dump", [dump_py2, dump_py3], ids=["py2-numpy1-names", "py3-numpy2-names"])
@pytest.mark.parametrize("form", ["folder", "parent", "tar.gz"])
def test_official_format(tmp_path, dump, form):
    batches, test, meta = make_batches()
    files = batch_files(batches, test, meta, dump)
    if form == "tar.gz":
        source = write_tar(tmp_path / "cifar-10-python.tar.gz", files, "cifar-10-batches-py/")
    else:
        folder = write_folder(tmp_path / "cifar-10-batches-py", files)
        source = folder if form == "folder" else tmp_path
    ds = load_dataset(source)
    # Sizes come from the data (3 + 2 + 4), not from meta's num_cases_per_batch = 10000.
    assert ds.train_images.shape == (9, 32, 32, 3) and ds.test_images.shape == (5, 32, 32, 3)
    np.testing.assert_array_equal(ds.train_images, expected_images(batches))
    np.testing.assert_array_equal(ds.test_images, expected_images([test]))
    assert ds.train_labels.tolist() == sum((b[b"labels"] for b in batches), [])
    assert ds.train_labels.dtype == np.int64 and ds.test_labels.tolist() == test[b"labels"]
    assert ds.class_names == CIFAR10_CLASSES
    assert "CIFAR-10" in ds.source


def test_official_format_image_size(tmp_path):
    batches, test, meta = make_batches(sizes=(2,), n_test=1)
    ds = load_dataset(write_folder(tmp_path / "b", batch_files(batches, test, meta)),
                      image_size=(16, 20))  # (width, height)
    assert ds.train_images.shape == (2, 20, 16, 3) and "resized to 16x20" in ds.source


class _RunsCommand:
    """Unpickling this runs ``func(arg)``: what a crafted batch would do."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("attack", ["os.system", "builtins.eval", "builtins.exec"])
@pytest.mark.parametrize("victim", ["data_batch_1", "batches.meta", "test_batch"])
def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path, attack, victim):
    marker = tmp_path / "pwned"
    code = f"open({str(marker)!r}, 'w').close()"
    payload = {"os.system": _RunsCommand(os.system, f"touch '{marker}'"),
               "builtins.eval": _RunsCommand(eval, code),
               "builtins.exec": _RunsCommand(exec, code)}[attack]
    batches, test, meta = make_batches(sizes=(2,), n_test=1)
    files = batch_files(batches, test, meta)
    # The payload sits inside an otherwise valid batch, as a smuggled entry would.
    files[victim] = pickle.dumps({b"data": batches[0][b"data"], b"labels": [0, 1],
                                  b"label_names": meta[b"label_names"], b"x": payload}, protocol=2)
    for source in (write_folder(tmp_path / "f", files), write_tar(tmp_path / "c.tar.gz", files)):
        with pytest.raises(DataError, match=r"refusing to unpickle (posix|nt|__builtin__)\.\w+ "
                                            r"from .*: CIFAR-10 batches only contain numpy arrays"):
            load_dataset(source)
    assert not marker.exists()


def test_restricted_codecs_encode(tmp_path):
    # _codecs.encode is allowed only as Python 3 uses it for bytes: (str, "latin1").
    batches, test, meta = make_batches(sizes=(1,), n_test=1)
    files = batch_files(batches, test, meta)
    files["test_batch"] = (b"\x80\x02c_codecs\nencode\nX\x02\x00\x00\x00hiX\x05\x00\x00\x00rot13"
                           b"\x86R.")
    with pytest.raises(DataError, match="refusing to unpickle _codecs.encode"):
        load_dataset(write_folder(tmp_path / "f", files))


@pytest.mark.parametrize("change, message", [
    (lambda b, t, m: b[0].update({b"data": np.zeros((3, 100), np.uint8)}), r"shape \(N, 3072\)"),
    (lambda b, t, m: b[0].update({b"data": np.zeros((3, 3072), np.float32)}), "uint8"),
    (lambda b, t, m: b[1].update({b"labels": [0]}), "2 images but 1 labels"),
    (lambda b, t, m: t.update({b"labels": [0, 1, 2, 3, 12]}), "batches.meta names 10 classes"),
    (lambda b, t, m: b[0].pop(b"labels"), "no 'labels' entry"),
    (lambda b, t, m: m.update({b"label_names": []}), "label_names"),
])
def test_invalid_batches(tmp_path, change, message):
    batches, test, meta = make_batches()
    change(batches, test, meta)
    with pytest.raises(DataError, match=message):
        load_dataset(write_folder(tmp_path / "f", batch_files(batches, test, meta)))


def test_missing_or_gapped_batches(tmp_path):
    batches, test, meta = make_batches()
    files = batch_files(batches, test, meta)
    del files["data_batch_2"]
    with pytest.raises(DataError, match="without gaps"):
        load_dataset(write_folder(tmp_path / "gap", files))
    del files["test_batch"]
    with pytest.raises(DataError, match="incomplete CIFAR-10 batches"):
        load_dataset(write_folder(tmp_path / "notest", files))
    truncated = batch_files(batches, test, meta)
    truncated["data_batch_1"] = truncated["data_batch_1"][:100]
    with pytest.raises(DataError, match="data_batch_1 is not a readable CIFAR-10 batch"):
        load_dataset(write_folder(tmp_path / "trunc", truncated))


# --------------------------------------------------------------------------- image folders

W, H = 40, 24  # an odd, non-square size; arrays are (H, W, 3)


def encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def palette_image(size=(W, H)) -> Image.Image:
    img = Image.new("P", size, 1)
    img.putpalette([0, 0, 0, 250, 10, 20] + [0, 0, 0] * 254)
    return img


# Each kind of file, and the RGB pixel it must decode to.
KINDS = {
    "gray.png": (lambda: encode(Image.new("L", (W, H), 128), "PNG"), (128, 128, 128)),
    "rgba.png": (lambda: encode(Image.new("RGBA", (W, H), (10, 20, 30, 0)), "PNG"), (10, 20, 30)),
    "palette.gif": (lambda: encode(palette_image(), "GIF"), (250, 10, 20)),
    "deep16.png": (lambda: encode(Image.fromarray(np.full((H, W), 0x8000, np.uint16)), "PNG"),
                   (128, 128, 128)),
    "rgb.bmp": (lambda: encode(Image.new("RGB", (W, H), (1, 2, 3)), "BMP"), (1, 2, 3)),
}


def folder_files(classes: dict[str, int], split: str | None = None, kinds=KINDS) -> dict[str, bytes]:
    """``{relative path: bytes}`` for ``classes[name]`` images per class, cycling KINDS."""
    kinds = list(kinds.items())
    files = {}
    for name, n in classes.items():
        for i in range(n):
            kind, (make, _) = kinds[i % len(kinds)]
            files[f"{split + '/' if split else ''}{name}/{i:03d}_{kind}"] = make()
    return files


def split_files() -> dict[str, bytes]:
    return {**folder_files({"zebra": 5, "ant": 5}, "train"), **folder_files({"zebra": 2, "ant": 3}, "test")}


def check_split_dataset(ds: Dataset):
    assert ds.class_names == ("ant", "zebra")  # sorted, whatever the listing order
    assert ds.train_images.shape == (10, H, W, 3) and ds.test_images.shape == (5, H, W, 3)
    assert ds.train_labels.tolist() == [0] * 5 + [1] * 5
    assert ds.test_labels.tolist() == [0] * 3 + [1] * 2
    # Within a class, files come in name order: 000_gray, 001_rgba, 002_palette, ...
    for i, (_, expected) in enumerate(KINDS.values()):
        assert tuple(ds.train_images[i, H // 2, W // 2]) == expected


@pytest.mark.parametrize("form", ["folder", "zip", "tar.gz", "tgz-wrapped", "zip-wrapped"])
def test_image_folder_with_split(tmp_path, form):
    files = split_files()
    # Junk that real archives carry must be skipped, not decoded.
    junk = {".DS_Store": b"\0junk", "train/ant/.DS_Store": b"\0", "__MACOSX/train/ant/._000.png": b"\0",
            "train/zebra/Thumbs.db": b"\0", "README.txt": b"not an image"}
    all_files = {**files, **junk}
    if form == "folder":
        source = write_folder(tmp_path / "root", {})
        for name, data in all_files.items():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes(data)
    elif form == "zip":
        source = write_zip(tmp_path / "imgs.zip", all_files)
    elif form == "tar.gz":
        source = write_tar(tmp_path / "imgs.tar.gz", all_files)
    elif form == "tgz-wrapped":
        source = write_tar(tmp_path / "imgs.tgz", {**files, "README.md": b"# my data"}, "mydata/")
    else:
        source = write_zip(tmp_path / "imgs.zip", {**files, "__MACOSX/x/._y": b"\0"}, "mydata/")
    ds = load_dataset(source)
    check_split_dataset(ds)
    assert str(source.resolve()) in ds.source


def test_image_folder_without_split_is_stratified_and_seeded(tmp_path):
    counts = {"c0": 10, "c1": 20, "c2": 30}
    root = tmp_path / "flat"
    for k, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True)
        for i in range(n):  # every image distinct, so a different split changes the data
            Image.new("L", (W, H), 3 * i + k).save(root / name / f"{i}.png")
    ds = load_dataset(root, test_fraction=0.2, seed=1)
    # Each class keeps its proportion: 20% of 10, 20, 30.
    assert np.bincount(ds.test_labels).tolist() == [2, 4, 6]
    assert np.bincount(ds.train_labels).tolist() == [8, 16, 24]
    assert "test_fraction=0.2" in ds.source and "seed=1" in ds.source
    again = load_dataset(root, test_fraction=0.2, seed=1)
    assert fingerprint(again) == fingerprint(ds)
    other = load_dataset(root, test_fraction=0.2, seed=2)
    assert fingerprint(other) != fingerprint(ds)
    assert np.bincount(load_dataset(root, test_fraction=0.5).test_labels).tolist() == [5, 10, 15]


def test_split_needs_two_images_per_class(tmp_path):
    source = write_zip(tmp_path / "x.zip", folder_files({"a": 5, "b": 1}))
    with pytest.raises(DataError, match="class 'b' has 1 image"):
        load_dataset(source)


def test_split_keeps_one_image_each_side(tmp_path):
    ds = load_dataset(write_zip(tmp_path / "x.zip", folder_files({"a": 2, "b": 3})), test_fraction=0.1)
    assert np.bincount(ds.test_labels).tolist() == [1, 1]


def test_mixed_sizes_are_resized_to_the_most_common_unless_image_size_says(tmp_path):
    files = folder_files({"a": 2, "b": 2}, "train") | folder_files({"a": 1, "b": 1}, "test")
    files["train/b/999_big.png"] = encode(Image.new("RGB", (64, 48), (9, 9, 9)), "PNG")
    source = write_zip(tmp_path / "mixed.zip", files)
    with pytest.warns(UserWarning, match=r"^resized 1 of 7 images to 40x24 .*the most common of their 2 sizes; "
                                         r"image_size=\(W, H\) chooses another size$"):
        ds = load_dataset(source)
    assert ds.train_images.shape == (5, 24, 40, 3) and np.asarray(ds.train_images).shape == (5, 24, 40, 3)
    assert (ds.train_images[4] == 9).all()  # bilinear resizing of a flat colour keeps the colour
    ds = load_dataset(source, image_size=(32, 30))  # (width, height), as the CLI's WxH
    assert ds.train_images.shape == (5, 30, 32, 3) and ds.test_images.shape == (2, 30, 32, 3)
    assert (ds.train_images[4] == 9).all()
    assert "resized to 32x30" in ds.source


def test_corrupt_image_is_named(tmp_path):
    files = folder_files({"a": 2, "b": 2})
    files["b/broken.jpg"] = b"\xff\xd8\xff\xe0 truncated"
    with pytest.raises(DataError, match="cannot read image .*b/broken.jpg"):
        load_dataset(write_tar(tmp_path / "x.tar", files))


@pytest.mark.parametrize("files, message", [
    ({}, "contains no files.*ROOT/<class>"),
    ({"README.txt": b"hi", "img.png": b"x"}, "no class folders.*ROOT/<class>"),
    ({"only/1.png": b"x", "only/2.png": b"x"}, "only the class 'only'"),
    ({"train/a/1.png": b"x", "train/b/1.png": b"x"}, "train/ but no test/"),
])
def test_bad_layouts(tmp_path, files, message):
    with pytest.raises(DataError, match=message):
        load_dataset(write_zip(tmp_path / "x.zip", files))
    folder = tmp_path / "dir"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    with pytest.raises(DataError, match=message):
        load_dataset(folder)


def test_unknown_sources(tmp_path):
    for source in ("no/such/place", "cifar100", tmp_path / "missing.zip"):
        with pytest.raises(DataError, match="expected one of.*sample.*cifar10.*image folder"):
            load_dataset(source)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="not a .zip"):
        load_dataset(tmp_path / "notes.txt")
    (tmp_path / "bad.zip").write_bytes(b"PK not really")
    with pytest.raises(DataError, match="cannot read archive"):
        load_dataset(tmp_path / "bad.zip")


@pytest.mark.parametrize("kwargs", [dict(test_fraction=0), dict(test_fraction=1.5),
                                    dict(test_fraction="x"), dict(image_size=(0, 3)),
                                    dict(image_size=32), dict(seed=-1),
                                    dict(url="http://x"), dict(md5="0" * 32)])
def test_settings_are_validated(kwargs):
    with pytest.raises(ConfigError):
        load_dataset("sample", **kwargs)


def test_read_images(tmp_path):
    paths = []
    for name, (make, expected) in KINDS.items():
        paths.append(tmp_path / name)
        paths[-1].write_bytes(make())
    images = read_images(paths)
    assert [img.shape for img in images] == [(H, W, 3)] * len(KINDS)
    assert [tuple(img[0, 0]) for img in images] == [e for _, e in KINDS.values()]
    assert all(img.dtype == np.uint8 and img.flags.writeable for img in images)
    assert read_images(str(paths[0]))[0].shape == (H, W, 3)
    assert read_images(paths[:1], image_size=(8, 9))[0].shape == (9, 8, 3)
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(DataError, match="bad.png"):
        read_images([paths[0], tmp_path / "bad.png"])
    with pytest.raises(DataError, match="gone.png: no such file"):
        read_images([tmp_path / "gone.png"])


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (W, H), (200, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert read_images([tmp_path / "rot.jpg"])[0].shape == (W, H, 3)


# --------------------------------------------------------------------------- Dataset & fingerprint

def test_dataset_validates(tiny_dataset):
    d = tiny_dataset
    with pytest.raises(DataError, match="labels must lie in"):
        Dataset(d.train_images, d.train_labels + 3, d.test_images, d.test_labels, d.class_names, "x")
    with pytest.raises(DataError, match="uint8"):
        Dataset(d.train_images.astype(float), d.train_labels, d.test_images, d.test_labels,
                d.class_names, "x")
    with pytest.raises(DataError, match="must be the same size"):
        Dataset(d.train_images, d.train_labels, d.test_images[:, :4], d.test_labels, d.class_names, "x")


def test_fingerprint_tracks_content_not_source(tiny_dataset):
    d = tiny_dataset
    fp = fingerprint(d)
    assert len(fp) == 16 and int(fp, 16) >= 0
    same = Dataset(d.train_images.copy(), d.train_labels.astype(np.int32), d.test_images.copy(),
                   d.test_labels, list(d.class_names), "elsewhere")
    assert fingerprint(same) == fp
    changed = d.train_images.copy()
    changed[0, 0, 0, 0] ^= 1
    assert fingerprint(Dataset(changed, d.train_labels, d.test_images, d.test_labels,
                               d.class_names, "x")) != fp
    assert fingerprint(Dataset(d.train_images, d.train_labels, d.test_images, d.test_labels,
                               ("a", "b", "c"), "x")) != fp


# --------------------------------------------------------------------------- download

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def http_root(tmp_path):
    """A real HTTP server on 127.0.0.1 serving ``tmp_path / "www"``; yields (root, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    # A short poll interval keeps shutdown() from waiting the default half second.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def served_archive(http_root):
    root, base = http_root
    batches, test, meta = make_batches()
    archive = write_tar(root / "cifar-10-python.tar.gz", batch_files(batches, test, meta),
                        "cifar-10-batches-py/")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    return archive, f"{base}/cifar-10-python.tar.gz", md5, expected_images(batches)


def test_download_then_reuse_cache(tmp_path, served_archive):
    archive, url, md5, images = served_archive
    cache = tmp_path / "cache"
    calls = []
    ds = load_dataset("cifar10", cache_dir=cache, url=url, md5=md5,
                      progress=lambda *a: calls.append(a))
    np.testing.assert_array_equal(ds.train_images, images)
    size = archive.stat().st_size
    assert calls[-1] == ("download", size, size)
    assert all(desc == "download" for desc, _, _ in calls)
    assert [p.name for p in cache.iterdir()] == ["cifar-10-python.tar.gz"]
    # With the server's copy gone, a second load can only succeed from the cache.
    archive.unlink()
    calls.clear()
    again = load_dataset("cifar10", cache_dir=cache, url=url, md5=md5, progress=lambda *a: calls.append(a))
    assert fingerprint(again) == fingerprint(ds) and calls == []


def test_download_settings_from_environment(tmp_path, served_archive, monkeypatch):
    archive, url, md5, images = served_archive
    monkeypatch.setenv("FEATMLP_CIFAR10_URL", url)
    monkeypatch.setenv("FEATMLP_CIFAR10_MD5", md5.upper())
    monkeypatch.setenv("FEATMLP_CACHE", str(tmp_path / "envcache"))
    ds = load_dataset("cifar10")
    np.testing.assert_array_equal(ds.train_images, images)
    assert (tmp_path / "envcache" / "cifar-10-python.tar.gz").is_file()


def test_checksum_mismatch_caches_nothing(tmp_path, served_archive):
    _, url, md5, _ = served_archive
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="MD5"):
        load_dataset("cifar10", cache_dir=cache, url=url, md5="0" * 32)
    assert not cache.exists() or list(cache.iterdir()) == []  # not even a temporary file


def test_corrupt_cached_file_is_downloaded_again(tmp_path, served_archive):
    archive, url, md5, images = served_archive
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "cifar-10-python.tar.gz").write_bytes(b"half a download")
    ds = load_dataset("cifar10", cache_dir=cache, url=url, md5=md5)
    np.testing.assert_array_equal(ds.train_images, images)
    assert (cache / "cifar-10-python.tar.gz").read_bytes() == archive.read_bytes()


class _CutOffHandler(http.server.BaseHTTPRequestHandler):
    """Promises 1000 bytes, sends 300, hangs up: an interrupted download."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"x" * 300)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


def test_interrupted_download_caches_nothing(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CutOffHandler)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    cache = tmp_path / "cache"
    try:
        with pytest.raises(DataError, match="300"):
            load_dataset("cifar10", cache_dir=cache,
                         url=f"http://127.0.0.1:{server.server_address[1]}/c.tar.gz")
    finally:
        server.shutdown()
        server.server_close()
    assert not cache.exists() or list(cache.iterdir()) == []


def test_unreachable_url(tmp_path, http_root):
    _, base = http_root
    with pytest.raises(DataError, match="could not download CIFAR-10 from .*pass its path"):
        load_dataset("cifar10", cache_dir=tmp_path / "c", url=f"{base}/missing.tar.gz")
    with socket.socket() as s:  # a port nobody listens on: bound, then closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError, match="could not download"):
        load_dataset("cifar10", cache_dir=tmp_path / "c", url=f"http://127.0.0.1:{port}/x.tar.gz")
    assert not (tmp_path / "c").exists() or list((tmp_path / "c").iterdir()) == []


# --------------------------------------------------------------------------- bundled sample

def test_bundled_sample(sample_dataset):
    ds = sample_dataset
    assert ds.train_images.shape == (5000, 32, 32, 3) and ds.test_images.shape == (1000, 32, 32, 3)
    assert ds.class_names == CIFAR10_CLASSES
    assert np.bincount(ds.train_labels).tolist() == [500] * 10
    assert np.bincount(ds.test_labels).tolist() == [100] * 10
    assert load_dataset(None).source == ds.source and "sample" in ds.source
    sample = REPO / "featmlp" / "_sample" / "cifar10-sample.tar.gz"
    assert sample.stat().st_size <= 8 * 1024 * 1024


@pytest.mark.cifar
@pytest.mark.slow
@pytest.mark.skipif(not CIFAR10_JPG.is_file(), reason=f"needs the full JPEG CIFAR-10 at {CIFAR10_JPG}")
def test_sample_is_rebuilt_identically(tmp_path):
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import make_sample
    finally:
        sys.path.remove(str(REPO / "tools"))
    out = tmp_path / "sample.tar.gz"
    make_sample.build(CIFAR10_JPG, out, 500, 100, seed=0)
    assert out.read_bytes() == (REPO / "featmlp" / "_sample" / "cifar10-sample.tar.gz").read_bytes()
    # The sample holds the original JPEG bytes, not re-encodings.
    with tarfile.open(out) as small, tarfile.open(CIFAR10_JPG) as full:
        name = small.getnames()[0]
        original = next(m for m in full if m.name.removeprefix("./") == name)
        assert small.extractfile(name).read() == full.extractfile(original).read()


# --------------------------------------------------------------------------- damaged archives

def _many_images(n_per_class=40) -> dict[str, bytes]:
    """Enough members (noisy PNGs, ~3 KB each) that damage can land in the middle of an archive."""
    rng = np.random.default_rng(3)
    files = {}
    for split, n in (("train", n_per_class), ("test", n_per_class // 4)):
        for c in ("ant", "bee"):
            for i in range(n):
                img = Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8))
                files[f"{split}/{c}/{i:03d}.png"] = encode(img, "PNG")
    return files


def _plain_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _damage(path: Path, offset: int, data: bytes) -> Path:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
    return path


DAMAGED = r"is damaged at byte [\d,]+ .*the archive is truncated or corrupt; download or copy it again"


@pytest.mark.parametrize("how", ["zeros-near-end", "truncated", "flipped-mid-file", "truncated-header"])
def test_damaged_tar_gz_is_refused_not_read_partially(tmp_path, how):
    good = write_tar(tmp_path / "good.tar.gz", _many_images())
    assert len(load_dataset(good).train_images) == 80  # the intact archive loads
    data = bytearray(good.read_bytes())
    bad = tmp_path / "bad.tar.gz"
    if how == "zeros-near-end":  # the dd command: 64 zero bytes near the end
        data[-200:-136] = bytes(64)
    elif how == "truncated":
        data = data[:len(data) * 2 // 3]
    elif how == "flipped-mid-file":
        data[len(data) // 2] ^= 0x10
    else:  # a cut right after a member: the gzip stream ends early
        data = data[:-30]
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError, match=str(bad) + " " + DAMAGED):
        load_dataset(bad)


@pytest.mark.parametrize("compression", ["gz", "bz2", "xz"])
def test_bad_header_inside_intact_compression(tmp_path, compression):
    # The compressed stream is intact (its CRC matches) but the tar inside it has a bad header
    # where test/ begins: it used to load as train/ only, with exit 0 or a layout diagnosis.
    tar = _plain_tar(tmp_path / "x.tar", _many_images())
    with tarfile.open(tar) as tf:
        first_test = next(m for m in tf if m.name.startswith("test/"))
    _damage(tar, first_test.offset + 100, b"\xff" * 8)
    import bz2, gzip, lzma
    packed = tmp_path / f"x.tar.{compression}"
    packed.write_bytes({"gz": gzip, "bz2": bz2, "xz": lzma}[compression].compress(tar.read_bytes()))
    name = {"gz": "gzip", "bz2": "bzip2", "xz": "xz"}[compression]
    with pytest.raises(DataError, match=f"x.tar.{compression} is damaged at byte {first_test.offset:,} of the "
                                        f"uncompressed {name} stream .*download or copy it again"):
        load_dataset(packed)


def test_damaged_header_in_plain_tar_is_not_the_end(tmp_path):
    # tarfile takes a bad header after the first one for the end of the archive: before this
    # was checked, the archive loaded as train/ only and the message blamed the layout.
    files = _many_images()
    tar = _plain_tar(tmp_path / "x.tar", files)
    with tarfile.open(tar) as tf:
        first_test = next(m for m in tf if m.name.startswith("test/"))
    _damage(tar, first_test.offset + 100, b"\xff" * 8)  # inside that member's header
    with pytest.raises(DataError, match=f"x.tar is damaged at byte {first_test.offset:,} of the archive"):
        load_dataset(tar)
    # truncated in the middle of a member's data
    cut = tmp_path / "cut.tar"
    cut.write_bytes(tar.read_bytes()[:first_test.offset_data + 10])
    with pytest.raises(DataError, match="cut.tar.*(damaged|only 10 of its)"):
        load_dataset(cut)


def test_trailing_garbage_after_end_marker(tmp_path):
    tar = _plain_tar(tmp_path / "x.tar", {"a/1.png": encode(Image.new("L", (4, 4)), "PNG"),
                                          "b/1.png": encode(Image.new("L", (4, 4)), "PNG")})
    size = tar.stat().st_size
    _damage(tar, size - 100, b"junk")
    with pytest.raises(DataError, match=f"damaged at byte {size - 100:,}"):
        load_dataset(tar)


def test_zip_crc_error_names_the_member(tmp_path):
    files = {"a/1.bmp": encode(Image.new("RGB", (8, 8), (1, 2, 3)), "BMP"),
             "a/2.bmp": encode(Image.new("RGB", (8, 8), (4, 5, 6)), "BMP"),
             "b/1.bmp": encode(Image.new("RGB", (8, 8), (7, 8, 9)), "BMP"),
             "b/2.bmp": encode(Image.new("RGB", (8, 8), (7, 8, 9)), "BMP")}
    z = tmp_path / "x.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    raw = bytearray(z.read_bytes())
    at = raw.index(files["b/1.bmp"]) + 60  # a pixel byte of b/1.bmp, stored as is
    raw[at] ^= 0xFF
    z.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"x.zip:b/1.bmp is damaged \(BadZipFile: Bad CRC-32.*download or copy"):
        load_dataset(z)


# --------------------------------------------------------------------------- unreadable files, --skip-bad

def _noisy_jpeg(seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    return encode(Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)), "JPEG")


def _with_bad_files(root: Path) -> Path:
    for name, data in folder_files({"ant": 4, "bee": 4}, kinds=dict(list(KINDS.items())[:2])).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "ant" / "README.txt").write_text("where these came from")
    (root / "bee" / "cut.jpg").write_bytes(_noisy_jpeg()[:900])  # header intact, pixels cut off
    (root / "bee" / "notes.png").write_bytes(b"\x89PNG but not really")
    return root


def test_skip_bad_leaves_out_and_lists_unreadable_files(tmp_path):
    root = _with_bad_files(tmp_path / "d")
    ds = load_dataset(root, skip_bad=True, test_fraction=0.25)
    assert len(ds.train_images) + len(ds.test_images) == 8
    assert [name for name, _ in ds.skipped] == ["ant/README.txt", "bee/cut.jpg", "bee/notes.png"]
    reasons = dict(ds.skipped)
    assert reasons["ant/README.txt"] == "not an image" and reasons["bee/notes.png"] == "not an image"
    assert reasons["bee/cut.jpg"].startswith("truncated or corrupt")
    np.asarray(ds.train_images)  # what is left decodes
    # the same files from an archive: same choice, same data
    zipped = load_dataset(write_zip(tmp_path / "d.zip", {str(p.relative_to(root)): p.read_bytes()
                                                          for p in root.rglob("*") if p.is_file()}),
                          skip_bad=True, test_fraction=0.25)
    assert zipped.skipped == ds.skipped and fingerprint(zipped) == fingerprint(ds)


def test_without_skip_bad_an_unreadable_file_is_one_clear_error(tmp_path):
    root = _with_bad_files(tmp_path / "d")
    with pytest.raises(DataError, match=r"cannot read image ant/README.txt: not a readable image .*--skip-bad"):
        load_dataset(root)
    (root / "ant" / "README.txt").unlink()
    (root / "bee" / "notes.png").unlink()
    # only the headers are read while listing: the cut JPEG fails when its chunk is decoded
    ds = load_dataset(root, test_fraction=0.25)
    with pytest.raises(DataError, match=r"cannot read image bee/cut.jpg: .*--skip-bad"):
        np.asarray(ds.train_images) if "bee/cut.jpg" in ds.train_images.names else np.asarray(ds.test_images)


def test_extraction_decodes_chunk_by_chunk(tmp_path, monkeypatch):
    from featmlp.tables.extract import extract_dataset
    import featmlp.data._image_array as lazy

    root = tmp_path / "d"
    for name, data in folder_files({"ant": 6, "bee": 6}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    ds = load_dataset(root, test_fraction=0.25)
    assert isinstance(ds.train_images, lazy.ImageArray) and not isinstance(ds.train_images, np.ndarray)
    sizes = []
    real = lazy.ImageArray._decode
    monkeypatch.setattr(lazy.ImageArray, "_decode", lambda self, idx: sizes.append(len(idx)) or real(self, idx))
    table = extract_dataset(ds, "color", chunk_size=4)
    assert max(sizes) == 4 and sum(sizes) == 12  # never more than a chunk decoded at once, each image once
    monkeypatch.undo()
    from featmlp import extract_features
    np.testing.assert_array_equal(table.X_train, extract_features(np.asarray(ds.train_images), "color"))


def test_missing_last_cifar_batches_warn(tmp_path):
    batches, test, meta = make_batches(sizes=(3, 2, 4, 1, 2))
    files = batch_files(batches, test, meta)
    with warnings_as_list() as caught:
        load_dataset(write_folder(tmp_path / "full", files))
    assert caught == []  # the official five: nothing to say
    del files["data_batch_5"], files["data_batch_4"]
    with pytest.warns(UserWarning, match=r"CIFAR-10: data_batch_4, data_batch_5 missing .*training on the 9 "
                                         r"images of data_batch_1\.\.3"):
        ds = load_dataset(write_tar(tmp_path / "c.tar.gz", files, "cifar-10-batches-py/"))
    assert len(ds.train_images) == 9


def warnings_as_list():
    import contextlib
    import warnings

    @contextlib.contextmanager
    def caught():
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            yield w

    return caught()


# --------------------------------------------------------------------------- names that are not UTF-8

def _bytes_folder(root: Path, names: list[bytes], n=3) -> Path:
    root.mkdir()
    for k, name in enumerate(names):
        d = os.fsencode(root) + b"/" + name
        os.mkdir(d)
        for i in range(n):
            with open(d + f"/{i}.png".encode(), "wb") as f:
                f.write(encode(Image.new("L", (W, H), 10 * i + k), "PNG"))
    return root


def test_class_folders_that_are_not_utf8_become_valid_text(tmp_path):
    import json

    root = _bytes_folder(tmp_path / "d", [b"caf\xe9", b"na\xefve", "ünï".encode()])
    ds = load_dataset(root, test_fraction=0.34)
    assert ds.class_names == ("caf\\xe9", "na\\xefve", "ünï")
    json.dumps(ds.class_names).encode("utf-8")  # writable as JSON and by matplotlib
    for name in ds.train_images.names:
        name.encode("utf-8")
    np.asarray(ds.train_images)  # the files themselves are still found by their real names
    # a tar made of the same folder has the same names (tarfile hands them over surrogate-escaped)
    tar = tmp_path / "d.tar"
    with tarfile.open(tar, "w", format=tarfile.GNU_FORMAT) as tf:
        tf.add(os.fsencode(root).decode("utf-8", "surrogateescape"), arcname="d")
    from_tar = load_dataset(tar, test_fraction=0.34)
    assert from_tar.class_names == ds.class_names and fingerprint(from_tar) == fingerprint(ds)


def test_two_folders_that_become_the_same_text_are_refused(tmp_path):
    root = _bytes_folder(tmp_path / "d", [b"caf\xe9", b"caf\\xe9"])
    with pytest.raises(DataError, match=r"the folders .* have the same name 'caf\\\\xe9'.*rename one") as e:
        load_dataset(root)
    assert "b'caf\\xe9'" in str(e.value) and "b'caf\\\\xe9'" in str(e.value)  # both, as bytes


def test_mixed_sizes_go_straight_to_a_pretrained_sets_input_size(tmp_path):
    from featmlp.features import input_size

    assert input_size("efficientnet-lite0") == (160, 160) and input_size("efficientnet-lite1", {"size": 96}) == (96, 96)
    assert input_size("lecture") is None and input_size("efficientnet-lite0+lecture") is None
    files = folder_files({"a": 2, "b": 2})
    big = Image.fromarray(np.random.default_rng(2).integers(0, 256, (48, 64, 3), np.uint8))
    files["b/999_big.png"] = encode(big, "PNG")
    with pytest.warns(UserWarning, match=r"^resized 5 of 5 images to 20x20 .*the size the feature set takes them at"):
        ds = load_dataset(write_zip(tmp_path / "m.zip", files), test_fraction=0.4, mixed_size=(20, 20))
    names = ds.train_images.names + ds.test_images.names
    images = np.concatenate([np.asarray(ds.train_images), np.asarray(ds.test_images)])
    # independent reference: Pillow's own bilinear resize of the file, once, to the set's input size
    np.testing.assert_array_equal(images[names.index("b/999_big.png")],
                                  np.asarray(big.resize((20, 20), Image.Resampling.BILINEAR)))
    # one size: nothing resized, whatever the set would take
    uniform = load_dataset(write_zip(tmp_path / "u.zip", folder_files({"a": 2, "b": 2})), mixed_size=(20, 20))
    assert uniform.train_images.shape[1:3] == (24, 40)


# ---------------------------------------------------------------------- every image a test image, names

def test_test_fraction_1_makes_every_image_a_test_image(tmp_path):
    # a labelled folder scored with a saved model (featmlp evaluate RUN --data): nothing to train on
    files = {f"{c}/{i}.png": _png(i) for c in ("ant", "bee") for i in range(3)}
    ds = load_dataset(write_folder(tmp_path / "f", files), test_fraction=1)
    assert len(ds.train_labels) == 0 and len(ds.test_labels) == 6
    assert sorted(ds.image_names("test")) == sorted(files)
    assert "every image a test image" in ds.source


def test_a_folder_with_only_test_is_every_image_a_test_image(tmp_path):
    files = {f"test/{c}/{i}.png": _png(i) for c in ("ant", "bee") for i in range(2)}
    ds = load_dataset(write_folder(tmp_path / "f", files))
    assert ds.class_names == ("ant", "bee") and len(ds.train_labels) == 0
    assert list(ds.image_names("test")) == sorted(files)
    assert [ds.class_names[k] for k in ds.test_labels] == [n.split("/")[1] for n in sorted(files)]


def test_cifar_batches_name_their_images(tmp_path):
    # the training batches carry filenames (the test batch of make_batches has none: no names then)
    batches, test, meta = make_batches()
    ds = load_dataset(write_folder(tmp_path / "c", batch_files(batches, test, meta)))
    assert ds.image_names("train") == tuple(n.decode() for b in batches for n in b[b"filenames"])
    assert ds.image_names("test") is None


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()

"""Only regular files are read: FIFOs, devices, sockets and bad symlinks are named, never opened.

A FIFO would block a read forever and ``/dev/zero`` never ends, so the cases that could hang or
read gigabytes on a regression run the command in a subprocess with a timeout.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featmlp.data import load_dataset, read_images
from featmlp.errors import DataError

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="FIFOs, devices and symlinks as on POSIX")

TIMEOUT = 60  # a regression hangs (FIFO) or reads for long (/dev/zero): the subprocess is stopped


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _folder(root: Path, n: int = 4) -> Path:
    """root/cat and root/dog with n small PNGs each."""
    for k, c in enumerate(("cat", "dog")):
        (root / c).mkdir(parents=True)
        for i in range(n):
            (root / c / f"{i}.png").write_bytes(_png(10 * k + i))
    return root


def _featmlp(*args, cwd=None):
    """Run the command in a subprocess; (exit status, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", "featmlp.cli", *map(str, args)], capture_output=True, text=True,
                       timeout=TIMEOUT, cwd=cwd, env={**os.environ, "MPLBACKEND": "Agg"})
    return p.returncode, p.stdout, p.stderr


def _n_images(ds) -> int:
    return len(ds.train_images) + len(ds.test_images)


def _names(ds) -> set[str]:
    return set(ds.train_images.names) | set(ds.test_images.names)


# --------------------------------------------------------------------------- folders, in-process

@pytest.mark.parametrize("make, what", [
    (lambda p: os.symlink("nothere.png", p), "dangling symlink"),
    (lambda p: os.symlink(p.name, p), "symlink loop"),
    (lambda p: os.symlink("/dev/null", p), "character device"),
    (lambda p: os.symlink(p.parent.parent.parent / "elsewhere", p), "directory"),
])
def test_a_bad_symlink_in_a_class_folder_is_named_and_skip_bad_skips_it(tmp_path, make, what):
    root = _folder(tmp_path / "imgs")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.png").write_bytes(_png(99))
    make(root / "dog" / "bad.png")
    with pytest.raises(DataError, match=f"dog/bad.png: .*{what}.*--skip-bad") as e:
        load_dataset(root)
    assert "moved or deleted" not in str(e.value)
    ds = load_dataset(root, skip_bad=True)
    assert _n_images(ds) == 8
    assert [(f, what in reason) for f, reason in ds.skipped] == [("dog/bad.png", True)]


def test_a_symlink_to_a_regular_image_is_read(tmp_path):
    root = _folder(tmp_path / "imgs")
    (tmp_path / "outside.png").write_bytes(_png(42))
    os.symlink(tmp_path / "outside.png", root / "cat" / "linked.png")
    os.symlink("0.png", root / "dog" / "relative.png")
    ds = load_dataset(root, test_fraction=0.5)
    assert _n_images(ds) == 10 and not ds.skipped
    assert {"cat/linked.png", "dog/relative.png"} <= _names(ds)
    assert np.asarray(ds.train_images).shape[1:] == (8, 8, 3)


def test_a_class_folder_that_is_a_directory_symlink_is_named_not_dropped_in_silence(tmp_path):
    root = _folder(tmp_path / "imgs")
    _folder(tmp_path / "more")
    os.symlink(tmp_path / "more" / "cat", root / "bird")
    with pytest.raises(DataError, match="bird: a symlink to .*a directory"):
        load_dataset(root)
    ds = load_dataset(root, skip_bad=True)
    assert ds.class_names == ("cat", "dog") and [f for f, _ in ds.skipped] == ["bird"]


def test_fifos_devices_and_sockets_in_class_folders(tmp_path):
    root = _folder(tmp_path / "imgs")
    os.mkfifo(root / "cat" / "pipe.png")
    os.symlink("/dev/null", root / "cat" / "null.png")
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.bind(str(root / "dog" / "sock.png"))
        except OSError:
            pytest.skip("no Unix sockets here")
        with pytest.raises(DataError, match=r"cat/null.png: .*character device.*\(and 2 more such files\)"):
            load_dataset(root)
        ds = load_dataset(root, skip_bad=True)
    assert _n_images(ds) == 8
    assert dict(ds.skipped).keys() == {"cat/pipe.png", "cat/null.png", "dog/sock.png"}
    reasons = dict(ds.skipped)
    assert "FIFO" in reasons["cat/pipe.png"] and "socket" in reasons["dog/sock.png"]


def test_special_files_beside_the_classes_are_ignored_like_any_file_there(tmp_path):
    root = _folder(tmp_path / "imgs")
    os.mkfifo(root / "README")  # ROOT/README is never read
    os.symlink("nothere", root / "LICENSE")
    ds = load_dataset(root)
    assert _n_images(ds) == 8 and not ds.skipped


def test_a_split_layout_with_a_fifo_in_test(tmp_path):
    root = tmp_path / "imgs"
    _folder(root / "train")
    _folder(root / "test", n=2)
    os.mkfifo(root / "test" / "dog" / "pipe.jpg")
    with pytest.raises(DataError, match="test/dog/pipe.jpg: a FIFO"):
        load_dataset(root)
    ds = load_dataset(root, skip_bad=True)
    assert (len(ds.train_images), len(ds.test_images)) == (8, 4)


def test_a_file_replaced_by_a_fifo_after_listing_is_refused_unread(tmp_path):
    root = _folder(tmp_path / "imgs")
    ds = load_dataset(root, test_fraction=0.5)
    name = ds.train_images.names[0]
    (root / name).unlink()
    os.mkfifo(root / name)  # opened without blocking, refused from its fstat
    with pytest.raises(DataError, match=f"{name}: a FIFO"):
        np.asarray(ds.train_images)


def test_skip_bad_skips_a_file_that_cannot_be_opened(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads files without permission")
    root = _folder(tmp_path / "imgs")
    (root / "cat" / "0.png").chmod(0)
    with pytest.raises(DataError, match="cat/0.png"):
        load_dataset(root)
    ds = load_dataset(root, skip_bad=True)
    assert [f for f, _ in ds.skipped] == ["cat/0.png"] and _n_images(ds) == 7


def test_read_images_refuses_special_files(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    for path, what in ((tmp_path / "pipe.png", "FIFO"), ("/dev/null", "character device"), (tmp_path, "directory")):
        with pytest.raises(DataError, match=what):
            read_images([path])


# --------------------------------------------------------------------------- archives

def _add(tf, name, data=None, **fields):
    info = tarfile.TarInfo(name)
    for k, v in fields.items():
        setattr(info, k, v)
    if data is None:
        tf.addfile(info)
    else:
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))


_IMAGES = {f"{c}/{i}.png": _png(10 * k + i) for k, c in enumerate(("cat", "dog")) for i in range(4)}


@pytest.mark.parametrize("mode, ext", [("w:", "tar"), ("w:gz", "tar.gz")])
def test_a_hard_link_in_a_tar_is_read_as_its_target(tmp_path, mode, ext):
    with tarfile.open(tmp_path / f"a.{ext}", mode) as tf:
        for name, data in _IMAGES.items():
            _add(tf, name, data)
        _add(tf, "dog/same.png", type=tarfile.LNKTYPE, linkname="cat/0.png")
    ds = load_dataset(tmp_path / f"a.{ext}", test_fraction=0.5)
    assert _n_images(ds) == 9 and "dog/same.png" in _names(ds)
    images = {n: a for split in (ds.train_images, ds.test_images) for n, a in zip(split.names, np.asarray(split))}
    assert np.array_equal(images["dog/same.png"], images["cat/0.png"])


@pytest.mark.parametrize("mode, ext", [("w:", "tar"), ("w:gz", "tar.gz")])
def test_links_devices_and_fifos_in_a_tar_are_named_and_skipped(tmp_path, mode, ext):
    with tarfile.open(tmp_path / f"b.{ext}", mode) as tf:
        for name, data in _IMAGES.items():
            _add(tf, name, data)
        _add(tf, "dog/sym.png", type=tarfile.SYMTYPE, linkname="../cat/0.png")
        _add(tf, "dog/pipe.png", type=tarfile.FIFOTYPE)
        _add(tf, "cat/zero.png", type=tarfile.CHRTYPE, devmajor=1, devminor=5)
        _add(tf, "cat/lost.png", type=tarfile.LNKTYPE, linkname="nothere.png")
        _add(tf, "README", type=tarfile.FIFOTYPE)  # beside the classes: ignored
    with pytest.raises(DataError, match=r"dog/sym.png: a symlink to ../cat/0.png.*\(and 3 more such files\)"):
        load_dataset(tmp_path / f"b.{ext}")
    ds = load_dataset(tmp_path / f"b.{ext}", skip_bad=True)
    assert _n_images(ds) == 8
    reasons = dict(ds.skipped)
    assert reasons.keys() == {"dog/sym.png", "dog/pipe.png", "cat/zero.png", "cat/lost.png"}
    assert "FIFO" in reasons["dog/pipe.png"] and "character device" in reasons["cat/zero.png"]
    assert "hard link to nothere.png" in reasons["cat/lost.png"]


def test_a_symlink_stored_in_a_zip_is_named(tmp_path):
    with zipfile.ZipFile(tmp_path / "c.zip", "w") as zf:
        for name, data in _IMAGES.items():
            zf.writestr(name, data)
        info = zipfile.ZipInfo("dog/sym.png")
        info.create_system, info.external_attr = 3, 0o120777 << 16
        zf.writestr(info, "../cat/0.png")
    with pytest.raises(DataError, match="dog/sym.png: a symlink stored in the zip"):
        load_dataset(tmp_path / "c.zip")
    assert [f for f, _ in load_dataset(tmp_path / "c.zip", skip_bad=True).skipped] == ["dog/sym.png"]


# --------------------------------------------------------------------------- the commands

def test_extract_names_a_fifo_and_a_dev_zero_symlink_at_once_and_skip_bad_skips_them(tmp_path):
    root = _folder(tmp_path / "imgs")
    os.mkfifo(root / "cat" / "pipe.png")
    os.symlink("/dev/zero", root / "dog" / "zero.png")
    os.symlink("nothere.png", root / "dog" / "dangling.png")
    code, out, err = _featmlp("extract", root, "-o", tmp_path / "f.npz", "-q")
    assert code == 1 and "Traceback" not in err
    assert err.startswith("error: cannot read image cat/pipe.png: a FIFO") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "f.npz").exists()
    code, out, err = _featmlp("extract", root, "-o", tmp_path / "f.npz", "-q", "--skip-bad")
    assert code == 0, err
    assert "skipped 3 unreadable files" in err and "cat/pipe.png" in err and "dog/zero.png" in err
    with np.load(tmp_path / "f.npz") as f:
        assert len(f["y_train"]) + len(f["y_test"]) == 8


def test_a_source_that_is_a_fifo_or_a_device(tmp_path):
    os.mkfifo(tmp_path / "data.tar")
    os.symlink("/dev/zero", tmp_path / "zero.tar")
    for source, what in (("data.tar", "a FIFO"), ("zero.tar", "a character device")):
        code, out, err = _featmlp("extract", tmp_path / source, "-o", tmp_path / "f.npz", "-q")
        assert code == 1 and "Traceback" not in err and what in err, err


def test_predict_names_each_special_file_and_classifies_the_others(tmp_path):
    root = _folder(tmp_path / "imgs")
    assert _featmlp("extract", root, "-o", tmp_path / "f.npz", "-q")[0] == 0
    code, _, err = _featmlp("train", tmp_path / "f.npz", "--out", tmp_path / "run", "--epochs", "1", "-q")
    assert code == 0, err
    os.mkfifo(tmp_path / "pipe.png")
    os.symlink("/dev/zero", tmp_path / "zero.png")
    os.symlink("nothere.png", tmp_path / "dangling.png")
    os.symlink("loop.png", tmp_path / "loop.png")
    os.symlink(root / "cat", tmp_path / "dirlink.png")
    os.symlink(root / "dog" / "1.png", tmp_path / "good.png")
    bad = ["pipe.png", "zero.png", "dangling.png", "loop.png"]
    code, out, err = _featmlp("predict", tmp_path / "run", root / "cat" / "0.png", *bad, "dirlink.png", "good.png",
                              cwd=tmp_path)
    assert code == 1 and "Traceback" not in err
    # a folder named is walked, through a symlink too: its images are classified
    assert [line.split("\t")[0] for line in out.splitlines()] == \
        [str(root / "cat" / "0.png")] + [f"dirlink.png/{i}.png" for i in range(4)] + ["good.png"]
    lines = err.strip().splitlines()
    assert [line.split(":")[1].strip() for line in lines] == bad
    for line, what in zip(lines, ("FIFO", "character device", "dangling symlink", "symlink loop")):
        assert line.startswith("error: ") and what in line, line


def test_a_file_url_names_special_files_and_follows_symlinks_to_images(tmp_path):
    root = _folder(tmp_path / "imgs")
    os.mkfifo(root / "cat" / "pipe.png")
    os.symlink("nothere.png", root / "dog" / "dangling.png")
    os.symlink(root / "cat" / "0.png", root / "dog" / "linked.png")
    url = root.as_uri()
    with pytest.raises(DataError, match=r"cat/pipe.png: a FIFO .*\(and 1 more such file\)"):
        load_dataset(url)
    ds = load_dataset(url, skip_bad=True, test_fraction=0.5)
    assert [f for f, _ in ds.skipped] == ["cat/pipe.png", "dog/dangling.png"]
    assert _n_images(ds) == 9 and "dog/linked.png" in _names(ds)


def test_a_fifo_among_tar_shards_is_named_and_skip_bad_skips_it(tmp_path):
    root = tmp_path / "shards"
    root.mkdir()
    for k in range(2):
        with tarfile.open(root / f"shard-{k}.tar", "w") as tf:
            for name, data in _IMAGES.items():
                _add(tf, name.replace("/", f"/{k}-"), data)  # cat/0-0.png ...
    os.mkfifo(root / "shard-2.tar")
    with pytest.raises(DataError, match="shard-2.tar: a FIFO"):
        load_dataset(root)
    ds = load_dataset(root, skip_bad=True)
    assert [f for f, _ in ds.skipped] == ["shard-2.tar"] and _n_images(ds) == 16
    assert ds.class_names == ("cat", "dog")


def test_a_feature_file_that_is_a_fifo_or_a_device(tmp_path):
    os.mkfifo(tmp_path / "pipe.npz")
    os.symlink("/dev/zero", tmp_path / "zero.npz")
    for name, what in (("pipe.npz", "a FIFO"), ("zero.npz", "a symlink to /dev/zero: a character device")):
        code, _, err = _featmlp("train", tmp_path / name, "--out", tmp_path / "run", "-q")
        assert code == 1 and "Traceback" not in err and what in err and "does not exist" not in err, err

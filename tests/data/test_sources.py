"""Sources that stream: tar shards, fsspec URLs (S3 served by moto on 127.0.0.1), batched reads,
portable chunks and the one-line errors of remote storage.

Every dataset is checked against independent references: the same images loaded from a plain
local folder, and Pillow's decoding of the original files.
"""

from __future__ import annotations

import io
import pickle
import re
import socket
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from featmlp.data import load_dataset
from featmlp.errors import ConfigError, DataError

from _files import CLASSES, N_PER_CLASS, source_files, source_image, upload, write_folder



def _tar_bytes(members: dict[str, bytes], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _shardsource_files(files: dict[str, bytes], dotted: bool, per_shard: int = 4) -> dict[str, bytes]:
    """The images of ``files`` as tar shards of ``per_shard`` members (``<key>.<class>.<ext>`` or
    ``<class>/<key>.<ext>``), in train/ and test/ when ``files`` has that split."""
    by_split: dict[str, list] = {}
    for name, data in sorted(files.items()):
        parts = name.split("/")
        split = parts[0] if len(parts) == 3 else ""
        cls, base = parts[-2], parts[-1]
        key, ext = base.split(".")
        member = f"{cls}{key}.{cls}.{ext}" if dotted else f"{cls}/{key}.{ext}"
        by_split.setdefault(split, []).append((member, data))
    shards = {}
    for split, members in by_split.items():
        for s in range(0, len(members), per_shard):
            shards[f"{split + '/' if split else ''}shard-{s // per_shard:03d}.tar"] = _tar_bytes(dict(members[s:s + per_shard]))
    return shards


def _png_of_size(size) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (9, 9, 9)).save(buf, "PNG")
    return buf.getvalue()


def _pillow(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _same(ds, ref) -> None:
    """Same class names, and each split the same multiset of (label, pixels) as the reference."""
    assert ds.class_names == ref.class_names
    for split in ("train", "test"):
        got = sorted((int(y), x.tobytes()) for x, y in zip(np.asarray(getattr(ds, f"{split}_images")),
                                                             getattr(ds, f"{split}_labels")))
        want = sorted((int(y), x.tobytes()) for x, y in zip(np.asarray(getattr(ref, f"{split}_images")),
                                                              getattr(ref, f"{split}_labels")))
        assert got == want, split


def _pixels_match_pillow(ds, files: dict[str, bytes]) -> None:
    """Every image decodes to Pillow's pixels of the original file it came from (class, number)."""
    originals = {(name.split("/")[-2], re.findall(r"\d{3}", name)[-1]): _pillow(data) for name, data in files.items()}
    for split in ("train", "test"):
        images = getattr(ds, f"{split}_images")
        for name, x, y in zip(images.names, np.asarray(images), getattr(ds, f"{split}_labels")):
            number = re.findall(r"\d{3}", name.rsplit(":", 1)[-1])[-1]
            assert np.array_equal(x, originals[(ds.class_names[y], number)]), name


# --------------------------------------------------------------------------- tar shards on disk

@pytest.mark.parametrize("dotted", [True, False], ids=["key.class.ext", "class-folder"])
@pytest.mark.parametrize("split", [True, False], ids=["train-test", "no-split"])
def test_tar_shards_give_the_folder_dataset(tmp_path, dotted, split):
    files = source_files(split)
    ref = load_dataset(write_folder(tmp_path / "folder", files), test_fraction=0.4, seed=3)
    shards = write_folder(tmp_path / "shards", _shardsource_files(files, dotted))
    ds = load_dataset(shards, test_fraction=0.4, seed=3)
    _same(ds, ref)
    _pixels_match_pillow(ds, files)
    assert ds.train_images.digests_from == "listing"
    assert "tar shards" in ds.source
    # Shard by shard, member by member: the order a sequential reader of the shards sees.
    assert list(ds.train_images.names) == sorted(ds.train_images.names)


def test_shards_are_listed_from_headers_only(tmp_path, monkeypatch):
    files = source_files(False)
    shards = write_folder(tmp_path / "shards", _shardsource_files(files, True))
    from featmlp.data import _archive

    reads = []
    real = _archive.FileStore.read_spans
    monkeypatch.setattr(_archive.FileStore, "read_spans", lambda self, spans: reads.append(spans) or real(self, spans))
    ds = load_dataset(shards)
    first = _tar_bytes({})  # an empty tar: the first member's bytes follow its 512-byte header
    assert len(reads) == 1 and reads[0][0][0] == 512 and len(first) > 0  # the first image, for the size
    assert len(ds.train_images) + len(ds.test_images) == len(files)


def test_shard_member_without_class_is_one_clear_error(tmp_path):
    root = tmp_path / "shards"
    root.mkdir()
    (root / "shard-000.tar").write_bytes(_tar_bytes({"0001.ant.png": source_image(1, "PNG"), "0002.png": source_image(2, "PNG"),
                                                     "0003.bee.png": source_image(3, "PNG")}))
    with pytest.raises(DataError, match="cannot tell the class of shard-000.tar:0002.png"):
        load_dataset(root)


def test_fingerprint_of_a_listing_differs_from_content_hashes(tmp_path):
    from featmlp.data import fingerprint

    files = source_files(True)
    folder = load_dataset(write_folder(tmp_path / "folder", files))
    shards = load_dataset(write_folder(tmp_path / "shards", _shardsource_files(files, True)))
    assert folder.train_images.digests_from == "content"
    assert fingerprint(folder) != fingerprint(shards)
    assert fingerprint(shards) == fingerprint(load_dataset(tmp_path / "shards"))


# --------------------------------------------------------------------------- batched reads

def test_a_chunk_of_a_tar_shard_is_one_container_read(tmp_path, monkeypatch):
    files = source_files(True)
    root = write_folder(tmp_path / "shards", _shardsource_files(files, True, per_shard=100))
    ds = load_dataset(root)
    from featmlp.data import _archive

    calls = []
    real = _archive.FileStore.read_spans
    monkeypatch.setattr(_archive.FileStore, "read_spans", lambda self, spans: calls.append(spans) or real(self, spans))
    chunk = ds.train_images[:]
    assert len(calls) == 1 and len(calls[0]) == 1  # one open, one contiguous range
    assert len(chunk) == len(ds.train_images) == 12


def test_a_chunk_of_fsspec_files_is_one_cat_call(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    files = source_files(False)
    fs = fsspec.filesystem("memory")
    for name, data in files.items():
        fs.pipe(f"/chunky/{name}", data)
    calls = []
    real = type(fs).cat_ranges
    type_ = type(fs)
    try:
        type_.cat_ranges = lambda self, paths, *a, **k: calls.append(list(paths)) or real(self, paths, *a, **k)
        ds = load_dataset("memory://chunky", test_fraction=0.4)
        calls.clear()
        x = ds.train_images[:]
        assert len(calls) == 1 and len(calls[0]) == len(x) == 9
        _same(ds, load_dataset(write_folder(tmp_path / "folder", files), test_fraction=0.4))
    finally:
        type_.cat_ranges = real
        fs.rm("/chunky", recursive=True)


def test_read_errors_still_name_the_file(tmp_path):
    files = source_files(False)
    root = write_folder(tmp_path / "folder", files)
    tar = tmp_path / "d.tar"
    tar.write_bytes(_tar_bytes(files))
    ds = load_dataset(tar, test_fraction=0.4)
    with open(tar, "r+b") as f:  # cut the archive after listing
        f.truncate(2000)
    with pytest.raises(DataError, match=r"d.tar:ant/\d+\.\w+: only \d+ of its \d+ bytes"):
        ds.train_images[:]
    del root


# --------------------------------------------------------------------------- other fsspec URLs

@pytest.fixture
def memory_fs():
    """fsspec's in-memory filesystem (shared by the process): the test writes under /t, removed after."""
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    yield fs
    if fs.exists("/t"):
        fs.rm("/t", recursive=True)


def test_file_url_gives_the_folder_dataset(tmp_path):
    pytest.importorskip("fsspec")
    files = source_files(True)
    root = write_folder(tmp_path / "folder", files)
    ds = load_dataset(root.as_uri())
    _same(ds, load_dataset(root))
    _pixels_match_pillow(ds, files)


def test_remote_image_of_another_size_is_resized_to_the_first_images_when_decoded(memory_fs):
    files = source_files(False)
    files["bee/003.png"] = _png_of_size((20, 8))
    memory_fs.pipe({f"/t/{name}": data for name, data in files.items()})
    ds = load_dataset("memory://t", test_fraction=0.4)  # only the first image's header is read
    images = {**dict(zip(ds.train_images.names, ds.train_images)), **dict(zip(ds.test_images.names, ds.test_images))}
    assert {a.shape for a in images.values()} == {(10, 12, 3)}
    odd = Image.open(io.BytesIO(files["bee/003.png"])).convert("RGB")
    np.testing.assert_array_equal(images["bee/003.png"], np.asarray(odd.resize((12, 10), Image.Resampling.BILINEAR)))
    resized = load_dataset("memory://t", test_fraction=0.4, image_size=(12, 10))
    assert np.asarray(resized.train_images).shape[1:] == (10, 12, 3)


def test_skip_bad_on_a_url_reads_every_file(memory_fs):
    files = source_files(False)
    memory_fs.pipe({f"/t/{name}": data for name, data in files.items()})
    memory_fs.pipe("/t/bee/README.txt", b"notes")
    with pytest.raises(DataError, match="cannot read image bee/README.txt: not a readable image"):
        np.asarray(load_dataset("memory://t", test_fraction=0.4).train_images)
    ds = load_dataset("memory://t", test_fraction=0.4, skip_bad=True)
    assert ds.skipped == (("bee/README.txt", "not an image"),)
    assert ds.train_images.digests_from == "content"
    _pixels_match_pillow(ds, files)


def test_remote_tar_damaged_after_its_last_member(memory_fs):
    data = bytearray(_tar_bytes(source_files(False)))
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tf:
        tf.getmembers()
        end = tf.offset  # the end-of-archive marker
    data[end + 700] = 1  # in the padding after the end-of-archive marker
    memory_fs.pipe("/t/d.tar", bytes(data))
    with pytest.raises(DataError, match=f"d.tar is damaged at byte {end + 700:,} of the archive"):
        load_dataset("memory://t/d.tar")


# --------------------------------------------------------------------------- portable chunks

def _portable_roundtrip(images) -> None:
    chunk = images.take(np.arange(len(images))[::2])
    copy = pickle.loads(pickle.dumps(chunk.portable()))
    assert copy.names == chunk.names
    assert np.array_equal(np.asarray(copy), np.asarray(chunk))


@pytest.mark.parametrize("kind", ["folder", "tar", "tar.gz", "zip", "shards"])
def test_portable_chunks_pickle_and_decode_the_same(tmp_path, kind):
    files = source_files(False)
    if kind == "folder":
        source = write_folder(tmp_path / "d", files)
    elif kind == "shards":
        source = write_folder(tmp_path / "d", _shardsource_files(files, True))
    else:
        source = tmp_path / f"d.{kind}"
        source.write_bytes(_zip_bytes(files) if kind == "zip" else _tar_bytes(files, "w:gz" if kind == "tar.gz" else "w"))
    ds = load_dataset(source, test_fraction=0.4)
    travels = kind in ("folder", "tar", "shards")
    assert (ds.train_images.portable() is ds.train_images) == travels
    if not travels:
        with pytest.raises(TypeError, match="portable"):
            pickle.dumps(ds.train_images)
    _portable_roundtrip(ds.train_images)
    _portable_roundtrip(ds.test_images)


def test_portable_chunks_decode_in_another_process(tmp_path):
    import concurrent.futures
    import multiprocessing

    files = source_files(False)
    tgz = tmp_path / "d.tar.gz"
    tgz.write_bytes(_tar_bytes(files, "w:gz"))
    shards = write_folder(tmp_path / "shards", _shardsource_files(files, True))
    chunks = [load_dataset(s, test_fraction=0.4).train_images.take([0, 3, 5]) for s in (tgz, shards)]
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        got = list(pool.map(np.asarray, [c.portable() for c in chunks]))
    for chunk, x in zip(chunks, got):
        assert np.array_equal(x, np.asarray(chunk))


# --------------------------------------------------------------------------- S3 (moto on 127.0.0.1)

@pytest.mark.parametrize("split", [True, False], ids=["train-test", "no-split"])
def test_s3_folder_gives_the_local_folder_dataset_and_features(tmp_path, s3, split):
    from featmlp import extract_features

    fs, options = s3
    files = source_files(split)
    upload(fs, "imgs", files)
    ref = load_dataset(write_folder(tmp_path / "folder", files), test_fraction=0.4, seed=1)
    ds = load_dataset("s3://bucket/imgs/", storage_options=options, test_fraction=0.4, seed=1)
    assert ds.train_images.names == ref.train_images.names
    assert np.array_equal(ds.train_labels, ref.train_labels) and np.array_equal(ds.test_labels, ref.test_labels)
    assert np.array_equal(np.asarray(ds.train_images), np.asarray(ref.train_images))
    assert np.array_equal(np.asarray(ds.test_images), np.asarray(ref.test_images))
    _pixels_match_pillow(ds, files)
    assert ds.train_images.digests_from == "listing" and "s3://bucket/imgs/" in ds.source
    for split_name in ("train", "test"):
        a = extract_features(getattr(ds, f"{split_name}_images"), "lecture")
        b = extract_features(getattr(ref, f"{split_name}_images"), "lecture")
        assert np.array_equal(a, b)


def test_s3_listing_reads_only_the_first_image(s3, monkeypatch):
    fs, options = s3
    upload(fs, "imgs", source_files(False))
    from featmlp.data import _remote

    fetched = []
    real = _remote.FsFiles.read_many
    monkeypatch.setattr(_remote.FsFiles, "read_many", lambda self, blobs: fetched.extend(blobs) or real(self, blobs))
    load_dataset("s3://bucket/imgs", storage_options=options)
    assert len(fetched) == 1


def test_s3_listing_is_not_left_in_the_filesystem_cache(s3):
    # s3fs keeps what find listed (about 1 kB an object) in the filesystem instance, which fsspec
    # keeps: packed into the dataset's manifest, it must not stay there too.
    import fsspec.core

    fs, options = s3
    upload(fs, "imgs", source_files(True))
    fs.dircache["bucket/other"] = []  # a listing of something else stays
    ds = load_dataset("s3://bucket/imgs/", storage_options=options)
    same, _ = fsspec.core.url_to_fs("s3://bucket/imgs/", **options)
    assert [k for k in same.dircache if k.startswith("bucket/imgs")] == []
    assert "bucket/other" in same.dircache
    assert len(ds.train_images) + len(ds.test_images) == len(CLASSES) * N_PER_CLASS


@pytest.mark.parametrize("kind", ["tar", "tar.gz", "zip"])
def test_s3_archive(tmp_path, s3, kind):
    fs, options = s3
    files = source_files(True)
    data = _zip_bytes(files) if kind == "zip" else _tar_bytes(files, "w:gz" if kind == "tar.gz" else "w")
    fs.pipe(f"bucket/a/data.{kind}", data)
    ds = load_dataset(f"s3://bucket/a/data.{kind}", storage_options=options)
    ref = load_dataset(write_folder(tmp_path / "folder", files))
    _same(ds, ref)
    _pixels_match_pillow(ds, files)
    assert f"s3://bucket/a/data.{kind}" in ds.source
    _portable_roundtrip(ds.train_images)


@pytest.mark.parametrize("split", [True, False], ids=["train-test", "no-split"])
def test_s3_tar_shards(tmp_path, s3, split):
    fs, options = s3
    files = source_files(split)
    upload(fs, "shards", _shardsource_files(files, dotted=True))
    ref = load_dataset(write_folder(tmp_path / "folder", files), test_fraction=0.4, seed=2)
    ds = load_dataset("s3://bucket/shards/", storage_options=options, test_fraction=0.4, seed=2)
    _same(ds, ref)
    _pixels_match_pillow(ds, files)
    _portable_roundtrip(ds.train_images)
    assert ds.train_images.portable() is ds.train_images
    if not split:
        pattern = load_dataset("s3://bucket/shards/shard-{000..003}.tar", storage_options=options,
                               test_fraction=0.4, seed=2)
        _same(pattern, ref)
        globbed = load_dataset("s3://bucket/shards/*.tar", storage_options=options, test_fraction=0.4, seed=2)
        _same(globbed, ref)


def test_s3_portable_chunk_pickles(s3):
    fs, options = s3
    upload(fs, "imgs", source_files(False))
    ds = load_dataset("s3://bucket/imgs", storage_options=options)
    assert ds.train_images.portable() is ds.train_images
    _portable_roundtrip(ds.train_images)


# --------------------------------------------------------------------------- one-line errors

def _one_line(e: BaseException) -> str:
    text = str(e)
    assert "\n" not in text and "Traceback" not in text
    return text


def test_missing_bucket_and_prefix(s3):
    fs, options = s3
    upload(fs, "imgs", source_files(False))
    with pytest.raises(DataError) as e:
        load_dataset("s3://no-such-bucket/imgs/", storage_options=options)
    assert "no such bucket" in _one_line(e.value) and "check the URL" in str(e.value)
    with pytest.raises(DataError) as e:
        load_dataset("s3://bucket/nothing-here/", storage_options=options)
    assert "no files there" in _one_line(e.value)
    with pytest.raises(DataError) as e:
        load_dataset("s3://bucket/missing.tar", storage_options=options)
    assert "no such bucket" in _one_line(e.value)


def test_bad_credentials(s3, monkeypatch):
    import moto.settings

    fs, options = s3
    upload(fs, "imgs", source_files(False))
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # moto checks keys from now on
    with pytest.raises(DataError) as e:
        load_dataset("s3://bucket/imgs/", storage_options={**options, "key": "wrong", "secret": "wrong"})
    text = _one_line(e.value)
    assert "access refused" in text and "--storage-option key=" in text


def test_network_error_is_quick_and_one_line():
    pytest.importorskip("s3fs")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends
    options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "k", "secret": "s",
               "config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}},
               "skip_instance_cache": True}
    with pytest.raises(DataError) as e:
        load_dataset("s3://bucket/imgs/", storage_options=options)
    assert "cannot reach the storage service" in _one_line(e.value) and "endpoint_url" in str(e.value)


def test_protocol_not_installed_or_unknown(monkeypatch):
    import importlib

    registry = importlib.import_module("fsspec.registry")  # the module: fsspec.registry is also a mapping
    # As when gcsfs is not installed, whether or not it is here.
    monkeypatch.setitem(registry.known_implementations, "gs",
                        {"class": "featmlp_no_such_module.GCSFileSystem", "err": "Please install gcsfs to access Google Storage"})
    monkeypatch.delitem(registry._registry, "gs", raising=False)
    with pytest.raises(DataError) as e:
        load_dataset("gs://bucket/imgs/")
    assert "pip install 'featmlp[cloud]'" in _one_line(e.value)
    with pytest.raises(DataError, match="unknown protocol nope://"):
        load_dataset("nope://bucket/imgs/")


def test_storage_options_are_checked():
    with pytest.raises(ConfigError, match="only apply to a URL"):
        load_dataset("sample", storage_options={"anon": True})
    with pytest.raises(ConfigError, match="must be a dict"):
        load_dataset("memory://x", storage_options=["anon"])


def test_cli_errors_are_one_line(s3, run_cli, tmp_path):
    fs, options = s3
    out = tmp_path / "x.npz"
    code, stdout, err = run_cli(["extract", "s3://no-such-bucket/imgs/", "-o", out, "-q",
                                 "--storage-option", f"endpoint_url={options['endpoint_url']}",
                                 "--storage-option", "key=testing", "--storage-option", "secret=testing"])
    assert code == 1 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "no such bucket" in err
    assert not out.exists()


@pytest.mark.parametrize("command", [["run", "--data"], ["lecture", "--data"]])
def test_cli_run_passes_storage_options_on(s3, run_cli, tmp_path, command):
    fs, options = s3
    code, _, err = run_cli([*command, "s3://no-such-bucket/imgs/", "--out", tmp_path / "run",
                            "--storage-option", f"endpoint_url={options['endpoint_url']}"])
    # "no such bucket" comes from the moto server: the endpoint reached load_dataset
    assert code == 1 and err.startswith("error: ") and "no such bucket" in err and len(err.strip().splitlines()) == 1


def test_cli_reads_s3_with_storage_options(s3, run_cli, tmp_path):
    fs, options = s3
    files = source_files(True)
    upload(fs, "imgs", files)
    out, ref_out = tmp_path / "s3.npz", tmp_path / "local.npz"
    code, stdout, err = run_cli(["extract", "s3://bucket/imgs", "-o", out, "-q",
                                 "--storage-option", f"endpoint_url={options['endpoint_url']}",
                                 "--storage-option", "key=testing", "--storage-option", "secret=testing",
                                 "--storage-option", 'config_kwargs={"connect_timeout": 5}'])
    assert code == 0, err
    code, _, err = run_cli(["extract", write_folder(tmp_path / "folder", files), "-o", ref_out, "-q"])
    assert code == 0, err
    with np.load(out) as a, np.load(ref_out) as b:
        for key in ("X_train", "y_train", "X_test", "y_test", "class_names"):
            assert np.array_equal(a[key], b[key]), key


def test_cli_storage_option_must_be_key_value(run_cli):
    code, _, err = run_cli(["extract", "memory://x", "--storage-option", "novalue"])
    assert code == 2 and "KEY=VALUE" in err


# -- list_images: the images of any mix of sources, for predict --------------------------------

def test_list_images_names_every_image_and_decodes_each_on_its_own(tmp_path):
    from featmlp.data import list_images

    pngs = [_png_of_size((5 + i, 4)) if i % 2 else source_image(i, "PNG") for i in range(4)]
    root = write_folder(tmp_path / "photos", {"b.png": pngs[0], "a.png": pngs[1], "sub/c.png": pngs[2],
                                               "notes.txt": b"not an image", "sub/shard.tar": _tar_bytes(
                                                   {"000.cat.png": pngs[3], "000.json": b"{}"})})
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    loose = tmp_path / "loose.jpg"
    loose.write_bytes(source_image(9, "JPEG"))
    with pytest.warns(UserWarning, match=r"^left out 1 file whose names are not those of images \(.*notes.txt\)$"):
        images = list_images([root, loose, tmp_path / "broken.png", tmp_path / "absent.png"])
    assert images.names == (f"{root}/a.png", f"{root}/b.png", f"{root}/sub/c.png",
                            f"{root}/sub/shard.tar:000.cat.png", str(loose), str(tmp_path / "broken.png"),
                            str(tmp_path / "absent.png"))
    decoded = images.decode_each(range(len(images)))
    # independent reference: Pillow on the original bytes, each at its own size
    for got, data in zip(decoded, [pngs[1], pngs[0], pngs[2], pngs[3], loose.read_bytes()]):
        np.testing.assert_array_equal(got, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    assert [str(e) for e in decoded[5:]] == [
        f"cannot read image {tmp_path / 'broken.png'}: not a readable image (Pillow cannot identify it)",
        f"cannot read image {tmp_path / 'absent.png'}: no such file"]
    resized = list_images(root / "sub", image_size=(6, 5))  # a shard's other members (000.json) go unsaid
    assert resized.shape == (2, 5, 6, 3) and np.asarray(resized).shape == (2, 5, 6, 3)

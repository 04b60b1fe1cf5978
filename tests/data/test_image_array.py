"""Bounded memory: image files decoded chunk by chunk, size caps checked on headers."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from featmlp.data import ImageArray, fingerprint, load_dataset
from featmlp.errors import DataError

from _files import write_folder, write_tar


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _files(n=5, size=(20, 16), seed=0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    return {f"{split}/{c}/{i:02d}.png": _png(Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), np.uint8)))
            for split in ("train", "test") for c in ("ant", "bee", "cow") for i in range(n)}


def test_image_array_behaves_like_the_decoded_array(tmp_path):
    files = _files()
    ds = load_dataset(write_folder(tmp_path / "d", files))
    lazy = ds.train_images
    assert isinstance(lazy, ImageArray)
    full = np.asarray(lazy)
    # independent reference: Pillow on the files, in class then name order
    ref = np.stack([np.asarray(Image.open(io.BytesIO(files[n]))) for n in sorted(files) if n.startswith("train/")])
    np.testing.assert_array_equal(full, ref)
    assert lazy.shape == full.shape == (15, 16, 20, 3) and lazy.dtype == np.uint8 and lazy.ndim == 4
    assert len(lazy) == 15
    np.testing.assert_array_equal(lazy[3], full[3])
    np.testing.assert_array_equal(lazy[-1], full[-1])
    np.testing.assert_array_equal(lazy[2:9:3], full[2:9:3])
    np.testing.assert_array_equal(lazy[[4, 0, 4]], full[[4, 0, 4]])
    np.testing.assert_array_equal(lazy[np.arange(15) % 2 == 0], full[::2])
    np.testing.assert_array_equal(lazy[1, 2:4, 5], full[1, 2:4, 5])
    np.testing.assert_array_equal(lazy[:3, 0, 0], full[:3, 0, 0])
    np.testing.assert_array_equal(np.asarray(lazy.take([5, 1])), full[[5, 1]])
    np.testing.assert_array_equal(np.concatenate(list(lazy.chunks(4))), full)
    np.testing.assert_array_equal(np.stack(list(lazy)), full)
    with pytest.raises(IndexError):
        lazy[15]


def test_same_files_from_folder_and_archives_have_one_fingerprint(tmp_path):
    files = _files()
    folder = load_dataset(write_folder(tmp_path / "d", files))
    tgz = load_dataset(write_tar(tmp_path / "d.tar.gz", files, "wrapped/"))
    with zipfile.ZipFile(tmp_path / "d.zip", "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    zipped = load_dataset(tmp_path / "d.zip")
    assert fingerprint(folder) == fingerprint(tgz) == fingerprint(zipped)
    # ... and it follows the content: one byte of one file, a name, the resize
    changed = dict(files)
    changed["test/cow/04.png"] = _png(Image.new("RGB", (20, 16), (1, 2, 3)))
    assert fingerprint(load_dataset(write_folder(tmp_path / "e", changed))) != fingerprint(folder)
    renamed = {k.replace("ant/00", "ant/99"): v for k, v in files.items()}
    assert fingerprint(load_dataset(write_folder(tmp_path / "r", renamed))) != fingerprint(folder)
    assert fingerprint(load_dataset(tmp_path / "d", image_size=(10, 8))) != fingerprint(folder)
    # images in memory still hash their pixels (and differ from the same images as files)
    from featmlp.data import Dataset
    eager = Dataset(np.asarray(folder.train_images), folder.train_labels, np.asarray(folder.test_images),
                    folder.test_labels, folder.class_names, "x")
    assert fingerprint(eager) != fingerprint(folder)


def test_mixed_sizes_are_read_on_headers_and_resized_to_the_most_common(tmp_path, monkeypatch):
    import featmlp.data._image_array as image_array_mod
    import featmlp.data._images as images_mod

    files = _files(n=3)
    odd = Image.fromarray(np.random.default_rng(5).integers(0, 256, (16, 30, 3), np.uint8))
    files["train/bee/77.png"] = _png(odd)
    decoded = []
    real = images_mod.decode_image
    for mod in (images_mod, image_array_mod):  # the listing's decoder and the lazy array's
        monkeypatch.setattr(mod, "decode_image", lambda *a, **k: decoded.append(a[1]) or real(*a, **k))
    with pytest.warns(UserWarning) as caught:
        ds = load_dataset(write_folder(tmp_path / "d", files))
    assert decoded == []  # sizes from the headers alone
    assert [str(w.message) for w in caught] == [
        "resized 1 of 19 images to 20x16 (width x height, Pillow bilinear), the most common of their 2 sizes; "
        "image_size=(W, H) chooses another size"]
    names = ds.train_images.names
    # independent reference: Pillow's own bilinear resize of that file; the others as they are
    np.testing.assert_array_equal(ds.train_images[names.index("train/bee/77.png")],
                                  np.asarray(odd.resize((20, 16), Image.Resampling.BILINEAR)))
    k = names.index("train/ant/00.png")
    np.testing.assert_array_equal(ds.train_images[k], np.asarray(Image.open(io.BytesIO(files["train/ant/00.png"]))))


def test_the_most_common_size_wins_ties_by_area_then_width():
    from collections import Counter

    from featmlp.data._images import common_size

    assert common_size(Counter({(92, 75): 1, (64, 64): 5, (32, 32): 4})) == (64, 64)  # (H, W)
    assert common_size(Counter({(10, 40): 2, (20, 30): 2})) == (20, 30)  # 600 px over 400
    assert common_size(Counter({(30, 20): 2, (20, 30): 2})) == (20, 30)  # same area: the wider


def test_exif_orientation_counts_in_the_header_size(tmp_path):
    files = _files(n=2, size=(40, 24))
    rotated = Image.new("RGB", (24, 40), (200, 0, 0))  # stored 24x40, shown 40x24
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    rotated.save(buf, "JPEG", exif=exif)
    files["train/ant/zz.jpg"] = buf.getvalue()
    ds = load_dataset(write_folder(tmp_path / "d", files))
    assert ds.train_images.shape == (7, 24, 40, 3)
    img = ds.train_images[2]
    assert img.shape == (24, 40, 3) and img[12, 20, 0] > 150


def test_a_member_over_the_size_cap_is_refused_on_its_header(tmp_path, monkeypatch):
    # A member whose header declares 2 GiB, and nothing behind it: only the header can say so.
    info = tarfile.TarInfo("train/ant/huge.png")
    info.size = 2 << 30
    raw = info.tobuf(tarfile.GNU_FORMAT)
    path = tmp_path / "bomb.tar.gz"
    path.write_bytes(gzip.compress(raw + bytes(4096)))
    with pytest.raises(DataError, match=r"bomb.tar.gz:train/ant/huge.png is 2,048.0 MiB, over the limit of "
                                        r"256.0 MiB per file.*FEATMLP_MAX_FILE_BYTES=2147483648"):
        load_dataset(path)
    # a real, small archive with one 300 kB member, refused with a small cap set in the environment
    files = _files(n=2)
    files["train/ant/big.bmp"] = b"BM" + bytes(300_000)
    small = write_tar(tmp_path / "s.tar.gz", files)
    monkeypatch.setenv("FEATMLP_MAX_FILE_BYTES", "100000")
    with pytest.raises(DataError, match="s.tar.gz:train/ant/big.bmp is 0.3 MiB, over the limit of 0.1 MiB"):
        load_dataset(small)
    with pytest.raises(DataError, match="big.bmp is 0.3 MiB, over the limit"):
        load_dataset(write_folder(tmp_path / "d", files))
    monkeypatch.delenv("FEATMLP_MAX_FILE_BYTES")
    with pytest.raises(DataError, match="big.bmp is 0.3 MiB"):
        load_dataset(small, max_file_bytes=100_000)


def test_an_image_over_the_pixel_cap_is_refused_before_decoding(tmp_path, monkeypatch):
    files = _files(n=2)
    files["train/bee/wide.png"] = _png(Image.new("1", (1000, 400)))
    root = write_folder(tmp_path / "d", files)
    with pytest.raises(DataError, match=r"cannot read image train/bee/wide.png: 1000x400 = 0.4 Mpx, over the limit "
                                        r"of 0.1 Mpx per image"):
        load_dataset(root, max_image_pixels=100_000, image_size=(20, 16))
    ds = load_dataset(root, max_image_pixels=100_000, image_size=(20, 16), skip_bad=True)
    assert [n for n, _ in ds.skipped] == ["train/bee/wide.png"]
    # the default: Pillow's MAX_IMAGE_PIXELS (89.5 Mpx), where Pillow itself only warns
    big = tmp_path / "b"
    write_folder(big, _files(n=2))
    Image.new("1", (10_000, 9_000)).save(big / "train" / "ant" / "bomb.png")  # 90 Mpx, 11 MB as pixels, 14 kB as PNG
    with pytest.raises(DataError, match=r"bomb.png: 10000x9000 = 90.0 Mpx, over the limit of 89.5 Mpx"):
        load_dataset(big, image_size=(20, 16))


def test_kmeans_fit_on_a_lazy_array_is_identical_and_chunked(tmp_path, monkeypatch):
    import featmlp.data._image_array as lazy_mod
    import featmlp.features.kmeans as km

    ds = load_dataset(write_folder(tmp_path / "d", _files(n=8)))
    lazy = ds.train_images
    full = np.asarray(lazy)
    settings = dict(k=8, patch_size=4, pool=2, n_patches=600, n_iter=3, seed=1)
    ref = km.KMeansFeatures(**settings).fit(full)

    sizes = []
    real = lazy_mod.ImageArray._decode
    monkeypatch.setattr(lazy_mod.ImageArray, "_decode", lambda self, idx: sizes.append(len(idx)) or real(self, idx))
    monkeypatch.setattr(km, "_FIT_CHUNK_BYTES", 5 * 20 * 16 * 3)  # 5 images per chunk
    got = km.KMeansFeatures(**settings).fit(lazy)
    assert sizes == [5, 5, 5, 5, 4]  # 24 images, one chunk at a time, each decoded once
    for attr in ("mean_", "whitening_", "centroids_"):
        np.testing.assert_array_equal(getattr(got, attr), getattr(ref, attr))
    assert got.objective_ == ref.objective_ and got.image_shape_ == ref.image_shape_


@pytest.mark.parametrize("mode, options", [("RGB", {}), ("RGB", {"progressive": True}), ("L", {}),
                                           ("CMYK", {}), ("RGB", {"quality": 95, "subsampling": 0})])
def test_header_sizes_agree_with_pillow(tmp_path, mode, options):
    # Sizes are read from JPEG frame / PNG IHDR headers without Pillow where possible: they must
    # be Pillow's, or the up-front size check would pass images that decode to another size.
    rng = np.random.default_rng(0)
    files = _files(n=2, size=(37, 21))
    for i, size in enumerate([(37, 21), (1, 1), (300, 17)]):
        img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
        buf = io.BytesIO()
        img.save(buf, "JPEG", **options)
        files[f"train/ant/j{i}.jpg"] = buf.getvalue()
    with pytest.warns(UserWarning, match=r"^resized 2 of 15 images to 37x21 "):  # the 1x1 and the 300x17
        mixed = load_dataset(write_folder(tmp_path / "d", files))
    # decoding checks each image against its header's size (or resizes it to 37x21): none disagrees
    assert np.asarray(mixed.train_images).shape == (9, 21, 37, 3)
    del files["train/ant/j1.jpg"], files["train/ant/j2.jpg"]
    ds = load_dataset(write_folder(tmp_path / "e", files))
    assert np.asarray(ds.train_images).shape == (7, 21, 37, 3)


@pytest.mark.parametrize("features", ["lecture", "hog+color"])
def test_extract_features_decodes_a_lazy_array_chunk_by_chunk(tmp_path, monkeypatch, features):
    from featmlp import extract_features

    lazy = load_dataset(write_folder(tmp_path / "d", _files())).train_images
    decoded = []
    real = ImageArray._decode
    monkeypatch.setattr(ImageArray, "_decode", lambda self, idx: decoded.append(len(idx)) or real(self, idx))
    X = extract_features(lazy, features, chunk_size=4)
    assert decoded == [4, 4, 4, 3]  # never more than a chunk decoded at once
    # the same rows as on the images decoded by Pillow
    reference = np.stack([np.asarray(Image.open(lazy_path)) for lazy_path in
                          sorted((tmp_path / "d" / "train").rglob("*.png"))])
    np.testing.assert_array_equal(X, extract_features(reference, features))
    empty = extract_features(lazy.take([]), features)
    assert empty.shape == (0, X.shape[1])


def test_exif_after_the_frame_header_still_rotates_the_listed_size():
    # An APP1 EXIF block placed after the frame header (legal, if unusual): the listed size must be
    # the rotated one, as decoding gives it, not the frame header's.
    from PIL import ImageOps

    from featmlp.data._decode import header_size as _header_size

    buf = io.BytesIO()
    Image.new("RGB", (30, 20), (9, 90, 200)).save(buf, "JPEG")
    data = buf.getvalue()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    payload = exif.tobytes()  # b"Exif\0\0" + the TIFF block
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    sof = next(i for i in range(2, len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xC0)
    end = sof + 2 + int.from_bytes(data[sof + 2:sof + 4], "big")
    moved = data[:end] + app1 + data[end:]
    with Image.open(io.BytesIO(moved)) as im:
        expected = ImageOps.exif_transpose(im).size
    assert expected == (20, 30)
    assert _header_size(moved) == expected

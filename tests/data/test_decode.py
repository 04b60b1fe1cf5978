"""JPEGs decoded by simplejpeg give Pillow's pixels; everything else still goes to Pillow."""

from __future__ import annotations

import io
import itertools
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from featmlp.data import load_dataset, read_images
from featmlp.data._decode import decode_image
from featmlp.errors import DataError

from _files import write_folder

simplejpeg = pytest.importorskip("simplejpeg")

CIFAR10_JPG = Path(__file__).parents[2] / "../shared/data/cifar10-jpg.tar.gz"


@pytest.fixture
def calls(monkeypatch):
    """How many times simplejpeg decoded pixels (the fast path taken)."""
    monkeypatch.delenv("FEATMLP_JPEG_DECODER", raising=False)
    seen = []
    real = simplejpeg.decode_jpeg

    def counting(*args, **kwargs):
        seen.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(simplejpeg, "decode_jpeg", counting)
    return seen


def _pillow(data: bytes, image_size=None) -> np.ndarray:
    """The independent reference: Pillow alone, as featmlp decoded before the fast path."""
    with Image.open(io.BytesIO(data)) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        if image_size is not None and im.size != image_size:
            im = im.resize(image_size, Image.Resampling.BILINEAR)
        return np.asarray(im)


def _jpeg(img: Image.Image, **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **save)
    return buf.getvalue()


def _picture(w, h, seed=0) -> Image.Image:
    """Noise over a gradient: chroma detail that upsampling and the IDCT both touch."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 128, (h, w, 3)) + np.linspace(0, 127, w)[None, :, None]
    return Image.fromarray(x.astype(np.uint8), "RGB")


def test_jpegs_of_every_kind_decode_to_pillows_pixels(calls, monkeypatch):
    # Progressive files at quality 100 outgrow Pillow's default encoder buffer.
    monkeypatch.setattr(ImageFile, "MAXBLOCK", 1 << 22)
    n = 0
    for (w, h), mode, quality, subsampling, progressive in itertools.product(
            [(32, 32), (7, 5), (257, 191)], ["RGB", "L"], [50, 95, 100], [0, 1, 2], [False, True]):
        data = _jpeg(_picture(w, h, seed=n).convert(mode), quality=quality,
                     subsampling=subsampling, progressive=progressive)
        got = decode_image(data, "x.jpg")
        assert got.shape == (h, w, 3) and got.dtype == np.uint8
        np.testing.assert_array_equal(got, _pillow(data), err_msg=f"{w}x{h} {mode} q{quality} "
                                      f"subsampling={subsampling} progressive={progressive}")
        n += 1
    assert len(calls) == n  # every one of them took the fast path


def test_resized_jpegs_match_pillow(calls):
    data = _jpeg(_picture(45, 30), quality=85)
    for size in [(32, 32), (90, 20), (45, 30)]:
        np.testing.assert_array_equal(decode_image(data, "x.jpg", size), _pillow(data, size))
    assert len(calls) == 3


def test_exif_cmyk_and_other_formats_go_to_pillow(calls):
    rotated = _picture(20, 12)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    with_exif = _jpeg(rotated, exif=exif.tobytes())
    got = decode_image(with_exif, "r.jpg")
    assert got.shape == (20, 12, 3)  # rotated, as Pillow's exif_transpose does
    np.testing.assert_array_equal(got, _pillow(with_exif))

    cmyk = _jpeg(Image.fromarray(np.random.default_rng(1).integers(0, 256, (9, 11, 4), np.uint8), "CMYK"))
    np.testing.assert_array_equal(decode_image(cmyk, "c.jpg"), _pillow(cmyk))

    png = io.BytesIO()
    rotated.save(png, "PNG")
    np.testing.assert_array_equal(decode_image(png.getvalue(), "p.png"), np.asarray(rotated))
    assert calls == []


def test_broken_jpegs_are_reported_as_before(calls):
    data = _jpeg(_picture(64, 64))
    for broken in (data[:len(data) // 2], data[:40], b"\xff\xd8\xff" + b"\0" * 50):
        with pytest.raises(DataError, match="cannot read image b.jpg: not a readable image"):
            decode_image(broken, "b.jpg")


def test_env_var_forces_pillow(calls, monkeypatch, tmp_path):
    monkeypatch.setenv("FEATMLP_JPEG_DECODER", "pillow")
    files = {f"{c}/{i}.jpg": _jpeg(_picture(16, 16, seed=i)) for c in ("a", "b") for i in range(3)}
    ds = load_dataset(write_folder(tmp_path / "d", files), test_fraction=0.34)
    pillow = np.asarray(ds.train_images)
    assert calls == []
    monkeypatch.delenv("FEATMLP_JPEG_DECODER")
    np.testing.assert_array_equal(np.asarray(ds.train_images), pillow)
    assert len(calls) == len(pillow)


@pytest.mark.cifar
@pytest.mark.skipif(not CIFAR10_JPG.is_file(), reason=f"needs the JPEG CIFAR-10 at {CIFAR10_JPG}")
def test_cifar10_jpegs_are_identical(calls):
    # The first 3,000 members (all 60,000 were checked identical by hand; that takes ~10 s).
    with tarfile.open(CIFAR10_JPG) as tf:
        datas = [tf.extractfile(m).read() for m in itertools.islice(tf, 3000)
                 if m.isfile() and m.name.endswith(".jpg")]
    assert len(datas) > 2900
    for i, data in enumerate(datas):
        np.testing.assert_array_equal(decode_image(data, f"{i}.jpg"), _pillow(data))
    assert len(calls) == len(datas)


def test_read_images_takes_the_fast_path_for_jpeg_files(calls, tmp_path):
    data = _jpeg(_picture(24, 16), quality=80, subsampling=1)
    (tmp_path / "a.jpg").write_bytes(data)
    [got] = read_images([tmp_path / "a.jpg"])
    np.testing.assert_array_equal(got, _pillow(data))
    assert len(calls) == 1
    with pytest.raises(DataError, match="cannot read image .*missing.jpg: no such file"):
        read_images([tmp_path / "missing.jpg"])


def test_pillows_decompression_bomb_check_still_applies(calls, monkeypatch):
    data = _jpeg(_picture(40, 30))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 1,200 px: over twice the limit
    with pytest.raises(DataError, match="DecompressionBombError"):
        decode_image(data, "big.jpg")
    assert calls == []

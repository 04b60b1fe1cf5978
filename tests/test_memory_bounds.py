"""Memory bounded by the chunk, really (issue 15): plots, the feature sets' working memory,
--image-size, predict --no-resize. Every case is small: the memory available is made small
(monkeypatched) rather than images made large."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

import featmlp._memory
from featmlp.errors import ConfigError
from featmlp.features import FEATURE_SETS, extract_features


def working_bytes(*args, **kwargs) -> int:
    from featmlp.features import working_bytes

    return working_bytes(*args, **kwargs)


def small_memory(monkeypatch, free: int) -> None:
    """Make ``free`` bytes all the memory there is, for every caller of featmlp._memory."""
    monkeypatch.setattr(featmlp._memory, "available_memory", lambda device="cpu": free)


def run_main(argv, capsys) -> tuple[int, str, str]:
    from featmlp.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def one_line_error(code: int, err: str, expected_code: int = 1) -> str:
    assert code == expected_code, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) >= 1
    return lines[-1]


def image_folder(root, sizes, per_class: int = 2):
    """Two classes of flat-coloured PNGs (a few hundred bytes each, whatever their size)."""
    for c, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            w, h = sizes[(c * per_class + i) % len(sizes)]
            Image.new("RGB", (w, h), (40 * i, 100 * c, 7)).save(root / name / f"{i}.png")
    return root


# -- plots --------------------------------------------------------------------------------------

def test_a_300_class_confusion_png_has_a_bounded_size(tmp_path):
    from featmlp.runs.plots import plot_confusion

    cm = np.random.default_rng(0).integers(0, 5, size=(300, 300))
    path = plot_confusion(cm, [f"class {i}" for i in range(300)], tmp_path / "confusion.png")
    with Image.open(path) as im:
        assert max(im.size) <= 1600, im.size  # was 18,350 x 18,250 (a 2 GiB canvas)


def test_a_large_confusion_matrix_has_no_cell_numbers_nor_class_names(tmp_path, monkeypatch):
    import featmlp.runs.plots as plots

    figures = []
    real = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.append(fig) or real(fig, path))
    names = [f"name{i}" for i in range(100)]
    plots.plot_confusion(np.eye(100, dtype=int) * 3, names, tmp_path / "c.png")
    ax = figures[0].axes[0]
    assert not ax.texts  # no per-cell numbers
    labels = {t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()}
    assert not labels & set(names) and len(ax.get_xticks()) <= 12
    width, height = figures[0].get_size_inches()
    assert max(width, height) <= plots.MAX_FIGURE_INCHES
    # a small one keeps both
    plots.plot_confusion([[3, 1], [0, 4]], ["cat", "dog"], tmp_path / "c.png")
    ax = figures[1].axes[0]
    assert [t.get_text() for t in ax.texts] == ["3", "1", "0", "4"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "dog"]


def test_every_figure_is_at_most_the_fixed_size():
    from featmlp._figures import MAX_FIGURE_INCHES, new_figure

    assert max(new_figure(500, 3).get_size_inches()) <= MAX_FIGURE_INCHES <= 20


# -- the feature sets' working memory ---------------------------------------------------------

def test_each_feature_set_declares_its_working_memory():
    for name in ("lecture", "hog", "color", "kmeans"):
        assert FEATURE_SETS[name].memory is not None
    # one 1000x1000 image on one thread: RGB + grayscale + lecture's scratch (hand computation)
    lecture = FEATURE_SETS["lecture"].memory
    thread = 10**6 * lecture.per_thread + min(10**6 * lecture.capped[0], lecture.capped[1]) + lecture.thread_fixed
    expected = 3 * 10**6 + math.ceil(10**6 * lecture.per_image) + math.ceil(thread)
    assert working_bytes("lecture", (1000, 1000), 1, threads=1) == expected
    assert working_bytes("lecture", (1000, 1000), 1, threads=1) < 40 * 10**6  # was ~200 bytes a pixel
    # the scratch of two threads, not of every image
    assert working_bytes("lecture", (100, 100), 50, threads=2) < 50 * working_bytes("lecture", (100, 100), 1)


def test_combinations_add_what_they_keep_and_share_their_scratch():
    lec, hog = FEATURE_SETS["lecture"].memory, FEATURE_SETS["hog"].memory
    n, px, threads = 4, 64 * 48, 2
    kept = math.ceil(n * px * lec.per_image) + math.ceil(n * px * hog.per_image)
    scratch = max(lec.bytes(n, px, threads) - math.ceil(n * px * lec.per_image),
                  hog.bytes(n, px, threads) - math.ceil(n * px * hog.per_image))
    assert working_bytes("lecture+hog", (64, 48), n, threads=threads) == 3 * n * px + kept + scratch


def test_kmeans_working_memory_follows_its_settings():
    small = working_bytes("kmeans", (32, 32), 1, options={"k": 64})
    default = working_bytes("kmeans", (32, 32), 1)
    assert default > 5 * small
    # (1600 distances + two float32 patches of 6x6x3) per patch position, 27 x 27 positions
    assert default >= 27 * 27 * 4 * (1600 + 2 * 108)


def test_default_chunks_count_the_feature_sets_work():
    from featmlp.tables.extract import _CHUNK_BYTES, default_chunk_size

    lec = FEATURE_SETS["lecture"].memory
    px = 1000 * 1000
    # n * px * (3 + 1) + one thread's scratch <= 256 MB
    thread = px * lec.per_thread + min(px * lec.capped[0], lec.capped[1]) + lec.thread_fixed
    expected = (_CHUNK_BYTES - math.ceil(thread)) // (px * (3 + lec.per_image))
    assert default_chunk_size((1000, 1000), "lecture", threads=1) == int(expected) == 64
    assert default_chunk_size((1000, 1000), "color", threads=1) == _CHUNK_BYTES // (3 * px) == 89
    assert default_chunk_size((3648, 5472), "lecture") == 1  # a 20 Mpx photo: one at a time
    assert default_chunk_size((32, 32), "lecture") == 5000


def test_extract_features_decodes_lazy_images_a_bounded_chunk_at_a_time(tmp_path, monkeypatch):
    import featmlp.features as features
    from featmlp.data import ImageArray, load_dataset

    ds = load_dataset(image_folder(tmp_path / "imgs", [(300, 200)], per_class=4), test_fraction=0.5)
    monkeypatch.setattr(features.apply, "CHUNK_BYTES", working_bytes("lecture", (200, 300), 2))
    sizes = []
    real = ImageArray.chunks
    monkeypatch.setattr(ImageArray, "chunks", lambda self, size: sizes.append(size) or real(self, size))
    assert extract_features(ds.train_images, "lecture").shape == (4, 9)
    assert sizes == [2]  # was 4,096 images decoded at a time, whatever their size


def test_hog_counts_its_columns_without_making_their_names(monkeypatch):
    def no_names(height, width):
        raise AssertionError("hog's names made (11 million strings for a 20 Mpx image)")

    monkeypatch.setitem(FEATURE_SETS, "hog", replace(FEATURE_SETS["hog"], sized_names=no_names))
    images = np.random.default_rng(0).integers(0, 256, size=(2, 40, 48, 3), dtype=np.uint8)
    assert extract_features(images, "hog").shape == (2, 4 * 5 * 36)


def test_lecture_tables_do_not_grow_with_the_pixels():
    from featmlp.features.texture import _lbp_tables

    tables = _lbp_tables(1000, 1000)
    assert sum(t.nbytes for t in tables) < 200_000  # was 160 bytes a pixel: 160 MB


def test_lecture_features_by_strips_of_rows_are_the_same(monkeypatch):
    import featmlp.features.texture as texture

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(3, 37, 45, 3), dtype=np.uint8)
    whole = texture.lecture_features(images, parallel=False)
    monkeypatch.setattr(texture, "_STRIP_VALUES", 64)  # one row (45 + 2 * 3 wide) at a time
    np.testing.assert_array_equal(texture.lecture_features(images, parallel=False), whole)
    monkeypatch.setattr(texture, "_STRIP_VALUES", 5 * 51)
    np.testing.assert_array_equal(texture.lecture_features(images), whole)


# -- extraction refuses what would not fit ------------------------------------------------------

def test_an_image_too_large_for_memory_is_refused_before_extracting(tmp_path, monkeypatch):
    from featmlp.data import load_dataset
    from featmlp.tables.extract import extract_dataset

    ds = load_dataset(image_folder(tmp_path / "imgs", [(600, 400)]), test_fraction=0.5)
    small_memory(monkeypatch, 3 << 20)  # 3 MB: one 600x400 image's lecture features need ~7 MB
    with pytest.raises(ConfigError, match=r"one 600x400 image needs about .* image_size=\(\d+, \d+\)"):
        extract_dataset(ds, "lecture")
    extract_dataset(ds, "color")  # no working memory beyond the pixels: 0.7 MB an image fits


def test_a_chunk_too_large_for_memory_is_refused(tmp_path, monkeypatch):
    from featmlp.data import load_dataset
    from featmlp.tables.extract import extract_dataset, extract_to_shards

    ds = load_dataset(image_folder(tmp_path / "imgs", [(300, 200)], per_class=6), test_fraction=0.5)
    one = working_bytes("lecture", (200, 300), 1, threads=1)
    small_memory(monkeypatch, one + (1 << 20))
    with pytest.raises(ConfigError, match="at a time .* smaller --chunk-size"):
        extract_dataset(ds, "lecture", chunk_size=6)
    with pytest.raises(ConfigError, match="smaller --chunk-size"):
        extract_to_shards(ds, "lecture", tmp_path / "t.features", chunk_size=6)
    assert not (tmp_path / "t.features").exists()
    assert extract_dataset(ds, "lecture", chunk_size=1).X_train.shape == (6, 9)


def test_cli_extract_says_to_downscale_in_one_line(tmp_path, monkeypatch, capsys):
    src = image_folder(tmp_path / "imgs", [(600, 400)])
    small_memory(monkeypatch, 3 << 20)
    code, _, err = run_main(["extract", str(src), "-o", str(tmp_path / "f.npz"), "-q"], capsys)
    line = one_line_error(code, err)
    assert line.startswith("error: ") and "--image-size" in line
    assert not (tmp_path / "f.npz").exists()


# -- --image-size ---------------------------------------------------------------------------

@pytest.mark.parametrize("size", ["10000x10000", "99999999999999999999x1", "1x99999999999999999999"])
def test_image_size_over_the_pixel_limit_is_refused_at_parse_time(tmp_path, capsys, size):
    code, _, err = run_main(["extract", str(tmp_path / "absent"), "--image-size", size,
                             "-o", str(tmp_path / "f.npz")], capsys)
    assert code == 2 and "Traceback" not in err
    assert "--image-size" in err and "89.5 Mpx" in err


def test_image_size_is_checked_against_the_memory_at_parse_time(tmp_path, capsys, monkeypatch):
    small_memory(monkeypatch, 1 << 20)
    code, _, err = run_main(["extract", str(tmp_path / "absent"), "--image-size", "2000x2000",
                             "-o", str(tmp_path / "f.npz")], capsys)
    assert code == 2 and "Traceback" not in err and "memory" in err


def test_load_dataset_checks_image_size(tmp_path, monkeypatch):
    from featmlp.data import load_dataset

    src = image_folder(tmp_path / "imgs", [(8, 8)])
    with pytest.raises(ConfigError, match="over the limit of 89.5 Mpx"):
        load_dataset(src, image_size=(10000, 10000))
    with pytest.raises(ConfigError, match="over the limit of 0.0 Mpx"):
        load_dataset(src, image_size=(100, 100), max_image_pixels=5000)
    small_memory(monkeypatch, 1 << 20)
    with pytest.raises(ConfigError, match="memory"):
        load_dataset(src, image_size=(2000, 2000))
    assert load_dataset(src, image_size=(16, 16)).train_images.shape[1:] == (16, 16, 3)


def test_cifar_batches_resized_whole_are_checked(tmp_path, monkeypatch):
    from _files import batch_files, make_batches, write_zip

    from featmlp.data import load_dataset

    archive = write_zip(tmp_path / "c.zip", batch_files(*make_batches(sizes=(3, 2, 4, 1, 2))), "cifar-10-batches-py/")
    small_memory(monkeypatch, 1 << 20)  # the 17 images at 128x128 are 836 KB, at 256x256 3.3 MB
    assert load_dataset(archive, image_size=(128, 128)).train_images.shape == (12, 128, 128, 3)
    with pytest.raises(ConfigError, match="17 CIFAR-10 images resized to 256x256 needs about 3.2 MB"):
        load_dataset(archive, image_size=(256, 256))


# -- predict ------------------------------------------------------------------------------------

@pytest.fixture
def lecture_run(tmp_path):
    from featmlp.runs.bundle import save_bundle
    from featmlp.model import MLPSpec, Scaler, build_mlp

    X = np.random.default_rng(0).normal(size=(10, 9))
    spec = MLPSpec(9, 2, hidden=(4,))
    save_bundle(tmp_path / "run", build_mlp(spec), spec, Scaler.fit(X), "lecture", ["cat", "dog"],
                {"image_size": [16, 16]})
    return tmp_path / "run"


def test_predict_no_resize_refuses_an_image_too_large_for_memory(tmp_path, lecture_run, monkeypatch, capsys):
    Image.new("RGB", (600, 400), (9, 9, 9)).save(tmp_path / "big.png")
    Image.new("RGB", (20, 20), (9, 9, 9)).save(tmp_path / "small.png")
    small_memory(monkeypatch, 3 << 20)
    code, out, err = run_main(["predict", str(lecture_run), str(tmp_path / "big.png"), str(tmp_path / "small.png"),
                               "--no-resize"], capsys)
    assert code == 1 and "Traceback" not in err
    [line] = err.strip().splitlines()
    assert line.startswith(f"error: {tmp_path / 'big.png'}: 600x400") and "memory" in line
    assert "small.png" in out and "big.png" not in out


def test_predict_groups_images_by_their_working_memory(tmp_path, lecture_run, monkeypatch):
    import featmlp.runs.predict as predict_module
    from featmlp.runs.bundle import load_bundle

    paths = []
    for i, size in enumerate([(64, 64)] * 5 + [(32, 48)] * 3):
        Image.new("RGB", size, (i, 2 * i, 3)).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    # two 64x64 images a chunk: held decoded, copied into a batch, their features computed
    budget = 2 * 3 * 64 * 64 + predict_module.image_bytes((64, 64), 2, "lecture")
    monkeypatch.setattr(predict_module, "PREDICT_CHUNK_BYTES", budget)
    seen = []
    real = predict_module.extract_features
    monkeypatch.setattr(predict_module, "extract_features",
                        lambda images, *a, **k: seen.append(images.shape) or real(images, *a, **k))
    results = load_bundle(lecture_run).predict_images(paths, resize=False)
    assert [r.error for r in results] == [None] * 8
    assert [shape[:3] for shape in seen if shape[1:3] == (64, 64)] == [(2, 64, 64), (2, 64, 64), (1, 64, 64)]
    assert sum(shape[0] for shape in seen) == 8

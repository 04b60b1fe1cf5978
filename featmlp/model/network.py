"""The network and the feature scaler: what a trained model is, apart from how it was trained.

An :class:`MLPSpec` describes the network (sizes, activation, dropout, batch norm, loss head) and
:func:`build_mlp` turns it into a ``torch.nn.Module``. Every model returns *logits*; probabilities are
always ``softmax(logits)``. The two heads differ only in the training loss (:data:`HEADS`):

- ``"ce"``: cross-entropy on the logits (the default: learns fast and well);
- ``"mse"``: the lecture's head, mean squared error between ``softmax(logits, dim=1)`` and the
  one-hot labels. The lecture put the softmax inside the network; keeping it in the loss instead
  gives the same function and gradients, and one meaning for the model's output.

The :class:`Scaler` (fitted on the training features only, kept with the model) is in
:mod:`featmlp.model.scaler` (no torch).
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np
import torch
from torch import nn

from featmlp.model.scaler import Scaler
from featmlp.model.spec import MLPSpec
from featmlp.tables.passes import row_blocks
from featmlp.tables.sharded import ShardedArray

# Name -> activation module class. The CLI's --activation choices are these keys.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
}


def cross_entropy_loss(logits: torch.Tensor, y: torch.Tensor, dim: int = 1,
                       smoothing: float = 0.0) -> torch.Tensor:
    """Per-sample cross-entropy of ``logits`` against integer labels ``y`` (N,).

    ``dim`` is the class axis of ``logits``: 1 for (N, C), 0 for the (C, N) layout training uses.
    ``smoothing`` ``e``: against the target ``(1 - e) one_hot + e / C``, as
    ``torch.nn.functional.cross_entropy(..., label_smoothing=e)``.
    """
    log_p = torch.log_softmax(logits, dim)
    loss = -log_p.gather(dim, y.unsqueeze(dim)).squeeze(dim)
    if smoothing:
        loss = (1 - smoothing) * loss - smoothing * log_p.mean(dim)
    return loss


def softmax_mse_loss(logits: torch.Tensor, y: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Per-sample squared error of ``softmax(logits)`` against one-hot ``y``, averaged over classes.

    The mean over samples of this is ``nn.MSELoss()`` (mean over all N*C elements) applied to the
    lecture's softmax output and one-hot targets. ``dim`` is the class axis, as above.
    """
    p = torch.softmax(logits, dim)
    # sum_c (p_c - onehot_c)^2 = sum_c p_c^2 - 2 p_y + 1, without building the one-hot matrix.
    p_true = p.gather(dim, y.unsqueeze(dim)).squeeze(dim)
    return (p.square().sum(dim) - 2 * p_true + 1) / logits.shape[dim]


# Name -> per-sample training loss ``f(logits, y, dim=1) -> (N,)``. Keys are --head choices.
HEADS: dict[str, Callable[..., torch.Tensor]] = {
    "ce": cross_entropy_loss,
    "mse": softmax_mse_loss,
}


def loss_function(head: str, label_smoothing: float = 0.0) -> Callable[..., torch.Tensor]:
    """The per-sample training loss of ``head``, with label smoothing for ``"ce"``."""
    if label_smoothing:
        return functools.partial(cross_entropy_loss, smoothing=label_smoothing)
    return HEADS[head]


class MLP(nn.Module):
    """Linear layers with activations; returns logits. Built by :func:`build_mlp`.

    Each hidden block is ``Linear -> [BatchNorm1d] -> activation -> [Dropout]``; ``hidden`` holds
    those blocks and ``output`` the last linear layer. Parameter names (``hidden.0.0.weight`` ...)
    are what a saved bundle stores.
    """

    def __init__(self, spec: MLPSpec):
        super().__init__()
        self.spec = spec
        blocks = []
        width_in = spec.n_features
        # Registered only when used: the parameter names of other models stay as they were.
        self.bottleneck = nn.Linear(width_in, spec.bottleneck) if spec.bottleneck else None
        if spec.bottleneck:
            width_in = spec.bottleneck
        for width in spec.hidden:
            layers: list[nn.Module] = [nn.Linear(width_in, width)]
            if spec.batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(ACTIVATIONS[spec.activation]())
            if spec.dropout > 0:
                layers.append(nn.Dropout(spec.dropout))
            blocks.append(nn.Sequential(*layers))
            width_in = width
        self.hidden = nn.ModuleList(blocks)
        self.output = nn.Linear(width_in, spec.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bottleneck is not None:
            x = self.bottleneck(x)
        for block in self.hidden:
            x = block(x)
        return self.output(x)

    def linear_layers(self) -> list[nn.Linear]:
        """The linear layers in order, input to output (the bottleneck first, when there is one)."""
        first = [] if self.bottleneck is None else [self.bottleneck]
        return first + [block[0] for block in self.hidden] + [self.output]


def build_mlp(spec: MLPSpec) -> MLP:
    """Build the network described by ``spec`` (PyTorch's default initialisation, as the lecture).

    Initial weights come from torch's global generator: seed it (``torch.manual_seed``) first for
    a repeatable model.

    Examples
    --------
    >>> model = build_mlp(MLPSpec(9, 10, hidden=(6,)))
    >>> model(torch.zeros(4, 9)).shape
    torch.Size([4, 10])
    """
    spec.validate()
    return MLP(spec)


@torch.inference_mode()
def predict_proba(model: nn.Module, scaler: Scaler, X, *, batch_size: int = 65536,
                  mirror=None, mirror_features=None) -> np.ndarray:
    """Class probabilities ``softmax(model(scaler(X)))`` for raw features ``X`` (N, F), in order.

    Runs in eval mode, in chunks of ``batch_size`` rows (a
    :class:`featmlp.tables.sharded.ShardedArray` a shard at a time); the rows are never reordered. With
    ``mirror`` (the column permutation of mirrored images' features), the mean of the
    probabilities of each row and its mirror image (test-time flip averaging); with
    ``mirror_features`` (N, F), the features of each row's mirror image extracted (features that
    have no such permutation), the same mean with those.

    Examples
    --------
    >>> X = np.random.default_rng(0).normal(size=(5, 3))
    >>> p = predict_proba(build_mlp(MLPSpec(3, 2)), Scaler.fit(X), X)
    >>> p.shape, bool(np.allclose(p.sum(axis=1), 1))
    ((5, 2), True)
    """
    if not isinstance(X, ShardedArray):  # a sharded table is read a shard at a time, below
        X = np.asarray(X)
    batch_size = max(1, min(batch_size, (1 << 26) // max(X.shape[-1], 1)))  # <= 256 MB a chunk
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device

    def proba(rows):
        p = torch.softmax(model(torch.from_numpy(scaler.transform(rows)).to(device)), dim=1)
        if mirror is not None:
            p = (p + torch.softmax(model(torch.from_numpy(scaler.transform(rows[:, mirror])).to(device)), 1)) / 2
        return p.cpu()

    try:
        out = [proba(np.asarray(rows)) for _, rows in row_blocks(X, batch_size)]
    finally:
        model.train(was_training)
    if not out:
        return np.zeros((0, model.output.out_features), np.float32)
    if mirror_features is not None:
        return (torch.cat(out).numpy() + predict_proba(model, scaler, mirror_features, batch_size=batch_size)) / 2
    return torch.cat(out).numpy()

"""``FastEngine``: a hand-written forward and backward pass for plain MLPs (no dropout, no batch
norm), in a feature-major layout; per-step overhead, not arithmetic, dominates small networks.

It updates one flat parameter vector (:func:`featmlp.training.params.flatten_parameters`) with
the optimiser's ``step`` and writes the epoch's logits into one buffer, as
:class:`~featmlp.training.engines.autograd.AutogradEngine` does.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from featmlp.model import MLPSpec

# Activation forward, in place where the backward needs only the output, and backward
# ``f(grad, output, pre_activation)`` written over ``grad`` (aten's grad_input variants) for the
# hand-written pass.
_aten = torch.ops.aten
FAST_ACTIVATIONS: dict[str, tuple[Callable, Callable]] = {
    "relu": (torch.relu_,
             lambda g, a, z: _aten.threshold_backward.grad_input(g, a, 0, grad_input=g)),
    "tanh": (torch.tanh_, lambda g, a, z: _aten.tanh_backward.grad_input(g, a, grad_input=g)),
    "sigmoid": (torch.sigmoid_,
                lambda g, a, z: _aten.sigmoid_backward.grad_input(g, a, grad_input=g)),
    "gelu": (nn.functional.gelu,
             lambda g, a, z: _aten.gelu_backward.grad_input(g, z, grad_input=g)),
}



# The hand-written engine keeps three copies of the scaled features (stored, transposed,
# shuffled); above this size the autograd engine, which scales each batch as it gathers it, runs
# instead (14,400 learned features x 50,000 images are 2.9 GB a copy).
FAST_ENGINE_BYTES = 1 << 30


def fast_engine_fits(spec: MLPSpec, n_rows: int, n_features: int) -> bool:
    """Whether :class:`FastEngine` runs this network on these rows (else :class:`AutogradEngine`).

    Plain MLPs only (no batch norm, dropout or bottleneck), and only while its copies of the
    scaled rows stay under :data:`FAST_ENGINE_BYTES`.
    """
    return (not spec.batch_norm and spec.dropout == 0 and not spec.bottleneck
            and n_rows * n_features * 4 <= FAST_ENGINE_BYTES)


class FastEngine:
    """Hand-written forward and backward for plain MLPs, in a feature-major layout.

    Measured on this project's 2-core CPU, 50,000 x 9 -> 64 -> 10, batch 256, Adam, per epoch:
    a plain autograd loop with torch.optim.Adam takes ~0.10 s; this engine ~0.025 s. Why:
    - no autograd graph, no ``Optimizer.step`` bookkeeping: ~15 kernel calls per step in all;
    - activations are (units, batch): MKL's (256, 64) @ (64, 10) takes ~28 us, the same product
      as (10, 64) @ (64, 256) ~7 us, and softmax over 10 rows of a (10, 256) block ~4 us
      against ~46 us over the last dim of (256, 10);
    - every intermediate has a buffer reused from step to step and epoch to epoch (``out=``):
      fresh 2 MB temporaries cost page faults, and the lecture's full-batch epoch took ~3 ms
      with them, ~1.8 ms without;
    - the loss is computed once per epoch from the logits written in place, not per step.
    Tests check it against plain torch loops.
    """

    def __init__(self, model, spec: MLPSpec, X: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0):
        linears = model.linear_layers()
        self.weights = [layer.weight.detach() for layer in linears]
        self.biases = [layer.bias.detach()[:, None] for layer in linears]
        self.grad_w = [layer.weight.grad for layer in linears]
        self.grad_b = [layer.bias.grad for layer in linears]
        self.act, self.act_backward = FAST_ACTIVATIONS[spec.activation]
        self.keep_pre = spec.activation == "gelu"
        self.mse = spec.head == "mse"
        self.n_classes = spec.n_classes
        self.class_dim = 0
        self.XT = X.t().contiguous()
        self.y = y[None, :]
        eye = torch.eye(spec.n_classes, dtype=X.dtype, device=X.device)
        self.YT = eye[:, y].contiguous()  # one-hot targets, (C, N)
        if label_smoothing:  # the cross-entropy gradient is p - target for smoothed targets too
            self.YT.mul_(1 - label_smoothing).add_(label_smoothing / spec.n_classes)
        # Epoch-sized buffers: shuffled copies, logits, per-sample losses. Zero-filled, not
        # empty, so their memory is touched here in the set-up rather than in the first epoch.
        self.XTp, self.YTp, self.yp = (torch.zeros_like(t) for t in (self.XT, self.YT, self.y))
        self.ZT = torch.zeros_like(self.YT)
        self.LT = torch.zeros_like(self.y, dtype=X.dtype)
        self._work: dict[int, tuple] = {}

    def prepare(self, batch_size: int) -> None:
        """Allocate the per-step buffers of an epoch in batches of ``batch_size``."""
        n = self.XT.shape[1]
        for size in {min(batch_size, n), n % batch_size or batch_size}:
            self._workspace(size)

    def _workspace(self, n: int):
        """Per-step buffers for batches of ``n`` samples (two sizes per run at most)."""
        if n not in self._work:
            like = self.ZT
            hidden = [torch.zeros(w.shape[0], n, dtype=like.dtype, device=like.device)
                      for w in self.weights[:-1]]
            back = [torch.zeros_like(h) for h in hidden]
            heads = [torch.zeros(shape, dtype=like.dtype, device=like.device)
                     for shape in ((self.n_classes, n), (self.n_classes, n), (1, n), (1, n))]
            self._work[n] = (hidden, back, *heads)
        return self._work[n]

    def run_epoch(self, perm, sw, batch_size, step_fn, lrs):
        """All steps of one epoch over the samples in ``perm`` order (None: as stored).

        ``sw`` (N,) weighs each sample's loss within its batch. Returns the logits (C, N) each
        sample had at its step, for the MSE head the per-sample losses (else None), and the
        labels in that order; all overwritten by the next epoch.
        """
        if perm is None:
            XT, YT, y = self.XT, self.YT, self.y
        else:
            XT = torch.index_select(self.XT, 1, perm, out=self.XTp)
            YT = torch.index_select(self.YT, 1, perm, out=self.YTp)
            y = torch.index_select(self.y, 1, perm, out=self.yp)
        ZT, LT = self.ZT, self.LT
        weights, biases, grad_w, grad_b = self.weights, self.biases, self.grad_w, self.grad_b
        last = len(weights) - 1
        act, act_backward, keep_pre, mse = self.act, self.act_backward, self.keep_pre, self.mse
        if mse:
            sw = sw * (2.0 / self.n_classes)  # d/dp of the mean over classes of (p - y)^2
        # split() makes all batch views in one call instead of six slices per step.
        batches = zip(XT.split(batch_size, 1), YT.split(batch_size, 1), y.split(batch_size, 1),
                      sw[None, :].split(batch_size, 1), ZT.split(batch_size, 1),
                      LT.split(batch_size, 1), lrs)
        for xT, yT, yb, swb, zT, lT, lr in batches:
            hidden, back, p, g, r, p_true = self._workspace(xT.shape[1])
            outs, pres, a = [xT], [None], xT
            for k in range(last):
                z = torch.addmm(biases[k], weights[k], a, out=hidden[k])
                a = act(z)
                outs.append(a)
                pres.append(z if keep_pre else None)
            torch.addmm(biases[last], weights[last], a, out=zT)
            torch.softmax(zT, 0, out=p)
            if mse:
                # Per sample, sum_c (p_c - y_c)^2 = sum_c p_c^2 - 2 p_y + 1, and through the softmax
                # dL/dz = k p * ((p - y) - (sum_c p_c^2 - p_y)) with k = 2 w / C: the two sums
                # serve both the loss and the gradient.
                torch.gather(p, 0, yb, out=p_true)
                torch.sum(torch.square(p, out=g), 0, keepdim=True, out=r).sub_(p_true)
                torch.sub(r, p_true, out=lT)  # + 1, / C at the end of the epoch
                torch.sub(p, yT, out=g).sub_(r).mul_(p).mul_(swb)
            else:
                g = p.sub_(yT).mul_(swb)
            for k in range(last, -1, -1):
                torch.mm(g, outs[k].t(), out=grad_w[k])
                torch.sum(g, 1, out=grad_b[k])
                if k:
                    g = act_backward(torch.mm(weights[k].t(), g, out=back[k - 1]), outs[k],
                                     pres[k])
            step_fn(lr)
        losses = LT[0].add_(1).div_(self.n_classes) if mse else None
        return ZT, losses, y[0]

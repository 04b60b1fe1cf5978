"""``AutogradEngine``: the ``nn.Module`` with autograd, for dropout, batch norm, a bottleneck and
large inputs, reading its batches through :class:`ScaledRows` (each batch gathered and scaled as
its step comes).

It updates one flat parameter vector (:func:`featmlp.training.params.flatten_parameters`) with
the optimiser's ``step`` and writes the epoch's logits into one buffer, as
:class:`~featmlp.training.engines.fast.FastEngine` does.
"""

from __future__ import annotations

import torch

from featmlp.model import MLPSpec, loss_function


class ScaledRows:
    """Training rows scaled per batch as they are gathered, instead of one scaled copy of ``X``.

    ``X`` (N, F) stays as stored (float32 or float64; the arithmetic is in its dtype, as
    :meth:`featmlp.model.scaler.Scaler.transform`). With ``mirror``, rows ``N .. 2N-1`` are the mirror
    images of rows ``0 .. N-1``: their columns permuted by ``mirror``, so flip augmentation of
    a mirror-symmetric feature set needs no second copy either.
    """

    def __init__(self, X, scaler, mirror, device):
        self.X = torch.from_numpy(X)
        self.offset = torch.from_numpy(scaler.offset.astype(X.dtype))
        self.scale = torch.from_numpy(scaler.scale.astype(X.dtype))
        self.mirror = None if mirror is None else torch.from_numpy(mirror)
        self.n_stored = len(X)
        self.device = device

    def __len__(self) -> int:
        return self.n_stored * (1 if self.mirror is None else 2)

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """Scaled float32 rows ``idx`` (a 1-d index tensor), on the device."""
        # Measured per batch of 256 x 14,400 (half mirrored), on a busy 2-core machine: boolean
        # masks with advanced indexing (xb[f] = xb[f][:, mirror]) took ~60 ms; index_select /
        # index_copy_ and in-place scaling below ~10-30 ms, against ~70 ms for the step itself.
        idx = idx.cpu()
        if self.mirror is None:
            xb = self.gather(idx)
        else:
            xb = self.gather(idx % self.n_stored)
            flipped = (idx >= self.n_stored).nonzero().squeeze(1)
            if len(flipped):
                xb.index_copy_(0, flipped, xb.index_select(0, flipped).index_select(1, self.mirror))
        xb.sub_(self.offset).div_(self.scale)  # xb is a fresh copy: scale it in place
        return xb.to(torch.float32).to(self.device)

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        """Stored rows ``idx`` (all < ``n_stored``), unscaled, as a new tensor this class may scale in place.

        Where the rows come from: here an array in memory;
        :class:`featmlp.training.engines.streamed.ShardedRows` reads them from a sharded table's shards.
        """
        return self.X.index_select(0, idx)

    def split(self, size: int):
        """Scaled rows in order, ``size`` at a time (as ``Tensor.split``)."""
        for start in range(0, len(self), size):
            yield self.rows(torch.arange(start, min(start + size, len(self))))


class AutogradEngine:
    """The ``nn.Module`` with autograd: for dropout, batch norm, a bottleneck, large inputs.

    ``X`` is a :class:`ScaledRows`: each batch is gathered and scaled as its step comes (no
    scaled or shuffled copy of the epoch's rows).
    """

    def __init__(self, model, spec: MLPSpec, X, y: torch.Tensor, label_smoothing: float = 0.0):
        self.model = model
        self.loss_fn = loss_function(spec.head, label_smoothing)
        self.X, self.y = X, y
        self.n_classes = spec.n_classes
        self.class_dim = 1

    def prepare(self, batch_size: int) -> None:
        pass

    def run_epoch(self, perm, sw, batch_size, step_fn, lrs):
        """As :meth:`FastEngine.run_epoch`: logits (N, C), per-sample losses, labels in order."""
        n = len(self.y)
        order = torch.arange(n, device=self.y.device) if perm is None else perm
        y = self.y if perm is None else self.y[perm]
        Z = torch.empty(n, self.n_classes, dtype=torch.float32, device=self.y.device)
        L = torch.empty(n, dtype=torch.float32, device=self.y.device)
        self.model.train()
        params = list(self.model.parameters())
        batches = zip(order.split(batch_size), y.split(batch_size), sw.split(batch_size),
                      Z.split(batch_size), L.split(batch_size), lrs)
        for idx, yb, swb, zb, lb, lr in batches:
            out = self.model(self.X.rows(idx))
            losses = self.loss_fn(out, yb, 1)
            for p in params:
                p.grad.zero_()
            (losses * swb).sum().backward()
            step_fn(lr)
            zb.copy_(out.detach())
            lb.copy_(losses.detach())
        return Z, L, y

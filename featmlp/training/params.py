"""The flat parameter vector the optimisers step: made, undone, saved and put back.

Every parameter of the model (and its ``.grad``) becomes a view into one vector, so each
optimiser updates all weights in a handful of ops per step. :func:`snapshot` and :func:`restore`
save and put back those weights with the model's buffers (divergence, early stopping).
"""

from __future__ import annotations

import torch
from torch import nn


def flatten_parameters(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Make every parameter (and its ``.grad``) a view into one flat vector.

    One vector lets each optimiser update all weights in a handful of ops per step; autograd
    accumulates into the existing ``.grad`` views in place.
    """
    params = list(model.parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    grad = torch.zeros_like(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.data = flat[offset : offset + n].view_as(p)
        p.grad = grad[offset : offset + n].view_as(p)
        offset += n
    return flat, grad


def unflatten_parameters(model: nn.Module) -> None:
    # Give each parameter its own storage again: safetensors refuses tensors sharing memory.
    for p in model.parameters():
        p.data = p.data.clone()
        p.grad = None


def snapshot(model, flat) -> list[torch.Tensor]:
    """A copy of the weights (the flat vector) and the buffers (batch norm's running statistics)."""
    return [flat.clone()] + [b.clone() for b in model.buffers()]


def restore(model, flat, state) -> None:
    """Put back the weights and buffers of a :func:`snapshot`."""
    flat.copy_(state[0])
    for b, saved in zip(model.buffers(), state[1:]):
        b.copy_(saved)

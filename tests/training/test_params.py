"""featmlp.training.params: the flat vector is the model's parameters, and snapshots put them back."""

from __future__ import annotations

import torch
from torch import nn

from featmlp.training.params import flatten_parameters, restore, snapshot, unflatten_parameters


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_the_flat_vector_and_its_gradient_are_views_of_every_parameter_in_order():
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    flat, grad = flatten_parameters(model)
    assert torch.equal(flat, torch.cat([b.reshape(-1) for b in before]))
    flat.add_(1.0)  # a step on the vector is a step on the model
    assert all(torch.equal(p, b + 1) for p, b in zip(model.parameters(), before))
    model(torch.ones(5, 3)).sum().backward()  # autograd accumulates into the vector
    assert torch.equal(grad, torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    assert grad.abs().sum() > 0


def test_unflatten_gives_each_parameter_its_own_storage_and_keeps_the_values():
    model = _model()
    flat, _ = flatten_parameters(model)
    values = flat.clone()
    unflatten_parameters(model)
    ptrs = {p.data.untyped_storage().data_ptr() for p in model.parameters()}
    assert len(ptrs) == len(list(model.parameters()))
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.cat([p.detach().reshape(-1) for p in model.parameters()]), values)


def test_restore_puts_back_the_weights_and_the_buffers_of_a_snapshot():
    model = _model()
    flat, _ = flatten_parameters(model)
    state = snapshot(model, flat)
    weights, buffers = flat.clone(), [b.clone() for b in model.buffers()]
    flat.mul_(3.0)
    model.train()(torch.randn(8, 3))  # moves batch norm's running statistics
    assert not torch.equal(model[1].running_mean, buffers[0])
    restore(model, flat, state)
    assert torch.equal(flat, weights)
    assert all(torch.equal(b, saved) for b, saved in zip(model.buffers(), buffers))

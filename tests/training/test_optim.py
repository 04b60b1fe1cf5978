"""featmlp.training.optim: the per-row optimiser of the stacked sweep against torch.optim, row by row."""

from __future__ import annotations

import pytest
import torch

from featmlp.training.config import TrainConfig
from featmlp.training.optim import OPTIMIZERS, RowOptimizer

TORCH = {
    "gd": lambda p, c, lr: torch.optim.SGD([p], lr=lr, weight_decay=c.weight_decay),
    "sgd": lambda p, c, lr: torch.optim.SGD([p], lr=lr, momentum=c.momentum, weight_decay=c.weight_decay),
    "adam": lambda p, c, lr: torch.optim.Adam([p], lr=lr, weight_decay=c.weight_decay),
    "adamw": lambda p, c, lr: torch.optim.AdamW([p], lr=lr, weight_decay=c.weight_decay),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_each_row_steps_as_torch_optim_with_that_rows_hyperparameters(name):
    assert set(TORCH) == set(OPTIMIZERS)
    configs = [TrainConfig(optimizer=name, weight_decay=0.0, momentum=0.9),
               TrainConfig(optimizer=name, weight_decay=0.1, momentum=0.5),
               TrainConfig(optimizer=name, weight_decay=0.01, momentum=0.0)]
    lrs = [0.1, 0.03, 0.2]
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(3, 7, generator=gen, dtype=torch.float64)
    grads = [torch.randn(3, 7, generator=gen, dtype=torch.float64) for _ in range(5)]

    rows = start.clone()
    opt = RowOptimizer(name, rows, configs)
    lr_col = torch.tensor(lrs, dtype=torch.float64)[:, None]
    for g in grads:
        opt.step(rows, g.clone(), lr_col)

    for k, (config, lr) in enumerate(zip(configs, lrs)):
        p = start[k].clone().requires_grad_(True)
        ref = TORCH[name](p, config, lr)
        for g in grads:
            p.grad = g[k].clone()
            ref.step()
        torch.testing.assert_close(rows[k], p.detach(), rtol=1e-12, atol=1e-12)


def test_finished_rows_are_dropped_with_their_state():
    configs = [TrainConfig(optimizer="adam", weight_decay=w) for w in (0.0, 0.1, 0.2)]
    rows = torch.ones(3, 4, dtype=torch.float64)
    opt = RowOptimizer("adam", rows, configs)
    opt.step(rows, torch.full_like(rows, 0.5), torch.full((3, 1), 0.1, dtype=torch.float64))
    keep = torch.tensor([0, 2])
    opt.select(keep)
    assert opt.weight_decay.flatten().tolist() == [0.0, 0.2]
    assert opt.state["m"].shape == (2, 4)

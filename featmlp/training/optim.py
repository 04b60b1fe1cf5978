"""Optimisers and learning-rate schedules, as registries from name to implementation.

The optimisers are small classes updating one flat parameter vector in place (scikit-learn's
shape: ``cls(flat_params, config)`` with one ``step(flat_grad, lr)``); their arithmetic follows
torch.optim's SGD, Adam and AdamW, and tests compare them with it. A schedule is
``f(t) -> lr multiplier`` for ``t`` in [0, 1), the fraction of the run's steps done.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from featmlp.training.config import TrainConfig


class GradientDescent:
    """``w <- w - lr * (grad + weight_decay * w)``; with ``"gd"`` one step per epoch."""

    full_batch = True

    def __init__(self, params: torch.Tensor, config: TrainConfig):
        self.params = params
        self.weight_decay = config.weight_decay

    def step(self, grad: torch.Tensor, lr: float) -> None:
        if self.weight_decay:
            grad.add_(self.params, alpha=self.weight_decay)
        self.params.add_(grad, alpha=-lr)


class SGD(GradientDescent):
    """Minibatch SGD with (heavy-ball) momentum, as ``torch.optim.SGD``."""

    full_batch = False

    def __init__(self, params: torch.Tensor, config: TrainConfig):
        super().__init__(params, config)
        self.momentum = config.momentum
        self.velocity: torch.Tensor | None = None

    def step(self, grad: torch.Tensor, lr: float) -> None:
        if self.weight_decay:
            grad.add_(self.params, alpha=self.weight_decay)
        if self.momentum:
            if self.velocity is None:
                self.velocity = grad.clone()
            else:
                self.velocity.mul_(self.momentum).add_(grad)
            grad = self.velocity
        self.params.add_(grad, alpha=-lr)


class Adam:
    """Adam (betas 0.9, 0.999, eps 1e-8) with L2 weight decay, as ``torch.optim.Adam``."""

    full_batch = False
    decoupled = False
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    # torch's fused kernel does the whole update in one call: ~3 us a step against ~15 us for the
    # seven in-place ops below, ~10% of a 9 -> 64 -> 10 epoch at batch 256. (torch.optim.Adam's
    # own step() adds 30-60 us of Python bookkeeping around the same kernels.)
    _fused_name = "_fused_adam_"

    def __init__(self, params: torch.Tensor, config: TrainConfig):
        self.params = params
        self.weight_decay = config.weight_decay
        self.m = torch.zeros_like(params)
        self.v = torch.zeros_like(params)
        self.t = 0
        self.fused = getattr(torch, self._fused_name, None)
        self.fused_step = torch.zeros((), dtype=params.dtype, device=params.device)

    def step(self, grad: torch.Tensor, lr: float) -> None:
        self.t += 1
        if self.fused is not None:
            self.fused_step.add_(1)
            try:
                self.fused([self.params], [grad], [self.m], [self.v], [], [self.fused_step],
                           lr=lr, beta1=self.beta1, beta2=self.beta2,
                           weight_decay=self.weight_decay, eps=self.eps, amsgrad=False,
                           maximize=False)
                return
            except (RuntimeError, NotImplementedError):
                # A torch build without that kernel for this device: the plain ops below.
                self.fused = None
        if self.weight_decay:
            if self.decoupled:
                self.params.mul_(1 - lr * self.weight_decay)
            else:
                grad.add_(self.params, alpha=self.weight_decay)
        self.m.lerp_(grad, 1 - self.beta1)
        self.v.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        bias1 = 1 - self.beta1 ** self.t
        bias2 = 1 - self.beta2 ** self.t
        denom = self.v.sqrt().div_(math.sqrt(bias2)).add_(self.eps)
        self.params.addcdiv_(self.m, denom, value=-lr / bias1)


class AdamW(Adam):
    """Adam with decoupled weight decay, as ``torch.optim.AdamW``."""

    decoupled = True
    _fused_name = "_fused_adamw_"


# Name -> optimiser class ``cls(flat_params, config)`` with ``step(flat_grad, lr)``.
OPTIMIZERS: dict[str, type] = {
    "gd": GradientDescent,
    "sgd": SGD,
    "adam": Adam,
    "adamw": AdamW,
}


class RowOptimizer:
    """The optimisers of :data:`OPTIMIZERS` on stacked rows ``(K, P)``, hyperparameters per row.

    The stacked sweep trains K networks at once, one per row, each with its own learning rate,
    weight decay and momentum (``(K, 1)`` columns). Same arithmetic as :class:`SGD`, :class:`Adam`
    and :class:`AdamW` (torch.optim's) and the same constants; a separate class because the flat
    ones step through torch's fused kernels with a scalar lr, whose rounding a per-row tensor
    version would not repeat bit for bit.
    """

    beta1, beta2, eps = Adam.beta1, Adam.beta2, Adam.eps

    def __init__(self, name: str, params: torch.Tensor, configs: list[TrainConfig]):
        col = lambda values: torch.tensor(values, dtype=params.dtype,  # noqa: E731
                                          device=params.device)[:, None]
        self.name = name
        self.adam = issubclass(OPTIMIZERS[name], Adam)
        self.decoupled = self.adam and OPTIMIZERS[name].decoupled
        self.weight_decay = col([c.weight_decay for c in configs])
        self.any_decay = any(c.weight_decay for c in configs)
        self.momentum = col([c.momentum for c in configs])
        self.any_momentum = issubclass(OPTIMIZERS[name], SGD) and any(c.momentum for c in configs)
        self.state: dict[str, torch.Tensor] = {}
        if self.adam:
            self.state = {"m": torch.zeros_like(params), "v": torch.zeros_like(params)}
        self.t = 0

    def select(self, rows: torch.Tensor) -> None:
        """Keep only these rows (configurations that go on training)."""
        self.weight_decay = self.weight_decay[rows]
        self.momentum = self.momentum[rows]
        self.state = {k: v[rows] for k, v in self.state.items()}

    def step(self, params: torch.Tensor, grad: torch.Tensor, lr: torch.Tensor) -> None:
        self.t += 1
        if self.any_decay and not self.decoupled:
            grad.addcmul_(params, self.weight_decay)
        if not self.adam:
            if self.any_momentum:
                # torch.optim.SGD: the first step's buffer is the gradient itself. A row with
                # momentum 0 gets 0 * buffer + grad = grad, the plain step.
                if "velocity" not in self.state:
                    self.state["velocity"] = grad.clone()
                else:
                    self.state["velocity"].mul_(self.momentum).add_(grad)
                grad = self.state["velocity"]
            params.addcmul_(grad, lr, value=-1.0)
            return
        if self.any_decay and self.decoupled:
            params.mul_(1 - lr * self.weight_decay)
        m, v = self.state["m"], self.state["v"]
        m.lerp_(grad, 1 - self.beta1)
        v.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        bias1 = 1 - self.beta1 ** self.t
        bias2 = 1 - self.beta2 ** self.t
        denom = v.sqrt().div_(math.sqrt(bias2)).add_(self.eps)
        params.addcmul_(m.div(denom), lr, value=-1.0 / bias1)


def _constant(t: float) -> float:
    return 1.0


def _cosine(t: float) -> float:
    # torch's CosineAnnealingLR with eta_min 0 over all steps of the run.
    return 0.5 * (1.0 + math.cos(math.pi * t))


def _one_cycle(t: float, warmup: float = 0.3, start: float = 1 / 25, end: float = 1 / 25e4) -> float:
    # torch's OneCycleLR defaults: cosine warm-up from lr/25 over 30% of the steps, then cosine
    # annealing down to lr/25e4.
    if t < warmup:
        return start + (1.0 - start) * 0.5 * (1.0 - math.cos(math.pi * t / warmup))
    return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * (t - warmup) / (1.0 - warmup)))


# Name -> ``f(t) -> lr multiplier`` where t in [0, 1) is the fraction of the run's steps done.
SCHEDULES: dict[str, Callable[[float], float]] = {
    "none": _constant,
    "cosine": _cosine,
    "onecycle": _one_cycle,
}

"""Many plain MLPs of one shape trained together: stacked weights and batched matrix products.

Configuration ``k`` of a group is row ``k`` of one ``(K, P)`` tensor, laid out as the flat
parameter vector :func:`featmlp.training.train` steps (``model.parameters()`` order). Each layer's
weights are a ``(K, out, in)`` view of it and one ``torch.baddbmm`` computes that layer for all
``K`` networks; the input batch is shared (``expand``, no copy). The layout is feature-major, as
in ``featmlp.training.engines.fast.FastEngine``: activations are ``(K, units, batch)``, softmax runs over dim 1.

Everything that defines a run is reproduced per configuration: the initial weights (seed, then
``build_mlp``), the minibatch order (one generator seeded as ``train()`` seeds it, shared by the
group), the per-sample loss weights, the optimiser's arithmetic with per-configuration scalars
(lr, schedule, weight decay, momentum, the lecture's gradient scale), the epoch record and the
divergence rule. Only float rounding differs from ``train()`` (batched products sum in another
order), so histories agree to float tolerance; tests check it.

Speed (``benchmarks/bench_sweep.py``, this project's 2-core CPU): such a full-batch epoch is
arithmetic over 50,000 samples, not per-op overhead. With torch ops the lecture's sweep (10
networks, 20 epochs over 50,000 x 9) trained in ~0.32 s, ~1.6 ms per network-epoch against
~2.2 ms for ``train()`` alone (7x one configuration). Full-batch ReLU groups on the CPU
therefore run in one fused numba kernel (``fused.py``: forward, softmax, loss and gradients per
256-sample block that stays in L1, on both cores, float64 gradient sums per chunk): ~0.12 s,
~0.6 ms per network-epoch, 2.8x one configuration. Tried and left out: running torch chunks on 2
threads (slower: the OpenMP team spin-waits), and torch at 2 threads beside the kernel (same).
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np
import torch

from featmlp.model import HEADS
from featmlp.progress import Callback
from featmlp.training.checks import check_data
from featmlp.training.config import TrainConfig
from featmlp.training.engines import fused as _fused
from featmlp.training.engines.fast import FAST_ACTIVATIONS
from featmlp.training.config import gd_gradient_scale, planned_epochs
from featmlp.training.epoch import within_batch_weights
from featmlp.training.history import VAL_ACCURACY, VAL_LOSS, can_validate, diverged, epoch_record
from featmlp.training.loop import TrainResult
from featmlp.training.optim import OPTIMIZERS, SCHEDULES, RowOptimizer
from featmlp.training.setup import batch_order_rng, class_weights, initial_model, resolve_device, seeded, training_rows

# Full-batch epochs run in chunks of samples so that the (K, units, chunk) intermediates stay
# in cache and the gradient accumulates chunk by chunk. Whole-epoch tensors for 5 networks
# 9 -> 6 -> 10 on 50,000 samples (10 MB of logits) took ~7.7 ms per epoch, chunks of 10,000
# samples ~6.6 ms, of 1,000 ~12 ms (per-op overhead): ~500k elements per logits chunk is best.
_CHUNK_ELEMENTS = 500_000
_MIN_CHUNK = 1024


def _layer_views(flat: torch.Tensor, layer_shapes) -> tuple[list, list]:
    """Weights (K, out, in) and biases (K, out) of each layer, as views into ``flat`` (K, P)."""
    K, W, b, offset = flat.shape[0], [], [], 0
    for out, inp in layer_shapes:
        W.append(flat[:, offset : offset + out * inp].view(K, out, inp))
        offset += out * inp
        b.append(flat[:, offset : offset + out])
        offset += out
    return W, b


class _Stack:
    """``K`` networks of one shape: rows of ``flat`` with per-layer views, and their gradient."""

    def __init__(self, flat: torch.Tensor, layer_shapes: list[tuple[int, int]]):
        self.layer_shapes = layer_shapes
        self.set_flat(flat)

    def set_flat(self, flat: torch.Tensor) -> None:
        self.flat = flat
        W, b = _layer_views(flat, self.layer_shapes)
        self.W, self.b = W, [bias.unsqueeze(2) for bias in b]
        self.grad = torch.zeros_like(flat)
        self.grad_views = _layer_views(self.grad, self.layer_shapes)

    @property
    def K(self) -> int:
        return self.flat.shape[0]


class _Engine:
    """Forward, backward and the steps of one epoch for a :class:`_Stack`."""

    def __init__(self, stack: _Stack, spec, XT: torch.Tensor, y: torch.Tensor, weighted: bool,
                 fused: bool = False):
        self.stack = stack
        # Full-batch epochs of ReLU networks on the CPU run in one numba kernel (fused.py):
        # forward, softmax, loss and gradients per block of samples, on all cores.
        self.fused = fused
        self.act, self.act_backward = FAST_ACTIVATIONS[spec.activation]
        self.keep_pre = spec.activation == "gelu"
        self.mse = spec.head == "mse"
        self.loss_fn = HEADS[spec.head]
        self.n_classes = spec.n_classes
        self.widths = [o for o, _ in stack.layer_shapes]
        self.weighted = weighted  # per-sample loss weights that differ within a batch
        self.XT, self.y = XT, y
        self.XTp, self.yp = torch.empty_like(XT), torch.empty_like(y)
        self.minus_one = torch.full((1, 1, 1), -1.0, dtype=XT.dtype, device=XT.device)
        self.reset()

    def reset(self) -> None:
        """Size the buffers for the stack's current number of rows."""
        K, N = self.stack.K, self.XT.shape[1]
        like = dict(dtype=self.XT.dtype, device=self.XT.device)
        # Per-sample results of the epoch: loss, true-class logit, largest logit.
        if self.fused:
            shapes = self.stack.layer_shapes
            self.shapes = np.array(shapes, dtype=np.int64)
            self.offsets = np.cumsum([0] + [o * i + o for o, i in shapes[:-1]], dtype=np.int64)
            n_chunks = _fused.n_chunks(N)
            self.fused_grad = np.empty((n_chunks, K, self.stack.flat.shape[1]))
            self.fused_stats = np.empty((n_chunks, K, 2))
            self.ones = np.ones(N, np.float32)
            return
        self.loss, self.zy, self.zmax = (torch.empty(K, N, **like) for _ in range(3))
        # Full-batch epochs: chunks of (nearly) equal size, so two workspaces at most.
        n_chunks = math.ceil(N / self.chunk_size(N))
        bounds = [N * i // n_chunks for i in range(n_chunks + 1)]
        self.chunks = [slice(a, b) for a, b in zip(bounds, bounds[1:])]
        self._work: dict[int, tuple] = {}

    def _workspace(self, n: int):
        """Buffers for batches of ``n`` samples (two sizes per run at most)."""
        if n not in self._work:
            K, like = self.stack.K, dict(dtype=self.XT.dtype, device=self.XT.device)
            hidden = [torch.empty(K, w, n, **like) for w in self.widths[:-1]]
            back = [torch.empty_like(h) for h in hidden]
            Z, E, G = (torch.empty(K, self.n_classes, n, **like) for _ in range(3))
            S, PY, R = (torch.empty(K, 1, n, **like) for _ in range(3))
            self._work[n] = (hidden, back, Z, E, G, S, PY, R)
        return self._work[n]

    def chunk_size(self, n: int) -> int:
        wide = max(self.widths)
        return min(n, max(_MIN_CHUNK, _CHUNK_ELEMENTS // (self.stack.K * wide)))

    def _gradient(self, xT, y, sl: slice, swb, accumulate: bool) -> None:
        """Forward and backward of samples ``xT`` (F, n) for all rows: the gradient of the sum
        of their (``swb``-weighted) losses, written into (or added to) ``stack.grad``."""
        st, K, n = self.stack, self.stack.K, xT.shape[1]
        hidden, back, Z, E, G, S, PY, R = self._workspace(n)
        yi = y.view(1, 1, n).expand(K, 1, n)
        last = len(st.W) - 1
        a = xT.expand(K, xT.shape[0], n)
        outs, pres = [a], [None]
        for k in range(last):
            z = torch.baddbmm(st.b[k], st.W[k], a, out=hidden[k])
            a = self.act(z)
            outs.append(a)
            pres.append(z if self.keep_pre else None)
        torch.baddbmm(st.b[last], st.W[last], a, out=Z)
        loss, zy, zmax = (t[:, None, sl] for t in (self.loss, self.zy, self.zmax))
        torch.amax(Z, 1, keepdim=True, out=zmax)
        torch.gather(Z, 1, yi, out=zy)
        torch.softmax(Z, 1, out=E)
        if self.mse:
            # As FastEngine: sum_c (p_c - y_c)^2 = S - 2 p_y + 1 with S = sum_c p_c^2, and
            # dL/dz = k p (p - y - R) with R = S - p_y: G = p^2 - p R, then p_y off the true
            # class. The constant k = 2 w / C is applied to the gradient sums instead.
            torch.gather(E, 1, yi, out=PY)
            torch.sum(torch.mul(E, E, out=G), 1, keepdim=True, out=S)
            torch.sub(S, PY, out=R)
            torch.sub(R, PY, out=loss)  # + 1, / C at the end of the epoch
            G.addcmul_(E, R, value=-1.0).scatter_add_(1, yi, PY.neg_())
        else:
            # log_softmax's loss, max - z_y + log(sum exp(z - max)), where the sum is
            # 1 / (largest probability): that is >= 1/C, so it never underflows, and the loss
            # stays finite wherever torch's log_softmax is (a diverging run is judged alike).
            torch.amax(E, 1, keepdim=True, out=PY)
            torch.sub(zmax, zy, out=loss).sub_(PY.log_())
            G = E.scatter_add_(1, yi, self.minus_one.expand(K, 1, n))
        if swb is not None:
            G.mul_(swb)
        gW, gb = st.grad_views
        g = G
        for k in range(last, -1, -1):
            if accumulate:
                gW[k].baddbmm_(g, outs[k].transpose(1, 2))
                gb[k].add_(g.sum(2))
            else:
                torch.bmm(g, outs[k].transpose(1, 2), out=gW[k])
                torch.sum(g, 2, out=gb[k])
            if k:
                d = torch.bmm(st.W[k].transpose(1, 2), g, out=back[k - 1])
                g = self.act_backward(d, outs[k], pres[k])

    def compile(self) -> None:
        """Have the fused kernel compiled (or loaded from its cache) before the first epoch is timed:
        a sweep charges its configurations their training, not numba's compilation."""
        if self.fused:
            _fused.compile_for(self.XT.numpy(), self.y.numpy(), self.ones, self.w_loss.numpy(),
                               self.stack.flat.numpy(), self.shapes, self.offsets, self.mse,
                               self.fused_grad.shape[0], self.fused_grad, self.fused_stats)

    def run_epoch(self, perm, sw, batch_size: int, lrs: torch.Tensor, grad_scale,
                  optimizer: RowOptimizer) -> torch.Tensor:
        """All steps of one epoch (one step when ``perm`` is None: full batch, chunked).

        ``sw`` (N,) weighs each sample's loss (None: uniform, folded into ``grad_scale``, a
        float or a (K, 1) column). ``lrs`` (K, steps). Fills ``self.loss/zy/zmax`` per sample
        in epoch order and returns the labels in that order.
        """
        st = self.stack
        n = self.XT.shape[1]
        if perm is None and self.fused:
            gw = self.ones if sw is None else sw.numpy()
            _fused.epoch(self.XT.numpy(), self.y.numpy(), gw, self.w_loss.numpy(),
                         st.flat.numpy(), self.shapes, self.offsets, self.mse,
                         self.fused_grad.shape[0], self.fused_grad, self.fused_stats)
            st.grad.copy_(torch.from_numpy(self.fused_grad.sum(0)))
            optimizer.step(st.flat, st.grad.mul_(grad_scale), lrs[:, :1])
            return self.y
        if perm is None:
            XT, y = self.XT, self.y
            for i, sl in enumerate(self.chunks):
                swb = None if sw is None else sw[sl].view(1, 1, -1)
                self._gradient(XT[:, sl], y[sl], sl, swb, accumulate=i > 0)
            optimizer.step(st.flat, st.grad.mul_(grad_scale), lrs[:, :1])
        else:
            XT = torch.index_select(self.XT, 1, perm, out=self.XTp)
            y = torch.index_select(self.y, 0, perm, out=self.yp)
            for i, s in enumerate(range(0, n, batch_size)):
                sl = slice(s, min(s + batch_size, n))
                swb = None if sw is None else sw[sl].view(1, 1, -1)
                self._gradient(XT[:, sl], y[sl], sl, swb, accumulate=False)
                scale = grad_scale if sw is not None else grad_scale / (sl.stop - sl.start)
                optimizer.step(st.flat, st.grad.mul_(scale), lrs[:, i : i + 1])
        if self.mse:
            self.loss.add_(1).div_(self.n_classes)
        return y

    @torch.no_grad()
    def epoch_stats(self, w_ep: torch.Tensor) -> list[torch.Tensor]:
        """Weighted mean training loss and accuracy (K,) of the epoch just run."""
        if self.fused:
            sums = torch.from_numpy(self.fused_stats.sum(0)).to(self.XT.dtype)
            loss, correct = sums[:, 0], sums[:, 1]
            if self.mse:
                loss = (loss + w_ep.sum()) / self.n_classes  # the + 1 and / C of each sample
            return [loss / w_ep.sum(), correct / self.XT.shape[1]]
        return [(self.loss * w_ep).sum(1) / w_ep.sum(),
                (self.zy >= self.zmax).to(self.XT.dtype).mean(1)]

    @torch.no_grad()
    def evaluate(self, flat: torch.Tensor, XT: torch.Tensor, y: torch.Tensor,
                 w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted mean loss and accuracy of the networks in ``flat`` rows on ``XT`` (F, N)."""
        W, b = _layer_views(flat, self.stack.layer_shapes)
        K, n = flat.shape[0], XT.shape[1]
        loss_sum = flat.new_zeros(K)
        correct = flat.new_zeros(K)
        step = self.chunk_size(n)
        for s in range(0, n, step):
            xT, yb = XT[:, s : s + step], y[s : s + step]
            a = xT.expand(K, *xT.shape)
            for k in range(len(W)):
                a = torch.baddbmm(b[k].unsqueeze(2), W[k], a)
                if k < len(W) - 1:
                    a = self.act(a)
            yk = yb.expand(K, len(yb))
            loss_sum += (self.loss_fn(a, yk, 1) * w[s : s + step]).sum(1)
            true = a.gather(1, yk.unsqueeze(1)).squeeze(1)
            correct += (true >= a.amax(1)).to(a.dtype).sum(1)
        return loss_sum / w.sum(), correct / n


class _Member:
    """One configuration of a group: its settings, model, result and schedule."""

    def __init__(self, index: int, name: str, config: TrainConfig, result: TrainResult):
        self.index, self.name, self.config, self.result = index, name, config, result
        self.schedule = SCHEDULES[config.schedule]


def train_stacked(X, y, configs: list[TrainConfig], names: list[str], n_classes: int, *,
                  callbacks: Sequence[Callback] = (),
                  on_done: Callable[[int, TrainResult], None] | None = None) -> list[TrainResult]:
    """Train ``configs`` (one :func:`featmlp.sweep._grid.stack_key`) together.

    Returns one :class:`~featmlp.training.TrainResult` per configuration, as ``train()`` would.
    Each callback's ``on_config_epoch(name, record, history)`` is told each epoch of each
    configuration (True from any of them stops that one);
    ``on_done(i, result)`` each configuration as it finishes.
    """
    c0 = configs[0]
    if not _uses_fused(c0):
        return _train_stacked(X, y, configs, names, n_classes, callbacks, on_done)
    # The fused kernel runs on numba's threads; torch's OpenMP team, left at 2 threads, would
    # spin-wait on the same cores after each small op of the step (see the module docstring).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_stacked(X, y, configs, names, n_classes, callbacks, on_done)
    finally:
        torch.set_num_threads(before)


def _uses_fused(c0: TrainConfig) -> bool:
    """Whether a group's epochs run in the fused kernel: full-batch ReLU networks, CPU."""
    return (OPTIMIZERS[c0.optimizer].full_batch and c0.activation == "relu"
            and resolve_device(c0.device).type == "cpu")


def _train_stacked(X, y, configs, names, n_classes, callbacks, on_done):
    c0 = configs[0]
    X, y = check_data(X, y, "X", "y")
    prepared = training_rows(X, y, c0)  # stacked groups have no flips (see stack_key)
    X, y, X_val, y_val = prepared.X, prepared.y, prepared.X_val, prepared.y_val
    device, scaler = prepared.device, prepared.scaler
    spec = prepared.spec(c0, n_classes)

    # Initial weights exactly as train() draws them (initial_model), inside a fork of the generators
    # so the caller's random state is left as it was.
    members, rows = [], []
    with seeded(device):
        for i, (config, name) in enumerate(zip(configs, names)):
            model = initial_model(config.spec(X.shape[1], n_classes), config.seed, device)
            rows.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
            members.append(_Member(i, name, config,
                                   TrainResult(model, scaler, spec, config, device=str(device))))
    order_rng = batch_order_rng(c0.seed)
    layers = members[0].result.model.linear_layers()
    stack = _Stack(torch.stack(rows), [tuple(layer.weight.shape) for layer in layers])

    X_t = torch.from_numpy(scaler.transform(X)).to(device)
    y_t = torch.from_numpy(y).to(device)
    class_w = class_weights(y, n_classes, c0.class_weight)
    w_t = torch.from_numpy(class_w[y]).to(device)
    weighted = bool(np.ptp(class_w[np.unique(y)]) > 0)
    if X_val is not None:
        Xv_T = torch.from_numpy(scaler.transform(X_val)).to(device).t().contiguous()
        yv_t = torch.from_numpy(y_val).to(device)
        wv_t = torch.from_numpy(class_w[y_val]).to(device)
    fused = _uses_fused(c0) and X_t.dtype == torch.float32
    engine = _Engine(stack, spec, X_t.t().contiguous(), y_t, weighted, fused)
    engine.w_loss = w_t
    engine.compile()
    optimizer = RowOptimizer(c0.optimizer, stack.flat, configs)

    n = len(y)
    full_batch = OPTIMIZERS[c0.optimizer].full_batch
    batch_size = n if full_batch else min(c0.batch_size, n)
    steps = math.ceil(n / batch_size)
    mse_k = 2.0 / n_classes if spec.head == "mse" else 1.0
    if full_batch:
        # train(): the step's sample weights are w * gd_scale / sum(w), gd_scale the lecture's
        # ceil(N / lecture_batch_size) per configuration.
        gd_scale = torch.tensor([gd_gradient_scale(c, n) for c in configs], dtype=X_t.dtype,
                                device=device)[:, None]
        sw_gd = (w_t / w_t.sum()) if weighted else None
        gd_grad_scale = gd_scale * (mse_k if weighted else mse_k / n)

    def finish(m: _Member, row: int, reason: str) -> None:
        model = m.result.model
        offset = 0
        for p in model.parameters():
            k = p.numel()
            p.data = stack.flat[row, offset : offset + k].clone().view_as(p)
            offset += k
        model.eval()
        m.result.stop_reason = reason
        if on_done is not None:
            on_done(m.index, m.result)

    active = list(members)
    best_loss = [math.inf] * len(members)
    previous_state = None
    epochs = {m.index: planned_epochs(m.config, steps) for m in members}
    for epoch in range(1, max(epochs.values()) + 1):
        start = time.perf_counter()
        state = stack.flat.clone()
        if full_batch:
            perm, w_ep, sw, grad_scale = None, w_t, sw_gd, gd_grad_scale
        else:
            perm = torch.randperm(n, generator=order_rng).to(device)
            w_ep = w_t[perm]
            sw = within_batch_weights(w_ep, batch_size) if weighted else None
            grad_scale = mse_k
        first = (epoch - 1) * steps
        lrs = [[m.config.lr * m.schedule((first + s) / (steps * epochs[m.index]))
                for s in range(steps)] for m in active]
        lrs_t = torch.tensor(lrs, dtype=X_t.dtype, device=device)
        engine.run_epoch(perm, sw, batch_size, lrs_t, grad_scale, optimizer)
        with torch.no_grad():
            stats = engine.epoch_stats(w_ep) + [torch.isfinite(stack.flat).all(1).to(X_t.dtype)]
            if X_val is not None:
                stats += engine.evaluate(stack.flat, Xv_T, yv_t, wv_t)
            stats = torch.stack(stats, 1).tolist()  # one device sync per epoch
        seconds = (time.perf_counter() - start) / len(active)

        keep, finished = [], []
        for row, (m, values) in enumerate(zip(active, stats)):
            train_loss, train_acc, finite = values[0], values[1], bool(values[2])
            record = epoch_record(epoch, train_loss, train_acc, lrs[row][-1], seconds)
            if X_val is not None and can_validate(record, finite):
                record[VAL_LOSS], record[VAL_ACCURACY] = values[3], values[4]
            if diverged(record, finite):
                # train()'s rule: back to the weights this epoch started from if their loss is
                # finite, else to those of the epoch before; this epoch's record is dropped.
                stack.flat[row] = state[row]
                if previous_state is not None and not math.isfinite(float(engine.evaluate(
                        state[row : row + 1], engine.XT, engine.y, w_t)[0][0])):
                    stack.flat[row] = previous_state[row]
                m.result.diverged = True
                finished.append((m, row, "diverged"))
                continue
            m.result.history.append(record)
            if X_val is not None and record[VAL_LOSS] < best_loss[m.index]:
                best_loss[m.index], m.result.best_epoch = record[VAL_LOSS], epoch
            # Every callback is told, as train() tells all of its callbacks before stopping.
            stop = any([bool(cb.on_config_epoch(m.name, record, m.result.history)) for cb in callbacks])
            if stop:
                finished.append((m, row, "callback"))
            elif epoch >= epochs[m.index]:
                finished.append((m, row, "completed"))
            else:
                keep.append(row)
        for m, row, reason in finished:
            finish(m, row, reason)
        if not keep:
            break
        if len(keep) < len(active):
            # Drop finished rows: the others go on without computing for them.
            rows_t = torch.tensor(keep, device=device)
            stack.set_flat(stack.flat[rows_t].contiguous())
            optimizer.select(rows_t)
            state = state[rows_t]
            if full_batch:
                gd_grad_scale = gd_grad_scale[rows_t]
            engine.reset()
            active = [active[r] for r in keep]
        previous_state = state
    return [m.result for m in members]

"""Training: settings, optimisers, schedules, presets and the loop that records one history.

Read top to bottom: :class:`TrainConfig` (every setting of a run, a frozen dataclass that is written
as JSON), the registries (:data:`OPTIMIZERS`, :data:`SCHEDULES`, :data:`PRESETS`), then
:func:`train`, a plain epoch loop. Each epoch appends one dict to the run's history; callbacks
(printing, live plots, anything else) read that history and may stop the run.

Two engines run the steps of an epoch. Both update one flat parameter vector with the same
optimiser code and write the epoch's logits into one buffer, from which the epoch's loss and
accuracy are computed in a single vectorised pass (no ``.item()`` per step):

- ``_FastEngine``: a hand-written forward and backward pass for plain MLPs (no dropout, no batch
  norm), in a feature-major layout. Per-step overhead, not arithmetic, dominates small networks.
  The measurements behind it are in the comments there.
- ``_AutogradEngine``: the ``nn.Module`` with autograd, for dropout, batch norm, a bottleneck and
  tables too large for the hand-written engine's copies.

The lecture's gradient descent
------------------------------
``optimizer="gd"`` is full-batch gradient descent on the mean loss over all training samples: the
whole training set is one tensor, one forward and backward pass and one step ``w <- w - lr * grad``
per epoch (~2 ms for 50,000 x 9 -> 6 -> 10 on this machine's CPU; the lecture's loop over a
DataLoader took ~0.3-0.7 s for the same gradient). The ``"lecture"`` preset runs it at lr 10: slow
descent at lr 10, faster at 50, jitter at 500 and a jump to saturated outputs at 5000, the
behaviour the lecture's learning-rate experiment shows.

The notebook's loop wrote the epoch's loss as the *sum* of the mean losses of its minibatches (64
samples) and stepped on the gradient of that sum, which is ``ceil(N / 64)`` times the gradient of
the mean loss (exactly when 64 divides N; in expectation over the shuffle otherwise: the last,
smaller batch weighs its samples more). So the notebook's lr ``eta`` on its summed loss is lr
``eta * ceil(N / 64)`` here (782 x for N = 50,000), and ``lecture_batch_size=64`` applies that
factor for you, to rerun the notebook's loop literally. We always *report* the mean loss over
samples (the lecture printed its sum of batch means divided by N).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from featmlp._engines import (_FAST_ACTIVATIONS, _AutogradEngine, _FastEngine,  # noqa: F401
                              ScaledRows, _flatten_parameters, _unflatten_parameters)
from featmlp.errors import ConfigError, DataError
from featmlp.model import (SCALERS, MLPSpec, Scaler, build_mlp, is_permutation, loss_function, nonfinite_rows,
                           predict_proba, settings_from_dict)
from featmlp.progress import ProgressHook


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run; ``dataclasses.asdict`` gives its JSON form.

    ``TrainConfig()`` is ``PRESETS["default"]``.

    Start from a preset and override field by field:
    ``dataclasses.replace(PRESETS["lecture"], lr=50.0)``.

    Parameters
    ----------
    hidden, activation, dropout, batch_norm, head, bottleneck
        The network (see :class:`featmlp.model.MLPSpec`); its input and output sizes come from
        the data.
    optimizer : str
        A key of :data:`OPTIMIZERS`: ``"gd"`` (full-batch gradient descent, one step per epoch,
        the lecture's), ``"sgd"`` (minibatch, with ``momentum``), ``"adam"``, ``"adamw"``.
    lr : float
        Learning rate (the peak one under a schedule).
    epochs : int
        Passes over the training set (the most, with early stopping).
    batch_size : int
        Minibatch size; unused by ``"gd"``.
    momentum : float
        Momentum of ``"sgd"``.
    weight_decay : float
        L2 penalty added to the gradient (``"gd"``, ``"sgd"``, ``"adam"``) or decoupled decay
        (``"adamw"``).
    schedule : str
        A key of :data:`SCHEDULES`: ``"none"``, ``"cosine"``, ``"onecycle"``; applied per step.
    lecture_batch_size : int or None
        ``"gd"`` only: step on the gradient of the sum of the mean losses of batches of this size,
        ``ceil(N / lecture_batch_size)`` times the mean loss's, as the notebook's loop literally
        did (see the module docstring). None: the mean loss (the ``"lecture"`` preset).
    scaler : str
        A key of :data:`featmlp.model.SCALERS`, fitted on the training rows only.
    val_fraction : float
        Fraction of the training set held out (stratified, seeded) for validation, in [0, 1).
    patience : int
        Early stopping: stop after this many epochs without a lower validation loss and restore
        the best weights. 0 turns it off; needs validation data.
    class_weight : None, "balanced" or tuple of float
        ``"balanced"`` weighs each class's loss by ``n_samples / (n_classes * count)``; a tuple
        gives one weight per class index. Each step minimises its batch's weighted mean loss.
    seed : int
        Seeds initial weights, the validation split, the order of minibatches and dropout. A CPU
        run with a given seed repeats exactly.
    device : str
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    flip : bool
        Train on every training image and its horizontal mirror image as well (twice the rows
        per epoch). Needs the column permutation that mirrors the features (``mirror=`` of
        :func:`train`; feature sets ``kmeans`` and ``color`` have one).
    test_flip : bool
        Predict with the mean of the probabilities of each image and its mirror image.
    label_smoothing : float
        ``"ce"`` only: train against ``(1 - e) one_hot + e / C`` instead of the one-hot labels.
    """

    # The defaults are PRESETS["default"]: the best of the settings we tried on the lecture's
    # CIFAR-10 features, judged on a validation split of the training set (never the test set):
    # hidden (256, 256), Adam, lr 3e-3, cosine, 30 epochs: 35.6% / 35.3% validation accuracy
    # (seeds 0 / 1); (64,) at lr 1e-3 33.3%, (128, 128) 35.6% / 34.8%, (512, 256) 35.2%,
    # 60 epochs 34.5% (overfits), batch norm, GELU, AdamW or one-cycle within 0.5% (noise).
    hidden: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    dropout: float = 0.0
    batch_norm: bool = False
    head: str = "ce"
    optimizer: str = "adam"
    lr: float = 3e-3
    epochs: int = 30
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    lecture_batch_size: int | None = None
    scaler: str = "standard"
    val_fraction: float = 0.0
    patience: int = 0
    class_weight: str | tuple[float, ...] | None = None
    seed: int = 0
    device: str = "auto"
    bottleneck: int = 0
    flip: bool = False
    test_flip: bool = False
    label_smoothing: float = 0.0

    def spec(self, n_features: int, n_classes: int) -> MLPSpec:
        """The :class:`MLPSpec` of this configuration for data of the given sizes."""
        return MLPSpec(n_features, n_classes, tuple(self.hidden), self.activation,
                       self.dropout, self.batch_norm, self.head, self.bottleneck)

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad value and what is accepted."""
        self.spec(1, 1).validate()
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("scaler", self.scaler, SCALERS)
        cw = self.class_weight
        if not (cw is None or cw == "balanced" or (
                isinstance(cw, (tuple, list)) and cw and all(
                    isinstance(w, (int, float, np.number)) and not isinstance(w, bool)
                    and math.isfinite(w) and w >= 0 for w in cw) and sum(cw) > 0)):
            raise ConfigError(
                f"class_weight {cw!r} is not one of: None, 'balanced', or a tuple of one "
                f"non-negative weight per class"
            )
        # the weights are float32: a larger lr cannot even be applied (torch raises)
        _check_number("lr", self.lr, low=0, low_open=True, high=float(torch.finfo(torch.float32).max))
        _check_int("epochs", self.epochs, low=1)
        _check_int("batch_size", self.batch_size, low=1)
        _check_number("momentum", self.momentum, low=0, high=1, high_open=True)
        _check_number("weight_decay", self.weight_decay, low=0)
        _check_number("val_fraction", self.val_fraction, low=0, high=1, high_open=True)
        _check_int("patience", self.patience, low=0)
        _check_int("seed", self.seed, low=0)
        if self.lecture_batch_size is not None:
            _check_int("lecture_batch_size", self.lecture_batch_size, low=1)
            if self.optimizer != "gd":
                raise ConfigError(
                    f"lecture_batch_size applies to optimizer 'gd' only, not {self.optimizer!r}: "
                    f"set it to None"
                )
        _check_number("label_smoothing", self.label_smoothing, low=0, high=1, high_open=True)
        if self.label_smoothing and self.head != "ce":
            raise ConfigError(f"label_smoothing applies to head 'ce' only, not {self.head!r}: set it to 0")
        for name in ("flip", "test_flip"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu") or self.device.startswith("cuda")
        ):
            raise ConfigError(f"device {self.device!r} is not one of: auto, cpu, cuda, cuda:N")

    def to_dict(self) -> dict:
        """JSON-ready dict; :meth:`from_dict` inverts it."""
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        if isinstance(self.class_weight, tuple):
            d["class_weight"] = list(self.class_weight)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Rebuild a configuration from :meth:`to_dict` (e.g. a run's ``config.json``)."""
        return settings_from_dict(cls, d, "training setting")


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{name} {value!r} is not one of: {', '.join(choices)}")


def _check_int(name: str, value, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_number(name, value, *, low=None, high=None, low_open=False, high_open=False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.number)) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else ("(" if low_open else "[") + str(low)
        hi = "" if high is None else str(high) + (")" if high_open else "]")
        rng = f"in {lo}, {hi}" if lo and hi else (f"> {low}" if low_open else f">= {low}")
        raise ConfigError(f"{name} must be a finite number {rng}, got {value!r}")


# --------------------------------------------------------------------------------------------
# Optimisers: small classes updating one flat parameter vector in place (scikit-learn's shape).
# Their arithmetic follows torch.optim's SGD, Adam and AdamW; tests compare them with it.
# --------------------------------------------------------------------------------------------

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


# Named configurations; override with dataclasses.replace(PRESETS[name], field=value, ...).
PRESETS: dict[str, TrainConfig] = {
    # The lecture notebook: minmax features (the fixed one), 9 -> 6 -> 10 ReLU, softmax + MSE
    # against one-hot labels, full-batch gradient descent on the mean loss, lr 10, 20 epochs.
    "lecture": TrainConfig(
        hidden=(6,), activation="relu", dropout=0.0, batch_norm=False, head="mse",
        optimizer="gd", lr=10.0, epochs=20, batch_size=64, weight_decay=0.0, schedule="none",
        scaler="minmax", val_fraction=0.0, patience=0, class_weight=None,
    ),
    # The best model we found on the lecture's 50,000 x 9 CIFAR-10 features, tuned on a
    # validation split of the training set (see TrainConfig's defaults).
    "default": TrainConfig(),
    # For wide feature sets (lecture+hog+color: 355 columns) the default overfits (train
    # accuracy 1.0). On a 10% validation split of CIFAR-10's train: default 0.625, dropout 0.3
    # 0.654, 0.5 0.649; on the 9 lecture features dropout 0.3 costs 0.008 (0.348 vs 0.356).
    "wide": TrainConfig(dropout=0.3),
    # For thousands of learned features (kmeans: 14,400 columns at K=1600, 3x3 pooling): a
    # linear bottleneck, one wide hidden layer with dropout, label smoothing, centred columns
    # with one common scale, flipped training images and flip-averaged predictions. Chosen on
    # a 45,000 / 5,000 split of CIFAR-10's train (validation accuracy with test flips, 12
    # epochs unless said): standard scaling 0.777 (30 epochs) -> global scaling 0.786 (30) /
    # 0.777 (12); + label smoothing 0.1 0.784 (0.2: 0.784); AdamW weight decay 0.05 0.775;
    # dropout 0.2 after the bottleneck 0.761; input dropout 0.2 no better at twice the time;
    # mixup (alpha 0.3) 0.781; a 4x4 pooling grid 0.782 at twice the time; a 256 bottleneck
    # 0.790, 256 -> 2048 0.794, 384 -> 1024 0.792 (the step costs ~1.5x the 128 one's).
    "kmeans": TrainConfig(hidden=(2048,), bottleneck=256, dropout=0.5, lr=1e-3, epochs=30,
                          scaler="global", label_smoothing=0.1, flip=True, test_flip=True),
}


# --------------------------------------------------------------------------------------------
# Callbacks and the run's record
# --------------------------------------------------------------------------------------------

class Callback:
    """Base class of objects told about a run; override what you need.

    A plain callable ``f(record, history)`` passed in ``callbacks`` acts as :meth:`on_epoch`.
    """

    def on_train_begin(self, config: TrainConfig) -> None:
        """Called once before the first epoch."""

    def on_epoch(self, record: dict, history: list[dict]) -> bool | None:
        """Called after each epoch with its record (also ``history[-1]``); return True to stop."""

    def on_train_end(self, history: list[dict]) -> None:
        """Called once after the last epoch, also after a divergence or a requested stop."""


class LivePlot(Callback):
    """Keep a loss plot current while a run goes: rewritten at most every ``every_seconds``
    and once at the end (plotting every epoch would cost more than a fast epoch).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "loss.png"
    >>> X = np.random.default_rng(0).normal(size=(60, 3)); y = (X[:, 0] > 0).astype(int)
    >>> _ = train(X, y, TrainConfig(epochs=2), callbacks=[LivePlot(path)])
    >>> path.exists()
    True
    """

    def __init__(self, path, every_seconds: float = 2.0, log_scale: bool = False):
        self.path = path
        self.every_seconds = every_seconds
        self.log_scale = log_scale
        self._last = 0.0

    def on_train_begin(self, config: TrainConfig) -> None:
        self._last = time.perf_counter()

    def on_epoch(self, record: dict, history: list[dict]) -> None:
        now = time.perf_counter()
        if now - self._last >= self.every_seconds:
            self._plot(history)
            self._last = time.perf_counter()

    def on_train_end(self, history: list[dict]) -> None:
        self._plot(history)

    def _plot(self, history: list[dict]) -> None:
        from featmlp.plots import plot_history

        if history:
            plot_history(history, self.path, log_scale=self.log_scale)


class _CallableCallback(Callback):
    def __init__(self, fn: Callable[[dict, list[dict]], Any]):
        self.fn = fn

    def on_epoch(self, record: dict, history: list[dict]) -> bool | None:
        return self.fn(record, history)


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    model : featmlp.model.MLP
        The trained network, in eval mode (best weights under early stopping, last finite
        weights after a divergence).
    scaler : featmlp.model.Scaler
        Fitted on the training rows; apply it to any features before the model.
    spec, config
        The network's spec and the run's settings.
    history : list of dict
        One record per finished epoch: ``epoch``, ``train_loss`` (mean over samples),
        ``train_accuracy``, ``lr``, ``seconds`` (that epoch's training time), and
        ``val_loss``/``val_accuracy`` with validation data.
    diverged : bool
        The loss or the weights became NaN or infinite; training stopped there.
    stop_reason : str
        ``"completed"``, ``"early_stopping"``, ``"callback"`` or ``"diverged"``.
    best_epoch : int or None
        Epoch of the lowest validation loss (the weights kept under early stopping).
    """

    model: nn.Module
    scaler: Scaler
    spec: MLPSpec
    config: TrainConfig
    history: list[dict] = field(default_factory=list)
    diverged: bool = False
    stop_reason: str = "completed"
    best_epoch: int | None = None
    device: str = "cpu"
    mirror: np.ndarray | None = None

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities for raw (unscaled) features ``X``, rows in order.

        With ``config.test_flip`` the mean of each row's and its mirror image's probabilities.
        """
        return predict_proba(self.model, self.scaler, X,
                             mirror=self.mirror if self.config.test_flip else None)

    def predict(self, X) -> np.ndarray:
        """Most probable class index for each row of raw features ``X``."""
        return self.predict_proba(X).argmax(axis=1)


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------

def train(
    X,
    y,
    config: TrainConfig | None = None,
    *,
    n_classes: int | None = None,
    X_val=None,
    y_val=None,
    callbacks: Iterable[Callback | Callable] = (),
    progress: ProgressHook | None = None,
    mirror=None,
) -> TrainResult:
    """Fit a scaler and an MLP to features ``X`` (N, F) and integer labels ``y`` (N,).

    Parameters
    ----------
    X, y : array-like
        Training features and labels ``0 .. n_classes - 1``.
    config : TrainConfig, optional
        Settings; ``PRESETS["default"]`` when omitted.
    n_classes : int, optional
        Number of classes (``len(class_names)``); defaults to the largest label + 1.
    X_val, y_val : array-like, optional
        Validation data, recorded each epoch; instead of ``config.val_fraction``, not with it.
    callbacks : iterable of Callback or callable
        Told about the run; a callable ``f(record, history)`` is called after each epoch. Any
        of them returning True stops training after that epoch.
    progress : callable, optional
        Progress hook ``progress("train", epochs_done, epochs)``.
    mirror : array of int (F,), optional
        Column permutation giving the features of the horizontally mirrored images:
        ``features(flipped images) == X[:, mirror]`` (:func:`featmlp.features.mirror_permutation`).
        Needed by ``config.flip`` and ``config.test_flip``.

    Returns
    -------
    TrainResult
        Model, scaler and the history of the run. A loss or weights that become NaN or
        infinite end the run with ``diverged=True`` and the last finite weights; no exception.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> X, y = make_classification(300, 9, n_informative=5, n_classes=3, random_state=0)
    >>> result = train(X, y, TrainConfig(epochs=5, val_fraction=0.2))
    >>> [sorted(r) for r in result.history][0]
    ['epoch', 'lr', 'seconds', 'train_accuracy', 'train_loss', 'val_accuracy', 'val_loss']
    >>> result.predict_proba(X[:2]).shape
    (2, 3)
    """
    config = PRESETS["default"] if config is None else config
    X, y, X_val, y_val, n_classes, mirror, device = _checked_inputs(X, y, config, n_classes, X_val, y_val, mirror)
    if config.val_fraction:
        X, y, X_val, y_val = _split_validation(X, y, config.val_fraction, config.seed)
    spec = config.spec(X.shape[1], n_classes)
    # With flips the scaler is that of the training rows and their mirror images together.
    scaler = Scaler.fit(X, config.scaler, mirror=mirror if config.flip else None)
    callbacks = [cb if isinstance(cb, Callback) else _CallableCallback(cb) for cb in callbacks]

    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        # Seed the global generator (initial weights, dropout) inside fork_rng so a library call
        # leaves the caller's random state as it was; the batch order has its own generator.
        torch.manual_seed(config.seed)
        model = build_mlp(spec).to(device)
        order_rng = torch.Generator().manual_seed(config.seed)
        with _threads_for(spec, config, len(y), device):
            result = _run(model, spec, config, scaler, X, y, X_val, y_val, device, order_rng,
                          callbacks, progress, mirror)
    return result


# Below this many multiply-adds per step, train on one CPU thread. Measured on this 2-core
# machine: 9 -> 64 -> 10 at batch 256 takes 0.020 s/epoch on one thread and 0.023 s on two when
# the machine is quiet, 0.4-0.7 s on two when another process holds the second core (OpenMP
# threads wait on each other at every small op); the lecture's full-batch epoch 2.2 ms against
# 1.7-300 ms. From (256, 256) at batch 256 (18M per step) two threads are 1.6x faster.
_SINGLE_THREAD_WORK = 8_000_000
# The user's word on the thread count, above every rule here.
THREADS_ENV = "FEATMLP_NUM_THREADS"


def threads_override() -> int | None:
    """The thread count the user set for training, or None to let :func:`training_threads` choose.

    ``FEATMLP_NUM_THREADS=N`` trains on N CPU threads whatever the network and the machine's
    load. Without it, an ``OMP_NUM_THREADS`` the user set is honoured as torch applied it (the
    thread count torch started with is kept).

    Raises
    ------
    ConfigError
        ``FEATMLP_NUM_THREADS`` is set to something other than a positive integer.
    """
    value = os.environ.get(THREADS_ENV, "").strip()
    if value:
        try:
            threads = int(value)
        except ValueError:
            threads = 0
        if threads < 1:
            raise ConfigError(f"{THREADS_ENV}={value!r} is not a positive number of threads: set it "
                              f"to 1, 2, ... or unset it to let featmlp choose")
        return threads
    if os.environ.get("OMP_NUM_THREADS", "").strip():
        return torch.get_num_threads()
    return None


def training_threads(work: int, available: int, *, override: int | None = None,
                     idle_cores: float | None = None) -> int:
    """How many CPU threads to train with: a pure function of the sizes, the override and the load.

    Parameters
    ----------
    work : int
        Multiply-adds of one step's forward pass (batch rows x the weights of every layer).
    available : int
        Threads torch has (its default: the cores).
    override : int, optional
        The user's choice (:func:`threads_override`): returned as it is.
    idle_cores : float, optional
        Cores other processes leave free (:func:`idle_cores`); None when not measured.

    Returns
    -------
    int
        1 below ``_SINGLE_THREAD_WORK`` (small steps: the threads would wait on each other at
        every op); else as many as there are idle cores (OpenMP's threads all wait for the
        slowest at each op, and one sharing its core with a busy process is slower than a
        single thread alone), at most ``available``.

    Examples
    --------
    >>> training_threads(9 * 6 * 50_000, 2)            # the lecture network, full batch
    1
    >>> training_threads(256 * 70_400, 2, idle_cores=1.9)  # 9 -> 256 -> 256 -> 10, quiet
    2
    >>> training_threads(256 * 70_400, 2, idle_cores=1.0)  # another process busy
    1
    >>> training_threads(100, 2, override=2)
    2
    """
    if override is not None:
        return override
    if available <= 1 or work < _SINGLE_THREAD_WORK:
        return 1
    if idle_cores is None:
        return available
    return max(1, min(available, int(idle_cores + 0.25)))


def idle_cores(seconds: float = 0.1) -> float | None:
    """Cores that other processes left idle over the next ``seconds`` (Linux ``/proc/stat``).

    This process's own CPU time in the window is not counted as busy. None where
    ``/proc/stat`` cannot be read.
    """
    def read():
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
        return sum(ticks), ticks[3] + ticks[4], time.perf_counter(), time.process_time()

    try:
        total0, idle0, wall0, own0 = read()
        time.sleep(seconds)
        total1, idle1, wall1, own1 = read()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0 or wall1 <= wall0:
        return None
    cores = (total1 - total0) / (os.sysconf("SC_CLK_TCK") * (wall1 - wall0))
    busy = cores * (1 - (idle1 - idle0) / (total1 - total0)) - (own1 - own0) / (wall1 - wall0)
    return max(0.0, cores - max(0.0, busy))


@contextlib.contextmanager
def _threads_for(spec: MLPSpec, config: TrainConfig, n: int, device: torch.device):
    """Train on :func:`training_threads`'s count; torch's own is restored afterwards."""
    widths = [spec.n_features, *([spec.bottleneck] if spec.bottleneck else []), *spec.hidden,
              spec.n_classes]
    batch = n if OPTIMIZERS[config.optimizer].full_batch else min(config.batch_size, n)
    work = batch * sum(a * b for a, b in zip(widths, widths[1:]))
    before = torch.get_num_threads()
    override = threads_override()
    # The load is measured (0.1 s) only where it can change the answer.
    measure = device.type == "cpu" and override is None and before > 1 and work >= _SINGLE_THREAD_WORK
    threads = training_threads(work, before, override=override,
                               idle_cores=idle_cores() if measure else None)
    if device.type != "cpu" or threads == before:
        yield
        return
    torch.set_num_threads(threads)  # process-wide: restored as soon as training ends
    try:
        yield
    finally:
        torch.set_num_threads(before)


# The hand-written engine keeps three copies of the scaled features (stored, transposed,
# shuffled); above this size the autograd engine, which scales each batch as it gathers it, runs
# instead (14,400 learned features x 50,000 images are 2.9 GB a copy).
_FAST_ENGINE_BYTES = 1 << 30


def _run(model, spec, config, scaler, X, y, X_val, y_val, device, order_rng, callbacks, progress,
         mirror=None):
    flip = config.flip
    rows = 2 * len(y) if flip else len(y)  # with flips, rows N.. are the mirror images of 0..
    plain = (not spec.batch_norm and spec.dropout == 0 and not spec.bottleneck
             and rows * X.shape[1] * 4 <= _FAST_ENGINE_BYTES)
    class_w = _class_weights(y, spec.n_classes, config.class_weight)
    if flip:
        y = np.concatenate([y, y])
    n = len(y)
    y_t = torch.from_numpy(y).to(device)
    w_t = torch.from_numpy(class_w[y]).to(device)
    if plain:
        X_t = torch.from_numpy(scaler.transform(np.concatenate([X, X[:, mirror]]) if flip else X)).to(device)
    else:
        X_t = ScaledRows(X, scaler, mirror if flip else None, device)
    if X_val is not None:
        Xv_t = torch.from_numpy(scaler.transform(X_val)).to(device)
        yv_t = torch.from_numpy(y_val).to(device)
        wv_t = torch.from_numpy(class_w[y_val]).to(device)

    flat, grad = _flatten_parameters(model)
    engine = (_FastEngine if plain else _AutogradEngine)(model, spec, X_t, y_t,
                                                         label_smoothing=config.label_smoothing)
    optimizer = OPTIMIZERS[config.optimizer](flat, config)
    step_fn = lambda lr: optimizer.step(grad, lr)  # noqa: E731 (one closure per run)
    loss_fn = loss_function(spec.head, config.label_smoothing)
    schedule = SCHEDULES[config.schedule]

    full_batch = OPTIMIZERS[config.optimizer].full_batch
    batch_size = n if full_batch else min(config.batch_size, n)
    engine.prepare(batch_size)
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = steps_per_epoch * config.epochs
    if full_batch:
        # One step on all samples: their order does not matter (no shuffle), their weights are
        # the same each epoch.
        gd_scale = math.ceil(n / config.lecture_batch_size) if config.lecture_batch_size else 1
        gd_weights = w_t * (gd_scale / w_t.sum())

    result = TrainResult(model, scaler, spec, config, device=str(device))
    history = result.history
    best_loss, best_state = math.inf, None
    for cb in callbacks:
        cb.on_train_begin(config)
    previous_state = None
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        state = _snapshot(model, flat)
        if full_batch:
            perm, w_ep, sw = None, w_t, gd_weights
        else:
            perm = torch.randperm(n, generator=order_rng).to(device)
            w_ep = w_t[perm]
            sw = _within_batch_weights(w_ep, batch_size)
        first = (epoch - 1) * steps_per_epoch
        lrs = [config.lr * schedule((first + s) / total_steps) for s in range(steps_per_epoch)]
        logits, losses, y_ep = engine.run_epoch(perm, sw, batch_size, step_fn, lrs)
        with torch.no_grad():
            train_loss, train_acc, finite = _loss_accuracy(logits, engine.class_dim, y_ep, w_ep,
                                                           loss_fn, flat, losses)
        seconds = time.perf_counter() - start
        record = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                  "lr": lrs[-1], "seconds": seconds}
        if X_val is not None and finite and math.isfinite(train_loss):
            record["val_loss"], record["val_accuracy"] = _evaluate(model, Xv_t, yv_t, wv_t, loss_fn)

        if not (finite and all(math.isfinite(v) for v in record.values())):
            # Keep the weights this epoch started from if they still give a finite loss (huge
            # but finite weights may not), else those the previous epoch started from, whose
            # loss that epoch's record shows finite. The record of this epoch is dropped.
            _restore(model, flat, state)
            if previous_state is not None and not math.isfinite(
                    _evaluate(model, X_t, y_t, w_t, loss_fn)[0]):
                _restore(model, flat, previous_state)
            result.diverged, result.stop_reason = True, "diverged"
            break
        previous_state = state
        history.append(record)
        if progress is not None:
            progress("train", epoch, config.epochs)

        stop = False
        if X_val is not None:
            if record["val_loss"] < best_loss:
                best_loss, result.best_epoch = record["val_loss"], epoch
                if config.patience:
                    best_state = _snapshot(model, flat)
            elif config.patience and epoch - result.best_epoch >= config.patience:
                result.stop_reason, stop = "early_stopping", True
        for cb in callbacks:
            if cb.on_epoch(record, history):
                if not stop:
                    result.stop_reason = "callback"
                stop = True
        if stop:
            break

    if best_state is not None:
        _restore(model, flat, best_state)
    _unflatten_parameters(model)
    model.eval()
    result.mirror = mirror
    for cb in callbacks:
        cb.on_train_end(history)
    return result


def _evaluate(model, X, y, w, loss_fn) -> tuple[float, float]:
    """Weighted mean loss and accuracy of the model (eval mode) on ``X``, in chunks."""
    model.eval()
    with torch.inference_mode():
        logits = torch.cat([model(xb) for xb in X.split(65536)])
        loss, acc, _ = _loss_accuracy(logits, 1, y, w, loss_fn, None)
    model.train()
    return loss, acc


def _snapshot(model, flat) -> list[torch.Tensor]:
    return [flat.clone()] + [b.clone() for b in model.buffers()]


def _restore(model, flat, state) -> None:
    flat.copy_(state[0])
    for b, saved in zip(model.buffers(), state[1:]):
        b.copy_(saved)


def _within_batch_weights(w: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``w_i / sum of w over sample i's batch``: each step minimises its batch's weighted mean."""
    n = len(w)
    n_batches = math.ceil(n / batch_size)
    padded = torch.nn.functional.pad(w, (0, n_batches * batch_size - n))
    sums = padded.view(n_batches, batch_size).sum(1)
    return w / sums.repeat_interleave(batch_size)[:n]


def _loss_accuracy(logits, dim, y, w, loss_fn, flat, losses=None) -> tuple[float, float, bool]:
    """Weighted mean loss, accuracy and whether ``flat`` is all finite, with one device sync.

    ``dim`` is the class axis of ``logits``; ``losses`` the per-sample losses when already
    known. Accuracy compares the true class's logit with the largest: on (10, 50,000) logits
    ``amax`` + ``gather`` take ~0.1 ms, ``argmax`` ~6 ms.
    """
    if losses is None:
        losses = loss_fn(logits, y, dim)
    loss = (losses * w).sum() / w.sum()
    true_logit = logits.gather(dim, y.unsqueeze(dim)).squeeze(dim)
    acc = (true_logit >= logits.amax(dim)).to(logits.dtype).mean()
    finite = torch.isfinite(flat).all().to(logits.dtype) if flat is not None else loss.new_ones(())
    loss, acc, finite = torch.stack([loss, acc, finite]).tolist()
    return loss, acc, bool(finite)


def _class_weights(y: np.ndarray, n_classes: int, mode) -> np.ndarray:
    if mode is None:
        return np.ones(n_classes, np.float32)
    if mode != "balanced":
        if len(mode) != n_classes:
            raise ConfigError(f"class_weight has {len(mode)} weights for {n_classes} classes")
        return np.asarray(mode, np.float32)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.ones(n_classes)
    weights[present] = len(y) / (present.sum() * counts[present])
    return weights.astype(np.float32)


def _split_validation(X, y, fraction, seed):
    from sklearn.model_selection import train_test_split

    n_val = math.ceil(len(y) * fraction)
    if n_val < 1 or len(y) - n_val < 1:
        raise DataError(
            f"val_fraction={fraction} leaves no training or validation rows out of {len(y)}"
        )
    idx = np.arange(len(y))
    try:
        tr, va = train_test_split(idx, test_size=n_val, stratify=y, random_state=seed)
    except ValueError:
        # Too few members in some class to stratify: split at random instead.
        tr, va = train_test_split(idx, test_size=n_val, random_state=seed)
    return X[tr], y[tr], X[va], y[va]


def check_config(config: TrainConfig, *, validation_data: bool = False) -> None:
    """Raise the error :func:`train` would raise on these settings alone, whatever the data:
    a bad value, a device this machine lacks (``cuda`` without CUDA), early stopping without
    validation (``validation_data``: X_val and y_val will be passed).

    ``featmlp run`` checks this before a long extraction.
    """
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig, got {type(config).__name__}")
    config.validate()
    _resolve_device(config.device)
    if config.patience and not (config.val_fraction or validation_data):
        raise ConfigError(
            f"patience={config.patience} (early stopping) needs validation data: set "
            f"val_fraction > 0 or pass X_val and y_val"
        )


def check_training(X, y, config: TrainConfig | None = None, *, n_classes: int | None = None,
                   X_val=None, y_val=None, mirror=None) -> None:
    """Raise the error :func:`train` would raise on these arguments before its first epoch.

    Checks the settings, the data (shapes, labels, NaN or infinite values), that the
    validation split leaves rows on both sides, early stopping's need of validation data,
    flips' need of a mirror permutation, that the device exists and that the network fits in
    its memory, without copying or training anything: a run directory calls it before it
    writes a file.

    Examples
    --------
    >>> check_training(np.zeros((4, 2)), [0, 1, 0, 1], TrainConfig(patience=3))
    Traceback (most recent call last):
    ...
    featmlp.errors.ConfigError: patience=3 (early stopping) needs validation data: set val_fraction > 0 or pass X_val and y_val
    """
    _checked_inputs(X, y, PRESETS["default"] if config is None else config, n_classes, X_val, y_val, mirror)


def _checked_inputs(X, y, config, n_classes, X_val, y_val, mirror):
    """The arguments of :func:`train`, checked and converted (the validation split is not made)."""
    from featmlp._memory import check_memory
    from featmlp.model import training_bytes

    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig, got {type(config).__name__}")
    config.validate()
    X, y = _check_data(X, y, "X", "y")
    if n_classes is None:
        n_classes = int(y.max()) + 1
        if y_val is not None:
            n_classes = max(n_classes, int(np.max(y_val)) + 1)
    _check_labels(y, n_classes, "y")
    if X_val is not None or y_val is not None:
        if X_val is None or y_val is None:
            raise ConfigError("pass both X_val and y_val, or neither")
        if config.val_fraction:
            raise ConfigError(
                f"validation data was given and val_fraction is {config.val_fraction}: "
                f"use one of them (set val_fraction=0)"
            )
        X_val, y_val = _check_data(X_val, y_val, "X_val", "y_val")
        _check_labels(y_val, n_classes, "y_val")
        if X_val.shape[1] != X.shape[1]:
            raise DataError(
                f"X_val has {X_val.shape[1]} features per sample but X has {X.shape[1]}"
            )
    n_train = len(y)
    if config.val_fraction:
        n_val = math.ceil(len(y) * config.val_fraction)
        if n_val < 1 or len(y) - n_val < 1:
            raise DataError(
                f"val_fraction={config.val_fraction} leaves no training or validation rows out of {len(y)}"
            )
        n_train -= n_val
    has_val = X_val is not None or bool(config.val_fraction)
    if config.patience and not has_val:
        raise ConfigError(
            f"patience={config.patience} (early stopping) needs validation data: set "
            f"val_fraction > 0 or pass X_val and y_val"
        )

    if config.flip or config.test_flip:
        if mirror is None:
            raise ConfigError("flip / test_flip need the feature set's mirror permutation, and these "
                              "features have none (kmeans and color have one; lecture and hog do not): "
                              "use --features kmeans, or train without --flip / --test-flip")
        mirror = np.asarray(mirror)
        if not is_permutation(mirror, X.shape[1]):
            raise ConfigError(f"mirror must be a permutation of the {X.shape[1]} feature columns")
    mirror = mirror.astype(np.int64) if config.flip or config.test_flip else None

    spec = config.spec(X.shape[1], n_classes)
    spec.validate()
    device = _resolve_device(config.device)
    rows = 2 * n_train if config.flip else n_train
    batch = rows if OPTIMIZERS[config.optimizer].full_batch else config.batch_size
    sizes = " -> ".join(str(w) for w in (spec.n_features, *([spec.bottleneck] if spec.bottleneck else []),
                                         *spec.hidden, spec.n_classes))
    check_memory(training_bytes(spec, batch, rows), f"training the network {sizes} on {rows} rows"
                 f" (batch {min(batch, rows)})", "use smaller layers (--hidden, --bottleneck) or a smaller "
                 "--batch-size", device=str(device))
    return X, y, X_val, y_val, n_classes, mirror, device


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but CUDA is not available: use auto or cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device {name!r} is not one of: auto, cpu, cuda, cuda:N") from None


def _check_data(X, y, xname: str, yname: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        X = np.asarray(X)
        if X.dtype not in (np.float32, np.float64):  # float32 stays: learned features are large
            X = X.astype(np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{xname} must be a numeric array of shape (N, F)") from None
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(f"{xname} must have shape (N, F) with N, F >= 1, got {X.shape}")
    bad = nonfinite_rows(X)
    if len(bad):
        raise DataError(f"{xname} contains NaN or infinite values in {len(bad)} of {len(X)} rows (first: row "
                        f"{bad[0]}): clean or impute them first")
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(X):
        raise DataError(f"{yname} must have shape ({len(X)},) to match {xname}, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if not (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y))):
            raise DataError(f"{yname} must hold integer class indices, got dtype {y.dtype}")
    return X, y.astype(np.int64)


def _check_labels(y: np.ndarray, n_classes: int, name: str) -> None:
    if y.min() < 0 or y.max() >= n_classes:
        raise DataError(
            f"{name} holds labels from {y.min()} to {y.max()}, outside 0 .. {n_classes - 1}"
        )

"""The settings of a training run: :class:`TrainConfig`, its constraints and the presets.

This module imports no torch (nor anything that does), so the command line can build its options
and help from :data:`FIELDS` and check a configuration before the first heavy import.

:data:`FIELDS` is the one table of what each setting accepts: its kind, its range or choices and a
line of help. :meth:`TrainConfig.validate` walks it in order, then the rules that tie two settings
together (:data:`RULES`). It starts with the network's own table
(:data:`featmlp.model.spec.NETWORK_FIELDS`, which :class:`~featmlp.model.spec.MLPSpec` checks);
the kinds of check are :class:`featmlp._validation.Field`'s. The choices are the names of the
registries that hold the implementations (``featmlp.training.optim.OPTIMIZERS``, ``SCHEDULES``,
``featmlp.model.SCALERS``); they are repeated here as plain names so that checking a name needs no
torch, and a test holds the two lists equal.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from featmlp._validation import Field, Rule, check, settings_from_dict
from featmlp.errors import DataError
from featmlp.model.spec import NETWORK_FIELDS, MLPSpec

# Names only; the implementations stay in their registries (see the module docstring).
OPTIMIZER_NAMES = ("gd", "sgd", "adam", "adamw")
SCHEDULE_NAMES = ("none", "cosine", "onecycle")
SCALER_NAMES = ("standard", "minmax", "global", "none")
# Optimisers that take one step on the whole training set per epoch (batch_size unused).
FULL_BATCH_OPTIMIZERS = ("gd",)
# The weights are float32: a larger lr cannot even be applied (torch raises).
FLOAT32_MAX = float(np.finfo(np.float32).max)
# The largest seed every generator a run seeds accepts: scikit-learn's random_state (the
# validation split) and numpy's legacy RandomState take 0 .. 2**32 - 1; torch.manual_seed takes more.
SEED_MAX = 2**32 - 1


# Every field of TrainConfig, in the order validate() checks them (the first bad one is named).
FIELDS: dict[str, Field] = {
    **NETWORK_FIELDS,
    "optimizer": Field("choice", "gd: full-batch gradient descent (one step per epoch, the lecture's); "
                       "sgd: minibatch with momentum; adam; adamw", choices=OPTIMIZER_NAMES),
    "schedule": Field("choice", "learning-rate schedule, applied per step", choices=SCHEDULE_NAMES),
    "scaler": Field("choice", "feature scaling, fitted on the training rows only", choices=SCALER_NAMES),
    "class_weight": Field("class_weight", "None, 'balanced' (n_samples / (n_classes * count) per class) or "
                          "one weight per class"),
    "lr": Field("number", "learning rate (the peak one under a schedule)", low=0, low_open=True,
                high=FLOAT32_MAX),
    "epochs": Field("int", "passes over the training set (the most, with early stopping)", low=1),
    "max_steps": Field("int", "at most this many optimiser steps: the whole epochs that fit, at least one "
                       "(0: no limit)", low=0),
    "batch_size": Field("int", "minibatch size; unused by gd", low=1),
    "momentum": Field("number", "momentum of sgd", low=0, high=1, high_open=True),
    "weight_decay": Field("number", "L2 penalty (gd, sgd, adam) or decoupled decay (adamw)", low=0),
    "val_fraction": Field("number", "fraction of the training set held out (stratified, seeded) for "
                          "validation", low=0, high=1, high_open=True),
    "patience": Field("int", "early stopping: epochs without a lower validation loss; 0: off", low=0),
    "seed": Field("int", "seeds initial weights, the validation split, the batch order and dropout", low=0,
                  high=SEED_MAX),
    "lecture_batch_size": Field("optional_int", "gd only: step on the gradient of the sum of the mean losses "
                                "of batches of this size, as the notebook's loop did", low=1),
    "label_smoothing": Field("number", "ce only: train against (1 - e) one_hot + e / C", low=0, high=1,
                             high_open=True),
    "flip": Field("bool", "also train on each image's horizontal mirror image"),
    "test_flip": Field("bool", "predict with the mean over each image and its mirror image"),
    "device": Field("device", "auto (CUDA when available), cpu, cuda or cuda:N"),
}


def lecture_batch_size_applies(optimizer: str) -> bool:
    """Whether ``lecture_batch_size`` means anything with this optimiser (full-batch ``"gd"`` only)."""
    return optimizer in FULL_BATCH_OPTIMIZERS


def _lecture_batch_size_rule(c) -> str | None:
    if c["lecture_batch_size"] is not None and not lecture_batch_size_applies(c["optimizer"]):
        return f"lecture_batch_size applies to optimizer 'gd' only, not {c['optimizer']!r}: set it to None"


def _label_smoothing_rule(c) -> str | None:
    if c["label_smoothing"] and c["head"] != "ce":
        return f"label_smoothing applies to head 'ce' only, not {c['head']!r}: set it to 0"


# Rules tying settings together: (checked right after this field, f(settings) -> message or None).
RULES: tuple[Rule, ...] = (
    ("lecture_batch_size", _lecture_batch_size_rule),
    ("label_smoothing", _label_smoothing_rule),
)


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
        did (see :mod:`featmlp.training.loop`). None: the mean loss (the ``"lecture"`` preset).
    scaler : str
        A key of :data:`featmlp.model.scaler.SCALERS`, fitted on the training rows only.
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
        :func:`featmlp.training.train`; feature sets ``kmeans`` and ``color`` have one).
    test_flip : bool
        Predict with the mean of the probabilities of each image and its mirror image.
    label_smoothing : float
        ``"ce"`` only: train against ``(1 - e) one_hot + e / C`` instead of the one-hot labels.
    max_steps : int
        At most this many optimiser steps: training runs ``min(epochs, max_steps // steps per
        epoch)`` epochs, at least one, and the schedule spans those (:func:`planned_epochs`). A
        budget in steps rather than passes: a large training set needs fewer passes, a small one
        keeps ``epochs``. 0: no limit.
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
    max_steps: int = 0

    def spec(self, n_features: int, n_classes: int) -> "MLPSpec":
        """The :class:`MLPSpec` of this configuration for data of the given sizes."""
        return MLPSpec(n_features, n_classes, tuple(self.hidden), self.activation,
                       self.dropout, self.batch_norm, self.head, self.bottleneck)

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad value and what is accepted.

        Each field is checked against its entry in :data:`FIELDS`, in that table's order, and
        each rule of :data:`RULES` right after its field.

        Examples
        --------
        >>> TrainConfig(optimizer="lbfgs").validate()
        Traceback (most recent call last):
        ...
        featmlp.errors.ConfigError: optimizer 'lbfgs' is not one of: gd, sgd, adam, adamw
        """
        settings = {name: getattr(self, name) for name in FIELDS}
        # hidden is checked as the tuple the network gets (spec() makes one), e.g. from [64] or "64"
        with contextlib.suppress(TypeError):
            settings["hidden"] = tuple(self.hidden)
        check(settings, FIELDS, RULES)

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
    # For the pooled features of a pretrained network (efficientnet-lite0: 5,376 values at two sides),
    # chosen in README's table on a 45,000 / 5,000 split of CIFAR-10's train. At most 1,800 steps: on
    # those rows (176 steps an epoch) 8, 10, 12 and 15 epochs scored alike (0.871-0.874, seeds 0-2), so
    # 10 epochs there for 2/3 of the time; a small set keeps its 15 epochs (digits, 6 steps an epoch:
    # 10 epochs scored 0.972 on its validation rows against 1.0 with 15).
    # Test flips: each test image's probabilities averaged with its mirror image's, whose features are
    # extracted too (+1/6 of the extraction on CIFAR-10): 0.8750 and 0.8728 against 0.8738 and 0.8712
    # without (seeds 0, 1), where mirror images as training rows would cost twice the extraction.
    "pretrained": TrainConfig(hidden=(1024,), dropout=0.5, lr=1e-3, epochs=15, label_smoothing=0.1,
                              max_steps=1800, test_flip=True),
}


# What `featmlp run`, `train`, `sweep` and `lr-find` hold out of the training split when --val-fraction
# is not given (issue 18): a stratified, seeded 10 % for the validation curves, the line that says a
# run overfits and the sweep's ranking (the test split then chooses nothing). It selects a model only
# under early stopping (patience). The API (TrainConfig(), PRESETS, FeatMLPClassifier) holds out
# nothing unless told, as scikit-learn's estimators; the lecture preset neither, on the command line
# too: it reproduces the notebook, which trains on all its training images.
COMMAND_VAL_FRACTION = 0.1


def command_presets() -> dict[str, TrainConfig]:
    """:data:`PRESETS` as the training commands start from them: :data:`COMMAND_VAL_FRACTION` held
    out, except by the lecture's preset.

    Examples
    --------
    >>> {name: c.val_fraction for name, c in command_presets().items()}["lecture"]
    0.0
    """
    return {name: config if name == "lecture" else dataclasses.replace(config, val_fraction=COMMAND_VAL_FRACTION)
            for name, config in PRESETS.items()}


def validation_size(n: int, fraction: float) -> int:
    """Rows held out of ``n`` for validation; DataError when either side would be empty."""
    n_val = math.ceil(n * fraction)
    if n_val < 1 or n - n_val < 1:
        raise DataError(f"val_fraction={fraction} leaves no training or validation rows out of {n}")
    return n_val


def planned_epochs(config: TrainConfig, steps_per_epoch: int) -> int:
    """The epochs a run of ``config`` trains when an epoch takes ``steps_per_epoch`` optimiser steps (one
    for full-batch ``"gd"``; the mirror images' rows counted, with flips): ``config.epochs``, or fewer
    under ``max_steps``, the whole epochs whose steps fit in it (at least one).

    Examples
    --------
    >>> planned_epochs(TrainConfig(epochs=15, max_steps=1800), 176)  # 45,000 rows in batches of 256
    10
    >>> planned_epochs(TrainConfig(epochs=15, max_steps=1800), 6)  # 1,437 rows
    15
    """
    if not config.max_steps:
        return config.epochs
    return max(1, min(config.epochs, config.max_steps // max(steps_per_epoch, 1)))


def gd_gradient_scale(config: TrainConfig, n: int) -> int:
    """The lecture's factor on full-batch ``"gd"``'s gradient: ``ceil(n / lecture_batch_size)``, else 1.

    The notebook stepped on the sum of the mean losses of its minibatches (see
    :mod:`featmlp.training.loop`); ``lecture_batch_size`` reruns that literally.
    """
    if config.optimizer in FULL_BATCH_OPTIMIZERS and config.lecture_batch_size:
        return math.ceil(n / config.lecture_batch_size)
    return 1

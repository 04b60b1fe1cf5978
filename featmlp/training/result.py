"""What :func:`featmlp.training.train` returns: :class:`TrainResult` (no torch: the lecture's
gradient descent, :mod:`featmlp.training.engines.arrays`, returns one without it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from featmlp.model.arrays import ArrayMLP
from featmlp.model.scaler import Scaler
from featmlp.model.spec import MLPSpec
from featmlp.training.config import TrainConfig
from featmlp.training.history import History

if TYPE_CHECKING:
    from torch import nn


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    model : featmlp.model.MLP or featmlp.model.ArrayMLP
        The trained network (an ``ArrayMLP`` from the numpy engine), in eval mode (best weights under early stopping, last finite
        weights after a divergence).
    scaler : featmlp.model.scaler.Scaler
        Fitted on the training rows; apply it to any features before the model.
    spec, config
        The network's spec and the run's settings.
    history : History
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

    model: nn.Module | ArrayMLP
    scaler: Scaler
    spec: MLPSpec
    config: TrainConfig
    history: History = field(default_factory=History)
    diverged: bool = False
    stop_reason: str = "completed"
    best_epoch: int | None = None
    device: str = "cpu"
    mirror: np.ndarray | None = None

    @property
    def flips_images(self) -> bool:
        """Test-time flips whose mirror images' features are extracted from the mirrored images (the
        features have no mirror permutation): :meth:`predict_proba` averages with ``mirror_features``."""
        return bool(self.config.test_flip) and self.mirror is None

    def predict_proba(self, X, mirror_features=None) -> np.ndarray:
        """Class probabilities for raw (unscaled) features ``X``, rows in order.

        With ``config.test_flip`` the mean of each row's and its mirror image's probabilities: the
        mirror image's features are a permutation of the row's (``mirror``), or, for features that
        have none (:attr:`flips_images`), ``mirror_features``, those of each row's mirror image
        extracted (without them: the rows' own probabilities).
        """
        mirror = self.mirror if self.config.test_flip else None
        mirror_features = mirror_features if self.flips_images else None
        if isinstance(self.model, ArrayMLP):
            return self.model.predict_proba(self.scaler, X, mirror=mirror, mirror_features=mirror_features)
        # start-up: torch loads for a torch network only
        from featmlp.model import predict_proba

        return predict_proba(self.model, self.scaler, X, mirror=mirror, mirror_features=mirror_features)

    def predict(self, X) -> np.ndarray:
        """Most probable class index for each row of raw features ``X``."""
        return self.predict_proba(X).argmax(axis=1)

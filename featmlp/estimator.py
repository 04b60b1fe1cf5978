"""A scikit-learn classifier around :func:`featmlp.training.train`.

``FeatMLPClassifier`` follows the estimator contract to the letter: ``__init__`` only stores its
arguments, :meth:`~FeatMLPClassifier.fit` validates them and learns, learned state ends with ``_``.
It works in ``Pipeline`` and ``GridSearchCV`` and takes any label values (strings included).

Every hyperparameter defaults to ``None``, meaning "the preset's value"; ``preset=None`` is
``PRESETS["default"]``. So ``FeatMLPClassifier(preset="lecture", lr=50)`` is the lecture's setup
with one change, as ``dataclasses.replace(PRESETS["lecture"], lr=50)`` is.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from featmlp.errors import ConfigError
from featmlp.model import predict_proba
from featmlp.training import PRESETS, TrainConfig, train
from featmlp.training.config import FIELDS
from featmlp.training.history import TRAIN_LOSS

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    def _validate_data(estimator, *args, **kwargs):
        return estimator._validate_data(*args, **kwargs)

# The TrainConfig fields the estimator exposes (seed comes from random_state; flips need the
# feature set's mirror permutation, which a feature matrix does not carry).
_CONFIG_PARAMS = tuple(f.name for f in dataclasses.fields(TrainConfig)
                       if f.name not in ("seed", "flip", "test_flip"))


class FeatMLPClassifier(ClassifierMixin, BaseEstimator):
    """Multilayer perceptron classifier trained with featmlp (scikit-learn API).

    Parameters
    ----------
    hidden, activation, dropout, batch_norm, head, optimizer, lr, epochs, batch_size, momentum, \
weight_decay, schedule, lecture_batch_size, scaler, val_fraction, patience, class_weight, device, \
bottleneck, label_smoothing, max_steps
        The fields of :class:`featmlp.training.TrainConfig`; ``None`` takes the preset's value.
        ``class_weight`` may also be a dict ``{label: weight}`` (missing labels weigh 1).
    preset : str or None
        A key of :data:`featmlp.training.PRESETS`; None is ``"default"``.
    random_state : int, RandomState or None
        Seed of the run (weights, batch order, validation split): an int is used as it is, so
        ``random_state=0`` gives the network of ``featmlp train --seed 0`` (same data, same
        settings). None or a RandomState draws one, as scikit-learn's estimators do.

    Attributes
    ----------
    classes_ : ndarray
        Label values, in the order of the columns of :meth:`predict_proba`.
    model_ : featmlp.model.MLP
        The trained network (eval mode).
    scaler_ : featmlp.model.scaler.Scaler
        Feature scaling fitted on the training rows.
    config_ : TrainConfig
        The settings the fit used.
    history_ : list of dict
        Per-epoch records (see :func:`featmlp.training.train`).
    loss_curve_ : list of float
        ``train_loss`` of each epoch.
    n_iter_ : int
        Epochs run.
    diverged_ : bool
        The loss became NaN or infinite; the model holds the last finite weights.
    best_epoch_ : int or None
        Epoch of the lowest validation loss, when there was validation (``val_fraction``).
    n_features_in_ : int
        Number of features seen by fit.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> X, y = make_classification(200, 6, random_state=0)
    >>> clf = FeatMLPClassifier(hidden=(16,), epochs=20, random_state=0).fit(X, y)
    >>> clf.predict(X[:3]).shape, round(float(clf.predict_proba(X[:1]).sum()), 6)
    ((3,), 1.0)
    """

    def __init__(
        self,
        hidden=None,
        activation=None,
        dropout=None,
        batch_norm=None,
        head=None,
        optimizer=None,
        lr=None,
        epochs=None,
        batch_size=None,
        momentum=None,
        weight_decay=None,
        schedule=None,
        lecture_batch_size=None,
        scaler=None,
        val_fraction=None,
        patience=None,
        class_weight=None,
        device=None,
        preset=None,
        random_state=None,
        bottleneck=None,
        label_smoothing=None,
        max_steps=None,
    ):
        self.hidden = hidden
        self.activation = activation
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.head = head
        self.optimizer = optimizer
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.lecture_batch_size = lecture_batch_size
        self.scaler = scaler
        self.val_fraction = val_fraction
        self.patience = patience
        self.class_weight = class_weight
        self.device = device
        self.preset = preset
        self.random_state = random_state
        self.bottleneck = bottleneck
        self.label_smoothing = label_smoothing
        self.max_steps = max_steps

    def _config(self) -> TrainConfig:
        preset = "default" if self.preset is None else self.preset
        if preset not in PRESETS:
            raise ConfigError(f"preset {preset!r} is not one of: {', '.join(PRESETS)}")
        overrides = {name: getattr(self, name) for name in _CONFIG_PARAMS
                     if getattr(self, name) is not None}
        if isinstance(overrides.get("class_weight"), dict):  # mapped onto classes_ in fit
            del overrides["class_weight"]
        if "hidden" in overrides:
            hidden = overrides["hidden"]
            overrides["hidden"] = (hidden,) if isinstance(hidden, (int, np.integer)) else tuple(hidden)
        state = self.random_state
        if not (state is None or isinstance(state, np.random.RandomState)):
            # the constraint table's rule for seeds (what sklearn and numpy's RandomState accept)
            message = FIELDS["seed"].error("random_state", state)
            if message is not None:
                raise ConfigError(message.replace("must be", "must be None, a numpy RandomState or", 1))
        # An int is the seed itself, so random_state=0 trains the network `featmlp train --seed 0` and
        # train(..., TrainConfig(seed=0)) train; None or a RandomState draws one, as scikit-learn does.
        seed = state if isinstance(state, (int, np.integer)) and not isinstance(state, bool) else \
            check_random_state(state).randint(np.iinfo(np.int32).max)
        # A feature matrix alone does not say which columns mirror which: no flips here (the
        # "kmeans" preset's flips apply through featmlp run / train, which know the feature set).
        config = dataclasses.replace(PRESETS[preset], seed=int(seed), flip=False, test_flip=False, **overrides)
        config.validate()
        return config

    def fit(self, X, y):
        """Learn the scaler and the network from ``X`` (n_samples, n_features) and labels ``y``.

        Returns
        -------
        self
        """
        config = self._config()
        X, y = _validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        classes, y_index = np.unique(y, return_inverse=True)
        if isinstance(self.class_weight, dict):
            unknown = set(self.class_weight) - set(classes.tolist())
            if unknown:
                raise ConfigError(f"class_weight names labels not in y: {sorted(map(str, unknown))}")
            weights = tuple(float(self.class_weight.get(c, 1.0)) for c in classes.tolist())
            config = dataclasses.replace(config, class_weight=weights)
            config.validate()
        result = train(X, y_index, config, n_classes=len(classes))
        self.classes_ = classes
        self.config_ = config
        self.model_ = result.model
        self.scaler_ = result.scaler
        self.history_ = result.history
        self.loss_curve_ = result.history.column(TRAIN_LOSS)
        self.n_iter_ = len(result.history)
        self.diverged_ = result.diverged
        self.best_epoch_ = result.best_epoch
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Probability of each class in ``classes_`` order, one row per sample, rows in order."""
        check_is_fitted(self, "model_")
        X = _validate_data(self, X, dtype=np.float64, reset=False)
        proba = predict_proba(self.model_, self.scaler_, X).astype(np.float64)
        # float32 softmax rows sum to 1 within ~1e-7; renormalise in float64 for exact sums.
        return proba / proba.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        """Most probable label of each sample."""
        check_is_fitted(self, "model_")
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

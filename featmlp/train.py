"""Training: the public names of :mod:`featmlp.training`, where each lives with its own concern.

User code, the README and the notebook import from here, and keep working as the package's
modules move: :class:`TrainConfig` and :data:`PRESETS` (``training.config``), :func:`train` and
:class:`TrainResult` (``training.loop``), :data:`OPTIMIZERS` and :data:`SCHEDULES` with their
classes (``training.optim``), :class:`Callback` and :class:`LivePlot` (``training.callbacks``),
:func:`check_training` and :func:`check_config` (``training.prepare``), and the thread policy
:func:`training_threads`, :func:`threads_override`, :func:`idle_cores`, :data:`THREADS_ENV`
(``training.threads``). The loop's documentation, including how the lecture's gradient descent
is run, is in :mod:`featmlp.training.loop`.

Examples
--------
>>> from featmlp.train import PRESETS, train
>>> import numpy as np
>>> X = np.random.default_rng(0).normal(size=(40, 3)); y = (X[:, 0] > 0).astype(int)
>>> train(X, y, PRESETS["lecture"]).stop_reason
'completed'
"""

from featmlp.training.callbacks import Callback, LivePlot
from featmlp.training.config import PRESETS, TrainConfig
from featmlp.training.engines import ScaledRows
from featmlp.training.loop import TrainResult, train
from featmlp.training.optim import OPTIMIZERS, SCHEDULES, SGD, Adam, AdamW, GradientDescent
from featmlp.training.prepare import check_config, check_training
from featmlp.training.threads import THREADS_ENV, idle_cores, threads_override, training_threads

__all__ = [
    "PRESETS", "TrainConfig", "TrainResult", "train", "OPTIMIZERS", "SCHEDULES", "GradientDescent", "SGD",
    "Adam", "AdamW", "Callback", "LivePlot", "check_config", "check_training", "THREADS_ENV", "idle_cores",
    "threads_override", "training_threads", "ScaledRows",
]

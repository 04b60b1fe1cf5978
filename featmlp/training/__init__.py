"""Training: the public names, each read lazily from the module of its concern.

- :mod:`~featmlp.training.config`: :class:`TrainConfig`, the constraint table that validates it,
  :data:`PRESETS` (imports no torch).
- :mod:`~featmlp.training.optim`: the optimisers and schedules (``OPTIMIZERS``, ``SCHEDULES``).
- :mod:`~featmlp.training.params`: the flat parameter vector (flatten, unflatten, snapshot, restore).
- :mod:`~featmlp.training.setup`, :mod:`~featmlp.training.epoch`, :mod:`~featmlp.training.checks`: the
  set-up, the per-epoch arithmetic and the checks shared by ``train``, ``lr_find`` and the sweep.
- :mod:`~featmlp.training.history`: the per-epoch record and its column names.
- :mod:`~featmlp.training.callbacks`: :class:`Callback` (defined in :mod:`featmlp.progress`, the one hook
  protocol); the live loss plot is :class:`featmlp.runs.LivePlot`.
- :mod:`~featmlp.training.threads`: the CPU thread policy.
- :mod:`~featmlp.training.engines`: the step code: fast, autograd, streamed (out of core), stacked
  (the sweep's many configurations at once) and its fused kernel.
- :mod:`~featmlp.training.loop`: :func:`train`; :mod:`~featmlp.training.result`: :class:`TrainResult`.

The names load lazily (:func:`featmlp._exports.lazy_exports`), so ``featmlp.training.config``, and
``from featmlp.training import TrainConfig``, load without torch. The loop's documentation,
including how the lecture's gradient descent is run, is in :mod:`featmlp.training.loop`.

Examples
--------
>>> from featmlp.training import PRESETS, train
>>> import numpy as np
>>> X = np.random.default_rng(0).normal(size=(40, 3)); y = (X[:, 0] > 0).astype(int)
>>> train(X, y, PRESETS["lecture"]).stop_reason
'completed'
"""

from featmlp._exports import lazy_exports

_NAMES = {
    **dict.fromkeys(["PRESETS", "TrainConfig"], "featmlp.training.config"),
    "train": "featmlp.training.loop",
    "TrainResult": "featmlp.training.result",
    **dict.fromkeys(["OPTIMIZERS", "SCHEDULES", "GradientDescent", "SGD", "Adam", "AdamW"],
                    "featmlp.training.optim"),
    "Callback": "featmlp.training.callbacks",
    **dict.fromkeys(["check_config", "check_training"], "featmlp.training.checks"),
    **dict.fromkeys(["THREADS_ENV", "idle_cores", "threads_override", "training_threads"],
                    "featmlp.training.threads"),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _NAMES)

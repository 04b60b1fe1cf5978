"""Training, one module per concern; :mod:`featmlp.train` re-exports the public names.

- :mod:`~featmlp.training.config`: :class:`TrainConfig`, the constraint table that validates it,
  :data:`PRESETS` (imports no torch).
- :mod:`~featmlp.training.optim`: the optimisers and schedules (``OPTIMIZERS``, ``SCHEDULES``).
- :mod:`~featmlp.training.params`: the flat parameter vector (flatten, unflatten, snapshot, restore).
- :mod:`~featmlp.training.prepare`: the set-up shared by ``train``, ``lr_find`` and the sweep.
- :mod:`~featmlp.training.history`: the per-epoch record and its column names.
- :mod:`~featmlp.training.callbacks`: :class:`Callback` (defined in :mod:`featmlp.progress`, the one hook
  protocol), :class:`LivePlot`.
- :mod:`~featmlp.training.threads`: the CPU thread policy.
- :mod:`~featmlp.training.engines`: the two engines that run an epoch's steps.
- :mod:`~featmlp.training.loop`: :func:`train` and :class:`TrainResult`.

This package's ``__init__`` imports nothing, so ``featmlp.training.config`` loads without torch.
"""

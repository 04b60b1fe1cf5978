"""The step code of training, one engine a module; :func:`featmlp.training.loop.train` picks one.

- :mod:`~featmlp.training.engines.fast`: ``FastEngine``, a hand-written forward and backward pass
  for plain MLPs.
- :mod:`~featmlp.training.engines.autograd`: ``AutogradEngine`` (dropout, batch norm, a bottleneck,
  large inputs) and ``ScaledRows``.
- :mod:`~featmlp.training.engines.streamed`: a sharded table streamed from disk (out of core).
- :mod:`~featmlp.training.engines.arrays`: the lecture's full-batch gradient descent in numpy, the
  same run as ``FastEngine``'s without importing torch (``featmlp train | run | lecture`` pick it
  where it applies).
- :mod:`~featmlp.training.engines.stacked`: many configurations as one stacked network (the sweep),
  with :mod:`~featmlp.training.engines.fused`'s numba kernel for full-batch ReLU groups on the CPU.
"""

"""Sweeps: many training configurations (learning rate x architecture x ...) compared at once.

The lecture's lesson is its experiments: add a hidden layer, try lr in {1, 10, 50, 500, 5000},
watch the loss fall slowly, fall faster, or jitter. :func:`expand_grid` builds the
configurations, :func:`run_sweep` trains them and writes one comparable set of results:

>>> from featmlp.training import PRESETS
>>> configs = expand_grid(PRESETS["lecture"], lr=[1, 10, 50, 500, 5000], hidden=[(6,), (6, 6)])
>>> len(configs)
10

``run_sweep(table, configs, out="runs/lecture-sweep")`` then trains the five (6,) networks in
one stacked pass and the five (6, 6) in another (``featmlp/training/engines/stacked.py``): every
configuration of a group is one row of stacked weights, and one batched matrix product runs a
layer for all of them. Each ends with the history :func:`featmlp.training.train` gives it alone.
Configurations that cannot share a pass train alone, in worker processes if asked.

Modules: ``_grid`` (grid, names, which configurations stack), the engine in
:mod:`featmlp.training.engines.stacked`,
``_run`` (:func:`run_sweep`), ``_output`` (files and plots), ``_result`` (:class:`SweepResult`,
:class:`SweepRun`); ``_run`` -> ``_output`` -> ``_result``, one way.
"""

from ._grid import config_names, expand_grid, varying_fields
from ._result import SweepResult, SweepRun
from ._run import run_sweep

__all__ = ["expand_grid", "run_sweep", "SweepResult", "SweepRun", "config_names",
           "varying_fields"]

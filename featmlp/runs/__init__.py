"""Run directories, one module per concern; the old top-level modules re-export the public names.

- :mod:`~featmlp.runs.layout`: the file names of a run directory and its JSON files (no torch,
  no numpy).
- :mod:`~featmlp.runs.directory`: :class:`RunDirectory` (built beside, renamed in, one writer
  at a time), ``staging_dir``, ``lock_file``, ``check_out``.
- :mod:`~featmlp.runs.results`: what a run writes (``write_config``, ``write_results``) and
  :func:`train_run`, which trains into one.
- :mod:`~featmlp.runs.job`: :func:`run_job` (what ``featmlp run`` does), ``decide_flips``,
  :class:`JobHook`, :class:`JobResult`.
- :mod:`~featmlp.runs.evaluate`: metrics from labels, and :func:`evaluate_run` (a saved run on a
  feature file, with the compatibility checks).
- :mod:`~featmlp.runs.bundle`: the saved model (``save_bundle``, ``load_bundle``, ``Bundle``).
- :mod:`~featmlp.runs.plots`, :mod:`~featmlp.runs.tensorboard`: what is drawn and logged of a run.
- :mod:`~featmlp.runs.compare`, :mod:`~featmlp.runs.report`: reading finished runs (no torch).

This package's ``__init__`` imports nothing, so ``featmlp.runs.compare`` and
``featmlp.runs.report`` load without torch.
"""

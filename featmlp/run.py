"""A run directory (train on a feature table, evaluate, plot, save, all in one folder): the public
names of :mod:`featmlp.runs`, re-exported.

The code lives in :mod:`featmlp.runs`, one module per concern: ``runs.directory``
(:class:`RunDirectory`, :func:`staging_dir`, :func:`lock_file`, :func:`check_out`),
``runs.results`` (:func:`train_run`, :func:`check_run`, :func:`write_config`,
:func:`write_results`, :func:`score_test`, :func:`repeat_config`, :class:`RunResult`),
``runs.job`` (:func:`run_job`, :func:`decide_flips`, :class:`JobHook`, :class:`JobResult`),
``runs.evaluate`` (:func:`evaluate_run`, :func:`run_feature_file`) and ``runs.layout`` (the file
names, :func:`read_json`, :func:`write_json`). This module stays so that user code importing
``featmlp.run`` keeps working; featmlp's own code imports from :mod:`featmlp.runs`.
"""

from featmlp.runs.directory import RunDirectory, check_out, lock_file, staging_dir  # noqa: F401
from featmlp.runs.evaluate import evaluate_run, run_feature_file  # noqa: F401
from featmlp.runs.job import MIRROR_AGREEMENT, JobHook, JobResult, decide_flips, run_job  # noqa: F401
from featmlp.runs.layout import (CONFIG_FILE, CONFUSION_PLOT, FEATURES_FILE, FEATURES_PARTIAL,  # noqa: F401
                                 LOSS_PLOT, METRICS_FILE, TENSORBOARD_DIR, read_json, resolve_feature_file,
                                 write_json)
from featmlp.runs.results import (RunResult, check_run, repeat_config, score_test, train_run,  # noqa: F401
                                  write_config, write_results)

__all__ = [
    "RunDirectory", "check_out", "lock_file", "staging_dir", "evaluate_run", "run_feature_file",
    "MIRROR_AGREEMENT", "JobHook", "JobResult", "decide_flips", "run_job", "CONFIG_FILE", "CONFUSION_PLOT",
    "FEATURES_FILE", "FEATURES_PARTIAL", "LOSS_PLOT", "METRICS_FILE", "TENSORBOARD_DIR", "read_json",
    "resolve_feature_file", "write_json", "RunResult", "check_run", "repeat_config", "score_test", "train_run",
    "write_config", "write_results",
]

"""Run directories: the public names, each read lazily from the module of its concern.

- :mod:`~featmlp.runs.layout`: the file names of a run directory and its JSON files (no torch,
  no numpy).
- :mod:`~featmlp.runs.directory`: :class:`RunDirectory` (built beside, renamed in, one writer
  at a time), ``staging_dir``, ``lock_file``, ``check_out``.
- :mod:`~featmlp.runs.results`: what a run writes (``write_config``, ``write_results``) and
  :func:`train_run`, which trains into one.
- :mod:`~featmlp.runs.job`: :func:`run_job` (what ``featmlp run`` does), ``decide_flips``,
  :class:`JobHook`, :class:`JobResult`.
- :mod:`~featmlp.runs.evaluate`: metrics from labels, and :func:`evaluate_run` (a saved run on a
  feature file, with the compatibility checks). Its ``evaluate`` function is imported from the
  module (``from featmlp.runs.evaluate import evaluate``): the package attribute of that name is
  the submodule.
- :mod:`~featmlp.runs.bundle`: the saved model (``save_bundle``, ``load_bundle``, ``Bundle``,
  ``load_fitted`` for ``--fitted-from``); :mod:`~featmlp.runs.predict`: new images through it
  (``Bundle.predict_images``, :class:`ImagePrediction`, the chunk limits).
- :mod:`~featmlp.runs.predictions`: each test image's prediction (``predictions.csv``,
  :func:`confident_mistakes`); :mod:`~featmlp.runs.gallery`: the report's test images and their
  thumbnails; :mod:`~featmlp.runs.score`: a saved run scored on a labelled image source
  (:func:`evaluate_source`, ``featmlp evaluate RUN --data SOURCE --out DIR``).
- :mod:`~featmlp.runs.plots`, :mod:`~featmlp.runs.tensorboard`: what is drawn and logged of a run.
- :mod:`~featmlp.runs.compare`, :mod:`~featmlp.runs.report`: reading finished runs (no torch).

The names load lazily (:func:`featmlp._exports.lazy_exports`), so ``featmlp.runs.compare`` and
``featmlp.runs.report`` load without torch.
"""

from featmlp._exports import lazy_exports

_NAMES = {
    **dict.fromkeys(["CONFIG_FILE", "CONFUSION_PLOT", "FEATURES_FILE", "FEATURES_PARTIAL", "LOSS_PLOT",
                     "METRICS_FILE", "TENSORBOARD_DIR", "WEIGHTS_FILE", "META_FILE", "FEATURE_STATE_FILE",
                     "PREDICTIONS_FILE", "THUMBNAILS_FILE", "EVALUATION_FILE", "read_json", "write_json",
                     "resolve_feature_file"], "featmlp.runs.layout"),
    **dict.fromkeys(["RunDirectory", "check_out", "lock_file", "staging_dir"], "featmlp.runs.directory"),
    **dict.fromkeys(["RunResult", "check_run", "repeat_config", "score_test", "train_run", "write_config",
                     "write_results"], "featmlp.runs.results"),
    **dict.fromkeys(["MIRROR_AGREEMENT", "JobHook", "JobResult", "decide_flips", "run_job"],
                    "featmlp.runs.job"),
    **dict.fromkeys(["confusion_matrix", "run_metrics", "evaluate_run", "score_run", "run_feature_file"],
                    "featmlp.runs.evaluate"),
    **dict.fromkeys(["Predictions", "Mistake", "TOP_K", "predict_split", "write_predictions", "read_predictions",
                     "confident_mistakes"], "featmlp.runs.predictions"),
    **dict.fromkeys(["GALLERY_CAPS", "MAX_THUMBNAILS", "gallery_rows", "write_thumbnails", "read_thumbnails"],
                    "featmlp.runs.gallery"),
    "evaluate_source": "featmlp.runs.score",
    **dict.fromkeys(["FORMAT_VERSION", "Bundle", "save_bundle", "load_bundle", "load_fitted", "read_feature_state"],
                    "featmlp.runs.bundle"),
    **dict.fromkeys(["ImagePrediction", "MAX_IMAGE_PIXELS", "PREDICT_CHUNK_IMAGES", "PREDICT_CHUNK_BYTES",
                     "PREDICT_CHUNK_PIXELS", "PREDICT_BYTES_PER_PIXEL", "image_bytes", "iter_predict_images"],
                    "featmlp.runs.predict"),
    **dict.fromkeys(["plot_history", "plot_confusion", "render", "LivePlot"], "featmlp.runs.plots"),
    **dict.fromkeys(["TEST_ACCURACY_TAG", "TensorBoardLogger"], "featmlp.runs.tensorboard"),
    **dict.fromkeys(["RESULT_COLUMNS", "Run", "is_run_dir", "read_run", "read_runs", "differing_settings",
                     "compare_runs", "format_cell", "format_table", "comparison_figure", "plot_comparison"],
                    "featmlp.runs.compare"),
    **dict.fromkeys(["REPORT_FILE", "SWEEP_FILE", "RESULTS_FILE", "SWEEP_LOSS_PLOT", "SWEEP_ACCURACY_PLOT",
                     "write_report", "render_report"], "featmlp.runs.report"),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _NAMES)

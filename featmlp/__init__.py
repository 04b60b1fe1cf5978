"""featmlp: image classification with multilayer perceptrons on extracted image features.

The pieces, in the order data flows through them:

- :func:`featmlp.data.load_dataset`: images and labels from the bundled sample, CIFAR-10 or a folder;
- :func:`extract_features`: a feature set (``"lecture"``: the nine texture features) for a batch;
- :func:`featmlp.training.train` with a :class:`TrainConfig` (or a preset from :data:`PRESETS`), or the
  scikit-learn estimator :class:`FeatMLPClassifier`;
- :func:`run_job`: all of it into one run directory, as ``featmlp run`` does; :func:`evaluate_run`
  scores a saved run on a feature file;
- :func:`load_bundle`: a saved model, ready to predict (``Bundle.predict_images`` for image files, folders,
  archives, tar shards and URLs).

Examples
--------
>>> import numpy as np, featmlp
>>> images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
>>> featmlp.extract_features(images, "lecture").shape
(2, 9)
"""

from featmlp._exports import lazy_exports

__version__ = "0.1.0"

_LAZY = {
    "FEATURE_SETS": "featmlp.features",
    "extract_features": "featmlp.features",
    "feature_names": "featmlp.features",
    "load_dataset": "featmlp.data",
    "TrainConfig": "featmlp.training.config",  # torch-free: settings without loading torch
    "PRESETS": "featmlp.training.config",
    "FeatMLPClassifier": "featmlp.estimator",
    "load_bundle": "featmlp.runs.bundle",
    "run_job": "featmlp.runs.job",
    "evaluate_run": "featmlp.runs.evaluate",
    "load_features": "featmlp.tables.store",
}


# Each name's module is imported when it is first asked for: torch only for training, numpy and the
# feature registry only for features, so `featmlp --help` (which reads __version__) imports neither.
__getattr__, _dir, _names = lazy_exports(__name__, _LAZY)
__all__ = ["__version__", *_names]


def __dir__() -> list[str]:
    """The public names (``dir(featmlp)``), none of them imported to list them."""
    return sorted(__all__)

"""featmlp: image classification with multilayer perceptrons on extracted image features.

The pieces, in the order data flows through them:

- :func:`featmlp.data.load_dataset`: images and labels from the bundled sample, CIFAR-10 or a folder;
- :func:`extract_features`: a feature set (``"lecture"``: the nine texture features) for a batch;
- :func:`featmlp.train.train` with a :class:`TrainConfig` (or a preset from :data:`PRESETS`), or the
  scikit-learn estimator :class:`FeatMLPClassifier`;
- :func:`load_bundle`: a saved model, ready to predict.

Examples
--------
>>> import numpy as np, featmlp
>>> images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
>>> featmlp.extract_features(images, "lecture").shape
(2, 9)
"""

from .features import FEATURE_SETS, extract_features, feature_names

__version__ = "0.1.0"

_LAZY = {
    "load_dataset": "featmlp.data",
    "TrainConfig": "featmlp.train",
    "PRESETS": "featmlp.train",
    "FeatMLPClassifier": "featmlp.estimator",
    "load_bundle": "featmlp.bundle",
    "load_features": "featmlp.store",
}


def __getattr__(name):
    # torch is imported only when training is asked for: extracting features stays light.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'featmlp' has no attribute {name!r}")


__all__ = ["FEATURE_SETS", "extract_features", "feature_names", "__version__", *_LAZY]

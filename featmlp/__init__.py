"""featmlp: image classification with multilayer perceptrons on extracted image features.

Examples
--------
>>> import numpy as np, featmlp
>>> images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
>>> featmlp.extract_features(images, "lecture").shape
(2, 9)
"""

from .features import FEATURE_SETS, extract_features, feature_names

__version__ = "0.1.0"

__all__ = ["FEATURE_SETS", "extract_features", "feature_names", "__version__"]

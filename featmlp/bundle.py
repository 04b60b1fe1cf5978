"""A trained model on disk: the public names of :mod:`featmlp.runs.bundle`, re-exported.

The code lives in ``featmlp.runs.bundle`` (run directories are in one package, :mod:`featmlp.runs`);
this module stays so that user code importing ``featmlp.bundle`` keeps working. featmlp's own
code imports from ``featmlp.runs.bundle``.
"""

from featmlp.runs.bundle import (  # noqa: F401 (re-exported)
    FORMAT_VERSION, Bundle, ImagePrediction, save_bundle, load_bundle, MAX_IMAGE_PIXELS,
    PREDICT_CHUNK_IMAGES, PREDICT_CHUNK_PIXELS, PREDICT_BYTES_PER_PIXEL, image_bytes,
    read_feature_state, WEIGHTS_FILE, META_FILE, FEATURE_STATE_FILE,
)

__all__ = [
    "FORMAT_VERSION", "Bundle", "ImagePrediction", "save_bundle", "load_bundle", "MAX_IMAGE_PIXELS",
    "PREDICT_CHUNK_IMAGES", "PREDICT_CHUNK_PIXELS", "PREDICT_BYTES_PER_PIXEL", "image_bytes",
    "read_feature_state", "WEIGHTS_FILE", "META_FILE", "FEATURE_STATE_FILE",
]

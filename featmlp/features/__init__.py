"""Feature sets: pure functions from a batch of images to an ``(N, F)`` float array.

Each entry of :data:`FEATURE_SETS` maps a name (the CLI's ``--features`` choices)
to a :class:`FeatureSet`: its column names and a function
``images (N, H, W, 3) or (N, H, W) uint8 -> (N, F) float``. No file access, no
global state; adding a feature set is one entry here. Names joined by ``+``
(``"lecture+hog+color"``) are the sets side by side, columns in that order.

*Fitted* sets (``kmeans``) are learned from the training images first
(:func:`fit_features`, never on test images) and then applied as a pure function of
the images and that fitted state: a dict ``{set name: fitted transformer}``, the
``state=`` of :func:`extract_features`. The state is arrays and JSON settings
(:func:`state_to_arrays`), kept in feature files and model bundles.
"""

from __future__ import annotations

from .apply import (CHUNK_BYTES, chunk_for_memory, extract_features, feature_count, feature_names, feature_threads,
                    fit_features, mirror_images, mirror_permutation, set_memory, state_from_arrays, state_to_arrays,
                    working_bytes)
from .registry import (DEFAULT_FEATURES, FEATURE_SETS, FeatureSet, WorkMemory, feature_options, get_feature_set,
                       input_size, parse_feature_options, recommended_preset)


def __getattr__(name: str):
    if name == "KMeansFeatures":
        # start-up: kmeans.py imports scikit-learn's BaseEstimator (~1.1 s), which every `featmlp extract`
        # and each of its worker processes would pay for the handcrafted sets too
        from .kmeans import KMeansFeatures

        return KMeansFeatures
    if name == "PretrainedFeatures":
        # start-up: the module is read when the set is asked for by name
        from .pretrained import PretrainedFeatures

        return PretrainedFeatures
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FeatureSet", "FEATURE_SETS", "WorkMemory", "chunk_for_memory", "feature_count", "feature_threads",
           "working_bytes", "DEFAULT_FEATURES", "KMeansFeatures", "extract_features", "feature_names",
           "feature_options", "fit_features", "get_feature_set", "input_size", "mirror_images", "mirror_permutation",
           "parse_feature_options",
           "recommended_preset", "set_memory", "state_from_arrays", "state_to_arrays", "CHUNK_BYTES",
           "PretrainedFeatures"]


def __dir__() -> list[str]:
    """The public names, the two loaded on first use (``__getattr__``) among them."""
    return sorted(__all__)

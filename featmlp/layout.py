"""What a run directory holds, by name, and its JSON files: the public names of :mod:`featmlp.runs.layout`, re-exported.

The code lives in ``featmlp.runs.layout`` (run directories are in one package, :mod:`featmlp.runs`);
this module stays so that user code importing ``featmlp.layout`` keeps working. featmlp's own
code imports from ``featmlp.runs.layout``.
"""

from featmlp.runs.layout import (  # noqa: F401 (re-exported)
    CONFIG_FILE, METRICS_FILE, LOSS_PLOT, CONFUSION_PLOT, FEATURES_FILE, TENSORBOARD_DIR,
    FEATURES_PARTIAL, WEIGHTS_FILE, META_FILE, FEATURE_STATE_FILE, write_json, read_json,
    resolve_feature_file,
)

__all__ = [
    "CONFIG_FILE", "METRICS_FILE", "LOSS_PLOT", "CONFUSION_PLOT", "FEATURES_FILE",
    "TENSORBOARD_DIR", "FEATURES_PARTIAL", "WEIGHTS_FILE", "META_FILE", "FEATURE_STATE_FILE",
    "write_json", "read_json", "resolve_feature_file",
]

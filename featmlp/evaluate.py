"""Classification metrics from true and predicted labels: the public names of :mod:`featmlp.runs.evaluate`, re-exported.

The code lives in ``featmlp.runs.evaluate`` (run directories are in one package, :mod:`featmlp.runs`);
this module stays so that user code importing ``featmlp.evaluate`` keeps working. featmlp's own
code imports from ``featmlp.runs.evaluate``.
"""

from featmlp.runs.evaluate import (  # noqa: F401 (re-exported)
    confusion_matrix, evaluate, run_metrics,
)

__all__ = [
    "confusion_matrix", "evaluate", "run_metrics",
]

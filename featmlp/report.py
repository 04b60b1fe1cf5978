"""report.html for a run or a sweep directory: the public names of :mod:`featmlp.runs.report`, re-exported.

The code lives in ``featmlp.runs.report`` (run directories are in one package, :mod:`featmlp.runs`);
this module stays so that user code importing ``featmlp.report`` keeps working. featmlp's own
code imports from ``featmlp.runs.report``.
"""

from featmlp.runs.report import (  # noqa: F401 (re-exported)
    REPORT_FILE, SWEEP_FILE, RESULTS_FILE, SWEEP_LOSS_PLOT, SWEEP_ACCURACY_PLOT, write_report,
    render_report,
)

__all__ = [
    "REPORT_FILE", "SWEEP_FILE", "RESULTS_FILE", "SWEEP_LOSS_PLOT", "SWEEP_ACCURACY_PLOT",
    "write_report", "render_report",
]

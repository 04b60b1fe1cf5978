"""Compare run directories: the public names of :mod:`featmlp.runs.compare`, re-exported.

The code lives in ``featmlp.runs.compare`` (run directories are in one package, :mod:`featmlp.runs`);
this module stays so that user code importing ``featmlp.compare`` keeps working. featmlp's own
code imports from ``featmlp.runs.compare``.
"""

from featmlp.runs.compare import (  # noqa: F401 (re-exported)
    RESULT_COLUMNS, Run, is_run_dir, read_run, read_runs, differing_settings, compare_runs,
    format_value, format_table, comparison_figure, plot_comparison,
)

__all__ = [
    "RESULT_COLUMNS", "Run", "is_run_dir", "read_run", "read_runs", "differing_settings",
    "compare_runs", "format_value", "format_table", "comparison_figure", "plot_comparison",
]

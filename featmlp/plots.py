"""Plots of a run: the public names of :mod:`featmlp.runs.plots`, re-exported.

The code lives in ``featmlp.runs.plots`` (run directories are in one package, :mod:`featmlp.runs`);
this module stays so that user code importing ``featmlp.plots`` keeps working. featmlp's own
code imports from ``featmlp.runs.plots``.
"""

from featmlp.runs.plots import (  # noqa: F401 (re-exported)
    new_figure, plot_format, save_figure, plot_history, plot_confusion, render,
)

__all__ = [
    "new_figure", "plot_format", "save_figure", "plot_history", "plot_confusion", "render",
]

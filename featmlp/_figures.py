"""Figures, with matplotlib only: a new figure, the formats a plot can be written in, and writing one.

Figures are drawn with matplotlib's object API on an Agg canvas (no pyplot: no global figure
state, no GUI backend, safe in a training thread) and written atomically, so a viewer watching
``loss.png`` during a run never reads half a file. Every plot featmlp draws (:mod:`featmlp.runs.plots`,
:mod:`featmlp.runs.compare`, the sweep's, :func:`featmlp.training.lr_find.lr_find`'s) starts from
:func:`new_figure` and ends in :func:`save_figure`; matplotlib loads when the first is drawn.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from featmlp._io import atomic_write
from featmlp.errors import ConfigError

# The largest side of a figure, in inches (at 100 dpi: 1,600 pixels, a 10 MB canvas): a plot's
# memory does not grow with what it shows (a 300-class confusion matrix asked for 2 GiB).
MAX_FIGURE_INCHES = 16.0


def new_figure(width: float, height: float):
    """An empty ``width`` x ``height`` inch figure (100 dpi, constrained layout) on its own Agg
    canvas: no pyplot, so no global state. Every featmlp plot starts from one. Each side is at
    most :data:`MAX_FIGURE_INCHES`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width, height = min(float(width), MAX_FIGURE_INCHES), min(float(height), MAX_FIGURE_INCHES)
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_format(path: str | os.PathLike) -> str:
    """The image format a plot written to ``path`` gets: its suffix (``png`` when it has none).

    Raises ConfigError, naming the formats matplotlib can write, when the suffix is not one
    of them: callers check before any work, so a typo in ``--plot`` does not cost a run.

    Examples
    --------
    >>> plot_format("lr_find.png"), plot_format("curves.PDF"), plot_format("loss")
    ('png', 'pdf', 'png')
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    supported = FigureCanvasAgg.get_supported_filetypes()
    if fmt not in supported:
        raise ConfigError(f"cannot draw a plot as {str(path)!r}: .{fmt} is not an image format "
                          f"matplotlib writes; use one of {', '.join('.' + f for f in sorted(supported))}")
    return fmt


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` atomically to ``path``, in the format its suffix names (:func:`plot_format`)."""
    path = Path(path)
    buf = io.BytesIO()
    fmt = plot_format(path)
    # PNG at zlib level 1: the same pixels, in ~1/4 of level 6's encoding time (the default: ~0.1 s
    # a plot, a tenth of drawing it), for files ~1.3x as large
    fig.savefig(buf, format=fmt, **({"pil_kwargs": {"compress_level": 1}} if fmt == "png" else {}))
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())
    return path


def palette(n: int) -> list:
    """``n`` colours for ``n`` lines: matplotlib's tab10, tab20 beyond ten (repeating beyond twenty)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]

"""Figures, with matplotlib only: a new figure, the formats a plot can be written in, and writing one.

Figures are drawn with matplotlib's object API on an Agg canvas (no pyplot: no global figure
state, no GUI backend, safe in a training thread) and written atomically, so a viewer watching
``loss.png`` during a run never reads half a file. Within :func:`drawing_in_background` (the
command line's ``lecture``, ``run``, ``train`` and ``sweep``), the plots handed to :func:`draw`
are drawn by forked processes that imported matplotlib while the command read its data, and
:func:`wait_drawn` waits for them. Every plot featmlp draws (:mod:`featmlp.runs.plots`,
:mod:`featmlp.runs.compare`, the sweep's, :func:`featmlp.training.lr_find.lr_find`'s) starts from
:func:`new_figure` and ends in :func:`save_figure`; matplotlib loads when the first is drawn.
"""

from __future__ import annotations

import contextlib
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


# The forked processes drawing the plots handed to draw() while drawing_in_background() is active.
_BACKGROUND = None


class _Background:
    def __init__(self, pool, workers: int):
        self.pool, self.workers = pool, workers
        self.pending = {}  # path -> the future drawing it

    def submit(self, fn, args, kwargs, path):
        earlier = self.pending.pop(path, None)
        if earlier is not None:  # one file, drawn in the order asked: the last drawing stays
            earlier.result()
        self.pending[path] = self.pool.submit(fn, *args, **kwargs)

    def wait(self):
        pending, self.pending = list(self.pending.values()), {}
        for future in pending:
            future.result()  # a plot's error is raised here, as drawing it here would have


def warm(*modules: str) -> None:
    """Import what drawing needs (~0.3 s of matplotlib) and ``modules`` (the plots' own): a
    drawing process's first step."""
    import importlib

    for module in ("matplotlib.figure", "matplotlib.backends.backend_agg", *modules):
        importlib.import_module(module)


@contextlib.contextmanager
def drawing_in_background(workers: int | None = None, imports: tuple[str, ...] = ()):
    """Within, :func:`draw` hands its plots to ``workers`` forked processes (default: one per
    core, at most 2), started now, which import matplotlib (and ``imports``, the modules of the
    plotting functions) while the caller goes on; leaving waits for every plot (and raises a
    plot's error). Where no process can be forked safely (another Python thread already runs, not
    Linux; see :func:`featmlp._workers.fork_pool`) or with one core, :func:`draw` draws at once.

    A command whose run lasts ~2 s spends ~1.2 s of it on two plots: drawn beside the rest of
    the work, each in its own process, they cost ~0.4 s (``benchmarks/bench_startup.py``).
    """
    global _BACKGROUND
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    if _BACKGROUND is not None or workers < 2:
        yield
        return
    # start-up: the process machinery loads for the commands that draw
    from featmlp._workers import fork_pool, stopping

    pool = fork_pool(workers, initializer=warm, initargs=tuple(imports))
    if pool is None:
        yield
        return
    with stopping(pool):
        _BACKGROUND = _Background(pool, workers)
        try:
            yield
            _BACKGROUND.wait()
        finally:
            _BACKGROUND = None


def draw(path, fn, *args, **kwargs) -> None:
    """``fn(*args, **kwargs)``, a plot written to ``path``: in a drawing process within
    :func:`drawing_in_background` (``fn`` and its arguments pickled), else now. Two drawings of
    one ``path`` are written in the order asked."""
    if _BACKGROUND is None:
        fn(*args, **kwargs)
    else:
        _BACKGROUND.submit(fn, args, kwargs, str(path))


def drawing_processes() -> int:
    """How many processes :func:`draw` hands plots to now (0: it draws at once)."""
    return 0 if _BACKGROUND is None else _BACKGROUND.workers


def wait_drawn() -> None:
    """Wait for the plots :func:`draw` handed to drawing processes (raising the first one's error)."""
    if _BACKGROUND is not None:
        _BACKGROUND.wait()

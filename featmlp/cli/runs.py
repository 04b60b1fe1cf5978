"""``featmlp compare | report``: reading finished run and sweep directories.

Apart from the training commands (whose options are built from the training registries, which
import torch), so comparing runs and writing their report start at once; matplotlib is
imported only when a plot is drawn.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", "out", type=click.Path(file_okay=False),
              help="Folder to draw the runs' loss curves overlaid in, as compare.png (default: runs/compare-<time>).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Draw them into this file instead (its suffix picks the format: .png, .svg, .pdf).")
@click.option("--log-scale", is_flag=True, help="Loss on a log scale.")
def compare(run_dirs, out, plot_path, log_scale):
    """Compare run directories: overlaid loss curves and a table of differing settings and results."""
    from ..runs.compare import compare_runs, format_table, plot_comparison
    from ..runs.plots import plot_format
    from ._common import plot_file

    plot_path = plot_file(out, plot_path, "compare", "compare.png")
    plot_format(plot_path)
    rows, _ = compare_runs(run_dirs)
    plot_comparison(run_dirs, plot_path, log_scale=log_scale)
    click.echo(format_table(rows))
    click.echo(f"loss curves: {plot_path}")


@click.command()
@click.argument("directory", type=click.Path(file_okay=False))
def report(directory):
    """Write DIR/report.html: one self-contained page (plots embedded) for a run or a sweep."""
    from ..runs.report import write_report

    path = write_report(directory)
    click.echo(f"wrote {path} ({Path(path).stat().st_size / 1e6:.1f} MB)")

"""``featmlp compare | report``: reading finished run and sweep directories.

Apart from the training commands (whose options are built from the training registries, which
import torch), so comparing runs and writing their report start at once; matplotlib is
imported only when a plot is drawn.
"""

from __future__ import annotations

from pathlib import Path

import click

from .._text import printable
from .options import DescribedDefault

# --force, as featmlp.cli._common.force_option words it (that module imports the feature registry).
_FORCE = "Replace an existing {} that featmlp wrote. Anything else there is refused, even with --force."


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", "out", type=click.Path(file_okay=False),
              cls=DescribedDefault, show_default="runs/compare-<time>",
              help="Folder to draw the runs' loss curves overlaid in, as compare.png.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Draw them into this file instead (its suffix picks the format: .png, .svg, .pdf).")
@click.option("--log-scale", is_flag=True, help="Loss on a log scale.")
@click.option("--force", is_flag=True, help=_FORCE.format("plot (compare.png, or the --plot file)"))
def compare(run_dirs, out, plot_path, log_scale, force):
    """Compare run directories: overlaid loss curves and a table of differing settings and results."""
    # start-up: loaded when the command runs, not by `featmlp --help`
    from .._figures import plot_format
    from ..runs.compare import compare_runs, format_table, plot_comparison
    from ._common import plot_file

    plot_path = plot_file(out, plot_path, "compare", "compare.png", force=force)
    plot_format(plot_path)
    rows, _ = compare_runs(run_dirs)
    plot_comparison(run_dirs, plot_path, log_scale=log_scale)
    click.echo(format_table(rows))  # its cells escaped (featmlp._text.printable)
    click.echo(f"loss curves: {printable(plot_path)}")


@click.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("-o", "--out", "out", type=click.Path(),
              help="Where to write the report instead of DIR/report.html: a file, or a folder (a name ending "
                   "in / or an existing folder) to write report.html in; for a run or sweep that cannot be "
                   "written to (read-only).")
@click.option("--force", is_flag=True, help=_FORCE.format("report at --out"))
def report(directory, out, force):
    """Write DIR/report.html: one self-contained page (plots embedded) for a run or a sweep."""
    import errno

    # start-up: loaded when the command runs, not by `featmlp --help`
    from ..errors import DataError
    from ..runs.report import write_report

    try:
        path = write_report(directory, out, overwrite=force)
    except OSError as e:
        if out is not None or e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise DataError(f"cannot write the report into {directory} ({e.strerror or e}): write it elsewhere "
                        f"with --out FILE.html") from None
    click.echo(f"wrote {printable(path)} ({Path(path).stat().st_size / 1e6:.1f} MB)")
